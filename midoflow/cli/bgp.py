"""Commands for BGP: the peers and advertised networks of uplink ports, and the
routes a router's BGP speakers learned (``midoflow router learned-routes``)."""

from __future__ import annotations

import argparse
import time

from midoflow import model
from midoflow.cli import render
from midoflow.cli.base import Context, arg, command, group
from midoflow.cli.columns import columns, show_order
from midoflow.cli.common import IF_VERSION, _changes, _deleted
from midoflow.cli.render import col
from midoflow.cli.routers import router_id
from midoflow.model import BGP_CONNECT_RETRY, BGP_HOLD_TIME, BGP_KEEPALIVE

group("bgp", "BGP on gateway uplinks: sessions to border routers and advertised prefixes")
group("bgp peer", "BGP sessions of uplink ports (exterior router ports) to border routers")
group("bgp network", "prefixes a gateway advertises to the BGP peers of its uplink port")


PEER_COLS = columns(model.BGP_PEERS)
PEER_ORDER = show_order(model.BGP_PEERS)
NETWORK_COLS = columns(model.BGP_NETWORKS)
NETWORK_ORDER = show_order(model.BGP_NETWORKS)
LEARNED_COLS = [
    col("DESTINATION", "dst_cidr"),
    col("GATEWAY", "next_hop_gateway"),
    col("PORT", "next_hop_port"),
    col("WEIGHT", "weight"),
]


def _port_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("ports", ref, "port")


def _peer_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("bgp_peers", ref, "BGP peer")


def _network_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("bgp_networks", ref, "BGP network")


TIMER_ARGS = (
    arg("--keepalive", type=int, metavar="SECONDS",
        help=f"keepalive interval, 1 to 21845 (default {BGP_KEEPALIVE}); at most a third "
             "of the hold time"),
    arg("--hold-time", type=int, metavar="SECONDS",
        help=f"hold time: 0 (no keepalives) or 3 to 65535 (default {BGP_HOLD_TIME})"),
    arg("--connect-retry", type=int, metavar="SECONDS",
        help=f"seconds between connection attempts, 1 to 3600 (default {BGP_CONNECT_RETRY})"),
)

# ---------------------------------------------------------------------- peers


@command("bgp peer", "list", "list BGP peers and the state of their sessions", [
    arg("port", nargs="?", help="only this uplink port's peers (port id or name)"),
])
def peer_list(ctx: Context, a: argparse.Namespace) -> None:
    if a.port is not None:
        rows = ctx.client.get(f"/ports/{_port_id(ctx, a.port)}/bgp_peers")
    else:
        rows = ctx.client.get("/bgp_peers")
    ctx.emit(rows, lambda rs: render.table(rs, PEER_COLS))


@command("bgp peer", "show", "show one BGP peer and its session",
         [arg("peer", help="BGP peer id or name")])
def peer_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/bgp_peers/{_peer_id(ctx, a.peer)}")
    ctx.emit(obj, lambda o: render.details(o, PEER_ORDER))


STATUS_ORDER = ("state", "since", "host_id", "flaps", "last_error", "last_error_at",
                "prefixes_received", "prefixes_accepted", "prefixes_refused",
                "prefixes_filtered", "prefixes_stale", "prefix_limit", "prefixes_advertised")


def _when(t) -> str | None:
    """Epoch seconds as local time plus how long ago ("12:00:01 (3 s ago)")."""
    if not isinstance(t, int | float) or isinstance(t, bool):
        return None
    ago = max(0.0, time.time() - t)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))} ({ago:.0f} s ago)"


def status_text(st: dict) -> str:
    """A session's status as a person reads it (times as dates and ages)."""
    shown = dict(st)
    for f in ("since", "last_error_at"):
        if f in shown:
            shown[f] = _when(shown[f])
    return render.details(shown, STATUS_ORDER)


@command("bgp peer", "status", "a BGP session's state and history (since when, flaps, the "
         "last error) and the peer's prefix counters (received, accepted, refused at the "
         "limit)", [arg("peer", help="BGP peer id or name")])
def peer_status(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/bgp_peers/{_peer_id(ctx, a.peer)}")
    ctx.emit(obj.get("status") or {"state": "down"}, status_text)


@command("bgp peer", "add", "add a BGP session to an uplink port (an exterior router port)", [
    arg("port", help="the uplink port (id or name)"),
    arg("--local-as", type=int, required=True, metavar="ASN", help="this gateway's AS number"),
    arg("--peer-address", required=True, metavar="IP",
        help="the border router's address, on the port's network"),
    arg("--peer-as", type=int, required=True, metavar="ASN",
        help="the border router's AS number"),
    *TIMER_ARGS,
    arg("--name"),
], aliases=("create",))
def peer_add(ctx: Context, a: argparse.Namespace) -> None:
    body: dict = {"local_as": a.local_as, "peer_address": a.peer_address, "peer_as": a.peer_as}
    for f in ("keepalive", "hold_time", "connect_retry", "name"):
        if getattr(a, f) is not None:
            body[f] = getattr(a, f)
    obj = ctx.client.post(f"/ports/{_port_id(ctx, a.port)}/bgp_peers", body)
    ctx.emit(obj, lambda o: render.details(o, PEER_ORDER))


@command("bgp peer", "set", "change a BGP peer's name, AS numbers or timers (to change its "
         "port or address, delete it and add it again)", [
    arg("peer", help="BGP peer id or name"),
    arg("--name"),
    arg("--local-as", type=int, metavar="ASN"),
    arg("--peer-as", type=int, metavar="ASN"),
    *TIMER_ARGS,
    IF_VERSION,
], aliases=("update",))
def peer_set(ctx: Context, a: argparse.Namespace) -> None:
    body = _changes(a, "name", "local_as", "peer_as", "keepalive", "hold_time",
                    "connect_retry")
    obj = ctx.client.put(f"/bgp_peers/{_peer_id(ctx, a.peer)}", body)
    ctx.emit(obj, lambda o: render.details(o, PEER_ORDER))


@command("bgp peer", "delete", "delete a BGP peer (its session is closed)",
         [arg("peer", help="BGP peer id or name")])
def peer_delete(ctx: Context, a: argparse.Namespace) -> None:
    pid = _peer_id(ctx, a.peer)
    ctx.client.delete(f"/bgp_peers/{pid}")
    _deleted(ctx, "BGP peer", pid)


# ------------------------------------------------------------------- networks


@command("bgp network", "list", "list advertised networks", [
    arg("port", nargs="?", help="only this uplink port's networks (port id or name)"),
])
def network_list(ctx: Context, a: argparse.Namespace) -> None:
    if a.port is not None:
        rows = ctx.client.get(f"/ports/{_port_id(ctx, a.port)}/bgp_networks")
    else:
        rows = ctx.client.get("/bgp_networks")
    ctx.emit(rows, lambda rs: render.table(rs, NETWORK_COLS))


@command("bgp network", "add", "advertise a prefix to an uplink port's BGP peers", [
    arg("port", help="the uplink port (id or name)"),
    arg("prefix", help="a floating-IP range or provider subnet, e.g. 198.51.100.0/24"),
], aliases=("create",))
def network_add(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.post(f"/ports/{_port_id(ctx, a.port)}/bgp_networks",
                          {"prefix": a.prefix})
    ctx.emit(obj, lambda o: render.details(o, NETWORK_ORDER))


@command("bgp network", "delete", "stop advertising a prefix",
         [arg("network", help="BGP network id")])
def network_delete(ctx: Context, a: argparse.Namespace) -> None:
    nid = _network_id(ctx, a.network)
    ctx.client.delete(f"/bgp_networks/{nid}")
    _deleted(ctx, "BGP network", nid)


# ------------------------------------------------------------- learned routes


@command("router", "learned-routes", "the routes a router's BGP speakers learned, longest "
         "prefix first", [arg("router", help="router id or name")])
def learned_routes(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/routers/{router_id(ctx, a.router)}/learned_routes")
    ctx.emit(rows, lambda rs: render.table(rs, LEARNED_COLS))
