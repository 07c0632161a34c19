"""TopologyService: chains, rules, filters, port groups and IP address groups."""

from __future__ import annotations

import uuid

import pytest

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.service import security as sec
from midoflow.service.view import StoreView
from tests.unit.conftest import store_snapshot


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def topo(service):
    br = service.create_bridge({"name": "br", "tenant_id": "t1"})
    p1 = service.create_port(br["id"], {"name": "p1"})
    p2 = service.create_port(br["id"], {"name": "p2"})
    rt = service.create_router({"name": "rt"})
    rp = service.create_router_port(rt["id"], {"ip_address": "10.0.0.1", "prefix_len": 24})
    a = service.create_chain({"name": "a", "tenant_id": "t1"})
    b = service.create_chain({"name": "b", "tenant_id": "t1"})
    c = service.create_chain({"name": "c", "tenant_id": "t2"})
    pg = service.create_port_group({"name": "pg"})
    ipg = service.create_ip_addr_group({"name": "ipg", "addresses": ["10.9.0.1"]})
    return dict(br=br, p1=p1, p2=p2, rt=rt, rp=rp, a=a, b=b, c=c, pg=pg, ipg=ipg)


def _rule(service, chain, **kw):
    body = {"action": "accept"}
    body.update(kw)
    return service.create_rule(chain["id"], body)


# --------------------------------------------------------------------- chains
def test_chain_crud(service, topo):
    a = service.get_chain(topo["a"]["id"])
    assert set(a) == {"id", "name", "tenant_id", "rule_ids", "generated", "version"}
    assert (a["name"], a["tenant_id"], a["rule_ids"], a["generated"]) == ("a", "t1", [], False)
    assert [c["name"] for c in service.list_chains()] == ["a", "b", "c"]
    assert [c["name"] for c in service.list_chains(tenant_id="t2")] == ["c"]
    new = service.update_chain(a["id"], dict(a, name="a2"))  # the whole GET is a valid PUT
    assert new["name"] == "a2" and new["version"] == a["version"] + 1
    with pytest.raises(Conflict) as e:
        service.update_chain(a["id"], {"name": "x", "version": a["version"]})
    assert e.value.field == "version"
    service.delete_chain(a["id"])
    with pytest.raises(NotFound):
        service.get_chain(a["id"])


@pytest.mark.parametrize("body,field", [
    ({"name": 5}, "name"),
    ({"tenant_id": None}, "tenant_id"),
    ({"rule_ids": []}, "rule_ids"),
    ({"generated": False}, "generated"),
    ({"id": "ABC"}, "id"),
    ({"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "x"))}, "id"),  # version 5: reserved
])
def test_chain_create_invalid(service, mem_store, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_chain(body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("body,field", [
    ({"rule_ids": ["{a}"]}, "rule_ids"),
    ({"generated": True}, "generated"),
    ({"generated": "no"}, "generated"),
    ({"id": "{b}"}, "id"),
    ({"version": -1}, "version"),
    ({"colour": 1}, "colour"),
])
def test_chain_update_invalid(service, mem_store, topo, body, field):
    body = {k: (topo[v[1:-1]]["id"] if isinstance(v, str) and v.startswith("{") else
                [topo[x[1:-1]]["id"] for x in v] if isinstance(v, list) else v)
            for k, v in body.items()}
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.update_chain(topo["a"]["id"], body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


def test_chain_with_own_id_and_duplicate(service):
    cid = _id()
    assert service.create_chain({"id": cid})["id"] == cid
    with pytest.raises(Conflict) as e:
        service.create_chain({"id": cid})
    assert e.value.field == "id"


def test_chain_delete_takes_its_rules(service, mem_store, topo):
    a = topo["a"]
    r1 = _rule(service, a, nw_proto=6)
    r2 = _rule(service, a, action="drop")
    other = _rule(service, topo["b"])
    service.delete_chain(a["id"])
    for r in (r1, r2):
        with pytest.raises(NotFound):
            service.get_rule(r["id"])
    assert service.get_rule(other["id"])["chain_id"] == topo["b"]["id"]


@pytest.mark.parametrize("user", ["port", "bridge", "router", "router_port", "jump"])
def test_chain_in_use_cannot_be_deleted(service, mem_store, topo, user):
    cid = topo["a"]["id"]
    if user == "port":
        service.update_port(topo["p1"]["id"], {"outbound_filter_id": cid})
    elif user == "bridge":
        service.update_bridge(topo["br"]["id"], {"inbound_filter_id": cid})
    elif user == "router":
        service.update_router(topo["rt"]["id"], {"outbound_filter_id": cid})
    elif user == "router_port":
        service.update_port(topo["rp"]["id"], {"inbound_filter_id": cid})
    else:
        _rule(service, topo["b"], action="jump", jump_chain_id=cid)
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.delete_chain(cid)
    assert store_snapshot(mem_store) == before


# ---------------------------------------------------------------------- rules
def test_rule_create_order_and_fields(service, topo):
    a = topo["a"]
    r1 = _rule(service, a, nw_proto=6, tp_dst=[80, 80])
    r2 = _rule(service, a, action="drop")
    r0 = _rule(service, a, action="return", position=1)
    r15 = _rule(service, a, action="continue", position=3)
    chain = service.get_chain(a["id"])
    assert chain["rule_ids"] == [r0["id"], r1["id"], r15["id"], r2["id"]]
    assert [r["id"] for r in service.list_chain_rules(a["id"])] == chain["rule_ids"]
    assert set(r1) == set(sec.RULE_FIELDS) | {"generated", "version"}
    assert r1["chain_id"] == a["id"] and r1["generated"] is False
    assert (r1["nw_proto"], r1["tp_dst"], r1["tp_src"], r1["in_ports"]) == (6, [80, 80], None, [])
    assert r1["fragment_policy"] == "any" and r1["invert"] == [] and r1["nat_targets"] == []
    assert [r["id"] for r in service.list_rules()][:4] == chain["rule_ids"]
    assert service.get_rule(r2["id"]) == r2
    # the model reads what the service writes
    rule = model.Rule.from_dict(service.get_rule(r1["id"]))
    assert rule.tp_dst == (80, 80) and rule.action == "accept"


def test_rule_every_condition(service, topo):
    r = _rule(service, topo["a"], action="dnat", in_ports=[topo["p1"]["id"]],
              out_ports=[topo["rp"]["id"], topo["p2"]["id"]], port_group=topo["pg"]["id"],
              ip_addr_group_src=topo["ipg"]["id"], ip_addr_group_dst=topo["ipg"]["id"],
              eth_type=0x0800, eth_src="02:AA:00:00:00:01", eth_dst="ff:ff:ff:ff:ff:ff",
              nw_src="10.0.0.0/8", nw_dst="192.0.2.1/32", nw_proto=17, nw_tos=0x10,
              tp_src=[1024, 65535], tp_dst=[53, 53], match_forward_flow=True,
              fragment_policy="header", invert=["nw_src", "tp_src", "in_ports"],
              nat_targets=[{"addr_from": "10.0.0.5", "addr_to": "10.0.0.9", "port_from": 53,
                            "port_to": 53},
                           {"addr_from": "10.0.1.5"}])
    assert r["eth_src"] == "02:aa:00:00:00:01"
    assert r["nat_targets"][1] == {"addr_from": "10.0.1.5", "addr_to": "10.0.1.5",
                                   "port_from": 0, "port_to": 0}
    rule = model.Rule.from_dict(r)
    assert rule.invert == ("nw_src", "tp_src", "in_ports")
    assert rule.nat_targets[0] == model.NatTarget("10.0.0.5", "10.0.0.9", 53, 53)


BAD_RULES = [
    ({}, "action"),
    ({"action": "allow"}, "action"),
    ({"action": None}, "action"),
    ({"action": "jump"}, "jump_chain_id"),
    ({"action": "accept", "jump_chain_id": "{b}"}, "jump_chain_id"),
    ({"action": "jump", "jump_chain_id": "{missing}"}, "jump_chain_id"),
    ({"action": "jump", "jump_chain_id": "B"}, "jump_chain_id"),
    ({"in_ports": "{p1}"}, "in_ports"),
    ({"in_ports": ["{p1}", "{p1}"]}, "in_ports"),
    ({"in_ports": ["{missing}"]}, "in_ports"),
    ({"out_ports": [None]}, "out_ports"),
    ({"port_group": "{missing}"}, "port_group"),
    ({"port_group": 7}, "port_group"),
    ({"ip_addr_group_src": "{missing}"}, "ip_addr_group_src"),
    ({"ip_addr_group_dst": "{pg}"}, "ip_addr_group_dst"),
    ({"eth_type": 0x10000}, "eth_type"),
    ({"eth_type": -1}, "eth_type"),
    ({"eth_type": "0x800"}, "eth_type"),
    ({"eth_src": "02:00:00:00:00"}, "eth_src"),
    ({"eth_dst": "zz:00:00:00:00:00"}, "eth_dst"),
    ({"nw_src": "10.0.0.1/8"}, "nw_src"),
    ({"nw_src": "10.0.0.0"}, "nw_src"),
    ({"nw_dst": "10.0.0.0/33"}, "nw_dst"),
    ({"nw_proto": 256}, "nw_proto"),
    ({"nw_proto": True}, "nw_proto"),
    ({"nw_tos": -1}, "nw_tos"),
    ({"tp_src": [80]}, "tp_src"),
    ({"tp_src": 80}, "tp_src"),
    ({"tp_dst": [90, 80]}, "tp_dst"),
    ({"tp_dst": [0, 65536]}, "tp_dst"),
    ({"tp_dst": [1, 2, 3]}, "tp_dst"),
    ({"match_forward_flow": "yes"}, "match_forward_flow"),
    ({"match_forward_flow": True, "match_return_flow": True}, "match_return_flow"),
    ({"fragment_policy": "first"}, "fragment_policy"),
    ({"tp_dst": [80, 80], "fragment_policy": "nonheader"}, "fragment_policy"),
    ({"invert": ["nw_src"]}, "invert"),
    ({"invert": "nw_src", "nw_src": "10.0.0.0/8"}, "invert"),
    ({"invert": ["colour"]}, "invert"),
    ({"invert": ["nw_src", "nw_src"], "nw_src": "10.0.0.0/8"}, "invert"),
    ({"invert": ["in_ports"], "in_ports": []}, "invert"),
    ({"action": "dnat"}, "nat_targets"),
    ({"action": "snat", "nat_targets": []}, "nat_targets"),
    ({"action": "accept", "nat_targets": [{"addr_from": "10.0.0.1"}]}, "nat_targets"),
    ({"action": "rev_snat", "nat_targets": [{"addr_from": "10.0.0.1"}]}, "nat_targets"),
    ({"action": "dnat", "nat_targets": {"addr_from": "10.0.0.1"}}, "nat_targets"),
    ({"action": "dnat", "nat_targets": ["10.0.0.1"]}, "nat_targets[0]"),
    ({"action": "dnat", "nat_targets": [{}]}, "nat_targets[0].addr_from"),
    ({"action": "dnat", "nat_targets": [{"addr_from": "224.0.0.1"}]},
     "nat_targets[0].addr_from"),
    ({"action": "dnat", "nat_targets": [{"addr_from": "10.0.0.9", "addr_to": "10.0.0.1"}]},
     "nat_targets[0].addr_to"),
    ({"action": "dnat", "nat_targets": [{"addr_from": "10.0.0.1", "port_from": 90,
                                         "port_to": 80}]}, "nat_targets[0].port_to"),
    ({"action": "dnat", "nat_targets": [{"addr_from": "10.0.0.1", "port_from": 0,
                                         "port_to": 80}]}, "nat_targets[0].port_from"),
    ({"action": "dnat", "nat_targets": [{"addr_from": "10.0.0.1", "port_to": 70000}]},
     "nat_targets[0].port_to"),
    ({"action": "dnat", "nat_targets": [{"addr_from": "10.0.0.1", "proto": 6}]},
     "nat_targets[0].proto"),
    ({"position": 0}, "position"),
    ({"position": 2}, "position"),  # the chain is empty: 1 is the only place
    ({"position": "1"}, "position"),
    ({"chain_id": "{b}"}, "chain_id"),
    ({"generated": False}, "generated"),
    ({"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "r"))}, "id"),
    ({"colour": "red"}, "colour"),
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


@pytest.mark.parametrize("body,field", BAD_RULES)
def test_rule_invalid_is_400_naming_the_field(service, mem_store, topo, body, field):
    body = _fill(dict({"action": "accept"} if "action" not in body and body else {}, **body),
                 topo, _id())
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_rule(topo["a"]["id"], body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("body,field", [
    ({"nw_src": None}, "invert"),  # still inverted
    ({"action": "jump"}, "jump_chain_id"),
    ({"action": "dnat"}, "nat_targets"),
    ({"chain_id": "{b}"}, "chain_id"),
    ({"id": "{missing}"}, "id"),
    ({"position": 3}, "position"),
    ({"position": 0}, "position"),
    ({"generated": True}, "generated"),
    ({"tp_dst": [5, 6], "fragment_policy": "nonheader"}, "fragment_policy"),
    ({"version": "1"}, "version"),
])
def test_rule_update_invalid(service, mem_store, topo, body, field):
    r = _rule(service, topo["a"], nw_src="10.0.0.0/8", invert=["nw_src"])
    _rule(service, topo["a"])
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.update_rule(r["id"], _fill(body, topo, _id()))
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_rule_update_partial_null_unsets_and_moves(service, topo):
    a = topo["a"]
    r1 = _rule(service, a, nw_src="10.0.0.0/8", invert=["nw_src"], nw_proto=6)
    r2 = _rule(service, a, action="drop")
    new = service.update_rule(r1["id"], {"nw_src": None, "invert": [], "tp_dst": [22, 22]})
    assert (new["nw_src"], new["invert"], new["nw_proto"], new["tp_dst"]) == \
        (None, [], 6, [22, 22])
    assert new["version"] == r1["version"] + 1
    new = service.update_rule(r1["id"], dict(new, position=2))  # the GET, plus a move
    assert service.get_chain(a["id"])["rule_ids"] == [r2["id"], r1["id"]]
    new = service.update_rule(r1["id"], {"action": "jump", "jump_chain_id": topo["b"]["id"]})
    assert new["action"] == "jump"
    with pytest.raises(Conflict) as e:
        service.update_rule(r1["id"], {"nw_proto": 17, "version": r1["version"]})
    assert e.value.field == "version"


def test_rule_delete_leaves_its_chain(service, topo):
    a = topo["a"]
    r1, r2 = _rule(service, a), _rule(service, a, action="drop")
    service.delete_rule(r1["id"])
    assert service.get_chain(a["id"])["rule_ids"] == [r2["id"]]
    with pytest.raises(NotFound):
        service.delete_rule(r1["id"])


def test_jump_to_own_chain_and_loops_are_409(service, mem_store, topo):
    a, b, c = topo["a"]["id"], topo["b"]["id"], topo["c"]["id"]
    with pytest.raises(Conflict) as e:
        service.create_rule(a, {"action": "jump", "jump_chain_id": a})
    assert e.value.field == "jump_chain_id"
    service.create_rule(a, {"action": "jump", "jump_chain_id": b})
    service.create_rule(b, {"action": "jump", "jump_chain_id": c})
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        service.create_rule(c, {"action": "jump", "jump_chain_id": a})
    assert e.value.field == "jump_chain_id" and f"{c} -> {a} -> {b} -> {c}" in e.value.message
    # a loop made by changing an existing rule
    r = service.create_rule(c, {"action": "drop"})
    with pytest.raises(Conflict):
        service.update_rule(r["id"], {"action": "jump", "jump_chain_id": b})
    # jumping twice to one chain, or to a chain others jump to, is no loop
    service.create_rule(a, {"action": "jump", "jump_chain_id": c})
    service.create_rule(a, {"action": "jump", "jump_chain_id": c})
    assert store_snapshot(mem_store) != before


def test_jump_rule_touches_its_target(service, flaky_store, mem_store, topo):
    """A chain deleted while a rule jumping to it is created: one of the two fails."""
    a, b = topo["a"]["id"], topo["b"]["id"]
    other = type(service)(mem_store)
    flaky_store.before_commit = lambda: other.delete_chain(b)
    with pytest.raises((Conflict, NotFound)):
        service.create_rule(a, {"action": "jump", "jump_chain_id": b})
    assert service.get_chain(a)["rule_ids"] == []
    assert service.list_rules() == []


def test_loop_check_is_atomic(service, flaky_store, mem_store, topo):
    """Two rules that together close a loop, committed concurrently: one fails."""
    a, b = topo["a"]["id"], topo["b"]["id"]
    other = type(service)(mem_store)
    flaky_store.before_commit = lambda: other.create_rule(b, {"action": "jump",
                                                               "jump_chain_id": a})
    with pytest.raises(Conflict):
        service.create_rule(a, {"action": "jump", "jump_chain_id": b})
    assert len(service.list_rules()) == 1


def test_port_matched_by_a_rule_cannot_be_deleted(service, mem_store, topo):
    p1 = topo["p1"]["id"]
    r = _rule(service, topo["a"], out_ports=[topo["p2"]["id"], p1])
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.delete_port(p1)
    assert store_snapshot(mem_store) == before
    service.update_rule(r["id"], {"out_ports": [topo["p2"]["id"]]})
    service.delete_port(p1)


def test_rule_references_are_touched(service, flaky_store, mem_store, topo):
    """A port deleted while a rule matching on it is created: one of the two fails."""
    other = type(service)(mem_store)
    p1 = topo["p1"]["id"]
    flaky_store.before_commit = lambda: other.delete_port(p1)
    with pytest.raises((Conflict, NotFound)):
        _rule(service, topo["a"], in_ports=[p1])
    assert service.list_rules() == []


# -------------------------------------------------------------------- filters
def test_filters_on_bridges_routers_ports(service, mem_store, topo):
    a, b = topo["a"]["id"], topo["b"]["id"]
    br = service.update_bridge(topo["br"]["id"], {"inbound_filter_id": a,
                                                  "outbound_filter_id": b})
    assert (br["inbound_filter_id"], br["outbound_filter_id"]) == (a, b)
    rt = service.update_router(topo["rt"]["id"], {"inbound_filter_id": b})
    assert (rt["inbound_filter_id"], rt["outbound_filter_id"]) == (b, None)
    p = service.update_port(topo["p1"]["id"], {"outbound_filter_id": a})
    assert (p["inbound_filter_id"], p["outbound_filter_id"]) == (None, a)
    rp = service.update_port(topo["rp"]["id"], {"inbound_filter_id": a})
    assert rp["inbound_filter_id"] == a
    # echoing the whole object back changes nothing but the version
    assert service.update_bridge(br["id"], br)["inbound_filter_id"] == a
    assert service.update_port(p["id"], p)["outbound_filter_id"] == a
    # created with filters
    br2 = service.create_bridge({"name": "br2", "inbound_filter_id": a})
    assert br2["inbound_filter_id"] == a
    rt2 = service.create_router({"outbound_filter_id": b})
    assert rt2["outbound_filter_id"] == b
    p2 = service.create_port(br2["id"], {"inbound_filter_id": b})
    assert p2["inbound_filter_id"] == b
    rp2 = service.create_router_port(rt2["id"], {"ip_address": "10.1.0.1", "prefix_len": 24,
                                                 "outbound_filter_id": a})
    assert rp2["outbound_filter_id"] == a
    # the model sees them
    assert model.Bridge.from_dict(service.store.get(model.BRIDGES, br["id"])[0]) \
        .outbound_filter_id == b
    # null clears
    assert service.update_bridge(br["id"], {"inbound_filter_id": None})["inbound_filter_id"] \
        is None


@pytest.mark.parametrize("kind", ["bridge", "router", "port"])
@pytest.mark.parametrize("value,err,field", [
    ("{missing}", Invalid, None), ("nope", Invalid, None), (5, Invalid, None),
])
def test_bad_filters(service, mem_store, topo, kind, value, err, field):
    value = _fill(value, topo, _id())
    update = {"bridge": service.update_bridge, "router": service.update_router,
              "port": service.update_port}[kind]
    oid = {"bridge": topo["br"], "router": topo["rt"], "port": topo["p1"]}[kind]["id"]
    before = store_snapshot(mem_store)
    for f in ("inbound_filter_id", "outbound_filter_id"):
        with pytest.raises(err) as e:
            update(oid, {f: value})
        assert e.value.field == f
    assert store_snapshot(mem_store) == before


def test_filter_set_meanwhile_blocks_chain_delete(service, flaky_store, mem_store, topo):
    other = type(service)(mem_store)
    a = topo["a"]["id"]
    flaky_store.before_commit = lambda: other.update_bridge(topo["br"]["id"],
                                                            {"inbound_filter_id": a})
    with pytest.raises(Conflict):
        service.delete_chain(a)
    assert service.get_bridge(topo["br"]["id"])["inbound_filter_id"] == a


# ---------------------------------------------------------------- port groups
def test_port_group_crud_and_members(service, mem_store, topo):
    pg = service.get_port_group(topo["pg"]["id"])
    assert set(pg) == {"id", "name", "tenant_id", "stateful", "port_ids", "version"}
    assert pg["stateful"] is False and pg["port_ids"] == []
    g2 = service.create_port_group({"name": "gw", "tenant_id": "t9", "stateful": True})
    assert [g["name"] for g in service.list_port_groups()] == ["gw", "pg"]
    assert [g["name"] for g in service.list_port_groups(tenant_id="t9")] == ["gw"]
    p1, p2, rp = topo["p1"]["id"], topo["p2"]["id"], topo["rp"]["id"]
    for p in (p1, rp):
        pg = service.add_port_group_port(pg["id"], {"port_id": p})
    assert pg["port_ids"] == [p1, rp]
    assert [p["id"] for p in service.list_port_group_ports(pg["id"])] == [p1, rp]
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        service.add_port_group_port(pg["id"], {"port_id": p1})
    assert e.value.field == "port_id"
    for body, field in (({"port_id": _id()}, "port_id"), ({}, "port_id"),
                        ({"port_id": "P1"}, "port_id"), ({"port": p2}, "port")):
        with pytest.raises(Invalid) as e:
            service.add_port_group_port(pg["id"], body)
        assert e.value.field == field
    with pytest.raises(NotFound):
        service.remove_port_group_port(pg["id"], p2)
    with pytest.raises(NotFound):
        service.remove_port_group_port(pg["id"], "not-a-uuid")
    assert store_snapshot(mem_store) == before
    pg = service.remove_port_group_port(pg["id"], rp)
    assert pg["port_ids"] == [p1]
    pg = service.update_port_group(pg["id"], dict(pg, stateful=True, name="pg2"))
    assert (pg["stateful"], pg["name"]) == (True, "pg2")
    with pytest.raises(Invalid) as e:
        service.update_port_group(pg["id"], {"port_ids": []})
    assert e.value.field == "port_ids"
    # deleting a port takes it out of its groups, in the same commit
    service.add_port_group_port(g2["id"], {"port_id": p1})
    service.delete_port(p1)
    assert service.get_port_group(pg["id"])["port_ids"] == []
    assert service.get_port_group(g2["id"])["port_ids"] == []
    service.delete_port_group(g2["id"])
    with pytest.raises(NotFound):
        service.get_port_group(g2["id"])


def test_port_group_used_by_rule_cannot_be_deleted(service, mem_store, topo):
    r = _rule(service, topo["a"], port_group=topo["pg"]["id"])
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.delete_port_group(topo["pg"]["id"])
    assert store_snapshot(mem_store) == before
    service.delete_rule(r["id"])
    service.delete_port_group(topo["pg"]["id"])


@pytest.mark.parametrize("body,field", [
    ({"stateful": "yes"}, "stateful"), ({"port_ids": []}, "port_ids"), ({"name": None}, "name"),
])
def test_port_group_invalid(service, mem_store, body, field):
    with pytest.raises(Invalid) as e:
        service.create_port_group(body)
    assert e.value.field == field


# -------------------------------------------------------- IP address groups
def test_ip_addr_group_crud_and_addresses(service, mem_store, topo):
    g = service.get_ip_addr_group(topo["ipg"]["id"])
    assert set(g) == {"id", "name", "tenant_id", "addresses", "generated", "version"}
    assert g["addresses"] == ["10.9.0.1"] and g["generated"] is False
    g = service.add_ip_addr_group_address(g["id"], {"address": "10.9.0.2"})
    assert service.list_ip_addr_group_addresses(g["id"]) == ["10.9.0.1", "10.9.0.2"]
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        service.add_ip_addr_group_address(g["id"], {"address": "10.9.0.2"})
    assert e.value.field == "address"
    for body, field in (({"address": "10.9.0.256"}, "address"), ({}, "address"),
                        ({"address": "224.0.0.1"}, "address"), ({"address": 5}, "address"),
                        ({"ip": "10.0.0.1"}, "ip")):
        with pytest.raises(Invalid) as e:
            service.add_ip_addr_group_address(g["id"], body)
        assert e.value.field == field
    for addr in ("10.9.0.3", "garbage", "10.9.0.01"):
        with pytest.raises(NotFound):
            service.remove_ip_addr_group_address(g["id"], addr)
    assert store_snapshot(mem_store) == before
    g = service.remove_ip_addr_group_address(g["id"], "10.9.0.1")
    assert g["addresses"] == ["10.9.0.2"]
    g = service.update_ip_addr_group(g["id"], dict(g, name="renamed"))
    assert g["name"] == "renamed"
    with pytest.raises(Invalid) as e:
        service.update_ip_addr_group(g["id"], {"addresses": []})
    assert e.value.field == "addresses"
    service.delete_ip_addr_group(g["id"])
    assert service.list_ip_addr_groups() == []


@pytest.mark.parametrize("body,field", [
    ({"addresses": ["10.0.0.1", "10.0.0.1"]}, "addresses"),
    ({"addresses": ["10.0.0.0/8"]}, "addresses"),
    ({"addresses": "10.0.0.1"}, "addresses"),
    ({"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "g"))}, "id"),
])
def test_ip_addr_group_invalid(service, mem_store, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_ip_addr_group(body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


def test_ip_addr_group_used_by_rule_cannot_be_deleted(service, mem_store, topo):
    r = _rule(service, topo["a"], ip_addr_group_dst=topo["ipg"]["id"])
    with pytest.raises(Conflict):
        service.delete_ip_addr_group(topo["ipg"]["id"])
    service.delete_rule(r["id"])
    service.delete_ip_addr_group(topo["ipg"]["id"])


# ------------------------------------------------------------------ the view
def test_store_view_reads_chains(service, mem_store, topo):
    a = topo["a"]["id"]
    r1 = _rule(service, topo["a"], nw_proto=6)
    r2 = _rule(service, topo["a"], action="jump", jump_chain_id=topo["b"]["id"])
    view = StoreView(mem_store)
    assert [r.id for r in view.rules(a)] == [r1["id"], r2["id"]]
    assert view.chain(a).name == "a" and view.rule(r2["id"]).jump_chain_id == topo["b"]["id"]
    assert view.ip_addr_group(topo["ipg"]["id"]).addresses == ("10.9.0.1",)
    assert view.port_group(topo["pg"]["id"]).port_ids == ()
    assert view.chain(_id()) is None and view.rules(_id()) == ()
