"""What the CLI's commands share: update bodies, --if-version, filters, admin state."""

from __future__ import annotations

import argparse

from midoflow.cli.base import Context, UsageError, arg, exclusive


def _changes(a: argparse.Namespace, *names: str) -> dict:
    """The update fields actually given on the command line."""
    body = {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}
    if not body:
        opts = ", ".join("--" + n.replace("_", "-") for n in names if n != "admin_state_up")
        if "admin_state_up" in names:
            opts += ", --up, --down"
        raise UsageError(f"nothing to update: give at least one of {opts}")
    if getattr(a, "version", None) is not None:
        body["version"] = a.version
    return body


IF_VERSION = arg("--if-version", type=int, dest="version", metavar="N",
                 help="refuse (409) unless the object is still at version N")


def _deleted(ctx: Context, label: str, oid: str) -> None:
    ctx.emit(None, f"deleted {label} {oid}")


FILTER_ARGS = (
    exclusive(
        arg("--inbound-filter", metavar="CHAIN", help="filter packets entering through it "
            "with this chain (id or name)"),
        arg("--no-inbound-filter", action="store_true", help="remove the inbound filter"),
    ),
    exclusive(
        arg("--outbound-filter", metavar="CHAIN", help="filter packets leaving through it "
            "with this chain (id or name)"),
        arg("--no-outbound-filter", action="store_true", help="remove the outbound filter"),
    ),
)


def filter_changes(ctx: Context, a: argparse.Namespace) -> dict:
    """inbound_filter_id / outbound_filter_id from --inbound-filter etc."""
    body: dict = {}
    for d in ("inbound", "outbound"):
        ref = getattr(a, f"{d}_filter")
        if ref is not None:
            body[f"{d}_filter_id"] = ctx.client.resolve("chains", ref, "chain")
        elif getattr(a, f"no_{d}_filter"):
            body[f"{d}_filter_id"] = None
    return body


def _given(a: argparse.Namespace, *names: str) -> bool:
    """Whether any of these options was given (False from --down is a value; from an
    unset --no-* flag it is not)."""
    for n in names:
        val = getattr(a, n, None)
        if val is not None and (val is not False or n in TRI_STATE):
            return True
    return False


TRI_STATE = ("admin_state_up", "port_security_enabled")


FILTER_FLAGS = ("inbound_filter", "no_inbound_filter", "outbound_filter", "no_outbound_filter")
FILTER_OPTS = "--inbound-filter, --outbound-filter, --no-inbound-filter, --no-outbound-filter"


UP_DOWN = exclusive(
    arg("--up", dest="admin_state_up", action="store_const", const=True,
        help="set the admin state up"),
    arg("--down", dest="admin_state_up", action="store_const", const=False,
        help="set the admin state down"),
)


def parse_pair(value: str) -> dict:
    """``IP[/LEN][,MAC]`` -> an allowed address pair."""
    ip, _, mac = value.partition(",")
    if not ip:
        raise UsageError(f"--allowed-address-pair wants IP[/LEN][,MAC], not {value!r}")
    pair: dict = {"ip_address": ip}
    if mac:
        pair["mac_address"] = mac
    return pair
