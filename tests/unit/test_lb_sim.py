"""Load balancing in the simulation (midoflow.sim.lb): the methods, weights,
eligibility, persistence, established connections, hairpin, replies, ARP
for VIPs, and the flows of routers without a balancer left as they were."""

from __future__ import annotations

import collections
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.model import (
    HEALTH_ERROR,
    HEALTH_ONLINE,
    HealthMonitor,
    LoadBalancer,
    Pool,
    PoolMember,
    Vip,
)
from midoflow.nat.allocator import MemoryLeaser, NatAllocator
from midoflow.nat.bindings import DNAT, SNAT
from midoflow.nat.tables import FlowTables
from midoflow.sim import lb
from midoflow.sim.packet import ARP_REQUEST, ETH_ARP, PROTO_UDP, Packet
from midoflow.sim.result import Action, lb_tag, router_tag
from midoflow.sim.simulator import simulate
from tests.unit.test_sim_router import NOW, R1A, R1B, VM1, VM2, Topo, ip_pkt

VIP = "192.168.2.100"
MEMBERS = {"m1": "192.168.2.21", "m2": "192.168.2.22", "m3": "192.168.2.23"}
MMAC = {"m1": "02:00:00:00:02:21", "m2": "02:00:00:00:02:22", "m3": "02:00:00:00:02:23"}
CLIENT = "192.168.1.10"


def lb_topo(method="ROUND_ROBIN", weights=(1, 1, 1), persistence=None, monitor=False):
    """Router r1 (Topo: 192.168.1.0/24 on r1a, 192.168.2.0/24 on r1b) with
    balancer lb1, VIP VIP:80/TCP -> pool pl1 of m1..m3 (port 8080) on b2."""
    t = Topo()
    for mid, ip in MEMBERS.items():
        t.v.arps[("r1", ip)] = (MMAC[mid], NOW - 10)
    t.v.lbs["lb1"] = LoadBalancer(id="lb1", router_id="r1")
    t.v.lb_pools["pl1"] = Pool(id="pl1", load_balancer_id="lb1", lb_method=method)
    t.v.lb_vips["v1"] = Vip(id="v1", load_balancer_id="lb1", address=VIP, protocol_port=80,
                            pool_id="pl1", session_persistence=persistence,
                            persistence_timeout=100)
    for (mid, ip), w in zip(MEMBERS.items(), weights, strict=True):
        t.v.members[mid] = PoolMember(id=mid, pool_id="pl1", address=ip, protocol_port=8080,
                                      weight=w)
    if monitor:
        t.v.monitors["hm1"] = HealthMonitor(id="hm1", pool_id="pl1")
    t.state = FlowTables(NatAllocator(MemoryLeaser().for_host("h1")))
    return t


def set_obj(table: dict, oid: str, **changes) -> None:
    old = table[oid]
    table[oid] = type(old)(**{**old.to_dict(), **changes})


def sim(t, p, now=NOW):
    return simulate(t.v, p, now, t.state.view(now))


def run(t, p, now=NOW):
    """What the agent does: simulate (again after leasing a block), then
    commit the bindings and the balancer's choices."""
    r = sim(t, p, now)
    if r.nat_wants and t.state.lease(r.nat_wants):
        r = sim(t, p, now)
    assert t.state.commit_nat(r.nat_allocs, r.nat, now)
    t.state.commit_lb(r.lb_picks, r.lb_sticky, now)
    return r


def to_vip(sport, src=CLIENT, proto=6, in_port="p1", eth_src=VM1, eth_dst=R1A):
    return ip_pkt(src=src, dst=VIP, sport=sport, dport=80, proto=proto, in_port=in_port,
                  eth_src=eth_src, eth_dst=eth_dst)


def member_of(r) -> str | None:
    """The member a forwarded packet went to."""
    rw = {w.field: w.value for w in r.rewrites}
    return next((m for m, ip in MEMBERS.items() if rw.get("ip_dst") == ip), None)


def test_round_robin_goes_round_in_id_order_and_ignores_weights():
    t = lb_topo(weights=(5, 1, 1))
    picks = []
    for sport in range(1000, 1006):
        r = run(t, to_vip(sport))
        assert r.action is Action.FORWARD and r.out_ports == ("p2",)
        rw = {w.field: w.value for w in r.rewrites}
        assert rw["tp_dst"] == 8080 and rw["eth_dst"] == MMAC[member_of(r)]
        picks.append(member_of(r))
    assert picks == ["m1", "m2", "m3", "m1", "m2", "m3"]
    assert lb_tag("r1") in r.tags and any(s.kind == "lb" for s in r.trace)


def test_weighted_round_robin_follows_1_3_9():
    t = lb_topo("WEIGHTED_ROUND_ROBIN", (1, 3, 9))
    hits = collections.Counter(member_of(run(t, to_vip(1000 + i))) for i in range(130))
    assert hits == {"m1": 10, "m2": 30, "m3": 90}
    # smooth: the heaviest is interleaved with the others, never 9 in a row
    seq = lb.wrr_sequence((1, 3, 9))
    assert max(len(list(g)) for _, g in itertools.groupby(seq)) <= 3


def test_least_connections_prefers_the_least_loaded_per_weight():
    t = lb_topo("LEAST_CONNECTIONS", (1, 1, 2))
    got = [member_of(run(t, to_vip(1000 + i))) for i in range(8)]
    hits = collections.Counter(got)
    assert hits == {"m1": 2, "m2": 2, "m3": 4}
    # closing m3's connections makes it the least loaded
    for b in list(t.state.nat_until):
        if b.xlated[0] == MEMBERS["m3"]:
            t.state.nat_tcp_flags(b, 0x04, True, NOW)
    assert member_of(run(t, to_vip(2000))) == "m3"


def test_weight_zero_admin_down_and_error_get_no_new_connections():
    t = lb_topo(monitor=True)
    set_obj(t.v.members, "m1", weight=0)
    set_obj(t.v.members, "m2", admin_state_up=False)
    t.v.health["m3"] = HEALTH_ONLINE
    assert {member_of(run(t, to_vip(1000 + i))) for i in range(6)} == {"m3"}
    t.v.health["m3"] = HEALTH_ERROR
    r = run(t, to_vip(3000))
    assert r.action is Action.DROP and "no eligible member" in r.trace[-1].decision
    assert lb_tag("r1") in r.tags and r.cacheable
    # no monitor (or one admin down): health is not looked at
    set_obj(t.v.monitors, "hm1", admin_state_up=False)
    assert member_of(run(t, to_vip(3001))) == "m3"


def test_source_ip_persistence_and_hrw_agree_across_independent_hosts():
    hosts = [lb_topo(persistence="SOURCE_IP"), lb_topo(persistence="SOURCE_IP")]
    for client in (f"10.9.0.{i}" for i in range(1, 40)):
        first = [member_of(run(h, to_vip(1000, src=client))) for h in hosts]
        assert first[0] == first[1]  # rendezvous hash: no talking needed
        again = {member_of(run(hosts[0], to_vip(1000 + i, src=client))) for i in range(1, 6)}
        assert again == {first[0]}
        r = run(hosts[0], to_vip(1100, src=client))
        assert r.lb_sticky == (("v1", client, first[0], 100),)


def test_sticky_member_disabled_moves_the_client_and_the_entry_expires():
    t = lb_topo(persistence="SOURCE_IP")
    m = member_of(run(t, to_vip(1000)))
    assert t.state.view(NOW).lb_sticky("v1", CLIENT) == m
    set_obj(t.v.members, m, admin_state_up=False)
    others = {member_of(run(t, to_vip(2000 + i))) for i in range(20)}
    assert len(others) == 1 and m not in others
    # the entry now names the new member, and expires after its timeout
    (new,) = others
    assert t.state.view(NOW).lb_sticky("v1", CLIENT) == new
    assert t.state.view(NOW + 101).lb_sticky("v1", CLIENT) is None
    assert t.state.lb.expire(NOW + 101) and not t.state.lb.sticky


def test_established_connection_keeps_a_disabled_member_but_not_a_deleted_one():
    t = lb_topo()
    r = run(t, to_vip(1000))
    m = member_of(r)
    set_obj(t.v.members, m, admin_state_up=False)
    again = run(t, to_vip(1000))
    assert member_of(again) == m and again.lb_picks == () and not again.nat
    assert ("nat", r.nat[0]) in again.ct_hits
    del t.v.members[m]
    gone = run(t, to_vip(1000))
    assert gone.action is Action.DROP and "was deleted" in gone.trace[-1].decision


def test_reply_from_member_gets_the_vip_back():
    t = lb_topo()
    r = run(t, to_vip(1000))
    m = member_of(r)
    reply = ip_pkt(src=MEMBERS[m], dst=CLIENT, sport=8080, dport=1000, in_port="p2",
                   eth_src=MMAC[m], eth_dst=R1B)
    back = run(t, reply)
    assert back.out_ports == ("p1",)
    rw = {w.field: w.value for w in back.rewrites}
    assert rw["ip_src"] == VIP and rw["tp_src"] == 80
    assert ("nat", r.nat[0]) in back.ct_hits


def test_hairpin_snats_the_client_and_restores_the_reply():
    t = lb_topo()
    t.v.arps[("r1", "192.168.2.30")] = (VM2, NOW - 10)
    client = "192.168.2.30"  # on the members' own subnet
    r = run(t, to_vip(1000, src=client, in_port="p2", eth_src=VM2, eth_dst=R1B))
    assert r.out_ports == ("p2",)
    kinds = {b.kind: b for b in r.nat}
    assert set(kinds) == {DNAT, SNAT}
    rw = {w.field: w.value for w in r.rewrites}
    m = member_of(r)
    assert rw["ip_src"] == VIP and rw["tp_src"] == kinds[SNAT].xlated[1]
    assert rw["ip_dst"] == MEMBERS[m] and rw["tp_dst"] == 8080
    # the member answers the VIP: first back to the client, then from the VIP
    reply = ip_pkt(src=MEMBERS[m], dst=VIP, sport=8080, dport=kinds[SNAT].xlated[1],
                   in_port="p2", eth_src=MMAC[m], eth_dst=R1B)
    back = run(t, reply)
    assert back.out_ports == ("p2",)
    rw = {w.field: w.value for w in back.rewrites}
    assert (rw["ip_src"], rw["tp_src"], rw["ip_dst"], rw["tp_dst"]) == (VIP, 80, client, 1000)
    # the connection's next packet keeps both bindings
    again = run(t, to_vip(1000, src=client, in_port="p2", eth_src=VM2, eth_dst=R1B))
    assert not again.nat and member_of(again) == m


def test_vip_pool_or_balancer_down_or_no_pool_drops():
    for table, oid, change in (("lb_vips", "v1", {"admin_state_up": False}),
                               ("lb_pools", "pl1", {"admin_state_up": False}),
                               ("lbs", "lb1", {"admin_state_up": False}),
                               ("lb_vips", "v1", {"pool_id": None})):
        t = lb_topo()
        set_obj(getattr(t.v, table), oid, **change)
        r = run(t, to_vip(1000))
        assert r.action is Action.DROP and not r.nat and r.trace[-1].kind == "lb"
        # decided by the VIP alone: one flow for every client
        assert "tp_src" not in r.match_fields


def test_other_ports_and_protocols_to_a_vip_are_dropped():
    t = lb_topo()
    assert run(t, ip_pkt(dst=VIP, dport=81)).action is Action.DROP
    assert run(t, to_vip(1000, proto=PROTO_UDP)).action is Action.DROP


def test_arp_for_a_vip_is_answered_by_the_port_of_its_network_only():
    t = lb_topo()

    def arp(in_port, eth_src, tpa, spa):
        return Packet(in_port=in_port, eth_src=eth_src, eth_dst="ff:ff:ff:ff:ff:ff",
                      eth_type=ETH_ARP, arp_op=ARP_REQUEST, arp_spa=spa, arp_tpa=tpa,
                      arp_sha=eth_src)

    r = sim(t, arp("p2", VM2, VIP, "192.168.2.20"))
    (gen,) = [g for g in r.generated if g.kind == "arp_reply"]
    assert gen.out_port == "r1b" and gen.get("eth_src") == R1B and gen.get("ip_src") == VIP
    r = sim(t, arp("p1", VM1, VIP, "192.168.1.10"))
    assert not [g for g in r.generated if g.kind == "arp_reply"]


def test_routers_without_a_balancer_make_the_same_flows():
    plain = Topo()
    with_lb = lb_topo()
    del with_lb.v.lbs["lb1"]
    for t in (plain, with_lb):
        r = simulate(t.v, ip_pkt(), NOW)
        assert r.out_ports == ("p2",) and lb_tag("r1") not in r.tags
    a = simulate(plain.v, ip_pkt(), NOW)
    b = simulate(with_lb.v, ip_pkt(), NOW)
    assert (a.match_fields, a.tags, a.rewrites) == (b.match_fields, b.tags, b.rewrites)
    # on a router with one, traffic not for a VIP nor from a member reads
    # only the source address more
    t = lb_topo()
    c = simulate(t.v, ip_pkt(), NOW)
    assert c.match_fields - a.match_fields == {"ip_src"} and router_tag("r1") in c.tags


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(0, 256), min_size=3, max_size=3),
       ups=st.lists(st.booleans(), min_size=3, max_size=3),
       errors=st.lists(st.booleans(), min_size=3, max_size=3),
       method=st.sampled_from(["ROUND_ROBIN", "WEIGHTED_ROUND_ROBIN", "LEAST_CONNECTIONS"]),
       persistence=st.sampled_from([None, "SOURCE_IP"]),
       clients=st.lists(st.integers(1, 250), min_size=1, max_size=8))
def test_a_pick_is_always_eligible_and_persistence_keeps_the_client(
        weights, ups, errors, method, persistence, clients):
    t = lb_topo(method, tuple(weights), persistence, monitor=True)
    for mid, up, err in zip(MEMBERS, ups, errors, strict=True):
        set_obj(t.v.members, mid, admin_state_up=up)
        t.v.health[mid] = HEALTH_ERROR if err else HEALTH_ONLINE
    ok = {m for m, w, up, err in zip(MEMBERS, weights, ups, errors, strict=True)
          if w > 0 and up and not err}
    first: dict[str, str] = {}
    for i, c in enumerate(clients):
        src = f"10.1.0.{c}"
        r = run(t, to_vip(1000 + i, src=src))
        if not ok:
            assert r.action is Action.DROP
            continue
        m = member_of(r)
        assert m in ok
        if persistence:
            assert first.setdefault(src, m) == m
