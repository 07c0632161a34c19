"""Chains of rules, simulated: conditions (each invertible), accept / drop /
reject / jump / return / continue, and connection tracking (forward and
return flows). Pure: reads a TopologyView, writes into the builder.

A condition on a field the packet does not have (a protocol or port of an
ARP frame, a port of a later fragment) never matches, inverted or not, as in
iptables. As in MidoNet (whose flow match took an ARP frame's sender and
target protocol addresses as its network source and destination), the
address conditions ``nw_src``/``nw_dst`` and the IP address groups match an
ARP frame's SPA/TPA: port security checks an ARP sender's address with the
same rules as an IP source. Every field a condition reads joins the flow's
match (``arp_spa``/``arp_tpa`` for ARP), so a flow installed after a chain
matches exactly what the rules looked at.
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
    RULE_DNAT,
    RULE_DROP,
    RULE_JUMP,
    RULE_REJECT,
    RULE_RETURN,
    RULE_REV_DNAT,
    RULE_REV_SNAT,
    RULE_SNAT,
    RULE_STATIC_DNAT,
    RULE_STATIC_SNAT,
    Rule,
)
from midoflow.nat.bindings import DNAT, SNAT, NatBinding
from midoflow.nat.conntrack import ConnKey, icmp_is_error
from midoflow.sim.packet import ETH_ARP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import (
    Rewrite,
    _Builder,
    chain_tag,
    ct_miss_tag,
    ip_addr_group_tag,
    nat_miss_tag,
    port_group_tag,
)
from midoflow.sim.view import FlowStateView, TopologyView

MAX_JUMPS = 16  # jump depth: a loop of chains is cut here
TERMINAL = (RULE_ACCEPT, RULE_DROP, RULE_REJECT)
CT_FIELDS = ("eth_type", "ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst")


@dataclass(frozen=True)
class Context:
    """Where a chain runs: the port the packet entered the device through, the
    port it leaves by (outbound filters), the device that tracks
    connections for these rules, and the host's flow state (read only)."""

    in_port: str
    out_port: str | None
    ct_device: str
    state: FlowStateView


def _ip(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


def _in_cidr(ip: str | None, cidr: str) -> bool | None:
    if not ip:
        return None
    net, _, plen = cidr.partition("/")
    bits = int(plen) if plen else 32
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return _ip(ip) & mask == _ip(net) & mask


def _in_range(v: int | None, r: tuple[int, int]) -> bool | None:
    return None if v is None else r[0] <= v <= r[1]


def _nw(pkt: Packet, which: str, b: _Builder) -> tuple[str | None, str]:
    """The network address ``which`` ("src" or "dst") a condition reads, and
    the flow field it joins: an IP address, or an ARP frame's SPA/TPA. An
    ARP frame without one (its payload did not parse) gets no flow: a flow
    could not tell it from a whole ARP frame."""
    if pkt.eth_type == ETH_ARP:
        addr, field = (pkt.arp_spa, "arp_spa") if which == "src" else (pkt.arp_tpa, "arp_tpa")
        if not addr:
            b.cacheable = False
        return addr, field
    return getattr(pkt, "ip_" + which), "ip_" + which


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


def _related(pkt: Packet, ctx: Context, b: _Builder) -> bool:
    """An ICMP error (destination unreachable, time exceeded) about a tracked
    connection, as iptables' RELATED: its quoted packet is one of the
    connection's, sent either way (a forward packet: its reverse is the
    return key; a reply: it is the return key itself). Such an error counts
    as a return flow; an error about no tracked connection is neither a
    return flow nor tracked (conntrack calls it INVALID).

    The decision read the quoted packet, which no OpenFlow match can see, so
    it never becomes a flow: one admitting "ICMP unreachable from X to Y"
    would admit errors about any other connection (or none) too; and a drop
    flow would drop the next, related one. Errors are rare; each is simulated."""
    b.cacheable = False
    proto, isrc, isport, idst, idport = pkt.icmp_inner  # type: ignore[misc]
    quoted = ConnKey(ctx.ct_device, proto, isrc, isport, idst, idport)
    for key in (quoted.reverse(), quoted):
        if ctx.state.is_return_flow(key):
            b.step("conntrack", ctx.ct_device,
                   f"ICMP error type {pkt.tp_src} code {pkt.tp_dst} about {key.dst}:{key.dport}"
                   f" <-> {key.src}:{key.sport}, a tracked connection: related")
            return True
    b.step("conntrack", ctx.ct_device, f"ICMP error type {pkt.tp_src} about {isrc}:{isport} -> "
                                       f"{idst}:{idport}, no tracked connection: not related")
    return False


def is_return_flow(view: TopologyView, pkt: Packet, ctx: Context, b: _Builder) -> bool:
    """Conntrack at ``ctx.ct_device``: a reply of a tracked connection (or an
    ICMP error about one: :func:`_related`), or a forward packet (then its
    connection is to be tracked). The flow then matches the whole 5-tuple."""
    b.fields.update(CT_FIELDS)
    if pkt.icmp_inner is not None and icmp_is_error(pkt):
        # not a connection of its own either way (Linux: RELATED or INVALID)
        return _related(pkt, ctx, b)
    key = ConnKey.of(ctx.ct_device, pkt)
    if key is None:
        return False
    if ctx.state.is_return_flow(key):
        b.ct_hits.append(key)
        b.step("conntrack", ctx.ct_device, f"{key.src}:{key.sport} -> {key.dst}:{key.dport} "
                                           "is a reply of a tracked connection")
        return True
    # the state of this connection may still be on its way from another host
    b.tags.add(ct_miss_tag(key))
    if key not in b.conntrack:
        b.conntrack.append(key)
        b.step("conntrack", ctx.ct_device, f"{key.src}:{key.sport} -> {key.dst}:{key.dport} "
                                           "opens a connection: tracked")
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
    for name, which, gid in (("ip_addr_group_src", "src", rule.ip_addr_group_src),
                             ("ip_addr_group_dst", "dst", rule.ip_addr_group_dst)):
        if gid:
            b.tags.add(ip_addr_group_tag(gid))
            addr, field = _nw(pkt, which, b)
            b.fields.update(("eth_type", field))
            g = view.ip_addr_group(gid)
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
    for name, which in (("nw_src", "src"), ("nw_dst", "dst")):
        want = getattr(rule, name)
        if want is not None:
            addr, field = _nw(pkt, which, b)
            b.fields.update(("eth_type", field))
            if not cond(name, _in_cidr(addr, want)):
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
        depth: int = 0) -> tuple[str | None, Packet]:
    """Evaluate a chain: (accept, drop or reject, or None when it ends or
    returns without deciding), and the packet as NAT rules left it."""
    b.tags.add(chain_tag(chain_id))
    chain = view.chain(chain_id)
    if chain is None:
        b.step("chain", chain_id, "chain missing: drop")
        return RULE_DROP, pkt
    if depth > MAX_JUMPS:
        b.step("chain", chain_id, f"more than {MAX_JUMPS} nested jumps: drop")
        return RULE_DROP, pkt
    for rid in chain.rule_ids:
        rule = view.rule(rid)
        if rule is None or not matches(view, rule, pkt, ctx, b):
            continue
        label = f"{chain.name or chain_id} rule {rid}"
        if rule.action in TERMINAL:
            b.step("chain", chain_id, f"{label}: {rule.action}")
            return rule.action, pkt
        if rule.action == RULE_RETURN:
            b.step("chain", chain_id, f"{label}: return")
            return None, pkt
        if rule.action == RULE_JUMP and rule.jump_chain_id:
            b.step("chain", chain_id, f"{label}: jump to {rule.jump_chain_id}")
            verdict, pkt = run(view, rule.jump_chain_id, pkt, ctx, b, depth + 1)
            if verdict is not None:
                return verdict, pkt
            continue
        if rule.action == RULE_CONTINUE:
            continue
        if rule.action in (RULE_SNAT, RULE_DNAT):
            verdict, pkt = _nat(view, rule, pkt, ctx, b, label)
            if verdict is None:  # not translatable (an ARP frame): the next rule
                continue
            return verdict, pkt
        if rule.action in (RULE_STATIC_SNAT, RULE_STATIC_DNAT):
            if pkt.ip_dst is None or not rule.nat_targets:
                continue
            which = "src" if rule.action == RULE_STATIC_SNAT else "dst"
            addr = rule.nat_targets[0].addr_from
            b.fields.update(("eth_type", f"ip_{which}"))
            b.step("chain", chain_id, f"{label}: stateless {which} NAT "
                                      f"{getattr(pkt, 'ip_' + which)} -> {addr}")
            if getattr(pkt, f"ip_{which}") != addr:
                b.rewrites.append(Rewrite(f"ip_{which}", addr))
                pkt = pkt.evolve(**{f"ip_{which}": addr})
            return RULE_ACCEPT, pkt
        if rule.action in (RULE_REV_SNAT, RULE_REV_DNAT):
            out = _rev_nat(view, rule, pkt, ctx, b, label)
            if out is not None:
                return RULE_ACCEPT, out
            continue
        b.step("chain", chain_id, f"{label}: {rule.action} not applicable here: continue")
    return None, pkt


def _translate(b: _Builder, pkt: Packet, which: str, addr: tuple[str, int]) -> Packet:
    """Rewrite the source ("src") or destination ("dst") address and port."""
    ip_f, tp_f = f"ip_{which}", f"tp_{which}"
    changes: dict = {}
    if getattr(pkt, ip_f) != addr[0]:
        b.rewrites.append(Rewrite(ip_f, addr[0]))
        changes[ip_f] = addr[0]
    if pkt.ip_proto in (PROTO_TCP, PROTO_UDP) and getattr(pkt, tp_f) != addr[1]:
        b.rewrites.append(Rewrite(tp_f, addr[1]))
        changes[tp_f] = addr[1]
    elif pkt.icmp_id is not None and pkt.icmp_id != addr[1]:
        # OpenFlow can neither match nor set an echo identifier: the agent
        # rewrites it in the packet itself, every packet (no flow).
        b.rewrites.append(Rewrite("icmp_id", addr[1]))
        b.cacheable = False
        changes["icmp_id"] = addr[1]
    return pkt.evolve(**changes) if changes else pkt


def _nat(view: TopologyView, rule: Rule, pkt: Packet, ctx: Context, b: _Builder,
         label: str) -> tuple[str | None, Packet]:
    """SNAT or DNAT a connection's packet (the same binding for all its
    packets), then accept. An ICMP echo's identifier is translated like a
    port; other ICMP by address only."""
    kind = SNAT if rule.action == RULE_SNAT else DNAT
    key = ConnKey.of(ctx.ct_device, pkt)
    if key is None or not rule.nat_targets:
        b.step("chain", ctx.ct_device, f"{label}: {kind} of a non-IP packet: continue")
        return None, pkt
    b.fields.update(CT_FIELDS)
    ports = pkt.ip_proto in (PROTO_TCP, PROTO_UDP) or pkt.icmp_id is not None
    if pkt.icmp_id is not None:
        b.cacheable = False  # replies must be told apart by identifier: no flow
    binding = ctx.state.nat_forward(kind, key)
    if binding is None:
        t = rule.nat_targets[0]
        if kind == SNAT:
            orig = (key.src, key.sport)
            keep = not t.port_from and not t.port_to and t.addr_from == t.addr_to
            if keep or not ports:  # 1:1 (a floating IP), or no ports: the address only
                xl = (t.addr_from, key.sport)
            else:
                xl = ctx.state.nat_propose(rule.nat_targets, key.proto, b.nat_allocs)
                if xl is None:  # the agent leases a block and simulates again
                    b.cacheable = False
                    b.nat_wants.append((tuple(rule.nat_targets), key.proto))
                    b.step("chain", ctx.ct_device, f"{label}: no SNAT port free in this "
                                                   "host's blocks: drop")
                    return RULE_DROP, pkt
                b.nat_allocs.append((xl[0], xl[1], key.proto))
        else:
            orig = (key.dst, key.dport)
            xl = (t.addr_from, t.port_from if t.port_from and ports else key.dport)
        binding = NatBinding(kind, key, orig, xl)
        b.nat.append(binding)
    else:  # the connection's flow keeps its binding alive, as a reply's does
        b.ct_hits.append(("nat", binding))
    which = "src" if kind == SNAT else "dst"
    b.step("chain", ctx.ct_device, f"{label}: {kind} {binding.orig[0]}:{binding.orig[1]} -> "
                                   f"{binding.xlated[0]}:{binding.xlated[1]}")
    return RULE_ACCEPT, _translate(b, pkt, which, binding.xlated)


def _rev_nat_icmp_error(view: TopologyView, kind: str, pkt: Packet, ctx: Context,
                        b: _Builder, label: str) -> Packet | None:
    """An ICMP error about a translated connection (its quoted packet is one
    we sent, translated): the error goes back to the original host, and the
    quoted packet shows the original address, as the host sent it."""
    proto, isrc, isport, idst, idport = pkt.icmp_inner
    sent = ConnKey(ctx.ct_device, proto, isrc, isport, idst, idport)
    binding = ctx.state.nat_reverse(kind, sent.reverse())
    b.cacheable = False  # the quoted packet is rewritten in the agent, and errors are rare
    if binding is None:
        return None
    which = "dst" if kind == SNAT else "src"
    inner = "icmp_inner_src" if kind == SNAT else "icmp_inner_dst"
    b.rewrites.append(Rewrite(inner, f"{binding.orig[0]}:{binding.orig[1]}"))
    b.step("chain", ctx.ct_device, f"{label}: ICMP error about a translated connection: back "
                                   f"to {binding.orig[0]}:{binding.orig[1]}")
    if proto == PROTO_ICMP:  # a quoted ping: its identifier is both "ports"
        isport = idport = binding.orig[1]
    out = pkt.evolve(icmp_inner=(proto, *binding.orig, idst, idport) if kind == SNAT
                     else (proto, isrc, isport, *binding.orig))
    if getattr(out, f"ip_{which}") != binding.orig[0]:
        b.rewrites.append(Rewrite(f"ip_{which}", binding.orig[0]))
        out = out.evolve(**{f"ip_{which}": binding.orig[0]})
    return out


def _rev_nat(view: TopologyView, rule: Rule, pkt: Packet, ctx: Context, b: _Builder,
             label: str) -> Packet | None:
    """A reply of a translated connection: restore the original address."""
    kind = SNAT if rule.action == RULE_REV_SNAT else DNAT
    if pkt.icmp_inner is not None:
        return _rev_nat_icmp_error(view, kind, pkt, ctx, b, label)
    key = ConnKey.of(ctx.ct_device, pkt)
    if key is None:
        return None
    b.fields.update(CT_FIELDS)
    binding = ctx.state.nat_reverse(kind, key)
    if binding is None:
        b.tags.add(nat_miss_tag(kind, key))  # the binding may be on its way
        return None
    if pkt.icmp_id is not None:
        b.cacheable = False
    b.ct_hits.append(("nat", binding))
    which = "dst" if kind == SNAT else "src"
    b.step("chain", ctx.ct_device, f"{label}: reverse {kind} -> "
                                   f"{binding.orig[0]}:{binding.orig[1]}")
    return _translate(b, pkt, which, binding.orig)
