"""Storm control (midoflow.agent.storm): when a port is cut off, and when not."""

import pytest

from midoflow.agent.clock import FakeClock
from midoflow.agent.storm import StormControl


def make(factor=5, seconds=2):
    clock = FakeClock(mono=0.0)
    return StormControl(factor, seconds, clock=clock), clock


def at(clock: FakeClock, t: float) -> None:
    clock.advance(t - clock.mono())


def test_a_port_dropping_past_factor_times_its_rate_is_blocked_once_per_period():
    s, now = make()
    assert not s.observe("p", 0, rate=100)  # first reading: nothing to compare
    at(now, 1.0)
    assert s.observe("p", 600, rate=100)  # 600/s dropped > 5 x 100
    at(now, 2.0)
    assert not s.observe("p", 1200, rate=100)  # blocked already (until 3.0)
    at(now, 3.5)
    assert s.observe("p", 2500, rate=100)  # still flooding after the block
    assert s.blocked == {"p": 2}


def test_a_port_near_its_rate_is_never_blocked():
    s, now = make()
    s.observe("p", 0, rate=100)
    for t in range(1, 20):
        at(now, float(t))
        assert not s.observe("p", 500 * t, rate=100)  # exactly 5 x: not past it
    assert s.blocked == {}


def test_a_meter_made_again_restarts_the_count():
    s, now = make()
    s.observe("p", 10_000, rate=100)
    at(now, 1.0)
    assert not s.observe("p", 0, rate=100)  # counter restarted: no false storm
    at(now, 2.0)
    assert not s.observe("p", 100, rate=100)
    s.forget("p")
    at(now, 3.0)
    assert not s.observe("p", 99_999, rate=100)  # forgotten: a first reading again


def test_ports_are_judged_apart():
    s, now = make(factor=2)
    s.observe("a", 0, rate=10)
    s.observe("b", 0, rate=10)
    at(now, 1.0)
    assert s.observe("a", 50, rate=10)
    assert not s.observe("b", 5, rate=10)


@pytest.mark.parametrize("factor,seconds", [(0, 2), (5, 0)])
def test_bad_settings_are_refused(factor, seconds):
    with pytest.raises(ValueError, match="storm control needs"):
        StormControl(factor, seconds)
