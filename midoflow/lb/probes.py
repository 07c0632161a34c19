"""The probes a health monitor sends to a member: a TCP connect, or an HTTP or
HTTPS request whose status must be one of the expected codes.

Sockets come from a factory (``() -> socket``, unconnected, AF_INET stream):
the agent makes them inside the load balancer's health namespace
(:func:`midoflow.bgp.link.socket_in`), tests on loopback. A probe never raises:
it returns a :class:`ProbeResult` saying what went wrong.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

SocketFactory = Callable[[], socket.socket]

_CODES = re.compile(r"^\s*(\d{3})(?:\s*-\s*(\d{3}))?\s*$")
MAX_STATUS_LINE = 4096  # bytes read at most looking for the status line


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str  # what was seen: "connected", "HTTP 200", "timed out after 3 s", ...


def parse_expected_codes(text: str) -> frozenset[int]:
    """``"200"``, ``"200,202"``, ``"200-204"`` (and mixes, ``"200,300-302"``)
    as the set of codes; ValueError saying what is wrong."""
    codes: set[int] = set()
    for part in str(text).split(","):
        m = _CODES.match(part)
        if not m:
            raise ValueError(f"expected_codes {text!r}: {part.strip()!r} is not a code "
                             "(100-599) or a range like 200-204; write e.g. 200, 200,202 "
                             "or 200-204")
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if not (100 <= lo <= hi <= 599):
            raise ValueError(f"expected_codes {text!r}: {part.strip()!r} must be codes "
                             "between 100 and 599, a range low to high like 200-204")
        codes.update(range(lo, hi + 1))
    return frozenset(codes)


class _Deadline:
    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self.timeout, self.clock = timeout, clock
        self.end = clock() + timeout

    def left(self) -> float:
        left = self.end - self.clock()
        if left <= 0:
            raise TimeoutError
        return left


def _connect(factory: SocketFactory, address: str, port: int,
             deadline: _Deadline) -> socket.socket:
    sock = factory()
    try:
        sock.settimeout(deadline.left())
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _failure(e: BaseException, timeout: float) -> ProbeResult:
    if isinstance(e, TimeoutError | socket.timeout):
        return ProbeResult(False, f"timed out after {timeout:g} s")
    if isinstance(e, ConnectionRefusedError):
        return ProbeResult(False, "connection refused")
    if isinstance(e, ssl.SSLError):
        return ProbeResult(False, f"TLS: {e}")
    return ProbeResult(False, f"{type(e).__name__}: {e}")


def tcp_probe(factory: SocketFactory, address: str, port: int, timeout: float,
              clock: Callable[[], float] = time.monotonic) -> ProbeResult:
    """A TCP connection established within ``timeout`` seconds (then closed)."""
    try:
        _connect(factory, address, port, _Deadline(timeout, clock)).close()
    except Exception as e:
        return _failure(e, timeout)
    return ProbeResult(True, "connected")


def http_probe(factory: SocketFactory, address: str, port: int, timeout: float, *,
               method: str = "GET", path: str = "/", expected: frozenset[int] = frozenset({200}),
               tls: bool = False, clock: Callable[[], float] = time.monotonic) -> ProbeResult:
    """``method path`` over HTTP/1.0 (HTTPS: TLS without certificate
    verification, as Octavia's checks); ok if the status line comes within
    ``timeout`` seconds and its code is in ``expected``."""
    deadline = _Deadline(timeout, clock)
    try:
        sock = _connect(factory, address, port, deadline)
        try:
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock.settimeout(deadline.left())
                sock = ctx.wrap_socket(sock)
            host = f"{address}:{port}"
            request = (f"{method} {path or '/'} HTTP/1.0\r\nHost: {host}\r\n"
                       "User-Agent: midoflow-health-check\r\nAccept: */*\r\n"
                       "Connection: close\r\n\r\n")
            sock.settimeout(deadline.left())
            sock.sendall(request.encode("latin-1"))
            head = b""
            while b"\n" not in head and len(head) < MAX_STATUS_LINE:
                sock.settimeout(deadline.left())
                chunk = sock.recv(MAX_STATUS_LINE - len(head))
                if not chunk:
                    break
                head += chunk
        finally:
            sock.close()
    except Exception as e:
        return _failure(e, timeout)
    line = head.split(b"\n", 1)[0].strip().decode("latin-1", "replace")
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return ProbeResult(False, f"not an HTTP answer: {line[:80]!r}" if line
                           else "connection closed without an answer")
    code = int(parts[1])
    if code not in expected:
        return ProbeResult(False, f"HTTP {code}, expected {_codes_text(expected)}")
    return ProbeResult(True, f"HTTP {code}")


def _codes_text(codes: frozenset[int]) -> str:
    s = sorted(codes)
    if len(s) > 3 and s[-1] - s[0] + 1 == len(s):
        return f"{s[0]}-{s[-1]}"
    return ",".join(map(str, s))
