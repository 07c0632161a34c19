"""The pure translation of Neutron routers and floating IPs into native objects."""

from __future__ import annotations

import uuid

import netaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from midoflow import model
from midoflow.neutron import translate_l3 as t3

R = "6f1c1d52-7d3e-4a4b-9a55-0b8c7f3a1e01"
GWP = "0a1b2c3d-0000-4000-8000-000000000001"
IFP = "0a1b2c3d-0000-4000-8000-000000000002"
EXT_SUB = {"id": "5e000000-0000-4000-8000-000000000001", "cidr": "172.24.4.0/24",
           "gateway_ip": "172.24.4.1", "network_id": "ee000000-0000-4000-8000-000000000001"}
INT_SUB = {"id": "5e000000-0000-4000-8000-000000000002", "cidr": "10.0.0.0/24",
           "gateway_ip": "10.0.0.1", "network_id": "ee000000-0000-4000-8000-000000000002"}


def router(**kw):
    r = {"id": R, "name": "r1", "project_id": "p1", "admin_state_up": True, "routes": [],
         "external_gateway_info": {"network_id": EXT_SUB["network_id"], "enable_snat": True,
                                   "external_fixed_ips": []}}
    r.update(kw)
    return r


def port(pid, subnet, ip, owner, mac="fa:16:3e:00:00:01"):
    return {"id": pid, "network_id": subnet["network_id"], "mac_address": mac,
            "device_owner": owner, "device_id": R,
            "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": ip}]}


GW = port(GWP, EXT_SUB, "172.24.4.10", t3.GATEWAY_OWNER, "fa:16:3e:00:00:0a")
IF = port(IFP, INT_SUB, "10.0.0.1", "network:router_interface_distributed")


def fip(n, fixed, addr, router_id=R, port_id="p0000000-0000-4000-8000-000000000000"):
    return {"id": f"f{n:07d}-0000-4000-8000-000000000000", "floating_ip_address": addr,
            "fixed_ip_address": fixed, "port_id": port_id, "router_id": router_id}


def test_generated_ids_are_deterministic_version5_and_distinct():
    assert t3.gen_id(R, "a") == t3.gen_id(R, "a")
    assert uuid.UUID(t3.gen_id(R, "a")).version == 5
    ids = {t3.router_port_id(GWP), t3.router_port_id(IFP), *t3.chain_ids(R)}
    assert len(ids) == 4


def test_router_port_links_to_the_neutron_port_and_takes_its_address():
    rp = t3.router_port(IF, INT_SUB, R, 77)
    assert rp["id"] == t3.router_port_id(IFP) and rp["peer_id"] == IFP
    assert (rp["device_id"], rp["device_type"], rp["type"]) == (R, "router", "interior")
    assert (rp["ip_address"], rp["prefix_len"], rp["mac"]) == ("10.0.0.1", 24,
                                                                "fa:16:3e:00:00:01")
    assert rp["tunnel_key"] == 77 and rp["proxy_arp"] == []
    # a model Port reads it back (every field is one the model knows)
    p = model.Port.from_dict(rp)
    assert p.peer_id == IFP and p.proxy_arp == ()
    with pytest.raises(ValueError):
        t3.router_port(IF, EXT_SUB, R, 1)


def test_native_router_takes_the_generated_filters_only_with_a_gateway():
    n = t3.native_router(router(), ["x"], True)
    assert (n["inbound_filter_id"], n["outbound_filter_id"]) == t3.chain_ids(R)
    assert n["tenant_id"] == "p1" and n["port_ids"] == ["x"]
    n = t3.native_router(router(), [], False)
    assert n["inbound_filter_id"] is None and n["outbound_filter_id"] is None


def test_snat_only_router_rules():
    inbound, outbound = t3.router_rules(router(), GW, [])
    gw_rp = t3.router_port_id(GWP)
    assert [r["action"] for r in inbound] == ["rev_snat"]
    assert inbound[0]["nw_dst"] == "172.24.4.10/32" and inbound[0]["eth_type"] == 0x0800
    assert [r["action"] for r in outbound] == ["snat"]
    snat = outbound[0]
    # only what leaves by the gateway port: east-west traffic is never translated
    assert snat["out_ports"] == [gw_rp] and snat["nw_src"] is None
    assert snat["nat_targets"] == [{"addr_from": "172.24.4.10", "addr_to": "172.24.4.10",
                                    "port_from": 1024, "port_to": 65535}]
    in_id, out_id = t3.chain_ids(R)
    assert {r["chain_id"] for r in inbound} == {in_id}
    assert {r["chain_id"] for r in outbound} == {out_id}
    # complete rule dicts the model reads
    assert model.Rule.from_dict(snat).out_ports == (gw_rp,)


def test_no_gateway_no_rules_and_no_chains():
    assert t3.router_rules(router(external_gateway_info=None), None, []) == ([], [])
    assert t3.router_chains(router(), None, [fip(1, "10.0.0.5", "172.24.4.20")]) == []


def test_enable_snat_false_keeps_floating_ips_but_no_default_snat():
    r = router(external_gateway_info={"network_id": EXT_SUB["network_id"],
                                      "enable_snat": False, "external_fixed_ips": []})
    inbound, outbound = t3.router_rules(r, GW, [fip(1, "10.0.0.5", "172.24.4.20")])
    assert [x["action"] for x in inbound] == ["rev_snat", "dnat"]
    assert [x["action"] for x in outbound] == ["rev_dnat", "snat"]
    assert outbound[-1]["nw_src"] == "10.0.0.5/32"


def test_floating_ip_rules_come_before_the_default_snat():
    f = fip(1, "10.0.0.5", "172.24.4.20")
    inbound, outbound = t3.router_rules(router(), GW, [f])
    assert [(r["action"], r["nw_dst"]) for r in inbound] == [
        ("rev_snat", "172.24.4.20/32"), ("dnat", "172.24.4.20/32"),
        ("rev_snat", "172.24.4.10/32")]
    assert inbound[1]["nat_targets"] == [{"addr_from": "10.0.0.5", "addr_to": "10.0.0.5",
                                          "port_from": 0, "port_to": 0}]
    assert [(r["action"], r["nw_src"]) for r in outbound] == [
        ("rev_dnat", "10.0.0.5/32"), ("snat", "10.0.0.5/32"), ("snat", None)]
    fip_snat = outbound[1]
    assert fip_snat["out_ports"] == [t3.router_port_id(GWP)]
    assert fip_snat["nat_targets"][0]["addr_from"] == "172.24.4.20"


def test_floating_ips_of_other_routers_or_unassociated_are_ignored():
    fs = [fip(1, "10.0.0.5", "172.24.4.20", router_id="other"),
          fip(2, None, "172.24.4.21", port_id=None)]
    assert t3.router_rules(router(), GW, fs) == t3.router_rules(router(), GW, [])
    assert t3.proxy_arp(R, fs) == []


def test_rules_depend_only_on_state_not_on_order():
    fs = [fip(1, "10.0.0.5", "172.24.4.20"), fip(2, "10.0.0.6", "172.24.4.9")]
    assert t3.router_rules(router(), GW, fs) == t3.router_rules(router(), GW, fs[::-1])
    assert t3.proxy_arp(R, fs) == ["172.24.4.9", "172.24.4.20"]


def test_the_difference_between_two_states_is_exactly_the_changed_floating_ip():
    """Adding a floating IP adds its four rules and changes nothing else (ids are
    stable), so the service stages only those creates and the chain updates."""
    f1, f2 = fip(1, "10.0.0.5", "172.24.4.20"), fip(2, "10.0.0.6", "172.24.4.21")
    before = {r["id"]: r for rs in t3.router_rules(router(), GW, [f1]) for r in rs}
    after = {r["id"]: r for rs in t3.router_rules(router(), GW, [f1, f2]) for r in rs}
    assert set(before) < set(after) and len(after) - len(before) == 4
    assert all(after[k] == v for k, v in before.items())
    # re-pointing a floating IP at another fixed IP updates its rules in place
    moved = {r["id"]: r for rs in t3.router_rules(
        router(), GW, [dict(f1, fixed_ip_address="10.0.0.7")]) for r in rs}
    assert set(moved) == set(before)
    # dnat, rev_dnat and snat name the fixed IP; rev_snat only the floating IP
    assert sum(moved[k] != before[k] for k in before) == 3


@given(st.sets(st.integers(2, 250), max_size=12))
def test_every_associated_floating_ip_gets_its_own_dnat_and_snat(hosts):
    fs = [fip(h, f"10.0.0.{h}", f"172.24.4.{h}") for h in sorted(hosts)]
    inbound, outbound = t3.router_rules(router(), GW, fs)
    ids = [r["id"] for r in inbound + outbound]
    assert len(ids) == len(set(ids))
    dnat = {r["nw_dst"]: r["nat_targets"][0]["addr_from"] for r in inbound
            if r["action"] == "dnat"}
    assert dnat == {f"172.24.4.{h}/32": f"10.0.0.{h}" for h in hosts}
    # the general SNAT is last: every floating IP's own SNAT precedes it
    assert outbound[-1]["nw_src"] is None and outbound[-1]["action"] == "snat"


def test_routes_default_via_external_gateway_and_extra_routes_via_their_port():
    r = router(routes=[{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"},
                       {"destination": "8.8.8.0/24", "nexthop": "172.24.4.254"},
                       {"destination": "9.9.9.0/24", "nexthop": "10.9.9.9"}])
    routes = t3.router_routes(r, [(IF, INT_SUB), (GW, EXT_SUB)], (GW, EXT_SUB))
    got = {(x["dst_cidr"], x["next_hop_port"], x["next_hop_gateway"]) for x in routes}
    assert got == {("0.0.0.0/0", t3.router_port_id(GWP), "172.24.4.1"),
                   ("192.168.0.0/16", t3.router_port_id(IFP), "10.0.0.254"),
                   ("8.8.8.0/24", t3.router_port_id(GWP), "172.24.4.254")}
    assert all(x["router_id"] == R and x["type"] == "normal" for x in routes)
    assert len({x["id"] for x in routes}) == 3
    for x in routes:
        model.Route.from_dict(x)
        netaddr.IPNetwork(x["dst_cidr"])


def test_no_default_route_when_the_external_subnet_has_no_gateway():
    routes = t3.router_routes(router(), [(GW, dict(EXT_SUB, gateway_ip=None))],
                              (GW, dict(EXT_SUB, gateway_ip=None)))
    assert routes == []


def test_chains_carry_their_rules_in_order():
    chains = t3.router_chains(router(), GW, [fip(1, "10.0.0.5", "172.24.4.20")])
    assert [c["id"] for c, _ in chains] == list(t3.chain_ids(R))
    for chain, rules in chains:
        assert chain["rule_ids"] == [r["id"] for r in rules]
        assert chain["tenant_id"] == "p1"
        model.Chain.from_dict(chain)
