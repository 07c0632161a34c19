"""``list`` and ``show`` of every declared kind whose command module does not define them.

Called by :mod:`midoflow.cli.main` once the hand-written command modules are
imported: a kind declared in :mod:`midoflow.kinds` with no special CLI gets
``midoflow <group> list`` (its declared columns) and ``midoflow <group> show
ID|NAME`` (its show order).
"""

from __future__ import annotations

import argparse

from midoflow.cli import render
from midoflow.cli.base import COMMANDS, GROUPS, Context, arg, command, group
from midoflow.cli.columns import columns, show_order
from midoflow.kinds import KINDS
from midoflow.kinds.base import Kind


def register(kind: Kind) -> None:
    """Add the missing ``list``/``show`` commands of one kind."""
    grp = kind.cli_group
    have = {(c.group, c.name) for c in COMMANDS}
    if grp not in GROUPS:
        group(grp, kind.description or f"{kind.label}s")
    if (grp, "list") not in have:
        def list_(ctx: Context, a: argparse.Namespace) -> None:
            ctx.emit(ctx.client.get(f"/{kind.name}"),
                     lambda rows: render.table(rows, columns(kind.name)))

        command(grp, "list", f"list {kind.label}s")(list_)
    if (grp, "show") not in have:
        def show(ctx: Context, a: argparse.Namespace) -> None:
            oid = ctx.client.resolve(kind.name, a.ref, kind.label)
            ctx.emit(ctx.client.get(f"/{kind.name}/{oid}"),
                     lambda o: render.details(o, show_order(kind.name)))

        command(grp, "show", f"show one {kind.label}",
                [arg("ref", metavar=kind.label.upper().replace(" ", "_"),
                     help="id or name")])(show)


def register_all() -> None:
    for kind in KINDS.values():
        register(kind)
