"""Typed views of the topology objects the store holds as JSON dicts.

The store and the API work on plain dicts (what is written to ZooKeeper);
agents and the simulation read them through these dataclasses.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

# Object kinds, as they appear in store paths and REST URLs.
HOSTS = "hosts"
TUNNEL_ZONES = "tunnel_zones"
BRIDGES = "bridges"
PORTS = "ports"
ROUTERS = "routers"
ROUTES = "routes"
CHAINS = "chains"
RULES = "rules"
PORT_GROUPS = "port_groups"
IP_ADDR_GROUPS = "ip_addr_groups"
SECURITY_GROUPS = "security_groups"
BGP_PEERS = "bgp_peers"
BGP_NETWORKS = "bgp_networks"
DHCP_SUBNETS = "dhcp_subnets"
LOAD_BALANCERS = "load_balancers"
POOLS = "pools"
VIPS = "vips"
POOL_MEMBERS = "pool_members"
HEALTH_MONITORS = "health_monitors"
LB_KINDS = (LOAD_BALANCERS, POOLS, VIPS, POOL_MEMBERS, HEALTH_MONITORS)
KINDS = (HOSTS, TUNNEL_ZONES, BRIDGES, PORTS, ROUTERS, ROUTES, CHAINS, RULES, PORT_GROUPS,
         IP_ADDR_GROUPS, SECURITY_GROUPS, BGP_PEERS, BGP_NETWORKS, DHCP_SUBNETS) + LB_KINDS

# Ids the service derives for the objects it generates (security groups'
# chains and address groups, ports' filter chains): uuid5(GENERATED_NAMESPACE,
# "<what>:<owner id>[:...]"). Users cannot create objects with such ids.
GENERATED_NAMESPACE = uuid.UUID("9a4a2e1c-5f0d-4b8e-9d3c-6b1f7e0a2c11")


def generated_id(*parts: str) -> str:
    return str(uuid.uuid5(GENERATED_NAMESPACE, ":".join(parts)))


@lru_cache(maxsize=65536)
def port_chain_id(port_id: str, which: str) -> str:
    """The id of a protected port's generated chain: ``which`` is
    "inbound" (from the VM), "outbound" (to the VM) or "anti-spoof"."""
    return generated_id("port-chain", which, port_id)


def conntrack_enforced(port: Port, which: str) -> bool:
    """Whether the port's ``which`` filter ("inbound": from the VM,
    "outbound": to it) is its generated security-group chain, which the
    port's host enforces with OVS conntrack when ``sg_conntrack`` is on
    (``midoflow.agent.sgflows``). A chain a user set on the port instead is
    simulated, as any chain."""
    chain = port.inbound_filter_id if which == "inbound" else port.outbound_filter_id
    return chain is not None and chain == port_chain_id(port.id, which)


PORT_EXTERIOR = "exterior"
PORT_INTERIOR = "interior"
TUNNEL_VXLAN = "vxlan"
TUNNEL_GRE = "gre"
TUNNEL_TYPES = (TUNNEL_VXLAN, TUNNEL_GRE)
DEVICE_BRIDGE = "bridge"
DEVICE_ROUTER = "router"
DEVICE_TYPES = (DEVICE_BRIDGE, DEVICE_ROUTER)

ROUTE_NORMAL = "normal"
ROUTE_BLACKHOLE = "blackhole"
ROUTE_REJECT = "reject"
ROUTE_TYPES = (ROUTE_NORMAL, ROUTE_BLACKHOLE, ROUTE_REJECT)
ROUTE_DEFAULT_WEIGHT = 100

# BGP session timers (seconds). A hold time of 0 means no keepalives at all;
# otherwise keepalive * 3 <= hold_time (RFC 4271's recommended ratio).
BGP_KEEPALIVE = 10
BGP_HOLD_TIME = 30
BGP_CONNECT_RETRY = 5

# Rule actions. accept/drop/reject end the walk of the chains of this device;
# jump calls another chain; return leaves the current chain; continue goes on.
# The NAT actions translate and accept (see midoflow.nat).
RULE_ACCEPT = "accept"
RULE_DROP = "drop"
RULE_REJECT = "reject"
RULE_JUMP = "jump"
RULE_RETURN = "return"
RULE_CONTINUE = "continue"
RULE_DNAT = "dnat"
RULE_SNAT = "snat"
RULE_REV_DNAT = "rev_dnat"
RULE_REV_SNAT = "rev_snat"
# Stateless NAT: rewrite the address (to the target's addr_from), keep no
# state; the other direction is a rule of its own.
RULE_STATIC_DNAT = "static_dnat"
RULE_STATIC_SNAT = "static_snat"
RULE_ACTIONS = (RULE_ACCEPT, RULE_DROP, RULE_REJECT, RULE_JUMP, RULE_RETURN, RULE_CONTINUE,
                RULE_DNAT, RULE_SNAT, RULE_REV_DNAT, RULE_REV_SNAT, RULE_STATIC_DNAT,
                RULE_STATIC_SNAT)
NAT_ACTIONS = (RULE_DNAT, RULE_SNAT, RULE_STATIC_DNAT, RULE_STATIC_SNAT)
# Fragment policies of a rule: which IPv4 packets it may match.
FRAG_ANY = "any"
FRAG_UNFRAGMENTED = "unfragmented"
FRAG_HEADER = "header"  # unfragmented, or the first fragment
FRAG_NONHEADER = "nonheader"  # a later fragment (no L4 header)
FRAG_POLICIES = (FRAG_ANY, FRAG_UNFRAGMENTED, FRAG_HEADER, FRAG_NONHEADER)
# The conditions a rule may invert (listed in Rule.invert).
RULE_CONDITIONS = ("in_ports", "out_ports", "port_group", "ip_addr_group_src",
                   "ip_addr_group_dst", "eth_type", "eth_src", "eth_dst", "nw_src", "nw_dst",
                   "nw_proto", "nw_tos", "tp_src", "tp_dst")

# Tunnel keys name the egress virtual port on the wire (VXLAN VNI is 24 bits).
# The last one carries flow state between agents, never a packet of a VM.
TUNNEL_KEY_MIN = 1
TUNNEL_KEY_MAX = (1 << 24) - 2
STATE_TUNNEL_KEY = (1 << 24) - 1


class _Model:
    # Fields stored as JSON lists that the frozen model holds as tuples.
    _TUPLES: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for k in cls._TUPLES:
            d[k] = tuple(d.get(k) or ())
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Host(_Model):
    id: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class TunnelZoneMember(_Model):
    host_id: str
    ip: str


@dataclass(frozen=True)
class TunnelZone(_Model):
    id: str
    name: str
    type: str = TUNNEL_VXLAN
    members: tuple[TunnelZoneMember, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TunnelZone:
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            type=d.get("type", TUNNEL_VXLAN),
            members=tuple(TunnelZoneMember.from_dict(m) for m in d.get("members", ())),
        )


@dataclass(frozen=True)
class Bridge(_Model):
    _TUPLES = ("port_ids",)

    id: str
    name: str = ""
    tenant_id: str = ""
    admin_state_up: bool = True
    port_ids: tuple[str, ...] = ()
    inbound_filter_id: str | None = None
    outbound_filter_id: str | None = None
    # The network's MTU (what DHCP tells its VMs; the router's egress MTU
    # towards it). None: the agent's default_mtu (underlay less tunnel overhead).
    mtu: int | None = None


def _pairs(items: Any, a: str, b: str) -> tuple[tuple[str, str], ...]:
    """Stored lists of {a: .., b: ..} objects (or pairs) as a tuple of pairs."""
    return tuple((i[a], i.get(b) or "") if isinstance(i, dict) else (i[0], i[1])
                 for i in items or ())


@dataclass(frozen=True)
class Port(_Model):
    """A virtual port. Exterior ports are bound to a host interface; interior
    ports are linked to a peer port on another device."""

    id: str
    device_id: str
    tunnel_key: int
    device_type: str = DEVICE_BRIDGE
    type: str = PORT_EXTERIOR
    admin_state_up: bool = True
    host_id: str | None = None
    interface_name: str | None = None
    peer_id: str | None = None
    name: str = ""
    # Router ports only: the port's MAC and its address on the attached network.
    mac: str | None = None
    ip_address: str | None = None
    prefix_len: int | None = None
    # Router ports only: more addresses the port answers ARP for with its MAC
    # (a Neutron gateway port's floating IPs, on the external network).
    proxy_arp: tuple[str, ...] = ()
    # Chains applied to packets entering the topology from this port
    # (inbound) and leaving through it (outbound).
    inbound_filter_id: str | None = None
    outbound_filter_id: str | None = None
    # Bridge ports (Neutron's port security): the VM's addresses, its
    # security groups and the extra (ip, mac) pairs it may send from.
    fixed_ips: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    port_security_enabled: bool = False
    allowed_address_pairs: tuple[tuple[str, str], ...] = ()
    # Exterior router ports (uplinks): the link's MTU. None: the agent's underlay_mtu.
    mtu: int | None = None
    # Bridge ports: DHCP options for this VM only, (option name or number, value)
    # (Neutron's extra_dhcp_opt names), and what the metadata service tells it.
    extra_dhcp_opts: tuple[tuple[str, str], ...] = ()
    instance_id: str | None = None
    tenant_id: str = ""
    hostname: str = ""

    _TUPLES = ("fixed_ips", "security_group_ids", "proxy_arp")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Port:
        d = dict(d)
        d["allowed_address_pairs"] = _pairs(d.get("allowed_address_pairs"), "ip_address",
                                            "mac_address")
        d["extra_dhcp_opts"] = _pairs(d.get("extra_dhcp_opts"), "opt_name", "opt_value")
        return super().from_dict(d)


@dataclass(frozen=True)
class SecurityGroupRule(_Model):
    """Neutron's rule: ``direction`` ingress (to the VM) or egress; None
    fields match anything. ``remote_group_id`` means "from/to any port of
    that group"."""

    id: str
    direction: str
    ethertype: str = "IPv4"
    protocol: int | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


@dataclass(frozen=True)
class SecurityGroup(_Model):
    """A Neutron security group. The service keeps it expressed as chains
    (one ingress and one egress chain per group), an IP address group of its
    members' addresses, and a filter chain pair per member port."""

    id: str
    name: str = ""
    tenant_id: str = ""
    description: str = ""
    rules: tuple[SecurityGroupRule, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SecurityGroup:
        d = dict(d)
        d["rules"] = tuple(SecurityGroupRule.from_dict(r) for r in d.get("rules") or ())
        return super().from_dict(d)


@dataclass(frozen=True)
class NatTarget(_Model):
    """Translate to an address in [addr_from, addr_to] and a port in
    [port_from, port_to] (0, 0: keep the port)."""

    addr_from: str
    addr_to: str
    port_from: int = 0
    port_to: int = 0


@dataclass(frozen=True)
class Rule(_Model):
    """One rule of a chain. Unset conditions match anything; ``invert`` names
    the conditions whose sense is inverted. ``tp_src``/``tp_dst`` are
    inclusive (lo, hi) ranges; for ICMP they hold the type and the code."""

    id: str
    chain_id: str
    action: str
    jump_chain_id: str | None = None
    in_ports: tuple[str, ...] = ()
    out_ports: tuple[str, ...] = ()
    port_group: str | None = None
    ip_addr_group_src: str | None = None
    ip_addr_group_dst: str | None = None
    eth_type: int | None = None
    eth_src: str | None = None
    eth_dst: str | None = None
    nw_src: str | None = None
    nw_dst: str | None = None
    nw_proto: int | None = None
    nw_tos: int | None = None
    tp_src: tuple[int, int] | None = None
    tp_dst: tuple[int, int] | None = None
    match_forward_flow: bool = False
    match_return_flow: bool = False
    fragment_policy: str = FRAG_ANY
    invert: tuple[str, ...] = ()
    nat_targets: tuple[NatTarget, ...] = ()

    _TUPLES = ("in_ports", "out_ports", "invert")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule:
        d = dict(d)
        for k in ("tp_src", "tp_dst"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        d["nat_targets"] = tuple(NatTarget.from_dict(t) for t in d.get("nat_targets") or ())
        return super().from_dict(d)


@dataclass(frozen=True)
class Chain(_Model):
    _TUPLES = ("rule_ids",)

    id: str
    name: str = ""
    tenant_id: str = ""
    rule_ids: tuple[str, ...] = ()



@dataclass(frozen=True)
class PortGroup(_Model):
    """Ports grouped for rules; a stateful group's members all receive the
    flow state of connections through any of them (gateway uplinks)."""

    _TUPLES = ("port_ids",)

    id: str
    name: str = ""
    tenant_id: str = ""
    stateful: bool = False
    port_ids: tuple[str, ...] = ()



@dataclass(frozen=True)
class IpAddrGroup(_Model):
    _TUPLES = ("addresses",)

    id: str
    name: str = ""
    tenant_id: str = ""
    addresses: tuple[str, ...] = ()



@dataclass(frozen=True)
class Router(_Model):
    """A virtual L3 router. Its ports (device_type "router") carry MAC and IP;
    each port's network is a connected route; ``routes`` adds the rest."""

    _TUPLES = ("port_ids",)

    id: str
    name: str = ""
    tenant_id: str = ""
    admin_state_up: bool = True
    port_ids: tuple[str, ...] = ()
    inbound_filter_id: str | None = None
    outbound_filter_id: str | None = None



@dataclass(frozen=True)
class Route(_Model):
    """A route of a router: ``dst_cidr`` (and ``src_cidr``) to ``next_hop_port``,
    via ``next_hop_gateway`` (None: the destination is on that port's link).
    Lower ``weight`` wins among equal prefix lengths; equal weights are ECMP."""

    id: str
    router_id: str
    dst_cidr: str = "0.0.0.0/0"
    src_cidr: str = "0.0.0.0/0"
    next_hop_port: str | None = None
    next_hop_gateway: str | None = None
    weight: int = ROUTE_DEFAULT_WEIGHT
    type: str = ROUTE_NORMAL


@dataclass(frozen=True)
class BgpPeer(_Model):
    """A BGP session of the uplink ``port_id`` (an exterior router port with an
    address) to a directly connected peer at ``peer_address`` on that port's
    network. The gateway host where the port is bound runs the speaker."""

    id: str
    port_id: str
    local_as: int
    peer_address: str
    peer_as: int
    keepalive: int = BGP_KEEPALIVE
    hold_time: int = BGP_HOLD_TIME
    connect_retry: int = BGP_CONNECT_RETRY
    name: str = ""


@dataclass(frozen=True)
class BgpNetwork(_Model):
    """A prefix (floating-IP range, provider subnet) that the gateway holding
    ``port_id`` advertises to that port's BGP peers."""

    id: str
    port_id: str
    prefix: str


# Per-port DHCP options by name (Neutron's extra_dhcp_opt names are dnsmasq's;
# a number 1..254 names any other option). "server-ip-address" is not an
# option: it sets the reply header's siaddr (the next server, for PXE).
DHCP_OPTION_CODES: dict[str, int] = {
    "netmask": 1, "time-offset": 2, "router": 3, "time-server": 4, "dns-server": 6, "log-server": 7,
    "lpr-server": 9, "hostname": 12, "boot-file-size": 13, "domain-name": 15,
    "swap-server": 16, "root-path": 17, "extension-path": 18, "ip-forward-enable": 19,
    "non-local-source-routing": 20, "policy-filter": 21, "max-datagram-reassembly": 22,
    "default-ttl": 23, "mtu": 26, "all-subnets-local": 27, "broadcast": 28, "router-discovery": 31,
    "router-solicitation": 32, "static-route": 33, "trailer-encapsulation": 34,
    "arp-timeout": 35, "ethernet-encap": 36, "tcp-ttl": 37, "tcp-keepalive": 38,
    "nis-domain": 40, "nis-server": 41, "ntp-server": 42, "netbios-ns": 44, "netbios-dd": 45,
    "netbios-nodetype": 46, "netbios-scope": 47, "x-windows-fs": 48, "x-windows-dm": 49,
    "lease-time": 51, "T1": 58, "T2": 59, "vendor-class": 60, "nis+-domain": 64,
    "nis+-server": 65, "tftp-server": 66, "bootfile-name": 67, "mobile-ip-home": 68,
    "smtp-server": 69, "pop3-server": 70, "nntp-server": 71, "irc-server": 74,
    "user-class": 77, "client-arch": 93, "client-interface-id": 94, "client-machine-id": 97,
    "domain-search": 119, "sip-server": 120, "classless-static-route": 121,
    "vendor-id-encap": 125, "tftp-server-address": 150, "wpad": 252,
}
DHCP_SIADDR_OPTION = "server-ip-address"
# Options a port may not override: the DHCP protocol's own.
DHCP_RESERVED_CODES = frozenset((0, 50, 52, 53, 54, 55, 57, 61, 255))

DHCP_LEASE_INFINITE = -1
DHCP_LEASE_MIN = 60
DHCP_LEASE_MAX = 31_536_000  # a year


@dataclass(frozen=True)
class DhcpSubnet(_Model):
    """DHCP served by the agents for the VM ports of ``bridge_id`` whose
    fixed address lies in ``cidr``. ``server_ip`` (option 54, the replies'
    source) defaults to ``gateway_ip``, else the subnet's last host address.
    ``lease_time`` in seconds; -1 is an infinite lease."""

    _TUPLES = ("dns_servers",)

    id: str
    bridge_id: str
    cidr: str
    gateway_ip: str | None = None
    server_ip: str | None = None
    dns_servers: tuple[str, ...] = ()
    domain_name: str = ""
    lease_time: int = 86400
    host_routes: tuple[tuple[str, str], ...] = ()
    enabled: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DhcpSubnet:
        d = dict(d)
        d["host_routes"] = _pairs(d.get("host_routes"), "destination", "nexthop")
        return super().from_dict(d)


# ---- layer-4 load balancing (issue 14) -----------------------------------------
LB_TCP = "TCP"
LB_UDP = "UDP"
LB_PROTOCOLS = (LB_TCP, LB_UDP)
LB_ROUND_ROBIN = "ROUND_ROBIN"  # weights ignored (a weight of 0 still takes no new ones)
LB_WEIGHTED_ROUND_ROBIN = "WEIGHTED_ROUND_ROBIN"
LB_LEAST_CONNECTIONS = "LEAST_CONNECTIONS"  # weighted: fewest active / weight
LB_METHODS = (LB_ROUND_ROBIN, LB_WEIGHTED_ROUND_ROBIN, LB_LEAST_CONNECTIONS)
LB_PERSIST_SOURCE_IP = "SOURCE_IP"
LB_PERSISTENCE = (LB_PERSIST_SOURCE_IP,)  # or None: no persistence
LB_WEIGHT_MAX = 256
HM_TCP = "TCP"
HM_HTTP = "HTTP"
HM_HTTPS = "HTTPS"
HM_TYPES = (HM_TCP, HM_HTTP, HM_HTTPS)
HM_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
# A member's health as the elected checker last wrote it (store state, see
# midoflow.store.paths.member_health); a member with no entry counts as ONLINE.
HEALTH_ONLINE = "ONLINE"
HEALTH_ERROR = "ERROR"
# Operating status as the API reports it (Octavia's vocabulary)
OP_ONLINE = "ONLINE"
OP_OFFLINE = "OFFLINE"
OP_ERROR = "ERROR"
OP_NO_MONITOR = "NO_MONITOR"
OP_DEGRADED = "DEGRADED"
# Each load balancer's health-check port: an exterior port of its router with
# the first address of a /30 of HEALTH_NET (the elected agent's namespace has
# the second): link-local, so it collides with no tenant network.
HEALTH_NET = "169.254.252.0/22"


@dataclass(frozen=True)
class LoadBalancer(_Model):
    """Balancing done by ``router_id`` in the simulation, at each ingress host.
    ``health_port_id``: the router's exterior port (address ``health_ip`` in
    ``health_cidr``) through which the elected agent checks the members."""

    id: str
    router_id: str
    name: str = ""
    tenant_id: str = ""
    description: str = ""
    admin_state_up: bool = True
    health_port_id: str | None = None
    health_cidr: str | None = None


@dataclass(frozen=True)
class Pool(_Model):
    id: str
    load_balancer_id: str
    name: str = ""
    tenant_id: str = ""
    description: str = ""
    protocol: str = LB_TCP
    lb_method: str = LB_ROUND_ROBIN
    admin_state_up: bool = True


@dataclass(frozen=True)
class Vip(_Model):
    """A virtual IP (Octavia's listener on its load balancer's VIP address):
    connections to ``address``:``protocol_port`` over ``protocol`` go to a
    member of ``pool_id``. ``session_persistence`` None or "SOURCE_IP" (a
    client stays on its member while it connects again within
    ``persistence_timeout`` seconds)."""

    id: str
    load_balancer_id: str
    address: str
    protocol_port: int
    pool_id: str | None = None
    name: str = ""
    tenant_id: str = ""
    description: str = ""
    protocol: str = LB_TCP
    session_persistence: str | None = None
    persistence_timeout: int = 360
    admin_state_up: bool = True


@dataclass(frozen=True)
class PoolMember(_Model):
    id: str
    pool_id: str
    address: str
    protocol_port: int
    weight: int = 1
    name: str = ""
    tenant_id: str = ""
    admin_state_up: bool = True


@dataclass(frozen=True)
class HealthMonitor(_Model):
    """Checks of ``pool_id``'s members every ``delay`` s, each given
    ``timeout`` s: ``max_retries`` successes in a row make a member ONLINE,
    ``max_retries_down`` failures in a row make it ERROR (Octavia's meaning)."""

    id: str
    pool_id: str
    type: str = HM_TCP
    delay: int = 5
    timeout: int = 3
    max_retries: int = 3
    max_retries_down: int = 3
    http_method: str = "GET"
    url_path: str = "/"
    expected_codes: str = "200"
    name: str = ""
    tenant_id: str = ""
    admin_state_up: bool = True


@dataclass(frozen=True)
class HostState:
    """What a live agent publishes about its host (ephemeral in the store)."""

    host_id: str
    hostname: str = ""
    tunnel_ips: dict[str, str] = field(default_factory=dict)
    ovs_connected: bool = False
    started_at: float = 0.0


def from_dict(kind: str, d: dict[str, Any]):
    return {HOSTS: Host, TUNNEL_ZONES: TunnelZone, BRIDGES: Bridge, PORTS: Port,
            ROUTERS: Router, ROUTES: Route, CHAINS: Chain, RULES: Rule,
            PORT_GROUPS: PortGroup, IP_ADDR_GROUPS: IpAddrGroup,
            SECURITY_GROUPS: SecurityGroup, BGP_PEERS: BgpPeer,
            BGP_NETWORKS: BgpNetwork, DHCP_SUBNETS: DhcpSubnet, LOAD_BALANCERS: LoadBalancer,
            POOLS: Pool, VIPS: Vip, POOL_MEMBERS: PoolMember,
            HEALTH_MONITORS: HealthMonitor}[kind].from_dict(d)
