"""Chains of rules, simulated: conditions (each invertible), accept / drop /
reject / jump / return / continue, and connection tracking (forward and
return flows). Pure: reads a TopologyView, writes into the builder.

A condition on a field the packet does not have (an IP field of an ARP
frame, a port of a later fragment) never matches, inverted or not, as in
iptables. Every field a condition reads joins the flow's match, so a flow
installed after a chain matches exactly what the rules looked at.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from midoflow.model import (
    FRAG_ANY,
    FRAG_HEADER,
    FRAG_NONHEADER,
    FRAG_UNFRAGMENTED,
    RULE_ACCEPT,
    RULE_CONTINUE,
    RULE_DROP,
    RULE_JUMP,
    RULE_REJECT,
    RULE_RETURN,
    Rule,
)
from midoflow.nat.conntrack import ConnKey
from midoflow.sim.packet import Packet
from midoflow.sim.result import _Builder, chain_tag, ip_addr_group_tag, port_group_tag
from midoflow.sim.view import TopologyView

MAX_JUMPS = 16  # jump depth: a loop of chains is cut here
TERMINAL = (RULE_ACCEPT, RULE_DROP, RULE_REJECT)
CT_FIELDS = ("eth_type", "ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst")


@dataclass(frozen=True)
class Context:
    """Where a chain runs: the port the packet entered the device through, the
    port it leaves by (outbound filters), and the device that tracks
    connections for these rules."""

    in_port: str
    out_port: str | None
    ct_device: str


def _ip(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


def _in_cidr(ip: str | None, cidr: str) -> bool | None:
    if ip is None:
        return None
    net, _, plen = cidr.partition("/")
    bits = int(plen) if plen else 32
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return _ip(ip) & mask == _ip(net) & mask


def _in_range(v: int | None, r: tuple[int, int]) -> bool | None:
    return None if v is None else r[0] <= v <= r[1]


def _frag_ok(policy: str, frag: int) -> bool:
    if policy == FRAG_ANY:
        return True
    if policy == FRAG_UNFRAGMENTED:
        return frag == 0
    if policy == FRAG_HEADER:
        return frag in (0, 1)
    if policy == FRAG_NONHEADER:
        return frag == 2
    return False


def is_return_flow(view: TopologyView, pkt: Packet, ctx: Context, b: _Builder) -> bool:
    """Conntrack at ``ctx.ct_device``: a reply of a tracked connection, or a
    forward packet (then its connection is to be tracked). The flow then
    matches the whole 5-tuple."""
    b.fields.update(CT_FIELDS)
    key = ConnKey.of(ctx.ct_device, pkt)
    if key is None:
        return False
    if view.is_return_flow(key):
        b.ct_hits.append(key)
        return True
    b.conntrack.append(key)
    return False


def matches(view: TopologyView, rule: Rule, pkt: Packet, ctx: Context, b: _Builder) -> bool:
    inv = rule.invert

    def cond(name: str, ok: bool | None) -> bool:
        return False if ok is None else ok != (name in inv)

    if not _frag_ok(rule.fragment_policy, pkt.ip_frag):
        if pkt.ip_frag:
            b.cacheable = False  # flows do not match on fragments: decide each
        return False
    if rule.in_ports:
        b.fields.add("in_port")
        if not cond("in_ports", ctx.in_port in rule.in_ports):
            return False
    if rule.out_ports and not cond("out_ports", ctx.out_port in rule.out_ports):
        return False
    if rule.port_group:
        b.tags.add(port_group_tag(rule.port_group))
        b.fields.add("in_port")
        g = view.port_group(rule.port_group)
        if not cond("port_group", g is not None and ctx.in_port in g.port_ids):
            return False
    for name, field, gid in (("ip_addr_group_src", "ip_src", rule.ip_addr_group_src),
                             ("ip_addr_group_dst", "ip_dst", rule.ip_addr_group_dst)):
        if gid:
            b.tags.add(ip_addr_group_tag(gid))
            b.fields.update(("eth_type", field))
            g = view.ip_addr_group(gid)
            addr = getattr(pkt, field)
            if not cond(name, None if addr is None else g is not None and addr in g.addresses):
                return False
    if rule.eth_type is not None:
        b.fields.add("eth_type")
        if not cond("eth_type", pkt.eth_type == rule.eth_type):
            return False
    for name in ("eth_src", "eth_dst"):
        want = getattr(rule, name)
        if want is not None:
            b.fields.add(name)
            if not cond(name, getattr(pkt, name) == want.lower()):
                return False
    for name, field in (("nw_src", "ip_src"), ("nw_dst", "ip_dst")):
        want = getattr(rule, name)
        if want is not None:
            b.fields.update(("eth_type", field))
            if not cond(name, _in_cidr(getattr(pkt, field), want)):
                return False
    if rule.nw_proto is not None:
        b.fields.update(("eth_type", "ip_proto"))
        if not cond("nw_proto", None if pkt.ip_proto is None else pkt.ip_proto == rule.nw_proto):
            return False
    if rule.nw_tos is not None:
        b.fields.update(("eth_type", "ip_tos"))
        if not cond("nw_tos", None if pkt.ip_dst is None else pkt.ip_tos == rule.nw_tos):
            return False
    for name in ("tp_src", "tp_dst"):
        want = getattr(rule, name)
        if want is not None:
            b.fields.update(("eth_type", "ip_proto", name))
            if not cond(name, _in_range(getattr(pkt, name), want)):
                return False
    if rule.match_forward_flow or rule.match_return_flow:
        ret = is_return_flow(view, pkt, ctx, b)
        if rule.match_return_flow and not ret:
            return False
        if rule.match_forward_flow and ret:
            return False
    return True


def run(view: TopologyView, chain_id: str, pkt: Packet, ctx: Context, b: _Builder,
        depth: int = 0) -> str | None:
    """Evaluate a chain: accept, drop or reject, or None when it ends or
    returns without deciding (the caller carries on)."""
    b.tags.add(chain_tag(chain_id))
    chain = view.chain(chain_id)
    if chain is None:
        b.step("chain", chain_id, "chain missing: drop")
        return RULE_DROP
    if depth > MAX_JUMPS:
        b.step("chain", chain_id, f"more than {MAX_JUMPS} nested jumps: drop")
        return RULE_DROP
    for rid in chain.rule_ids:
        rule = view.rule(rid)
        if rule is None or not matches(view, rule, pkt, ctx, b):
            continue
        label = f"{chain.name or chain_id} rule {rid}"
        if rule.action in TERMINAL:
            b.step("chain", chain_id, f"{label}: {rule.action}")
            return rule.action
        if rule.action == RULE_RETURN:
            b.step("chain", chain_id, f"{label}: return")
            return None
        if rule.action == RULE_JUMP and rule.jump_chain_id:
            b.step("chain", chain_id, f"{label}: jump to {rule.jump_chain_id}")
            verdict = run(view, rule.jump_chain_id, pkt, ctx, b, depth + 1)
            if verdict is not None:
                return verdict
            continue
        if rule.action == RULE_CONTINUE:
            continue
        b.step("chain", chain_id, f"{label}: {rule.action} not applicable here: continue")
    return None
