"""Octavia pools: native pools. ``ROUND_ROBIN`` is the native weighted
method (Octavia's round robin honours weights); session persistence
``SOURCE_IP`` is kept on the record and copied onto the pool's listeners."""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.neutron.base import Op
from midoflow.octavia import errors as oe
from midoflow.octavia import native
from midoflow.octavia import values as v
from midoflow.octavia.common import (
    ALGORITHM_OF,
    ALGORITHMS,
    HEALTHMONITORS,
    LISTENERS,
    LOADBALANCERS,
    MEMBERS,
    POOLS,
    base_view,
    check_protocol,
    children,
    common_fields,
    drop_pool_records,
    find,
    ids,
    kind_of,
    persistence_of,
    project_of,
    stamp,
    touch,
)
from midoflow.store.base import Data

POOL_CREATE = ("name", "description", "admin_state_up", "protocol", "lb_algorithm",
               "loadbalancer_id", "listener_id", "session_persistence", "project_id",
               "tenant_id", "tags", "tls_enabled", "tls_container_ref", "ca_tls_container_ref",
               "crl_container_ref", "tls_ciphers", "tls_versions", "alpn_protocols",
               "members", "healthmonitor")
POOL_UPDATE = ("name", "description", "admin_state_up", "lb_algorithm", "session_persistence",
               "tags", "tls_enabled", "tls_container_ref", "ca_tls_container_ref",
               "crl_container_ref", "tls_ciphers", "tls_versions", "alpn_protocols")
_POOL_TLS = ("tls_enabled", "tls_container_ref", "ca_tls_container_ref", "crl_container_ref",
             "tls_ciphers", "tls_versions", "alpn_protocols", "members", "healthmonitor")


def _algorithm(value: Any) -> str:
    if value in ("SOURCE_IP", "SOURCE_IP_PORT"):
        raise oe.unsupported(f"lb_algorithm {value}", "use ROUND_ROBIN with "
                             "session_persistence type SOURCE_IP to keep a client on one "
                             "member")
    return ALGORITHMS[v.one_of(value, "lb_algorithm", tuple(ALGORITHMS))]


def _session_persistence(value: Any) -> Data | None:
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise v.invalid("session_persistence", value, "Value should be an object "
                        "{\"type\": \"SOURCE_IP\"}.")
    kind = value.get("type")
    if kind in ("HTTP_COOKIE", "APP_COOKIE"):
        raise oe.unsupported(f"session_persistence type {kind}", "use SOURCE_IP")
    v.one_of(kind, "session_persistence.type", model.LB_PERSISTENCE)
    unknown = sorted(set(value) - {"type", "cookie_name", "persistence_timeout",
                                   "persistence_granularity"})
    if unknown or value.get("cookie_name") is not None or \
            value.get("persistence_granularity") is not None:
        raise v.invalid("session_persistence", value, "Only type and persistence_timeout "
                        "apply to SOURCE_IP.")
    timeout = value.get("persistence_timeout")
    return {"type": kind, "cookie_name": None, "persistence_granularity": None,
            "persistence_timeout": None if timeout is None else v.integer(
                timeout, "session_persistence.persistence_timeout", 1, 86400 * 7)}


def _pool_tls(body: Data) -> None:
    for attr in _POOL_TLS:
        if body.get(attr) not in (None, False, []):
            raise oe.unsupported(attr, f"omit {attr}")


def _sync_listeners(op: Op, pool_id: str) -> None:
    """The native VIPs using the pool take its (Octavia) session persistence."""
    fields = persistence_of(op, pool_id)
    for vip in children(op, LISTENERS, "pool_id", pool_id):
        if any(vip.get(k) != val for k, val in fields.items()):
            native.update(op.txn, model.VIPS, vip["id"], fields)


def create_pool(op: Op, body: Any) -> Data:
    body = v.body_of(body, "pool")
    v.check_known(body, POOL_CREATE, "pool")
    _pool_tls(body)
    for attr in ("protocol", "lb_algorithm"):
        if body.get(attr) is None:
            raise oe.BadRequest(f"Missing mandatory field/attribute: {attr}")
    listener = None
    if body.get("listener_id") is not None:
        lrec, listener = find(op, LISTENERS, v.uuid_str(body["listener_id"], "listener_id"),
                              "listener_id")
        if listener.get("pool_id"):
            raise oe.Conflict(f"Listener {lrec['id']} already has default pool "
                              f"{listener['pool_id']}: unset it first")
        lb_id = listener["load_balancer_id"]
        if body.get("loadbalancer_id") not in (None, lb_id):
            raise oe.BadRequest("listener_id is on another load balancer than "
                                "loadbalancer_id: give one of them")
    elif body.get("loadbalancer_id") is not None:
        lb_id = v.uuid_str(body["loadbalancer_id"], "loadbalancer_id")
    else:
        raise oe.BadRequest("Missing mandatory field/attribute: give loadbalancer_id or "
                            "listener_id")
    find(op, LOADBALANCERS, lb_id, "loadbalancer_id")
    pid = project_of(op, body)
    protocol = check_protocol(body["protocol"], "protocol", "pool")
    if listener is not None and listener.get("protocol") != protocol:
        raise oe.BadRequest(f"Listener protocol {listener.get('protocol')} and pool "
                            f"protocol {protocol} are not compatible")
    nbody: Data = {"load_balancer_id": lb_id, "protocol": protocol, "tenant_id": pid,
                   "lb_method": _algorithm(body["lb_algorithm"])}
    common_fields(body, nbody)
    nat = native.create(op.txn, model.POOLS, nbody)
    rec = stamp({"id": nat["id"], "tags": v.tags(body.get("tags")),
                 "session_persistence": _session_persistence(
                     body.get("session_persistence"))}, pid)
    op.txn.create(kind_of(POOLS), rec)
    if listener is not None:
        native.update(op.txn, model.VIPS, listener["id"],
                      {"pool_id": nat["id"], **persistence_of(op, nat["id"])})
    return rec


def update_pool(op: Op, oid: str, body: Any) -> Data:
    rec, _nat = find(op, POOLS, oid)
    body = v.body_of(body, "pool")
    v.check_known(body, POOL_UPDATE, "pool update")
    _pool_tls(body)
    changes: Data = {}
    common_fields(body, changes)
    if body.get("lb_algorithm") is not None:
        changes["lb_method"] = _algorithm(body["lb_algorithm"])
    if changes:
        native.update(op.txn, model.POOLS, oid, changes)
    rec = dict(rec)
    if "session_persistence" in body:
        rec["session_persistence"] = _session_persistence(body["session_persistence"])
    touch(op, POOLS, rec, body)
    _sync_listeners(op, oid)
    return rec


def delete_pool(op: Op, oid: str) -> None:
    find(op, POOLS, oid)
    users = children(op, LISTENERS, "pool_id", oid)
    drop_pool_records(op, oid)
    native.delete(op.txn, model.POOLS, oid)
    for vip in users:  # the native delete cleared their pool: persistence goes too
        if op.txn.get(model.VIPS, vip["id"]) is not None:
            native.update(op.txn, model.VIPS, vip["id"], {"pool_id": None,
                                                          "session_persistence": None})


def view_pool(op: Op, rec: Data, nat: Data) -> Data:
    out = base_view(op, POOLS, rec, nat)
    sp = rec.get("session_persistence")
    if sp and sp.get("persistence_timeout") is None:
        vip = next(iter(children(op, LISTENERS, "pool_id", nat["id"])), None)
        sp = dict(sp, persistence_timeout=(vip or {}).get("persistence_timeout", 360))
    hms = children(op, HEALTHMONITORS, "pool_id", nat["id"])
    out.update(description=nat.get("description") or "", protocol=nat.get("protocol"),
               lb_algorithm=ALGORITHM_OF.get(nat.get("lb_method"), nat.get("lb_method")),
               session_persistence=sp,
               loadbalancers=[{"id": nat["load_balancer_id"]}],
               listeners=ids(children(op, LISTENERS, "pool_id", nat["id"])),
               members=ids(children(op, MEMBERS, "pool_id", nat["id"])),
               healthmonitor_id=hms[0]["id"] if hms else None, tls_enabled=False,
               tls_container_ref=None, ca_tls_container_ref=None, crl_container_ref=None,
               tls_ciphers=None, tls_versions=None, alpn_protocols=None)
    return out
