"""The REST API for routers, router ports and routes, through webob on the memory store."""

from __future__ import annotations

import uuid

import pytest

from midoflow.rest.app import PREFIX, ROUTES
from tests.unit.conftest import store_snapshot
from tests.unit.test_rest import _err, _fill


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def topo(api):
    h1 = api.ok("POST", "/v1/hosts", {"name": "h1"})
    br = api.ok("POST", "/v1/bridges", {"name": "br", "tenant_id": "t1"})
    bi = api.ok("POST", f"/v1/bridges/{br['id']}/ports", {"type": "interior"})
    bp = api.ok("POST", f"/v1/bridges/{br['id']}/ports", {})
    r1 = api.ok("POST", "/v1/routers", {"name": "r1", "tenant_id": "t1"})
    r2 = api.ok("POST", "/v1/routers", {"name": "r2", "tenant_id": "t2"})
    ra = api.ok("POST", f"/v1/routers/{r1['id']}/ports",
                {"ip_address": "10.0.1.1", "prefix_len": 24, "type": "interior"})
    up = api.ok("POST", f"/v1/routers/{r1['id']}/ports",
                {"ip_address": "203.0.113.2", "prefix_len": 24, "name": "uplink"})
    r2p = api.ok("POST", f"/v1/routers/{r2['id']}/ports",
                 {"ip_address": "169.254.0.1", "prefix_len": 30, "type": "interior"})
    rt = api.ok("POST", f"/v1/routers/{r1['id']}/routes",
                {"dst_cidr": "0.0.0.0/0", "next_hop_port": up["id"],
                 "next_hop_gateway": "203.0.113.1"})
    return dict(h1=h1, br=br, bi=bi, bp=bp, r1=r1, r2=r2, ra=ra, up=up, r2p=r2p, rt=rt)


def test_every_route_of_the_app_is_documented(api):
    doc = api.ok("GET", "/v1/openapi.json")
    for _name, path, methods in ROUTES:
        templ = PREFIX + path
        if path in ("", "/", "/openapi.yaml", "/openapi.json"):  # the document itself
            continue
        assert templ in doc["paths"], templ
        for method in methods:
            op = doc["paths"][templ][method.lower()]
            assert op["responses"], (templ, method)
    idx = api.ok("GET", "/v1")
    for res in ("routers", "routes", "trace"):
        assert idx["resources"][res] == f"/v1/{res}"
    port = doc["components"]["schemas"]["Port"]
    assert {"mac", "ip_address", "prefix_len"} <= set(port["required"])
    assert port["properties"]["device_type"]["enum"] == ["bridge", "router"]


def test_router_crud(api, topo):
    r1 = topo["r1"]["id"]
    assert [r["name"] for r in api.ok("GET", "/v1/routers")] == ["r1", "r2"]
    assert [r["name"] for r in api.ok("GET", "/v1/routers?tenant_id=t2")] == ["r2"]
    r = api.ok("GET", f"/v1/routers/{r1}")
    assert r["port_ids"] == [topo["ra"]["id"], topo["up"]["id"]]
    r = api.ok("PUT", f"/v1/routers/{r1}", dict(r, name="edge"))
    assert r["name"] == "edge"
    ports = api.ok("GET", f"/v1/routers/{r1}/ports")
    assert [p["ip_address"] for p in ports] == ["10.0.1.1", "203.0.113.2"]
    assert all(p["device_type"] == "router" and p["mac"] for p in ports)
    assert api.ok("GET", f"/v1/ports/{topo['up']['id']}")["prefix_len"] == 24
    bp = api.ok("GET", f"/v1/ports/{topo['bp']['id']}")
    assert (bp["mac"], bp["ip_address"], bp["prefix_len"]) == (None, None, None)
    assert len(api.ok("GET", "/v1/ports")) == 5
    # router <-> bridge and router <-> router links, an uplink binding
    ra, bi, r2p = topo["ra"]["id"], topo["bi"]["id"], topo["r2p"]["id"]
    assert api.ok("PUT", f"/v1/ports/{ra}/link", {"peer_id": bi})["peer_id"] == bi
    api.ok("DELETE", f"/v1/ports/{bi}/link", status=200)
    assert api.ok("PUT", f"/v1/ports/{r2p}/link", {"peer_id": ra})["peer_id"] == ra
    port = api.ok("PUT", f"/v1/ports/{topo['up']['id']}/binding",
                  {"host_id": topo["h1"]["id"], "interface_name": "eth1"})
    assert port["interface_name"] == "eth1"
    # delete everything
    for p in ("ra", "up", "r2p"):
        api.ok("DELETE", f"/v1/ports/{topo[p]['id']}")
    assert api.ok("GET", "/v1/routes") == []  # the default route went with the uplink
    api.ok("DELETE", f"/v1/routers/{r1}")
    _err(api.get(f"/v1/routers/{r1}"), 404)


def test_routes(api, topo):
    r1, ra = topo["r1"]["id"], topo["ra"]["id"]
    rt = topo["rt"]
    assert rt["weight"] == 100 and rt["src_cidr"] == "0.0.0.0/0" and rt["type"] == "normal"
    host = api.ok("POST", f"/v1/routers/{r1}/routes",
                  {"dst_cidr": "10.9.0.0/16", "next_hop_port": ra,
                   "next_hop_gateway": "10.0.1.254", "weight": 5})
    bh = api.ok("POST", f"/v1/routers/{r1}/routes",
                {"dst_cidr": "192.0.2.0/24", "type": "blackhole"})
    got = api.ok("GET", f"/v1/routers/{r1}/routes")
    assert [r["id"] for r in got] == [bh["id"], host["id"], rt["id"]]
    assert len(api.ok("GET", "/v1/routes")) == 3
    assert api.ok("GET", f"/v1/routes/{host['id']}") == host
    new = api.ok("PUT", f"/v1/routes/{host['id']}", dict(host, weight=1))
    assert new["weight"] == 1 and new["version"] == host["version"] + 1
    api.ok("DELETE", f"/v1/routes/{bh['id']}")
    _err(api.get(f"/v1/routes/{bh['id']}"), 404)
    assert api.ok("GET", f"/v1/routers/{topo['r2']['id']}/routes") == []


# (read-only and unknown fields, versions, echoes, 404s of each kind's routes:
# test_rest_kinds.py)
BAD = [
    ("POST", "/v1/routers", {"admin_state_up": "yes"}, "admin_state_up"),
    ("POST", "/v1/routers", {"name": None}, "name"),
    ("PUT", "/v1/routers/{r1}", {"tenant_id": 7}, "tenant_id"),
    ("POST", "/v1/routers/{r1}/ports", {}, "ip_address"),
    ("POST", "/v1/routers/{r1}/ports", {"ip_address": "10.5.0.1"}, "prefix_len"),
    ("POST", "/v1/routers/{r1}/ports", {"ip_address": "10.5.0.1", "prefix_len": 40},
     "prefix_len"),
    ("POST", "/v1/routers/{r1}/ports", {"ip_address": "10.5.0.0", "prefix_len": 16},
     "ip_address"),
    ("POST", "/v1/routers/{r1}/ports", {"ip_address": "255.255.255.255", "prefix_len": 8},
     "ip_address"),
    ("POST", "/v1/routers/{r1}/ports", {"ip_address": "10.5.0.1", "prefix_len": 16,
                                         "mac": "33:33:00:00:00:01"}, "mac"),
    ("POST", "/v1/routers/{r1}/ports", {"ip_address": "10.5.0.1", "prefix_len": 16,
                                         "peer_id": "{bi}"}, "peer_id"),
    ("POST", "/v1/bridges/{br}/ports", {"ip_address": "10.5.0.1"}, "ip_address"),
    ("PUT", "/v1/ports/{ra}", {"mac": "02:00:00:00:00:01"}, "mac"),
    ("PUT", "/v1/ports/{ra}", {"prefix_len": 8}, "prefix_len"),
    ("PUT", "/v1/ports/{bp}", {"ip_address": "10.0.0.1"}, "ip_address"),
    ("POST", "/v1/routers/{r1}/routes", {}, "dst_cidr"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.1.1/16", "next_hop_port": "{ra}"},
     "dst_cidr"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.0.0/16", "next_hop_port": "{ra}",
                                          "src_cidr": "1.2.3.4/0"}, "src_cidr"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.0.0/16"}, "next_hop_port"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.0.0/16",
                                          "next_hop_port": "{r2p}"}, "next_hop_port"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.0.0/16",
                                          "next_hop_port": "{missing}"}, "next_hop_port"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.0.0/16", "next_hop_port": "{ra}",
                                          "next_hop_gateway": "203.0.113.1"},
     "next_hop_gateway"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.0.0/16", "next_hop_port": "{ra}",
                                          "weight": 1.5}, "weight"),
    ("POST", "/v1/routers/{r1}/routes", {"dst_cidr": "10.1.0.0/16", "type": "prohibit"},
     "type"),
    ("PUT", "/v1/routes/{rt}", {"next_hop_port": "{ra}"}, "next_hop_gateway"),
    ("PUT", "/v1/routes/{rt}", {"next_hop_port": None}, "next_hop_port"),
    ("PUT", "/v1/routes/{rt}", {"weight": -5}, "weight"),
]


@pytest.mark.parametrize("method,path,body,field", BAD)
def test_bad_field_is_400_naming_it_and_changes_nothing(api, mem_store, topo, method, path,
                                                        body, field):
    missing = _id()
    path, body = _fill(path, topo, missing), _fill(body, topo, missing)
    before = store_snapshot(mem_store)
    _err(api.call(method, path, body), 400, field)
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("method,path", [("GET", "/v1/routers/{x}/nothing")])
@pytest.mark.parametrize("x", ["missing", "not-a-uuid", "%2e%2e"])
def test_missing_or_malformed_id_is_404(api, mem_store, topo, method, path, x):
    x = _id() if x == "missing" else x
    before = store_snapshot(mem_store)
    path = path.replace("{x}", x)
    body = {"name": "n"} if method in ("PUT", "POST") else None
    resp = api.call(method, path, body) if body else api.call(method, path)
    _err(resp, 404)
    assert store_snapshot(mem_store) == before


def test_conflicts(api, mem_store, topo):
    r1, ra, up = topo["r1"]["id"], topo["ra"]["id"], topo["up"]["id"]
    before = store_snapshot(mem_store)
    _err(api.delete(f"/v1/routers/{r1}"), 409)
    _err(api.post(f"/v1/routers/{r1}/ports", {"ip_address": "10.0.1.9", "prefix_len": 25}),
         409, "ip_address")
    _err(api.post(f"/v1/routers/{r1}/ports", {"ip_address": "10.8.0.1", "prefix_len": 24,
                                               "mac": topo["ra"]["mac"].upper()}), 409, "mac")
    _err(api.post(f"/v1/routers/{r1}/routes", {"dst_cidr": "0.0.0.0/0", "next_hop_port": up,
                                                "next_hop_gateway": "203.0.113.1",
                                                "weight": 1}), 409)
    _err(api.post(f"/v1/routers/{r1}/routes", {"id": topo["rt"]["id"],
                                                "dst_cidr": "10.0.0.0/8",
                                                "type": "reject"}), 409, "id")
    rt = topo["rt"]
    api.ok("PUT", f"/v1/routes/{rt['id']}", {"weight": 1})
    before = store_snapshot(mem_store)
    _err(api.put(f"/v1/routes/{rt['id']}", {"weight": 2, "version": rt["version"]}), 409,
         "version")
    _err(api.put(f"/v1/ports/{ra}/binding", {"host_id": topo["h1"]["id"],
                                              "interface_name": "eth0"}), 409)
    _err(api.put(f"/v1/ports/{up}/link", {"peer_id": topo["bi"]["id"]}), 409)
    assert store_snapshot(mem_store) == before


def test_store_unavailable_is_503(api, flaky_store, topo):
    flaky_store.down = True
    for method, path, body in (("GET", "/v1/routers", None), ("GET", "/v1/routes", None),
                               ("POST", "/v1/routers", {"name": "r"}),
                               ("DELETE", f"/v1/routes/{topo['rt']['id']}", None),
                               ("POST", "/v1/trace", {"in_port": topo["bp"]["id"],
                                                      "eth_src": "02:00:00:00:00:01",
                                                      "eth_dst": "02:00:00:00:00:02"})):
        resp = api.call(method, path, body) if body else api.call(method, path)
        assert _err(resp, 503)["error"] == "Unavailable"


def test_method_not_allowed(api):
    resp = api.call("PATCH", "/v1/routers")
    _err(resp, 405)
    assert resp.headers["Allow"] == "GET, HEAD, POST"
    resp = api.call("GET", "/v1/trace")
    _err(resp, 405)
    assert resp.headers["Allow"] == "POST"
    _err(api.call("POST", "/v1/routes"), 405)
