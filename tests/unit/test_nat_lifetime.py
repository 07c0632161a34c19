"""NAT bindings live as their connection does (closes included), the store's
copy of live flow state is filed again while it lives, and SNAT proposals
look only at blocks with a free port (issue 13, goal 2)."""

from __future__ import annotations

from midoflow.agent.clock import FakeClock
from midoflow.agent.flowstate import STATE_REFRESH_SECONDS, FlowState
from midoflow.model import NatTarget
from midoflow.nat import statewire
from midoflow.nat.allocator import BLOCK_SIZE, MemoryLeaser, NatAllocator
from midoflow.nat.bindings import SNAT, NatBinding
from midoflow.nat.conntrack import (
    CLOSING_SECONDS,
    IDLE_SECONDS,
    TCP_FIN,
    TCP_RST,
    UDP_ASSURED_SECONDS,
    UDP_UNREPLIED_SECONDS,
    ConnKey,
)
from midoflow.nat.flowstate import LocalFlowState
from midoflow.sim.packet import Packet
from midoflow.sim.result import Action, Result

PUBLIC = "203.0.113.1"
MAC = "02:00:00:00:00:01"
TARGETS = (NatTarget(addr_from=PUBLIC, addr_to=PUBLIC, port_from=1024, port_to=65535),)


def flow_state(clock, store=None) -> FlowState:
    alloc = NatAllocator(MemoryLeaser().for_host("h1"))
    return FlowState(store or LocalFlowState(clock.wall), alloc, clock, lambda f, *a: f(*a),
                     {})


def snat(fs: FlowState, proto: int, sport: int = 40000) -> tuple[NatBinding, Result]:
    """A new SNAT connection at router r, committed and tracked (filed under vm, up)."""
    k = ConnKey("r", proto, "10.0.0.1", sport, "8.8.8.8", 53 if proto == 17 else 80)
    if fs.view().nat_propose(TARGETS, proto) is None:
        assert fs.lease(Result(action=Action.DROP, nat_wants=((TARGETS, proto),)))
    port = fs.view().nat_propose(TARGETS, proto)
    b = NatBinding(SNAT, k, (k.src, k.sport), port)
    r = Result(action=Action.FORWARD, out_ports=("up",), nat=(b,), nat_allocs=((*port, proto),))
    assert fs.commit_nat(r)
    fs.track(r, ("vm", "up"))
    return b, r


def reply_of(b: NatBinding, flags: int | None = None) -> Packet:
    r = b.rev
    return Packet(in_port="up", eth_src=MAC, eth_dst=MAC, eth_type=0x800,
                  ip_src=r.src, ip_dst=r.dst, ip_proto=r.proto,
                  tp_src=r.sport, tp_dst=r.dport, tcp_flags=flags)


def forward_of(b: NatBinding, flags: int | None = None) -> Packet:
    f = b.fwd
    return Packet(in_port="vm", eth_src=MAC, eth_dst=MAC, eth_type=0x800,
                  ip_src=f.src, ip_dst=f.dst, ip_proto=f.proto,
                  tp_src=f.sport, tp_dst=f.dport, tcp_flags=flags)


def hit(b: NatBinding) -> Result:
    return Result(action=Action.FORWARD, ct_hits=(("nat", b),))


def test_an_unanswered_udp_binding_goes_with_its_connection_and_frees_its_port():
    clock = FakeClock()
    fs = flow_state(clock)
    b, _ = snat(fs, 17)
    clock.advance(UDP_UNREPLIED_SECONDS - 1)
    assert fs.expire(set())[1] == 0
    clock.advance(2)
    assert fs.expire(set())[1] == 1
    assert fs.tables.allocator.leased == {}  # the port, and its block, given back


def test_an_answered_binding_gets_the_longer_timeout_a_forward_packet_does_not():
    clock = FakeClock()
    fs = flow_state(clock)
    b, _ = snat(fs, 17)
    fs.replies(hit(b), forward_of(b))  # the connection's own packet again: no answer
    assert fs.tables.nat_timeout(b) == UDP_UNREPLIED_SECONDS
    fs.replies(hit(b), reply_of(b))
    assert fs.tables.nat_timeout(b) == UDP_ASSURED_SECONDS
    clock.advance(UDP_ASSURED_SECONDS - 1)
    assert fs.expire(set())[1] == 0 and fs.view().nat_reverse(SNAT, b.rev) == b


def test_a_reset_closes_the_binding_and_its_flows_go_although_in_use():
    clock = FakeClock()
    fs = flow_state(clock)
    b, _ = snat(fs, 6)
    fs.replies(hit(b), reply_of(b))
    msg = fs.closing(hit(b), TCP_RST, reply_of(b, TCP_RST))
    assert msg is not None and statewire.decode_full(msg)[2] == [(b.rev, TCP_RST)]
    clock.advance(CLOSING_SECONDS + 1)
    gone, n = fs.expire({("nat", b)})  # an installed flow still uses it
    assert n == 1 and ("nat", b) in gone  # so that flow is removed too
    assert fs.tables.allocator.leased == {}


def test_fins_from_both_sides_close_the_binding_one_does_not():
    clock = FakeClock()
    fs = flow_state(clock)
    b, _ = snat(fs, 6)
    fs.closing(hit(b), TCP_FIN, forward_of(b, TCP_FIN))
    clock.advance(CLOSING_SECONDS + 1)
    assert fs.expire({("nat", b)})[1] == 0  # half closed: lives on
    fs.closing(hit(b), TCP_FIN, reply_of(b, TCP_FIN))
    clock.advance(CLOSING_SECONDS + 1)
    assert fs.expire({("nat", b)})[1] == 1


def test_a_close_pushed_by_the_other_host_closes_its_binding_there():
    clock = FakeClock()
    here, peer = flow_state(clock), flow_state(clock)
    b, r = snat(here, 6)
    peer.receive(here.track(r, ("vm", "up")))
    assert peer.view().nat_reverse(SNAT, b.rev) == b
    peer.receive(here.closing(hit(b), TCP_RST, forward_of(b, TCP_RST)))
    clock.advance(CLOSING_SECONDS + 1)
    assert peer.expire({("nat", b)})[1] == 1


def test_the_stored_copy_is_filed_again_while_the_connection_lives():
    clock = FakeClock()
    store = LocalFlowState(clock.wall)
    fs = flow_state(clock, store)
    b, _ = snat(fs, 6)
    fs.flush()
    for _ in range(int(3 * IDLE_SECONDS / STATE_REFRESH_SECONDS)):  # kept by its flow
        clock.advance(STATE_REFRESH_SECONDS)
        fs.expire({("nat", b)})
        fs.flush()
    assert [e.key for e in store.load("up")] == [b.encode()]  # older than the store's TTL
    assert flow_state(clock, store).recover("vm") == 1
    clock.advance(10 * IDLE_SECONDS)  # its flow gone: the binding idles out, so does its copy
    fs.expire(set())
    fs.flush()
    clock.advance(IDLE_SECONDS + 1)
    assert store.load("up") == [] and fs.filed == {}


def test_proposals_skip_full_blocks_and_see_a_freed_port_again():
    alloc = NatAllocator(MemoryLeaser().for_host("h1"))
    taken = []
    for _ in range(3 * BLOCK_SIZE):
        got = alloc.propose(TARGETS, 6)
        if got is None:
            assert alloc.lease(TARGETS, 6)
            got = alloc.propose(TARGETS, 6)
        assert alloc.take(got[0], got[1], 6)
        taken.append(got)
    assert len(set(taken)) == 3 * BLOCK_SIZE and len(alloc.leased) == 3
    assert alloc.propose(TARGETS, 6) is None  # every leased block is full
    ip, port = taken[BLOCK_SIZE + 5]
    alloc.free(ip, port, 6)
    assert alloc.propose(TARGETS, 6) == (ip, port)
    assert alloc.propose(TARGETS, 6, taken=[(ip, port, 6)]) is None


def test_a_connection_tracked_where_it_is_translated_is_one_row_recovered_whole():
    clock = FakeClock()
    store = LocalFlowState(clock.wall)
    fs = flow_state(clock, store)
    k = ConnKey("r", 6, "10.0.0.1", 40000, "8.8.8.8", 80)
    assert fs.lease(Result(action=Action.DROP, nat_wants=((TARGETS, 6),)))
    port = fs.view().nat_propose(TARGETS, 6)
    b = NatBinding(SNAT, k, (k.src, k.sport), port)
    other = ConnKey("b", 6, "10.0.0.1", 40000, "8.8.8.8", 80)  # tracked at another device
    r = Result(action=Action.FORWARD, out_ports=("up",), conntrack=(k, other), nat=(b,),
               nat_allocs=((*port, 6),))
    assert fs.commit_nat(r)
    fs.track(r, ("vm",))
    assert fs.flush() == 2  # the binding's row (tracked too) and the other device's
    again = flow_state(clock, store)
    assert again.recover("vm") == 3
    view = again.view()
    assert view.is_return_flow(k.reverse()) and view.is_return_flow(other.reverse())
    assert view.nat_reverse(SNAT, b.rev) == b
