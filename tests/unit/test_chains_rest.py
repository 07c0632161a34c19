"""The REST API for chains, rules, filters, port groups and IP address groups."""

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
    br = api.ok("POST", "/v1/bridges", {"name": "br", "tenant_id": "t1"})
    p1 = api.ok("POST", f"/v1/bridges/{br['id']}/ports", {"name": "p1"})
    rt = api.ok("POST", "/v1/routers", {"name": "rt"})
    a = api.ok("POST", "/v1/chains", {"name": "a", "tenant_id": "t1"})
    b = api.ok("POST", "/v1/chains", {"name": "b"})
    r1 = api.ok("POST", f"/v1/chains/{a['id']}/rules",
                {"action": "accept", "nw_proto": 6, "tp_dst": [80, 80]})
    r2 = api.ok("POST", f"/v1/chains/{a['id']}/rules", {"action": "jump",
                                                         "jump_chain_id": b["id"]})
    pg = api.ok("POST", "/v1/port_groups", {"name": "pg", "stateful": True})
    ipg = api.ok("POST", "/v1/ip_addr_groups", {"name": "ipg", "addresses": ["10.0.0.1"]})
    return dict(br=br, p1=p1, rt=rt, a=a, b=b, r1=r1, r2=r2, pg=pg, ipg=ipg)


def test_documented_and_indexed(api):
    doc = api.ok("GET", "/v1/openapi.json")
    for _name, path, methods in ROUTES:
        if path in ("", "/", "/openapi.yaml", "/openapi.json"):
            continue
        assert PREFIX + path in doc["paths"], path
        for m in methods:
            assert doc["paths"][PREFIX + path][m.lower()]["responses"]
    idx = api.ok("GET", "/v1")["resources"]
    for res in ("chains", "rules", "port_groups", "ip_addr_groups", "security_groups"):
        assert idx[res] == f"/v1/{res}"
    schemas = doc["components"]["schemas"]
    for s in ("Bridge", "Router", "Port"):
        assert {"inbound_filter_id", "outbound_filter_id"} <= set(schemas[s]["required"])
    assert set(schemas["Rule"]["required"]) >= {"action", "invert", "nat_targets", "generated"}


def test_chains_and_rules(api, topo):
    a, b, r1, r2 = topo["a"], topo["b"], topo["r1"], topo["r2"]
    assert [c["name"] for c in api.ok("GET", "/v1/chains")] == ["a", "b"]
    assert [c["name"] for c in api.ok("GET", "/v1/chains?tenant_id=t1")] == ["a"]
    chain = api.ok("GET", f"/v1/chains/{a['id']}")
    assert chain["rule_ids"] == [r1["id"], r2["id"]] and chain["generated"] is False
    assert [r["id"] for r in api.ok("GET", f"/v1/chains/{a['id']}/rules")] == \
        [r1["id"], r2["id"]]
    assert len(api.ok("GET", "/v1/rules")) == 2
    assert api.ok("GET", f"/v1/rules/{r1['id']}") == r1
    first = api.ok("POST", f"/v1/chains/{a['id']}/rules", {"action": "drop", "position": 1,
                                                            "nw_src": "10.0.0.0/8",
                                                            "invert": ["nw_src"]})
    assert api.ok("GET", f"/v1/chains/{a['id']}")["rule_ids"][0] == first["id"]
    new = api.ok("PUT", f"/v1/rules/{r1['id']}", dict(r1, tp_dst=[80, 443]))
    assert new["tp_dst"] == [80, 443] and new["version"] == r1["version"] + 1
    chain = api.ok("GET", f"/v1/chains/{a['id']}")
    chain = api.ok("PUT", f"/v1/chains/{a['id']}", dict(chain, name="a2"))
    assert chain["name"] == "a2"
    api.ok("DELETE", f"/v1/rules/{first['id']}")
    _err(api.get(f"/v1/rules/{first['id']}"), 404)
    _err(api.delete(f"/v1/chains/{b['id']}"), 409)  # r2 jumps to it
    api.ok("DELETE", f"/v1/chains/{a['id']}")  # with its rules
    assert api.ok("GET", "/v1/rules") == []
    api.ok("DELETE", f"/v1/chains/{b['id']}")


def test_filters(api, topo):
    a, b = topo["a"]["id"], topo["b"]["id"]
    br = api.ok("PUT", f"/v1/bridges/{topo['br']['id']}", {"inbound_filter_id": a})
    assert (br["inbound_filter_id"], br["outbound_filter_id"]) == (a, None)
    rt = api.ok("PUT", f"/v1/routers/{topo['rt']['id']}", {"outbound_filter_id": b})
    assert rt["outbound_filter_id"] == b
    p = api.ok("PUT", f"/v1/ports/{topo['p1']['id']}", {"inbound_filter_id": b,
                                                        "outbound_filter_id": a})
    assert api.ok("GET", f"/v1/ports/{p['id']}")["outbound_filter_id"] == a
    _err(api.delete(f"/v1/chains/{a}"), 409)
    _err(api.put(f"/v1/ports/{p['id']}", {"inbound_filter_id": _id()}), 400,
         "inbound_filter_id")
    br2 = api.ok("POST", "/v1/bridges", {"outbound_filter_id": b})
    assert br2["outbound_filter_id"] == b


def test_port_groups_and_ip_groups(api, topo):
    pg, ipg, p1 = topo["pg"], topo["ipg"], topo["p1"]["id"]
    pg = api.ok("POST", f"/v1/port_groups/{pg['id']}/ports", {"port_id": p1})
    assert pg["port_ids"] == [p1]
    assert [p["id"] for p in api.ok("GET", f"/v1/port_groups/{pg['id']}/ports")] == [p1]
    _err(api.post(f"/v1/port_groups/{pg['id']}/ports", {"port_id": p1}), 409, "port_id")
    _err(api.post(f"/v1/port_groups/{pg['id']}/ports", {"port_id": _id()}), 400, "port_id")
    pg = api.ok("DELETE", f"/v1/port_groups/{pg['id']}/ports/{p1}", status=200)
    assert pg["port_ids"] == []
    _err(api.delete(f"/v1/port_groups/{pg['id']}/ports/{p1}"), 404)
    assert api.ok("PUT", f"/v1/port_groups/{pg['id']}", dict(pg, stateful=False))[
        "stateful"] is False
    g = api.ok("POST", f"/v1/ip_addr_groups/{ipg['id']}/addresses", {"address": "10.0.0.2"})
    assert g["addresses"] == ["10.0.0.1", "10.0.0.2"]
    assert api.ok("GET", f"/v1/ip_addr_groups/{ipg['id']}/addresses") == g["addresses"]
    _err(api.post(f"/v1/ip_addr_groups/{ipg['id']}/addresses", {"address": "10.0.0.2"}),
         409, "address")
    g = api.ok("DELETE", f"/v1/ip_addr_groups/{ipg['id']}/addresses/10.0.0.1", status=200)
    assert g["addresses"] == ["10.0.0.2"]
    _err(api.delete(f"/v1/ip_addr_groups/{ipg['id']}/addresses/10.0.0.1"), 404)
    _err(api.delete(f"/v1/ip_addr_groups/{ipg['id']}/addresses/nonsense"), 404)
    # in use by a rule
    c = api.ok("POST", "/v1/chains", {"name": "c"})
    api.ok("POST", f"/v1/chains/{c['id']}/rules",
           {"action": "drop", "port_group": pg["id"], "ip_addr_group_src": ipg["id"]})
    _err(api.delete(f"/v1/port_groups/{pg['id']}"), 409)
    _err(api.delete(f"/v1/ip_addr_groups/{ipg['id']}"), 409)
    api.ok("DELETE", f"/v1/chains/{c['id']}")
    _err(api.delete(f"/v1/chains/{c['id']}"), 404)
    api.ok("DELETE", f"/v1/port_groups/{pg['id']}")
    api.ok("DELETE", f"/v1/ip_addr_groups/{ipg['id']}")


# (read-only and unknown fields, echoes, 404s of each kind's routes: test_rest_kinds.py)
BAD = [
    ("POST", "/v1/chains", {"name": 1}, "name"),
    ("POST", "/v1/chains/{a}/rules", {}, "action"),
    ("POST", "/v1/chains/{a}/rules", {"action": "jump"}, "jump_chain_id"),
    ("POST", "/v1/chains/{a}/rules", {"action": "jump", "jump_chain_id": "{missing}"},
     "jump_chain_id"),
    ("POST", "/v1/chains/{a}/rules", {"action": "accept", "in_ports": ["{missing}"]},
     "in_ports"),
    ("POST", "/v1/chains/{a}/rules", {"action": "accept", "nw_dst": "10.0.0.1/8"}, "nw_dst"),
    ("POST", "/v1/chains/{a}/rules", {"action": "accept", "tp_src": [2, 1]}, "tp_src"),
    ("POST", "/v1/chains/{a}/rules", {"action": "accept", "invert": ["nw_dst"]}, "invert"),
    ("POST", "/v1/chains/{a}/rules", {"action": "snat"}, "nat_targets"),
    ("POST", "/v1/chains/{a}/rules", {"action": "accept", "position": 4}, "position"),
    ("PUT", "/v1/rules/{r1}", {"tp_dst": None, "nw_proto": 300}, "nw_proto"),
    ("PUT", "/v1/bridges/{br}", {"inbound_filter_id": "nope"}, "inbound_filter_id"),
    ("PUT", "/v1/routers/{rt}", {"outbound_filter_id": "{missing}"}, "outbound_filter_id"),
    ("POST", "/v1/port_groups", {"stateful": 1}, "stateful"),
    ("POST", "/v1/ip_addr_groups", {"addresses": ["1.2.3"]}, "addresses"),
    ("POST", "/v1/ip_addr_groups/{ipg}/addresses", {"address": None}, "address"),
]


@pytest.mark.parametrize("method,path,body,field", BAD)
def test_bad_field_is_400_naming_it_and_changes_nothing(api, mem_store, topo, method, path,
                                                        body, field):
    missing = _id()
    path, body = _fill(path, topo, missing), _fill(body, topo, missing)
    before = store_snapshot(mem_store)
    _err(api.call(method, path, body), 400, field)
    assert store_snapshot(mem_store) == before


PATHS = [
    ("GET", "/v1/port_groups/{x}/ports"),
    ("POST", "/v1/port_groups/{x}/ports"), ("DELETE", "/v1/port_groups/{x}/ports/{x}"),
    ("GET", "/v1/ip_addr_groups/{x}/addresses"),
    ("POST", "/v1/ip_addr_groups/{x}/addresses"),
    ("DELETE", "/v1/ip_addr_groups/{x}/addresses/10.0.0.1"),
]


@pytest.mark.parametrize("method,path", PATHS)
@pytest.mark.parametrize("x", ["missing", "not-a-uuid"])
def test_missing_or_malformed_id_is_404(api, mem_store, topo, method, path, x):
    x = _id() if x == "missing" else x
    before = store_snapshot(mem_store)
    body = {"name": "n"} if method in ("PUT", "POST") else None
    resp = api.call(method, path.replace("{x}", x), body) if body else \
        api.call(method, path.replace("{x}", x))
    _err(resp, 404)
    assert store_snapshot(mem_store) == before


def test_404_before_400_and_415(api):
    _err(api.post(f"/v1/ip_addr_groups/{_id()}/addresses", raw=b"x"), 404)


def test_405_and_503(api, flaky_store, topo):
    resp = api.call("PUT", "/v1/rules")
    _err(resp, 405)
    assert resp.headers["Allow"] == "GET, HEAD"
    flaky_store.down = True
    for method, path, body in (("GET", "/v1/chains", None),
                               ("POST", "/v1/chains", {"name": "c"}),
                               ("DELETE", f"/v1/rules/{topo['r1']['id']}", None),
                               ("POST", "/v1/port_groups", {})):
        resp = api.call(method, path, body) if body is not None else api.call(method, path)
        assert _err(resp, 503)["error"] == "Unavailable"
