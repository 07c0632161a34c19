"""Packets waiting for something before they are simulated again: a next
hop's ARP answer (key (router, ip)), or a port's flow state being recovered
(key ("recovering", port)).

A next hop is asked at most once per ``ARP_RETRY_SECONDS`` while nothing
changes; when a port's location changes (a VM bound somewhere: the port the
ARP request must reach may just have become reachable) :meth:`retry` asks
again at once, by simulating the held packets again (issue 13: a new VM was
reached only after the 1 s retry, because the router had asked before the
binding reached this host)."""

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

    def retry(self) -> int:
        """A port moved or appeared: every next hop still unanswered may be
        asked again now. Its held packets are simulated again (the first asks,
        the others are held anew); a key with none is only forgotten, so its
        next packet asks. Returns how many packets were replayed."""
        n = sum(self.release(key) for key in [k for k in self.asked if k[0] != "recovering"])
        self.stats["arp_retried"] = self.stats.get("arp_retried", 0) + n
        return n

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
