"""Packets of an ofport not bound yet (issue 13: a new VM's first ARP came
before its binding and was lost, reached after Linux's 1 s ARP retry): held a
moment, bounded per ofport and in total, replayed once the ofport is bound,
dropped and counted when it never is; a tunnel port's are never held."""

from __future__ import annotations

from midoflow.agent.clock import FakeClock
from midoflow.agent.unbound import UnboundHold
from midoflow.apps import frames
from tests.unit import worlds
from tests.unit.test_agent_routing import frame_of, ip_fields
from tests.unit.worlds import TUNNELS


def hold_of(**kw):
    clock, replayed, stats = FakeClock(), [], {}
    h = UnboundHold(clock, lambda f, *a: f(*a), lambda o, fr: replayed.append((o, fr)),
                    stats, **kw)
    return h, clock, replayed, stats


def test_held_packets_are_replayed_in_order_when_the_port_is_bound():
    h, clock, replayed, stats = hold_of()
    assert h.hold(7, b"arp1") and h.hold(7, b"arp2") and h.hold(8, b"other")
    clock.advance(0.5)
    assert h.release(7) == 2 and replayed == [(7, b"arp1"), (7, b"arp2")]
    assert h.release(7) == 0  # nothing twice
    assert stats["unbound_replayed"] == 2 and stats["unbound_dropped"] == 0
    assert h.held == {8: [(clock.mono() - 0.5 + 1.0, b"other")]}


def test_a_port_never_bound_has_its_packets_dropped_and_counted_at_expiry():
    h, clock, replayed, stats = hold_of()
    h.hold(7, b"a")
    clock.advance(0.6)
    h.hold(7, b"b")
    clock.advance(0.5)  # "a" waited 1.1 s, "b" 0.5 s
    assert h.expire() == 1 and stats["unbound_dropped"] == 1
    clock.advance(0.6)
    assert h.release(7) == 0 and replayed == [] and stats["unbound_dropped"] == 2
    assert h.held == {}


def test_each_port_holds_its_first_few_packets_only():
    h, _clock, replayed, stats = hold_of(per_port=3)
    assert [h.hold(7, bytes([i])) for i in range(5)] == [True, True, True, False, False]
    assert stats["unbound_dropped"] == 2 and stats["unbound_held"] == 3
    h.release(7)
    assert [fr for _o, fr in replayed] == [b"\x00", b"\x01", b"\x02"]


def test_a_flooding_port_cannot_take_the_slots_of_a_new_one():
    h, _clock, _replayed, stats = hold_of(per_port=4, total=8)
    for _ in range(4):
        h.hold(1, b"flood")
        h.hold(2, b"flood")
    assert h.count() == 8
    assert h.hold(9, b"new vm's arp")  # one of the biggest gives way
    assert h.count() == 8 and len(h.held[9]) == 1 and stats["unbound_dropped"] == 1
    assert not h.hold(1, b"flood")  # a full port gets nothing more
    assert h.count() <= 8


def routed_world():
    api = worlds.two_hosts(*worlds.two_subnets())
    replayed: list = []
    a = worlds.agent(api, "h1", frames=worlds.OsKenFrames(),
                     replay=lambda ofport, frame: replayed.append((ofport, frame)),
                     clock=FakeClock(wall=worlds.NOW))
    return a, replayed


def test_the_core_holds_an_unbound_ports_packet_and_simulates_it_once_bound():
    a, replayed = routed_world()
    a.set_interfaces(dict(TUNNELS))
    f = ip_fields()
    frame = frame_of(f)
    assert a.handle_miss(5, f, frame) is None  # ofport 5 is nobody's yet
    assert replayed == [] and a.stats["unbound_held"] == 1
    a.set_interfaces({**TUNNELS, "vm1": (5, "p1")})  # the VM's binding comes
    assert a.bindings == {"p1": 5}
    assert replayed == [(5, frame)] and a.stats["unbound_replayed"] == 1
    d = a.handle_miss(5, frames.parse(frame), frame)  # the replay: simulated now
    assert d is not None and d.packet.in_port == "p1"
    assert a.stats["unbound_dropped"] == 0


def test_the_core_never_holds_what_a_tunnel_port_brings():
    a, replayed = routed_world()
    a.set_interfaces(dict(TUNNELS))
    f = ip_fields()
    vxlan = TUNNELS["vxlan0"][0]
    assert a.handle_miss(vxlan, f, frame_of(f)) is None
    assert a.unbound.held == {} and a.stats["unbound_dropped"] == 1
    a.set_interfaces({**TUNNELS, "vm1": (5, "p1")})
    assert replayed == []
