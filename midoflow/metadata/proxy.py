"""The metadata proxy: a WSGI application serving 169.254.169.254.

The request's peer address is a per-port link-local address
(:mod:`.addresses`); ``lookup`` turns it into the VM's
:class:`~.tree.Instance` (404 when it names no port bound here). With an
upstream (Nova's metadata API) the request is forwarded as Neutron's
metadata proxy forwards it: ``X-Instance-ID``, ``X-Tenant-ID``,
``X-Forwarded-For`` (the VM's fixed address) and ``X-Instance-ID-Signature``
(:mod:`.signature`), none of them taken from the VM; the upstream's status
and body come back as they are. An upstream that cannot be reached is a 502,
one that does not answer in time a 504, each with a body saying which. No
upstream: the built-in tree (:mod:`.tree`) answers.

Under the agent (eventlet, monkey-patched by osken-manager) ``http.client``
is green: a slow upstream holds up only its own request.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import webob

from midoflow.metadata import signature, tree

LOG = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # a request body (Nova takes a POSTed password of 256 bytes)
MAX_ANSWER = 16 << 20  # an upstream answer
_PASSED = ("Accept", "Content-Type", "User-Agent")  # request headers forwarded
_RETURNED = ("Content-Type", "Last-Modified", "ETag")  # answer headers returned


class MetadataProxy:
    """``lookup(peer address) -> Instance | None``; ``upstream``: "" (the
    tree) or "http(s)://host[:port][/prefix]"; ``timeout``: seconds for the
    upstream to connect and to answer."""

    def __init__(self, lookup: Callable[[str], tree.Instance | None], upstream: str = "",
                 secret: str = "", timeout: float = 10.0) -> None:
        self.lookup = lookup
        self.upstream = upstream.rstrip("/")
        self.secret = secret
        self.timeout = timeout
        self.stats = {"requests": 0, "unknown_source": 0, "upstream_errors": 0}
        if self.upstream:
            u = urlsplit(self.upstream)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"metadata upstream {upstream!r}: give an http(s) URL")
            self._scheme, self._host, self._port = u.scheme, u.hostname, u.port
            self._prefix = u.path

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        req = webob.Request(environ)
        resp = self.handle(req)
        return resp(environ, start_response)

    def handle(self, req: webob.Request) -> webob.Response:
        self.stats["requests"] += 1
        inst = self.lookup(req.remote_addr or "")
        if inst is None:
            self.stats["unknown_source"] += 1
            return _text(404, f"no VM port on this host has the address {req.remote_addr}: "
                              f"metadata is served to the VMs bound here only\n")
        if req.method not in ("GET", "HEAD", "POST"):
            return _text(405, f"{req.method} is not served here: use GET, HEAD or POST\n",
                         allow="GET, HEAD, POST")
        if not self.upstream:
            if req.method == "POST":
                return _text(405, "no metadata service is configured to take a POST\n",
                             allow="GET, HEAD")
            a = tree.answer(inst, req.path_info)
            return webob.Response(status=a.status, body=a.body, content_type=None,
                                  headerlist=[("Content-Type", a.content_type)])
        return self._forward(req, inst)

    def _headers(self, req: webob.Request, inst: tree.Instance) -> dict[str, str]:
        headers = {h: req.headers[h] for h in _PASSED if h in req.headers}
        headers.update({
            "X-Instance-ID": inst.instance_id,
            "X-Tenant-ID": inst.tenant_id,
            "X-Forwarded-For": inst.local_ipv4,
            "X-Instance-ID-Signature": signature.sign(self.secret, inst.instance_id),
            "Connection": "close",
        })
        return headers

    def _forward(self, req: webob.Request, inst: tree.Instance) -> webob.Response:
        body = None
        if req.method == "POST":
            if (req.content_length or 0) > MAX_BODY:
                return _text(413, f"a request body of at most {MAX_BODY} bytes is taken\n")
            body = req.body_file.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return _text(413, f"a request body of at most {MAX_BODY} bytes is taken\n")
        path = self._prefix + (req.path_qs if req.path_qs.startswith("/") else "/" + req.path_qs)
        where = f"{self.upstream}"
        cls = http.client.HTTPSConnection if self._scheme == "https" else \
            http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout)
        try:
            conn.request(req.method, path, body=body, headers=self._headers(req, inst))
            up = conn.getresponse()
            data = up.read(MAX_ANSWER + 1)
            if len(data) > MAX_ANSWER:
                return self._error(502, f"the metadata service at {where} answered more than "
                                        f"{MAX_ANSWER} bytes")
            headers = [(h, up.headers[h]) for h in _RETURNED if up.headers.get(h)]
            resp = webob.Response(status=up.status, body=data, content_type=None,
                                  headerlist=headers)
            return resp
        except TimeoutError:
            return self._error(504, f"the metadata service at {where} did not answer within "
                                    f"{self.timeout:g} s")
        except (OSError, http.client.HTTPException) as e:
            return self._error(502, f"the metadata service at {where} cannot be reached: "
                                    f"{e or type(e).__name__}")
        finally:
            conn.close()

    def _error(self, status: int, msg: str) -> webob.Response:
        self.stats["upstream_errors"] += 1
        LOG.warning("metadata request failed: %s", msg)
        return _text(status, msg + "\n")


def _text(status: int, msg: str, **headers: str) -> webob.Response:
    resp = webob.Response(status=status, body=msg.encode(), content_type="text/plain",
                          charset="UTF-8")
    for k, v in headers.items():
        resp.headers[k.capitalize()] = v
    return resp
