"""Filters, and the generated objects kept in step with security settings.

A port's, bridge's or router's ``inbound_filter_id``/``outbound_filter_id``
name user chains (:func:`apply_filters`). A security group is compiled into an
address group and two chains, a protected port into its own filter chains
(:mod:`midoflow.service.security` computes them); the functions here write
them into the staged :class:`~midoflow.service.txn.Txn` of the request that
changed a group, a port or a bridge, so they commit together.
"""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.kinds.filters import FILTERS
from midoflow.service import security as sec
from midoflow.service import validate as v
from midoflow.service.context import generated, ref
from midoflow.service.txn import Txn
from midoflow.store.base import Data

__all__ = ["FILTERS", "apply_filters", "filter_users", "sync_port", "sync_port_security",
           "sync_sg"]


def filter_users(txn: Txn, chain_id: str) -> list[str]:
    """The ports, bridges and routers filtering through a chain ("port <id>" ...)."""
    users = []
    for kind, label in ((model.PORTS, "port"), (model.BRIDGES, "bridge"),
                        (model.ROUTERS, "router")):
        for d in txn.list(kind):
            if chain_id in (d.get("inbound_filter_id"), d.get("outbound_filter_id")):
                users.append(f"{label} {d['id']}")
    return users


def apply_filters(txn: Txn, body: dict[str, Any], new: Data, old: Data | None) -> None:
    """inbound_filter_id / outbound_filter_id of a port, bridge or router: an
    existing chain (400 otherwise), not a generated one (409; a port may echo its
    own), or null. A newly set chain is touched."""
    for f in FILTERS:
        if f not in body:
            new.setdefault(f, None)
            continue
        if body[f] is None:
            new[f] = None
            continue
        cid = v.uuid_str(body[f], f)
        if old is not None and cid == old.get(f):
            new[f] = cid
            continue
        ref(txn, model.CHAINS, cid, f)
        if sec.is_generated(cid):
            raise generated(model.CHAINS, cid, f)
        new[f] = cid
        txn.touch(model.CHAINS, cid)


def _reconcile_chain(txn: Txn, cid: str, desired: tuple[Data, list[Data]] | None) -> None:
    cur = txn.get(model.CHAINS, cid)
    want_rules = desired[1] if desired else []
    want_ids = {r["id"] for r in want_rules}
    for rid in (cur or {}).get("rule_ids", ()):
        if rid not in want_ids:
            txn.delete(model.RULES, rid)
    if desired is None:
        if cur is not None:
            txn.delete(model.CHAINS, cid)
        return
    for r in want_rules:
        txn.sync(model.RULES, r)
    txn.sync(model.CHAINS, desired[0])


def sync_sg(txn: Txn, sg_id: str, touch: bool = False, joined: Data | None = None) -> None:
    """Write the address group and chains of a security group as the staged state
    says (or delete them with the group). ``touch``: re-write the address group
    even if unchanged (a port joined: a concurrent delete of the group must fail).
    ``joined``: a new port that is the only change of membership: its addresses
    are added to the stored group's instead of scanning every port."""
    sg = txn.get(model.SECURITY_GROUPS, sg_id)
    ipag_id = sec.sg_ipag_id(sg_id)
    if sg is None:
        for d in sec.DIRECTIONS:
            _reconcile_chain(txn, sec.sg_chain_id(sg_id, d), None)
        if txn.get(model.IP_ADDR_GROUPS, ipag_id) is not None:
            txn.delete(model.IP_ADDR_GROUPS, ipag_id)
        return
    cur = txn.get(model.IP_ADDR_GROUPS, ipag_id) if joined is not None else None
    if cur is not None:
        members = [{"fixed_ips": cur.get("addresses") or []}, joined]
    else:
        members = [p for p in txn.list(model.PORTS)
                   if sg_id in (p.get("security_group_ids") or ())]
    ipag, chains = sec.sg_objects(sg, members)
    txn.sync(model.IP_ADDR_GROUPS, ipag)
    if touch:
        txn.touch(model.IP_ADDR_GROUPS, ipag_id)
    for chain, rules in chains:
        _reconcile_chain(txn, chain["id"], (chain, rules))


def sync_port(txn: Txn, port_id: str) -> None:
    """Write a port's filter chains as its staged state says, and point its filters
    at them (or delete them and clear the filters)."""
    port = txn.get(model.PORTS, port_id)
    desired: dict[str, tuple[Data, list[Data]]] = {}
    if port is not None:
        tenant = ""
        if port.get("device_type", model.DEVICE_BRIDGE) == model.DEVICE_BRIDGE:
            tenant = (txn.get(model.BRIDGES, port["device_id"]) or {}).get("tenant_id", "")
        desired = {c["id"]: (c, rules) for c, rules in sec.port_objects(port, tenant)}
    for which in sec.PORT_CHAINS:
        cid = sec.port_chain_id(port_id, which)
        _reconcile_chain(txn, cid, desired.get(cid))
    if port is None:
        return
    own = sec.port_filters(port)
    new = dict(port)
    for f, mine in zip(FILTERS, own, strict=True):
        if sec.port_managed(port):
            new[f] = mine
        elif new.get(f) == mine:
            new[f] = None
    if new != port:
        txn.put(model.PORTS, new)


def sync_port_security(txn: Txn, old: Data | None, new: Data | None) -> None:
    """After a port was created, changed or deleted (staged): its security groups'
    address groups and chains, and its own chains."""
    pid = (new or old or {})["id"]
    old_sgs = list((old or {}).get("security_group_ids") or ())
    new_sgs = list((new or {}).get("security_group_ids") or ())
    if old is None or new is None or old_sgs != new_sgs or \
            (old.get("fixed_ips") or []) != (new.get("fixed_ips") or []):
        for sid in dict.fromkeys(old_sgs + new_sgs):
            sync_sg(txn, sid, touch=sid not in old_sgs, joined=new if old is None else None)
    if (old is not None and sec.port_managed(old)) or \
            (new is not None and sec.port_managed(new)):
        sync_port(txn, pid)
