"""Metadata helpers for the end-to-end tests and the benchmarks.

* :class:`NovaStandIn`: a Nova metadata API stand-in (an HTTP server in a
  thread of this process, so in the root namespace where the agents run):
  it checks ``X-Instance-ID-Signature`` against the shared secret (403 when
  wrong), answers ``meta_data.json`` per instance id, and records every
  request's headers. ``python -m topologies.metadata --port N [--secret S]``
  runs the same server in the foreground (in a VM's namespace, for a
  baseline the VM reaches without the agent).
* :func:`measure_requests`: N sequential HTTP GETs from a VM (a python loop
  in its namespace, a new connection each, no keep-alive): requests per
  second and median latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from midoflow.metadata import signature


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, *_a) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        srv = self.server
        h = {k: v for k, v in self.headers.items()}
        iid = self.headers.get("X-Instance-ID", "")
        with srv.lock:
            srv.seen.append((self.path, h))
        if srv.secret is not None and not signature.valid(
                srv.secret, iid, self.headers.get("X-Instance-ID-Signature", "")):
            self._send(403, b"Invalid proxy request signature.\n", "text/plain")
            return
        if self.path.rstrip("/").endswith("meta_data.json"):
            doc = {"uuid": iid, "name": srv.names.get(iid, ""), "availability_zone": "nova",
                   "project_id": self.headers.get("X-Tenant-ID", ""), "from": "nova"}
            self._send(200, json.dumps(doc).encode(), "application/json")
        else:
            self._send(200, b"meta_data.json\nnetwork_data.json\n", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    secret: str | None
    names: dict[str, str]
    seen: list
    lock: threading.Lock


class NovaStandIn:
    """``secret``: what signatures are checked against (None: not checked);
    ``names``: instance id -> the name its meta_data.json gives."""

    def __init__(self, secret: str | None, names: dict[str, str] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.srv = _Server((host, port), _Handler)
        self.srv.secret, self.srv.names = secret, dict(names or {})
        self.srv.seen, self.srv.lock = [], threading.Lock()
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.srv.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def seen(self) -> list[tuple[str, dict]]:
        with self.srv.lock:
            return list(self.srv.seen)

    def set_secret(self, secret: str | None) -> None:
        self.srv.secret = secret

    def start(self) -> NovaStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()

    def __enter__(self) -> NovaStandIn:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


_LOOP = r"""
import http.client, json, statistics, sys, time, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); n = int(sys.argv[2])
path = u.path or "/"
lat, errors, codes = [], 0, {}
t0 = time.perf_counter()
for _ in range(n):
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse(); r.read(); c.close()
        codes[r.status] = codes.get(r.status, 0) + 1
    except Exception:
        errors += 1
    lat.append(time.perf_counter() - t)
total = time.perf_counter() - t0
print(json.dumps({"n": n, "seconds": total, "rps": n / total,
                  "median_ms": statistics.median(lat) * 1000, "errors": errors,
                  "codes": codes}))
"""


def measure_requests(vm, url: str, n: int = 200) -> dict:
    """``n`` sequential GETs of ``url`` from ``vm`` (a Mininet host), each on
    a new connection: {"n", "seconds", "rps", "median_ms", "errors", "codes"}."""
    out = vm.popen(["python3", "-c", _LOOP, url, str(n)], text=True)
    stdout, stderr = out.communicate(timeout=60 + n)
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"the request loop in {vm.name} failed: {stderr[-400:]}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="a Nova metadata API stand-in")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8775)
    ap.add_argument("--secret", default=None, help="check signatures with this secret")
    args = ap.parse_args(argv)
    s = NovaStandIn(args.secret, host=args.host, port=args.port)
    print(f"serving on {s.url}", flush=True)
    s.srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
