"""Neutron routers, router interfaces, gateways and floating IPs as native
objects: PURE functions over plain dicts (no store, service, kazoo, os-ken).

A Neutron router ``R`` is one native router with the same id. Each of its
interface ports and its gateway port ``P`` (Neutron ports, whose id is the
native *bridge* port) gets a native router port ``gen_id(P, "router-port")``
linked to that bridge port. With a gateway, ``R`` gets a default route via the
external subnet's gateway and two generated NAT chains, its inbound and
outbound filters (MidoNet's RouterTranslator / FloatingIpTranslator shapes):

* inbound (``gen_id(R, "nat-in-chain")``): per associated floating IP
  ``rev_snat nw_dst fip/32`` (replies to the VM's own connections) then
  ``dnat nw_dst fip/32 -> fixed``; then ``rev_snat nw_dst gw_ip/32``.
* outbound (``gen_id(R, "nat-out-chain")``): per floating IP
  ``rev_dnat nw_src fixed/32`` (replies of connections made to the floating
  IP) then ``snat nw_src fixed/32 out_ports [gw] -> fip``; then, with
  ``enable_snat``, ``snat out_ports [gw] -> gw_ip:1024-65535``. Traffic between
  the router's own subnets leaves by another port: never translated.

Every generated id is ``uuid5(<neutron id>, <role>)``: the translation finds
its objects again without a map, and the native API refuses to change them.
"""

from __future__ import annotations

import uuid
from dataclasses import MISSING, fields
from typing import Any

import netaddr

from midoflow import model

Data = dict[str, Any]

INTERFACE_OWNERS = ("network:router_interface", "network:router_interface_distributed",
                    "network:ha_router_replicated_interface")
GATEWAY_OWNER = "network:router_gateway"
ETH_IP = 0x0800
SNAT_PORTS = (1024, 65535)
ANY = "0.0.0.0/0"


def gen_id(owner: str, role: str) -> str:
    """The id of the native object playing ``role`` for the Neutron object ``owner``."""
    return str(uuid.uuid5(uuid.UUID(owner), role))


def router_port_id(neutron_port_id: str) -> str:
    return gen_id(neutron_port_id, "router-port")


def chain_ids(router_id: str) -> tuple[str, str]:
    """(inbound, outbound) generated NAT chains of a router."""
    return gen_id(router_id, "nat-in-chain"), gen_id(router_id, "nat-out-chain")


def fixed_ip(port: Data, subnet_id: str | None = None) -> Data | None:
    """A port's first fixed IP (on ``subnet_id`` if given)."""
    for f in port.get("fixed_ips") or ():
        if subnet_id is None or f.get("subnet_id") == subnet_id:
            return f
    return None


# ----------------------------------------------------------------- devices
def native_router(router: Data, port_ids: list[str], filters: bool) -> Data:
    """The native router of a Neutron router; ``filters``: it has a gateway (NAT chains)."""
    inbound, outbound = chain_ids(router["id"]) if filters else (None, None)
    return {"id": router["id"], "tenant_id": router.get("project_id") or "",
            "name": router.get("name") or "", "admin_state_up": router.get("admin_state_up", True),
            "port_ids": list(port_ids), "inbound_filter_id": inbound,
            "outbound_filter_id": outbound}


def router_port(port: Data, subnet: Data, router_id: str, tunnel_key: int,
                proxy_arp: list[str] | None = None) -> Data:
    """The native router port for a Neutron interface or gateway port, linked to
    the port's native (interior) bridge port."""
    fip = fixed_ip(port, subnet["id"])
    if fip is None:
        raise ValueError(f"port {port['id']} has no address on subnet {subnet['id']}")
    net = netaddr.IPNetwork(subnet["cidr"])
    return {"id": router_port_id(port["id"]), "device_id": router_id,
            "device_type": model.DEVICE_ROUTER, "type": model.PORT_INTERIOR,
            "admin_state_up": port.get("admin_state_up", True), "host_id": None,
            "interface_name": None, "peer_id": port["id"], "name": port.get("name") or "",
            "tunnel_key": tunnel_key, "mac": (port.get("mac_address") or "").lower() or None,
            "ip_address": fip["ip_address"], "prefix_len": net.prefixlen,
            "inbound_filter_id": None, "outbound_filter_id": None,
            "proxy_arp": sorted(proxy_arp or (), key=lambda a: int(netaddr.IPAddress(a)))}


# ------------------------------------------------------------------ routes
def _route(router_id: str, role: str, dst: str, port_id: str, gateway: str | None) -> Data:
    return {"id": gen_id(router_id, role), "router_id": router_id, "dst_cidr": dst,
            "src_cidr": ANY, "next_hop_port": port_id, "next_hop_gateway": gateway,
            "weight": model.ROUTE_DEFAULT_WEIGHT, "type": model.ROUTE_NORMAL}


def nexthop_port(nexthop: str, attached: list[tuple[Data, Data]]) -> Data | None:
    """The Neutron port (of ``attached`` (port, subnet) pairs) whose subnet holds ``nexthop``."""
    ip = netaddr.IPAddress(nexthop)
    for port, subnet in attached:
        if ip in netaddr.IPNetwork(subnet["cidr"]):
            return port
    return None


def router_routes(router: Data, attached: list[tuple[Data, Data]],
                  gateway: tuple[Data, Data] | None) -> list[Data]:
    """The default route through the gateway (to the external subnet's gateway_ip)
    and the extra routes (``routes``), each to the router port on its nexthop's
    subnet. ``attached``: the (port, subnet) pairs of interfaces and gateway."""
    rid = router["id"]
    out = []
    if gateway is not None:
        gport, gsub = gateway
        if gsub.get("gateway_ip"):
            out.append(_route(rid, "default-route", ANY, router_port_id(gport["id"]),
                              gsub["gateway_ip"]))
    for r in router.get("routes") or ():
        port = nexthop_port(r["nexthop"], attached)
        if port is None:  # validated on write; an interface removed meanwhile: no route
            continue
        dst = str(netaddr.IPNetwork(r["destination"]).cidr)
        out.append(_route(rid, f"extra-route:{dst}:{r['nexthop']}", dst,
                          router_port_id(port["id"]), r["nexthop"]))
    return out


# ------------------------------------------------------------------- rules
_RULE_DEFAULTS: Data = {f.name: f.default for f in fields(model.Rule)
                        if f.default is not MISSING and f.name not in ("id", "chain_id")}


def _rule(chain_id: str, owner: str, role: str, action: str, **conds: Any) -> Data:
    r: Data = {"id": gen_id(owner, role), "chain_id": chain_id, "action": action}
    r.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in _RULE_DEFAULTS.items()})
    r.update(conds)
    return r


def _target(addr: str, ports: tuple[int, int] = (0, 0)) -> list[Data]:
    return [{"addr_from": addr, "addr_to": addr, "port_from": ports[0], "port_to": ports[1]}]


def router_rules(router: Data, gateway_port: Data | None,
                 floatingips: list[Data]) -> tuple[list[Data], list[Data]]:
    """(inbound rules, outbound rules) of a router's NAT chains, in order, with
    deterministic ids; ([], []) without a gateway. ``floatingips``: the Neutron
    floating IPs associated through this router (others are ignored)."""
    if gateway_port is None:
        return [], []
    rid = router["id"]
    in_id, out_id = chain_ids(rid)
    gw = fixed_ip(gateway_port)
    gw_port = router_port_id(gateway_port["id"])
    info = router.get("external_gateway_info") or {}
    inbound: list[Data] = []
    outbound: list[Data] = []
    fips = sorted((f for f in floatingips if f.get("router_id") == rid and f.get("port_id")
                   and f.get("fixed_ip_address")),
                  key=lambda f: int(netaddr.IPAddress(f["floating_ip_address"])))
    for f in fips:
        fip, fixed, fid = f["floating_ip_address"], f["fixed_ip_address"], f["id"]
        inbound.append(_rule(in_id, fid, "rev-snat", model.RULE_REV_SNAT, eth_type=ETH_IP,
                             nw_dst=f"{fip}/32"))
        inbound.append(_rule(in_id, fid, "dnat", model.RULE_DNAT, eth_type=ETH_IP,
                             nw_dst=f"{fip}/32", nat_targets=_target(fixed)))
        outbound.append(_rule(out_id, fid, "rev-dnat", model.RULE_REV_DNAT, eth_type=ETH_IP,
                              nw_src=f"{fixed}/32"))
        outbound.append(_rule(out_id, fid, "snat", model.RULE_SNAT, eth_type=ETH_IP,
                              nw_src=f"{fixed}/32", out_ports=[gw_port],
                              nat_targets=_target(fip)))
    if gw is not None and info.get("enable_snat", True):
        inbound.append(_rule(in_id, rid, "rev-snat", model.RULE_REV_SNAT, eth_type=ETH_IP,
                             nw_dst=f"{gw['ip_address']}/32"))
        outbound.append(_rule(out_id, rid, "snat", model.RULE_SNAT, eth_type=ETH_IP,
                              out_ports=[gw_port],
                              nat_targets=_target(gw["ip_address"], SNAT_PORTS)))
    return inbound, outbound


def router_chains(router: Data, gateway_port: Data | None,
                  floatingips: list[Data]) -> list[tuple[Data, list[Data]]]:
    """The generated chains (with their rules) of a router: none without a gateway."""
    if gateway_port is None:
        return []
    inbound, outbound = router_rules(router, gateway_port, floatingips)
    rid, tenant = router["id"], router.get("project_id") or ""
    in_id, out_id = chain_ids(rid)
    return [({"id": in_id, "name": f"router-{rid}-nat-in", "tenant_id": tenant,
              "rule_ids": [r["id"] for r in inbound]}, inbound),
            ({"id": out_id, "name": f"router-{rid}-nat-out", "tenant_id": tenant,
              "rule_ids": [r["id"] for r in outbound]}, outbound)]


def proxy_arp(router_id: str, floatingips: list[Data]) -> list[str]:
    """The floating IPs the router's gateway port answers ARP for."""
    return sorted({f["floating_ip_address"] for f in floatingips
                   if f.get("router_id") == router_id and f.get("port_id")},
                  key=lambda a: int(netaddr.IPAddress(a)))
