"""`midoflow trace`: what the virtual topology does with a packet, step by step."""

from __future__ import annotations

import argparse
from typing import Any

from midoflow.cli import render
from midoflow.cli.base import Context, UsageError, arg, command
from midoflow.cli.client import ApiError

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
PROTO_NAMES = {v: k for k, v in PROTOCOLS.items()}
# Packet fields in the order a person reads a header.
FIELD_ORDER = ("in_port", "eth_src", "eth_dst", "eth_type", "vlan", "ip_src", "ip_dst",
               "ip_proto", "ip_ttl", "tp_src", "tp_dst", "arp_op", "arp_sha", "arp_spa",
               "arp_tha", "arp_tpa")
ARP_OPS = {"request": 1, "reply": 2}


def number(value: str) -> int:
    """An integer in decimal or 0x hex (argparse names the type in its error)."""
    return int(value, 0)


def parse_proto(value: str) -> int:
    v = value.strip().lower()
    if v in PROTOCOLS:
        return PROTOCOLS[v]
    if v.isdigit() and int(v) <= 255:
        return int(v)
    raise UsageError(f"--proto wants tcp, udp, icmp or a number 0 to 255, not {value!r}")


def build_body(ctx: Context, a: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "in_port": ctx.client.resolve("ports", a.in_port, "port"),
        "eth_src": a.eth_src,
        "eth_dst": a.eth_dst,
    }
    if a.eth_type is not None:
        body["eth_type"] = a.eth_type
    if a.arp is not None:
        if a.ip_src is None or a.ip_dst is None:
            raise UsageError("--arp needs --ip-src (sender) and --ip-dst (target)")
        for opt in ("proto", "sport", "dport", "ttl", "size"):
            if getattr(a, opt) is not None:
                raise UsageError(f"--{opt} does not go with --arp")
        if a.df:
            raise UsageError("--df does not go with --arp")
        body.update(arp_op=ARP_OPS[a.arp], arp_spa=a.ip_src, arp_tpa=a.ip_dst)
        return body
    if a.df and a.size is None:
        raise UsageError("--df needs --size (the packet's IP length)")
    ip = {"ip_src": a.ip_src, "ip_dst": a.ip_dst, "ip_ttl": a.ttl, "tp_src": a.sport,
          "tp_dst": a.dport, "ip_len": a.size, "ip_df": True if a.df else None}
    if a.proto is not None:
        ip["ip_proto"] = parse_proto(a.proto)
    ip = {k: val for k, val in ip.items() if val is not None}
    if ip and (a.ip_src is None or a.ip_dst is None):
        raise UsageError("an IP packet needs both --ip-src and --ip-dst")
    if (a.sport is not None or a.dport is not None) and a.proto is None:
        raise UsageError("--sport/--dport need --proto (tcp, udp, or icmp for type/code)")
    body.update(ip)
    return body


def _names(ctx: Context) -> dict[str, str]:
    """id -> name of ports, bridges and routers, to label the steps (best effort)."""
    names: dict[str, str] = {}
    for kind in ("bridges", "routers", "ports"):
        try:
            for o in ctx.client.get(f"/{kind}") or []:
                if isinstance(o, dict) and o.get("name"):
                    names[o["id"]] = o["name"]
        except ApiError:
            pass
    return names


def _label(oid: Any, names: dict[str, str]) -> str:
    name = names.get(oid) if isinstance(oid, str) else None
    return f"{oid} ({name})" if name else str(oid)


def _packet_line(body: dict[str, Any], names: dict[str, str]) -> str:
    line = f"{body['eth_src']} > {body['eth_dst']}"
    if "arp_op" in body:
        op = "request" if body["arp_op"] == 1 else "reply"
        line += f", ARP {op} {body['arp_spa']} > {body['arp_tpa']}"
    elif "ip_dst" in body:
        proto = body.get("ip_proto")
        line += f", IPv4 {body['ip_src']} > {body['ip_dst']}"
        if proto is not None:
            line += f" {PROTO_NAMES.get(proto, f'proto {proto}')}"
        if "tp_src" in body or "tp_dst" in body:
            if proto == 1:
                line += f" type {body.get('tp_src', '-')} code {body.get('tp_dst', '-')}"
            else:
                line += f" {body.get('tp_src', '*')} > {body.get('tp_dst', '*')}"
        line += f" ttl {body.get('ip_ttl', 64)}"
        if "ip_len" in body:
            line += f", {body['ip_len']} bytes" + (" DF" if body.get("ip_df") else "")
    return f"packet: {line}, into port {_label(body['in_port'], names)}"


def _value(v: Any) -> str:
    return render.cell(v)


def format_trace(res: dict[str, Any], body: dict[str, Any], names: dict[str, str]) -> str:
    lines = [_packet_line(body, names), "steps:"]
    steps = res.get("steps") or []
    width = len(str(len(steps)))
    for i, s in enumerate(steps, 1):
        lines.append(f"  {i:>{width}}. {s.get('kind')} {_label(s.get('device'), names)}: "
                     f"{s.get('decision')}")
    if not steps:
        lines.append("  (none)")
    out = res.get("out_ports") or []
    if res.get("action") == "forward":
        lines.append("decision: FORWARD to " + ", ".join(
            f"port {_label(p, names)}" for p in out))
    else:
        lines.append(f"decision: DROP ({res.get('reason') or 'no reason given'})")
    rewrites = res.get("rewrites") or []
    if rewrites:
        parts = [f"ttl -{r['value']}" if r.get("field") == "ttl"
                 else f"{r.get('field')} -> {_value(r.get('value'))}" for r in rewrites]
        lines.append("rewrites: " + ", ".join(parts))
    for g in res.get("generated") or []:
        fields = ", ".join(f"{k}={_value(v)}" for k, v in (g.get("fields") or {}).items())
        lines.append(f"generated: {g.get('kind')} out of port {_label(g.get('out_port'), names)}"
                     + (f": {fields}" if fields else ""))
    wait = res.get("wait_arp")
    if wait:
        lines.append(f"waiting for: the ARP resolution of {wait[1]} by router "
                     f"{_label(wait[0], names)} (the packet is simulated again when it comes)")
    fields = res.get("match_fields") or []
    known = [f for f in FIELD_ORDER if f in fields] + sorted(f for f in fields
                                                              if f not in FIELD_ORDER)
    sent = dict(body)  # with the defaults the API applied
    sent.setdefault("eth_type", 0x0806 if "arp_op" in body else 0x0800)
    if "ip_dst" in body:
        sent.setdefault("ip_ttl", 64)
    sent["eth_type"] = f"0x{sent['eth_type']:04x}"
    match = ", ".join(f"{f}={_value(sent[f])}" if f in sent else f for f in known)
    lines.append(f"flow match: {match or '-'}")
    if res.get("cacheable"):
        lines.append("installed as a flow: yes")
    else:
        lines.append("installed as a flow: no (every such packet goes to the agent)")
    lines += [f"note: {n}" for n in res.get("notes") or []]
    return "\n".join(lines)


@command(None, "trace", "simulate a packet through the virtual topology (changes nothing)", [
    arg("--in-port", required=True, metavar="PORT", help="ingress port id or name"),
    arg("--eth-src", required=True, metavar="MAC"),
    arg("--eth-dst", required=True, metavar="MAC"),
    arg("--eth-type", type=number, metavar="N",
        help="EtherType (default 0x0800, or 0x0806 with --arp)"),
    arg("--ip-src", metavar="IP", help="IPv4 source (ARP sender with --arp)"),
    arg("--ip-dst", metavar="IP", help="IPv4 destination (ARP target with --arp)"),
    arg("--proto", metavar="PROTO", help="tcp, udp, icmp or a protocol number"),
    arg("--sport", type=int, metavar="N", help="source port (ICMP: type)"),
    arg("--dport", type=int, metavar="N", help="destination port (ICMP: code)"),
    arg("--ttl", type=int, metavar="N", help="IP TTL (default 64)"),
    arg("--size", type=int, metavar="BYTES",
        help="IP total length: routers check it against the egress MTU"),
    arg("--df", action="store_true", help="don't fragment (with --size)"),
    arg("--arp", choices=tuple(ARP_OPS), help="an ARP request or reply instead of IPv4"),
])
def trace(ctx: Context, a: argparse.Namespace) -> None:
    body = build_body(ctx, a)
    res = ctx.client.post("/trace", body)
    if ctx.json:
        ctx.emit(res)
        return
    ctx.emit(res, lambda r: format_trace(r, body, _names(ctx)))
