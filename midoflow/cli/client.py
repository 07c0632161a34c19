"""A small JSON client for the midoflow REST API (standard library only)."""

from __future__ import annotations

import errno
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_API = "http://127.0.0.1:8181"
PREFIX = "/v1"


class ApiError(Exception):
    """The API answered with an error status (4xx/5xx)."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field

    def one_line(self) -> str:
        kind = _words(self.error) if self.error else "error"
        line = f"{self.status} {kind}: {self.message}"
        if self.field:
            line += f" (field: {self.field})"
        return line


class ResolveError(Exception):
    """A name given where an id is expected matches no object, or several."""


class Unreachable(Exception):
    """No HTTP answer at all: refused, timed out, unknown name, ..."""

    def __init__(self, base_url: str, reason: str):
        super().__init__(reason)
        self.base_url = base_url
        self.reason = reason


def _words(name: str) -> str:
    """``"NotFound"`` -> ``"not found"``; ``"conflict"`` stays as it is."""
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and not name[i - 1].isupper():
            out.append(" ")
        out.append(c.lower())
    return "".join(out).replace("_", " ")


def _reason(exc: BaseException) -> str:
    """A short, human phrase for why a connection failed."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if isinstance(exc, str):
            return exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror or exc})"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to host"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def check_base_url(url: str) -> str:
    """Validate ``--api`` / ``MIDOFLOW_API``; raises ValueError with a reason."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid API URL {url!r}: expected http://HOST:PORT")
    return url.rstrip("/")


class Client:
    def __init__(self, base_url: str = DEFAULT_API, timeout: float = 10.0):
        self.base_url = check_base_url(base_url)
        self.timeout = timeout

    # ---- low level ----------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """Send one request under ``/v1``; the decoded JSON body, or None when empty."""
        url = self.base_url + PREFIX + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise self._api_error(e) from None
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(self.base_url, _reason(e)) from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(
                502, "bad response", f"{method} {path} answered with non-JSON: {raw[:80]!r}"
            ) from None

    @staticmethod
    def _api_error(e: urllib.error.HTTPError) -> ApiError:
        try:
            raw = e.read()
        except OSError:
            raw = b""
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and ("message" in doc or "error" in doc):
            return ApiError(
                e.code,
                str(doc.get("error") or e.reason or ""),
                str(doc.get("message") or e.reason or ""),
                doc.get("field"),
            )
        text = raw.decode("utf-8", "replace").strip().splitlines()
        message = text[0][:200] if text else str(e.reason or "")
        return ApiError(e.code, str(e.reason or "error"), message)

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, query={k: v for k, v in query.items() if v})

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # ---- name resolution ----------------------------------------------------
    def resolve(self, kind: str, ref: str, label: str) -> str:
        """An id for ``ref``: an id, or the name of exactly one object of ``kind``.

        UUID-shaped refs are taken as ids as they are (the API answers 404 for a
        missing one); anything else is matched against the ids, then the names,
        of a listing."""
        if _looks_like_uuid(ref):
            return ref
        objs = self.get(f"/{kind}") or []
        for o in objs:
            if o.get("id") == ref:
                return ref
        named = [o for o in objs if o.get("name") == ref]
        if len(named) == 1:
            return named[0]["id"]
        if not named:
            raise ResolveError(f"no {label} with id or name {ref!r}")
        ids = ", ".join(o["id"] for o in named)
        raise ResolveError(f"{len(named)} {label}s are named {ref!r} ({ids}); use an id")


def _looks_like_uuid(s: str) -> bool:
    import uuid

    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return len(s) in (32, 36)
