"""What the agent core hands the os-ken glue: a Decision per table miss
(actions, the flow to install, frames to send), and binding changes."""

from __future__ import annotations

from dataclasses import dataclass, field

from midoflow.sim.packet import Packet
from midoflow.sim.result import Action, Generated, Result, Rewrite


@dataclass(frozen=True)
class Output:
    """Out of a local ofport. ``zone``: not 0 when the port's security groups
    are enforced by OVS conntrack here (``midoflow.agent.sgflows``): IPv4 goes
    through ``ct(zone)`` and the port's SG_INGRESS flows instead."""

    ofport: int
    zone: int = 0


@dataclass(frozen=True)
class Tunnel:
    key: int
    remote_ip: str
    ofport: int


@dataclass(frozen=True)
class Emit:
    """A frame the topology sends (ARP, ICMP), with where it goes."""

    frame: bytes
    actions: list[Output | Tunnel]
    rewrites: tuple[Rewrite, ...] = ()


@dataclass
class Decision:
    """What to do for one table miss: a flow (when ``install``), the actions
    for the packet itself, and frames the topology sends in answer."""

    actions: list[Output | Tunnel]
    match_fields: frozenset[str]
    tags: frozenset[str]
    result: Result
    cookie: int = 0
    packet: Packet | None = None
    rewrites: tuple[Rewrite, ...] = ()
    emits: list[Emit] = field(default_factory=list)
    install: bool = True
    # Flow state for other hosts: sent before the packet itself.
    pushes: list[Emit] = field(default_factory=list)
    # Flow state the installed flow keeps alive (return keys, ("nat", binding)).
    uses: tuple = ()


@dataclass
class BindingChange:
    added: dict[str, int] = field(default_factory=dict)  # port id -> ofport
    removed: dict[str, int] = field(default_factory=dict)


class Frames:
    """How the core turns generated packets into frames and frames into
    packet fields (the agent app gives it os-ken's packet library)."""

    def build(self, gen: Generated, original: bytes | None) -> bytes:
        raise NotImplementedError

    def parse(self, frame: bytes) -> dict:
        raise NotImplementedError


def dropped(pkt: Packet, reason: str) -> Decision:
    """A packet dropped without a flow."""
    return Decision([], frozenset(), frozenset(), Result(action=Action.DROP, reason=reason),
                    packet=pkt, install=False)
