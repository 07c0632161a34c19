"""Octavia health monitors: native ones (TCP, HTTP, HTTPS); the members'
status they produce is the elected checker's (see :mod:`midoflow.lb`)."""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.neutron.base import Op
from midoflow.octavia import errors as oe
from midoflow.octavia import native
from midoflow.octavia import values as v
from midoflow.octavia.common import (
    HEALTHMONITORS,
    MONITOR_TYPES,
    POOLS,
    base_view,
    common_fields,
    find,
    kind_of,
    project_of,
    stamp,
    touch,
)
from midoflow.store.base import Data

HM_CREATE = ("name", "admin_state_up", "pool_id", "type", "delay", "timeout", "max_retries",
             "max_retries_down", "http_method", "url_path", "expected_codes", "http_version",
             "domain_name", "project_id", "tenant_id", "tags")
HM_UPDATE = ("name", "admin_state_up", "delay", "timeout", "max_retries", "max_retries_down",
             "http_method", "url_path", "expected_codes", "http_version", "domain_name", "tags")
_HTTP_FIELDS = ("http_method", "url_path", "expected_codes")
HTTP_DEFAULTS = {"http_method": "GET", "url_path": "/", "expected_codes": "200"}


def _hm_fields(body: Data, kind: str, nbody: Data) -> None:
    for attr, lo, hi in (("delay", 0, 2_147_483_647), ("timeout", 0, 2_147_483_647),
                         ("max_retries", 1, 10), ("max_retries_down", 1, 10)):
        if body.get(attr) is not None:
            nbody[attr] = v.integer(body[attr], attr, lo, hi)
    if body.get("http_version") not in (None, 1.0, 1.1, "1.0", "1.1"):
        raise v.invalid("http_version", body["http_version"], "Value should be 1.0 or 1.1.")
    if body.get("domain_name") is not None:
        raise oe.unsupported("domain_name", "omit it")
    if "max_retries_down" in body and body["max_retries_down"] is None:
        nbody["max_retries_down"] = 3  # unset: Octavia's default
    for attr in _HTTP_FIELDS:
        if attr in body and body[attr] is None and kind in (model.HM_HTTP, model.HM_HTTPS):
            nbody[attr] = HTTP_DEFAULTS[attr]  # unset: Octavia's default
        if body.get(attr) is None:
            continue
        if kind not in (model.HM_HTTP, model.HM_HTTPS):
            raise oe.BadRequest(f"{attr} is only for HTTP and HTTPS health monitors, not "
                                f"{kind}: omit it")
        val = body[attr]
        if attr == "http_method":
            val = v.one_of(val, attr, model.HM_METHODS)
        else:
            val = v.string(val, attr)
        nbody[attr] = val


def create_healthmonitor(op: Op, body: Any) -> Data:
    body = v.body_of(body, "healthmonitor")
    v.check_known(body, HM_CREATE, "health monitor")
    for attr in ("pool_id", "type", "delay", "timeout", "max_retries"):
        if body.get(attr) is None:
            raise oe.BadRequest(f"Missing mandatory field/attribute: {attr}")
    _prec, pool = find(op, POOLS, v.uuid_str(body["pool_id"], "pool_id"), "pool_id")
    if body["type"] in ("PING", "UDP-CONNECT", "SCTP", "TLS-HELLO"):
        raise oe.unsupported(f"health monitor type {body['type']}", "use TCP, HTTP or HTTPS")
    kind = v.one_of(body["type"], "type", MONITOR_TYPES)
    if pool.get("protocol") == model.LB_UDP:
        raise oe.unsupported("health monitors of UDP pools", "midoflow checks TCP, HTTP and "
                             "HTTPS members")
    pid = project_of(op, body)
    nbody: Data = {"pool_id": pool["id"], "type": kind, "tenant_id": pid}
    _hm_fields(body, kind, nbody)
    common_fields(body, nbody)
    nat = native.create(op.txn, model.HEALTH_MONITORS, nbody)
    rec = stamp({"id": nat["id"], "tags": v.tags(body.get("tags"))}, pid)
    op.txn.create(kind_of(HEALTHMONITORS), rec)
    return rec


def update_healthmonitor(op: Op, oid: str, body: Any) -> Data:
    rec, nat = find(op, HEALTHMONITORS, oid)
    body = v.body_of(body, "healthmonitor")
    v.check_known(body, HM_UPDATE, "health monitor update")
    changes: Data = {}
    _hm_fields(body, nat["type"], changes)
    common_fields(body, changes)
    if changes:
        native.update(op.txn, model.HEALTH_MONITORS, oid, changes)
    touch(op, HEALTHMONITORS, rec, body)
    return rec


def delete_healthmonitor(op: Op, oid: str) -> None:
    find(op, HEALTHMONITORS, oid)
    native.delete(op.txn, model.HEALTH_MONITORS, oid)
    op.txn.delete(kind_of(HEALTHMONITORS), oid)


def view_healthmonitor(op: Op, rec: Data, nat: Data) -> Data:
    out = base_view(op, HEALTHMONITORS, rec, nat)
    http = nat.get("type") in (model.HM_HTTP, model.HM_HTTPS)
    out.update(type=nat.get("type"), delay=nat.get("delay"), timeout=nat.get("timeout"),
               max_retries=nat.get("max_retries"), max_retries_down=nat.get("max_retries_down"),
               http_method=nat.get("http_method") if http else None,
               url_path=nat.get("url_path") if http else None,
               expected_codes=nat.get("expected_codes") if http else None,
               http_version=1.0 if http else None, domain_name=None,
               pools=[{"id": nat["pool_id"]}])
    return out
