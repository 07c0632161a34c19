"""Virtual IPs that move (issue 12, item 3): a gratuitous ARP from a port
allowed to use the address replaces every router's ARP entry for it; any
other ARP not addressed to a router changes nothing. Simulated with the
chains the service generates for protected ports, then through two agent
cores (the entry is written, the routed flow to the old MAC is invalidated
on the other host, and the next packet goes to the new one)."""

from __future__ import annotations

import pytest

from midoflow.model import PORT_INTERIOR, Bridge, Chain, Port, Router, Rule
from midoflow.service import security
from midoflow.sim import router as rt
from midoflow.sim.packet import ARP_REPLY, ARP_REQUEST, BROADCAST, ETH_ARP, Packet
from midoflow.sim.result import arp_tag, mac_tag
from midoflow.sim.simulator import simulate
from midoflow.sim.view import DictView
from midoflow.store.base import Create
from tests.unit.worlds import (
    R2,
    VM2,
    agent,
    bind,
    learn_arp,
    learn_macs,
    tcp,
    two_hosts,
    two_subnets,
)

NOW = 10_000.0
A, B, C, U, RMAC = ("02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c",
                    "02:00:00:00:00:0e", "02:aa:00:00:00:01")
VIP, GW = "10.1.0.100", "10.1.0.1"


def protected(pid: str, mac: str, ip: str, key: int, pairs=()) -> tuple[Port, list]:
    data = {"id": pid, "mac": mac, "fixed_ips": [ip], "port_security_enabled": True,
            "allowed_address_pairs": [{"ip_address": p} for p in pairs]}
    cin, cout = security.port_filters(data)
    port = Port(id=pid, device_id="net", tunnel_key=key, mac=mac, fixed_ips=(ip,),
                port_security_enabled=True, inbound_filter_id=cin, outbound_filter_id=cout,
                allowed_address_pairs=tuple((p, "") for p in pairs))
    return port, security.port_objects(data)


@pytest.fixture
def v() -> DictView:
    """Bridge ``net`` (10.1.0.0/24) on router ``r`` (10.1.0.1): protected
    ports ``pa`` and ``pb`` (keepalived's pair, both allowed VIP), protected
    ``pc`` (not allowed it), unprotected ``pu``. The router has VIP at A."""
    view = DictView()
    ports = [protected("pa", A, "10.1.0.11", 1, [VIP]), protected("pb", B, "10.1.0.12", 2, [VIP]),
             protected("pc", C, "10.1.0.13", 3)]
    for port, objs in ports:
        view.ports[port.id] = port
        for chain, rules in objs:
            view.chains[chain["id"]] = Chain.from_dict(chain)
            for r in rules:
                view.rules[r["id"]] = Rule.from_dict(r)
    view.ports["pu"] = Port(id="pu", device_id="net", tunnel_key=4, mac=U)
    view.ports["bp"] = Port(id="bp", device_id="net", type=PORT_INTERIOR, peer_id="rp",
                            tunnel_key=5)
    view.ports["rp"] = Port(id="rp", device_id="r", device_type="router", type=PORT_INTERIOR,
                            peer_id="bp", mac=RMAC, ip_address=GW, prefix_len=24, tunnel_key=6)
    view.bridges["net"] = Bridge(id="net", port_ids=("pa", "pb", "pc", "pu", "bp"))
    view.routers["r"] = Router(id="r", port_ids=("rp",))
    view.arps[("r", VIP)] = (A, NOW - 5)
    return view


def arp(in_port: str, mac: str, op: int, spa: str, tpa: str, eth_dst: str = BROADCAST,
        tha: str = "00:00:00:00:00:00") -> Packet:
    return Packet(in_port=in_port, eth_src=mac, eth_dst=eth_dst, eth_type=ETH_ARP, arp_op=op,
                  arp_sha=mac, arp_spa=spa, arp_tha=tha, arp_tpa=tpa)


def test_is_gratuitous():
    assert rt.is_gratuitous(arp("pb", B, ARP_REQUEST, VIP, VIP))
    assert rt.is_gratuitous(arp("pb", B, ARP_REPLY, VIP, VIP, tha=B))
    assert not rt.is_gratuitous(arp("pb", B, ARP_REQUEST, VIP, "10.1.0.11"))
    assert not rt.is_gratuitous(arp("pb", B, ARP_REQUEST, "0.0.0.0", "0.0.0.0"))  # a probe
    assert not rt.is_gratuitous(arp("pb", B, 3, VIP, VIP))  # RARP op


@pytest.mark.parametrize("op, eth_dst, tha", [
    (ARP_REQUEST, BROADCAST, "00:00:00:00:00:00"),  # keepalived, arping -U
    (ARP_REPLY, BROADCAST, B),                     # arping -A
    (ARP_REPLY, RMAC, RMAC),                       # a reply form unicast to the router
])
def test_a_gratuitous_arp_from_an_allowed_port_moves_the_routers_entry(v, op, eth_dst, tha):
    r = simulate(v, arp("pb", B, op, VIP, VIP, eth_dst=eth_dst, tha=tha), NOW)
    assert r.arp_learned == (("r", VIP, B),)
    assert ("net", B, "pb") in r.learned  # the bridge learns the frame's source too
    assert not r.cacheable  # the router's learning reads the whole payload: never a flow
    if eth_dst == BROADCAST:  # flooded to the neighbours, whose kernels update theirs
        assert {"pa", "pc", "pu"} <= set(r.out_ports)
    assert not r.generated  # a gratuitous ARP is not answered


def test_a_gratuitous_arp_for_an_address_the_port_may_not_use_changes_nothing(v):
    r = simulate(v, arp("pc", C, ARP_REQUEST, VIP, VIP), NOW)
    assert r.dropped and not r.arp_learned  # anti-spoof: pc has no pair for VIP


@pytest.mark.parametrize("addr", ["10.9.9.9", GW, "10.1.0.0", "10.1.0.255"])
def test_a_gratuitous_arp_for_no_host_of_the_subnet_changes_nothing(v, addr):
    """From an unprotected port (nothing filters it): not a host of the
    router port's subnet, or the router's own address."""
    r = simulate(v, arp("pu", U, ARP_REQUEST, addr, addr), NOW)
    assert not r.arp_learned


def test_other_arp_not_addressed_to_the_router_changes_nothing(v):
    """No cache poisoning: a request for a neighbour, or a reply to one,
    carrying a sender the router knows under another MAC, is not learned
    (not even as an update of an existing entry, as Linux would do)."""
    for pkt in (arp("pb", B, ARP_REQUEST, VIP, "10.1.0.11"),
                arp("pb", B, ARP_REPLY, VIP, "10.1.0.11", eth_dst=A, tha=A),
                arp("pu", U, ARP_REQUEST, "10.1.0.50", "10.1.0.13")):
        r = simulate(v, pkt, NOW)
        assert not r.arp_learned, pkt


def test_a_routed_flow_to_the_vip_is_tagged_with_its_arp_entry(v):
    v.bridges["b2"] = Bridge(id="b2", port_ids=("p2", "b2r"))
    v.ports["p2"] = Port(id="p2", device_id="b2", tunnel_key=7)
    v.ports["b2r"] = Port(id="b2r", device_id="b2", type=PORT_INTERIOR, peer_id="r2",
                          tunnel_key=8)
    v.ports["r2"] = Port(id="r2", device_id="r", device_type="router", type=PORT_INTERIOR,
                         peer_id="b2r", mac=R2, ip_address="10.2.0.1", prefix_len=24,
                         tunnel_key=9)
    v.routers["r"] = Router(id="r", port_ids=("rp", "r2"))
    v.macs[("net", A)] = "pa"
    pkt = Packet(in_port="p2", eth_src=VM2, eth_dst=R2, ip_src="10.2.0.5", ip_dst=VIP,
                 ip_proto=1, tp_src=8, tp_dst=0)
    r = simulate(v, pkt, NOW)
    # (pa's own chains drop it: no group admits ICMP; the route is what counts)
    assert arp_tag("r", VIP) in r.tags and mac_tag("net", A) in r.tags


# ---- through the agents: written, invalidated on the other host, followed -------------------
def test_the_garp_moves_routed_traffic_on_every_host():
    """b1 (192.168.1/24): keepalived's pair pa (h1, MAC A) and pb (h2, MAC B);
    p2 on b2 (h2) reaches the VIP through router r. pb's gratuitous ARP,
    simulated at h2, writes r's entry; h2's routed flow to A goes; the next
    packet is delivered to pb."""
    vip = "192.168.1.100"
    topo = [c for c in two_subnets() if c.data["id"] != "b1"]
    api = two_hosts(Create("bridges", {"id": "b1", "port_ids": ["p1", "b1r", "pa", "pb"]}),
                    *topo,
                    Create("ports", {"id": "pa", "device_id": "b1", "tunnel_key": 21}),
                    Create("ports", {"id": "pb", "device_id": "b1", "tunnel_key": 22}))
    learn_macs(api, "b1", {A: "pa", B: "pb"})
    learn_arp(api, "r", {vip: A})
    agents = {h: agent(api, h) for h in ("h1", "h2")}
    bind(agents, {"h1": {"vxlan0": (1, None), "gre0": (2, None), "vma": (5, "pa")},
                  "h2": {"vxlan0": (1, None), "gre0": (2, None), "vmb": (5, "pb"),
                         "vm2": (6, "p2")}})
    h2 = agents["h2"]
    gone: set[int] = set()
    h2.on_invalidate = gone.update
    ping = tcp("192.168.2.20", vip, 1000, 80, VM2, R2)
    before = h2.handle_miss(6, ping)
    assert before.install and [type(a).__name__ for a in before.actions] == ["Tunnel"]
    garp = {"eth_src": B, "eth_dst": BROADCAST, "eth_type": ETH_ARP, "arp_op": ARP_REQUEST,
            "arp_sha": B, "arp_spa": vip, "arp_tha": "00:00:00:00:00:00", "arp_tpa": vip}
    h2.handle_miss(5, garp)
    assert h2.cache.arps[("r", vip)][0] == B
    assert agents["h1"].cache.arps[("r", vip)][0] == B  # cluster-wide
    assert before.cookie in gone  # the flow to the old MAC went
    after = h2.handle_miss(6, ping)
    assert [type(a).__name__ for a in after.actions] == ["Output"]  # pb, on this host
