"""The agent's one clock, with two readings: ``wall()`` for times shared
with other hosts or written to the store (flow-state entries and their
expiry, learned ARP times, the simulation's ``now``), ``mono()`` for local
deadlines and rates (ARP hold, fragment table, claims, token buckets),
which a step of the wall clock (NTP) must neither stretch nor shrink."""

from __future__ import annotations

import time


class Clock:
    """The real clock: ``time.time`` and ``time.monotonic``."""

    def wall(self) -> float:
        return time.time()

    def mono(self) -> float:
        return time.monotonic()


class FakeClock(Clock):
    """For tests: both readings advance together; ``step_wall`` moves only
    the wall reading (an NTP step)."""

    def __init__(self, wall: float = 1_000_000.0, mono: float = 1000.0) -> None:
        self._wall, self._mono = wall, mono

    def wall(self) -> float:
        return self._wall

    def mono(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    def step_wall(self, seconds: float) -> None:
        self._wall += seconds
