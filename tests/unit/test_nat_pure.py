"""Conntrack keys and table, and the distributed NAT allocator: unit and
property tests (hypothesis), no switch, no store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.model import NatTarget
from midoflow.nat.allocator import BLOCK_SIZE, MemoryLeaser, NatAllocator, NatExhausted
from midoflow.nat.conntrack import TCP_FIN, TCP_RST, ConnKey, ConnTrackTable
from midoflow.sim.packet import Packet

ips = st.ip_addresses(v=4).map(str)
ports = st.integers(0, 65535)
keys = st.builds(ConnKey, st.sampled_from(["dev1", "dev2"]), st.sampled_from([6, 17, 1]),
                 ips, ports, ips, ports)


@given(keys)
def test_reverse_is_an_involution_and_encoding_round_trips(k):
    assert k.reverse().reverse() == k
    assert ConnKey.decode(k.encode()) == k


def test_key_of_packets():
    p = Packet("p", "02:00:00:00:00:01", "02:00:00:00:00:02", ip_src="10.0.0.1",
               ip_dst="10.0.0.2", ip_proto=6, tp_src=1234, tp_dst=80)
    assert ConnKey.of("d", p) == ConnKey("d", 6, "10.0.0.1", 1234, "10.0.0.2", 80)
    icmp = Packet("p", "a", "b", ip_src="10.0.0.1", ip_dst="10.0.0.2", ip_proto=1, tp_src=8)
    assert ConnKey.of("d", icmp) == ConnKey("d", 1, "10.0.0.1", 0, "10.0.0.2", 0)
    assert ConnKey.of("d", Packet("p", "a", "b", eth_type=0x806)) is None
    with pytest.raises(ValueError):
        ConnKey.decode("nope")


@given(keys, st.floats(0, 1e6))
def test_the_reply_is_a_return_flow_and_the_forward_is_not(fwd, now):
    t = ConnTrackTable()
    ret = t.track(fwd, now)
    assert ret == fwd.reverse()
    assert t.is_return(fwd.reverse(), now + 1)
    if fwd.reverse() != fwd:
        assert not t.is_return(fwd, now + 1)


def test_idle_expiry_and_refresh():
    t = ConnTrackTable(idle=60)
    k = ConnKey("d", 17, "10.0.0.1", 5000, "10.0.0.2", 53)
    ret = t.track(k, 0)
    assert t.is_return(ret, 59)
    t.refresh(ret, 50)
    assert t.is_return(ret, 100)
    assert t.expire(111) == [ret] and len(t) == 0


def test_tcp_rst_and_fin_close_connections():
    t = ConnTrackTable(idle=60, closing=10)
    k = ConnKey("d", 6, "10.0.0.1", 5000, "10.0.0.2", 80)
    ret = t.track(k, 0)
    t.tcp_flags(k, TCP_FIN, 1)  # one side finished: still open
    assert t.is_return(ret, 30)
    t.tcp_flags(ret, TCP_FIN, 2)  # both: closing
    assert not t.is_return(ret, 13)
    k2 = ConnKey("d", 6, "10.0.0.1", 5001, "10.0.0.2", 80)
    ret2 = t.track(k2, 0)
    t.tcp_flags(ret2, TCP_RST, 5)
    assert t.is_return(ret2, 14) and not t.is_return(ret2, 16)
    assert t.track(k2, 20) == ret2 and t.is_return(ret2, 40)  # a new connection, same tuple


def T(a, b=None, lo=0, hi=0):
    return NatTarget(addr_from=a, addr_to=b or a, port_from=lo, port_to=hi)


def test_allocates_from_leased_blocks_and_releases_them():
    shared = MemoryLeaser()
    a = NatAllocator(shared.for_host("h1"))
    got = [a.allocate([T("203.0.113.1", lo=1024, hi=2047)], 6) for _ in range(65)]
    assert len(set(got)) == 65 and all(1024 <= p <= 2047 for _, p in got)
    assert len(shared.owner) == 2  # 65 ports: two blocks of 64
    for ip, p in got:
        a.free(ip, p, 6)
    assert shared.owner == {} and a.in_use() == set()


def test_exhaustion_is_an_error_not_a_crash():
    a = NatAllocator(MemoryLeaser().for_host("h1"))
    target = [T("203.0.113.1", lo=5000, hi=5009)]
    for _ in range(10):
        a.allocate(target, 17)
    with pytest.raises(NatExhausted):
        a.allocate(target, 17)
    assert a.allocate(target, 6)[1] == 5000  # another protocol: its own ports


def test_hosts_never_share_a_block():
    shared = MemoryLeaser()
    hosts = [NatAllocator(shared.for_host(h), salt=h) for h in ("h1", "h2", "h3")]
    target = [T("203.0.113.1", lo=1024, hi=1024 + 4 * BLOCK_SIZE - 1)]
    got = [h.allocate(target, 6) for _ in range(BLOCK_SIZE) for h in hosts]
    assert len(set(got)) == len(got)
    with pytest.raises(NatExhausted):  # 4 blocks, three hosts each hold one and want more
        for _ in range(2 * BLOCK_SIZE):
            hosts[0].allocate(target, 6)


ops = st.lists(st.tuples(st.sampled_from(["alloc", "free"]), st.integers(0, 2),
                         st.sampled_from([6, 17]), st.integers(0, 10_000)), max_size=300)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_no_two_live_connections_share_an_address_and_port(steps):
    shared = MemoryLeaser()
    hosts = [NatAllocator(shared.for_host(h), salt=str(h)) for h in range(3)]
    target = [T("203.0.113.1", "203.0.113.2", lo=2000, hi=2000 + 3 * BLOCK_SIZE)]
    live: dict[tuple[str, int, int], int] = {}
    for op, h, proto, pick in steps:
        if op == "alloc":
            try:
                ip, port = hosts[h].allocate(target, proto)
            except NatExhausted:
                continue
            assert (ip, port, proto) not in live, "two live connections got the same binding"
            assert 2000 <= port <= 2000 + 3 * BLOCK_SIZE
            live[(ip, port, proto)] = h
        elif live:
            mine = sorted(k for k, owner in live.items() if owner == h)
            if mine:
                ip, port, pr = mine[pick % len(mine)]
                hosts[h].free(ip, port, pr)
                del live[(ip, port, pr)]
    # every lease belongs to a host that still uses it
    for (ip, proto, block), owner in shared.owner.items():
        assert hosts[owner].leased.get((ip, proto, block)), "a lease outlived its ports"


def test_a_proposal_is_pure_and_skips_what_this_walk_already_proposed():
    a = NatAllocator(MemoryLeaser().for_host("h1"))
    t = [NatTarget("203.0.113.1", "203.0.113.1", 1000, 1001)]
    assert a.propose(t, 6) is None and a.leased == {}  # no block: nothing leased
    assert a.lease(t, 6) and not a.lease(t, 6)  # one block covers the range
    first = a.propose(t, 6)
    assert a.propose(t, 6) == first and a.in_use() == set()  # proposing takes nothing
    second = a.propose(t, 6, taken=[(*first, 6)])
    assert second not in (None, first) and a.propose(t, 6, taken=[(*first, 6),
                                                                  (*second, 6)]) is None
    assert a.take(*first, 6) and not a.take(*first, 6)  # taken meanwhile
    assert not a.take("203.0.113.1", 5000, 6)  # not a block of ours
    assert a.propose(t, 17) is None  # leases are per protocol
