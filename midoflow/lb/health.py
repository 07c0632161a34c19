"""Member health: the state machine of one member and the schedule of the
checks (pure; the clock is passed in).

A member starts from its stored status (none: never checked). ``max_retries``
successful probes in a row make it ONLINE, ``max_retries_down`` failed ones
in a row make it ERROR (Octavia's meaning); a result that does not change the
status changes nothing in the store. Each member is probed every ``delay``
seconds (counted from the start of its previous probe; a probe still running
is never doubled) and each probe gets ``timeout`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from midoflow.model import HEALTH_ERROR, HEALTH_ONLINE, HM_HTTP, HM_HTTPS, HM_TCP


@dataclass(frozen=True)
class Monitor:
    """What a health monitor asks for (the probe and the thresholds)."""

    type: str = HM_TCP
    delay: float = 5.0
    timeout: float = 3.0
    max_retries: int = 3
    max_retries_down: int = 3
    http_method: str = "GET"
    url_path: str = "/"
    expected_codes: str = "200"

    @property
    def http(self) -> bool:
        return self.type in (HM_HTTP, HM_HTTPS)

    @property
    def tls(self) -> bool:
        return self.type == HM_HTTPS


@dataclass(frozen=True)
class Target:
    """One member to check, and from where (its load balancer's namespace)."""

    member_id: str
    pool_id: str
    lb_id: str
    address: str
    port: int
    monitor: Monitor


@dataclass
class MemberState:
    """A member's status (None: never checked) and its current run."""

    status: str | None = None
    successes: int = 0  # in a row
    failures: int = 0  # in a row
    reason: str = ""

    def record(self, ok: bool, reason: str, monitor: Monitor) -> bool:
        """Count one probe result; True if the status changed."""
        self.reason = reason
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.status != HEALTH_ONLINE and self.successes >= monitor.max_retries:
                self.status = HEALTH_ONLINE
                return True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.status != HEALTH_ERROR and self.failures >= monitor.max_retries_down:
                self.status = HEALTH_ERROR
                return True
        return False


@dataclass
class _Entry:
    target: Target
    state: MemberState
    due: float  # when the next probe starts
    running: bool = False


@dataclass(frozen=True)
class Change:
    """A status to write for a member (``status`` None: delete its entry)."""

    member_id: str
    status: str | None
    reason: str = ""


@dataclass
class Schedule:
    """The members to check and when; fed with probe results."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def set_targets(self, targets: dict[str, Target], stored: dict[str, str], now: float) -> None:
        """Check exactly ``targets`` from now on. A new one starts from its
        ``stored`` status and is probed at once; one whose address, port or
        monitor changed keeps its status but starts a new run; the others go."""
        for mid in list(self.entries):
            if mid not in targets:
                del self.entries[mid]
        for mid, t in targets.items():
            e = self.entries.get(mid)
            if e is None:
                self.entries[mid] = _Entry(t, MemberState(stored.get(mid)), now)
            elif e.target != t:
                e.state.successes = e.state.failures = 0
                if t.monitor.delay != e.target.monitor.delay:
                    e.due = min(e.due, now + t.monitor.delay)
                e.target = t

    def due(self, now: float,
            allowed: Callable[[Target], bool] = lambda _t: True) -> list[Target]:
        """The probes to start now (each marked running until its result);
        those not ``allowed`` yet wait."""
        out = []
        for e in self.entries.values():
            if not e.running and e.due <= now and allowed(e.target):
                e.running = True
                e.due = now + e.target.monitor.delay
                out.append(e.target)
        return out

    def next_due(self) -> float | None:
        """When the next probe is due (None: nothing to check)."""
        waiting = [e.due for e in self.entries.values() if not e.running]
        return min(waiting) if waiting else None

    def result(self, target: Target, ok: bool, reason: str) -> Change | None:
        """A probe of ``target`` ended: the status to write, if it changed.
        A result for a member no longer checked, or checked differently since
        the probe started, is ignored."""
        e = self.entries.get(target.member_id)
        if e is None or e.target != target:
            if e is not None:
                e.running = False
            return None
        e.running = False
        if e.state.record(ok, reason, target.monitor):
            return Change(target.member_id, e.state.status, reason)
        return None

    def status(self, member_id: str) -> str | None:
        e = self.entries.get(member_id)
        return e.state.status if e else None
