"""Commands for routers, their ports and their routes."""

from __future__ import annotations

import argparse

from midoflow import model
from midoflow.cli import render
from midoflow.cli.base import Context, UsageError, arg, command, exclusive, group
from midoflow.cli.client import ResolveError
from midoflow.cli.columns import columns, port_address, show_order
from midoflow.cli.common import FILTER_ARGS, IF_VERSION, UP_DOWN, _deleted
from midoflow.cli.render import col
from midoflow.cli.resources import PORT_ORDER, device_changes
from midoflow.model import PORT_EXTERIOR, PORT_INTERIOR, ROUTE_NORMAL, ROUTE_TYPES

# -------------------------------------------------------------------- routers

group("router", "virtual L3 routers")

ROUTER_COLS = columns(model.ROUTERS)
ROUTER_ORDER = show_order(model.ROUTERS)
ROUTER_PORT_COLS = [
    col("ID", "id"),
    col("NAME", "name"),
    col("TYPE", "type"),
    col("ADDRESS", port_address),
    col("MAC", "mac"),
    col("STATE", lambda p: render.updown(p.get("admin_state_up"))),
    col("PEER", "peer_id"),
    col("HOST", "host_id"),
    col("INTERFACE", "interface_name"),
]


def router_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("routers", ref, "router")


def router_port_id(ctx: Context, rid: str, ref: str) -> str:
    """A port of router ``rid`` by id or by name (names need only be unique on the router)."""
    ports = ctx.client.get(f"/routers/{rid}/ports") or []
    for p in ports:
        if p.get("id") == ref:
            return ref
    named = [p for p in ports if p.get("name") == ref]
    if len(named) == 1:
        return named[0]["id"]
    if named:
        ids = ", ".join(p["id"] for p in named)
        raise ResolveError(f"{len(named)} ports of router {rid} are named {ref!r} ({ids}); "
                           "use an id")
    raise ResolveError(f"router {rid} has no port with id or name {ref!r}")


def parse_address(value: str) -> tuple[str, int]:
    """``10.0.0.1/24`` -> ("10.0.0.1", 24); the API checks the address itself."""
    ip, sep, plen = value.partition("/")
    if not sep or not plen.isdigit() or not ip:
        raise UsageError(f"--ip wants ADDRESS/PREFIX_LEN, e.g. 10.0.0.1/24, not {value!r}")
    return ip, int(plen)


@command("router", "list", "list routers", [arg("--tenant", help="only this tenant's routers")])
def router_list(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get("/routers", tenant_id=a.tenant)
    ctx.emit(rows, lambda rs: render.table(rs, ROUTER_COLS))


@command("router", "show", "show one router", [arg("router", help="router id or name")])
def router_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/routers/{router_id(ctx, a.router)}")
    ctx.emit(obj, lambda o: render.details(o, ROUTER_ORDER))


@command("router", "create", "create a router", [
    arg("--name", required=True),
    arg("--tenant", help="owning tenant id"),
    arg("--down", action="store_true", help="create it administratively down"),
])
def router_create(ctx: Context, a: argparse.Namespace) -> None:
    body = {"name": a.name, "admin_state_up": not a.down}
    if a.tenant is not None:
        body["tenant_id"] = a.tenant
    ctx.emit(ctx.client.post("/routers", body), lambda o: render.details(o, ROUTER_ORDER))


@command("router", "update", "change a router", [
    arg("router", help="router id or name"),
    arg("--name"),
    UP_DOWN,
    *FILTER_ARGS,
    IF_VERSION,
])
def router_update(ctx: Context, a: argparse.Namespace) -> None:
    body = device_changes(ctx, a)
    obj = ctx.client.put(f"/routers/{router_id(ctx, a.router)}", body)
    ctx.emit(obj, lambda o: render.details(o, ROUTER_ORDER))


@command("router", "delete", "delete a router (it must have no ports; its routes go with it)",
         [arg("router", help="router id or name")])
def router_delete(ctx: Context, a: argparse.Namespace) -> None:
    rid = router_id(ctx, a.router)
    ctx.client.delete(f"/routers/{rid}")
    _deleted(ctx, "router", rid)


@command("router", "ports", "a router's ports", [arg("router", help="router id or name")])
def router_ports(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/routers/{router_id(ctx, a.router)}/ports")
    ctx.emit(rows, lambda rs: render.table(rs, ROUTER_PORT_COLS))


@command("router", "add-port", "add a port to a router", [
    arg("router", help="router id or name"),
    arg("--ip", "--address", dest="address", required=True, metavar="ADDRESS/LEN",
        help="the port's address on its network, e.g. 10.0.0.1/24"),
    arg("--mac", help="the port's MAC (default: a random locally administered one)"),
    arg("--type", default=PORT_EXTERIOR, choices=(PORT_EXTERIOR, PORT_INTERIOR),
        help="exterior (bound to a host interface, e.g. an uplink) or interior (linked to "
             "a bridge or router port); default exterior"),
    arg("--name"),
    arg("--down", action="store_true", help="create it administratively down"),
    arg("--mtu", type=int, help="the link's MTU, 68 to 9000 (an uplink's; default: the "
        "agents' underlay_mtu)"),
])
def router_add_port(ctx: Context, a: argparse.Namespace) -> None:
    ip, plen = parse_address(a.address)
    body: dict = {"ip_address": ip, "prefix_len": plen, "type": a.type,
                  "admin_state_up": not a.down}
    if a.mac is not None:
        body["mac"] = a.mac
    if a.name is not None:
        body["name"] = a.name
    if a.mtu is not None:
        body["mtu"] = a.mtu
    obj = ctx.client.post(f"/routers/{router_id(ctx, a.router)}/ports", body)
    ctx.emit(obj, lambda o: render.details(o, PORT_ORDER))


# --------------------------------------------------------------------- routes

group("route", "routes of routers (connected networks come from the router's ports)")

ROUTE_COLS = columns(model.ROUTES)
ROUTE_ORDER = show_order(model.ROUTES)


def route_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("routes", ref, "route")


@command("route", "list", "a router's routes, longest prefix first",
         [arg("router", help="router id or name")])
def route_list(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/routers/{router_id(ctx, a.router)}/routes")
    ctx.emit(rows, lambda rs: render.table(rs, ROUTE_COLS))


@command("route", "show", "show one route", [arg("route", help="route id")])
def route_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/routes/{route_id(ctx, a.route)}")
    ctx.emit(obj, lambda o: render.details(o, ROUTE_ORDER))


@command("route", "create", "add a route to a router", [
    arg("router", help="router id or name"),
    arg("--dst", required=True, metavar="CIDR", help="destination network, e.g. 10.1.0.0/16"),
    arg("--src", metavar="CIDR", help="source network (default 0.0.0.0/0: any)"),
    arg("--port", help="next-hop port: a port of this router (id or name); required for "
                       "normal routes"),
    arg("--gateway", metavar="IP", help="next-hop router's address on the port's network "
                                        "(omit when the destination is on that link)"),
    arg("--weight", type=int, help="lower wins among equal prefixes (default 100)"),
    arg("--type", default=ROUTE_NORMAL, choices=ROUTE_TYPES, help="default normal"),
])
def route_create(ctx: Context, a: argparse.Namespace) -> None:
    rid = router_id(ctx, a.router)
    body: dict = {"dst_cidr": a.dst, "type": a.type}
    if a.src is not None:
        body["src_cidr"] = a.src
    if a.port is not None:
        body["next_hop_port"] = router_port_id(ctx, rid, a.port)
    if a.gateway is not None:
        body["next_hop_gateway"] = a.gateway
    if a.weight is not None:
        body["weight"] = a.weight
    obj = ctx.client.post(f"/routers/{rid}/routes", body)
    ctx.emit(obj, lambda o: render.details(o, ROUTE_ORDER))


@command("route", "update", "change a route's next hop, type or weight", [
    arg("route", help="route id"),
    arg("--port", help="next-hop port of the route's router (id or name)"),
    exclusive(
        arg("--gateway", metavar="IP", help="next-hop router's address"),
        arg("--no-gateway", action="store_true", help="the destination is on the port's link"),
    ),
    arg("--weight", type=int),
    arg("--type", choices=ROUTE_TYPES),
    IF_VERSION,
])
def route_update(ctx: Context, a: argparse.Namespace) -> None:
    rid = route_id(ctx, a.route)
    body: dict = {}
    if a.port is not None:
        route = ctx.client.get(f"/routes/{rid}")
        body["next_hop_port"] = router_port_id(ctx, route["router_id"], a.port)
    if a.gateway is not None:
        body["next_hop_gateway"] = a.gateway
    elif a.no_gateway:
        body["next_hop_gateway"] = None
    if a.weight is not None:
        body["weight"] = a.weight
    if a.type is not None:
        body["type"] = a.type
    if not body:
        raise UsageError("nothing to update: give at least one of --port, --gateway, "
                         "--no-gateway, --weight, --type")
    if a.version is not None:
        body["version"] = a.version
    obj = ctx.client.put(f"/routes/{rid}", body)
    ctx.emit(obj, lambda o: render.details(o, ROUTE_ORDER))


@command("route", "delete", "delete a route", [arg("route", help="route id")])
def route_delete(ctx: Context, a: argparse.Namespace) -> None:
    rid = route_id(ctx, a.route)
    ctx.client.delete(f"/routes/{rid}")
    _deleted(ctx, "route", rid)
