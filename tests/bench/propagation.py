#!/usr/bin/env python3
"""Helper of tests/bench/propagation.sh: measures how long a config change
takes to reach the data planes, and writes the 10,000-backend config.

Sub-commands (standard library only):
  wait-sync     until every named data plane reports the active version
  changes       N backend updates through lbctl; latency to the data planes
  apply         one `lbctl config apply`; its wall time and the time until
                the data plane applied it
  probe         sequential requests; the slowest one and when it started
  gen-config    a config.yaml with a few real backends and many disabled ones
  report-scale  prints the figures of the scale runs
  wrk-p99       the p99 latency (ms) of a wrk --latency report on stdin

Every loop is bounded by a count and a deadline.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time

POLL_S = 0.001


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the admin API's unix socket (kept alive between polls)."""

    def __init__(self, path, timeout=5.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Admin:
    def __init__(self, path):
        self.path = path
        self.conn = UnixHTTPConnection(path)

    def get(self, route):
        for attempt in range(2):
            try:
                self.conn.request("GET", route)
                r = self.conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET {route}: status {r.status}: {body[:200]!r}")
                return json.loads(body)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = UnixHTTPConnection(self.path)
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def applied(self):
        """node_id -> applied_version, plus node_id -> rejection reason."""
        d = self.get("/api/v1/dataplanes")
        versions = {dp["node_id"]: dp["applied_version"] for dp in d["dataplanes"]}
        rejected = {
            dp["node_id"]: dp["rejection_reason"]
            for dp in d["dataplanes"]
            if dp.get("rejection_reason")
        }
        return versions, rejected


def metrics_version(hostport):
    """lb_config_version of a data plane's metrics endpoint (one request per
    connection: that is what the data plane's metrics server speaks)."""
    host, port = hostport.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=5.0)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
    finally:
        c.close()
    m = re.search(r"^lb_config_version (\d+)$", body, re.M)
    return int(m.group(1)) if m else -1


def pct(values, p):
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def summary(name, values_ms, target_ms=None):
    if not values_ms:
        print(f"  {name:<44} no samples")
        return
    line = (
        f"  {name:<44} p50 {pct(values_ms, 50):7.2f}  p90 {pct(values_ms, 90):7.2f}  "
        f"p99 {pct(values_ms, 99):7.2f}  max {max(values_ms):7.2f} ms"
    )
    if target_ms is not None:
        ok = pct(values_ms, 99) < target_ms
        line += f"   (target p99 < {target_ms:g} ms: {'met' if ok else 'MISSED'})"
    print(line)


def lbctl(args, lbctl_path, sock, timeout_s):
    cmd = [lbctl_path, "--socket", sock, "--json", "--timeout", str(int(timeout_s))] + args
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 5)
    t1 = time.monotonic()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout), t0, t1


def wait_applied(admin, nodes, metrics, version, deadline_s):
    """Polls until every node reports <version> (admin API) and the metrics
    endpoint, if any, serves it. Returns {source: monotonic time seen}."""
    seen = {}
    want = {f"admin:{n}" for n in nodes}
    if metrics:
        want.add("metrics")
    end = time.monotonic() + deadline_s
    polls = 0
    while want - seen.keys():
        if time.monotonic() > end:
            missing = sorted(want - seen.keys())
            versions, rejected = admin.applied()
            raise RuntimeError(
                f"version {version} not applied within {deadline_s} s by {missing}; "
                f"applied versions {versions}, rejections {rejected}"
            )
        if metrics and "metrics" not in seen and metrics_version(metrics) >= version:
            seen["metrics"] = time.monotonic()
        if any(f"admin:{n}" not in seen for n in nodes):
            versions, _ = admin.applied()
            now = time.monotonic()
            for n in nodes:
                if f"admin:{n}" not in seen and versions.get(n, 0) >= version:
                    seen[f"admin:{n}"] = now
        polls += 1
        if want - seen.keys():
            time.sleep(POLL_S)
    return seen, polls


def cmd_wait_sync(a):
    admin = Admin(a.admin)
    nodes = a.nodes.split(",")
    end = time.monotonic() + a.timeout
    versions, rejected = {}, {}
    while time.monotonic() < end:
        try:
            active = admin.get("/health")["active_version"]
            versions, rejected = admin.applied()
            if all(versions.get(n, 0) >= active for n in nodes):
                if not a.metrics or metrics_version(a.metrics) >= active:
                    return 0
        except (OSError, http.client.HTTPException, RuntimeError):
            pass
        time.sleep(0.05)
    print(
        f"propagation: data planes {nodes} not in sync after {a.timeout} s: "
        f"applied {versions}, rejections {rejected}",
        file=sys.stderr,
    )
    return 1


def cmd_changes(a):
    admin = Admin(a.admin)
    nodes = a.nodes.split(",")
    wall, by_src, all_nodes, polls = [], {}, [], []
    for i in range(a.count):
        weight = a.weights[i % 2]
        reply, t0, t1 = lbctl(
            ["backends", "update", a.backend, "--weight", str(weight)],
            a.lbctl,
            a.admin,
            a.timeout,
        )
        version = reply["version"]
        seen, n = wait_applied(admin, nodes, a.metrics, version, a.timeout)
        polls.append(n)
        wall.append((t1 - t0) * 1000)
        for src, t in seen.items():
            by_src.setdefault(src, []).append(max(0.0, (t - t1) * 1000))
        admin_times = [seen[f"admin:{n}"] for n in nodes]
        all_nodes.append(max(0.0, (max(admin_times) - t1) * 1000))
    print(f"  {a.count} changes (lbctl backends update {a.backend} --weight "
          f"{a.weights[0]}|{a.weights[1]}), polling every ~{POLL_S * 1000:g} ms; "
          f"median polls per change {pct(polls, 50)}")
    summary("lbctl wall time (control plane write)", wall)
    if "metrics" in by_src:
        summary(f"lbctl return -> {nodes[0]} /metrics serves it", by_src["metrics"], a.target)
    for n in nodes:
        summary(f"lbctl return -> {n} reports it (admin API)", by_src[f"admin:{n}"],
                a.target if len(nodes) == 1 and "metrics" not in by_src else None)
    if len(nodes) > 1:
        summary(f"lbctl return -> all {len(nodes)} report it (admin API)", all_nodes, a.target)
    return 0


def log_time(path, event, prefix):
    """Wall-clock ms (epoch) of the first JSON log line of <event> whose
    message starts with <prefix>, or None. The daemons log at ms precision."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") == event and rec.get("msg", "").startswith(prefix):
                    ts = datetime.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
                    return ts.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
    except OSError:
        return None
    return None


def cmd_apply(a):
    admin = Admin(a.admin)
    nodes = a.nodes.split(",")
    w0 = time.time() * 1000
    reply, t0, t1 = lbctl(
        ["config", "apply", a.file, "--comment", a.comment], a.lbctl, a.admin, a.timeout
    )
    w1 = w0 + (t1 - t0) * 1000
    version = reply["version"]
    seen, _ = wait_applied(admin, nodes, a.metrics, version, a.timeout)
    out = {
        "version": version,
        "changes": len(reply.get("changes", [])),
        "lbctl_ms": (t1 - t0) * 1000,
    }
    for src, t in seen.items():
        out[src] = max(0.0, (t - t1) * 1000)
    # where the time goes, from the daemons' own log lines (1 ms resolution)
    published = log_time(a.cp_log, "published", f"version {version} ") if a.cp_log else None
    applied = log_time(a.dp_log, "snapshot_applied", f"version {version} ") if a.dp_log else None
    if published is not None:
        out["lbctl_start_to_published_ms"] = published - w0
        out["published_to_lbctl_return_ms"] = w1 - published
    if published is not None and applied is not None:
        out["published_to_dp_applied_ms"] = applied - published
    out["lbctl_start_wall_ms"] = w0
    if published is not None:
        out["published_wall_ms"] = published
    print(json.dumps(out))
    return 0


def cmd_probe(a):
    """Sequential GETs on one keep-alive connection (so one worker) for at
    most <seconds>, or until <stop_file> exists; reports the slowest request and when it started (epoch ms), to
    place a stall against the daemons' log lines."""
    host, port = a.target.rsplit(":", 1)
    conn = None
    lat, worst, worst_at, errors = [], 0.0, 0.0, 0
    end = time.monotonic() + a.seconds
    for i in range(int(a.seconds * 2000) + 1):
        if time.monotonic() >= end:
            break
        if a.stop_file and i % 16 == 0 and os.path.exists(a.stop_file):
            break
        start_wall = time.time() * 1000
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=5.0)
            conn.request("GET", "/")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors += 1
        except (http.client.HTTPException, OSError):
            errors += 1
            if conn is not None:
                conn.close()
            conn = None
        ms = (time.monotonic() - t0) * 1000
        lat.append(ms)
        if ms > worst:
            worst, worst_at = ms, start_wall
        time.sleep(POLL_S)
    if conn is not None:
        conn.close()
    print(
        json.dumps(
            {
                "requests": len(lat),
                "errors": errors,
                "p50_ms": pct(lat, 50),
                "max_ms": worst,
                "max_at_ms": worst_at,
                "over_10ms": sum(1 for x in lat if x > 10),
            }
        )
    )
    return 0


def cmd_gen_config(a):
    lines = [
        "frontends:",
        '  - name: "bench"',
        '    address: "127.0.0.1"',
        f"    port: {a.frontend}",
        "backends:",
    ]
    real = [p for p in a.real.split(",") if p]
    for i, port in enumerate(real):
        lines += [
            f'  - id: "real-{i}"',
            f'    url: "http://127.0.0.1:{port}"',
            "    weight: 1",
        ]
    for i in range(a.disabled):
        lines += [
            f'  - id: "off-{i:05d}"',
            f'    url: "http://127.0.0.1:{a.disabled_base + i}"',
            "    weight: 1",
            '    state: "disabled"',
        ]
    if a.metrics:
        lines += ["metrics:", "  enabled: true", '  address: "127.0.0.1"', f"  port: {a.metrics}"]
    else:
        lines += ["metrics:", "  enabled: false"]
    lines += ["logging:", '  level: "info"', "  accessLog: false", ""]
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return 0


def wrk_ms(text):
    m = re.match(r"^([\d.]+)(us|ms|s|m)$", text)
    if not m:
        raise ValueError(f"unknown wrk duration {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def cmd_wrk_p99(a):
    text = sys.stdin.read()
    pcts = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.M))
    req = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)$", text, re.M)
    if "99" not in pcts or not req:
        print(f"propagation: cannot read wrk's report:\n{text}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "p50_ms": wrk_ms(pcts["50"]),
                "p99_ms": wrk_ms(pcts["99"]),
                "rps": float(req.group(1)),
                "non2xx": int(errs.group(1)) if errs else 0,
                "socket_errors": sock.group(1).strip() if sock else "",
            }
        )
    )
    return 0


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def snapshot_bytes(cp_log, version):
    """The snapshot size the control plane logged when it published <version>."""
    try:
        with open(cp_log, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.search(rf'"published","msg":"version {version} generation \d+ \((\d+) bytes\)',
                              line)
                if m:
                    return int(m.group(1))
    except OSError:
        pass
    return None


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


def cmd_report_scale(a):
    n = a.backends
    for name, label in (("grow", f"3 -> {n}"), ("shrink", f"{n} -> 3")):
        j = load(f"{a.dir}/apply-{name}.json")
        p = load(f"{a.dir}/probe-{name}.json")
        size = snapshot_bytes(a.cp_log, j["version"])
        print(f"   apply {label + ':':<14} lbctl wall time {fmt(j['lbctl_ms']):>8} ms | lbctl return"
              f" -> dp1 /metrics {fmt(j.get('metrics')):>7} ms, -> admin API"
              f" {fmt(j.get('admin:dp1')):>7} ms | {j['changes']} changes, snapshot"
              f" {'?' if size is None else size} bytes")
        print(f"     from the logs (1 ms resolution): lbctl start -> control plane published"
              f" {fmt(j.get('lbctl_start_to_published_ms'))} ms, published -> lbctl returned"
              f" {fmt(j.get('published_to_lbctl_return_ms'))} ms, published -> dp1 applied"
              f" {fmt(j.get('published_to_dp_applied_ms'))} ms")
        ref = j.get("published_wall_ms")
        at = "?" if ref is None else f"{p['max_at_ms'] - ref:+.0f} ms from the publish"
        print(f"     probe (1 keep-alive connection, sequential): {p['requests']} requests, p50"
              f" {p['p50_ms']:.2f} ms, slowest {p['max_ms']:.1f} ms starting {at},"
              f" {p['over_10ms']} over 10 ms, {p['errors']} errors")
    print("   (target: applied < 20 ms after publish)")
    print("   wrk (p99 target: moves by < 1 ms):")
    runs = {}
    for name, label in (("small", "3 backends, no change"), ("grow", f"3 -> {n} mid-run"),
                        ("large", f"{n} backends, no change"), ("shrink", f"{n} -> 3 mid-run")):
        w = runs[name] = load(f"{a.dir}/p99-{name}.json")
        print(f"     {label:<26} p50 {w['p50_ms']:7.2f} ms  p99 {w['p99_ms']:7.2f} ms"
              f"  {w['rps']:9.1f} req/s  non-2xx {w['non2xx']}"
              f"  socket errors: {w['socket_errors'] or 'none'}")
    base = runs["small"]["p99_ms"]
    print(f"     p99 vs 3 backends: {runs['grow']['p99_ms'] - base:+.2f} ms with the 3 -> {n}"
          f" apply, {runs['large']['p99_ms'] - base:+.2f} ms at {n} steady")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("wait-sync")
    p.add_argument("--admin", required=True)
    p.add_argument("--nodes", required=True)
    p.add_argument("--metrics")
    p.add_argument("--timeout", type=float, default=15.0)
    p.set_defaults(fn=cmd_wait_sync)

    p = sub.add_parser("changes")
    p.add_argument("--admin", required=True)
    p.add_argument("--lbctl", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--nodes", required=True)
    p.add_argument("--metrics")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--weights", type=int, nargs=2, default=[2, 3])
    p.add_argument("--target", type=float, default=50.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(fn=cmd_changes)

    p = sub.add_parser("apply")
    p.add_argument("--admin", required=True)
    p.add_argument("--lbctl", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--nodes", required=True)
    p.add_argument("--metrics")
    p.add_argument("--comment", default="propagation bench")
    p.add_argument("--cp-log", help="the control plane's log (for the breakdown)")
    p.add_argument("--dp-log", help="the data plane's log (for the breakdown)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(fn=cmd_apply)

    p = sub.add_parser("probe")
    p.add_argument("--target", required=True, help="HOST:PORT of a frontend")
    p.add_argument("--seconds", type=float, required=True, help="at most this long")
    p.add_argument("--stop-file", help="stop once this file exists")
    p.set_defaults(fn=cmd_probe)

    p = sub.add_parser("gen-config")
    p.add_argument("--out", required=True)
    p.add_argument("--frontend", type=int, required=True)
    p.add_argument("--real", required=True, help="comma-separated ports of real backends")
    p.add_argument("--disabled", type=int, default=0)
    p.add_argument("--disabled-base", type=int, default=20000)
    p.add_argument("--metrics", type=int, default=0, help="metrics port (0: disabled)")
    p.set_defaults(fn=cmd_gen_config)

    p = sub.add_parser("report-scale")
    p.add_argument("--dir", required=True, help="where the apply/probe/p99 JSON files are")
    p.add_argument("--backends", type=int, required=True)
    p.add_argument("--cp-log", required=True)
    p.set_defaults(fn=cmd_report_scale)

    p = sub.add_parser("wrk-p99")
    p.set_defaults(fn=cmd_wrk_p99)

    a = ap.parse_args()
    try:
        return a.fn(a)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
        print(f"propagation: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
