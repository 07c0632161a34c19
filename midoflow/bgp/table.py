"""One BGP peer's table and session record: pure, no os-ken, no store.

:class:`PeerTable` is the peer's Adj-RIB-In: every prefix the peer
announces now, accepted or not, in arrival order. The first
``max_prefixes`` acceptable ones are accepted (they become routes);
the others are *refused* but kept, so when a withdrawal makes room the
oldest refused prefix the peer still announces is accepted at once (a
peer is never asked to resend: os-ken has no route refresh on demand).
Prefixes the filters deny (own ranges, martians, the uplink's link) are
*filtered*, also kept (a change of our own ranges can make them acceptable).

When the session drops, the accepted paths become *stale* for a grace
period (graceful restart's stale-path timer, RFC 4724, without the
capability exchange: the gateway keeps forwarding on what it knew). A path
announced again replaces its stale copy (the same route: nothing to write);
what the peer did not announce again goes when the timer runs out.

:class:`SessionRecord` is what the status shows of a session besides its
FSM state: since when, how many times it dropped, the last error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger("midoflow.bgp")


@dataclass
class PeerTable:
    """Adj-RIB-In of one peer with its prefix limit (see the module doc).

    ``acceptable(prefix)`` is the inbound filter (the learner's); paths are
    whatever the caller stores (``policy.Path``)."""

    name: str
    max_prefixes: int
    acceptable: Callable[[str], bool]
    announced: dict[str, Any] = field(default_factory=dict)  # prefix -> path, arrival order
    accepted: dict[str, None] = field(default_factory=dict)  # ordered set
    stale: dict[str, Any] = field(default_factory=dict)  # prefix -> path of the last session
    stale_until: float | None = None
    overflowing: bool = False  # refusing since the last time it had room
    refused_total: int = 0  # announcements refused at the limit, ever

    # ---- events ----------------------------------------------------------
    def announce(self, prefix: str, path: Any) -> bool:
        """The peer announced (or replaced) ``prefix``. True if accepted."""
        self.announced.pop(prefix, None)  # re-announced: now the newest
        self.announced[prefix] = path
        self.stale.pop(prefix, None)
        if prefix in self.accepted:
            return True
        if not self.acceptable(prefix):
            return False
        if len(self.accepted) < self.max_prefixes:
            self.accepted[prefix] = None
            return True
        self.refused_total += 1
        if not self.overflowing:
            self.overflowing = True
            LOG.warning("BGP peer %s: prefix limit %d reached, refusing %s and what "
                        "follows (kept: learned when room frees up)", self.name,
                        self.max_prefixes, prefix)
        return False

    def withdraw(self, prefix: str) -> bool:
        """The peer withdrew ``prefix``. True if it was announced."""
        if self.announced.pop(prefix, None) is None:
            return False
        if self.accepted.pop(prefix, "absent") != "absent" \
                and len(self.announced) > len(self.accepted):
            self.fill()
        if self.overflowing and len(self.announced) == len(self.accepted):
            self.overflowing = False
        return True

    def refilter(self) -> list[str]:
        """The filter changed: drop accepted prefixes it now denies, then fill."""
        for p in [p for p in self.accepted if not self.acceptable(p)]:
            del self.accepted[p]
        for p in [p for p in self.stale if not self.acceptable(p)]:
            del self.stale[p]
        return self.fill()

    def fill(self) -> list[str]:
        """Accept refused prefixes (oldest first) while there is room.
        Returns those accepted."""
        took = []
        if len(self.accepted) < self.max_prefixes:
            for p in self.announced:
                if len(self.accepted) >= self.max_prefixes:
                    break
                if p not in self.accepted and self.acceptable(p):
                    self.accepted[p] = None
                    took.append(p)
        if took:
            LOG.info("BGP peer %s: room freed up, %d refused prefix(es) accepted (%s%s)",
                     self.name, len(took), ", ".join(took[:3]), ", ..." if len(took) > 3 else "")
        if self.overflowing and self.refused() == 0:
            self.overflowing = False
        return took

    def session_down(self, now: float, stale_time: float) -> None:
        """The session closed: what was accepted stays ``stale_time`` s as stale."""
        if stale_time > 0:
            for p in self.accepted:
                self.stale[p] = self.announced[p]
            self.stale_until = now + stale_time if self.stale else None
        else:
            self.stale.clear()
            self.stale_until = None
        self.announced.clear()
        self.accepted.clear()
        self.overflowing = False

    def expire(self, now: float) -> bool:
        """Drop the stale paths once their time is up. True if any went."""
        if self.stale_until is None or now < self.stale_until:
            return False
        self.stale_until = None
        gone = bool(self.stale)
        self.stale.clear()
        return gone

    # ---- results -----------------------------------------------------------
    def paths(self) -> Iterator[tuple[str, Any]]:
        """(prefix, path) of every accepted path, then of every stale one."""
        for p in self.accepted:
            yield p, self.announced[p]
        yield from self.stale.items()

    def filtered(self) -> int:
        return sum(1 for p in self.announced if p not in self.accepted
                   and not self.acceptable(p))

    def refused(self) -> int:
        """Announced, acceptable, not accepted: over the limit."""
        return len(self.announced) - len(self.accepted) - self.filtered()

    def counters(self) -> dict[str, int]:
        return {"prefixes_received": len(self.announced),
                "prefixes_accepted": len(self.accepted),
                "prefixes_refused": self.refused(),
                "prefixes_filtered": self.filtered(),
                "prefixes_stale": len(self.stale),
                "prefix_limit": self.max_prefixes}


@dataclass
class SessionRecord:
    """A session's history as the status shows it."""

    state: str = "idle"
    since: float = 0.0  # when ``state`` last changed (epoch s)
    flaps: int = 0  # established -> anything else
    last_error: str | None = None
    last_error_at: float | None = None
    _base: int = 0  # flaps of the neighbour's earlier incarnations

    def observe(self, state: str, now: float, transitions: int | None = None) -> bool:
        """The FSM state seen now, and (when the speaker counts them) how many
        times this neighbour became established. True if anything changed."""
        before = (self.state, self.flaps)
        if transitions is not None:  # exact: no flap missed between two polls
            up_now = 1 if state == "established" else 0
            self.flaps = max(self.flaps, self._base + max(0, transitions - up_now))
        elif self.state == "established" and state != "established":
            self.flaps += 1
        if state != self.state:
            self.state, self.since = state, now
        return (self.state, self.flaps) != before

    def rebase(self) -> None:
        """The neighbour is made again (its counters restart from zero)."""
        self._base = self.flaps

    def error(self, text: str, now: float) -> None:
        self.last_error, self.last_error_at = text, now

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "flaps": self.flaps,
                "last_error": self.last_error, "last_error_at": self.last_error_at}
