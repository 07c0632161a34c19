"""What the simulation may read of the world: a read-only topology view and
a read-only view of the host's flow state (conntrack and NAT)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from midoflow.model import (
    Bridge,
    Chain,
    IpAddrGroup,
    NatTarget,
    Port,
    PortGroup,
    Route,
    Router,
    Rule,
)
from midoflow.nat.bindings import NatBinding
from midoflow.nat.conntrack import ConnKey


class TopologyView(Protocol):
    def port(self, port_id: str) -> Port | None: ...

    def bridge(self, bridge_id: str) -> Bridge | None: ...

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        """The port a MAC was learned on, from the replicated MAC table."""
        ...

    def router(self, router_id: str) -> Router | None: ...

    def routes(self, router_id: str) -> Sequence[Route]:
        """The router's configured routes (connected networks come from its ports)."""
        ...

    def arp(self, router_id: str, ip: str) -> tuple[str, float] | None:
        """(MAC, time learned) from the router's replicated ARP table."""
        ...

    def chain(self, chain_id: str) -> Chain | None: ...

    def rule(self, rule_id: str) -> Rule | None: ...

    def port_group(self, group_id: str) -> PortGroup | None: ...

    def ip_addr_group(self, group_id: str) -> IpAddrGroup | None: ...


class FlowStateView(Protocol):
    """Lookups in the host's conntrack and NAT tables, and SNAT proposals
    (midoflow.nat.tables.StateView). Nothing here has an effect: the
    simulation returns in its Result what it wants tracked, bound or taken."""

    def is_return_flow(self, key: ConnKey) -> bool:
        """Is a packet with this key the reply of a tracked connection?"""
        ...

    def nat_forward(self, kind: str, key: ConnKey) -> NatBinding | None:
        """The binding of a connection, by its key before translation."""
        ...

    def nat_reverse(self, kind: str, key: ConnKey) -> NatBinding | None:
        """The binding a reply (its key as it arrives) belongs to."""
        ...

    def nat_propose(self, targets: Sequence[NatTarget], proto: int,
                    taken: Collection[tuple[str, int, int]] = ()) -> tuple[str, int] | None:
        """A free SNAT (address, port) among the targets, not in ``taken``
        ((ip, port, proto) proposed earlier in this walk); None: no free
        port in the blocks this host holds (the agent leases one and
        simulates again, or the targets are exhausted)."""
        ...


class NoFlowState:
    """No connection tracked, no binding: every packet opens a connection;
    an SNAT proposal is the first target address and port (what a trace of
    the stored topology shows: it has no host's flow state)."""

    def is_return_flow(self, key: ConnKey) -> bool:
        return False

    def nat_forward(self, kind: str, key: ConnKey) -> NatBinding | None:
        return None

    def nat_reverse(self, kind: str, key: ConnKey) -> NatBinding | None:
        return None

    def nat_propose(self, targets: Sequence[NatTarget], proto: int,
                    taken: Collection[tuple[str, int, int]] = ()) -> tuple[str, int] | None:
        if not targets:
            return None
        return targets[0].addr_from, targets[0].port_from or 0


NO_FLOW_STATE = NoFlowState()


class DictView:
    """A TopologyView over plain dicts: unit tests, tracing, benchmarks.

    Replace a value to change it, never mutate it in place: the simulation
    memoises what it derives from an object by the object's identity."""

    def __init__(
        self,
        ports: dict[str, Port] | None = None,
        bridges: dict[str, Bridge] | None = None,
        macs: dict[tuple[str, str], str] | None = None,
        routers: dict[str, Router] | None = None,
        routes_by_router: dict[str, Sequence[Route]] | None = None,
        arps: dict[tuple[str, str], tuple[str, float]] | None = None,
        chains: dict[str, Chain] | None = None,
        rules: dict[str, Rule] | None = None,
        port_groups: dict[str, PortGroup] | None = None,
        ip_addr_groups: dict[str, IpAddrGroup] | None = None,
    ) -> None:
        self.ports = ports or {}
        self.bridges = bridges or {}
        self.macs = macs or {}
        self.routers = routers or {}
        self.routes_by_router = routes_by_router or {}
        self.arps = arps or {}
        self.chains = chains or {}
        self.rules = rules or {}
        self.port_groups = port_groups or {}
        self.ip_addr_groups = ip_addr_groups or {}

    def port(self, port_id: str) -> Port | None:
        return self.ports.get(port_id)

    def bridge(self, bridge_id: str) -> Bridge | None:
        return self.bridges.get(bridge_id)

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        return self.macs.get((bridge_id, mac))

    def router(self, router_id: str) -> Router | None:
        return self.routers.get(router_id)

    def routes(self, router_id: str) -> Sequence[Route]:
        return self.routes_by_router.get(router_id, ())

    def arp(self, router_id: str, ip: str) -> tuple[str, float] | None:
        return self.arps.get((router_id, ip))

    def chain(self, chain_id: str) -> Chain | None:
        return self.chains.get(chain_id)

    def rule(self, rule_id: str) -> Rule | None:
        return self.rules.get(rule_id)

    def port_group(self, group_id: str) -> PortGroup | None:
        return self.port_groups.get(group_id)

    def ip_addr_group(self, group_id: str) -> IpAddrGroup | None:
        return self.ip_addr_groups.get(group_id)
