"""Reading a WSGI request safely, for both APIs: bounded bodies (chunked or
not), a client that leaves mid-body, strictly decoded paths and queries. A
client's mistake raises :class:`midoflow.errors.Invalid` or ``TooLarge``; each
API answers them in its own error format."""

from __future__ import annotations

import urllib.parse

from midoflow.errors import Invalid, TooLarge

MAX_BODY = 1 << 20  # 1 MiB


class ClientGone(Exception):
    """The client closed the connection before sending its whole body."""


def too_large() -> TooLarge:
    return TooLarge(f"the request body is larger than {MAX_BODY:,} bytes (1 MiB): send less "
                    "in one request")


def header(environ: dict, key: str, name: str) -> str | None:
    """A request header the API reads: ASCII only (400 otherwise)."""
    value = environ.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.isascii():
        raise Invalid(f"the {name} header is not ASCII", name)
    return value.strip()


def content_length(environ: dict) -> int | None:
    raw = header(environ, "CONTENT_LENGTH", "Content-Length")
    if not raw:
        return None
    if not raw.isdigit():
        raise Invalid(f"the Content-Length header is not a number: {raw[:40]!r}",
                      "Content-Length")
    return int(raw)


def is_chunked(environ: dict) -> bool:
    te = header(environ, "HTTP_TRANSFER_ENCODING", "Transfer-Encoding") or ""
    return "chunked" in te.lower()


def read_body(environ: dict) -> bytes:
    """The raw body, at most MAX_BODY bytes (TooLarge beyond), whether sent
    with a Content-Length or chunked (the server de-chunks ``wsgi.input``)."""
    clen = content_length(environ)
    chunked = is_chunked(environ)
    if clen is not None and clen > MAX_BODY:
        raise too_large()
    if clen is None and not chunked:
        return b""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    want = clen if clen is not None and not chunked else MAX_BODY + 1
    parts, got = [], 0
    try:
        while got < want:
            chunk = stream.read(min(65536, want - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    except OSError as e:  # the client went away (eventlet, webob, wsgiref)
        raise ClientGone(str(e) or type(e).__name__) from None
    except ValueError as e:  # a malformed chunk
        raise Invalid(f"the chunked request body is malformed: {str(e)[:120]}") from None
    raw = b"".join(parts)
    if got > MAX_BODY:
        raise too_large()
    if clen is not None and not chunked and got < clen:
        raise ClientGone(f"{clen - got} of {clen} body bytes never came")
    return raw


def check_encoding(environ: dict) -> None:
    """Invalid (400) unless the path and the query string are valid UTF-8
    (percent-decoded) and the query is well formed."""
    try:
        raw_path = environ.get("PATH_INFO", "").encode("latin-1")
    except UnicodeEncodeError:
        raw_path = None
    try:
        if raw_path is None:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "not bytes")
        raw_path.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the request path is not valid UTF-8 (after percent-decoding)",
                      "path") from None
    qs = environ.get("QUERY_STRING", "")
    if not qs:
        return
    try:
        qs.encode("ascii")
        urllib.parse.parse_qsl(qs, keep_blank_values=True, strict_parsing=False,
                               encoding="utf-8", errors="strict")
    except (UnicodeError, ValueError):
        raise Invalid("the query string is not valid UTF-8 (after percent-decoding)",
                      "query") from None
