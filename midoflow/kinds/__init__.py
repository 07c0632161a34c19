"""Each resource kind declared once (:mod:`midoflow.kinds.base`), one module per kind.

``KINDS`` maps a kind's name (``model.HOSTS`` ...) to its declaration, in the
order the API lists them. A new kind is one more module here and one line
below, plus its special rules in its service family.
"""

from midoflow.kinds import (
    bgp_networks,
    bgp_peers,
    bridges,
    chains,
    dhcp_subnets,
    health_monitors,
    hosts,
    ip_addr_groups,
    load_balancers,
    pool_members,
    pools,
    port_groups,
    ports,
    routers,
    routes,
    rules,
    security_groups,
    tunnel_zones,
    vips,
)
from midoflow.kinds.base import Column, Field, Kind

KINDS: dict[str, Kind] = {k.name: k for k in (
    hosts.KIND, tunnel_zones.KIND, bridges.KIND, ports.KIND, routers.KIND, routes.KIND,
    chains.KIND, rules.KIND, port_groups.KIND, ip_addr_groups.KIND, security_groups.KIND,
    bgp_peers.KIND, bgp_networks.KIND, dhcp_subnets.KIND,
    load_balancers.KIND, pools.KIND, vips.KIND, pool_members.KIND, health_monitors.KIND,
)}


def kind(name: str) -> Kind:
    return KINDS[name]


__all__ = ["KINDS", "Column", "Field", "Kind", "kind"]
