"""The packet the simulation sees: its ingress virtual port and header fields."""

from __future__ import annotations

from dataclasses import dataclass, replace

BROADCAST = "ff:ff:ff:ff:ff:ff"


def is_multicast(mac: str) -> bool:
    """Broadcast or multicast: the low bit of the first octet is set."""
    return bool(int(mac[:2], 16) & 1)


@dataclass(frozen=True)
class Packet:
    """Header fields in canonical form: MACs lower-case colon-separated."""

    in_port: str  # virtual port id
    eth_src: str
    eth_dst: str
    eth_type: int = 0x0800
    vlan: int | None = None
    ip_src: str | None = None
    ip_dst: str | None = None
    ip_proto: int | None = None
    tp_src: int | None = None
    tp_dst: int | None = None

    def with_port(self, in_port: str) -> Packet:
        return replace(self, in_port=in_port)
