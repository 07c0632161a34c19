"""LocalFlowState: the in-memory flow-state store (one host, unit tests)."""

from __future__ import annotations

import threading

import pytest

from midoflow.nat.flowstate import CONNTRACK, NAT, Entry, FlowStateStore, LocalFlowState


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock) -> LocalFlowState:
    return LocalFlowState(clock=clock)


CT1 = Entry(CONNTRACK, "tcp:10.0.0.1:1234>10.0.0.2:80")
CT2 = Entry(CONNTRACK, "tcp:10.0.0.1:1235>10.0.0.2:80")
NAT1 = Entry(NAT, "snat:tcp:10.0.0.1:1234>8.8.8.8:53", "203.0.113.5:40001")


def test_is_a_flow_state_store(store):
    assert isinstance(store, FlowStateStore)


def test_round_trip_sorted(store):
    store.save(["p1"], [NAT1, CT2, CT1], ttl=60)
    assert store.load("p1") == sorted([CT1, CT2, NAT1])
    assert store.load("p1") == [CT1, CT2, NAT1]  # kind, then key


def test_unknown_port_is_empty(store):
    assert store.load("nobody") == []


def test_entries_filed_under_every_port(store):
    store.save(["in", "out"], [CT1, NAT1], ttl=60)
    store.save(["in"], [CT2], ttl=60)
    assert store.load("in") == [CT1, CT2, NAT1]
    assert store.load("out") == [CT1, NAT1]
    assert store.load("elsewhere") == []


def test_ttl_expiry_with_fake_clock(store, clock):
    store.save(["p1"], [CT1], ttl=10)
    store.save(["p1"], [CT2], ttl=30)
    clock.advance(9.9)
    assert store.load("p1") == [CT1, CT2]
    clock.advance(0.1)  # exactly at CT1's expiry: gone
    assert store.load("p1") == [CT2]
    clock.advance(20)
    assert store.load("p1") == []


def test_save_again_refreshes_ttl(store, clock):
    store.save(["p1"], [CT1], ttl=10)
    clock.advance(8)
    store.save(["p1"], [CT1], ttl=10)  # traffic refreshes the key
    clock.advance(8)
    assert store.load("p1") == [CT1]
    clock.advance(2)
    assert store.load("p1") == []


def test_save_again_replaces_value(store):
    store.save(["p1"], [NAT1], ttl=60)
    newer = Entry(NAT, NAT1.key, "203.0.113.5:40002")
    store.save(["p1"], [newer], ttl=60)
    assert store.load("p1") == [newer]


def test_expiry_is_per_port(store, clock):
    store.save(["a"], [CT1], ttl=5)
    store.save(["b"], [CT1], ttl=50)
    clock.advance(6)
    assert store.load("a") == []
    assert store.load("b") == [CT1]


def test_delete(store):
    store.save(["in", "out"], [CT1, CT2, NAT1], ttl=60)
    store.delete(["in", "out"], [CT1])
    assert store.load("in") == [CT2, NAT1]
    assert store.load("out") == [CT2, NAT1]
    store.delete(["out"], [CT2, NAT1])
    assert store.load("out") == []
    assert store.load("in") == [CT2, NAT1]


def test_delete_missing_is_harmless(store):
    store.delete(["nobody"], [CT1])
    store.save(["p1"], [CT1], ttl=60)
    store.delete(["p1"], [CT2])
    assert store.load("p1") == [CT1]


def test_delete_matches_kind_and_key_not_value(store):
    store.save(["p1"], [NAT1], ttl=60)
    store.delete(["p1"], [Entry(NAT, NAT1.key)])  # value not needed to forget it
    assert store.load("p1") == []


def test_same_key_different_kinds_are_distinct(store):
    a, b = Entry(CONNTRACK, "k"), Entry(NAT, "k", "v")
    store.save(["p1"], [a, b], ttl=60)
    store.delete(["p1"], [a])
    assert store.load("p1") == [b]


@pytest.mark.parametrize("ttl", [0, -1, -60])
def test_bad_ttl_rejected(store, ttl):
    with pytest.raises(ValueError, match="ttl"):
        store.save(["p1"], [CT1], ttl=ttl)
    assert store.load("p1") == []


def test_ports_may_be_any_iterable(store):
    store.save(iter(["p1", "p2"]), [CT1], ttl=60)
    store.save((p for p in ["p3"]), [CT1], ttl=60)
    assert [store.load(p) for p in ("p1", "p2", "p3")] == [[CT1]] * 3


def test_close_forgets_everything(store):
    store.save(["p1"], [CT1], ttl=60)
    store.close()
    assert store.load("p1") == []


def test_default_clock_is_monotonic():
    s = LocalFlowState()
    s.save(["p1"], [CT1], ttl=60)
    assert s.load("p1") == [CT1]


def test_thread_safe(clock):
    s = LocalFlowState(clock=clock)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                s.save([f"p{n}", "shared"], [Entry(CONNTRACK, f"{n}-{i}")], ttl=60)
                s.load("shared")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(s.load("shared")) == 800
    assert all(len(s.load(f"p{n}")) == 200 for n in range(4))
