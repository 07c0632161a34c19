"""The agent core's parts, each alone, on the memory store and a fake clock:
installed flows, flow state, the ARP hold, learning, protection, bindings."""

from __future__ import annotations

import pytest

from midoflow.agent.arphold import ARP_HOLD_MAX, ARP_HOLD_SECONDS, ArpHold
from midoflow.agent.bindings import Bindings
from midoflow.agent.cache import TopologyCache
from midoflow.agent.clock import FakeClock
from midoflow.agent.config import AgentConfig
from midoflow.agent.flowstate import STATE_FLUSH_ENTRIES, FlowState
from midoflow.agent.fragments import FragmentTable
from midoflow.agent.installed import InstalledFlows
from midoflow.agent.learning import LEARN_RETRY_SECONDS, Learning
from midoflow.agent.protection import PROTECTION_PUBLISH_SECONDS, Protection
from midoflow.errors import Unavailable
from midoflow.model import NatTarget
from midoflow.nat import statewire
from midoflow.nat.allocator import MemoryLeaser, NatAllocator
from midoflow.nat.bindings import SNAT, NatBinding
from midoflow.nat.conntrack import IDLE_SECONDS, TCP_RST, TCP_UNREPLIED_SECONDS, ConnKey
from midoflow.nat.flowstate import LocalFlowState
from midoflow.sim.result import Action, Result, ct_miss_tag
from midoflow.store import paths
from midoflow.store.base import Create
from midoflow.store.memory import MemoryBackend, MemoryStore

K = ConnKey("dev", 6, "10.0.0.1", 40000, "10.0.0.2", 80)
TARGETS = (NatTarget("203.0.113.1", "203.0.113.1", 1024, 65535),)


def stats() -> dict:
    return {"packet_in": 0, "simulated": 0, "dropped": 0, "malformed": 0, "invalidated": 0,
            "learned": 0, "generated": 0, "arp_held": 0, "arp_expired": 0}


def cfg(**kw) -> AgentConfig:
    return AgentConfig(host_id="h1", zookeeper="memory", ovsdb="unix:/x", tunnel_ip="10.0.0.1",
                       **kw)


# ---- installed flows --------------------------------------------------------------
def test_installed_flows_invalidate_by_tag_and_drop_flows_of_expired_state():
    gone: list[set[int]] = []
    st = stats()
    f = InstalledFlows(gone.append, st)
    a = f.add({"port:p1", "mac:b:m"}, "p1", uses=(K.reverse(),))
    b = f.add({"port:p2"}, "p2")
    assert f.in_use() == {K.reverse()} and f.count("p1") == 1
    assert f.invalidate_tags({"mac:b:m"}) == {a} and gone == [{a}] and st["invalidated"] == 1
    assert f.in_use() == set()  # a deleted flow keeps nothing alive
    c = f.add({"port:p2"}, "p2", uses=(K.reverse(),))
    assert f.drop_using({K.reverse()}) == {c} and gone[-1] == {c}
    f.replaced(("m",), b)
    d = f.add({"port:p2"}, "p2")
    f.replaced(("m",), d)  # same match: b was replaced in OVS silently
    assert b not in f.index.tags_of and d in f.index.tags_of


# ---- flow state ---------------------------------------------------------------------
def flow_state(clock, store=None):
    alloc = NatAllocator(MemoryLeaser().for_host("h1"))
    return FlowState(store or LocalFlowState(clock.wall), alloc, clock, lambda f, *a: f(*a),
                     stats())


def test_flow_state_commits_tracks_files_and_recovers():
    clock = FakeClock()
    fs = flow_state(clock)
    want = Result(action=Action.DROP, nat_wants=((TARGETS, 6),))
    assert fs.lease(want) and not fs.view().is_return_flow(K.reverse())
    port = fs.view().nat_propose(TARGETS, 6)
    b = NatBinding(SNAT, K, (K.src, K.sport), port)
    r = Result(action=Action.FORWARD, out_ports=("up",), conntrack=(K,), nat=(b,),
               nat_allocs=((*port, 6),))
    assert fs.commit_nat(r)
    assert not fs.commit_nat(r)  # the same port again: taken
    msg = fs.track(r, ("vm", "up"))
    assert statewire.decode_all(msg)[:2] == ([K.reverse()], [b])
    assert fs.view().is_return_flow(K.reverse()) and fs.view().nat_forward(SNAT, K) == b
    # one entry under each of 2 ports: the binding's, which says that its
    # connection is tracked too (one row, not two)
    assert fs.flush() == 2 and fs.unsaved_n == 0
    other = flow_state(clock, fs.store)
    assert other.recover("vm") == 2 and other.view().nat_reverse(SNAT, b.rev) == b


def test_flow_state_expires_idle_state_unless_a_flow_uses_it():
    clock = FakeClock()
    fs = flow_state(clock)
    fs.tables.track([K], clock.wall())
    b = NatBinding(SNAT, K, (K.src, K.sport), ("203.0.113.1", 2000))
    fs.tables.add_binding(b, clock.wall() + IDLE_SECONDS)
    clock.advance(IDLE_SECONDS + 1)
    assert fs.expire({K.reverse(), ("nat", b)}) == (set(), 0)  # kept by a flow
    clock.advance(TCP_UNREPLIED_SECONDS + 1)
    assert fs.expire(set()) == ({K.reverse()}, 1)
    assert len(fs.tables.nat) == 0


def test_flow_state_received_marks_decisions_made_without_it_stale():
    clock = FakeClock()
    fs = flow_state(clock)
    n, stale = fs.receive(statewire.encode([K.reverse()], 60))
    assert n == 1 and stale == {ct_miss_tag(K.reverse())}
    assert fs.receive(statewire.encode([K.reverse()], 60))[1] == set()  # known: nothing
    fs.receive(statewire.encode([], 60, closing=[(K, TCP_RST)]))
    clock.advance(11)
    assert not fs.view().is_return_flow(K.reverse())  # closed by the RST
    with pytest.raises(ValueError):
        fs.receive(b"not a message")


def test_flow_state_keeps_what_the_store_refused_and_flushes_when_full():
    class Down(LocalFlowState):
        down = True

        def save(self, ports, entries, ttl):
            if self.down:
                raise Unavailable("no quorum (test)")
            super().save(ports, entries, ttl)

    clock = FakeClock()
    store = Down(clock.wall)
    fs = flow_state(clock, store)
    r = Result(action=Action.FORWARD, conntrack=(K,))
    fs.track(r, ("p",))
    assert fs.flush() == 0 and fs.unsaved_n == 1 and fs.stats["state_save_failed"] == 1
    store.down = False
    assert fs.flush() == 1 and store.load("p")
    keys = [ConnKey("d", 6, "10.0.0.1", p, "10.0.0.2", 80) for p in range(STATE_FLUSH_ENTRIES)]
    fs.track(Result(action=Action.FORWARD, conntrack=tuple(keys)), ("p",))
    assert fs.unsaved_n == 0  # filed at once: the buffer was full


# ---- the ARP hold ----------------------------------------------------------------------
def test_arp_hold_replays_in_time_and_drops_what_waited_too_long():
    clock, st, replayed = FakeClock(), stats(), []
    hold = ArpHold(clock, lambda f, *a: f(*a), lambda o, fr: replayed.append((o, fr)), st)
    for i in range(ARP_HOLD_MAX + 2):
        hold.hold(("r", "10.0.0.9"), 5, bytes([i]))
    assert len(hold.held[("r", "10.0.0.9")]) == ARP_HOLD_MAX and st["arp_expired"] == 2
    assert hold.release(("r", "10.0.0.9")) == ARP_HOLD_MAX and replayed[0] == (5, bytes([2]))
    hold.hold(("r", "10.0.0.8"), 5, b"x")
    clock.advance(ARP_HOLD_SECONDS + 0.1)
    assert hold.release(("r", "10.0.0.8")) == 0 and st["arp_expired"] == 3
    assert hold.should_ask(("r", "ip")) and not hold.should_ask(("r", "ip"))
    clock.advance(1.5)
    assert hold.should_ask(("r", "ip"))


def test_a_wall_clock_step_moves_flow_state_expiry_but_no_local_deadline():
    """An NTP step of the wall clock one hour back: the ARP hold and the
    fragment table still end on time (monotonic), while flow-state expiry
    follows wall time (shared with the other hosts and the store)."""
    clock, st, replayed = FakeClock(), stats(), []
    hold = ArpHold(clock, lambda f, *a: f(*a), lambda o, fr: replayed.append((o, fr)), st)
    frags = FragmentTable(ttl=5, clock=clock)
    fs = flow_state(clock)
    hold.hold(("r", "10.0.0.9"), 5, b"x")
    frags.remember("p", ("a", "b", 17, 1), "decision")
    fs.tables.track([K], clock.wall())
    clock.step_wall(-3600)
    clock.advance(ARP_HOLD_SECONDS + 0.1)  # the hold's deadline passed: not stretched
    assert hold.release(("r", "10.0.0.9")) == 0 and st["arp_expired"] == 1
    clock.advance(5 - ARP_HOLD_SECONDS)  # past the fragment entry's ttl
    assert frags.lookup("p", ("a", "b", 17, 1)) is None
    clock.advance(TCP_UNREPLIED_SECONDS + 1)  # idle that long in monotonic time ...
    assert fs.expire(set()) == (set(), 0)  # ... but not in wall time: kept
    assert fs.view().is_return_flow(K.reverse())
    clock.step_wall(3600)
    assert fs.expire(set()) == ({K.reverse()}, 0)


# ---- learning --------------------------------------------------------------------------
@pytest.fixture
def learning():
    backend = MemoryBackend()
    api = MemoryStore(backend)
    api.commit([Create("bridges", {"id": "b", "port_ids": ["p1"]}),
                Create("ports", {"id": "p1", "device_id": "b", "tunnel_key": 1})])
    store = MemoryStore(backend)
    cache = TopologyCache(store, lambda tags: None)
    cache.start()
    clock = FakeClock()
    return Learning(store, cache, 2, clock, stats()), api, clock


def test_learning_claims_once_writes_the_entry_and_forgets_the_old_one(learning):
    lrn, api, clock = learning
    e = ("b", "02:00:00:00:00:01", "p1")
    api.put_state(paths.mac_entry("b", "02:00:00:00:00:01", "p0"), {})  # it moved
    assert lrn.claim([e]) == (e,) and lrn.claim([e]) == ()
    clock.advance(LEARN_RETRY_SECONDS + 0.1)
    assert lrn.claim([e]) == (e,)  # the claim timed out: written again
    lrn.learn_macs([e])
    assert api.list_state(paths.mac_table("b")) == ["02:00:00:00:00:01,p1"]
    assert lrn.cache.macs[("b", "02:00:00:00:00:01")] == "p1" and e in lrn.mine
    lrn.learn_arps([("r", "10.0.0.9", "02:00:00:00:00:09")])
    assert [n.split(",")[:2] for n in api.list_state(paths.arp_table("r"))] == [
        ["10.0.0.9", "02:00:00:00:00:09"]]


def test_the_mac_limit_counts_new_macs_only_and_would_hit_counts_nothing(learning):
    lrn, _, _ = learning
    macs = [("b", f"02:00:00:00:00:0{i}", "p1") for i in range(3)]
    assert not lrn.would_hit(macs[:2], "p1") and lrn.port_macs == {}
    assert not lrn.mac_limit_hit(macs[:2], "p1")
    assert not lrn.mac_limit_hit(macs[:2], "p1")  # known: free
    assert lrn.would_hit(macs[2:], "p1") and lrn.mac_limit_hit(macs[2:], "p1")
    assert len(lrn.port_macs["p1"]) == 2


# ---- protection ------------------------------------------------------------------------
def test_protection_counts_refusals_and_says_when_to_publish():
    clock, st = FakeClock(), stats()
    p = Protection(cfg(), st, clock)
    assert p.changed()  # the first report
    assert not p.changed()
    p.refuse("mac_limit", "p1")
    p.note_malformed("runt")
    assert not p.changed()  # too soon
    clock.advance(PROTECTION_PUBLISH_SECONDS)
    assert p.changed()
    rep = p.report()
    assert rep["mac_limit"] == {"p1": 1} and rep["malformed"] == {"runt": 1}
    assert st["mac_limit"] == 1 and st["malformed"] == 1


# ---- bindings --------------------------------------------------------------------------
def test_bindings_follow_interfaces_and_activate_in_the_store():
    backend = MemoryBackend()
    api = MemoryStore(backend)
    api.commit([Create("bridges", {"id": "b", "port_ids": ["p1", "p2"]}),
                Create("ports", {"id": "p1", "device_id": "b", "tunnel_key": 1}),
                Create("ports", {"id": "p2", "device_id": "b", "tunnel_key": 2,
                                 "host_id": "h1", "interface_name": "tap2"})])
    store = MemoryStore(backend)
    cache = TopologyCache(store, lambda tags: None)
    cache.start()
    b = Bindings(cfg(), store, cache)
    assert b.set_interfaces({"vxlan0": (1, None), "vm1": (5, "p1"), "tap2": (6, None)})
    change = b.recompute()
    assert change.added == {"p1": 5, "p2": 6} and b.recovering == {"p1", "p2"}
    assert b.port_of(6) == "p2" and b.tunnel_keys() == {"p1": 1, "p2": 2}
    b.mark_active("p1")
    assert api.get_state(paths.port_active("p1")) == {"host_id": "h1"}
    assert not b.set_interfaces({"vxlan0": (1, None), "tap2": (6, None)})  # tunnels same
    assert b.recompute().removed == {"p1": 5}
    b.deactivate("p1")
    assert api.get_state(paths.port_active("p1")) is None
