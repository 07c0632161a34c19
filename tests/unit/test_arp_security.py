"""Port security covers ARP (issue 9): a protected port's ARP sender address
(SPA) and sender MAC (SHA) must be its own or an allowed address pair's, and
SHA must be the frame's Ethernet source. Simulated with the chains the
service generates (midoflow.service.security), without a switch."""

from __future__ import annotations

import os

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from midoflow.apps.pipeline import match_kwargs
from midoflow.model import PORT_INTERIOR, Bridge, Chain, Port, Router, Rule
from midoflow.service import security
from midoflow.sim.packet import ARP_REPLY, ARP_REQUEST, BROADCAST, ETH_ARP, PROTO_UDP, Packet
from midoflow.sim.simulator import simulate
from midoflow.sim.view import DictView

NOW = 10_000.0
ATK, VIC, PAIR_MAC, ROUTER_MAC = ("02:00:00:00:00:0c", "02:00:00:00:00:0d",
                                  "02:00:00:00:00:99", "02:aa:00:00:00:01")
ATK_IP, VIC_IP, GW = "10.1.0.12", "10.1.0.13", "10.1.0.1"


def protected(pid: str, mac: str, ip: str, key: int, pairs=()) -> tuple[Port, list]:
    """A port with port security, its filters the service's generated chains."""
    data = {"id": pid, "mac": mac, "fixed_ips": [ip], "port_security_enabled": True,
            "allowed_address_pairs": list(pairs)}
    objs = security.port_objects(data)
    cin, cout = security.port_filters(data)
    port = Port(id=pid, device_id="net", tunnel_key=key, mac=mac, fixed_ips=(ip,),
                port_security_enabled=True, inbound_filter_id=cin, outbound_filter_id=cout,
                allowed_address_pairs=tuple((p["ip_address"], p.get("mac_address") or "")
                                            for p in pairs))
    return port, objs


@pytest.fixture
def v() -> DictView:
    """Bridge ``net`` (10.1.0.0/24) with the attacker's port ``pa`` (allowed
    pair 10.1.0.64/28 from PAIR_MAC), the victim's ``pv``, and router ``r``
    (10.1.0.1) linked through ``bp``/``rp``. The router knows the victim."""
    view = DictView()
    pa, objs_a = protected("pa", ATK, ATK_IP, 1,
                           [{"ip_address": "10.1.0.64/28", "mac_address": PAIR_MAC}])
    pv, objs_v = protected("pv", VIC, VIC_IP, 2)
    for chain, rules in objs_a + objs_v:
        view.chains[chain["id"]] = Chain.from_dict(chain)
        for r in rules:
            view.rules[r["id"]] = Rule.from_dict(r)
    view.bridges["net"] = Bridge(id="net", port_ids=("pa", "pv", "bp"))
    view.routers["r"] = Router(id="r", port_ids=("rp",))
    view.ports.update(
        pa=pa, pv=pv,
        bp=Port(id="bp", device_id="net", type=PORT_INTERIOR, peer_id="rp", tunnel_key=3),
        rp=Port(id="rp", device_id="r", device_type="router", type=PORT_INTERIOR,
                peer_id="bp", mac=ROUTER_MAC, ip_address=GW, prefix_len=24, tunnel_key=4))
    view.macs[("net", ATK)] = "pa"
    view.macs[("net", VIC)] = "pv"
    view.arps[("r", VIC_IP)] = (VIC, NOW - 10)
    return view


def arp(spa=ATK_IP, sha=ATK, eth_src=ATK, eth_dst=BROADCAST, tpa=GW, op=ARP_REQUEST,
        in_port="pa") -> Packet:
    return Packet(in_port=in_port, eth_src=eth_src, eth_dst=eth_dst, eth_type=ETH_ARP,
                  arp_op=op, arp_sha=sha, arp_spa=spa,
                  arp_tha="00:00:00:00:00:00", arp_tpa=tpa)


def test_own_address_and_mac_are_answered_and_learned(v):
    r = simulate(v, arp(), NOW)
    assert ("r", ATK_IP, ATK) in r.arp_learned
    assert [g.kind for g in r.generated] == ["arp_reply"]
    assert "pv" in r.out_ports  # the broadcast reaches the neighbour too


@pytest.mark.parametrize("why, frame", [
    ("another VM's address", dict(spa=VIC_IP)),
    ("another VM's address, its MAC too", dict(spa=VIC_IP, sha=VIC)),
    ("a made-up sender MAC", dict(sha="02:de:ad:be:ef:01")),
    ("SHA of the victim, own address", dict(sha=VIC)),
    ("a made-up MAC everywhere", dict(sha="02:de:ad:be:ef:01", eth_src="02:de:ad:be:ef:01")),
    ("an address outside every pair", dict(spa="10.1.0.200")),
    ("the pair's address from the port's own MAC", dict(spa="10.1.0.70")),
    ("a reply claiming the gateway", dict(spa=GW, op=ARP_REPLY, eth_dst=VIC, tpa=VIC_IP)),
])
def test_spoofed_arp_is_dropped_and_teaches_nothing(v, why, frame):
    r = simulate(v, arp(**frame), NOW)
    assert r.dropped, why
    assert not r.arp_learned and not r.generated, why  # the router learns nothing
    assert not r.out_ports and not r.learned, why  # no neighbour sees it, no MAC learned
    assert v.arps[("r", VIC_IP)][0] == VIC


def test_allowed_address_pair_may_arp(v):
    r = simulate(v, arp(spa="10.1.0.70", sha=PAIR_MAC, eth_src=PAIR_MAC), NOW)
    assert ("r", "10.1.0.70", PAIR_MAC) in r.arp_learned
    assert [g.kind for g in r.generated] == ["arp_reply"]


def test_arp_probe_from_zero_is_allowed_and_not_learned(v):
    """RFC 5227 address conflict detection: SPA 0.0.0.0 from the port's MAC."""
    r = simulate(v, arp(spa="0.0.0.0", tpa=ATK_IP), NOW)
    assert r.out_ports and not r.arp_learned
    assert simulate(v, arp(spa="0.0.0.0", sha="02:de:ad:be:ef:01", tpa=ATK_IP), NOW).dropped


def test_arp_without_a_payload_is_dropped_without_a_flow(v):
    broken = Packet(in_port="pa", eth_src=ATK, eth_dst=BROADCAST, eth_type=ETH_ARP)
    r = simulate(v, broken, NOW)
    assert r.dropped and not r.cacheable


def test_unprotected_port_is_not_checked(v):
    """Port security off: ARP passes as before (the operator chose so)."""
    v.ports["pa"] = Port(id="pa", device_id="net", tunnel_key=1, mac=ATK)
    r = simulate(v, arp(spa="10.1.0.40", sha="02:de:ad:be:ef:01", tpa="10.1.0.99"), NOW)
    assert r.out_ports and not r.dropped


def _of_match(result, pkt: Packet) -> dict:
    m = match_kwargs(result.match_fields, pkt, 7)
    ofproto_v1_3_parser.OFPMatch(**m).serialize(bytearray(), 0)  # OVS can be sent it
    assert ofproto_v1_3.OFP_VERSION == 4
    return m


def test_flow_of_an_accepted_arp_matches_its_sender(v):
    """A unicast ARP reply to the neighbour becomes a flow; a later ARP with
    another sender address or MAC must not ride it."""
    pkt = arp(op=ARP_REPLY, eth_dst=VIC, tpa=VIC_IP)
    r = simulate(v, pkt, NOW)
    assert r.out_ports == ("pv",) and r.cacheable
    m = _of_match(r, pkt)
    assert (m["eth_type"], m["arp_spa"], m["arp_sha"], m["eth_src"], m["in_port"]) == \
        (ETH_ARP, ATK_IP, ATK, ATK, 7)


def test_flow_of_a_refused_arp_drops_only_that_sender(v):
    pkt = arp(spa=VIC_IP, op=ARP_REPLY, eth_dst=VIC, tpa=VIC_IP)
    r = simulate(v, pkt, NOW)
    assert r.dropped and r.cacheable
    m = _of_match(r, pkt)
    assert (m["arp_spa"], m["arp_sha"]) == (VIC_IP, ATK)
    forged = arp(sha="02:de:ad:be:ef:01", op=ARP_REPLY, eth_dst=VIC, tpa=VIC_IP)
    r = simulate(v, forged, NOW)
    assert r.dropped and _of_match(r, forged)["arp_sha"] == "02:de:ad:be:ef:01"


def test_arp_to_the_router_never_becomes_a_flow(v):
    """The router must see every ARP sent to it: it learns from each."""
    r = simulate(v, arp(op=ARP_REPLY, eth_dst=ROUTER_MAC), NOW)
    assert r.arp_learned and not r.cacheable


def test_ip_traffic_of_a_protected_port_is_unchanged(v):
    """The SHA check reads only ARP: IP keeps its flow match (no ARP fields)."""
    dhcp = Packet(in_port="pa", eth_src=ATK, eth_dst=BROADCAST, ip_src="0.0.0.0",
                  ip_dst="255.255.255.255", ip_proto=PROTO_UDP, tp_src=68, tp_dst=67)
    r = simulate(v, dhcp, NOW)
    spoof = security.port_chain_id("pa", "anti-spoof")
    assert any(s.device == spoof and s.decision.endswith("return") for s in r.trace)
    assert not r.match_fields & {"arp_sha", "arp_spa"}


def test_anti_spoof_arp_rules_name_each_pair():
    p = {"id": os.urandom(4).hex(), "mac": ATK, "fixed_ips": [ATK_IP],
         "port_security_enabled": True,
         "allowed_address_pairs": [{"ip_address": "10.1.0.64/28", "mac_address": PAIR_MAC}]}
    (_, spoof), = [(c, rules) for c, rules in security.port_objects(p)
                   if c["id"] == security.port_chain_id(p["id"], "anti-spoof")]
    arp_rules = [(r["eth_src"], r["nw_src"]) for r in spoof if r["eth_type"] == ETH_ARP]
    assert arp_rules == [(ATK, f"{ATK_IP}/32"), (PAIR_MAC, "10.1.0.64/28"),
                         (ATK, "0.0.0.0/32"), (PAIR_MAC, "0.0.0.0/32")]
    assert all(r["action"] == "return" for r in spoof[:-1]) and spoof[-1]["action"] == "drop"
