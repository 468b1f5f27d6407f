#!/usr/bin/python3
"""tests/bench/restart_load.py: open-loop load, one new connection per
request, at a fixed rate, while a proxy is restarted (tests/bench/restart.sh).

restart_load.py --port P --rate R --seconds S --restarts N --restart-cmd CMD
                [--window-ms W] [--timeout-ms T] [--dump FILE]

Starts a request every 1/R s for S seconds (a late request does not delay the
next one: the schedule is fixed), each on its own connection to 127.0.0.1:P
with "GET / HTTP/1.1", "Connection: close". Runs CMD (through /bin/sh) N
times, evenly spread over the middle of the load (the first at S/(N+1) s).
A request is ok when a complete 200 answer arrives within T ms (default
5000); its latency runs from its scheduled start to the last byte. Requests
scheduled within W ms (default 1000) after a restart command count as
"during a hand-over", the others as "steady". --dump writes every request
("OFFSET_S LATENCY_MS ok|error") and the restart times to FILE. Prints one
JSON line:
{"rate","seconds","restarts","steady":{n,failed,p50_ms,p99_ms,max_ms},
 "handover":{...},"errors":{kind:n}}. Exit 0, or 2 on bad arguments.
"""
import argparse
import asyncio
import json
import subprocess
import sys
import time


async def one(port, timeout_s):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout_s)
    except asyncio.TimeoutError:
        return "connect timeout"
    except ConnectionRefusedError:
        return "connect refused"
    except OSError as e:
        return "connect " + (e.strerror or str(e))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(-1), timeout_s)
    except asyncio.TimeoutError:
        return "timeout"
    except ConnectionResetError:
        return "reset"
    except OSError as e:
        return e.strerror or str(e)
    finally:
        writer.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return "empty" if not data else "truncated"
    status = head.split(b" ", 2)
    if len(status) < 2 or status[1] != b"200":
        return "status " + (status[1].decode(errors="replace") if len(status) > 1 else "?")
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length" and len(body) != int(v.strip()):
            return "truncated"
    return None


def stats(lat, failed):
    lat.sort()
    n = len(lat) + failed

    def q(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
    return {"n": n, "failed": failed, "p50_ms": q(0.50), "p99_ms": q(0.99),
            "max_ms": round(lat[-1], 2) if lat else None}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--restarts", type=int, default=0)
    ap.add_argument("--restart-cmd", default="")
    ap.add_argument("--window-ms", type=float, default=1000)
    ap.add_argument("--timeout-ms", type=float, default=5000)
    ap.add_argument("--dump", default="")
    a = ap.parse_args()
    if a.rate < 1 or a.seconds <= 0 or a.restarts < 0 or (a.restarts and not a.restart_cmd):
        print("restart_load.py: bad arguments", file=sys.stderr)
        sys.exit(2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    restarts_at = [a.seconds * (i + 1) / (a.restarts + 1) for i in range(a.restarts)]
    fired = []
    results = []  # (scheduled offset s, latency ms or None, error)
    tasks = []

    async def timed(off):
        err = await one(a.port, a.timeout_ms / 1000)
        lat = (loop.time() - t0 - off) * 1000
        results.append((off, lat if err is None else None, err))

    n = int(a.rate * a.seconds)
    ri = 0
    for i in range(n):
        off = i / a.rate
        while ri < len(restarts_at) and restarts_at[ri] <= off:
            fired.append(loop.time() - t0)
            subprocess.Popen(["/bin/sh", "-c", a.restart_cmd])
            ri += 1
        delay = t0 + off - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(timed(off)))
    await asyncio.gather(*tasks)
    if a.dump:
        with open(a.dump, "w") as f:
            for r in fired:
                f.write("restart %.3f\n" % r)
            for off, lat, err in sorted(results):
                f.write("%.3f %s %s\n" % (off, "-" if lat is None else "%.2f" % lat, err or "ok"))
    steady, during = [], []
    sf = df = 0
    errors = {}
    for off, lat, err in results:
        in_window = any(f <= off < f + a.window_ms / 1000 for f in fired)
        if err is not None:
            errors[err] = errors.get(err, 0) + 1
            if in_window:
                df += 1
            else:
                sf += 1
        elif in_window:
            during.append(lat)
        else:
            steady.append(lat)
    print(json.dumps({"rate": a.rate, "seconds": a.seconds, "restarts": len(fired),
                      "steady": stats(steady, sf), "handover": stats(during, df),
                      "errors": errors}))


asyncio.run(main())
