"""Issue 9: requests a hostile client sends. Strict decoding (400, never a 500
or a traceback), bounded bodies and transactions (413), chunked bodies, aborted
uploads (one log line), two creates of one id (one 201, one 409), duplicate
tunnel IPs and router MACs (409)."""

from __future__ import annotations

import io
import logging
import socket
import uuid

import pytest
import webob

from midoflow import model
from midoflow.errors import Conflict, NotFound, TooLarge
from midoflow.rest.app import MAX_BODY
from midoflow.rest.server import serve_in_thread
from midoflow.service.topology import TopologyService
from midoflow.store.base import MAX_TXN_BYTES, Create, Update
from midoflow.store.memory import MemoryStore
from tests.unit.conftest import FlakyStore, store_snapshot


def _id() -> str:
    return str(uuid.uuid4())


def _assert_error(resp, status: int) -> dict:
    assert resp.status_int == status, resp.text
    assert resp.content_type == "application/json"
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    body = resp.json
    assert set(body) <= {"error", "message", "field"} and body["message"]
    return body


def _raw(app, method: str, path: str, body: bytes | None = None, **environ) -> webob.Response:
    """A request built by hand: ``path`` is the raw (percent-encoded) target."""
    target, _, query = path.partition("?")
    env = {"REQUEST_METHOD": method, "QUERY_STRING": query}
    req = webob.Request.blank("/", environ=env)
    # what a WSGI server puts there: the percent-decoded bytes as latin-1
    from urllib.parse import unquote_to_bytes
    req.environ["PATH_INFO"] = unquote_to_bytes(target).decode("latin-1")
    if body is not None:
        req.environ["wsgi.input"] = io.BytesIO(body)
        req.environ["CONTENT_LENGTH"] = str(len(body))
        req.environ["CONTENT_TYPE"] = "application/json"
    req.environ.update(environ)
    return req.get_response(app)


# ------------------------------------------------------------- strict decoding
@pytest.mark.parametrize("path", [
    "/v1/bridges/%ff", "/v1/bridges/%c3%28", "/v1/ports/%ed%a0%80",
    "/v1/tunnel_zones/x/members/%fe", "/v1/%ff", "/v1/bridges?tenant_id=%ff",
    "/v1/chains?tenant_id=a%80b", "/v1/routers?%ff=1", "/v1/hosts?x=%e2%82",
])
def test_bad_utf8_in_path_or_query_is_400(api, path, caplog):
    before = store_snapshot(api.app.service.store.inner)
    body = _assert_error(_raw(api.app, "GET", path), 400)
    assert "UTF-8" in body["message"]
    assert store_snapshot(api.app.service.store.inner) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_raw_non_ascii_query_is_400(api):
    resp = _raw(api.app, "GET", "/v1/bridges", QUERY_STRING="tenant_id=\xff")
    _assert_error(resp, 400)


def test_good_utf8_still_works(api):
    api.ok("POST", "/v1/bridges", {"name": "br", "tenant_id": "tenant-é"})
    resp = _raw(api.app, "GET", "/v1/bridges?tenant_id=tenant-%C3%A9")
    assert resp.status_int == 200 and [b["name"] for b in resp.json] == ["br"]
    _assert_error(_raw(api.app, "GET", "/v1/bridges/%C3%A9"), 404)


@pytest.mark.parametrize("raw,what", [
    (b'{"name": "\xff"}', "UTF-8"),
    (b'{"name": "a"', "JSON"),
    (b"\xef\xbb\xbf{}", "JSON"),  # a BOM is not JSON
    (b'{"name": NaN}', "JSON"),
    (b"[" * 100000, "JSON"),
])
def test_bad_body_is_400(api, raw, what):
    body = _assert_error(_raw(api.app, "POST", "/v1/bridges", raw), 400)
    assert what in body["message"]


@pytest.mark.parametrize("environ,status", [
    ({"CONTENT_LENGTH": "12x"}, 400),
    ({"CONTENT_LENGTH": "-1"}, 400),
    ({"CONTENT_TYPE": "application/json; charset=latin-1"}, 415),
    ({"CONTENT_TYPE": "application/json\xe9"}, 400),
    ({"HTTP_TRANSFER_ENCODING": "chunked\xff"}, 400),
])
def test_bad_headers(api, environ, status):
    _assert_error(_raw(api.app, "POST", "/v1/bridges", b"{}", **environ), status)


def test_charset_utf8_is_accepted(api):
    resp = _raw(api.app, "POST", "/v1/bridges", b'{"name": "x"}',
                CONTENT_TYPE="application/json; charset=UTF-8")
    assert resp.status_int == 201, resp.text


# ---------------------------------------------------------------- body bounds
def test_body_over_limit_is_413(api):
    raw = b'{"name": "' + b"x" * MAX_BODY + b'"}'
    body = _assert_error(_raw(api.app, "POST", "/v1/bridges", raw), 413)
    assert "1 MiB" in body["message"]
    # a lying Content-Length is refused before anything is read
    _assert_error(_raw(api.app, "POST", "/v1/bridges", b"{}",
                       CONTENT_LENGTH=str(MAX_BODY + 1)), 413)


def _chunked_env(data: bytes) -> dict:
    """What a de-chunking server (eventlet, ours) hands over: no length."""
    return {"wsgi.input": io.BytesIO(data), "HTTP_TRANSFER_ENCODING": "chunked",
            "CONTENT_TYPE": "application/json"}


def test_chunked_body_is_read(api):
    req = webob.Request.blank("/v1/bridges", method="POST")
    req.environ.pop("CONTENT_LENGTH", None)
    req.environ.update(_chunked_env(b'{"name": "chunky"}'))
    resp = req.get_response(api.app)
    assert resp.status_int == 201, resp.text
    assert resp.json["name"] == "chunky"


def test_chunked_body_over_limit_is_413(api):
    req = webob.Request.blank("/v1/bridges", method="POST")
    req.environ.pop("CONTENT_LENGTH", None)
    req.environ.update(_chunked_env(b'{"name": "' + b"y" * (2 * MAX_BODY) + b'"}'))
    _assert_error(req.get_response(api.app), 413)


class _Gone(io.RawIOBase):
    """A client that sends a few bytes and closes the connection."""

    def __init__(self, first: bytes, exc: Exception | None) -> None:
        self.first, self.exc = first, exc

    def read(self, n=-1):
        if self.first:
            out, self.first = self.first, b""
            return out
        if self.exc is not None:
            raise self.exc
        return b""


@pytest.mark.parametrize("exc", [None, ConnectionResetError("reset by peer"),
                                 webob.request.DisconnectionError("gone")])
def test_aborted_upload_is_one_log_line(api, caplog, exc):
    caplog.set_level(logging.DEBUG, logger="midoflow.rest")
    resp = _raw(api.app, "POST", "/v1/bridges", b"", CONTENT_LENGTH="1000",
                **{"wsgi.input": _Gone(b'{"name": ', exc)})
    _assert_error(resp, 400)
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None and "client gone" in records[0].getMessage()
    assert "\n" not in records[0].getMessage()


# ------------------------------------------------------------ real socket server
def _http(url: str, request: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_socket_server_chunked_and_bad_encoding(mem_store):
    srv = serve_in_thread(mem_store)
    try:
        payload = b'{"name": "over-the-wire"}'
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:7], payload[7:]))
        status, body = _http(srv.url, b"POST /v1/bridges HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             + chunks + b"0\r\n\r\n")
        assert status == 201, body
        status, body = _http(srv.url, b"POST /v1/bridges HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             b"zz\r\n{}\r\n0\r\n\r\n")
        assert status == 400 and b"chunked" in body
        for target in (b"/v1/bridges/%ff", b"/v1/bridges?tenant_id=%ff"):
            status, body = _http(srv.url, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                 b"Connection: close\r\n\r\n")
            assert status == 400 and b"Traceback" not in body, body
    finally:
        srv.stop()


# ------------------------------------------------------ two creates of one id
class RacingStore(FlakyStore):
    """The first read of ``target`` misses, and the competing request commits
    right after it: what two concurrent creates of one id look like."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.target: tuple[str, str] | None = None
        self.rival = None

    def get(self, kind, id):
        if self.target == (kind, id):
            self.target = None
            try:
                return self.inner.get(kind, id)
            except NotFound:
                self.rival()  # the other request's create lands now
                raise
        return self.inner.get(kind, id)


def _creates(svc: TopologyService, ctx: dict) -> dict:
    """kind -> create(body) for every kind a POST can create with an explicit id."""
    return {
        model.HOSTS: lambda b: svc.create_host(dict(b, name="h")),
        model.TUNNEL_ZONES: lambda b: svc.create_tunnel_zone(dict(b, name="tz")),
        model.BRIDGES: lambda b: svc.create_bridge(dict(b, name="br")),
        model.ROUTERS: lambda b: svc.create_router(dict(b, name="rt")),
        model.PORTS: lambda b: svc.create_port(ctx["br"], b),
        "router_ports": lambda b: svc.create_router_port(
            ctx["rt"], dict(b, ip_address=f"10.{ctx['n']()}.0.1", prefix_len=24)),
        model.ROUTES: lambda b: svc.create_route(
            ctx["rt"], dict(b, dst_cidr=f"10.{ctx['n']()}.0.0/16", type="blackhole")),
        model.CHAINS: lambda b: svc.create_chain(dict(b, name="c")),
        model.RULES: lambda b: svc.create_rule(ctx["ch"], dict(b, action="accept")),
        model.PORT_GROUPS: lambda b: svc.create_port_group(dict(b, name="pg")),
        model.IP_ADDR_GROUPS: lambda b: svc.create_ip_addr_group(dict(b, name="ipg")),
        model.SECURITY_GROUPS: lambda b: svc.create_security_group(dict(b, name="sg")),
    }


@pytest.mark.parametrize("kind", [model.HOSTS, model.TUNNEL_ZONES, model.BRIDGES,
                                  model.ROUTERS, model.PORTS, "router_ports", model.ROUTES,
                                  model.CHAINS, model.RULES, model.PORT_GROUPS,
                                  model.IP_ADDR_GROUPS, model.SECURITY_GROUPS])
def test_concurrent_create_of_one_id_never_replaces(kind):
    mem = MemoryStore()
    racing = RacingStore(mem)
    svc, rival_svc = TopologyService(racing), TopologyService(mem)
    counter = iter(range(1, 250))
    ctx = {"br": svc.create_bridge({"name": "b"})["id"],
           "rt": svc.create_router({"name": "r"})["id"],
           "ch": svc.create_chain({"name": "c"})["id"], "n": lambda: next(counter)}
    oid = _id()
    mine, theirs = _creates(svc, ctx), _creates(rival_svc, ctx)
    first: list[dict] = []
    racing.rival = lambda: first.append(theirs[kind]({"id": oid}))
    racing.target = (model.PORTS if kind == "router_ports" else kind, oid)
    with pytest.raises(Conflict, match="already exists|changed meanwhile"):
        mine[kind]({"id": oid})
    assert first and first[0]["id"] == oid
    stored, version = mem.get(model.PORTS if kind == "router_ports" else kind, oid)
    assert version == 0  # the first create's object, never overwritten


def test_api_second_create_is_409(api):
    oid = _id()
    for path in ("/v1/bridges", "/v1/routers", "/v1/chains", "/v1/port_groups"):
        oid = _id()
        assert api.post(path, {"id": oid}).status_int == 201
        _assert_error(api.post(path, {"id": oid, "name": "again"}), 409)


# ------------------------------------------------------- transaction size bound
def test_memory_store_refuses_oversized_transaction():
    store = MemoryStore()
    store.commit([Create("ip_addr_groups", {"id": "g", "addresses": []})])
    big = {"id": "g", "addresses": [f"10.0.{i >> 8}.{i & 255}" for i in range(90000)]}
    with pytest.raises(TooLarge, match=f"{MAX_TXN_BYTES:,} bytes"):
        store.commit([Update("ip_addr_groups", big)])
    assert store.get("ip_addr_groups", "g") == ({"id": "g", "addresses": []}, 0)
    assert TooLarge.status == 413


def test_api_port_with_generated_chains_over_limit_is_413(api, flaky_store):
    br = api.ok("POST", "/v1/bridges", {"name": "br"})
    sg = api.ok("POST", "/v1/security_groups", {"name": "sg"})
    before = store_snapshot(flaky_store.inner)
    ips = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(1, 6001)]
    resp = api.post(f"/v1/bridges/{br['id']}/ports",
                    {"mac": "02:00:00:00:00:07", "fixed_ips": ips,
                     "security_group_ids": [sg["id"]], "port_security_enabled": True})
    body = _assert_error(resp, 413)
    assert "limit" in body["message"] and "jute.maxbuffer" in body["message"]
    assert store_snapshot(flaky_store.inner) == before


# -------------------------------------------------- duplicate tunnel IPs, MACs
def test_duplicate_tunnel_ip_in_a_zone_is_409(api):
    h1 = api.ok("POST", "/v1/hosts", {"name": "h1"})["id"]
    h2 = api.ok("POST", "/v1/hosts", {"name": "h2"})["id"]
    body = _assert_error(api.post("/v1/tunnel_zones", {"name": "tz", "members": [
        {"host_id": h1, "ip": "10.0.0.1"}, {"host_id": h2, "ip": "10.0.0.1"}]}), 409)
    assert h1 in body["message"]
    tz = api.ok("POST", "/v1/tunnel_zones",
                {"name": "tz", "members": [{"host_id": h1, "ip": "10.0.0.1"}]})
    body = _assert_error(api.post(f"/v1/tunnel_zones/{tz['id']}/members",
                                  {"host_id": h2, "ip": "10.0.0.1"}), 409)
    assert h1 in body["message"] and body["field"] == "ip"
    api.ok("POST", f"/v1/tunnel_zones/{tz['id']}/members", {"host_id": h2, "ip": "10.0.0.2"})


def test_one_mac_on_two_routers_is_409(api):
    r1 = api.ok("POST", "/v1/routers", {"name": "r1"})["id"]
    r2 = api.ok("POST", "/v1/routers", {"name": "r2"})["id"]
    p1 = api.ok("POST", f"/v1/routers/{r1}/ports",
                {"ip_address": "10.0.0.1", "prefix_len": 24, "mac": "02:ab:00:00:00:01"})
    body = _assert_error(api.post(f"/v1/routers/{r2}/ports", {
        "ip_address": "10.1.0.1", "prefix_len": 24, "mac": "02:AB:00:00:00:01"}), 409)
    assert p1["id"] in body["message"] and r1 in body["message"] and body["field"] == "mac"
