"""Packets waiting for something before they are simulated again: a next
hop's ARP answer (key (router, ip)), or a port's flow state being recovered
(key ("recovering", port))."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from midoflow.agent.clock import Clock

# A packet waiting for an ARP answer waits this long at most, this many per next hop.
ARP_HOLD_SECONDS = 3.0
ARP_HOLD_MAX = 16
ARP_RETRY_SECONDS = 1.0


class ArpHold:
    def __init__(self, clock: Clock, spawn: Callable[..., object],
                 replay: Callable[[int, bytes], None], stats: dict) -> None:
        # monotonic throughout: local deadlines only
        self.clock, self.spawn, self.replay, self.stats = clock, spawn, replay, stats
        # key -> [(deadline, ofport, frame)]
        self.held: dict[tuple[str, str], list[tuple[float, int, bytes]]] = defaultdict(list)
        self.asked: dict[tuple[str, str], float] = {}  # (router, ip) -> when asked

    def hold(self, key: tuple[str, str], ofport: int, frame: bytes) -> None:
        now = self.clock.mono()
        q = [h for h in self.held[key] if h[0] > now]
        if len(q) >= ARP_HOLD_MAX:
            q.pop(0)
            self.stats["arp_expired"] += 1
        q.append((now + ARP_HOLD_SECONDS, ofport, frame))
        self.held[key] = q
        self.stats["arp_held"] += 1

    def should_ask(self, key: tuple[str, str]) -> bool:
        """Whether to send an ARP request for ``key`` now (not asked within
        ARP_RETRY_SECONDS: the answer is on its way); records the ask."""
        now = self.clock.mono()
        if now - self.asked.get(key, float("-inf")) < ARP_RETRY_SECONDS:
            return False
        self.asked[key] = now
        return True

    def release(self, key: tuple[str, str]) -> int:
        """What waited for ``key`` is simulated again (replayed); how many."""
        waiting = self.held.pop(key, [])
        self.asked.pop(key, None)
        now = self.clock.mono()
        n = 0
        for deadline, ofport, frame in waiting:
            if deadline > now:
                self.spawn(self.replay, ofport, frame)
                n += 1
            else:
                self.stats["arp_expired"] += 1
        return n
