"""Load balancing in the agent: the cache follows the five kinds and the
members' health (each change invalidates the router's balanced flows), a
committed pick advances its pool's counter, and a sticky entry travels with
the connection's flow state, is filed, recovered and expires."""

from __future__ import annotations

from midoflow.agent.cache import TopologyCache
from midoflow.agent.core import Tunnel
from midoflow.model import HEALTH_ERROR
from midoflow.nat import statewire
from midoflow.nat.flowstate import LocalFlowState
from midoflow.nat.lbstate import STICKY
from midoflow.sim.result import lb_tag, router_tag
from midoflow.store import paths
from midoflow.store.base import Create, Delete, Update
from midoflow.store.memory import MemoryStore
from tests.unit import worlds
from tests.unit.worlds import R1, TUNNELS, VM1, VM2

VIP = "192.168.2.100"
M1, M2 = "192.168.2.20", "192.168.2.21"


def lb_objects(persistence=None) -> list[Create]:
    return [
        Create("load_balancers", {"id": "lb", "router_id": "r"}),
        Create("pools", {"id": "pl", "load_balancer_id": "lb"}),
        Create("vips", {"id": "v", "load_balancer_id": "lb", "address": VIP,
                        "protocol_port": 80, "pool_id": "pl",
                        "session_persistence": persistence, "persistence_timeout": 100}),
        Create("pool_members", {"id": "m1", "pool_id": "pl", "address": M1,
                                "protocol_port": 8080}),
        Create("pool_members", {"id": "m2", "pool_id": "pl", "address": M2,
                                "protocol_port": 8080}),
    ]


def world(persistence=None):
    """worlds.two_subnets with a balancer on r: the client p1 on h1, the
    members' subnet's p2 on h2; one flow-state store. (api, agents, store)"""
    api = worlds.two_hosts(*worlds.two_subnets(), *lb_objects(persistence))
    worlds.learn_arp(api, "r", {M1: VM2, M2: VM2})
    store = LocalFlowState()
    agents = {h: worlds.agent(api, h, flow_state=store) for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "vm1": (5, "p1")},
                         "h2": {**TUNNELS, "vm2": (5, "p2")}})
    return api, agents, store


def to_vip(sport: int) -> dict:
    return worlds.tcp("192.168.1.10", VIP, sport, 80, VM1, R1)


def dst(d) -> str:
    return {w.field: w.value for w in d.rewrites}["ip_dst"]


def test_the_cache_emits_the_router_lb_tag_on_every_change():
    api = worlds.two_hosts(*worlds.two_subnets())
    seen: list[set[str]] = []
    cache = TopologyCache(MemoryStore(api.backend), seen.append)
    cache.start()
    assert cache.load_balancers("r") == ()

    def changed(*ops) -> set[str]:
        seen.clear()
        api.commit(list(ops))
        return set().union(*seen) if seen else set()

    assert {lb_tag("r"), router_tag("r")} <= changed(lb_objects()[0])
    assert lb_tag("r") in changed(*lb_objects()[1:])
    assert [v.address for v in cache.vips("lb")] == [VIP]
    assert [m.id for m in cache.pool_members("pl")] == ["m1", "m2"]
    assert lb_tag("r") in changed(Update("pool_members", {
        "id": "m1", "pool_id": "pl", "address": M1, "protocol_port": 8080, "weight": 0}))
    assert cache.pool_members("pl")[0].weight == 0
    assert lb_tag("r") in changed(Create("health_monitors", {"id": "hm", "pool_id": "pl"}))
    assert cache.health_monitor("pl").id == "hm"
    assert lb_tag("r") in changed(Update("vips", {
        "id": "v", "load_balancer_id": "lb", "address": VIP, "protocol_port": 80,
        "admin_state_up": False}))
    assert lb_tag("r") in changed(Update("pools", {"id": "pl", "load_balancer_id": "lb",
                                                   "admin_state_up": False}))
    seen.clear()
    api.put_state(paths.member_health("m2"), {"status": HEALTH_ERROR}, ephemeral=False)
    assert seen and lb_tag("r") in set().union(*seen)
    assert cache.member_health("m2") == HEALTH_ERROR
    seen.clear()
    api.delete_state(paths.member_health("m2"))
    assert lb_tag("r") in set().union(*seen) and cache.member_health("m2") is None
    assert lb_tag("r") in changed(Delete("pool_members", "m2"))
    assert [m.id for m in cache.pool_members("pl")] == ["m1"]
    assert {lb_tag("r"), router_tag("r")} <= changed(
        Delete("health_monitors", "hm"), Delete("pool_members", "m1"), Delete("vips", "v"),
        Delete("pools", "pl"), Delete("load_balancers", "lb"))
    assert cache.load_balancers("r") == ()


def test_committed_picks_advance_the_pool_counter_and_go_round():
    _, agents, _ = world()
    h1 = agents["h1"]
    got = []
    for sport in range(40000, 40004):
        d = h1.handle_miss(5, to_vip(sport))
        assert d.actions == [Tunnel(12, "10.0.0.2", 1)]  # to the members' host
        (push,) = d.pushes
        _, nat, _ = statewire.decode_all(push.frame)
        assert [(b.kind, b.xlated[0]) for b in nat] == [("dnat", dst(d))]
        got.append(dst(d))
    assert got == [M1, M2, M1, M2]
    assert h1.state.tables.lb.counter("pl") == 4
    # a dry decision (a restarted agent judging OVS's flows) commits nothing
    h1.dry_decision(5, to_vip(40010))
    assert h1.state.tables.lb.counter("pl") == 4


def test_health_change_invalidates_the_balanced_flows():
    api = worlds.two_hosts(*worlds.two_subnets(), *lb_objects(),
                           Create("health_monitors", {"id": "hm", "pool_id": "pl"}))
    worlds.learn_arp(api, "r", {M1: VM2, M2: VM2})
    gone: set[int] = set()
    h1 = worlds.agent(api, "h1", on_invalidate=gone.update)
    h2 = worlds.agent(api, "h2")
    worlds.bind({"h1": h1, "h2": h2}, {"h1": {**TUNNELS, "vm1": (5, "p1")},
                                       "h2": {**TUNNELS, "vm2": (5, "p2")}})
    d = h1.handle_miss(5, to_vip(40000))
    assert d.cookie is not None and d.cookie not in gone
    api.put_state(paths.member_health("m2"), {"status": HEALTH_ERROR}, ephemeral=False)
    assert d.cookie in gone
    assert {dst(h1.handle_miss(5, to_vip(s))) for s in range(40001, 40005)} == {M1}


def test_a_sticky_entry_is_pushed_filed_recovered_and_expires():
    _, agents, store = world("SOURCE_IP")
    h1, h2 = agents["h1"], agents["h2"]
    d = h1.handle_miss(5, to_vip(40000))
    member = dst(d)
    stuck = h1.state.tables.lb.sticky[("v", "192.168.1.10")]
    assert {M1: "m1", M2: "m2"}[member] == stuck.member_id
    assert all(dst(h1.handle_miss(5, to_vip(s))) == member for s in range(40001, 40005))
    # pushed with the connection: the members' host knows it
    (push,) = d.pushes
    assert h2.receive_state(push.frame) >= 2
    assert h2.state.view().lb_sticky("v", "192.168.1.10") == stuck.member_id
    # filed in the flow-state store: another agent of h1 recovers it
    h1.flush_state()
    assert any(e.kind == STICKY for e in store.load("p1"))
    api2 = worlds.two_hosts()
    again = worlds.agent(api2, "h1", flow_state=store)
    assert again.recover_state("p1") >= 1
    assert again.state.view().lb_sticky("v", "192.168.1.10") == stuck.member_id
    # and it expires after the VIP's persistence timeout
    h2.clock.advance(101)
    h2.expire_state()
    assert h2.state.view().lb_sticky("v", "192.168.1.10") is None
    assert not h2.state.tables.lb.sticky


# ---- closing: VIP connections follow conntrack's lifetime --------------------------
CLIENT, SYN, SYN_ACK, FIN_ACK = "192.168.1.10", 0x02, 0x12, 0x11


def seg(src, dst, sport, dport, smac, dmac, flags) -> dict:
    return {**worlds.tcp(src, dst, sport, dport, smac, dmac), "tcp_flags": flags}


def deliver(d, to) -> None:
    for p in d.pushes:
        to.receive_state(p.frame)


def closed_world():
    """world() whose member host knows the client's MAC, flows deleted
    recorded per host: (agents, gone cookies by host)."""
    api = worlds.two_hosts(*worlds.two_subnets(), *lb_objects())
    worlds.learn_arp(api, "r", {M1: VM2, M2: VM2, CLIENT: VM1, "192.168.2.30": VM2})
    gone = {h: set() for h in worlds.HOSTS}
    agents = {h: worlds.agent(api, h, on_invalidate=gone[h].update) for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "vm1": (5, "p1")},
                         "h2": {**TUNNELS, "vm2": (5, "p2")}})
    return agents, gone


def src(d) -> str | None:
    return {w.field: w.value for w in d.rewrites}.get("ip_src")


def test_a_closed_vip_connection_never_captures_a_new_one_from_the_same_port():
    (agents, gone) = closed_world()
    h1, h2 = agents["h1"], agents["h2"]
    d = h1.handle_miss(5, seg(CLIENT, VIP, 40000, 80, VM1, R1, SYN))
    deliver(d, h2)
    m = dst(d)
    reply = h2.handle_miss(5, seg(m, CLIENT, 8080, 40000, VM2, worlds.R2, SYN_ACK))
    assert src(reply) == VIP and reply.cookie is not None
    (b,) = h2.state.tables.nat_replied  # the reply marked it answered
    # the client closes, then the member: each host sees its own FIN, pushes it
    deliver(h1.handle_miss(5, seg(CLIENT, VIP, 40000, 80, VM1, R1, FIN_ACK), copy=True), h2)
    assert reply.cookie not in gone["h2"]
    deliver(h2.handle_miss(5, seg(m, CLIENT, 8080, 40000, VM2, worlds.R2, FIN_ACK),
                           copy=True), h1)
    assert b in h1.state.tables.nat_closing and b in h2.state.tables.nat_closing
    # closed: its flows go at once (the next packets of the tuple reach the agent)
    assert reply.cookie in gone["h2"] and d.cookie in gone["h1"]
    # its own last packets are still translated, one by one (no flow)
    again = h2.handle_miss(5, seg(m, CLIENT, 8080, 40000, VM2, worlds.R2, FIN_ACK))
    assert src(again) == VIP and not again.install
    # the same client port straight to the member: its answer is not the VIP's
    new = h2.handle_miss(5, seg(m, CLIENT, 8080, 40000, VM2, worlds.R2, SYN_ACK))
    assert new.actions and src(new) is None
    assert h2.state.tables.nat.reverse("dnat", b.rev) is None
    ack = h2.handle_miss(5, seg(m, CLIENT, 8080, 40000, VM2, worlds.R2, 0x10))
    assert ack.actions and src(ack) is None


def test_a_new_syn_on_a_closed_vip_tuple_is_a_new_connection():
    (agents, _) = closed_world()
    h1 = agents["h1"]
    first = dst(h1.handle_miss(5, seg(CLIENT, VIP, 40000, 80, VM1, R1, SYN)))
    assert h1.handle_miss(5, seg(CLIENT, VIP, 40000, 80, VM1, R1, 0x14), copy=True)  # RST
    d = h1.handle_miss(5, seg(CLIENT, VIP, 40000, 80, VM1, R1, SYN))
    assert dst(d) != first  # round robin moved on: a new pick, not the closed binding
    (b,) = [b for b in h1.state.tables.nat.by_fwd.values()]
    assert b.xlated[0] == dst(d) and b not in h1.state.tables.nat_closing
    assert h1.state.view().lb_active(dst(d), 8080, 6) == 1


def test_a_hairpin_connection_is_answered_and_closes():
    (agents, gone) = closed_world()
    h2 = agents["h2"]
    cm = "192.168.2.30"
    d = h2.handle_miss(5, seg(cm, VIP, 40000, 80, VM2, worlds.R2, SYN))
    m = dst(d)
    assert src(d) == VIP  # SNATed to the VIP: the member answers the router
    t = h2.state.tables
    (dnat,) = [b for b in t.nat.by_fwd.values() if b.kind == "dnat"]
    (snat,) = [b for b in t.nat.by_fwd.values() if b.kind == "snat"]
    assert t.lb.counter("pl") == 1 and h2.state.view().lb_active(m, 8080, 6) == 1
    sport = snat.xlated[1]
    reply = h2.handle_miss(5, seg(m, VIP, 8080, sport, VM2, worlds.R2, SYN_ACK))
    assert (src(reply), dst(reply)) == (VIP, cm)
    assert {dnat, snat} <= t.nat_replied  # both answered: the long timeout
    h2.handle_miss(5, seg(cm, VIP, 40000, 80, VM2, worlds.R2, FIN_ACK), copy=True)
    h2.handle_miss(5, seg(m, VIP, 8080, sport, VM2, worlds.R2, FIN_ACK), copy=True)
    assert {dnat, snat} <= t.nat_closing
    assert h2.state.view().lb_active(m, 8080, 6) == 0  # least connections counts it gone
    assert {d.cookie, reply.cookie} <= gone["h2"]
