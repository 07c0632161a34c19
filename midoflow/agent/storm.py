"""Storm control: a VM port that floods far past its packet-in meter is cut
off for a moment, in the datapath.

The per-port meter (``midoflow.apps.pipeline``) keeps a flooding VM from
taking the agent's time, but every packet it drops has already cost OVS an
upcall: with the userspace datapath the thread that reads every port also
classifies the flood, and the neighbours' first packets wait behind it.
Physical switches answer such a port with storm control (drop everything
from it for a while). So does this: when a port's meter drops more than
``factor`` times the port's packet-in rate per second, the agent installs a
drop flow for the whole port for ``seconds`` (a hard timeout: OVS lifts it by
itself); while it holds, the flood is dropped by one datapath flow with no
upcall. Flows already installed for the port are cut too: the VM is sending
at many times what it may, and a storm of its own making costs it a pause.

Pure: the agent feeds it the meters' counters and acts on its answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from midoflow.agent.clock import Clock

DEFAULT_FACTOR = 5.0
DEFAULT_SECONDS = 2


@dataclass
class _Seen:
    at: float
    dropped: int


class StormControl:
    """Decides, from each port's cumulative meter drops, when to block it."""

    def __init__(self, factor: float = DEFAULT_FACTOR, seconds: int = DEFAULT_SECONDS,
                 clock: Clock | None = None) -> None:
        if factor <= 0 or seconds < 1:
            raise ValueError(f"storm control needs factor > 0 and seconds >= 1 "
                             f"(got {factor}, {seconds})")
        self.factor, self.seconds, self.clock = factor, seconds, clock or Clock()
        self._seen: dict[str, _Seen] = {}
        self._blocked_until: dict[str, float] = {}
        self.blocked: dict[str, int] = {}  # port -> times blocked

    def observe(self, port_id: str, dropped: int, rate: int) -> bool:
        """The port's meter has dropped ``dropped`` packets in all (a counter
        that restarts when the meter is made again); ``rate`` is its packet-in
        rate. True: block the port now for ``seconds``."""
        now = self.clock.mono()
        prev = self._seen.get(port_id)
        self._seen[port_id] = _Seen(now, dropped)
        if prev is None or dropped < prev.dropped or now <= prev.at:
            return False  # first reading, or the meter was made again
        if self._blocked_until.get(port_id, 0.0) > now:
            return False  # blocked already: OVS lifts it by itself
        per_second = (dropped - prev.dropped) / (now - prev.at)
        if per_second <= self.factor * rate:
            return False
        self._blocked_until[port_id] = now + self.seconds
        self.blocked[port_id] = self.blocked.get(port_id, 0) + 1
        return True

    def forget(self, port_id: str) -> None:
        """The port is gone (or its meter made again)."""
        self._seen.pop(port_id, None)
        self._blocked_until.pop(port_id, None)
