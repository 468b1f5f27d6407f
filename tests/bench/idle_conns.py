#!/usr/bin/env python3
"""Memory of idle keep-alive client connections held by a proxy.

idle_conns.py PORT N PID [PID...]
Opens N connections to 127.0.0.1:PORT, sends one GET / on each and reads the
response, leaves them open and idle, and prints the growth of VmRSS summed
over the process trees rooted at PID... divided by N, in bytes. Exits 1 when
fewer than N connections got a full response."""
import os
import socket
import sys
import time


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        if ppid == pid:
            out.append(int(d))
    return out


def tree_rss(roots):
    total, todo = 0, list(roots)
    while todo:
        pid = todo.pop()
        todo.extend(children(pid))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def read_response(s):
    buf = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            return False
        chunk = s.recv(65536)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    roots = [int(p) for p in sys.argv[3:]]
    time.sleep(0.5)
    before = tree_rss(roots)
    socks, ok = [], 0
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
        s.sendall(req)
        ok += read_response(s)
    time.sleep(1.0)
    after = tree_rss(roots)
    for s in socks:
        s.close()
    print((after - before) // max(n, 1))
    return 0 if ok == n else 1


if __name__ == "__main__":
    sys.exit(main())
