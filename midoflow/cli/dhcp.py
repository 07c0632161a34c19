"""``midoflow dhcp-subnet``: the DHCP subnets of bridges (what each host's agent
answers DHCP with for the bridge's VM ports)."""

from __future__ import annotations

import argparse

from midoflow import model
from midoflow.cli import render
from midoflow.cli.base import Context, UsageError, arg, command, exclusive, group
from midoflow.cli.columns import columns, show_order
from midoflow.cli.common import IF_VERSION, _deleted

group("dhcp-subnet", "DHCP served by the agents for a bridge's VM ports")

COLS = columns(model.DHCP_SUBNETS)
ORDER = show_order(model.DHCP_SUBNETS)


def _bridge_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("bridges", ref, "bridge")


def _subnet_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("dhcp_subnets", ref, "DHCP subnet")


def _route(text: str) -> dict:
    dest, sep, hop = text.partition(",")
    if not sep or not dest or not hop:
        raise UsageError(f"--host-route {text!r}: give DESTINATION/LEN,NEXTHOP, e.g. "
                         "192.168.0.0/16,10.0.0.254")
    return {"destination": dest.strip(), "nexthop": hop.strip()}


SETTINGS = (
    exclusive(
        arg("--gateway", metavar="IP", help="the router (option 3) and default route"),
        arg("--no-gateway", action="store_true", help="no router"),
    ),
    arg("--server-ip", metavar="IP",
        help="the server identifier and replies' source (default: the gateway)"),
    exclusive(
        arg("--dns", action="append", metavar="IP",
            help="a DNS server (repeatable, at most 5; replaces the list)"),
        arg("--no-dns", action="store_true", help="no DNS servers"),
    ),
    arg("--domain", metavar="NAME", help="the DNS domain name (option 15)"),
    arg("--lease-time", type=int, metavar="SECONDS",
        help=f"{model.DHCP_LEASE_MIN} to {model.DHCP_LEASE_MAX}, or "
             f"{model.DHCP_LEASE_INFINITE} for an infinite lease (default 86400)"),
    exclusive(
        arg("--host-route", action="append", metavar="DEST/LEN,NEXTHOP",
            help="a classless static route (repeatable; replaces the list)"),
        arg("--no-host-routes", action="store_true", help="no host routes"),
    ),
    exclusive(
        arg("--enable", dest="enabled", action="store_const", const=True,
            help="answer DHCP (the default)"),
        arg("--disable", dest="enabled", action="store_const", const=False,
            help="keep the subnet but answer no DHCP for it"),
    ),
)


def _settings(a: argparse.Namespace) -> dict:
    body: dict = {}
    if a.gateway is not None or a.no_gateway:
        body["gateway_ip"] = a.gateway
    if a.server_ip is not None:
        body["server_ip"] = a.server_ip
    if a.dns or a.no_dns:
        body["dns_servers"] = list(a.dns or [])
    if a.domain is not None:
        body["domain_name"] = a.domain
    if a.lease_time is not None:
        body["lease_time"] = a.lease_time
    if a.host_route or a.no_host_routes:
        body["host_routes"] = [_route(r) for r in a.host_route or []]
    if a.enabled is not None:
        body["enabled"] = a.enabled
    return body


@command("dhcp-subnet", "list", "list DHCP subnets", [
    arg("--bridge", help="only this bridge's (id or name)"),
])
def subnet_list(ctx: Context, a: argparse.Namespace) -> None:
    if a.bridge is not None:
        rows = ctx.client.get(f"/bridges/{_bridge_id(ctx, a.bridge)}/dhcp_subnets")
    else:
        rows = ctx.client.get("/dhcp_subnets")
    ctx.emit(rows, lambda rs: render.table(rs, COLS))


@command("dhcp-subnet", "show", "show one DHCP subnet",
         [arg("subnet", help="DHCP subnet id")])
def subnet_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/dhcp_subnets/{_subnet_id(ctx, a.subnet)}")
    ctx.emit(obj, lambda o: render.details(o, ORDER))


@command("dhcp-subnet", "create", "serve DHCP on a bridge for the VM ports in a subnet", [
    arg("--bridge", required=True, help="bridge id or name"),
    arg("--cidr", required=True, metavar="NET/LEN", help="the subnet, e.g. 10.0.0.0/24"),
    *SETTINGS,
])
def subnet_create(ctx: Context, a: argparse.Namespace) -> None:
    body = {"cidr": a.cidr, **_settings(a)}
    obj = ctx.client.post(f"/bridges/{_bridge_id(ctx, a.bridge)}/dhcp_subnets", body)
    ctx.emit(obj, lambda o: render.details(o, ORDER))


@command("dhcp-subnet", "update", "change a DHCP subnet (not its cidr)", [
    arg("subnet", help="DHCP subnet id"),
    *SETTINGS,
    IF_VERSION,
], aliases=("set",))
def subnet_update(ctx: Context, a: argparse.Namespace) -> None:
    body = _settings(a)
    if not body:
        raise UsageError("nothing to update: give at least one of --gateway, --no-gateway, "
                         "--server-ip, --dns, --no-dns, --domain, --lease-time, --host-route, "
                         "--no-host-routes, --enable, --disable")
    if a.version is not None:
        body["version"] = a.version
    obj = ctx.client.put(f"/dhcp_subnets/{_subnet_id(ctx, a.subnet)}", body)
    ctx.emit(obj, lambda o: render.details(o, ORDER))


@command("dhcp-subnet", "delete", "stop serving DHCP for a subnet",
         [arg("subnet", help="DHCP subnet id")])
def subnet_delete(ctx: Context, a: argparse.Namespace) -> None:
    sid = _subnet_id(ctx, a.subnet)
    ctx.client.delete(f"/dhcp_subnets/{sid}")
    _deleted(ctx, "DHCP subnet", sid)
