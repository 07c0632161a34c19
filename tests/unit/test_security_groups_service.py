"""Security groups and port security: validation, and their translation into chains,
rules and IP address groups, kept in sync in the same commit as every change."""

from __future__ import annotations

import uuid

import pytest

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.service import security as sec
from tests.unit.conftest import store_snapshot

MAC1, MAC2, MAC3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"


def _id() -> str:
    return str(uuid.uuid4())


def models(store) -> dict:
    return {kind: {d["id"]: d for d, _ in store.list(kind)} for kind in model.KINDS}


def assert_consistent(store) -> None:
    """The generated objects are exactly what the groups and ports say."""
    m = models(store)
    want = sec.expected(m)
    have = {(k, oid): d for k in (model.CHAINS, model.RULES, model.IP_ADDR_GROUPS)
            for oid, d in m[k].items() if sec.is_generated(oid)}
    assert have == want
    assert sec.port_filter_errors(m) == []


def chain_rules(service, cid) -> list[tuple]:
    """A chain's rules as (action, {set conditions}) tuples."""
    out = []
    for r in service.list_chain_rules(cid):
        conds = {k: v for k, v in r.items()
                 if k not in ("id", "chain_id", "action", "generated", "version")
                 and v not in (None, [], False, "any")}
        out.append((r["action"], conds))
    return out


@pytest.fixture
def topo(service):
    br = service.create_bridge({"name": "net", "tenant_id": "t1"})
    web = service.create_security_group({"name": "web", "tenant_id": "t1"})
    db = service.create_security_group({"name": "db", "tenant_id": "t1"})
    return dict(br=br, web=web, db=db)


def _port(service, topo, **kw):
    return service.create_port(topo["br"]["id"], kw)


# ------------------------------------------------------------ security groups
def test_new_group_has_the_default_rule_and_its_chains(service, mem_store, topo):
    web = topo["web"]
    assert set(web) == {"id", "name", "tenant_id", "description", "rules", "ip_addr_group_id",
                        "ingress_chain_id", "egress_chain_id", "version"}
    [r] = web["rules"]
    assert {k: v for k, v in r.items() if k != "id"} == {
        "security_group_id": web["id"], "direction": "egress", "ethertype": "IPv4",
        "protocol": None, "port_range_min": None, "port_range_max": None,
        "remote_ip_prefix": None, "remote_group_id": None}
    assert web["ip_addr_group_id"] == sec.sg_ipag_id(web["id"])
    ingress = service.get_chain(web["ingress_chain_id"])
    egress = service.get_chain(web["egress_chain_id"])
    assert (ingress["name"], egress["name"]) == ("sg-web-ingress", "sg-web-egress")
    assert ingress["generated"] and egress["generated"] and ingress["tenant_id"] == "t1"
    assert ingress["rule_ids"] == []
    assert chain_rules(service, egress["id"]) == [("accept", {"eth_type": 0x0800})]
    ipag = service.get_ip_addr_group(web["ip_addr_group_id"])
    assert (ipag["name"], ipag["addresses"], ipag["generated"]) == ("sg-web", [], True)
    assert [g["name"] for g in service.list_security_groups()] == ["db", "web"]
    assert service.list_security_groups(tenant_id="nobody") == []
    assert_consistent(mem_store)


def test_rules_become_chain_rules(service, mem_store, topo):
    web, db = topo["web"], topo["db"]
    add = service.add_security_group_rule
    ssh = add(web["id"], {"direction": "ingress", "protocol": "tcp", "port_range_min": 22,
                          "port_range_max": 22, "remote_ip_prefix": "192.0.2.0/24"})
    assert ssh["protocol"] == 6 and ssh["security_group_id"] == web["id"]
    ping = add(web["id"], {"direction": "ingress", "protocol": "icmp", "port_range_min": 8,
                           "port_range_max": 0, "remote_group_id": web["id"]})
    add(web["id"], {"direction": "ingress", "protocol": 17, "port_range_min": 5000,
                    "port_range_max": 5100})
    add(web["id"], {"direction": "ingress", "protocol": "132"})
    add(web["id"], {"direction": "egress", "protocol": "udp", "port_range_min": 53,
                    "port_range_max": 53, "remote_ip_prefix": "10.0.0.0/8"})
    add(db["id"], {"direction": "ingress", "protocol": "tcp", "port_range_min": 5432,
                   "port_range_max": 5432, "remote_group_id": web["id"]})
    add(db["id"], {"direction": "egress", "remote_group_id": web["id"]})
    web_ipag = sec.sg_ipag_id(web["id"])
    assert chain_rules(service, web["ingress_chain_id"]) == [
        ("accept", {"eth_type": 0x0800, "nw_proto": 6, "tp_dst": [22, 22],
                    "nw_src": "192.0.2.0/24"}),
        ("accept", {"eth_type": 0x0800, "nw_proto": 1, "tp_src": [8, 8], "tp_dst": [0, 0],
                    "ip_addr_group_src": web_ipag}),
        ("accept", {"eth_type": 0x0800, "nw_proto": 17, "tp_dst": [5000, 5100]}),
        ("accept", {"eth_type": 0x0800, "nw_proto": 132}),
    ]
    assert chain_rules(service, web["egress_chain_id"]) == [
        ("accept", {"eth_type": 0x0800}),
        ("accept", {"eth_type": 0x0800, "nw_proto": 17, "tp_dst": [53, 53],
                    "nw_dst": "10.0.0.0/8"}),
    ]
    assert chain_rules(service, db["ingress_chain_id"]) == [
        ("accept", {"eth_type": 0x0800, "nw_proto": 6, "tp_dst": [5432, 5432],
                    "ip_addr_group_src": web_ipag})]
    assert chain_rules(service, db["egress_chain_id"]) == [
        ("accept", {"eth_type": 0x0800}),
        ("accept", {"eth_type": 0x0800, "ip_addr_group_dst": web_ipag})]
    assert service.get_security_group_rule(web["id"], ping["id"]) == ping
    assert len(service.list_security_group_rules(web["id"])) == 6
    # deleting a rule deletes its chain rule, in the same commit
    service.delete_security_group_rule(web["id"], ssh["id"])
    assert len(chain_rules(service, web["ingress_chain_id"])) == 3
    with pytest.raises(NotFound):
        service.get_security_group_rule(web["id"], ssh["id"])
    with pytest.raises(NotFound):
        service.delete_security_group_rule(web["id"], ssh["id"])
    with pytest.raises(NotFound):
        service.delete_security_group_rule(db["id"], ping["id"])  # not its rule
    assert_consistent(mem_store)


SG_RULE_BAD = [
    ({}, "direction"),
    ({"direction": "in"}, "direction"),
    ({"direction": "ingress", "ethertype": "IPv6"}, "ethertype"),
    ({"direction": "ingress", "ethertype": None}, "ethertype"),
    ({"direction": "ingress", "protocol": "gre"}, "protocol"),
    ({"direction": "ingress", "protocol": "TCP"}, "protocol"),
    ({"direction": "ingress", "protocol": 256}, "protocol"),
    ({"direction": "ingress", "protocol": "256"}, "protocol"),
    ({"direction": "ingress", "protocol": "\u00b2"}, "protocol"),
    ({"direction": "ingress", "protocol": True}, "protocol"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 80}, "port_range_max"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_max": 80}, "port_range_min"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 0, "port_range_max": 80},
     "port_range_min"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
     "port_range_max"),
    ({"direction": "ingress", "protocol": "udp", "port_range_min": 1, "port_range_max": 65536},
     "port_range_max"),
    ({"direction": "ingress", "protocol": "icmp", "port_range_min": 256,
      "port_range_max": 0}, "port_range_min"),
    ({"direction": "ingress", "protocol": "icmp", "port_range_min": 8,
      "port_range_max": -1}, "port_range_max"),
    ({"direction": "ingress", "port_range_min": 80, "port_range_max": 80}, "port_range_min"),
    ({"direction": "ingress", "protocol": 47, "port_range_min": 80, "port_range_max": 80},
     "port_range_min"),
    ({"direction": "ingress", "remote_ip_prefix": "10.0.0.1/8"}, "remote_ip_prefix"),
    ({"direction": "ingress", "remote_ip_prefix": "fe80::/64"}, "remote_ip_prefix"),
    ({"direction": "ingress", "remote_group_id": "{missing}"}, "remote_group_id"),
    ({"direction": "ingress", "remote_group_id": "{db}", "remote_ip_prefix": "10.0.0.0/8"},
     "remote_group_id"),
    ({"direction": "ingress", "security_group_id": "{db}"}, "security_group_id"),
    ({"direction": "ingress", "id": "{missing}"}, "id"),
    ({"direction": "ingress", "colour": 1}, "colour"),
]


@pytest.mark.parametrize("body,field", SG_RULE_BAD)
def test_bad_rule_is_400_naming_the_field(service, mem_store, topo, body, field):
    missing = _id()
    body = {k: (v.replace("{missing}", missing).replace("{db}", topo["db"]["id"])
                if isinstance(v, str) else v) for k, v in body.items()}
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.add_security_group_rule(topo["web"]["id"], body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_duplicate_rule_is_409(service, mem_store, topo):
    body = {"direction": "ingress", "protocol": "tcp", "port_range_min": 80,
            "port_range_max": 80}
    service.add_security_group_rule(topo["web"]["id"], body)
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.add_security_group_rule(topo["web"]["id"], dict(body, protocol=6))
    with pytest.raises(Conflict):  # the default rule
        service.add_security_group_rule(topo["web"]["id"], {"direction": "egress"})
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("body,field", [
    ({"name": 1}, "name"), ({"description": "x" * 1025}, "description"),
    ({"rules": []}, "rules"), ({"tenant_id": None}, "tenant_id"), ({"id": "X"}, "id"),
])
def test_bad_group(service, mem_store, body, field):
    with pytest.raises(Invalid) as e:
        service.create_security_group(body)
    assert e.value.field == field
    assert store_snapshot(mem_store)[0] == {}


def test_update_group_renames_its_chains(service, mem_store, topo):
    web = topo["web"]
    new = service.update_security_group(web["id"], dict(web, name="www", description="d"))
    assert (new["name"], new["description"]) == ("www", "d")
    assert service.get_chain(web["ingress_chain_id"])["name"] == "sg-www-ingress"
    assert service.get_ip_addr_group(web["ip_addr_group_id"])["name"] == "sg-www"
    for body, field in (({"rules": []}, "rules"), ({"ingress_chain_id": _id()},
                                                    "ingress_chain_id"),
                        ({"name": None}, "name")):
        with pytest.raises(Invalid) as e:
            service.update_security_group(web["id"], body)
        assert e.value.field == field
    with pytest.raises(Conflict):
        service.update_security_group(web["id"], {"name": "x", "version": web["version"]})
    assert_consistent(mem_store)


# --------------------------------------------------------------------- ports
def test_protected_port_chains(service, mem_store, topo):
    web, db = topo["web"], topo["db"]
    p = _port(service, topo, name="vm1", mac=MAC1, fixed_ips=["10.0.0.5", "10.0.0.6"],
              security_group_ids=[web["id"], db["id"]], port_security_enabled=True,
              allowed_address_pairs=[{"ip_address": "10.0.9.0/24"},
                                     {"ip_address": "10.0.0.7", "mac_address": MAC2}])
    pid = p["id"]
    cin, cout, cas = (sec.port_chain_id(pid, w) for w in ("inbound", "outbound", "anti-spoof"))
    assert (p["inbound_filter_id"], p["outbound_filter_id"]) == (cin, cout)
    assert p["allowed_address_pairs"] == [
        {"ip_address": "10.0.9.0/24", "mac_address": None},
        {"ip_address": "10.0.0.7", "mac_address": MAC2}]
    assert [service.get_chain(c)["name"] for c in (cin, cout, cas)] == \
        [f"port-{pid}-inbound", f"port-{pid}-outbound", f"port-{pid}-anti-spoof"]
    assert service.get_chain(cin)["tenant_id"] == "t1"
    assert chain_rules(service, cin) == [
        ("jump", {"jump_chain_id": cas}),
        ("accept", {"eth_type": 0x0806}),
        ("accept", {"match_return_flow": True}),
        ("continue", {"match_forward_flow": True}),
        ("jump", {"jump_chain_id": web["egress_chain_id"]}),
        ("jump", {"jump_chain_id": db["egress_chain_id"]}),
        ("drop", {}),
    ]
    assert chain_rules(service, cout) == [
        ("accept", {"match_return_flow": True}),
        ("accept", {"eth_type": 0x0806}),
        ("continue", {"match_forward_flow": True}),
        ("jump", {"jump_chain_id": web["ingress_chain_id"]}),
        ("jump", {"jump_chain_id": db["ingress_chain_id"]}),
        ("drop", {}),
    ]
    dhcp = {"eth_type": 0x0800, "nw_src": "0.0.0.0/32", "nw_proto": 17, "tp_src": [68, 68],
            "tp_dst": [67, 67]}
    assert chain_rules(service, cas) == [
        ("return", {"eth_src": MAC1, "eth_type": 0x0800, "nw_src": "10.0.0.5/32"}),
        ("return", {"eth_src": MAC1, "eth_type": 0x0800, "nw_src": "10.0.0.6/32"}),
        ("return", {"eth_src": MAC1, "eth_type": 0x0800, "nw_src": "10.0.9.0/24"}),
        ("return", {"eth_src": MAC2, "eth_type": 0x0800, "nw_src": "10.0.0.7/32"}),
        # ARP only from the same pairs (nw_src is the ARP sender address)
        ("return", {"eth_src": MAC1, "eth_type": 0x0806, "nw_src": "10.0.0.5/32"}),
        ("return", {"eth_src": MAC1, "eth_type": 0x0806, "nw_src": "10.0.0.6/32"}),
        ("return", {"eth_src": MAC1, "eth_type": 0x0806, "nw_src": "10.0.9.0/24"}),
        ("return", {"eth_src": MAC2, "eth_type": 0x0806, "nw_src": "10.0.0.7/32"}),
        ("return", {"eth_src": MAC1, "eth_type": 0x0806, "nw_src": "0.0.0.0/32"}),  # probe
        ("return", dict(dhcp, eth_src=MAC1)),
        ("return", {"eth_src": MAC2, "eth_type": 0x0806, "nw_src": "0.0.0.0/32"}),
        ("return", dict(dhcp, eth_src=MAC2)),
        ("drop", {}),
    ]
    for sg in (web, db):
        assert service.get_ip_addr_group(sg["ip_addr_group_id"])["addresses"] == \
            ["10.0.0.5", "10.0.0.6"]
    # the model and the view read it
    port = model.Port.from_dict(service.store.get(model.PORTS, pid)[0])
    assert port.allowed_address_pairs == (("10.0.9.0/24", ""), ("10.0.0.7", MAC2))
    assert port.security_group_ids == (web["id"], db["id"])
    assert_consistent(mem_store)


def test_groups_without_port_security_and_unprotected_ports(service, mem_store, topo):
    web = topo["web"]
    p = _port(service, topo, security_group_ids=[web["id"]], fixed_ips=["10.0.0.5"])
    cin = sec.port_chain_id(p["id"], "inbound")
    assert chain_rules(service, cin)[0] == ("accept", {"eth_type": 0x0806})  # no anti-spoof
    with pytest.raises(NotFound):
        service.get_chain(sec.port_chain_id(p["id"], "anti-spoof"))
    plain = _port(service, topo, fixed_ips=["10.0.0.6"])
    assert (plain["inbound_filter_id"], plain["outbound_filter_id"]) == (None, None)
    # port security alone: no group jumps, everything but ARP dropped
    ps = _port(service, topo, mac=MAC3, port_security_enabled=True)
    assert [a for a, _ in chain_rules(service, ps["inbound_filter_id"])] == \
        ["jump", "accept", "accept", "continue", "drop"]
    assert_consistent(mem_store)


def test_every_change_keeps_the_chains_in_sync(service, mem_store, topo):
    web, db = topo["web"], topo["db"]
    p = _port(service, topo, mac=MAC1, fixed_ips=["10.0.0.5"],
              security_group_ids=[web["id"]], port_security_enabled=True)
    pid = p["id"]
    ipag = service.get_ip_addr_group
    other = _port(service, topo, fixed_ips=["10.0.0.9"], security_group_ids=[web["id"]])
    assert ipag(web["ip_addr_group_id"])["addresses"] == ["10.0.0.5", "10.0.0.9"]

    # new fixed IPs: the group's addresses and the anti-spoof rules follow
    p = service.update_port(pid, {"fixed_ips": ["10.0.0.50"]})
    assert ipag(web["ip_addr_group_id"])["addresses"] == ["10.0.0.9", "10.0.0.50"]
    assert chain_rules(service, sec.port_chain_id(pid, "anti-spoof"))[0][1]["nw_src"] == \
        "10.0.0.50/32"
    assert_consistent(mem_store)

    # another group list: the jumps and both groups' addresses follow
    p = service.update_port(pid, {"security_group_ids": [db["id"], web["id"]]})
    jumps = [c["jump_chain_id"] for _, c in chain_rules(service, p["outbound_filter_id"])
             if "jump_chain_id" in c]
    assert jumps == [db["ingress_chain_id"], web["ingress_chain_id"]]
    assert ipag(db["ip_addr_group_id"])["addresses"] == ["10.0.0.50"]
    p = service.update_port(pid, {"security_group_ids": [db["id"]]})
    assert ipag(web["ip_addr_group_id"])["addresses"] == ["10.0.0.9"]
    assert_consistent(mem_store)

    # a new MAC: the anti-spoof chain follows
    p = service.update_port(pid, {"mac": MAC2})
    macs = {c.get("eth_src") for _, c in
            chain_rules(service, sec.port_chain_id(pid, "anti-spoof"))}
    assert macs == {MAC2, None}
    assert_consistent(mem_store)

    # port security off: the anti-spoof chain goes, the group chains stay
    p = service.update_port(pid, {"port_security_enabled": False})
    with pytest.raises(NotFound):
        service.get_chain(sec.port_chain_id(pid, "anti-spoof"))
    assert chain_rules(service, p["inbound_filter_id"])[0][0] == "accept"
    assert_consistent(mem_store)

    # no groups, no port security: no chains, no filters
    p = service.update_port(pid, {"security_group_ids": []})
    assert (p["inbound_filter_id"], p["outbound_filter_id"]) == (None, None)
    for w in sec.PORT_CHAINS:
        with pytest.raises(NotFound):
            service.get_chain(sec.port_chain_id(pid, w))
    assert ipag(db["ip_addr_group_id"])["addresses"] == []
    assert_consistent(mem_store)

    # deleting a protected port deletes its chains and its addresses
    service.delete_port(other["id"])
    assert ipag(web["ip_addr_group_id"])["addresses"] == []
    for w in sec.PORT_CHAINS:
        with pytest.raises(NotFound):
            service.get_chain(sec.port_chain_id(other["id"], w))
    assert_consistent(mem_store)


def test_bridge_tenant_follows_into_port_chains(service, mem_store, topo):
    p = _port(service, topo, security_group_ids=[topo["web"]["id"]])
    service.update_bridge(topo["br"]["id"], {"tenant_id": "t9"})
    assert service.get_chain(p["inbound_filter_id"])["tenant_id"] == "t9"
    assert_consistent(mem_store)


def test_get_then_put_of_a_protected_port_round_trips(service, mem_store, topo):
    p = _port(service, topo, mac=MAC1, fixed_ips=["10.0.0.5"], port_security_enabled=True,
              security_group_ids=[topo["web"]["id"]],
              allowed_address_pairs=[{"ip_address": "10.0.0.8"}])
    before = {k: v for k, v in p.items() if k != "version"}
    new = service.update_port(p["id"], dict(p, name="vm1"))
    assert {k: v for k, v in new.items() if k not in ("version", "name")} == \
        {k: v for k, v in before.items() if k != "name"}
    # the echo of its own chains while turning protection off clears them
    new = service.update_port(p["id"], dict(new, security_group_ids=[],
                                            port_security_enabled=False,
                                            allowed_address_pairs=[]))
    assert (new["inbound_filter_id"], new["outbound_filter_id"]) == (None, None)
    assert_consistent(mem_store)


def test_user_filters_and_security_groups(service, mem_store, topo):
    user = service.create_chain({"name": "mine"})
    p = _port(service, topo, inbound_filter_id=user["id"])
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        service.update_port(p["id"], {"security_group_ids": [topo["web"]["id"]]})
    assert e.value.field == "security_group_ids"
    with pytest.raises(Conflict) as e:
        service.update_port(p["id"], {"mac": MAC1, "port_security_enabled": True})
    assert e.value.field == "port_security_enabled"
    with pytest.raises(Conflict) as e:
        _port(service, topo, outbound_filter_id=user["id"],
              security_group_ids=[topo["web"]["id"]])
    assert e.value.field == "outbound_filter_id"
    assert store_snapshot(mem_store) == before
    # clearing the user filter in the same request
    p = service.update_port(p["id"], {"security_group_ids": [topo["web"]["id"]],
                                      "inbound_filter_id": None})
    assert p["inbound_filter_id"] == sec.port_chain_id(p["id"], "inbound")
    # a protected port cannot be given a user filter
    with pytest.raises(Conflict) as e:
        service.update_port(p["id"], {"outbound_filter_id": user["id"]})
    assert e.value.field == "outbound_filter_id"
    # null on a protected port keeps its own chains
    p = service.update_port(p["id"], {"inbound_filter_id": None})
    assert p["inbound_filter_id"] == sec.port_chain_id(p["id"], "inbound")
    assert_consistent(mem_store)


PORT_BAD = [
    ({"mac": "01:00:5e:00:00:01"}, "mac"),
    ({"mac": "nope"}, "mac"),
    ({"fixed_ips": ["10.0.0.256"]}, "fixed_ips"),
    ({"fixed_ips": ["10.0.0.1", "10.0.0.1"]}, "fixed_ips"),
    ({"fixed_ips": "10.0.0.1"}, "fixed_ips"),
    ({"fixed_ips": ["10.0.0.0/24"]}, "fixed_ips"),
    ({"security_group_ids": ["{missing}"]}, "security_group_ids"),
    ({"security_group_ids": ["{web}", "{web}"]}, "security_group_ids"),
    ({"security_group_ids": None}, "security_group_ids"),
    ({"port_security_enabled": "true"}, "port_security_enabled"),
    ({"port_security_enabled": True}, "port_security_enabled"),  # needs mac
    ({"port_security_enabled": True, "mac": None}, "mac"),
    ({"allowed_address_pairs": [{"ip_address": "10.0.0.1"}]}, "allowed_address_pairs"),
    ({"mac": "02:00:00:00:00:09", "port_security_enabled": True,
      "allowed_address_pairs": [{}]}, "allowed_address_pairs[0].ip_address"),
    ({"mac": "02:00:00:00:00:09", "port_security_enabled": True,
      "allowed_address_pairs": [{"ip_address": "10.0.0.1/8"}]},
     "allowed_address_pairs[0].ip_address"),
    ({"mac": "02:00:00:00:00:09", "port_security_enabled": True,
      "allowed_address_pairs": [{"ip_address": "10.0.0.1", "mac_address": "x"}]},
     "allowed_address_pairs[0].mac_address"),
    ({"mac": "02:00:00:00:00:09", "port_security_enabled": True,
      "allowed_address_pairs": [{"ip_address": "10.0.0.1", "extra": 1}]},
     "allowed_address_pairs[0].extra"),
    ({"mac": "02:00:00:00:00:09", "port_security_enabled": True,
      "allowed_address_pairs": ["10.0.0.1"]}, "allowed_address_pairs"),
    ({"mac": "02:00:00:00:00:09", "port_security_enabled": True,
      "allowed_address_pairs": [{"ip_address": "10.0.0.1"}, {"ip_address": "10.0.0.1"}]},
     "allowed_address_pairs"),
    ({"inbound_filter_id": "{gen}"}, None),  # a generated chain: 409, checked apart
]


@pytest.mark.parametrize("body,field", [b for b in PORT_BAD if b[1]])
@pytest.mark.parametrize("how", ["create", "update"])
def test_bad_port_fields(service, mem_store, topo, body, field, how):
    pid = _port(service, topo)["id"]
    missing = _id()

    def fill(v):
        if isinstance(v, str):
            return v.replace("{missing}", missing).replace("{web}", topo["web"]["id"])
        if isinstance(v, list):
            return [fill(x) for x in v]
        return v

    body = {k: fill(v) for k, v in body.items()}
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        if how == "create":
            service.create_port(topo["br"]["id"], body)
        else:
            service.update_port(pid, body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_router_ports_have_no_security_groups(service, mem_store, topo):
    rt = service.create_router({})
    rp = service.create_router_port(rt["id"], {"ip_address": "10.0.0.1", "prefix_len": 24})
    assert (rp["fixed_ips"], rp["security_group_ids"], rp["port_security_enabled"],
            rp["allowed_address_pairs"]) == ([], [], False, [])
    service.update_port(rp["id"], rp)  # the echo is fine
    for body in ({"security_group_ids": [topo["web"]["id"]]}, {"fixed_ips": ["10.0.0.1"]},
                 {"port_security_enabled": True},
                 {"allowed_address_pairs": [{"ip_address": "10.0.0.2"}]}):
        with pytest.raises(Invalid) as e:
            service.update_port(rp["id"], body)
        assert e.value.field == next(iter(body))
    with pytest.raises(Invalid) as e:
        service.update_port(rp["id"], {"mac": MAC1})
    assert e.value.field == "mac"


def test_mac_and_fixed_ips_are_unique_on_a_bridge(service, mem_store, topo):
    p = _port(service, topo, mac=MAC1, fixed_ips=["10.0.0.5"])
    q = _port(service, topo)
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        _port(service, topo, mac=MAC1.upper())
    assert e.value.field == "mac"
    with pytest.raises(Conflict) as e:
        service.update_port(q["id"], {"fixed_ips": ["10.0.0.6", "10.0.0.5"]})
    assert e.value.field == "fixed_ips"
    assert store_snapshot(mem_store) == before
    # another bridge may reuse them; the port itself may keep them
    br2 = service.create_bridge({"name": "other"})
    service.create_port(br2["id"], {"mac": MAC1, "fixed_ips": ["10.0.0.5"]})
    service.update_port(p["id"], {"mac": MAC1, "fixed_ips": ["10.0.0.5", "10.0.0.7"]})


# ----------------------------------------------------------------- deleting
def test_group_in_use_cannot_be_deleted(service, mem_store, topo):
    web = topo["web"]
    p = _port(service, topo, security_group_ids=[web["id"]])
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.delete_security_group(web["id"])
    assert store_snapshot(mem_store) == before
    service.update_port(p["id"], {"security_group_ids": []})
    # a user rule matching on the group's addresses also holds it
    user = service.create_chain({"name": "mine"})
    r = service.create_rule(user["id"], {"action": "accept",
                                         "ip_addr_group_src": web["ip_addr_group_id"]})
    with pytest.raises(Conflict):
        service.delete_security_group(web["id"])
    service.delete_rule(r["id"])
    service.delete_security_group(web["id"])
    for oid, get in ((web["ingress_chain_id"], service.get_chain),
                     (web["egress_chain_id"], service.get_chain),
                     (web["ip_addr_group_id"], service.get_ip_addr_group)):
        with pytest.raises(NotFound):
            get(oid)
    assert_consistent(mem_store)


def test_deleting_a_group_deletes_the_rules_naming_it(service, mem_store, topo):
    web, db = topo["web"], topo["db"]
    service.add_security_group_rule(db["id"], {"direction": "ingress",
                                               "remote_group_id": web["id"]})
    service.add_security_group_rule(db["id"], {"direction": "ingress", "protocol": "icmp"})
    service.add_security_group_rule(web["id"], {"direction": "ingress",
                                                "remote_group_id": web["id"]})
    service.delete_security_group(web["id"])
    rules = service.get_security_group(db["id"])["rules"]
    assert [(r["direction"], r["protocol"]) for r in rules] == [("egress", None),
                                                                 ("ingress", 1)]
    assert chain_rules(service, db["ingress_chain_id"]) == [
        ("accept", {"eth_type": 0x0800, "nw_proto": 1})]
    assert_consistent(mem_store)


# -------------------------------------------------------- generated objects
def test_generated_objects_are_refused_for_direct_changes(service, mem_store, topo):
    web = topo["web"]
    p = _port(service, topo, security_group_ids=[web["id"]])
    ingress, cin = web["ingress_chain_id"], p["inbound_filter_id"]
    egress_rule = service.get_chain(web["egress_chain_id"])["rule_ids"][0]
    drop = service.get_chain(cin)["rule_ids"][-1]
    user = service.create_chain({"name": "mine"})
    other = _port(service, topo)
    before = store_snapshot(mem_store)
    for call in (
        lambda: service.update_chain(ingress, {"name": "x"}),
        lambda: service.delete_chain(cin),
        lambda: service.create_rule(ingress, {"action": "accept"}),
        lambda: service.update_rule(egress_rule, {"nw_proto": 6}),
        lambda: service.delete_rule(drop),
        lambda: service.update_ip_addr_group(web["ip_addr_group_id"], {"name": "x"}),
        lambda: service.delete_ip_addr_group(web["ip_addr_group_id"]),
        lambda: service.add_ip_addr_group_address(web["ip_addr_group_id"],
                                                  {"address": "10.0.0.1"}),
        lambda: service.remove_ip_addr_group_address(web["ip_addr_group_id"], "10.0.0.1"),
        lambda: service.create_rule(user["id"], {"action": "jump", "jump_chain_id": ingress}),
        lambda: service.update_port(other["id"], {"inbound_filter_id": cin}),
        lambda: service.update_bridge(topo["br"]["id"], {"outbound_filter_id": ingress}),
    ):
        with pytest.raises(Conflict):
            call()
    assert store_snapshot(mem_store) == before
    # visible, and marked
    gen = [c for c in service.list_chains() if c["generated"]]
    assert {c["name"] for c in gen} == {"sg-web-ingress", "sg-web-egress", "sg-db-ingress",
                                        "sg-db-egress", f"port-{p['id']}-inbound",
                                        f"port-{p['id']}-outbound"}
    assert all(r["generated"] for r in service.list_chain_rules(cin))


# ------------------------------------------------------------ concurrency
def test_port_joining_a_group_being_deleted(service, flaky_store, mem_store, topo):
    """A port given a group while the group is deleted: one of the two fails."""
    other = type(service)(mem_store)
    p = _port(service, topo)
    flaky_store.before_commit = lambda: other.delete_security_group(topo["web"]["id"])
    with pytest.raises((Conflict, NotFound)):
        service.update_port(p["id"], {"security_group_ids": [topo["web"]["id"]]})
    assert service.get_port(p["id"])["security_group_ids"] == []
    assert_consistent(mem_store)


def test_rule_naming_a_group_being_deleted(service, flaky_store, mem_store, topo):
    other = type(service)(mem_store)
    web, db = topo["web"], topo["db"]
    flaky_store.before_commit = lambda: other.delete_security_group(web["id"])
    with pytest.raises((Conflict, NotFound)):
        service.add_security_group_rule(db["id"], {"direction": "ingress",
                                                   "remote_group_id": web["id"]})
    assert len(service.get_security_group(db["id"])["rules"]) == 1
    assert_consistent(mem_store)


def test_concurrent_ports_keep_the_address_group_exact(service, flaky_store, mem_store, topo):
    """Two ports (of two bridges) joining one group at once: the address group is
    written by both, so the second commit fails instead of losing an address."""
    other = type(service)(mem_store)
    web = topo["web"]["id"]
    br2 = service.create_bridge({"name": "other"})
    flaky_store.before_commit = lambda: other.create_port(
        br2["id"], {"fixed_ips": ["10.0.0.1"], "security_group_ids": [web]})
    with pytest.raises(Conflict):
        _port(service, topo, fixed_ips=["10.0.0.2"], security_group_ids=[web])
    assert service.get_ip_addr_group(topo["web"]["ip_addr_group_id"])["addresses"] == \
        ["10.0.0.1"]
    assert_consistent(mem_store)


def test_a_failed_commit_writes_nothing(service, flaky_store, mem_store, topo):
    p = _port(service, topo, mac=MAC1, fixed_ips=["10.0.0.5"],
              security_group_ids=[topo["web"]["id"]])
    other = type(service)(mem_store)
    before = None

    def snap():
        nonlocal before
        other.update_bridge(topo["br"]["id"], {"name": "x"})
        before = store_snapshot(mem_store)

    flaky_store.before_commit = snap
    with pytest.raises(Conflict):  # the bridge's version moved: the MAC check is stale
        service.update_port(p["id"], {"fixed_ips": ["10.0.0.6"],
                                      "port_security_enabled": True})
    assert store_snapshot(mem_store) == before
    assert_consistent(mem_store)
