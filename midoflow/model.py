"""Typed views of the topology objects the store holds as JSON dicts.

The store and the API work on plain dicts (what is written to ZooKeeper);
agents and the simulation read them through these dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Object kinds, as they appear in store paths and REST URLs.
HOSTS = "hosts"
TUNNEL_ZONES = "tunnel_zones"
BRIDGES = "bridges"
PORTS = "ports"
ROUTERS = "routers"
ROUTES = "routes"
KINDS = (HOSTS, TUNNEL_ZONES, BRIDGES, PORTS, ROUTERS, ROUTES)

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

# Tunnel keys name the egress virtual port on the wire (VXLAN VNI is 24 bits).
TUNNEL_KEY_MIN = 1
TUNNEL_KEY_MAX = (1 << 24) - 1


class _Model:
    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

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
    id: str
    name: str = ""
    tenant_id: str = ""
    admin_state_up: bool = True
    port_ids: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bridge:
        d = dict(d)
        d["port_ids"] = tuple(d.get("port_ids", ()))
        return super().from_dict(d)


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


@dataclass(frozen=True)
class Router(_Model):
    """A virtual L3 router. Its ports (device_type "router") carry MAC and IP;
    each port's network is a connected route; ``routes`` adds the rest."""

    id: str
    name: str = ""
    tenant_id: str = ""
    admin_state_up: bool = True
    port_ids: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Router:
        d = dict(d)
        d["port_ids"] = tuple(d.get("port_ids", ()))
        return super().from_dict(d)


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
class HostState:
    """What a live agent publishes about its host (ephemeral in the store)."""

    host_id: str
    hostname: str = ""
    tunnel_ips: dict[str, str] = field(default_factory=dict)
    ovs_connected: bool = False
    started_at: float = 0.0


def from_dict(kind: str, d: dict[str, Any]):
    return {HOSTS: Host, TUNNEL_ZONES: TunnelZone, BRIDGES: Bridge, PORTS: Port,
            ROUTERS: Router, ROUTES: Route}[kind].from_dict(d)
