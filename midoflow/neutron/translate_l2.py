"""Neutron networks, ports and security groups as midoflow's native objects (pure).

Each function takes Neutron dicts as stored (kinds ``neutron.*``) and returns
the native dict (:mod:`midoflow.model`, :mod:`midoflow.kinds`) with the SAME
id: a network is a bridge, a port a bridge port, a security group a native
security group whose rules are embedded. The service writes the result in the
request's transaction; the native staging helpers then derive the chains.
"""

from __future__ import annotations

import uuid
from typing import Any

import netaddr

from midoflow import model

Data = dict[str, Any]

# Ports Neutron's router code owns: interior bridge ports linked to a router port.
ROUTER_OWNERS = ("network:router_interface", "network:router_interface_distributed",
                 "network:router_gateway", "network:ha_router_replicated_interface")
# Ports that only reserve an address: no native port.
NO_NATIVE_OWNERS = ("network:floatingip",)

# Neutron's protocol names (neutron_lib.constants.IP_PROTOCOL_MAP) and "any".
PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1,
    "igmp": 2, "ip": 0, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58,
    "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89,
    "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}


def is_router_port(port: Data) -> bool:
    return (port.get("device_owner") or "") in ROUTER_OWNERS


def has_native(port: Data) -> bool:
    return (port.get("device_owner") or "") not in NO_NATIVE_OWNERS


def network_to_bridge(net: Data, port_ids: list[str] | tuple[str, ...] = (),
                      current: Data | None = None) -> Data:
    """The network's bridge; ``port_ids`` and the filters are the bridge's own
    (kept from ``current``, the bridge as stored, if any)."""
    cur = current or {}
    return {
        "id": net["id"],
        "name": net.get("name") or "",
        "tenant_id": net.get("project_id") or "",
        "admin_state_up": bool(net.get("admin_state_up", True)),
        "port_ids": list(cur.get("port_ids", port_ids)),
        "inbound_filter_id": cur.get("inbound_filter_id"),
        "outbound_filter_id": cur.get("outbound_filter_id"),
        "mtu": cur.get("mtu"),  # set through /v1 only (Neutron's stays computed)
    }


def dhcp_subnet_id(subnet_id: str) -> str:
    """The id of a Neutron subnet's native DHCP subnet."""
    return str(uuid.uuid5(uuid.UUID(subnet_id), "dhcp"))


def subnet_to_dhcp(sub: Data) -> Data | None:
    """The native DHCP subnet of a Neutron IPv4 subnet (None for another version).

    Every IPv4 subnet has one; ``enabled`` follows ``enable_dhcp``, so turning
    DHCP off and on keeps its id. At most 5 DNS servers (Neutron's default
    max_dns_nameservers); host routes whose nexthop is off the subnet are left
    out (a client could not reach that next hop; Linux refuses such a route)."""
    if sub.get("ip_version", 4) != 4:
        return None
    net = netaddr.IPNetwork(sub["cidr"])
    routes = [{"destination": str(netaddr.IPNetwork(r["destination"]).cidr),
               "nexthop": r["nexthop"]}
              for r in sub.get("host_routes") or ()
              if r["nexthop"] == "0.0.0.0" or netaddr.IPAddress(r["nexthop"]) in net]
    return {
        "id": dhcp_subnet_id(sub["id"]),
        "bridge_id": sub["network_id"],
        "cidr": str(net.cidr),
        "gateway_ip": sub.get("gateway_ip"),
        "server_ip": None,
        "dns_servers": list(dict.fromkeys(sub.get("dns_nameservers") or ()))[:5],
        "domain_name": "",
        "lease_time": 86400,
        "host_routes": routes,
        "enabled": bool(sub.get("enable_dhcp", True)),
    }


def default_hostname(ip: str | None) -> str:
    """Neutron's host name for a port without dns_name: host-10-0-0-5."""
    return f"host-{ip.replace('.', '-')}" if ip else ""


def extra_dhcp_opts_to_native(opts: Any) -> list[Data]:
    """The port's IPv4 extra DHCP options (a null value sets nothing)."""
    return [{"opt_name": o["opt_name"], "opt_value": o["opt_value"]}
            for o in opts or () if o.get("ip_version", 4) == 4 and o.get("opt_value") is not None]


def port_to_native(port: Data, tunnel_key: int, host_id: str | None = None,
                   current: Data | None = None) -> Data:
    """The port's bridge port: exterior for a VM's, interior (no port security;
    the router code sets ``peer_id``) for a router's. ``host_id``: the native host
    ``binding:host_id`` names, if it is known. What the native side owns (the
    link, the interface binding, the filters its staging helpers point at the
    generated chains) is kept from ``current``."""
    cur = current or {}
    router = is_router_port(port)
    secure = not router and bool(port.get("port_security_enabled"))
    sgs = [] if router else list(port.get("security_groups") or ())
    return {
        "id": port["id"],
        "device_id": port["network_id"],
        "device_type": model.DEVICE_BRIDGE,
        "type": model.PORT_INTERIOR if router else model.PORT_EXTERIOR,
        "admin_state_up": bool(port.get("admin_state_up", True)),
        "host_id": None if router else host_id,
        "interface_name": None if router else cur.get("interface_name"),
        "peer_id": cur.get("peer_id") if router else None,
        "name": port.get("name") or "",
        "tunnel_key": cur.get("tunnel_key", tunnel_key),
        "mac": (port.get("mac_address") or "").lower() or None,
        "ip_address": None,
        "prefix_len": None,
        "inbound_filter_id": cur.get("inbound_filter_id"),
        "outbound_filter_id": cur.get("outbound_filter_id"),
        "fixed_ips": [f["ip_address"] for f in port.get("fixed_ips") or ()],
        "security_group_ids": sgs,
        "port_security_enabled": secure,
        "allowed_address_pairs": [
            {"ip_address": p["ip_address"], "mac_address": p.get("mac_address")}
            for p in (port.get("allowed_address_pairs") or ())] if secure else [],
        "mtu": None,
        "extra_dhcp_opts": [] if router else extra_dhcp_opts_to_native(
            port.get("extra_dhcp_opts")),
        "instance_id": None if router else (port.get("device_id") or None),
        "tenant_id": "" if router else (port.get("project_id") or ""),
        "hostname": "" if router else (
            port.get("dns_name") or default_hostname(
                next((f["ip_address"] for f in port.get("fixed_ips") or ()), None))),
    }


def protocol_number(protocol: Any) -> int | None:
    """A rule's protocol as a number: a name, a number string, a number; None/"any"."""
    if protocol is None or protocol == "any":
        return None
    if isinstance(protocol, int):
        return protocol
    if protocol in PROTOCOLS:
        return PROTOCOLS[protocol]
    return int(protocol)


def rule_to_native(rule: Data) -> Data | None:
    """A Neutron rule as a native one, or None for what is not translated (IPv6)."""
    if rule.get("ethertype", "IPv4") != "IPv4":
        return None
    return {
        "id": rule["id"],
        "direction": rule["direction"],
        "ethertype": "IPv4",
        "protocol": protocol_number(rule.get("protocol")),
        "port_range_min": rule.get("port_range_min"),
        "port_range_max": rule.get("port_range_max"),
        "remote_ip_prefix": rule.get("remote_ip_prefix"),
        "remote_group_id": rule.get("remote_group_id"),
    }


def sg_to_native(sg: Data, rules: list[Data]) -> Data:
    """The group with its IPv4 rules embedded, ordered by creation then id."""
    ordered = sorted((r for r in rules if r.get("security_group_id") == sg["id"]),
                     key=lambda r: (r.get("created_at") or "", r["id"]))
    native = [n for r in ordered if (n := rule_to_native(r)) is not None]
    return {
        "id": sg["id"],
        "name": sg.get("name") or "",
        "tenant_id": sg.get("project_id") or "",
        "description": sg.get("description") or "",
        "rules": native,
    }
