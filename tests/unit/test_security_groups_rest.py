"""The REST API for security groups and the port-security fields of ports."""

from __future__ import annotations

import uuid

import pytest

from midoflow.service import security as sec
from tests.unit.conftest import store_snapshot
from tests.unit.test_rest import _err, _fill
from tests.unit.test_security_groups_service import assert_consistent

MAC = "02:00:00:00:00:01"


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def topo(api):
    br = api.ok("POST", "/v1/bridges", {"name": "net", "tenant_id": "t1"})
    web = api.ok("POST", "/v1/security_groups", {"name": "web", "tenant_id": "t1",
                                                  "description": "front"})
    db = api.ok("POST", "/v1/security_groups", {"name": "db"})
    ssh = api.ok("POST", f"/v1/security_groups/{web['id']}/rules",
                 {"direction": "ingress", "protocol": "tcp", "port_range_min": 22,
                  "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"})
    p = api.ok("POST", f"/v1/bridges/{br['id']}/ports",
               {"name": "vm1", "mac": MAC, "fixed_ips": ["10.0.0.5"],
                "security_group_ids": [web["id"]], "port_security_enabled": True})
    return dict(br=br, web=web, db=db, ssh=ssh, p=p)


def test_security_group_crud(api, mem_store, topo):
    web, db, ssh = topo["web"], topo["db"], topo["ssh"]
    assert [g["name"] for g in api.ok("GET", "/v1/security_groups")] == ["db", "web"]
    assert [g["name"] for g in api.ok("GET", "/v1/security_groups?tenant_id=t1")] == ["web"]
    got = api.ok("GET", f"/v1/security_groups/{web['id']}")
    assert [r["direction"] for r in got["rules"]] == ["egress", "ingress"]
    assert api.ok("GET", f"/v1/security_groups/{web['id']}/rules") == got["rules"]
    assert api.ok("GET", f"/v1/security_groups/{web['id']}/rules/{ssh['id']}") == ssh
    assert ssh["protocol"] == 6 and ssh["remote_ip_prefix"] == "0.0.0.0/0"
    new = api.ok("PUT", f"/v1/security_groups/{web['id']}", dict(got, name="www"))
    assert new["name"] == "www"
    assert api.ok("GET", f"/v1/chains/{web['ingress_chain_id']}")["name"] == "sg-www-ingress"
    api.ok("DELETE", f"/v1/security_groups/{web['id']}/rules/{ssh['id']}")
    _err(api.get(f"/v1/security_groups/{web['id']}/rules/{ssh['id']}"), 404)
    assert api.ok("GET", f"/v1/chains/{web['ingress_chain_id']}")["rule_ids"] == []
    _err(api.delete(f"/v1/security_groups/{web['id']}"), 409)  # the port uses it
    api.ok("DELETE", f"/v1/security_groups/{db['id']}")
    _err(api.get(f"/v1/chains/{db['ingress_chain_id']}"), 404)
    assert_consistent(mem_store)


def test_port_security_fields(api, mem_store, topo):
    p, web, db = topo["p"], topo["web"], topo["db"]
    assert p["inbound_filter_id"] == sec.port_chain_id(p["id"], "inbound")
    assert (p["mac"], p["fixed_ips"], p["security_group_ids"], p["port_security_enabled"]) == \
        (MAC, ["10.0.0.5"], [web["id"]], True)
    rules = api.ok("GET", f"/v1/chains/{p['inbound_filter_id']}/rules")
    assert [r["action"] for r in rules] == ["jump", "accept", "accept", "continue", "jump",
                                            "drop"]
    assert all(r["generated"] for r in rules)
    got = api.ok("GET", f"/v1/ports/{p['id']}")
    new = api.ok("PUT", f"/v1/ports/{p['id']}",
                 dict(got, security_group_ids=[db["id"], web["id"]],
                      allowed_address_pairs=[{"ip_address": "10.0.0.64/26",
                                              "mac_address": None}]))
    assert new["security_group_ids"] == [db["id"], web["id"]]
    ipag = api.ok("GET", f"/v1/ip_addr_groups/{db['ip_addr_group_id']}")
    assert ipag["addresses"] == ["10.0.0.5"] and ipag["generated"] is True
    _err(api.put(f"/v1/ip_addr_groups/{ipag['id']}", {"name": "x"}), 409)
    _err(api.delete(f"/v1/chains/{p['inbound_filter_id']}"), 409)
    _err(api.put(f"/v1/rules/{rules[-1]['id']}", {"action": "accept"}), 409)
    api.ok("DELETE", f"/v1/ports/{p['id']}")
    _err(api.get(f"/v1/chains/{p['inbound_filter_id']}"), 404)
    assert api.ok("GET", f"/v1/ip_addr_groups/{db['ip_addr_group_id']}")["addresses"] == []
    assert_consistent(mem_store)


BAD = [
    ("POST", "/v1/security_groups", {"name": None}, "name"),
    ("PUT", "/v1/security_groups/{web}", {"egress_chain_id": "{missing}"}, "egress_chain_id"),
    ("POST", "/v1/security_groups/{web}/rules", {}, "direction"),
    ("POST", "/v1/security_groups/{web}/rules", {"direction": "ingress",
                                                 "ethertype": "IPv6"}, "ethertype"),
    ("POST", "/v1/security_groups/{web}/rules", {"direction": "ingress", "protocol": "tcp",
                                                 "port_range_min": 22}, "port_range_max"),
    ("POST", "/v1/security_groups/{web}/rules", {"direction": "ingress",
                                                 "remote_group_id": "{missing}"},
     "remote_group_id"),
    ("POST", "/v1/bridges/{br}/ports", {"port_security_enabled": True}, "port_security_enabled"),
    ("POST", "/v1/bridges/{br}/ports", {"security_group_ids": ["{missing}"]},
     "security_group_ids"),
    ("PUT", "/v1/ports/{p}", {"mac": None}, "mac"),  # port security needs it
    ("PUT", "/v1/ports/{p}", {"fixed_ips": ["10.0.0.0/8"]}, "fixed_ips"),
    ("PUT", "/v1/ports/{p}", {"allowed_address_pairs": [{"mac_address": MAC}]},
     "allowed_address_pairs[0].ip_address"),
    ("PUT", "/v1/ports/{p}", {"port_security_enabled": None}, "port_security_enabled"),
]


@pytest.mark.parametrize("method,path,body,field", BAD)
def test_bad_field_is_400_naming_it_and_changes_nothing(api, mem_store, topo, method, path,
                                                        body, field):
    missing = _id()
    path, body = _fill(path, topo, missing), _fill(body, topo, missing)
    before = store_snapshot(mem_store)
    _err(api.call(method, path, body), 400, field)
    assert store_snapshot(mem_store) == before


def test_conflicts(api, mem_store, topo):
    web, p = topo["web"], topo["p"]
    chain = api.ok("POST", "/v1/chains", {"name": "mine"})
    before = store_snapshot(mem_store)
    _err(api.post(f"/v1/security_groups/{web['id']}/rules",
                  {"direction": "ingress", "protocol": 6, "port_range_min": 22,
                   "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}), 409)
    _err(api.put(f"/v1/ports/{p['id']}", {"outbound_filter_id": chain["id"]}), 409,
         "outbound_filter_id")
    _err(api.post(f"/v1/bridges/{topo['br']['id']}/ports", {"mac": MAC}), 409, "mac")
    _err(api.post(f"/v1/chains/{web['egress_chain_id']}/rules", {"action": "drop"}), 409)
    _err(api.post(f"/v1/chains/{chain['id']}/rules",
                  {"action": "jump", "jump_chain_id": web["egress_chain_id"]}), 409,
         "jump_chain_id")
    assert store_snapshot(mem_store) == before


# (the group's own routes: test_rest_kinds.py)
@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/security_groups/{x}/rules"),
    ("POST", "/v1/security_groups/{x}/rules"), ("GET", "/v1/security_groups/{x}/rules/{x}"),
    ("DELETE", "/v1/security_groups/{x}/rules/{x}"),
    ("GET", "/v1/security_groups/{web}/rules/{x}"),
    ("DELETE", "/v1/security_groups/{web}/rules/{x}"),
])
@pytest.mark.parametrize("x", ["missing", "not-a-uuid"])
def test_missing_or_malformed_id_is_404(api, mem_store, topo, method, path, x):
    x = _id() if x == "missing" else x
    path = _fill(path, topo, x).replace("{x}", x)
    before = store_snapshot(mem_store)
    resp = api.call(method, path, {"direction": "ingress"}) if method in ("PUT", "POST") \
        else api.call(method, path)
    _err(resp, 404)
    assert store_snapshot(mem_store) == before
