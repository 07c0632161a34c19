"""The command registry: one decorated function per CLI command.

A new command is one function::

    @command("trace", help="trace a packet through the topology",
             args=[arg("port"), arg("--src-mac", required=True)])
    def trace(ctx: Context, a: argparse.Namespace) -> int | None:
        result = ctx.client.post("/trace", {...})
        ctx.emit(result, lambda r: render.details(r))

``group`` puts the command under a resource (``midoflow GROUP NAME ...``);
without one it is a top-level command (``midoflow NAME ...``). A group may be
nested, its words separated by spaces (``"bgp peer"``: ``midoflow bgp peer
NAME ...``). ``aliases`` are other names of the command. The module that
defines it only has to be imported by :mod:`midoflow.cli.main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from midoflow.cli import render
from midoflow.cli.client import Client


class UsageError(Exception):
    """A bad command line that argparse cannot see (exit status 2)."""


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Exclusive:
    """Arguments of which at most one may be given (e.g. ``--up`` / ``--down``)."""

    args: tuple[Arg, ...]


def arg(*flags: str, **kwargs: Any) -> Arg:
    return Arg(flags, kwargs)


def exclusive(*args: Arg) -> Exclusive:
    return Exclusive(args)


@dataclass
class Context:
    client: Client
    json: bool = False

    def out(self, text: str) -> None:
        if text:
            print(text, file=sys.stdout)

    def emit(self, data: Any, human: Callable[[Any], str] | str | None = None) -> None:
        """Print ``data`` as raw JSON with ``--json``, else ``human(data)`` (or text)."""
        if self.json:
            if data is not None:
                self.out(render.as_json(data))
            return
        if callable(human):
            self.out(human(data))
        elif human is not None:
            self.out(human)
        elif data is not None:
            self.out(render.as_json(data))


Handler = Callable[[Context, argparse.Namespace], "int | None"]


@dataclass
class Command:
    group: str | None
    name: str
    func: Handler
    help: str
    args: Sequence[Arg | Exclusive] = field(default_factory=tuple)
    aliases: Sequence[str] = ()


COMMANDS: list[Command] = []
GROUPS: dict[str, str] = {}  # group name (nested: words separated by spaces) -> help


def group(name: str, help: str) -> None:
    GROUPS[name] = help


def command(
    group: str | None, name: str, help: str, args: Sequence[Arg | Exclusive] = (),
    aliases: Sequence[str] = (),
) -> Callable[[Handler], Handler]:
    def deco(func: Handler) -> Handler:
        COMMANDS.append(Command(group, name, func, help, tuple(args), tuple(aliases)))
        return func

    return deco


def add_args(parser: argparse.ArgumentParser, args: Sequence[Arg | Exclusive]) -> None:
    for a in args:
        if isinstance(a, Exclusive):
            g = parser.add_mutually_exclusive_group()
            for x in a.args:
                g.add_argument(*x.flags, **x.kwargs)
        else:
            parser.add_argument(*a.flags, **a.kwargs)
