"""What the simulation may read of the world: a read-only topology view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from midoflow.model import Bridge, Chain, IpAddrGroup, Port, PortGroup, Route, Router, Rule


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

    def is_return_flow(self, key) -> bool:
        """Is a packet with this connection key (midoflow.nat.conntrack.ConnKey)
        the reply of a tracked connection?"""
        ...

    def nat_forward(self, kind: str, key):
        """The NatBinding (midoflow.nat.bindings) of a connection, by its key
        before translation, if one was made."""
        ...

    def nat_reverse(self, kind: str, key):
        """The NatBinding a reply (its key as it arrives) belongs to."""
        ...

    def nat_allocate(self, targets, proto: int) -> tuple[str, int] | None:
        """A free SNAT (address, port) from the targets (None: exhausted).
        The only call of the simulation with an effect: it takes a port."""
        ...


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
        return_keys: set | None = None,
        nat=None,
        allocator=None,
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
        self.return_keys = return_keys if return_keys is not None else set()
        self.nat = nat  # a midoflow.nat.bindings.NatTable, or None
        self.allocator = allocator  # a midoflow.nat.allocator.NatAllocator, or None

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

    def is_return_flow(self, key) -> bool:
        return key in self.return_keys

    def nat_forward(self, kind: str, key):
        return self.nat.forward(kind, key) if self.nat is not None else None

    def nat_reverse(self, kind: str, key):
        return self.nat.reverse(kind, key) if self.nat is not None else None

    def nat_allocate(self, targets, proto: int) -> tuple[str, int] | None:
        if self.allocator is None:
            return None
        from midoflow.nat.allocator import NatExhausted

        try:
            return self.allocator.allocate(targets, proto)
        except NatExhausted:
            return None
