"""A steady TCP stream that measures its own outages: for failover tests.

``python -m topologies.stream server PORT`` accepts one connection and, when
it closes, prints a JSON line: bytes and chunks received, the longest gap
between two arrivals (ms), and whether the sequence was intact.
``python -m topologies.stream client HOST PORT SECONDS [INTERVAL_MS]`` sends
a numbered 512-byte chunk every INTERVAL_MS (default 5) for SECONDS over one
connection and prints a JSON line with what it sent and its longest stall.
Both run inside the lab's namespaces (standard library only).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

CHUNK = 512


def server(port: int, timeout: float = 120.0) -> dict:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    ls.settimeout(timeout)
    print(json.dumps({"listening": port}), flush=True)
    conn, peer = ls.accept()
    conn.settimeout(timeout)
    buf = b""
    seq, gaps, last, ok, total = 0, 0.0, time.monotonic(), True, 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        now = time.monotonic()
        gaps = max(gaps, now - last)
        last = now
        total += len(data)
        buf += data
        while len(buf) >= CHUNK:
            n = struct.unpack("!I", buf[:4])[0]
            ok &= n == seq
            seq += 1
            buf = buf[CHUNK:]
    conn.close()
    out = {"peer": f"{peer[0]}:{peer[1]}", "bytes": total, "chunks": seq, "in_order": ok,
           "max_gap_ms": round(gaps * 1000, 1)}
    print(json.dumps(out), flush=True)
    return out


def client(host: str, port: int, seconds: float, interval_ms: float = 5.0) -> dict:
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(60)
    end = time.monotonic() + seconds
    seq, worst = 0, 0.0
    while time.monotonic() < end:
        t0 = time.monotonic()
        s.sendall(struct.pack("!I", seq) + b"x" * (CHUNK - 4))
        worst = max(worst, time.monotonic() - t0)
        seq += 1
        time.sleep(interval_ms / 1000)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # the server closing
    s.close()
    out = {"sent_chunks": seq, "max_send_stall_ms": round(worst * 1000, 1)}
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "server":
        server(int(argv[1]))
        return 0
    if len(argv) >= 4 and argv[0] == "client":
        client(argv[1], int(argv[2]), float(argv[3]), float(argv[4]) if len(argv) > 4 else 5.0)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
