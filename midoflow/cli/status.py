"""`midoflow status`: the health of the store and of every host, on one screen."""

from __future__ import annotations

import argparse

from midoflow.cli import render
from midoflow.cli.base import Context, command
from midoflow.cli.render import col


def _tunnel_ips(h: dict) -> str:
    ips = h.get("tunnel_ips")
    if isinstance(ips, dict):
        return ", ".join(f"{ip} ({k})" for k, ip in ips.items()) or "-"
    return render.cell(ips)


def _ovs(h: dict) -> str:
    if h.get("ovs_connected"):
        return "connected"
    return "DISCONNECTED" if h.get("alive") else "-"


HOST_COLS = [
    col("HOST ID", "id"),
    col("NAME", "name"),
    col("ALIVE", lambda h: "alive" if h.get("alive") else "DOWN"),
    col("OVS", lambda h: _ovs(h)),
    col("TUNNEL IPS", _tunnel_ips),
]


def format_status(st: dict) -> str:
    store = st.get("store") or {}
    connected = store.get("connected")
    backend = store.get("backend") or "store"
    health = "connected" if connected else "NOT CONNECTED"
    extra = [
        f"{k}={render.cell(v)}" for k, v in store.items() if k not in ("backend", "connected")
    ]
    lines = [f"store:  {backend} {health}" + (f"  ({', '.join(extra)})" if extra else "")]
    hosts = st.get("hosts") or []
    alive = sum(1 for h in hosts if h.get("alive"))
    ovs = sum(1 for h in hosts if h.get("alive") and h.get("ovs_connected"))
    lines.append(f"hosts:  {len(hosts)} registered, {alive} alive, {ovs} with OVS connected")
    if hosts:
        lines += ["", render.table(hosts, HOST_COLS)]
    lines += _protection(hosts)
    lines += _dhcp(hosts)
    peers = st.get("bgp_peers")
    if peers:
        up = [p for p in peers if (p.get("status") or {}).get("state") == "established"]
        lines += ["", f"bgp:    {len(up)} of {len(peers)} sessions established"]
        for p in peers:
            if p not in up:
                state = (p.get("status") or {}).get("state") or "down"
                lines.append(f"        {p.get('peer_address')} (AS {p.get('peer_as')}) on port "
                             f"{p.get('port_id')}: {state}")
    return "\n".join(lines)


def _protection(hosts: list[dict]) -> list[str]:
    """A line per limit each host's agent hit (issue 9's per-port bounds)."""
    out: list[str] = []
    for h in hosts:
        prot = h.get("protection")
        if not isinstance(prot, dict):
            continue
        limits = prot.get("limits") or {}
        name = h.get("name") or h.get("id")
        for port, n in (prot.get("mac_limit") or {}).items():
            out.append(f"        {name}: port {port}: {n} frame(s) from new source MACs dropped "
                       f"(limit {limits.get('max_macs_per_port', '?')} MACs per port)")
        for port, n in (prot.get("flow_limit") or {}).items():
            out.append(f"        {name}: port {port}: {n} flow(s) not installed "
                       f"(limit {limits.get('max_flows_per_port', '?')} flows per port)")
        for port, n in (prot.get("metered_drops") or {}).items():
            if n:
                out.append(f"        {name}: port {port}: {n} packet-in(s) dropped by its meter "
                           f"(limit {limits.get('packet_in_rate', '?')}/s)")
        for port, n in (prot.get("storm_blocked") or {}).items():
            out.append(f"        {name}: port {port}: cut off {n} time(s) for "
                       f"{limits.get('storm_seconds', '?')} s (storm control: its meter "
                       f"dropped over {limits.get('storm_factor', '?')}x its rate)")
        for port, n in (prot.get("queue_drops") or {}).items():
            out.append(f"        {name}: port {port}: {n} packet-in(s) dropped by the agent's "
                       f"queue (limit {limits.get('packet_in_queue', '?')} waiting per port)")
        malformed = prot.get("malformed") or {}
        if malformed:
            why = ", ".join(f"{r} {n}" for r, n in malformed.items())
            out.append(f"        {name}: {sum(malformed.values())} malformed frame(s) dropped "
                       f"({why})")
        if prot.get("fragments_dropped"):
            out.append(f"        {name}: {prot['fragments_dropped']} IP fragment(s) without "
                       "their first fragment dropped")
    if out:
        out = ["", "limits: what the agents' per-port bounds refused", *out]
    return out


def _dhcp(hosts: list[dict]) -> list[str]:
    """A line per host whose agent answered DHCP: its counters by kind (a NAK
    is a client asking for another port's address; a decline, an address
    already in use on the network)."""
    out = []
    for h in hosts:
        counts = (h.get("protection") or {}).get("dhcp") or {}
        if isinstance(counts, dict) and counts:
            out.append(f"        {h.get('name') or h.get('id')}: "
                       + ", ".join(f"{k} {n}" for k, n in counts.items()))
    return ["", "dhcp:   what each host's agent answered", *out] if out else []


@command(None, "status", "store health and the state of every host")
def status(ctx: Context, a: argparse.Namespace) -> None:
    st = ctx.client.get("/status")
    try:  # gateways' BGP sessions, when there are any
        st["bgp_peers"] = ctx.client.get("/bgp_peers")
    except Exception:
        pass
    ctx.emit(st, format_status)
