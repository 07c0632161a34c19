"""Routers, their ports (with addresses) and their routes.

A router port's network may not overlap another port's of the router, and its
MAC is unique among router ports; a route's next hop is a port of the router
and its gateway lies on that port's network. Every route write touches its
router, so route writes serialise per router and a concurrent delete of the
router (or of the next-hop port, which updates the router) fails.
"""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid
from midoflow.service import body as gen
from midoflow.service import dhcp, refs
from midoflow.service import validate as v
from midoflow.service.context import Ctx, sort_key
from midoflow.service.ports import create_device, port_out, tunnel_key, update_device
from midoflow.service.sync import apply_filters
from midoflow.service.txn import Txn
from midoflow.store.base import Create, Data, Update

# What makes two routes of a router the same route (weight is not part of it).
ROUTE_IDENTITY = ("dst_cidr", "src_cidr", "next_hop_port", "next_hop_gateway", "type")
ROUTER_PORT_CREATE = ("id", "type", "admin_state_up", "name", "ip_address", "prefix_len",
                      "mac", "inbound_filter_id", "outbound_filter_id", "mtu")


@refs.special(model.ROUTERS)
def _deleting_router(txn: Txn, router: Data) -> None:
    if router.get("port_ids"):
        raise Conflict(f"router {router['id']} still has {len(router['port_ids'])} port(s): "
                       "delete them first")


class Routers:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    # ------------------------------------------------------------- routers
    def list_routers(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self.ctx.out(model.ROUTERS, d, ver)
                       for d, ver in self.ctx.listed(model.ROUTERS, tenant_id)), key=sort_key)

    def get_router(self, id: str) -> Data:
        return self.ctx.out(model.ROUTERS, *self.ctx.get(model.ROUTERS, id))

    def create_router(self, body: Any) -> Data:
        return self.get_router(create_device(self.ctx, model.ROUTERS, body))

    def update_router(self, id: str, body: Any) -> Data:
        return self.get_router(update_device(self.ctx, model.ROUTERS, id, body))

    def delete_router(self, id: str) -> None:
        """Refused while the router has ports; its routes go with it (declared),
        atomically.

        Every route write touches its router, so a route added meanwhile makes
        this commit fail (stale version) instead of leaving the route behind."""
        self.ctx.delete(model.ROUTERS, *self.ctx.get(model.ROUTERS, id))

    def _router_ports(self, router_id: str) -> list[tuple[Data, int]]:
        return [(p, pv) for p, pv in self.store.list(model.PORTS)
                if p.get("device_id") == router_id]

    def list_router_ports(self, id: str) -> list[Data]:
        router, _ = self.ctx.get(model.ROUTERS, id)
        return sorted((port_out(self.ctx, p, pv) for p, pv in self._router_ports(router["id"])),
                      key=sort_key)

    def create_router_port(self, router_id: str, body: Any) -> Data:
        """A port on a router, with its MAC and its address on the attached network.

        409 if its network overlaps the network of another port of the router,
        or its MAC is already used by one. The port joins the router's port_ids
        in the same commit, conditional on the router's version (so two
        concurrent creations cannot both pass the overlap check)."""
        router, rver = self.ctx.get(model.ROUTERS, router_id)
        body = v.body_object(body)
        v.check_fields(body, ROUTER_PORT_CREATE)
        ip = v.unicast_ipv4(v.require(body, "ip_address"), "ip_address")
        plen = v.integer(v.require(body, "prefix_len"), "prefix_len", 1, 32)
        net = v.network(ip, plen)
        if plen <= 30 and ip in (str(net.network), str(net.broadcast)):
            which = "network" if ip == str(net.network) else "broadcast"
            raise Invalid(f"ip_address {ip} is the {which} address of {net}", "ip_address")
        body_rest = {k: val for k, val in body.items()
                     if k not in ("ip_address", "prefix_len", "mac")}
        _, data = gen.create(model.PORTS, body_rest)
        for f in ("fixed_ips", "security_group_ids", "port_security_enabled",
                  "allowed_address_pairs", *dhcp.INSTANCE_FIELDS):
            data.pop(f, None)  # bridge ports only (absent from a router port's record)
        data.update(device_id=router["id"], device_type=model.DEVICE_ROUTER,
                    mac=v.mac(body["mac"], "mac") if "mac" in body else None,
                    ip_address=ip, prefix_len=plen)
        dhcp.check_port_fields(body, data)
        txn = Txn(self.store)
        txn.seen(model.ROUTERS, router, rver)
        apply_filters(txn, body, data, None)
        others = [p for p, _ in self._router_ports(router["id"])]
        # a MAC answers ARP for a router: two routers' ports never share one
        router_ports = [p for p, _ in self.store.list(model.PORTS)
                        if p.get("device_type") == model.DEVICE_ROUTER]
        used_macs = {p.get("mac") for p in router_ports}
        for other in router_ports:
            if data["mac"] is not None and other.get("mac") == data["mac"] and \
                    other.get("device_id") != router["id"]:
                raise Conflict(f"MAC {data['mac']} is already used by port {other['id']} of "
                               f"router {other.get('device_id')}", "mac")
        for other in others:
            if data["mac"] is not None and other.get("mac") == data["mac"]:
                raise Conflict(f"MAC {data['mac']} is already used by port {other['id']} of "
                               f"router {router['id']}", "mac")
            if other.get("ip_address") and other.get("prefix_len") is not None:
                onet = v.network(other["ip_address"], other["prefix_len"])
                if v.overlaps(net, onet):
                    raise Conflict(f"network {net} overlaps {onet} of port {other['id']} on "
                                   f"router {router['id']}", "ip_address")
        while data["mac"] is None or data["mac"] in used_macs:
            data["mac"] = v.random_mac()
        data["id"] = self.ctx.new_id(model.PORTS, body)
        data["tunnel_key"] = tunnel_key(self.ctx)
        new_router = dict(router)
        new_router["port_ids"] = list(router.get("port_ids", ())) + [data["id"]]
        txn.create(model.PORTS, data)
        txn.put(model.ROUTERS, new_router)
        txn.commit()
        return port_out(self.ctx, *self.ctx.get(model.PORTS, data["id"]))

    # -------------------------------------------------------------- routes
    def _route_out(self, data: Data, version: int) -> Data:
        return self.ctx.out(model.ROUTES, data, version)

    def list_routes(self) -> list[Data]:
        return sorted((self._route_out(d, ver) for d, ver in self.store.list(model.ROUTES)),
                      key=route_key)

    def list_router_routes(self, id: str) -> list[Data]:
        router, _ = self.ctx.get(model.ROUTERS, id)
        return sorted((self._route_out(d, ver) for d, ver in self.store.list(model.ROUTES)
                       if d.get("router_id") == router["id"]), key=route_key)

    def get_route(self, id: str) -> Data:
        return self._route_out(*self.ctx.get(model.ROUTES, id))

    def _check_hop(self, router_id: str, rtype: str, port_id: str | None,
                   gateway: str | None) -> None:
        """next_hop_port is a port of this router (required for normal routes);
        next_hop_gateway, when given, lies on that port's network."""
        if port_id is None:
            if rtype == model.ROUTE_NORMAL:
                raise Invalid("a normal route needs next_hop_port (a port of the router)",
                              "next_hop_port")
            if gateway is not None:
                raise Invalid("next_hop_gateway needs next_hop_port", "next_hop_gateway")
            return
        port, _ = self.ctx.get_ref(model.PORTS, port_id, "next_hop_port")
        if port.get("device_id") != router_id:
            raise Invalid(f"port {port_id} is not a port of router {router_id}",
                          "next_hop_port")
        if gateway is None:
            return
        if port.get("ip_address") is None or port.get("prefix_len") is None:
            raise Invalid(f"port {port_id} has no address, so no gateway can be reached "
                          "through it", "next_hop_gateway")
        net = v.network(port["ip_address"], port["prefix_len"])
        if gateway not in net:
            raise Invalid(f"next_hop_gateway {gateway} is not on the network {net} of port "
                          f"{port_id}", "next_hop_gateway")
        if gateway == port["ip_address"]:
            raise Invalid(f"next_hop_gateway {gateway} is the address of port {port_id} "
                          "itself", "next_hop_gateway")
        if net.prefixlen <= 30 and gateway in (str(net.network), str(net.broadcast)):
            raise Invalid(f"next_hop_gateway {gateway} is the network or broadcast address "
                          f"of {net}", "next_hop_gateway")

    def _check_duplicate(self, route: Data) -> None:
        for other, _ in self.store.list(model.ROUTES):
            if (other["id"] != route["id"] and other.get("router_id") == route["router_id"]
                    and all(other.get(f) == route.get(f) for f in ROUTE_IDENTITY)):
                raise Conflict(f"router {route['router_id']} already has this route "
                               f"({other['id']})")

    def create_route(self, router_id: str, body: Any) -> Data:
        router, rver = self.ctx.get(model.ROUTERS, router_id)
        body, data = gen.create(model.ROUTES, body)
        data["router_id"] = router["id"]
        self._check_hop(router["id"], data["type"], data["next_hop_port"],
                        data["next_hop_gateway"])
        data["id"] = self.ctx.new_id(model.ROUTES, body)
        self._check_duplicate(data)
        # Touching the router serialises route writes per router (duplicates) and
        # makes a concurrent delete of the router, or of the next-hop port (which
        # updates the router's port_ids), fail instead of leaving a dangling route.
        self.ctx.commit([Create(model.ROUTES, data), self.ctx.touch(model.ROUTERS, router, rver)])
        return self.get_route(data["id"])

    def update_route(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(model.ROUTES, id)
        new = gen.update(model.ROUTES, body, data)
        router, rver = self.ctx.get(model.ROUTERS, data["router_id"])
        self._check_hop(router["id"], new["type"], new.get("next_hop_port"),
                        new.get("next_hop_gateway"))
        self.ctx.check_version(body, ver, f"route {data['id']}")
        self._check_duplicate(new)
        self.ctx.commit([Update(model.ROUTES, new, ver),
                         self.ctx.touch(model.ROUTERS, router, rver)])
        return self.get_route(data["id"])

    def delete_route(self, id: str) -> None:
        self.ctx.delete(model.ROUTES, *self.ctx.get(model.ROUTES, id))

def route_key(route: Data) -> tuple:
    """Routing-table order: longest destination prefix first, then address, source,
    weight (lowest first)."""
    dst = v.network(*route["dst_cidr"].split("/"))
    src = v.network(*route["src_cidr"].split("/"))
    return (-dst.prefixlen, dst.first, -src.prefixlen, src.first, route["weight"], route["id"])
