"""List columns and show order of every kind, from its declaration (:mod:`midoflow.kinds`).

A declared column names a field and, optionally, a formatter here (``fmt``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from midoflow.cli import render
from midoflow.cli.render import Column, col
from midoflow.kinds import KINDS
from midoflow.model import RULE_JUMP

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}


def port_address(p: dict) -> str | None:
    """A router port's ``ip/len``; None for a bridge port."""
    if p.get("ip_address") is None:
        return None
    return f"{p['ip_address']}/{p.get('prefix_len')}"


def range_text(r: list | None) -> str:
    if not r:
        return ""
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def rule_match(r: dict) -> str:
    """The rule's conditions, e.g. ``tcp nw_src!=10.0.0.0/8 tp_dst=80 return-flow``."""
    parts = []
    inv = set(r.get("invert") or ())

    def cond(name: str, text: str) -> None:
        parts.append(f"{name}{'!=' if name in inv else '='}{text}")

    for f in ("in_ports", "out_ports"):
        if r.get(f):
            cond(f, ",".join(r[f]))
    for f in ("port_group", "ip_addr_group_src", "ip_addr_group_dst"):
        if r.get(f):
            cond(f, r[f])
    if r.get("eth_type") is not None:
        cond("eth_type", f"0x{r['eth_type']:04x}")
    for f in ("eth_src", "eth_dst", "nw_src", "nw_dst"):
        if r.get(f):
            cond(f, r[f])
    if r.get("nw_proto") is not None:
        cond("nw_proto", PROTOCOL_NAMES.get(r["nw_proto"], str(r["nw_proto"])))
    if r.get("nw_tos") is not None:
        cond("nw_tos", str(r["nw_tos"]))
    for f in ("tp_src", "tp_dst"):
        if r.get(f):
            cond(f, range_text(r[f]))
    if r.get("match_forward_flow"):
        parts.append("forward-flow")
    if r.get("match_return_flow"):
        parts.append("return-flow")
    if r.get("fragment_policy") not in (None, "any"):
        parts.append(f"fragments={r['fragment_policy']}")
    return " ".join(parts) or "any"


def rule_action(r: dict) -> str:
    action = r.get("action") or ""
    if action == RULE_JUMP:
        return f"jump {r.get('jump_chain_id')}"
    if r.get("nat_targets"):
        targets = []
        for t in r["nat_targets"]:
            addr = t["addr_from"] if t["addr_from"] == t["addr_to"] else \
                f"{t['addr_from']}-{t['addr_to']}"
            if t.get("port_from"):
                addr += f":{range_text([t['port_from'], t['port_to']])}"
            targets.append(addr)
        return f"{action} {', '.join(targets)}"
    return action


def _bgp_prefixes(p: dict) -> str | None:
    """``received/advertised`` while an agent holds the session."""
    st = p.get("status") or {}
    rx, tx = st.get("prefixes_received"), st.get("prefixes_advertised")
    if rx is None and tx is None:
        return None
    return f"{render.cell(rx)}/{render.cell(tx)}"


# fmt name -> the cell of a row, given the column's field
FORMATS: dict[str, Callable[[dict, str], Any]] = {
    "count": lambda r, f: len(r.get(f) or ()),
    "updown": lambda r, f: render.updown(r.get(f)),
    "alive": lambda r, f: None if f not in r else ("alive" if r[f] else "DOWN"),
    "not_any": lambda r, f: None if r.get(f) == "0.0.0.0/0" else r.get(f),
    "port_address": lambda r, f: port_address(r),
    "rule_action": lambda r, f: rule_action(r),
    "rule_match": lambda r, f: rule_match(r),
    "bgp_timers": lambda r, f: f"{r.get('keepalive')}/{r.get('hold_time')}",
    "bgp_state": lambda r, f: (r.get("status") or {}).get("state"),
    "bgp_host": lambda r, f: (r.get("status") or {}).get("host_id"),
    "bgp_prefixes": lambda r, f: _bgp_prefixes(r),
}


def _column(header: str, field: str, fmt: str | None) -> Column:
    if fmt is None:
        return col(header, field)
    cell = FORMATS[fmt]
    return (header, lambda row: cell(row, field))


def columns(kind: str) -> list[Column]:
    """The ``list`` columns of a kind."""
    return [_column(c.header, c.field, c.fmt) for c in KINDS[kind].columns]


def show_order(kind: str) -> tuple[str, ...]:
    """The ``show`` order of a kind's fields."""
    return KINDS[kind].show_order
