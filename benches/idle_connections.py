#!/usr/bin/env python3
"""Hold N idle keep-alive client connections on a running Switchyard and report its RSS.

    python3 benches/idle_connections.py PID 127.0.0.1:8080 10000

Each connection sends one request, reads the response, then stays open and idle (the
proxy's idle_timeout must be longer than the run). Prints the proxy's VmRSS before and
with all connections held, and the cost per connection. Loopback only; bounded by N and
by a 120 s deadline.
"""
import resource
import socket
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def main():
    pid, addr, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    host, port = addr.rsplit(":", 1)
    if not (host.startswith("127.") or host == "localhost"):
        raise SystemExit("loopback only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kb(pid)
    deadline = time.time() + 120
    socks = []
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for i in range(n):
        if time.time() > deadline:
            break
        s = socket.create_connection((host, int(port)))
        s.sendall(request)
        got = s.recv(4096)
        if not got.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"connection {i}: unexpected answer {got[:40]!r}")
        socks.append(s)
    time.sleep(1)
    held = rss_kb(pid)
    print(f"connections held: {len(socks)}")
    print(f"proxy RSS before: {before} KiB; with connections: {held} KiB")
    print(f"per connection: {(held - before) * 1024 / max(len(socks), 1):.0f} bytes")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
