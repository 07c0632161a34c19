"""The packet the simulation sees: its ingress virtual port and header fields."""

from __future__ import annotations

from dataclasses import dataclass, replace

from midoflow.nat.conntrack import PROTO_ICMP, PROTO_TCP, PROTO_UDP  # noqa: F401 (re-exported)

BROADCAST = "ff:ff:ff:ff:ff:ff"
ETH_IP = 0x0800
ETH_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2
ICMP_ECHO_REPLY = 0
ICMP_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTO = 2
UNREACH_PORT = 3
UNREACH_NEEDFRAG = 4  # fragmentation needed and DF set (RFC 1191: with the next-hop MTU)
UNREACH_FILTER = 13


def is_multicast(mac: str) -> bool:
    """Broadcast or multicast: the low bit of the first octet is set."""
    return bool(int(mac[:2], 16) & 1)


@dataclass(frozen=True)
class Packet:
    """Header fields in canonical form: MACs lower-case colon-separated, IPv4
    dotted quads. ``tp_src``/``tp_dst`` are TCP/UDP ports; for ICMP they hold
    type and code. ARP packets carry ``arp_*`` (and no ``ip_*``)."""

    in_port: str  # virtual port id
    eth_src: str
    eth_dst: str
    eth_type: int = ETH_IP
    vlan: int | None = None
    ip_src: str | None = None
    ip_dst: str | None = None
    ip_proto: int | None = None
    ip_ttl: int = 64
    ip_tos: int = 0
    ip_frag: int = 0  # 0 unfragmented, 1 first fragment, 2 a later fragment
    tp_src: int | None = None
    tp_dst: int | None = None
    arp_op: int | None = None
    arp_sha: str | None = None
    arp_spa: str | None = None
    arp_tha: str | None = None
    arp_tpa: str | None = None
    tcp_flags: int | None = None
    icmp_id: int | None = None  # ICMP echo request/reply identifier
    # An ICMP error's quoted packet: (proto, src, sport, dst, dport).
    icmp_inner: tuple[int, str, int, str, int] | None = None
    ip_id: int | None = None  # IPv4 identification; set for fragments (ip_frag 1, 2) only
    # IPv4 total length (0: unknown, e.g. a trace or a kept flow: never too
    # big for a link) and the Don't Fragment flag: the routers' MTU check.
    ip_len: int = 0
    ip_df: bool = False

    def with_port(self, in_port: str) -> Packet:
        return replace(self, in_port=in_port)

    def evolve(self, **changes) -> Packet:
        """A copy with ``changes``: ``dataclasses.replace`` without its cost
        (no validation: the names must be fields), for the simulation's hot path."""
        new = object.__new__(Packet)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @property
    def is_ip(self) -> bool:
        return self.eth_type == ETH_IP and self.ip_dst is not None

    @property
    def is_arp(self) -> bool:
        return self.eth_type == ETH_ARP and self.arp_op is not None
