"""The router simulation: bridge -> router -> bridge and router -> router in
one pass, without a switch."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midoflow.model import (
    DEVICE_ROUTER,
    PORT_INTERIOR,
    ROUTE_BLACKHOLE,
    ROUTE_REJECT,
    Bridge,
    Port,
    Route,
    Router,
)
from midoflow.sim import router as rt
from midoflow.sim.packet import ETH_ARP, PROTO_ICMP, PROTO_TCP, Packet
from midoflow.sim.result import Action, arp_tag, port_tag, router_tag, routes_tag
from midoflow.sim.simulator import simulate
from midoflow.sim.view import DictView

NOW = 10_000.0
VM1, VM2, VM3 = "02:00:00:00:01:01", "02:00:00:00:02:02", "02:00:00:00:03:03"
R1A, R1B = "02:aa:00:00:00:01", "02:aa:00:00:00:02"


class Topo:
    """Two bridges (192.168.1.0/24, 192.168.2.0/24) on router r1.

    vm1 (192.168.1.10) on b1 port p1; vm2 (192.168.2.20) on b2 port p2."""

    def __init__(self) -> None:
        self.v = DictView()
        self.key = 0
        self.bridge("b1")
        self.bridge("b2")
        self.router("r1")
        self.port("p1", "b1")
        self.port("p2", "b2")
        self.link_bridge("r1", "r1a", R1A, "192.168.1.1", 24, "b1")
        self.link_bridge("r1", "r1b", R1B, "192.168.2.1", 24, "b2")
        self.v.macs[("b1", VM1)] = "p1"
        self.v.macs[("b2", VM2)] = "p2"
        self.v.arps[("r1", "192.168.2.20")] = (VM2, NOW - 10)
        self.v.arps[("r1", "192.168.1.10")] = (VM1, NOW - 10)

    def _k(self) -> int:
        self.key += 1
        return self.key

    def bridge(self, bid):
        self.v.bridges[bid] = Bridge(id=bid)

    def router(self, rid):
        self.v.routers[rid] = Router(id=rid)

    def _add(self, kind, dev, pid):
        store = self.v.bridges if kind == "b" else self.v.routers
        old = store[dev]
        store[dev] = type(old)(**{**old.to_dict(), "port_ids": (*old.port_ids, pid)})

    def port(self, pid, bid, **kw):
        self.v.ports[pid] = Port(id=pid, device_id=bid, tunnel_key=self._k(), **kw)
        self._add("b", bid, pid)

    def rport(self, rid, pid, mac, ip, plen, **kw):
        self.v.ports[pid] = Port(id=pid, device_id=rid, device_type=DEVICE_ROUTER,
                                 tunnel_key=self._k(), mac=mac, ip_address=ip,
                                 prefix_len=plen, **kw)
        self._add("r", rid, pid)

    def link_bridge(self, rid, rpid, mac, ip, plen, bid):
        bp = f"{bid}-{rpid}"
        self.rport(rid, rpid, mac, ip, plen, type=PORT_INTERIOR, peer_id=bp)
        self.port(bp, bid, type=PORT_INTERIOR, peer_id=rpid)

    def route(self, rid, rid_route, dst, port=None, gw=None, **kw):
        old = self.v.routes_by_router.get(rid, ())
        self.v.routes_by_router[rid] = (*old, Route(
            id=rid_route, router_id=rid, dst_cidr=dst, next_hop_port=port,
            next_hop_gateway=gw, **kw))


def ip_pkt(src="192.168.1.10", dst="192.168.2.20", ttl=64, proto=PROTO_TCP, sport=1000,
           dport=80, in_port="p1", eth_src=VM1, eth_dst=R1A) -> Packet:
    return Packet(in_port=in_port, eth_src=eth_src, eth_dst=eth_dst, ip_src=src, ip_dst=dst,
                  ip_proto=proto, ip_ttl=ttl, tp_src=sport, tp_dst=dport)


def test_east_west_forwarding_rewrites_macs_and_ttl():
    t = Topo()
    r = simulate(t.v, ip_pkt(), NOW)
    assert r.action is Action.FORWARD and r.out_ports == ("p2",)
    assert [(w.field, w.value) for w in r.rewrites] == [
        ("eth_src", R1B), ("eth_dst", VM2), ("ttl", 1)]
    assert r.cacheable and not r.generated
    # the flow matches the destination, not the ports: a wildcarded L3 flow
    assert {"in_port", "eth_src", "eth_dst", "eth_type", "ip_dst"} <= r.match_fields
    assert "tp_dst" not in r.match_fields and "ip_src" not in r.match_fields
    assert {router_tag("r1"), routes_tag("r1"), arp_tag("r1", "192.168.2.20"),
            port_tag("r1b")} <= r.tags
    kinds = [s.kind for s in r.trace]
    assert kinds.count("bridge") >= 2 and "router" in kinds


def test_longest_prefix_wins_and_weights_break_ties():
    t = Topo()
    t.rport("r1", "up", "02:aa:00:00:00:09", "10.0.0.1", 24)
    t.v.arps[("r1", "10.0.0.254")] = ("02:ee:00:00:00:01", NOW)
    t.v.arps[("r1", "10.0.0.253")] = ("02:ee:00:00:00:02", NOW)
    t.route("r1", "default", "0.0.0.0/0", "up", "10.0.0.254")
    t.route("r1", "more", "8.8.0.0/16", "up", "10.0.0.253")
    t.route("r1", "heavy", "8.8.0.0/16", "up", "10.0.0.254", weight=200)
    r = simulate(t.v, ip_pkt(dst="8.8.8.8"), NOW)
    assert r.out_ports == ("up",)
    assert ("eth_dst", "02:ee:00:00:00:02") in [(w.field, w.value) for w in r.rewrites]
    r = simulate(t.v, ip_pkt(dst="9.9.9.9"), NOW)
    assert ("eth_dst", "02:ee:00:00:00:01") in [(w.field, w.value) for w in r.rewrites]


def test_lookup_unit():
    c = [rt.Candidate(rt.netaddr.IPNetwork(d), rt.ANY, "p", None, w, "normal", i)
         for d, w, i in (("0.0.0.0/0", 100, "a"), ("10.0.0.0/8", 100, "b"),
                         ("10.1.0.0/16", 100, "c"), ("10.1.0.0/16", 50, "d"))]
    assert [x.id for x in rt.lookup(c, "1.1.1.1", "10.1.2.3")] == ["d"]
    assert [x.id for x in rt.lookup(c, "1.1.1.1", "10.2.2.3")] == ["b"]
    assert [x.id for x in rt.lookup(c, "1.1.1.1", "11.0.0.1")] == ["a"]
    assert rt.lookup(c[1:], "1.1.1.1", "11.0.0.1") == []


def test_source_prefix_routes_make_the_flow_match_the_source():
    t = Topo()
    t.rport("r1", "up", "02:aa:00:00:00:09", "10.0.0.1", 24)
    t.v.arps[("r1", "10.0.0.254")] = ("02:ee:00:00:00:01", NOW)
    t.route("r1", "vip", "0.0.0.0/0", "up", "10.0.0.254", src_cidr="192.168.1.0/24")
    r = simulate(t.v, ip_pkt(dst="8.8.8.8"), NOW)
    assert r.out_ports == ("up",) and "ip_src" in r.match_fields
    r = simulate(t.v, ip_pkt(src="192.168.9.9", dst="8.8.8.8"), NOW)
    assert r.dropped and r.generated[0].kind == "icmp_error"


def test_router_answers_arp_for_its_address_and_learns_the_sender():
    t = Topo()
    arp = Packet(in_port="p1", eth_src=VM1, eth_dst="ff:ff:ff:ff:ff:ff", eth_type=ETH_ARP,
                 arp_op=1, arp_sha=VM1, arp_spa="192.168.1.10", arp_tpa="192.168.1.1")
    r = simulate(t.v, arp, NOW)
    replies = [g for g in r.generated if g.kind == "arp_reply"]
    assert len(replies) == 1 and replies[0].out_port == "r1a"
    assert replies[0].get("eth_src") == R1A and replies[0].get("ip_dst") == "192.168.1.10"
    assert ("r1", "192.168.1.10", VM1) in r.arp_learned
    assert not r.cacheable  # the topology answered: never a flow


def test_arp_for_another_address_is_not_answered_by_the_router():
    t = Topo()
    t.port("p3", "b1")
    arp = Packet(in_port="p1", eth_src=VM1, eth_dst="ff:ff:ff:ff:ff:ff", eth_type=ETH_ARP,
                 arp_op=1, arp_sha=VM1, arp_spa="192.168.1.10", arp_tpa="192.168.1.30")
    r = simulate(t.v, arp, NOW)
    assert not r.generated and "p3" in r.out_ports


def test_router_port_answers_arp_for_its_proxy_arp_addresses():
    """A gateway port answers ARP for the router's floating IPs (proxy_arp) with
    its own MAC, from the address asked for; other addresses stay unanswered,
    and a proxied address is never learned as a neighbour."""
    t = Topo()
    t.v.ports["r1a"] = Port(**{**t.v.ports["r1a"].to_dict(),
                              "proxy_arp": ("192.168.1.50", "192.168.1.51")})
    t.port("p3", "b1")

    def ask(tpa, spa="192.168.1.10"):
        return simulate(t.v, Packet(in_port="p1", eth_src=VM1, eth_dst="ff:ff:ff:ff:ff:ff",
                                    eth_type=ETH_ARP, arp_op=1, arp_sha=VM1, arp_spa=spa,
                                    arp_tpa=tpa), NOW)

    for fip in ("192.168.1.50", "192.168.1.51"):
        r = ask(fip)
        replies = [g for g in r.generated if g.kind == "arp_reply"]
        assert len(replies) == 1 and replies[0].out_port == "r1a"
        assert replies[0].get("eth_src") == R1A and replies[0].get("ip_src") == fip
        assert replies[0].get("ip_dst") == "192.168.1.10" and not r.cacheable
    r = ask("192.168.1.1")  # its own address: still answered from it
    assert [g.get("ip_src") for g in r.generated if g.kind == "arp_reply"] == ["192.168.1.1"]
    r = ask("192.168.1.52")
    assert not r.generated and "p3" in r.out_ports
    # a sender claiming a floating IP is not learned (the router owns it)
    r = ask("192.168.1.1", spa="192.168.1.50")
    assert not r.arp_learned
    # as stored (a JSON list), the model holds it as a tuple
    port = Port.from_dict({**t.v.ports["r1a"].to_dict(), "proxy_arp": ["192.168.1.50"]})
    assert port.proxy_arp == ("192.168.1.50",)


def test_arp_reply_to_the_router_is_learned():
    t = Topo()
    rep = Packet(in_port="p2", eth_src=VM2, eth_dst=R1B, eth_type=ETH_ARP, arp_op=2,
                 arp_sha=VM2, arp_spa="192.168.2.20", arp_tha=R1B, arp_tpa="192.168.2.1")
    r = simulate(t.v, rep, NOW)
    assert r.arp_learned == (("r1", "192.168.2.20", VM2),) and not r.generated


@pytest.mark.parametrize("spa, sha", [
    ("192.168.2.20", VM1),        # another subnet's host (vm2's address)
    ("10.9.9.9", VM1),            # no subnet of the router's
    ("192.168.1.1", VM1),         # the port's own address
    ("192.168.2.1", VM1),         # another port's address
    ("192.168.1.0", VM1),         # the subnet's network address
    ("192.168.1.255", VM1),       # its broadcast address
    ("192.168.1.10", "ff:ff:ff:ff:ff:ff"),
    ("192.168.1.10", "01:00:5e:00:00:01"),
    ("192.168.1.10", "00:00:00:00:00:00"),
    ("0.0.0.0", VM1),             # a probe
])
def test_router_learns_only_hosts_of_the_ingress_subnet(spa, sha):
    t = Topo()
    req = Packet(in_port="p1", eth_src=VM1, eth_dst="ff:ff:ff:ff:ff:ff", eth_type=ETH_ARP,
                 arp_op=1, arp_sha=sha, arp_spa=spa, arp_tpa="192.168.1.1")
    r = simulate(t.v, req, NOW)
    assert not r.arp_learned and not r.cacheable


def test_learnable_refuses_every_address_of_the_router():
    t = Topo()
    p = t.v.ports["r1a"]
    assert rt.learnable(p, set(), "192.168.1.2", VM1)
    assert not rt.learnable(p, {"192.168.1.1", "192.168.1.2"}, "192.168.1.2", VM1)
    assert not rt.learnable(p, set(), "not-an-ip", VM1)
    p31 = Port(id="x", device_id="r1", mac=R1A, ip_address="10.0.0.0", prefix_len=31,
               tunnel_key=99)
    assert rt.learnable(p31, {"10.0.0.0"}, "10.0.0.1", VM1)  # RFC 3021: both are hosts


def test_unknown_next_hop_sends_an_arp_request_and_waits():
    t = Topo()
    del t.v.arps[("r1", "192.168.2.20")]
    r = simulate(t.v, ip_pkt(), NOW)
    assert r.dropped and r.wait_arp == ("r1", "192.168.2.20") and not r.cacheable
    (req,) = r.generated
    assert req.kind == "arp_request" and req.out_port == "r1b"
    assert (req.get("ip_src"), req.get("ip_dst"), req.get("eth_src")) == (
        "192.168.2.1", "192.168.2.20", R1B)
    assert arp_tag("r1", "192.168.2.20") in r.tags


def test_arp_entries_expire_and_stale_ones_are_refreshed():
    t = Topo()
    t.v.arps[("r1", "192.168.2.20")] = (VM2, NOW - rt.ARP_STALE - 1)
    r = simulate(t.v, ip_pkt(), NOW)
    assert r.out_ports == ("p2",) and [g.kind for g in r.generated] == ["arp_request"]
    t.v.arps[("r1", "192.168.2.20")] = (VM2, NOW - rt.ARP_EXPIRE - 1)
    r = simulate(t.v, ip_pkt(), NOW)
    assert r.dropped and r.wait_arp == ("r1", "192.168.2.20")


def test_ping_to_router_port_is_answered():
    t = Topo()
    for dst in ("192.168.1.1", "192.168.2.1"):  # its near and far addresses
        r = simulate(t.v, ip_pkt(dst=dst, proto=PROTO_ICMP, sport=8, dport=0), NOW)
        (g,) = r.generated
        assert g.kind == "icmp_echo_reply" and g.out_port == "r1a"
        assert (g.get("ip_src"), g.get("ip_dst"), g.get("eth_dst")) == (dst, "192.168.1.10",
                                                                          VM1)
        assert r.dropped and not r.cacheable
    r = simulate(t.v, ip_pkt(dst="192.168.1.1"), NOW)  # TCP to the router: dropped
    assert r.dropped and not r.generated


def test_ttl_exceeded():
    t = Topo()
    r = simulate(t.v, ip_pkt(ttl=1), NOW)
    (g,) = r.generated
    assert (g.kind, g.get("icmp_type"), g.get("icmp_code")) == ("icmp_error", 11, 0)
    assert g.get("ip_src") == "192.168.1.1" and g.get("ip_dst") == "192.168.1.10"
    r = simulate(t.v, ip_pkt(ttl=2), NOW)
    assert r.out_ports == ("p2",)


def test_unroutable_destination_gets_network_unreachable():
    t = Topo()
    r = simulate(t.v, ip_pkt(dst="172.16.0.1"), NOW)
    (g,) = r.generated
    assert (g.get("icmp_type"), g.get("icmp_code")) == (3, 0) and r.dropped


def test_no_icmp_error_about_an_icmp_error():
    t = Topo()
    r = simulate(t.v, ip_pkt(dst="172.16.0.1", proto=PROTO_ICMP, sport=3, dport=1), NOW)
    assert r.dropped and not r.generated


def test_blackhole_and_reject_routes():
    t = Topo()
    t.route("r1", "bh", "172.16.0.0/12", type=ROUTE_BLACKHOLE)
    t.route("r1", "rej", "172.20.0.0/16", type=ROUTE_REJECT)
    r = simulate(t.v, ip_pkt(dst="172.16.0.1"), NOW)
    assert r.dropped and not r.generated and r.cacheable
    r = simulate(t.v, ip_pkt(dst="172.20.0.1"), NOW)
    (g,) = r.generated
    assert (g.get("icmp_type"), g.get("icmp_code")) == (3, 13)


def test_route_to_a_down_port_is_unreachable():
    t = Topo()
    p = t.v.ports["r1b"]
    t.v.ports["r1b"] = Port(**{**p.to_dict(), "admin_state_up": False})
    r = simulate(t.v, ip_pkt(), NOW)
    assert r.dropped and r.generated[0].get("icmp_type") == 3


def test_router_down_drops():
    t = Topo()
    t.v.routers["r1"] = Router(id="r1", admin_state_up=False,
                               port_ids=t.v.routers["r1"].port_ids)
    r = simulate(t.v, ip_pkt(), NOW)
    assert r.dropped and router_tag("r1") in r.tags


def test_frame_not_addressed_to_the_router_is_dropped_by_it():
    t = Topo()
    t.v.macs[("b1", "02:00:00:00:09:09")] = "b1-r1a"  # a MAC wrongly learned there
    r = simulate(t.v, ip_pkt(eth_dst="02:00:00:00:09:09"), NOW)
    assert r.dropped


def _ecmp_topo():
    t = Topo()
    t.rport("r1", "u1", "02:aa:00:00:01:01", "10.1.0.1", 24)
    t.rport("r1", "u2", "02:aa:00:00:02:01", "10.2.0.1", 24)
    t.v.arps[("r1", "10.1.0.254")] = ("02:ee:00:00:01:01", NOW)
    t.v.arps[("r1", "10.2.0.254")] = ("02:ee:00:00:02:01", NOW)
    t.route("r1", "e1", "0.0.0.0/0", "u1", "10.1.0.254")
    t.route("r1", "e2", "0.0.0.0/0", "u2", "10.2.0.254")
    return t


def test_ecmp_is_deterministic_and_spreads():
    t = _ecmp_topo()
    counts: collections.Counter = collections.Counter()
    for sport in range(1000, 1400):
        p = ip_pkt(dst="8.8.8.8", sport=sport)
        a, b = simulate(t.v, p, NOW), simulate(t.v, p, NOW)
        assert a.out_ports == b.out_ports
        assert {"ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst"} <= a.match_fields
        counts[a.out_ports] += 1
    assert set(counts) == {("u1",), ("u2",)}
    assert min(counts.values()) > 400 * 0.35


@given(st.integers(1, 65535), st.integers(1, 65535), st.ip_addresses(v=4))
def test_ecmp_same_flow_same_path_property(sport, dport, src):
    t = _ecmp_topo()
    p = ip_pkt(src=str(src), dst="8.8.8.8", sport=sport, dport=dport)
    assert simulate(t.v, p, NOW).out_ports == simulate(t.v, p, NOW).out_ports


def test_tenant_router_to_provider_router_in_one_pass():
    """vm1 -> tenant router r1 -> provider router pr -> uplink, one simulation."""
    t = Topo()
    t.router("pr")
    t.rport("r1", "r1-up", "02:aa:00:00:00:05", "100.64.0.2", 30, type=PORT_INTERIOR,
            peer_id="pr-down")
    t.rport("pr", "pr-down", "02:bb:00:00:00:05", "100.64.0.1", 30, type=PORT_INTERIOR,
            peer_id="r1-up")
    t.rport("pr", "pr-up", "02:bb:00:00:00:06", "203.0.113.1", 24)
    t.route("r1", "r1-default", "0.0.0.0/0", "r1-up", "100.64.0.1")
    t.route("pr", "pr-default", "0.0.0.0/0", "pr-up", "203.0.113.254")
    t.route("pr", "pr-back", "192.168.0.0/16", "pr-down", "100.64.0.2")
    t.v.arps[("r1", "100.64.0.1")] = ("02:bb:00:00:00:05", NOW)
    t.v.arps[("pr", "203.0.113.254")] = ("02:ee:00:00:00:ff", NOW)
    r = simulate(t.v, ip_pkt(dst="8.8.8.8", ttl=5), NOW)
    assert r.out_ports == ("pr-up",)
    assert [w.field for w in r.rewrites] == ["eth_src", "eth_dst", "ttl"] * 2
    assert r.rewrites[-2].value == "02:ee:00:00:00:ff"
    assert {router_tag("r1"), router_tag("pr"), routes_tag("pr")} <= r.tags
    # TTL 2 expires at the provider router, which answers from its near port
    r = simulate(t.v, ip_pkt(dst="8.8.8.8", ttl=2), NOW)
    (g,) = r.generated
    assert g.kind == "icmp_error" and g.out_port == "pr-down" and g.get("ip_src") == "100.64.0.1"
    # and the way back: an external packet to the VM
    t.v.ports["ext"] = Port(id="ext", device_id="pr", device_type=DEVICE_ROUTER,
                            tunnel_key=999)
    back = Packet(in_port="pr-up", eth_src="02:ee:00:00:00:ff", eth_dst="02:bb:00:00:00:06",
                  ip_src="8.8.8.8", ip_dst="192.168.2.20", ip_proto=PROTO_TCP, tp_src=80,
                  tp_dst=1000)
    t.v.arps[("pr", "100.64.0.2")] = ("02:aa:00:00:00:05", NOW)
    r = simulate(t.v, back, NOW)
    assert r.out_ports == ("p2",)


def test_loop_between_routers_is_cut():
    t = Topo()
    t.router("r2")
    t.rport("r1", "x1", "02:aa:00:00:0a:01", "10.9.0.1", 30, type=PORT_INTERIOR, peer_id="x2")
    t.rport("r2", "x2", "02:aa:00:00:0a:02", "10.9.0.2", 30, type=PORT_INTERIOR, peer_id="x1")
    t.route("r1", "to-r2", "0.0.0.0/0", "x1", "10.9.0.2")
    t.route("r2", "to-r1", "0.0.0.0/0", "x2", "10.9.0.1")
    t.v.arps[("r1", "10.9.0.2")] = ("02:aa:00:00:0a:02", NOW)
    t.v.arps[("r2", "10.9.0.1")] = ("02:aa:00:00:0a:01", NOW)
    r = simulate(t.v, ip_pkt(dst="8.8.8.8", ttl=255), NOW)
    assert r.dropped and "loop guard" in r.reason


# ---- a port's own addresses: no ARP, no flood (issue 13, goal 4) ------------------------

def test_a_ports_fixed_ip_and_mac_need_no_arp_and_no_learning():
    """A VM's port says its address and MAC (Neutron's): the router uses them
    without asking by ARP, the bridge without having learned the MAC, so the
    answer to a new VM's first packet goes at once, and only to it."""
    t = Topo()
    vm3 = "02:00:00:00:03:33"
    t.port("p3", "b2", mac=vm3, fixed_ips=("192.168.2.30",))
    r = simulate(t.v, ip_pkt(dst="192.168.2.30"), NOW)
    assert r.action is Action.FORWARD and r.out_ports == ("p3",)
    assert r.wait_arp is None and not r.generated and not r.flooded
    assert ("eth_dst", vm3) in [(w.field, w.value) for w in r.rewrites]
    assert {rt.address_tag("b2", "192.168.2.30"), port_tag("p3")} <= r.tags
    assert arp_tag("r1", "192.168.2.30") not in r.tags
    assert any("no ARP" in s.decision for s in r.trace)


def test_an_address_no_port_holds_is_still_asked_by_arp():
    """An address outside every port's fixed_ips (an alias, an allowed
    address pair): the router asks as before, and the flow depends on the
    bridge's address too (a port that takes it later changes the answer)."""
    t = Topo()
    t.port("p3", "b2", mac="02:00:00:00:03:33", fixed_ips=("192.168.2.30",))
    r = simulate(t.v, ip_pkt(dst="192.168.2.31"), NOW)
    assert r.wait_arp == ("r1", "192.168.2.31")
    assert [g.kind for g in r.generated] == ["arp_request"]
    assert rt.address_tag("b2", "192.168.2.31") in r.tags


def test_a_learned_mac_wins_over_a_ports_own():
    """A MAC learned elsewhere (the VM moved to another port of the bridge)
    is what the bridge follows; the port's own MAC only when nothing is learned."""
    t = Topo()
    vm3 = "02:00:00:00:03:33"
    t.port("p3", "b2", mac=vm3, fixed_ips=("192.168.2.30",))
    t.port("p4", "b2")
    t.v.macs[("b2", vm3)] = "p4"
    r = simulate(t.v, ip_pkt(dst="192.168.2.30"), NOW)
    assert r.out_ports == ("p4",)
