"""Fast restart: judge the simulated flows OVS kept while the agent was away.

A (re)connecting agent with ``fast_restart`` does not wipe the switch. It asks
OVS for every flow in the simulated-decision table, lets them carry traffic,
and once its bindings are up and their flow state is recovered it judges each:
the flow's match becomes a packet, the packet is simulated again without
committing anything (``AgentCore.dry_decision``) and turned into the flow the
agent would install now. Same match, priority and instructions: the flow is
adopted under its own cookie with the decision's tags and owner (so later
topology changes invalidate it as usual); anything else is stale and deleted
by its cookie.

Pure: the caller (``midoflow.apps.agent``) dumps the flows, builds the flow
the agent would install (through ``midoflow.apps.pipeline``) and sends the
deletes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from midoflow.sim.packet import ETH_ARP, ETH_IP, PROTO_ICMP, PROTO_TCP, PROTO_UDP

# A kept TCP flow carries a connection's middle: stand for its packets with a
# bare ACK (SYN created the flow; a tracked connection's FIN and RST reach
# the agent by its close flows, which follow the flow's verdict).
TCP_ACK = 0x10
ANY_IP = "0.0.0.0"
ANY_MAC = "00:00:00:00:00:00"

_DIRECT = {"eth_src": "eth_src", "eth_dst": "eth_dst", "eth_type": "eth_type",
           "ipv4_src": "ip_src", "ipv4_dst": "ip_dst", "ip_proto": "ip_proto",
           "arp_op": "arp_op", "arp_spa": "arp_spa", "arp_tpa": "arp_tpa",
           "arp_sha": "arp_sha"}
_PORTS = {"tcp_src": ("tp_src", PROTO_TCP), "tcp_dst": ("tp_dst", PROTO_TCP),
          "udp_src": ("tp_src", PROTO_UDP), "udp_dst": ("tp_dst", PROTO_UDP),
          "icmpv4_type": ("tp_src", PROTO_ICMP), "icmpv4_code": ("tp_dst", PROTO_ICMP)}


@dataclass(frozen=True)
class KeptFlow:
    """One flow OVS holds in the simulated table, as the agent reads it back.

    ``match``: field name (os-ken's OXM names) -> value, masked fields as
    (value, mask); ``instructions``: any comparable form the caller also
    gives the flow it would build (e.g. the serialized bytes)."""

    cookie: int
    match: Mapping[str, Any]
    priority: int
    instructions: Any


@dataclass(frozen=True)
class Wanted:
    """The flow the agent would install now for a decision (same form as KeptFlow)."""

    match: Mapping[str, Any]
    priority: int
    instructions: Any


@dataclass
class Verdict:
    # every flow to adopt, with the decision it stands for
    keep: list[tuple[KeptFlow, Any]] = field(default_factory=list)
    stale: list[KeptFlow] = field(default_factory=list)
    # why each stale cookie went: "unreadable match", "no decision", "not
    # installable", "differs"
    why: dict[int, str] = field(default_factory=dict)


def packet_of(match: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """A kept flow's match -> (ingress ofport, the packet fields
    ``frames.parse`` would give for a packet it carries); None when the match
    holds something no simulated flow matches on (masks, tunnel fields...).

    Fields the flow does not match get placeholder values, never None: a
    decision that now reads one of them puts it in its match, which then
    differs from the kept flow's, so the flow is judged stale (safe: its next
    packet is simply simulated again)."""
    if not isinstance(match.get("in_port"), int):
        return None
    f: dict[str, Any] = {}
    proto_of_ports = None
    dscp = ecn = 0
    for name, value in match.items():
        if name == "in_port":
            continue
        if isinstance(value, tuple):  # masked: the agent never installs those
            return None
        if name in _DIRECT:
            f[_DIRECT[name]] = value
        elif name in _PORTS:
            slot, proto = _PORTS[name]
            if proto_of_ports not in (None, proto):
                return None
            proto_of_ports = proto
            f[slot] = value
        elif name == "ip_dscp":
            dscp = value
        elif name == "ip_ecn":
            ecn = value
        else:
            return None
    f.setdefault("eth_src", ANY_MAC)
    f.setdefault("eth_dst", ANY_MAC)
    eth_type = f.setdefault("eth_type", ETH_IP)
    if eth_type == ETH_IP:
        f.setdefault("ip_src", ANY_IP)
        f.setdefault("ip_dst", ANY_IP)
        proto = f.setdefault("ip_proto", proto_of_ports if proto_of_ports is not None else 0)
        f["ip_tos"] = dscp << 2 | ecn
        if proto in (PROTO_TCP, PROTO_UDP, PROTO_ICMP):
            f.setdefault("tp_src", 0)
            f.setdefault("tp_dst", 0)
        if proto == PROTO_TCP:
            f["tcp_flags"] = TCP_ACK
    elif eth_type == ETH_ARP:
        f.setdefault("arp_op", 1)
        f.setdefault("arp_spa", ANY_IP)
        f.setdefault("arp_tpa", ANY_IP)
        f.setdefault("arp_sha", f["eth_src"])
        f["arp_tha"] = ANY_MAC
    elif proto_of_ports is not None or any(k.startswith(("ip_", "arp_")) for k in f):
        return None
    return match["in_port"], f


def judge(kept: Iterable[KeptFlow],
          decide: Callable[[int, dict[str, Any]], Any | None],
          build: Callable[[Any, int], Wanted]) -> Verdict:
    """Sort the kept flows into those to adopt and the stale ones.

    ``decide(ofport, fields)``: the Decision the agent would take now, without
    committing anything (``AgentCore.dry_decision``), or None; ``build(decision,
    ofport)``: the flow it would install for it. A decision that raises counts
    as none: the flow goes, its next packet is simulated the ordinary way."""
    v = Verdict()

    def stale(flow: KeptFlow, why: str) -> None:
        v.stale.append(flow)
        v.why[flow.cookie] = why

    for flow in kept:
        pkt = packet_of(flow.match)
        if pkt is None:
            stale(flow, "unreadable match")
            continue
        ofport, fields = pkt
        try:
            decision = decide(ofport, fields)
        except Exception:  # noqa: BLE001 - judged stale, like any doubt
            decision = None
        if decision is None:
            stale(flow, "no decision")
            continue
        if not decision.install:
            stale(flow, "not installable")
            continue
        want = build(decision, ofport)
        if (dict(want.match), want.priority, want.instructions) != \
                (dict(flow.match), flow.priority, flow.instructions):
            stale(flow, "differs")
            continue
        v.keep.append((flow, decision))
    return v


def orphan_ports(classify: Iterable[tuple[Mapping[str, Any], Any]], bound: Iterable[int],
                 simulated_table: int) -> dict[int, int | None]:
    """Ports whose classify flows OVS kept but that are bound here no more
    (unbound while the agent was away): ofport -> the tunnel key its
    delivery flow carries (None if it has none).

    ``classify``: the classify table's flows as (match, instructions) with the
    instructions in the form ``MidoflowAgent._instructions_key`` gives:
    ``("goto", table)``, ``("actions", type, (("output", port, _), ...))``."""
    bound = set(bound)
    classified: set[int] = set()
    keys: dict[int, int] = {}
    for match, inst in classify:
        port = match.get("in_port")
        if set(match) == {"in_port"} and inst == (("goto", simulated_table),):
            classified.add(port)
        elif set(match) == {"in_port", "tunnel_id"} and len(inst) == 1 \
                and inst[0][0] == "actions" and len(inst[0][2]) == 1 \
                and inst[0][2][0][0] == "output":
            keys[inst[0][2][0][1]] = match["tunnel_id"]
    return {p: keys.get(p) for p in sorted(classified - bound)}
