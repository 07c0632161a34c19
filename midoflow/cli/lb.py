"""``midoflow load-balancer|pool|vip|member|health-monitor``: layer-4 load balancing
(issue 14). Each group: create, list, show, set (alias update), delete."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from midoflow import model
from midoflow.cli import render
from midoflow.cli.base import Arg, Context, Exclusive, arg, command, exclusive, group
from midoflow.cli.columns import columns, show_order
from midoflow.cli.common import IF_VERSION, UP_DOWN, _changes, _deleted

NAME = arg("--name", help="a name")
DESCRIPTION = arg("--description", help="free text")
TENANT = arg("--tenant-id", help="the owning tenant")


def _ref(kind: str, label: str) -> Callable[[Context, str], str]:
    return lambda ctx, ref: ctx.client.resolve(kind, ref, label)


_LB = _ref(model.LOAD_BALANCERS, "load balancer")
_POOL = _ref(model.POOLS, "pool")


@dataclass(frozen=True)
class Group:
    name: str  # the CLI group
    kind: str  # the REST collection
    label: str
    help: str
    create: tuple[Arg | Exclusive, ...]  # besides --name, --up/--down
    update: tuple[Arg | Exclusive, ...]  # besides --name, --up/--down, --if-version
    fields: tuple[str, ...]  # the body fields those options set (dest names)
    refs: tuple[tuple[str, Callable[[Context, str], str]], ...] = ()  # dest -> resolver
    parent: tuple[str, str, Callable[[Context, str], str]] | None = None  # list filter


NO_PERSISTENCE = "none"  # on the command line; null in the body
NO_POOL = ""  # --no-pool: null in the body


def _persistence(value: str) -> str:
    if value.lower() == NO_PERSISTENCE:
        return NO_PERSISTENCE
    if value.upper() not in model.LB_PERSISTENCE:
        raise argparse.ArgumentTypeError(f"{value!r}: give SOURCE_IP or none")
    return value.upper()


_HM_SETTINGS = (
    arg("--delay", type=int, metavar="SECONDS", help="between checks (at least --check-timeout)"),
    arg("--check-timeout", type=int, metavar="SECONDS",
        help="a check's time limit (the monitor's timeout)"),
    arg("--max-retries", type=int, metavar="N",
        help="successes in a row that make a member ONLINE (1 to 10)"),
    arg("--max-retries-down", type=int, metavar="N",
        help="failures in a row that make a member ERROR (1 to 10)"),
    arg("--http-method", metavar="METHOD", help="HTTP/HTTPS: the request's method"),
    arg("--url-path", metavar="PATH", help="HTTP/HTTPS: the path requested"),
    arg("--expected-codes", metavar="CODES", help='HTTP/HTTPS: "200", "200,202", "200-204"'),
)
_HM_FIELDS = ("delay", "check_timeout", "max_retries", "max_retries_down", "http_method",
              "url_path", "expected_codes")
_POOL_REF = (("pool_id", _POOL),)

GROUPS = (
    Group("load-balancer", model.LOAD_BALANCERS, "load balancer",
          "layer-4 load balancers (a router balances its VIPs' connections)",
          create=(arg("--router", dest="router_id", required=True, help="router id or name"),
                  DESCRIPTION, TENANT),
          update=(DESCRIPTION,), fields=("router_id", "description", "tenant_id"),
          refs=(("router_id", _ref(model.ROUTERS, "router")),),
          parent=("router_id", "router", _ref(model.ROUTERS, "router"))),
    Group("pool", model.POOLS, "pool", "pools of load-balancer members",
          create=(arg("--load-balancer", dest="load_balancer_id", required=True,
                      help="load balancer id or name"),
                  arg("--protocol", choices=model.LB_PROTOCOLS, help="default TCP"),
                  arg("--lb-method", choices=model.LB_METHODS, help="default ROUND_ROBIN"),
                  DESCRIPTION, TENANT),
          update=(arg("--lb-method", choices=model.LB_METHODS), DESCRIPTION),
          fields=("load_balancer_id", "protocol", "lb_method", "description", "tenant_id"),
          refs=(("load_balancer_id", _LB),),
          parent=("load_balancer_id", "load-balancer", _LB)),
    Group("vip", model.VIPS, "VIP", "virtual IPs (listeners) of load balancers",
          create=(arg("--load-balancer", dest="load_balancer_id", required=True,
                      help="load balancer id or name"),
                  arg("--address", required=True, metavar="IP",
                      help="an address of a network of the router's ports"),
                  arg("--protocol-port", type=int, required=True, metavar="PORT"),
                  arg("--protocol", choices=model.LB_PROTOCOLS, help="default TCP"),
                  arg("--pool", dest="pool_id", help="pool id or name"),
                  arg("--session-persistence", type=_persistence, metavar="SOURCE_IP|none"),
                  arg("--persistence-timeout", type=int, metavar="SECONDS"),
                  DESCRIPTION, TENANT),
          update=(exclusive(arg("--pool", dest="pool_id", help="pool id or name"),
                            arg("--no-pool", action="store_true", help="no pool")),
                  arg("--session-persistence", type=_persistence, metavar="SOURCE_IP|none"),
                  arg("--persistence-timeout", type=int, metavar="SECONDS"), DESCRIPTION),
          fields=("load_balancer_id", "address", "protocol_port", "protocol", "pool_id",
                  "session_persistence", "persistence_timeout", "description", "tenant_id"),
          refs=(("load_balancer_id", _LB), ("pool_id", _POOL)),
          parent=("load_balancer_id", "load-balancer", _LB)),
    Group("member", model.POOL_MEMBERS, "pool member", "members of pools",
          create=(arg("--pool", dest="pool_id", required=True, help="pool id or name"),
                  arg("--address", required=True, metavar="IP"),
                  arg("--protocol-port", type=int, required=True, metavar="PORT"),
                  arg("--weight", type=int, help="0 to 256 (0: no new connections)"),
                  TENANT),
          update=(arg("--weight", type=int, help="0 to 256 (0: no new connections)"),),
          fields=("pool_id", "address", "protocol_port", "weight", "tenant_id"),
          refs=_POOL_REF, parent=("pool_id", "pool", _POOL)),
    Group("health-monitor", model.HEALTH_MONITORS, "health monitor",
          "health monitors of pools (one per pool, run by one elected agent)",
          create=(arg("--pool", dest="pool_id", required=True, help="pool id or name"),
                  arg("--type", choices=model.HM_TYPES, help="default TCP"),
                  *_HM_SETTINGS, TENANT),
          update=_HM_SETTINGS, fields=("pool_id", "type", *_HM_FIELDS, "tenant_id"),
          refs=_POOL_REF, parent=("pool_id", "pool", _POOL)),
)


def _body(ctx: Context, g: Group, a: argparse.Namespace, names: tuple[str, ...]) -> dict:
    body = {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}
    return _resolved(ctx, g, body)


def _resolved(ctx: Context, g: Group, body: dict) -> dict:
    """Names resolved to ids; --session-persistence none as null."""
    if body.get("pool_id") == NO_POOL:
        body["pool_id"] = None
    if "check_timeout" in body:  # --timeout is the request's (a global option)
        body["timeout"] = body.pop("check_timeout")
    if body.get("session_persistence") == NO_PERSISTENCE:
        body["session_persistence"] = None
    for dest, resolve in g.refs:
        if body.get(dest) is not None:
            body[dest] = resolve(ctx, body[dest])
    return body


def _register(g: Group) -> None:
    group(g.name, g.help)
    cols, order = columns(g.kind), show_order(g.kind)
    one = _ref(g.kind, g.label)
    metavar = g.label.upper().replace(" ", "_")

    def show_obj(ctx: Context, obj: dict) -> None:
        ctx.emit(obj, lambda o: render.details(o, order))

    list_args = []
    if g.parent:
        list_args.append(arg(f"--{g.parent[1]}", dest="parent", help=f"only this "
                             f"{g.parent[1].replace('-', ' ')}'s (id or name)"))

    @command(g.name, "list", f"list {g.label}s", list_args)
    def list_(ctx: Context, a: argparse.Namespace) -> None:
        if g.kind == model.POOL_MEMBERS and a.parent is not None:
            rows = ctx.client.get(f"/pools/{_POOL(ctx, a.parent)}/members")
        else:
            rows = ctx.client.get(f"/{g.kind}")
            if g.parent and a.parent is not None:
                pid = g.parent[2](ctx, a.parent)
                rows = [r for r in rows if r.get(g.parent[0]) == pid]
        ctx.emit(rows, lambda rs: render.table(rs, cols))

    @command(g.name, "show", f"show one {g.label}",
             [arg("ref", metavar=metavar, help="id or name")])
    def show(ctx: Context, a: argparse.Namespace) -> None:
        show_obj(ctx, ctx.client.get(f"/{g.kind}/{one(ctx, a.ref)}"))

    @command(g.name, "create", f"create a {g.label}", [*g.create, NAME, UP_DOWN])
    def create(ctx: Context, a: argparse.Namespace) -> None:
        body = _body(ctx, g, a, (*g.fields, "name", "admin_state_up"))
        show_obj(ctx, ctx.client.post(f"/{g.kind}", body))

    @command(g.name, "set", f"change a {g.label}",
             [arg("ref", metavar=metavar, help="id or name"), *g.update, NAME, UP_DOWN,
              IF_VERSION], aliases=("update",))
    def set_(ctx: Context, a: argparse.Namespace) -> None:
        names = tuple(n for n in g.fields if any(n == _dest(x) for x in g.update)) + \
            ("name", "admin_state_up")
        if getattr(a, "no_pool", False):
            a.pool_id = NO_POOL
        body = _resolved(ctx, g, _changes(a, *names))
        show_obj(ctx, ctx.client.put(f"/{g.kind}/{one(ctx, a.ref)}", body))

    delete_args = [arg("ref", metavar=metavar, help="id or name")]
    if g.kind == model.LOAD_BALANCERS:
        delete_args.append(arg("--cascade", action="store_true",
                               help="delete its VIPs, pools, members and monitors too"))

    @command(g.name, "delete", f"delete a {g.label}", delete_args)
    def delete(ctx: Context, a: argparse.Namespace) -> None:
        oid = one(ctx, a.ref)
        query = "?cascade=true" if getattr(a, "cascade", False) else ""
        ctx.client.delete(f"/{g.kind}/{oid}{query}")
        _deleted(ctx, g.label, oid)


def _dest(x: Arg | Exclusive) -> str:
    if isinstance(x, Exclusive):
        return _dest(x.args[0])
    return x.kwargs.get("dest") or x.flags[0].lstrip("-").replace("-", "_")


for _g in GROUPS:
    _register(_g)
