"""Packets of an ofport not bound (yet): held a moment, replayed when it is.

A VM plugged into OVS may send its first packets (its ARP for its gateway)
before the agent has bound its interface and classified its ofport. Table 0
sends what no classify flow takes to the agent, through one shared low-rate
meter (``midoflow.apps.tables.UNBOUND_METER``); the agent holds a few
packets per ofport for ``UNBOUND_HOLD_SECONDS`` and replays them when the
ofport is bound (``AgentCore.recompute_bindings``), else drops them at expiry
(``stats["unbound_dropped"]``). Bounded per ofport and in total: an interface
that is never bound (or floods) cannot take more than its share."""

from __future__ import annotations

from collections.abc import Callable

from midoflow.agent.clock import Clock

UNBOUND_HOLD_SECONDS = 1.0
UNBOUND_HOLD_PER_PORT = 4
UNBOUND_HOLD_MAX = 64


class UnboundHold:
    def __init__(self, clock: Clock, spawn: Callable[..., object],
                 replay: Callable[[int, bytes], None], stats: dict,
                 per_port: int = UNBOUND_HOLD_PER_PORT, total: int = UNBOUND_HOLD_MAX,
                 seconds: float = UNBOUND_HOLD_SECONDS) -> None:
        self.clock, self.spawn, self.replay, self.stats = clock, spawn, replay, stats
        self.per_port, self.total, self.seconds = per_port, total, seconds
        self.held: dict[int, list[tuple[float, bytes]]] = {}  # ofport -> [(deadline, frame)]
        for k in ("unbound_held", "unbound_dropped", "unbound_replayed"):
            stats.setdefault(k, 0)

    def count(self) -> int:
        return sum(len(q) for q in self.held.values())

    def _drop(self, n: int = 1) -> None:
        self.stats["unbound_dropped"] += n

    def hold(self, ofport: int, frame: bytes) -> bool:
        """Hold a packet of an unbound ofport; False: dropped (the ofport
        holds its share already, or every slot is taken by ports holding as
        many)."""
        now = self.clock.mono()
        self.expire(now)
        q = self.held.get(ofport, [])
        if len(q) >= self.per_port:  # its first packets are kept: later ones are retries
            self._drop()
            return False
        if self.count() >= self.total:
            # the port holding the most gives way to one holding fewer
            big = max(self.held, key=lambda o: len(self.held[o]))
            if len(self.held[big]) <= len(q) + 1:
                self._drop()
                return False
            self.held[big].pop()
            self._drop()
        q.append((now + self.seconds, frame))
        self.held[ofport] = q
        self.stats["unbound_held"] += 1
        return True

    def expire(self, now: float | None = None) -> int:
        """Drop (and count) what waited too long; how many."""
        now = self.clock.mono() if now is None else now
        gone = 0
        for ofport in list(self.held):
            q = self.held[ofport]
            live = [h for h in q if h[0] > now]
            gone += len(q) - len(live)
            if live:
                self.held[ofport] = live
            else:
                del self.held[ofport]
        if gone:
            self._drop(gone)
        return gone

    def release(self, ofport: int) -> int:
        """The ofport is bound: its packets still within their time are
        simulated again (replayed); returns how many."""
        waiting = self.held.pop(ofport, [])
        now = self.clock.mono()
        n = 0
        for deadline, frame in waiting:
            if deadline > now:
                self.spawn(self.replay, ofport, frame)
                n += 1
            else:
                self._drop()
        self.stats["unbound_replayed"] += n
        return n

    def forget(self, ofport: int) -> int:
        """Drop what an ofport holds (it will never be bound: a tunnel)."""
        n = len(self.held.pop(ofport, []))
        if n:
            self._drop(n)
        return n
