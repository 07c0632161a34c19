"""What a simulation decides, and the tags a flow is invalidated by.

Tags name what a decision depended on. The agent indexes installed flows by
tag and, when the topology changes, removes exactly the flows carrying a tag
of the changed thing:

* ``port:<id>``   the port (its existence, admin state, binding, location)
* ``bridge:<id>`` the bridge object (existence, admin state)
* ``flood:<id>``  the set of ports a bridge floods to
* ``mac:<bridge>:<mac>`` where a MAC lives on a bridge (learned or moved)
* ``router:<id>`` the router object (existence, admin state, its port set)
* ``routes:<id>`` the router's routing table as a whole (every flow that looked it up)
* ``rdst:<router>:<ip>/<len>`` the router's route lookup of one destination
  address, answered by a route (or its own address) of prefix length len.
  A change of the routes for prefix P invalidates it by the tag
  ``rprefix:<router>:<P>``, which no flow carries: the agent's FlowIndex
  expands it to the ``rdst`` tags of that router whose address falls in P
  and whose len is not longer than P's (a route less specific than the one
  that answered cannot change the answer)
* ``arp:<router>:<ip>`` the router's ARP entry for a next hop
* ``chain:<id>`` a chain (its rule list or any of its rules)
* ``pg:<id>`` / ``ipag:<id>`` a port group / an IP address group's members
* ``lb:<router>`` the load balancing of a router (its balancers, VIPs, pools,
  members, monitors and the members' health)
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


def router_tag(router_id: str) -> str:
    return f"router:{router_id}"


def routes_tag(router_id: str) -> str:
    return f"routes:{router_id}"


ROUTE_DST = "rdst:"
ROUTE_PREFIX = "rprefix:"


def route_dst_tag(router_id: str, ip: str, prefixlen: int) -> str:
    """The router looked ``ip`` up and a route of ``prefixlen`` answered."""
    return f"{ROUTE_DST}{router_id}:{ip}/{prefixlen}"


def route_prefix_tag(router_id: str, cidr: str) -> str:
    """Invalidates the flows whose route lookup on the router was for an
    address in ``cidr`` (a route for that prefix was added, changed or removed)."""
    return f"{ROUTE_PREFIX}{router_id}:{cidr}"


def address_tag(bridge_id: str, ip: str) -> str:
    """Which port of the bridge has ``ip`` among its fixed addresses."""
    return f"addr:{bridge_id}:{ip}"


def arp_tag(router_id: str, ip: str) -> str:
    return f"arp:{router_id}:{ip}"


def chain_tag(chain_id: str) -> str:
    return f"chain:{chain_id}"


def port_group_tag(group_id: str) -> str:
    return f"pg:{group_id}"


def ip_addr_group_tag(group_id: str) -> str:
    return f"ipag:{group_id}"


def lb_tag(router_id: str) -> str:
    return f"lb:{router_id}"


def ct_miss_tag(key) -> str:
    """A decision made while ``key`` (a ConnKey) was not a known reply: when
    its connection's state arrives from another host, the decision is stale."""
    return f"ctmiss:{key.encode()}"


def nat_miss_tag(kind: str, key) -> str:
    """A reverse-NAT lookup of ``key`` found no binding (yet)."""
    return f"natmiss:{kind}:{key.encode()}"


@dataclass(frozen=True)
class Rewrite:
    """A header change applied before output, in order: ``field`` is one of
    eth_src, eth_dst (value: the MAC), ttl (value: how much to decrement),
    ip_src, ip_dst (an address), tp_src, tp_dst (a TCP/UDP port)."""

    field: str
    value: str | int


@dataclass(frozen=True)
class Generated:
    """A packet the virtual topology itself sends (ARP reply or request, ICMP
    echo reply or error). The agent builds it and injects it as if it left
    router port ``out_port`` (it is then simulated from that port onward).

    ``kind``: arp_reply, arp_request, icmp_echo_reply, icmp_error.
    ``fields``: what the builder needs (MACs, IPs, ICMP type and code...);
    for icmp_echo_reply and icmp_error the agent also uses the original frame.
    """

    kind: str
    out_port: str
    fields: tuple[tuple[str, object], ...] = ()

    def get(self, name: str, default=None):
        return dict(self.fields).get(name, default)


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
    rewrites: tuple[Rewrite, ...] = ()
    generated: tuple[Generated, ...] = ()
    # ARP entries to record: (router_id, ip, mac).
    arp_learned: tuple[tuple[str, str, str], ...] = ()
    # (router_id, ip): the packet waits for this ARP resolution.
    wait_arp: tuple[str, str] | None = None
    # False: the decision must not become a flow (the topology itself answered,
    # or the decision depends on something a flow cannot match, like the TTL).
    cacheable: bool = True
    # Forward keys of connections this packet opens (midoflow.nat.conntrack
    # ConnKey): the agent tracks them and pushes their return keys first.
    conntrack: tuple = ()
    # Return keys this decision found (its flow keeps them alive).
    ct_hits: tuple = ()
    # NAT bindings this packet made (midoflow.nat.bindings.NatBinding).
    nat: tuple = ()
    # SNAT ports those bindings use, as proposed over the read-only state
    # ((ip, port, proto)): the agent takes them when it commits the bindings.
    nat_allocs: tuple[tuple[str, int, int], ...] = ()
    # ((targets, proto), ...): no free SNAT port in this host's blocks; the
    # agent leases a block and simulates again (the packet was dropped).
    nat_wants: tuple = ()
    # The smallest MTU of a router's egress link on the path, when smaller
    # than the link the packet came in by or than the packet (None: no such
    # link): the flow sends bigger packets to the agent, which splits them or
    # answers ICMP fragmentation needed (midoflow.sim.router.egress_mtu).
    mtu: int | None = None
    # Load balancing: (pool_id, member_id) picked by the pool's method for a
    # new connection (the agent advances the pool's counter), and SOURCE_IP
    # entries to record, (vip_id, client, member_id, timeout seconds).
    lb_picks: tuple[tuple[str, str], ...] = ()
    lb_sticky: tuple[tuple[str, str, str, int], ...] = ()
    # DNAT bindings of closed connections whose reply tuple a new connection
    # answers from (a client reusing its port): the agent forgets them.
    nat_ended: tuple = ()

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
    rewrites: list[Rewrite] = field(default_factory=list)
    generated: list[Generated] = field(default_factory=list)
    arp_learned: list[tuple[str, str, str]] = field(default_factory=list)
    wait_arp: tuple[str, str] | None = None
    cacheable: bool = True
    conntrack: list = field(default_factory=list)
    ct_hits: list = field(default_factory=list)
    nat: list = field(default_factory=list)
    nat_allocs: list[tuple[str, int, int]] = field(default_factory=list)
    nat_wants: list = field(default_factory=list)
    mtu: int | None = None
    lb_picks: list[tuple[str, str]] = field(default_factory=list)
    lb_sticky: list[tuple[str, str, str, int]] = field(default_factory=list)
    nat_ended: list = field(default_factory=list)

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
            rewrites=tuple(self.rewrites) if action is Action.FORWARD else (),
            generated=tuple(self.generated),
            arp_learned=tuple(self.arp_learned),
            wait_arp=self.wait_arp,
            cacheable=self.cacheable and self.wait_arp is None,
            conntrack=tuple(dict.fromkeys(self.conntrack)),
            ct_hits=tuple(dict.fromkeys(self.ct_hits)),
            nat=tuple(dict.fromkeys(self.nat)),
            nat_allocs=tuple(self.nat_allocs),
            nat_wants=tuple(dict.fromkeys(self.nat_wants)),
            mtu=self.mtu,
            lb_picks=tuple(self.lb_picks),
            lb_sticky=tuple(self.lb_sticky),
            nat_ended=tuple(self.nat_ended),
        )
