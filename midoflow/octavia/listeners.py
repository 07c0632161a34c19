"""Octavia listeners: native VIPs on their load balancer's VIP address (TCP
or UDP; layer-7 features are refused with 400). Session persistence, a pool
attribute in Octavia, is the VIP's in the native model: copied from the
listener's default pool."""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.neutron.base import Op
from midoflow.octavia import errors as oe
from midoflow.octavia import native
from midoflow.octavia import values as v
from midoflow.octavia.common import (
    LISTENER_DEFAULTS,
    LISTENERS,
    LOADBALANCERS,
    POOLS,
    base_view,
    check_protocol,
    common_fields,
    find,
    kind_of,
    persistence_of,
    project_of,
    stamp,
    touch,
)
from midoflow.store.base import Data

LISTENER_CREATE = ("name", "description", "admin_state_up", "protocol", "protocol_port",
                   "loadbalancer_id", "default_pool_id", "project_id", "tenant_id", "tags",
                   "connection_limit", "timeout_client_data", "timeout_member_connect",
                   "timeout_member_data", "timeout_tcp_inspect", "allowed_cidrs",
                   "insert_headers", "default_tls_container_ref", "sni_container_refs",
                   "client_ca_tls_container_ref", "client_authentication",
                   "client_crl_container_ref", "tls_ciphers", "tls_versions", "alpn_protocols",
                   "hsts_max_age", "hsts_include_subdomains", "hsts_preload", "l7policies",
                   "default_pool")
LISTENER_UPDATE = ("name", "description", "admin_state_up", "default_pool_id", "tags",
                   "connection_limit", "timeout_client_data", "timeout_member_connect",
                   "timeout_member_data", "timeout_tcp_inspect", "allowed_cidrs",
                   "insert_headers", "default_tls_container_ref", "sni_container_refs",
                   "client_ca_tls_container_ref", "client_authentication",
                   "client_crl_container_ref", "tls_ciphers", "tls_versions", "alpn_protocols",
                   "hsts_max_age", "hsts_include_subdomains", "hsts_preload")
_LISTENER_L7 = ("allowed_cidrs", "insert_headers", "default_tls_container_ref",
                "sni_container_refs", "client_ca_tls_container_ref", "client_crl_container_ref",
                "tls_ciphers", "tls_versions", "alpn_protocols", "hsts_max_age",
                "hsts_include_subdomains", "hsts_preload", "l7policies", "default_pool")


def _listener_extras(body: Data, rec: Data) -> None:
    for attr in _LISTENER_L7:
        if body.get(attr) not in (None, [], {}, False):
            raise oe.unsupported(attr, f"omit {attr}")
    if body.get("client_authentication") not in (None, "NONE"):
        raise oe.unsupported("client_authentication", "omit it")
    if body.get("connection_limit") is not None:
        n = v.integer(body["connection_limit"], "connection_limit", -1, 1_000_000)
        if n != -1:
            raise oe.unsupported("connection_limit", "give -1 (unlimited)")
    for attr in ("timeout_client_data", "timeout_member_connect", "timeout_member_data",
                 "timeout_tcp_inspect"):
        if body.get(attr) is not None:
            rec[attr] = v.integer(body[attr], attr, 0, 31_536_000_000)


def _default_pool(op: Op, value: Any, lb_id: str, protocol: str) -> str | None:
    if value is None:
        return None
    pid = v.uuid_str(value, "default_pool_id")
    _prec, pool = find(op, POOLS, pid, "default_pool_id")
    if pool["load_balancer_id"] != lb_id:
        raise oe.BadRequest(f"Pool {pid} is on another load balancer: a listener's default "
                            "pool must be on its own load balancer")
    if pool.get("protocol") != protocol:
        raise oe.BadRequest(f"Listener protocol {protocol} and pool protocol "
                            f"{pool.get('protocol')} are not compatible")
    return pid


def create_listener(op: Op, body: Any) -> Data:
    body = v.body_of(body, "listener")
    v.check_known(body, LISTENER_CREATE, "listener")
    for attr in ("loadbalancer_id", "protocol", "protocol_port"):
        if body.get(attr) is None:
            raise oe.BadRequest(f"Missing mandatory field/attribute: {attr}")
    lb_rec, _lb = find(op, LOADBALANCERS, v.uuid_str(body["loadbalancer_id"],
                                                     "loadbalancer_id"), "loadbalancer_id")
    pid = project_of(op, body)
    protocol = check_protocol(body["protocol"], "protocol", "listener")
    rec: Data = {"tags": v.tags(body.get("tags"))}
    _listener_extras(body, rec)
    pool_id = _default_pool(op, body.get("default_pool_id"), lb_rec["id"], protocol)
    nbody: Data = {"load_balancer_id": lb_rec["id"], "address": lb_rec["vip_address"],
                   "protocol": protocol, "tenant_id": pid, "pool_id": pool_id,
                   "protocol_port": v.integer(body["protocol_port"], "protocol_port", 1, 65535),
                   **persistence_of(op, pool_id)}
    common_fields(body, nbody)
    nat = native.create(op.txn, model.VIPS, nbody)
    rec["id"] = nat["id"]
    op.txn.create(kind_of(LISTENERS), stamp(rec, pid))
    return rec


def update_listener(op: Op, oid: str, body: Any) -> Data:
    rec, nat = find(op, LISTENERS, oid)
    body = v.body_of(body, "listener")
    v.check_known(body, LISTENER_UPDATE, "listener update")
    rec = dict(rec)
    _listener_extras(body, rec)
    changes: Data = {}
    common_fields(body, changes)
    if "default_pool_id" in body:
        changes["pool_id"] = _default_pool(op, body["default_pool_id"],
                                           nat["load_balancer_id"], nat["protocol"])
        changes.update(persistence_of(op, changes["pool_id"]))
    if changes:
        native.update(op.txn, model.VIPS, oid, changes)
    touch(op, LISTENERS, rec, body)
    return rec


def delete_listener(op: Op, oid: str) -> None:
    find(op, LISTENERS, oid)
    native.delete(op.txn, model.VIPS, oid)
    op.txn.delete(kind_of(LISTENERS), oid)


def view_listener(op: Op, rec: Data, nat: Data) -> Data:
    out = base_view(op, LISTENERS, rec, nat)
    out.update(LISTENER_DEFAULTS)
    out.update({k: rec[k] for k in LISTENER_DEFAULTS if k in rec})
    out.update(description=nat.get("description") or "", protocol=nat.get("protocol"),
               protocol_port=nat.get("protocol_port"), default_pool_id=nat.get("pool_id"),
               loadbalancers=[{"id": nat["load_balancer_id"]}], l7policies=[],
               insert_headers={}, default_tls_container_ref=None, sni_container_refs=[],
               client_ca_tls_container_ref=None, client_authentication="NONE",
               client_crl_container_ref=None, allowed_cidrs=None, tls_ciphers=None,
               tls_versions=None, alpn_protocols=None, hsts_max_age=None,
               hsts_include_subdomains=False, hsts_preload=False)
    return out
