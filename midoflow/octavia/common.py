"""What the Octavia collections share: names, the records (kind
``octavia.<collection>``: what only Octavia has, such as the VIP port, the
project and the timestamps) joined with the native objects of the same ids,
visibility, and the fields every answer has.

Every function stages into one request's :class:`midoflow.neutron.base.Op`
(its ``txn``) and never commits. A record whose native object is gone
(deleted through ``/v1``) is treated as gone too."""

from __future__ import annotations

from typing import Any

import netaddr

from midoflow import model
from midoflow.neutron import attrs as na
from midoflow.neutron.base import Op
from midoflow.neutron.context import Context
from midoflow.octavia import errors as oe
from midoflow.octavia import native
from midoflow.octavia import values as v
from midoflow.store.base import Data

LOADBALANCERS, LISTENERS, POOLS, MEMBERS, HEALTHMONITORS = (
    "loadbalancers", "listeners", "pools", "members", "healthmonitors")
COLLECTIONS = (LOADBALANCERS, LISTENERS, POOLS, MEMBERS, HEALTHMONITORS)
RESOURCE = {LOADBALANCERS: "loadbalancer", LISTENERS: "listener", POOLS: "pool",
            MEMBERS: "member", HEALTHMONITORS: "healthmonitor"}
LABEL = {LOADBALANCERS: "Load Balancer", LISTENERS: "Listener", POOLS: "Pool",
         MEMBERS: "Member", HEALTHMONITORS: "Health Monitor"}
NATIVE = {LOADBALANCERS: model.LOAD_BALANCERS, LISTENERS: model.VIPS, POOLS: model.POOLS,
          MEMBERS: model.POOL_MEMBERS, HEALTHMONITORS: model.HEALTH_MONITORS}
PROVIDER = "midoflow"
VIP_OWNER = "Octavia"
ACTIVE = "ACTIVE"
# Octavia's ROUND_ROBIN honours member weights (haproxy's roundrobin): the native
# weighted method; SOURCE_IP / SOURCE_IP_PORT (hashing) have no native method.
ALGORITHMS = {"ROUND_ROBIN": model.LB_WEIGHTED_ROUND_ROBIN,
              "LEAST_CONNECTIONS": model.LB_LEAST_CONNECTIONS}
ALGORITHM_OF = {model.LB_WEIGHTED_ROUND_ROBIN: "ROUND_ROBIN",
                model.LB_ROUND_ROBIN: "ROUND_ROBIN",
                model.LB_LEAST_CONNECTIONS: "LEAST_CONNECTIONS"}
L7_PROTOCOLS = ("HTTP", "HTTPS", "TERMINATED_HTTPS", "PROXY", "PROXYV2", "SCTP", "PROMETHEUS")
MONITOR_TYPES = model.HM_TYPES
# listener timeouts as Octavia reports its defaults (ms); midoflow has none to set
LISTENER_DEFAULTS = {"connection_limit": -1, "timeout_client_data": 50000,
                     "timeout_member_connect": 5000, "timeout_member_data": 50000,
                     "timeout_tcp_inspect": 0}


def kind_of(coll: str) -> str:
    return f"octavia.{coll}"


def ids(objs: list[Data]) -> list[dict[str, str]]:
    return [{"id": o["id"]} for o in sorted(objs, key=lambda o: o["id"])]


def visible(ctx: Context, rec: Data) -> bool:
    return ctx.is_admin or rec.get("project_id") == ctx.project_id


# ------------------------------------------------------------------ reading
def pair(op: Op, coll: str, oid: str) -> tuple[Data, Data] | None:
    """(record, native object), or None when either is missing."""
    rec = op.txn.get(kind_of(coll), oid)
    nat = op.txn.get(NATIVE[coll], oid) if rec is not None else None
    if rec is None or nat is None:
        return None
    return rec, nat


def find(op: Op, coll: str, oid: Any, attr: str | None = None) -> tuple[Data, Data]:
    """A visible object: 404 from the URL, 400 when ``attr`` of a body names it
    (another project's objects are not found either)."""
    found = pair(op, coll, oid) if isinstance(oid, str) else None
    if found is None or not visible(op.ctx, found[0]):
        if attr is not None:
            raise oe.BadRequest(f"{LABEL[coll]} {oid} (the {attr}) could not be found: give "
                                f"the id of one of your {coll}")
        raise oe.NotFound(f"{LABEL[coll]} {oid} not found.")
    return found


def scan(op: Op, coll: str) -> list[tuple[Data, Data]]:
    """Every (record, native) of a collection the caller may see."""
    natives = {o["id"]: o for o in op.txn.scan(NATIVE[coll])}
    return [(r, natives[r["id"]]) for r in op.txn.scan(kind_of(coll))
            if r["id"] in natives and visible(op.ctx, r)]


def children(op: Op, coll: str, field: str, parent_id: str) -> list[Data]:
    """Native objects of ``coll`` whose ``field`` is ``parent_id``."""
    return [o for o in op.txn.scan(NATIVE[coll]) if o.get(field) == parent_id]


def stamp(rec: Data, project_id: str) -> Data:
    t = na.now()
    rec.update(project_id=project_id, created_at=t, updated_at=t)
    return rec


def touch(op: Op, coll: str, rec: Data, body: Data) -> None:
    rec = dict(rec)
    if "tags" in body:
        rec["tags"] = v.tags(body["tags"])
    rec["updated_at"] = na.now()
    op.txn.put(kind_of(coll), rec)


def project_of(op: Op, body: Data) -> str:
    pid = body.get("project_id", body.get("tenant_id"))
    if pid is None:
        return op.ctx.project_id
    pid = v.string(pid, "project_id")
    if pid != op.ctx.project_id and not op.ctx.is_admin:
        raise oe.Forbidden("Policy does not allow this request to be performed: only an "
                           "admin creates objects for another project")
    return pid


def common_fields(body: Data, native_body: Data) -> None:
    """name, description, admin_state_up of a body into a native body."""
    if "name" in body:
        native_body["name"] = v.string(body["name"], "name")
    if "description" in body:
        native_body["description"] = v.string(body["description"], "description",
                                              v.DESCRIPTION_MAX)
    if "admin_state_up" in body:
        native_body["admin_state_up"] = v.boolean(body["admin_state_up"], "admin_state_up")


def base_view(op: Op, coll: str, rec: Data, nat: Data) -> Data:
    return {"id": nat["id"], "name": nat.get("name") or "",
            "admin_state_up": nat.get("admin_state_up", True),
            "project_id": rec.get("project_id") or "", "tenant_id": rec.get("project_id") or "",
            "provisioning_status": ACTIVE,
            "operating_status": native.operating_status(op, NATIVE[coll], nat),
            "created_at": rec.get("created_at"), "updated_at": rec.get("updated_at"),
            "tags": list(rec.get("tags") or [])}


def cidr(sub: Data) -> netaddr.IPNetwork:
    """A Neutron subnet's network."""
    return netaddr.IPNetwork(sub["cidr"])


def check_protocol(value: Any, attr: str, what: str) -> str:
    if value in L7_PROTOCOLS:
        raise oe.unsupported(f"{what} protocol {value}", "use TCP or UDP: HTTP is balanced "
                             "as TCP connections")
    return v.one_of(value, attr, model.LB_PROTOCOLS)


def persistence_of(op: Op, pool_id: str | None) -> Data:
    """The native VIP's persistence fields for a listener whose default pool is
    ``pool_id`` (Octavia keeps persistence on the pool)."""
    prec = op.txn.get(kind_of(POOLS), pool_id) if pool_id else None
    sp = (prec or {}).get("session_persistence")
    if not sp:
        return {"session_persistence": None}
    out: Data = {"session_persistence": model.LB_PERSIST_SOURCE_IP}
    if sp.get("persistence_timeout") is not None:
        out["persistence_timeout"] = sp["persistence_timeout"]
    return out


def drop_pool_records(op: Op, pool_id: str) -> None:
    """The records of a pool going natively with its members and monitor."""
    for m in children(op, MEMBERS, "pool_id", pool_id):
        op.txn.delete(kind_of(MEMBERS), m["id"])
    for hm in children(op, HEALTHMONITORS, "pool_id", pool_id):
        op.txn.delete(kind_of(HEALTHMONITORS), hm["id"])
    op.txn.delete(kind_of(POOLS), pool_id)
