"""CRUD commands for hosts, tunnel zones, bridges and ports (routers: :mod:`.routers`)."""

from __future__ import annotations

import argparse

from midoflow import model
from midoflow.cli import render
from midoflow.cli.base import Context, UsageError, arg, command, exclusive, group
from midoflow.cli.columns import columns, show_order
from midoflow.cli.common import (
    FILTER_ARGS,
    FILTER_FLAGS,
    FILTER_OPTS,
    IF_VERSION,
    UP_DOWN,
    _changes,
    _deleted,
    _given,
    filter_changes,
    parse_pair,
)
from midoflow.cli.render import col
from midoflow.model import PORT_EXTERIOR, PORT_INTERIOR, TUNNEL_TYPES

# ---------------------------------------------------------------------- hosts

group("host", "hosts of the cloud (one agent each)")

HOST_COLS = columns(model.HOSTS)
HOST_ORDER = show_order(model.HOSTS)


def _host_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("hosts", ref, "host")


@command("host", "list", "list hosts")
def host_list(ctx: Context, a: argparse.Namespace) -> None:
    ctx.emit(ctx.client.get("/hosts"), lambda rows: render.table(rows, HOST_COLS))


@command("host", "show", "show one host", [arg("host", help="host id or name")])
def host_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/hosts/{_host_id(ctx, a.host)}")
    ctx.emit(obj, lambda o: render.details(o, HOST_ORDER))


@command("host", "create", "register a host", [
    arg("--name", required=True),
    arg("--description"),
])
def host_create(ctx: Context, a: argparse.Namespace) -> None:
    body = {"name": a.name}
    if a.description is not None:
        body["description"] = a.description
    ctx.emit(ctx.client.post("/hosts", body), lambda o: render.details(o, HOST_ORDER))


@command("host", "update", "change a host", [
    arg("host", help="host id or name"),
    arg("--name"),
    arg("--description"),
    IF_VERSION,
])
def host_update(ctx: Context, a: argparse.Namespace) -> None:
    body = _changes(a, "name", "description")
    obj = ctx.client.put(f"/hosts/{_host_id(ctx, a.host)}", body)
    ctx.emit(obj, lambda o: render.details(o, HOST_ORDER))


@command("host", "delete", "delete a host", [arg("host", help="host id or name")])
def host_delete(ctx: Context, a: argparse.Namespace) -> None:
    hid = _host_id(ctx, a.host)
    ctx.client.delete(f"/hosts/{hid}")
    _deleted(ctx, "host", hid)


@command("host", "bindings", "ports bound to a host", [arg("host", help="host id or name")])
def host_bindings(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/hosts/{_host_id(ctx, a.host)}/bindings")
    ctx.emit(rows, lambda rs: render.table(rs, BINDING_COLS))


# --------------------------------------------------------------- tunnel zones

group("tunnel-zone", "tunnel zones: which hosts tunnel to each other, and how")

TZ_COLS = columns(model.TUNNEL_ZONES)
TZ_ORDER = show_order(model.TUNNEL_ZONES)
MEMBER_COLS = [col("HOST ID", "host_id"), col("IP", "ip")]


def _tz_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("tunnel_zones", ref, "tunnel zone")


@command("tunnel-zone", "list", "list tunnel zones")
def tz_list(ctx: Context, a: argparse.Namespace) -> None:
    ctx.emit(ctx.client.get("/tunnel_zones"), lambda rows: render.table(rows, TZ_COLS))


@command("tunnel-zone", "show", "show one tunnel zone", [arg("zone", help="zone id or name")])
def tz_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/tunnel_zones/{_tz_id(ctx, a.zone)}")
    ctx.emit(obj, lambda o: render.details(o, TZ_ORDER))


@command("tunnel-zone", "create", "create a tunnel zone", [
    arg("--name", required=True),
    arg("--type", required=True, choices=TUNNEL_TYPES, help="encapsulation"),
])
def tz_create(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.post("/tunnel_zones", {"name": a.name, "type": a.type})
    ctx.emit(obj, lambda o: render.details(o, TZ_ORDER))


@command("tunnel-zone", "update", "change a tunnel zone", [
    arg("zone", help="zone id or name"),
    arg("--name"),
    arg("--type", choices=TUNNEL_TYPES),
    IF_VERSION,
])
def tz_update(ctx: Context, a: argparse.Namespace) -> None:
    body = _changes(a, "name", "type")
    obj = ctx.client.put(f"/tunnel_zones/{_tz_id(ctx, a.zone)}", body)
    ctx.emit(obj, lambda o: render.details(o, TZ_ORDER))


@command("tunnel-zone", "delete", "delete a tunnel zone", [arg("zone", help="zone id or name")])
def tz_delete(ctx: Context, a: argparse.Namespace) -> None:
    zid = _tz_id(ctx, a.zone)
    ctx.client.delete(f"/tunnel_zones/{zid}")
    _deleted(ctx, "tunnel zone", zid)


@command("tunnel-zone", "members", "hosts in a tunnel zone", [arg("zone", help="zone id or name")])
def tz_members(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/tunnel_zones/{_tz_id(ctx, a.zone)}/members")
    ctx.emit(rows, lambda rs: render.table(rs, MEMBER_COLS))


@command("tunnel-zone", "member-add", "add a host to a tunnel zone", [
    arg("zone", help="zone id or name"),
    arg("--host", required=True, help="host id or name"),
    arg("--ip", required=True, help="the host's tunnel endpoint address"),
])
def tz_member_add(ctx: Context, a: argparse.Namespace) -> None:
    zid = _tz_id(ctx, a.zone)
    hid = _host_id(ctx, a.host)
    obj = ctx.client.post(f"/tunnel_zones/{zid}/members", {"host_id": hid, "ip": a.ip})
    ctx.emit(obj, f"added host {hid} ({a.ip}) to tunnel zone {zid}")


@command("tunnel-zone", "member-remove", "remove a host from a tunnel zone", [
    arg("zone", help="zone id or name"),
    arg("--host", required=True, help="host id or name"),
])
def tz_member_remove(ctx: Context, a: argparse.Namespace) -> None:
    zid = _tz_id(ctx, a.zone)
    hid = _host_id(ctx, a.host)
    obj = ctx.client.delete(f"/tunnel_zones/{zid}/members/{hid}")
    ctx.emit(obj, f"removed host {hid} from tunnel zone {zid}")


# -------------------------------------------------------------------- bridges

group("bridge", "virtual L2 bridges")

BRIDGE_COLS = columns(model.BRIDGES)
BRIDGE_ORDER = show_order(model.BRIDGES)


def _bridge_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("bridges", ref, "bridge")


@command("bridge", "list", "list bridges", [arg("--tenant", help="only this tenant's bridges")])
def bridge_list(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get("/bridges", tenant_id=a.tenant)
    ctx.emit(rows, lambda rs: render.table(rs, BRIDGE_COLS))


@command("bridge", "show", "show one bridge", [arg("bridge", help="bridge id or name")])
def bridge_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/bridges/{_bridge_id(ctx, a.bridge)}")
    ctx.emit(obj, lambda o: render.details(o, BRIDGE_ORDER))


@command("bridge", "create", "create a bridge", [
    arg("--name", required=True),
    arg("--tenant", help="owning tenant id"),
    arg("--down", action="store_true", help="create it administratively down"),
    arg("--mtu", type=int, help="the network's MTU, 68 to 9000 (default: the agents' "
        "default_mtu, 1450 for VXLAN over 1500)"),
])
def bridge_create(ctx: Context, a: argparse.Namespace) -> None:
    body = {"name": a.name, "admin_state_up": not a.down}
    if a.tenant is not None:
        body["tenant_id"] = a.tenant
    if a.mtu is not None:
        body["mtu"] = a.mtu
    ctx.emit(ctx.client.post("/bridges", body), lambda o: render.details(o, BRIDGE_ORDER))


def device_changes(ctx: Context, a: argparse.Namespace) -> dict:
    """The update body of a bridge or router: name, admin state, filters."""
    if not _given(a, "name", "admin_state_up", *FILTER_FLAGS):
        raise UsageError(f"nothing to update: give at least one of --name, --up, --down, "
                         f"{FILTER_OPTS}")
    body = {n: getattr(a, n) for n in ("name", "admin_state_up") if getattr(a, n) is not None}
    body.update(filter_changes(ctx, a))
    if a.version is not None:
        body["version"] = a.version
    return body


@command("bridge", "update", "change a bridge", [
    arg("bridge", help="bridge id or name"),
    arg("--name"),
    UP_DOWN,
    *FILTER_ARGS,
    exclusive(
        arg("--mtu", type=int, help="the network's MTU, 68 to 9000"),
        arg("--default-mtu", action="store_true", help="back to the agents' default_mtu"),
    ),
    IF_VERSION,
])
def bridge_update(ctx: Context, a: argparse.Namespace) -> None:
    if a.mtu is not None or a.default_mtu:
        body = device_changes(ctx, a) if _given(a, "name", "admin_state_up",
                                                *FILTER_FLAGS) else {}
        body["mtu"] = a.mtu
        if a.version is not None:
            body["version"] = a.version
    else:
        body = device_changes(ctx, a)
    obj = ctx.client.put(f"/bridges/{_bridge_id(ctx, a.bridge)}", body)
    ctx.emit(obj, lambda o: render.details(o, BRIDGE_ORDER))


@command("bridge", "delete", "delete a bridge (it must have no ports)", [
    arg("bridge", help="bridge id or name"),
])
def bridge_delete(ctx: Context, a: argparse.Namespace) -> None:
    bid = _bridge_id(ctx, a.bridge)
    ctx.client.delete(f"/bridges/{bid}")
    _deleted(ctx, "bridge", bid)


# ---------------------------------------------------------------------- ports

group("port", "virtual ports of bridges and routers: exterior (bound to a host interface) "
      "or interior (linked)")

PORT_COLS = columns(model.PORTS)
BINDING_COLS = [
    col("PORT ID", "id"),
    col("DEVICE", "device_id"),
    col("INTERFACE", "interface_name"),
    col("NAME", "name"),
    col("STATE", lambda p: render.updown(p.get("admin_state_up"))),
]
PORT_ORDER = show_order(model.PORTS)
SECURITY_ARGS = (
    arg("--mac", help="the VM's MAC (needed by port security)"),
    exclusive(
        arg("--fixed-ip", action="append", metavar="IP", help="the VM's address (repeatable; "
            "replaces the list)"),
        arg("--no-fixed-ips", action="store_true", help="clear the fixed IPs"),
    ),
    exclusive(
        arg("--security-group", action="append", metavar="GROUP",
            help="a security group, id or name (repeatable; replaces the list)"),
        arg("--no-security-groups", action="store_true", help="remove every security group"),
    ),
    exclusive(
        arg("--port-security", dest="port_security_enabled", action="store_const", const=True,
            help="anti-spoofing: only the port's MAC and fixed IPs (and allowed pairs)"),
        arg("--no-port-security", dest="port_security_enabled", action="store_const",
            const=False, help="no anti-spoofing"),
    ),
    exclusive(
        arg("--allowed-address-pair", action="append", metavar="IP[/LEN][,MAC]",
            help="an extra source the VM may use (repeatable; replaces the list)"),
        arg("--no-allowed-address-pairs", action="store_true", help="clear the pairs"),
    ),
)
SECURITY_FLAGS = ("mac", "fixed_ip", "no_fixed_ips", "security_group", "no_security_groups",
                  "port_security_enabled", "allowed_address_pair", "no_allowed_address_pairs")


def security_changes(ctx: Context, a: argparse.Namespace) -> dict:
    """The port-security fields given on the command line."""
    body: dict = {}
    if a.mac is not None:
        body["mac"] = a.mac
    if a.fixed_ip or a.no_fixed_ips:
        body["fixed_ips"] = list(a.fixed_ip or [])
    if a.security_group or a.no_security_groups:
        body["security_group_ids"] = [
            ctx.client.resolve("security_groups", g, "security group")
            for g in a.security_group or []]
    if a.port_security_enabled is not None:
        body["port_security_enabled"] = a.port_security_enabled
    if a.allowed_address_pair or a.no_allowed_address_pairs:
        body["allowed_address_pairs"] = [parse_pair(p) for p in a.allowed_address_pair or []]
    return body


INSTANCE_ARGS = (
    exclusive(
        arg("--extra-dhcp-opt", action="append", metavar="NAME=VALUE",
            help="a DHCP option for this VM only: a name (router, dns-server, mtu, "
                 "domain-search, ...) or a number 1 to 254 (repeatable; replaces the list)"),
        arg("--no-extra-dhcp-opts", action="store_true", help="clear the extra DHCP options"),
    ),
    arg("--instance-id", metavar="ID", help="the VM's instance (what metadata answers for)"),
    arg("--instance-tenant", dest="tenant_id", metavar="ID", help="the VM's project"),
    arg("--hostname", metavar="LABEL", help="the VM's host name (a DNS label)"),
)
INSTANCE_FLAGS = ("extra_dhcp_opt", "no_extra_dhcp_opts", "instance_id", "tenant_id",
                  "hostname")


def instance_changes(a: argparse.Namespace) -> dict:
    """The DHCP and instance fields of a bridge port given on the command line."""
    body: dict = {}
    if a.extra_dhcp_opt or a.no_extra_dhcp_opts:
        opts = []
        for o in a.extra_dhcp_opt or []:
            name, sep, value = o.partition("=")
            if not sep or not name:
                raise UsageError(f"--extra-dhcp-opt {o!r}: give NAME=VALUE, e.g. "
                                 "domain-search=example.org")
            opts.append({"opt_name": name, "opt_value": value})
        body["extra_dhcp_opts"] = opts
    for f in ("instance_id", "tenant_id", "hostname"):
        if getattr(a, f) is not None:
            body[f] = getattr(a, f)
    return body


def _port_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("ports", ref, "port")


def _show_port(ctx: Context, obj: dict | None, done: str) -> None:
    """The changed port with --json; else one line saying what was done."""
    ctx.emit(obj, done)


@command("port", "list", "list ports", [exclusive(
    arg("--bridge", help="only this bridge's ports"),
    arg("--router", help="only this router's ports"),
)])
def port_list(ctx: Context, a: argparse.Namespace) -> None:
    if a.bridge:
        rows = ctx.client.get(f"/bridges/{_bridge_id(ctx, a.bridge)}/ports")
    elif a.router:
        rid = ctx.client.resolve("routers", a.router, "router")
        rows = ctx.client.get(f"/routers/{rid}/ports")
    else:
        rows = ctx.client.get("/ports")
    ctx.emit(rows, lambda rs: render.table(rs, PORT_COLS))


@command("port", "show", "show one port", [arg("port", help="port id")])
def port_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/ports/{_port_id(ctx, a.port)}")
    ctx.emit(obj, lambda o: render.details(o, PORT_ORDER))


@command("port", "create", "add a port to a bridge", [
    arg("--bridge", required=True, help="bridge id or name"),
    arg("--type", default=PORT_EXTERIOR, choices=(PORT_EXTERIOR, PORT_INTERIOR)),
    arg("--name"),
    arg("--down", action="store_true", help="create it administratively down"),
    *SECURITY_ARGS,
    *INSTANCE_ARGS,
])
def port_create(ctx: Context, a: argparse.Namespace) -> None:
    body = {"type": a.type, "admin_state_up": not a.down}
    if a.name is not None:
        body["name"] = a.name
    body.update(security_changes(ctx, a))
    body.update(instance_changes(a))
    obj = ctx.client.post(f"/bridges/{_bridge_id(ctx, a.bridge)}/ports", body)
    ctx.emit(obj, lambda o: render.details(o, PORT_ORDER))


@command("port", "update", "change a port: name, state, filters, and a bridge port's "
         "security groups, port security and addresses", [
    arg("port", help="port id"),
    arg("--name"),
    UP_DOWN,
    *SECURITY_ARGS,
    *INSTANCE_ARGS,
    exclusive(
        arg("--mtu", type=int, help="router ports: the link's MTU, 68 to 9000"),
        arg("--default-mtu", action="store_true",
            help="router ports: back to the agents' underlay_mtu (or the bridge's)"),
    ),
    *FILTER_ARGS,
    IF_VERSION,
])
def port_update(ctx: Context, a: argparse.Namespace) -> None:
    if not _given(a, "name", "admin_state_up", *SECURITY_FLAGS, *INSTANCE_FLAGS,
                  *FILTER_FLAGS, "mtu", "default_mtu"):
        raise UsageError("nothing to update: give at least one of --name, --up, --down, "
                         "--mac, --fixed-ip, --security-group, --port-security, "
                         "--allowed-address-pair, --extra-dhcp-opt (or their --no-* forms), "
                         f"--instance-id, --instance-tenant, --hostname, --mtu, --default-mtu, "
                         f"{FILTER_OPTS}")
    body = {n: getattr(a, n) for n in ("name", "admin_state_up") if getattr(a, n) is not None}
    body.update(security_changes(ctx, a))
    body.update(instance_changes(a))
    if a.mtu is not None or a.default_mtu:
        body["mtu"] = a.mtu
    body.update(filter_changes(ctx, a))
    if a.version is not None:
        body["version"] = a.version
    obj = ctx.client.put(f"/ports/{_port_id(ctx, a.port)}", body)
    ctx.emit(obj, lambda o: render.details(o, PORT_ORDER))


@command("port", "delete", "delete a port", [arg("port", help="port id")])
def port_delete(ctx: Context, a: argparse.Namespace) -> None:
    pid = _port_id(ctx, a.port)
    ctx.client.delete(f"/ports/{pid}")
    _deleted(ctx, "port", pid)


@command("port", "bind", "bind an exterior port to a host interface", [
    arg("port", help="port id"),
    arg("--host", required=True, help="host id or name"),
    arg("--interface", required=True, help="interface name on the host (tap/veth)"),
])
def port_bind(ctx: Context, a: argparse.Namespace) -> None:
    pid = _port_id(ctx, a.port)
    hid = _host_id(ctx, a.host)
    body = {"host_id": hid, "interface_name": a.interface}
    obj = ctx.client.put(f"/ports/{pid}/binding", body)
    _show_port(ctx, obj, f"bound port {pid} to {a.interface} on host {hid}")


@command("port", "unbind", "remove a port's host binding", [arg("port", help="port id")])
def port_unbind(ctx: Context, a: argparse.Namespace) -> None:
    pid = _port_id(ctx, a.port)
    obj = ctx.client.delete(f"/ports/{pid}/binding")
    _show_port(ctx, obj, f"unbound port {pid}")


@command("port", "link", "link an interior port to a peer port", [
    arg("port", help="port id"),
    arg("--peer", required=True, help="peer port id"),
])
def port_link(ctx: Context, a: argparse.Namespace) -> None:
    pid = _port_id(ctx, a.port)
    peer = _port_id(ctx, a.peer)
    obj = ctx.client.put(f"/ports/{pid}/link", {"peer_id": peer})
    _show_port(ctx, obj, f"linked port {pid} to {peer}")


@command("port", "unlink", "remove an interior port's link", [arg("port", help="port id")])
def port_unlink(ctx: Context, a: argparse.Namespace) -> None:
    pid = _port_id(ctx, a.port)
    obj = ctx.client.delete(f"/ports/{pid}/link")
    _show_port(ctx, obj, f"unlinked port {pid}")
