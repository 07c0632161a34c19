"""Packet trace: validate a packet description, simulate it, describe the result.

``POST /trace`` runs the same simulation an agent runs on a table miss, against
the topology in the store (:class:`midoflow.service.view.StoreView`) and the
replicated MAC and ARP tables as they are now. Nothing is written: MACs the
bridges would learn and ARP entries the routers would record are only reported
in the steps.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from midoflow import model
from midoflow.errors import Invalid, NotFound
from midoflow.service import validate as v
from midoflow.service.view import StoreView
from midoflow.sim import packet as pk
from midoflow.sim.result import Result
from midoflow.sim.simulator import simulate
from midoflow.store import paths
from midoflow.store.base import Data, Store

IP_FIELDS = ("ip_src", "ip_dst", "ip_proto", "ip_ttl", "tp_src", "tp_dst", "ip_len", "ip_df")
ARP_FIELDS = ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")
FIELDS = ("in_port", "eth_src", "eth_dst", "eth_type") + IP_FIELDS + ARP_FIELDS
ZERO_MAC = "00:00:00:00:00:00"


def parse_packet(store: Store, body: Any) -> pk.Packet:
    """The request body as a Packet; Invalid naming the first bad field."""
    body = v.body_object(body)
    v.check_fields(body, FIELDS)
    in_port = v.uuid_str(v.require(body, "in_port"), "in_port")
    eth_src = v.mac(v.require(body, "eth_src"), "eth_src")
    eth_dst = v.mac(v.require(body, "eth_dst"), "eth_dst", unicast=False)
    eth_type = None
    if "eth_type" in body:
        eth_type = v.integer(body["eth_type"], "eth_type", 0, 0xFFFF)
    ip_given = [f for f in IP_FIELDS if f in body]
    arp_given = [f for f in ARP_FIELDS if f in body]
    if ip_given and arp_given:
        raise Invalid(f"a packet is IP or ARP, not both: drop {arp_given[0]} or "
                      f"{ip_given[0]}", arp_given[0])
    if eth_type is None:
        eth_type = pk.ETH_ARP if arp_given else pk.ETH_IP
    elif ip_given and eth_type != pk.ETH_IP:
        raise Invalid(f"{ip_given[0]} needs eth_type 0x0800 (IPv4)", "eth_type")
    elif arp_given and eth_type != pk.ETH_ARP:
        raise Invalid(f"{arp_given[0]} needs eth_type 0x0806 (ARP)", "eth_type")
    fields: dict[str, Any] = {}
    if ip_given:
        fields.update(_ip_fields(body))
    elif arp_given:
        fields.update(_arp_fields(body, eth_src, eth_dst))
    # Last: the only check that reads the store.
    try:
        store.get(model.PORTS, in_port)
    except NotFound:
        raise Invalid(f"port {in_port} does not exist", "in_port") from None
    return pk.Packet(in_port=in_port, eth_src=eth_src, eth_dst=eth_dst, eth_type=eth_type,
                     **fields)


def _ip_fields(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ip_src": v.ipv4(v.require(body, "ip_src"), "ip_src"),
        "ip_dst": v.ipv4(v.require(body, "ip_dst"), "ip_dst"),
    }
    if "ip_ttl" in body:
        out["ip_ttl"] = v.integer(body["ip_ttl"], "ip_ttl", 1, 255)
    if "ip_len" in body:  # the routers check it against their egress MTU
        out["ip_len"] = v.integer(body["ip_len"], "ip_len", 20, 65535)
    if "ip_df" in body:
        out["ip_df"] = v.boolean(body["ip_df"], "ip_df")
    proto = None
    if "ip_proto" in body:
        proto = out["ip_proto"] = v.integer(body["ip_proto"], "ip_proto", 0, 255)
    for f in ("tp_src", "tp_dst"):
        if f not in body:
            continue
        if proto not in (pk.PROTO_TCP, pk.PROTO_UDP, pk.PROTO_ICMP):
            raise Invalid(f"{f} needs ip_proto 6 (TCP), 17 (UDP) or 1 (ICMP: type and code)",
                          f)
        hi = 255 if proto == pk.PROTO_ICMP else 65535
        out[f] = v.integer(body[f], f, 0, hi)
    return out


def _arp_fields(body: dict[str, Any], eth_src: str, eth_dst: str) -> dict[str, Any]:
    op = v.require(body, "arp_op")
    if isinstance(op, bool) or op not in (pk.ARP_REQUEST, pk.ARP_REPLY):
        raise Invalid("arp_op must be 1 (request) or 2 (reply)", "arp_op")
    out: dict[str, Any] = {
        "arp_op": op,
        "arp_spa": v.ipv4(v.require(body, "arp_spa"), "arp_spa"),
        "arp_tpa": v.ipv4(v.require(body, "arp_tpa"), "arp_tpa"),
    }
    out["arp_sha"] = v.mac(body["arp_sha"], "arp_sha") if "arp_sha" in body else eth_src
    if "arp_tha" in body:
        out["arp_tha"] = v.mac(body["arp_tha"], "arp_tha", unicast=False)
    else:
        out["arp_tha"] = ZERO_MAC if op == pk.ARP_REQUEST else eth_dst
    return out


def _json(value: Any) -> Any:
    """A JSON-safe copy of a value found in a Result."""
    if isinstance(value, Enum):
        return _json(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json(x) for k, x in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_json(x) for x in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def result_to_dict(res: Result) -> Data:
    """The API's answer for a simulation Result."""
    return {
        "action": _json(res.action),
        "reason": res.reason or "",
        "out_ports": list(res.out_ports),
        "steps": [{"device": s.device, "kind": s.kind, "decision": s.decision}
                  for s in res.trace],
        "match_fields": sorted(res.match_fields),
        "tags": sorted(res.tags),
        "rewrites": [{"field": r.field, "value": _json(r.value)} for r in res.rewrites],
        "generated": [{"kind": g.kind, "out_port": g.out_port,
                       "fields": {str(k): _json(x) for k, x in g.fields}}
                      for g in res.generated],
        "cacheable": bool(res.cacheable),
        "wait_arp": list(res.wait_arp) if res.wait_arp is not None else None,
    }


def enforcement_notes(store: Store, pkt: pk.Packet, res: Result) -> list[str]:
    """Where the security groups of the path's ports act for real: a port
    whose host enforces them with OVS conntrack (its agent's ``sg_conntrack``,
    published in its host state) has them in its host's OVS, which this
    simulation does not reach; its chain steps show what the rules give a new
    connection."""
    if pkt.eth_type != pk.ETH_IP:
        return []
    notes = []
    for pid, which, what in ((pkt.in_port, "inbound", "what it sends"),
                             *((p, "outbound", "what it receives") for p in res.out_ports)):
        try:
            port = model.Port.from_dict(store.get(model.PORTS, pid)[0])
        except NotFound:
            continue
        if not model.conntrack_enforced(port, which):
            continue
        host = (store.get_state(paths.port_active(pid)) or {}).get("host_id")
        state = store.get_state(paths.host_alive(host)) if host else None
        if state and state.get("sg_conntrack"):
            notes.append(f"port {pid}: the security groups of {what} are enforced by OVS "
                         f"conntrack on host {host} (ct zone: the port's ofport; "
                         "`ovs-appctl dpctl/dump-conntrack zone=<ofport>` there); the steps "
                         "show what its rules give a new connection, and replies of the "
                         "connections it tracks pass there whatever the rules")
    return notes


def trace(store: Store, body: Any) -> Data:
    pkt = parse_packet(store, body)
    res = simulate(StoreView(store), pkt, now=time.time())
    out = result_to_dict(res)
    out["notes"] = enforcement_notes(store, pkt, res)
    return out
