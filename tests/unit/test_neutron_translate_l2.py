"""The pure translation of Neutron networks, ports and security groups."""

from __future__ import annotations

from midoflow import model
from midoflow.neutron import translate_l2 as tr
from midoflow.service import security as sec

NET = {"id": "11111111-1111-4111-8111-111111111111", "name": "n1", "project_id": "p1",
       "admin_state_up": False}
SG = "33333333-3333-4333-8333-333333333333"


def port(**kw) -> dict:
    p = {"id": "22222222-2222-4222-8222-222222222222", "network_id": NET["id"], "name": "vm",
         "admin_state_up": True, "mac_address": "FA:16:3E:00:00:01",
         "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}],
         "security_groups": [SG], "port_security_enabled": True,
         "allowed_address_pairs": [{"ip_address": "10.0.0.0/28",
                                    "mac_address": "fa:16:3e:00:00:01"}],
         "device_owner": "compute:nova"}
    p.update(kw)
    return p


def test_network_is_a_bridge_with_the_same_id():
    b = tr.network_to_bridge(NET)
    assert b == {"id": NET["id"], "name": "n1", "tenant_id": "p1", "admin_state_up": False,
                 "port_ids": [], "inbound_filter_id": None, "outbound_filter_id": None,
                 "mtu": None}
    model.Bridge.from_dict(b)
    # what the bridge itself holds is kept (an MTU an admin set through /v1 too)
    cur = dict(b, port_ids=["x"], inbound_filter_id="c", mtu=1400)
    b2 = tr.network_to_bridge(dict(NET, name="renamed"), current=cur)
    assert (b2["name"], b2["port_ids"], b2["inbound_filter_id"], b2["mtu"]) == \
        ("renamed", ["x"], "c", 1400)


def test_vm_port_is_an_exterior_protected_bridge_port():
    n = tr.port_to_native(port(), tunnel_key=7, host_id="h")
    assert n["id"] == port()["id"] and n["device_id"] == NET["id"]
    assert (n["type"], n["device_type"], n["tunnel_key"]) == (model.PORT_EXTERIOR, "bridge", 7)
    assert n["mac"] == "fa:16:3e:00:00:01"
    assert n["fixed_ips"] == ["10.0.0.5"] and n["security_group_ids"] == [SG]
    assert n["port_security_enabled"] and n["host_id"] == "h"
    assert n["allowed_address_pairs"] == [{"ip_address": "10.0.0.0/28",
                                           "mac_address": "fa:16:3e:00:00:01"}]
    p = model.Port.from_dict(n)
    assert p.allowed_address_pairs == (("10.0.0.0/28", "fa:16:3e:00:00:01"),)
    assert sec.port_managed(n)
    # the native side's own fields survive a re-translation
    cur = dict(n, tunnel_key=9, inbound_filter_id="i", interface_name="tap0")
    again = tr.port_to_native(port(name="x"), tunnel_key=1, current=cur)
    assert (again["tunnel_key"], again["inbound_filter_id"], again["interface_name"]) == \
        (9, "i", "tap0")


def test_unprotected_port_has_no_pairs():
    n = tr.port_to_native(port(port_security_enabled=False, security_groups=[]), 1)
    assert not n["port_security_enabled"] and n["allowed_address_pairs"] == []
    assert not sec.port_managed(n)


def test_router_ports_are_interior_and_unprotected_floating_ip_ports_have_none():
    for owner in ("network:router_interface", "network:router_interface_distributed",
                  "network:router_gateway"):
        n = tr.port_to_native(port(device_owner=owner), 1, host_id="h",
                              current={"peer_id": "peer", "tunnel_key": 3})
        assert n["type"] == model.PORT_INTERIOR and n["peer_id"] == "peer"
        assert not sec.port_managed(n) and n["host_id"] is None
    assert not tr.has_native(port(device_owner="network:floatingip"))
    assert tr.has_native(port(device_owner="compute:nova"))


def rule(rid: str, **kw) -> dict:
    r = {"id": rid, "security_group_id": SG, "direction": "ingress", "ethertype": "IPv4",
         "protocol": None, "port_range_min": None, "port_range_max": None,
         "remote_ip_prefix": None, "remote_group_id": None, "created_at": "2026-01-01T00:00:00Z"}
    r.update(kw)
    return r


def test_security_group_embeds_its_ipv4_rules_with_protocol_numbers():
    sg = {"id": SG, "name": "web", "project_id": "p1", "description": "d"}
    rules = [rule("b", protocol="tcp", port_range_min=22, port_range_max=22),
             rule("a", protocol="17"), rule("c", ethertype="IPv6"),
             rule("d", protocol="icmp", port_range_min=8, created_at="2026-01-02T00:00:00Z"),
             rule("e", security_group_id="other")]
    n = tr.sg_to_native(sg, rules)
    assert (n["id"], n["name"], n["tenant_id"], n["description"]) == (SG, "web", "p1", "d")
    assert [r["id"] for r in n["rules"]] == ["a", "b", "d"]
    assert [r["protocol"] for r in n["rules"]] == [17, 6, 1]
    model.SecurityGroup.from_dict(n)
    # the type-only ICMP rule matches the type, any code
    ipag, chains = sec.sg_objects(n, [])
    ingress = dict((c["name"], rs) for c, rs in chains)["sg-web-ingress"]
    icmp = [r for r in ingress if r["nw_proto"] == 1][0]
    assert (icmp["tp_src"], icmp["tp_dst"]) == ([8, 8], None)


def test_protocol_numbers():
    assert tr.protocol_number(None) is None and tr.protocol_number("any") is None
    assert (tr.protocol_number("tcp"), tr.protocol_number("132"), tr.protocol_number(47)) == \
        (6, 132, 47)
