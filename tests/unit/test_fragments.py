"""The first-fragment decision table: lookup, expiry, bounds, per-port isolation."""

from __future__ import annotations

import pytest

from midoflow.agent.clock import FakeClock
from midoflow.agent.fragments import FragmentTable


def key(ident: int, src: str = "10.0.0.1") -> tuple[str, str, int, int]:
    return (src, "10.0.0.2", 17, ident)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_later_fragments_find_their_first_fragments_decision(clock):
    t = FragmentTable(clock=clock)
    t.remember("p1", key(7), ["out:3"])
    assert t.lookup("p1", key(7)) == ["out:3"]
    assert t.lookup("p1", key(7)) == ["out:3"]  # every later fragment of it
    assert t.lookup("p1", key(8)) is None  # another datagram
    assert t.lookup("p1", ("10.0.0.1", "10.0.0.2", 6, 7)) is None  # another protocol
    assert t.counters == {"remembered": 1, "hits": 2, "misses": 2, "evicted": 0,
                          "expired": 0, "held": 0, "released": 0, "hold_dropped": 0,
                          "entries": 1}


def test_a_port_never_follows_another_ports_decision(clock):
    t = FragmentTable(clock=clock)
    t.remember("victim", key(7), "accept")
    assert t.lookup("attacker", key(7)) is None
    assert t.lookup("victim", key(7)) == "accept"


def test_entries_live_ttl_seconds(clock):
    t = FragmentTable(ttl=5, clock=clock)
    t.remember("p1", key(1), "a")
    clock.advance(4.9)
    assert t.lookup("p1", key(1)) == "a"
    clock.advance(0.1)
    assert t.lookup("p1", key(1)) is None
    assert len(t) == 0 and t.counters["expired"] == 1


def test_expire_forgets_only_what_is_due(clock):
    t = FragmentTable(ttl=5, clock=clock)
    t.remember("p1", key(1), "a")
    clock.advance(3)
    t.remember("p2", key(2), "b")
    clock.advance(2.5)
    assert t.expire() == 1
    assert t.lookup("p1", key(1)) is None and t.lookup("p2", key(2)) == "b"
    clock.advance(3)
    assert t.expire() == 1 and len(t) == 0


def test_remembering_again_replaces_and_renews(clock):
    t = FragmentTable(ttl=5, clock=clock)
    t.remember("p1", key(1), "old")
    clock.advance(4)
    t.remember("p1", key(1), "new")  # the first fragment sent again
    clock.advance(4)
    assert t.lookup("p1", key(1)) == "new" and len(t) == 1


def test_a_port_at_its_limit_loses_its_own_oldest_entry_not_anothers(clock):
    t = FragmentTable(max_entries=100, max_per_port=3, clock=clock)
    t.remember("quiet", key(1), "q")
    for i in range(10):  # a flood of first fragments from one port
        clock.advance(0.01)
        t.remember("noisy", key(i, "10.9.9.9"), i)
    assert t.lookup("quiet", key(1)) == "q"
    assert [t.lookup("noisy", key(i, "10.9.9.9")) for i in range(10)] == [None] * 7 + [7, 8, 9]
    assert t.counters["evicted"] == 7 and len(t) == 4


def test_the_table_at_its_limit_loses_its_oldest_entry(clock):
    t = FragmentTable(max_entries=4, max_per_port=4, clock=clock)
    for i in range(6):
        clock.advance(0.01)
        t.remember(f"p{i % 3}", key(i), i)
    assert len(t) == 4 and t.counters["evicted"] == 2
    assert t.lookup("p0", key(0)) is None and t.lookup("p1", key(1)) is None
    assert [t.lookup(f"p{i % 3}", key(i)) for i in range(2, 6)] == [2, 3, 4, 5]


def test_bounds_hold_under_a_long_flood(clock):
    t = FragmentTable(max_entries=50, max_per_port=10, clock=clock)
    for i in range(5000):
        t.remember(f"p{i % 7}", key(i % 65536), i)
        assert len(t) <= 50
    per_port = {}
    for (port, _k) in t._all:
        per_port[port] = per_port.get(port, 0) + 1
    assert max(per_port.values()) <= 10 and len(t) == 50


def test_forget_port(clock):
    t = FragmentTable(clock=clock)
    t.remember("p1", key(1), "a")
    t.remember("p1", key(2), "b")
    t.remember("p2", key(1), "c")
    assert t.forget_port("p1") == 2
    assert t.lookup("p1", key(1)) is None and t.lookup("p2", key(1)) == "c"
    assert t.forget_port("nobody") == 0


def test_defaults_and_bad_bounds():
    t = FragmentTable()
    assert (t.ttl, t.max_entries, t.max_per_port) == (5.0, 4096, 256)
    for bad in ({"ttl": 0}, {"max_entries": 0}, {"max_per_port": 0}):
        with pytest.raises(ValueError):
            FragmentTable(**bad)
