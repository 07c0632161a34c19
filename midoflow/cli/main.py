"""The ``midoflow`` command: every resource of the REST API, for people and scripts.

Exit status: 0 done, 1 the API refused (4xx/5xx) or a name did not resolve,
2 bad command line, 3 the API cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Importing a command module registers its commands (see midoflow.cli.base).
from midoflow.cli import (  # noqa: F401
    bgp,
    dhcp,
    kinds,
    lb,
    resources,
    routers,
    security,
    status,
    trace,
)
from midoflow.cli.base import COMMANDS, GROUPS, Context, UsageError, add_args
from midoflow.cli.client import (
    DEFAULT_API,
    ApiError,
    AuthFailed,
    Client,
    KeystoneLogin,
    ResolveError,
    Unreachable,
)

kinds.register_all()  # list/show of the declared kinds the modules above do not define

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

HINT = "is it running? (see 'make demo -- --keep' / MIDOFLOW_API)"
KEYSTONE_HINT = "is OS_AUTH_URL right and Keystone running?"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, not the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--api``/``--json``/``--timeout``: accepted before and after the command.

    Sub-parsers use SUPPRESS defaults so they only set what was given on their
    part of the line and never reset what the top-level parser set."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    g = parser.add_argument_group("global options")
    g.add_argument("--api", metavar="URL", default=d(None),
                   help=f"API base URL (env MIDOFLOW_API, default {DEFAULT_API})")
    g.add_argument("--json", action="store_true", default=d(False),
                   help="print the API's raw JSON (for scripts)")
    g.add_argument("--timeout", type=float, metavar="SECONDS", default=d(10.0),
                   help="per-request timeout (default 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="midoflow",
        description="Manage a midoflow cloud through its REST API.",
        epilog="authentication: the OpenStack variables OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, "
        "OS_PROJECT_NAME (OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME: default 'Default'; or "
        "OS_TOKEN) of a user with the admin role; without OS_AUTH_URL no token is sent (a "
        "no-auth development API). exit status: 0 ok, 1 API error, 2 usage error, "
        "3 API or Keystone unreachable",
    )
    _global_options(parser, top=True)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}

    def group_parsers(name: str) -> argparse._SubParsersAction:
        """The sub-parsers of a group (``"bgp peer"``: of ``peer`` under ``bgp``)."""
        if name not in groups:
            parent, _, leaf = name.rpartition(" ")
            gh = GROUPS.get(name, "")
            gp = (group_parsers(parent) if parent else top).add_parser(
                leaf, help=gh, description=gh)
            _global_options(gp, top=False)
            groups[name] = gp.add_subparsers(
                dest="action", metavar="ACTION", required=True, parser_class=_Parser
            )
        return groups[name]

    for cmd in COMMANDS:
        if cmd.group is None:
            p = top.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        else:
            p = group_parsers(cmd.group).add_parser(cmd.name, help=cmd.help,
                                                    description=cmd.help,
                                                    aliases=list(cmd.aliases))
        _global_options(p, top=False)
        add_args(p, cmd.args)
        p.set_defaults(handler=cmd.func)
    return parser


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    api = args.api or os.environ.get("MIDOFLOW_API") or DEFAULT_API
    try:
        client = Client(api, timeout=args.timeout,
                        login=KeystoneLogin.from_env(dict(os.environ), timeout=args.timeout))
    except ValueError as e:
        _err(str(e))
        return EXIT_USAGE
    ctx = Context(client=client, json=args.json)
    try:
        rc = handler(ctx, args)
    except UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    except ApiError as e:
        _err(e.one_line())
        return EXIT_API
    except (ResolveError, AuthFailed) as e:
        _err(str(e))
        return EXIT_API
    except Unreachable as e:
        hint = HINT if e.what == "the midoflow API" else KEYSTONE_HINT
        _err(f"cannot reach {e.what} at {e.base_url}: {e.reason} — {hint}")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # never a traceback for the user
        if os.environ.get("MIDOFLOW_DEBUG"):
            raise
        _err(f"internal error: {type(e).__name__}: {e} (set MIDOFLOW_DEBUG=1 for a traceback)")
        return EXIT_API
    return rc or EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
