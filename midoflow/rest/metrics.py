"""The API's Prometheus metrics (issue 13, goal 10): a WSGI middleware over
both APIs that counts requests and times them, by method, route template
and status, and answers ``GET /metrics`` itself.

``/metrics`` is served before authentication, as Prometheus scrapes without
tokens: it is read-only and tells request counts and latencies only (no
object, no id, no tenant). With Keystone on, everything else still needs a
token. The route template is the path with its ids replaced: paths
alternate collection and id after the version (``/v1/bridges/{id}/ports``,
``/v2.0/routers/{id}/add_router_interface``); a path answered 404 counts as
``unmatched`` and a segment that is no plain name as ``{other}``, so no
client can grow the label set without bound.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METRICS_PATH = "/metrics"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_VERSION = re.compile(r"^v\d+(\.\d+)?$")
_NAME = re.compile(r"^[a-z][a-z0-9_\-.]{0,39}$")
MAX_SEGMENTS = 8


def route_template(path: str, status: int) -> str:
    """The path with its ids as ``{id}`` (see the module doc)."""
    if status == 404:
        return "unmatched"
    segs = [s for s in path.split("/") if s]
    if not segs:
        return "/"
    out = []
    if _VERSION.match(segs[0]):
        out.append(segs.pop(0))
    for i, s in enumerate(segs[:MAX_SEGMENTS]):
        out.append("{id}" if i % 2 else (s if _NAME.match(s) else "{other}"))
    if len(segs) > MAX_SEGMENTS:
        out.append("...")
    return "/" + "/".join(out)


class ApiMetrics:
    """Wraps a WSGI app: requests counted and timed, ``/metrics`` answered."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("midoflow_api_requests", "API requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.seconds = Histogram("midoflow_api_request_seconds", "Time to answer an API request",
                                 ["method", "route"], buckets=BUCKETS, registry=self.registry)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        t0 = time.perf_counter()
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        method = method if method in METHODS else "other"
        status = [500]

        def start(st: str, headers: list, exc_info: Any = None) -> Callable:
            try:
                status[0] = int(st.split(" ", 1)[0])
            except ValueError:
                status[0] = 500
            return start_response(st, headers, exc_info) if exc_info is not None \
                else start_response(st, headers)

        try:
            if path == METRICS_PATH:
                return self._metrics(method, start)
            return self.app(environ, start)
        finally:
            route = route_template(path, status[0])
            self.requests.labels(method, route, str(status[0])).inc()
            self.seconds.labels(method, route).observe(time.perf_counter() - t0)

    def _metrics(self, method: str, start_response: Callable) -> list[bytes]:
        if method not in ("GET", "HEAD"):
            body = b'{"error": "MethodNotAllowed", "message": "/metrics is read-only: use GET"}\n'
            start_response("405 Method Not Allowed", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Allow", "GET, HEAD")])
            return [body]
        body = generate_latest(self.registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]
