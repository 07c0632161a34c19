"""What the simulation may read of the world: a read-only topology view and
a read-only view of the host's flow state (conntrack and NAT)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from midoflow.model import (
    PORT_EXTERIOR,
    Bridge,
    Chain,
    HealthMonitor,
    IpAddrGroup,
    LoadBalancer,
    NatTarget,
    Pool,
    PoolMember,
    Port,
    PortGroup,
    Route,
    Router,
    Rule,
    Vip,
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

    def address_port(self, bridge_id: str, ip: str) -> Port | None:
        """The exterior port of the bridge with ``ip`` among its fixed_ips."""
        ...

    def chain(self, chain_id: str) -> Chain | None: ...

    def rule(self, rule_id: str) -> Rule | None: ...

    def port_group(self, group_id: str) -> PortGroup | None: ...

    def ip_addr_group(self, group_id: str) -> IpAddrGroup | None: ...

    # Load balancing (issue 14). Sequences are replaced, never mutated, when
    # they change: the simulation memoises its index of them by identity.
    def load_balancers(self, router_id: str) -> Sequence[LoadBalancer]: ...

    def pools(self, lb_id: str) -> Sequence[Pool]: ...

    def vips(self, lb_id: str) -> Sequence[Vip]: ...

    def pool(self, pool_id: str) -> Pool | None: ...

    def pool_members(self, pool_id: str) -> Sequence[PoolMember]: ...

    def health_monitor(self, pool_id: str) -> HealthMonitor | None:
        """The pool's monitor (one per pool), or None."""
        ...

    def member_health(self, member_id: str) -> str | None:
        """HEALTH_ONLINE or HEALTH_ERROR as the elected checker last wrote
        it; None: never checked (counts as healthy)."""
        ...


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

    def nat_closing(self, b: NatBinding) -> bool:
        """Has the binding's connection closed (RST, or FIN both ways)? It
        still translates its own last packets, never a new connection's."""
        ...

    def lb_counter(self, pool_id: str) -> int:
        """The pool's pick counter on this host (round robin's position)."""
        ...

    def lb_active(self, ip: str, port: int, proto: int) -> int:
        """Live DNAT bindings to (ip, port) over proto, not closing."""
        ...

    def lb_sticky(self, vip_id: str, client_ip: str) -> str | None:
        """The member a SOURCE_IP client sticks to, unless expired."""
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

    def nat_closing(self, b: NatBinding) -> bool:
        return False

    def lb_counter(self, pool_id: str) -> int:
        return 0

    def lb_active(self, ip: str, port: int, proto: int) -> int:
        return 0

    def lb_sticky(self, vip_id: str, client_ip: str) -> str | None:
        return None


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
        lbs: dict[str, LoadBalancer] | None = None,
        lb_pools: dict[str, Pool] | None = None,
        lb_vips: dict[str, Vip] | None = None,
        members: dict[str, PoolMember] | None = None,
        monitors: dict[str, HealthMonitor] | None = None,
        health: dict[str, str] | None = None,
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
        # load balancing, by id (member health: member id -> status)
        self.lbs = lbs or {}
        self.lb_pools = lb_pools or {}
        self.lb_vips = lb_vips or {}
        self.members = members or {}
        self.monitors = monitors or {}
        self.health = health or {}
        self._seqs: dict[tuple, tuple] = {}
        # Security groups in OVS conntrack at the ports' hosts (sg_in_ovs):
        # every port's when True, except those whose host simulates them.
        self.sg_conntrack = False
        self.sg_simulated_ports: set[str] = set()

    def port(self, port_id: str) -> Port | None:
        return self.ports.get(port_id)

    def bridge(self, bridge_id: str) -> Bridge | None:
        return self.bridges.get(bridge_id)

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        return self.macs.get((bridge_id, mac))

    def address_port(self, bridge_id: str, ip: str) -> Port | None:
        bridge = self.bridges.get(bridge_id)
        for pid in bridge.port_ids if bridge else ():
            p = self.ports.get(pid)
            if p is not None and p.type == PORT_EXTERIOR and ip in p.fixed_ips:
                return p
        return None

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

    def _seq(self, name: str, what: str, key: str, objs) -> tuple:
        """The objects whose ``what`` is ``key``, by id, as one tuple while
        they stay the same (a replaced dict value makes a new one)."""
        t = tuple(sorted((o for o in objs if getattr(o, what) == key), key=lambda o: o.id))
        old = self._seqs.get((name, key))
        if old is not None and len(old) == len(t) and all(
                a is b for a, b in zip(old, t, strict=True)):
            return old
        self._seqs[(name, key)] = t
        return t

    def load_balancers(self, router_id: str) -> Sequence[LoadBalancer]:
        return self._seq("lbs", "router_id", router_id, self.lbs.values()) if self.lbs else ()

    def pools(self, lb_id: str) -> Sequence[Pool]:
        return self._seq("pools", "load_balancer_id", lb_id, self.lb_pools.values())

    def vips(self, lb_id: str) -> Sequence[Vip]:
        return self._seq("vips", "load_balancer_id", lb_id, self.lb_vips.values())

    def pool(self, pool_id: str) -> Pool | None:
        return self.lb_pools.get(pool_id)

    def pool_members(self, pool_id: str) -> Sequence[PoolMember]:
        return self._seq("members", "pool_id", pool_id, self.members.values())

    def health_monitor(self, pool_id: str) -> HealthMonitor | None:
        return next((m for m in self.monitors.values() if m.pool_id == pool_id), None)

    def member_health(self, member_id: str) -> str | None:
        return self.health.get(member_id)

    def sg_in_ovs(self, port_id: str) -> bool:
        return self.sg_conntrack and port_id not in self.sg_simulated_ports
