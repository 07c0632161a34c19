"""What a simulation decides, and the tags a flow is invalidated by.

Tags name what a decision depended on. The agent indexes installed flows by
tag and, when the topology changes, removes exactly the flows carrying a tag
of the changed thing:

* ``port:<id>``   the port (its existence, admin state, binding, location)
* ``bridge:<id>`` the bridge object (existence, admin state)
* ``flood:<id>``  the set of ports a bridge floods to
* ``mac:<bridge>:<mac>`` where a MAC lives on a bridge (learned or moved)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Action(Enum):
    DROP = "drop"
    FORWARD = "forward"


def port_tag(port_id: str) -> str:
    return f"port:{port_id}"


def bridge_tag(bridge_id: str) -> str:
    return f"bridge:{bridge_id}"


def flood_tag(bridge_id: str) -> str:
    return f"flood:{bridge_id}"


def mac_tag(bridge_id: str, mac: str) -> str:
    return f"mac:{bridge_id}:{mac}"


@dataclass(frozen=True)
class Step:
    """One line of a trace: a device and what it decided."""

    device: str
    kind: str
    decision: str

    def __str__(self) -> str:
        return f"{self.kind} {self.device}: {self.decision}"


@dataclass
class Result:
    action: Action
    out_ports: tuple[str, ...] = ()
    # Packet fields the decision read: the installed flow matches on these only.
    match_fields: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    # MACs to record in the replicated tables: (bridge_id, mac, port_id).
    learned: tuple[tuple[str, str, str], ...] = ()
    trace: tuple[Step, ...] = ()
    reason: str = ""
    flooded: bool = False

    @property
    def dropped(self) -> bool:
        return self.action is Action.DROP


@dataclass
class _Builder:
    """Mutable accumulator used while walking devices."""

    tags: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=lambda: {"in_port"})
    learned: list[tuple[str, str, str]] = field(default_factory=list)
    trace: list[Step] = field(default_factory=list)
    out: list[str] = field(default_factory=list)
    flooded: bool = False

    def step(self, kind: str, device: str, decision: str) -> None:
        self.trace.append(Step(device, kind, decision))

    def result(self, action: Action, reason: str = "") -> Result:
        out = tuple(dict.fromkeys(self.out)) if action is Action.FORWARD else ()
        return Result(
            action=action,
            out_ports=out,
            match_fields=frozenset(self.fields),
            tags=frozenset(self.tags),
            learned=tuple(self.learned),
            trace=tuple(self.trace),
            reason=reason,
            flooded=self.flooded,
        )
