"""The REST API through webob against the memory store."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from midoflow.rest.app import MAX_BODY, make_app
from midoflow.store import paths
from tests.unit.conftest import ApiClient, store_snapshot


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def topo(api):
    h1 = api.ok("POST", "/v1/hosts", {"name": "h1"})
    h2 = api.ok("POST", "/v1/hosts", {"name": "h2"})
    tz = api.ok("POST", "/v1/tunnel_zones", {"name": "tz", "type": "vxlan"})
    br = api.ok("POST", "/v1/bridges", {"name": "br", "tenant_id": "t1"})
    br2 = api.ok("POST", "/v1/bridges", {"name": "br2", "tenant_id": "t2"})
    p1 = api.ok("POST", f"/v1/bridges/{br['id']}/ports", {"name": "p1"})
    p2 = api.ok("POST", f"/v1/bridges/{br['id']}/ports", {})
    i1 = api.ok("POST", f"/v1/bridges/{br['id']}/ports", {"type": "interior"})
    i2 = api.ok("POST", f"/v1/bridges/{br2['id']}/ports", {"type": "interior"})
    return dict(h1=h1, h2=h2, tz=tz, br=br, br2=br2, p1=p1, p2=p2, i1=i1, i2=i2)


def _err(resp, status, field=None):
    assert resp.status_int == status, resp.text
    assert resp.content_type == "application/json"
    body = resp.json
    assert set(body) <= {"error", "message", "field"} and body["message"]
    assert "Traceback" not in resp.text
    if field is not None:
        assert body.get("field") == field, body
    return body


# ------------------------------------------------------------------ good input
def test_index_and_openapi(api):
    idx = api.ok("GET", "/v1")
    assert idx["resources"]["bridges"] == "/v1/bridges"
    doc = api.ok("GET", "/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    resp = api.get("/v1/openapi.yaml")
    assert resp.status_int == 200 and yaml.safe_load(resp.body) == doc
    # every route of the app is documented, with its methods
    for path in ("/v1/hosts/{id}/bindings", "/v1/tunnel_zones/{id}/members/{host_id}",
                 "/v1/ports/{id}/binding", "/v1/ports/{id}/link", "/v1/status"):
        assert path in doc["paths"]


def test_crud_every_resource(api, topo):
    hid = topo["h1"]["id"]
    assert api.ok("GET", f"/v1/hosts/{hid}")["name"] == "h1"
    assert len(api.ok("GET", "/v1/hosts")) == 2
    h = api.ok("PUT", f"/v1/hosts/{hid}", {"description": "rack 1"})
    assert h["description"] == "rack 1" and h["version"] == 1

    tzid = topo["tz"]["id"]
    assert api.ok("GET", f"/v1/tunnel_zones/{tzid}")["type"] == "vxlan"
    assert api.ok("PUT", f"/v1/tunnel_zones/{tzid}", {"type": "gre"})["type"] == "gre"
    tz = api.ok("POST", f"/v1/tunnel_zones/{tzid}/members", {"host_id": hid, "ip": "10.1.1.1"})
    assert tz["members"] == [{"host_id": hid, "ip": "10.1.1.1"}]
    assert api.ok("GET", f"/v1/tunnel_zones/{tzid}/members") == tz["members"]
    tz = api.ok("DELETE", f"/v1/tunnel_zones/{tzid}/members/{hid}", status=200)
    assert tz["members"] == []
    assert len(api.ok("GET", "/v1/tunnel_zones")) == 1

    brid = topo["br"]["id"]
    assert [b["name"] for b in api.ok("GET", "/v1/bridges?tenant_id=t2")] == ["br2"]
    assert len(api.ok("GET", "/v1/bridges")) == 2
    br = api.ok("GET", f"/v1/bridges/{brid}")
    assert len(br["port_ids"]) == 3
    br = api.ok("PUT", f"/v1/bridges/{brid}", dict(br, admin_state_up=False))
    assert br["admin_state_up"] is False
    assert len(api.ok("GET", f"/v1/bridges/{brid}/ports")) == 3

    pid = topo["p1"]["id"]
    assert len(api.ok("GET", "/v1/ports")) == 4
    assert api.ok("PUT", f"/v1/ports/{pid}", {"name": "eth1"})["name"] == "eth1"
    port = api.ok("PUT", f"/v1/ports/{pid}/binding", {"host_id": hid, "interface_name": "tap1"})
    assert port["host_id"] == hid and port["interface_name"] == "tap1"
    assert [p["id"] for p in api.ok("GET", f"/v1/hosts/{hid}/bindings")] == [pid]
    assert api.ok("DELETE", f"/v1/ports/{pid}/binding", status=200)["host_id"] is None
    i1, i2 = topo["i1"]["id"], topo["i2"]["id"]
    assert api.ok("PUT", f"/v1/ports/{i1}/link", {"peer_id": i2})["peer_id"] == i2
    assert api.ok("GET", f"/v1/ports/{i2}")["peer_id"] == i1
    assert api.ok("DELETE", f"/v1/ports/{i2}/link", status=200)["peer_id"] is None

    for p in ("p1", "p2", "i1"):
        api.ok("DELETE", f"/v1/ports/{topo[p]['id']}")
    api.ok("DELETE", f"/v1/bridges/{brid}")
    api.ok("DELETE", f"/v1/tunnel_zones/{tzid}")
    api.ok("DELETE", f"/v1/hosts/{hid}")
    _err(api.get(f"/v1/hosts/{hid}"), 404)


def test_create_with_own_id(api):
    hid = _id()
    resp = api.post("/v1/hosts", {"id": hid, "name": "x"})
    assert resp.status_int == 201 and resp.json["id"] == hid
    _err(api.post("/v1/hosts", {"id": hid, "name": "y"}), 409)


def test_host_alive_and_status(api, mem_store, topo):
    hid = topo["h1"]["id"]
    mem_store.put_state(paths.host_alive(hid), {"host_id": hid, "ovs_connected": True,
                                                "tunnel_ips": {"vxlan": "10.0.0.1"}})
    h = api.ok("GET", f"/v1/hosts/{hid}")
    assert h["alive"] is True and h["state"]["ovs_connected"] is True
    st = api.ok("GET", "/v1/status")
    assert st["store"]["connected"] is True
    row = next(x for x in st["hosts"] if x["id"] == hid)
    assert {k: val for k, val in row.items() if k != "protection"} == {
        "id": hid, "name": "h1", "alive": True, "ovs_connected": True,
        "tunnel_ips": {"vxlan": "10.0.0.1"}}
    assert row.get("protection", {}) == {}  # what the agent's bounds refused: nothing
    # the object read back (with alive/state) is a valid PUT body
    assert api.ok("PUT", f"/v1/hosts/{hid}", h)["name"] == "h1"


# --------------------------------------------------------------- bad fields
# What every kind answers alike (unknown, malformed and read-only fields, echoes) is
# checked for each declared kind in test_rest_kinds.py.
BAD = [
    ("POST", "/v1/hosts", {"name": ""}, "name"),
    ("POST", "/v1/hosts", {}, "name"),
    ("POST", "/v1/hosts", {"name": "h" * 256}, "name"),
    ("PUT", "/v1/hosts/{h1}", {"description": 3}, "description"),
    ("POST", "/v1/tunnel_zones", {"name": "z", "type": "vlan"}, "type"),
    ("POST", "/v1/tunnel_zones", {"type": "gre"}, "name"),
    ("POST", "/v1/tunnel_zones/{tz}/members", {"host_id": "{h1}"}, "ip"),
    ("POST", "/v1/tunnel_zones/{tz}/members", {"host_id": "{h1}", "ip": "300.1.1.1"}, "ip"),
    ("POST", "/v1/tunnel_zones/{tz}/members", {"host_id": "{h1}", "ip": "224.1.1.1"}, "ip"),
    ("POST", "/v1/tunnel_zones/{tz}/members", {"host_id": "{missing}", "ip": "1.1.1.1"},
     "host_id"),
    ("POST", "/v1/bridges", {"admin_state_up": "yes"}, "admin_state_up"),
    ("POST", "/v1/bridges", {"admin_state_up": 1}, "admin_state_up"),
    ("POST", "/v1/bridges", {"tenant_id": None}, "tenant_id"),
    ("PUT", "/v1/bridges/{br}", {"name": 1.5}, "name"),
    ("POST", "/v1/bridges/{br}/ports", {"type": "uplink"}, "type"),
    ("PUT", "/v1/ports/{p1}", {"admin_state_up": "false"}, "admin_state_up"),
    ("PUT", "/v1/ports/{p1}/binding", {"host_id": "{h1}"}, "interface_name"),
    ("PUT", "/v1/ports/{p1}/binding", {"host_id": "{missing}", "interface_name": "t"}, "host_id"),
    ("PUT", "/v1/ports/{p1}/binding", {"host_id": "{h1}", "interface_name": 7},
     "interface_name"),
    ("PUT", "/v1/ports/{i1}/link", {"peer_id": "{missing}"}, "peer_id"),
    ("PUT", "/v1/ports/{i1}/link", {"peer_id": "{i1}"}, "peer_id"),
    ("PUT", "/v1/ports/{i1}/link", {}, "peer_id"),
]


def _fill(obj, topo, missing):
    if isinstance(obj, str):
        for k, val in topo.items():
            obj = obj.replace("{" + k + "}", val["id"])
        return obj.replace("{missing}", missing)
    if isinstance(obj, dict):
        return {k: _fill(val, topo, missing) for k, val in obj.items()}
    if isinstance(obj, list):
        return [_fill(x, topo, missing) for x in obj]
    return obj


@pytest.mark.parametrize("method,path,body,field", BAD)
def test_bad_field_is_400_naming_it_and_changes_nothing(api, mem_store, topo, method, path,
                                                        body, field):
    missing = _id()
    path, body = _fill(path, topo, missing), _fill(body, topo, missing)
    before = store_snapshot(mem_store)
    resp = api.call(method, path, body)
    _err(resp, 400, field)
    assert store_snapshot(mem_store) == before


# ------------------------------------------------------------ 404, 409, 405
# (each kind's own routes: test_rest_kinds.py)
@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/hosts/{x}/bindings"), ("GET", "/v1/tunnel_zones/{x}/members"),
    ("POST", "/v1/tunnel_zones/{x}/members"), ("DELETE", "/v1/tunnel_zones/{x}/members/{x}"),
    ("PUT", "/v1/ports/{x}/binding"), ("DELETE", "/v1/ports/{x}/link"),
    ("GET", "/v1/nothing"), ("GET", "/elsewhere"), ("GET", "/v1/hosts/{x}/nothing"),
])
@pytest.mark.parametrize("x", ["missing", "not-a-uuid", "123", "%2e%2e"])
def test_missing_or_malformed_id_is_404(api, topo, method, path, x):
    x = _id() if x == "missing" else x
    body = {"name": "n"} if method in ("PUT", "POST") else None
    path = path.replace("{x}", x)
    resp = api.call(method, path, body) if body else api.call(method, path)
    _err(resp, 404)


def test_conflicts(api, mem_store, topo):
    h1, tz, br, p1, p2 = (topo[k]["id"] for k in ("h1", "tz", "br", "p1", "p2"))
    # stale version
    cur = api.ok("GET", f"/v1/bridges/{br}")
    api.ok("PUT", f"/v1/bridges/{br}", {"name": "x", "version": cur["version"]})
    before = store_snapshot(mem_store)
    _err(api.put(f"/v1/bridges/{br}", {"name": "y", "version": cur["version"]}), 409, "version")
    # a bridge with ports
    _err(api.delete(f"/v1/bridges/{br}"), 409)
    assert store_snapshot(mem_store) == before
    # binding twice, interface used
    api.ok("PUT", f"/v1/ports/{p1}/binding", {"host_id": h1, "interface_name": "tap0"})
    before = store_snapshot(mem_store)
    _err(api.put(f"/v1/ports/{p1}/binding", {"host_id": h1, "interface_name": "tap1"}), 409)
    _err(api.put(f"/v1/ports/{p2}/binding", {"host_id": h1, "interface_name": "tap0"}), 409,
         "interface_name")
    _err(api.delete(f"/v1/hosts/{h1}"), 409)
    _err(api.put(f"/v1/ports/{topo['i1']['id']}/binding",
                 {"host_id": h1, "interface_name": "tap5"}), 409)
    _err(api.put(f"/v1/ports/{p1}/link", {"peer_id": topo["i2"]["id"]}), 409)
    _err(api.delete(f"/v1/ports/{p2}/binding"), 409)
    _err(api.delete(f"/v1/ports/{p2}/link"), 409)
    assert store_snapshot(mem_store) == before
    # duplicate member
    api.ok("POST", f"/v1/tunnel_zones/{tz}/members", {"host_id": h1, "ip": "10.0.0.1"})
    before = store_snapshot(mem_store)
    _err(api.post(f"/v1/tunnel_zones/{tz}/members", {"host_id": h1, "ip": "10.0.0.2"}), 409,
         "host_id")
    assert store_snapshot(mem_store) == before


def test_method_not_allowed(api):
    resp = api.call("PATCH", "/v1/hosts")
    _err(resp, 405)
    assert resp.headers["Allow"] == "GET, HEAD, POST"
    _err(api.call("POST", f"/v1/ports/{_id()}"), 405)
    resp = api.call("HEAD", "/v1/hosts")
    assert resp.status_int == 200 and resp.body == b""


# ----------------------------------------------------------- bad requests
def test_malformed_bodies(api, mem_store, topo):
    before = store_snapshot(mem_store)
    for raw in (b"{", b"nope", b"", b"   ", b"\xff\xfe", b'{"name": NaN}', b"[" * 100000,
                b"1" * 5000):
        _err(api.post("/v1/hosts", raw=raw), 400)
    for doc in ([], "h", 3, None, [{"name": "h"}]):
        _err(api.post("/v1/hosts", doc), 400)
    # 415 for a body that is not JSON: every kind, in test_rest_kinds.py
    big = json.dumps({"name": "h", "description": "x" * (MAX_BODY + 10)}).encode()
    _err(api.post("/v1/hosts", raw=big), 413)
    assert store_snapshot(mem_store) == before
    _err(api.post("/v1/hosts", raw=b'{"name": "\\ud800"}'), 400, "name")
    raw = b'{"host_id": "%s", "interface_name": "t\\udfff"}' % topo["h1"]["id"].encode()
    _err(api.put(f"/v1/ports/{topo['p1']['id']}/binding", raw=raw), 400, "interface_name")
    assert store_snapshot(mem_store) == before
    # a charset parameter is fine
    resp = api.post("/v1/hosts", raw=b'{"name": "h"}', content_type="application/json; "
                    "charset=utf-8")
    assert resp.status_int == 201


def test_store_unavailable_is_503(api, flaky_store, topo):
    flaky_store.down = True
    for method, path, body in (("GET", "/v1/hosts", None), ("GET", "/v1/status", None),
                               ("POST", "/v1/bridges", {"name": "b"}),
                               ("DELETE", f"/v1/ports/{topo['p1']['id']}", None),
                               ("GET", f"/v1/bridges/{topo['br']['id']}", None)):
        resp = api.call(method, path, body) if body else api.call(method, path)
        assert _err(resp, 503)["error"] == "Unavailable"
    flaky_store.down = False
    assert len(api.ok("GET", "/v1/ports")) == 4


def test_unexpected_error_is_500_without_traceback(mem_store, caplog):
    class Broken(type(mem_store)):
        def list(self, kind):
            raise RuntimeError("secret internals")

    api = ApiClient(make_app(Broken()))
    resp = api.get("/v1/hosts")
    body = _err(resp, 500)
    assert "secret" not in resp.text and body["error"] == "InternalError"
    assert "secret internals" in caplog.text


def test_real_socket_server(mem_store):
    import urllib.request

    from midoflow.rest.server import serve_in_thread

    srv = serve_in_thread(mem_store)
    try:
        req = urllib.request.Request(srv.url + "/v1/hosts", data=b'{"name": "h"}',
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 201
        with urllib.request.urlopen(srv.url + "/v1/hosts", timeout=5) as resp:
            assert [h["name"] for h in json.loads(resp.read())] == ["h"]
    finally:
        srv.stop()


def test_api_app_options(monkeypatch):
    from midoflow.apps import api as api_app

    assert api_app.CONF.midoflow_api_port == 8181
    assert api_app.CONF.midoflow_api_host == "127.0.0.1"
    api_app.register_opts()  # registering again is harmless
    monkeypatch.setenv("MIDOFLOW_ZOOKEEPER", "127.0.0.1:2181")
    assert api_app.zookeeper_spec() == "127.0.0.1:2181"
    monkeypatch.delenv("MIDOFLOW_ZOOKEEPER")
    monkeypatch.delenv("MIDOFLOW_AGENT_CONFIG", raising=False)
    with pytest.raises(SystemExit):
        api_app.zookeeper_spec()
