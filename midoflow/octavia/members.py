"""Octavia members: native pool members (address, port, weight 0-256)."""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.neutron.base import Op
from midoflow.octavia import errors as oe
from midoflow.octavia import native
from midoflow.octavia import values as v
from midoflow.octavia.common import (
    MEMBERS,
    POOLS,
    base_view,
    cidr,
    common_fields,
    find,
    kind_of,
    project_of,
    stamp,
    touch,
)
from midoflow.store.base import Data

MEMBER_CREATE = ("name", "admin_state_up", "address", "protocol_port", "weight", "subnet_id",
                 "monitor_address", "monitor_port", "backup", "project_id", "tenant_id",
                 "tags", "vnic_type", "request_sriov")
MEMBER_UPDATE = ("name", "admin_state_up", "weight", "monitor_address", "monitor_port",
                 "backup", "tags")


def _member_extras(body: Data) -> None:
    for attr in ("monitor_address", "monitor_port"):
        if body.get(attr) is not None:
            raise oe.unsupported(attr, "the health monitor checks the member's own "
                                 "address and port")
    if body.get("backup"):
        raise oe.unsupported("backup members", "give the member weight 0 to keep it out")
    if body.get("vnic_type") not in (None, "normal") or body.get("request_sriov"):
        raise oe.unsupported("vnic_type", "only 'normal'")


def create_member(op: Op, pool_id: str, body: Any) -> Data:
    _prec, pool = find(op, POOLS, pool_id)
    body = v.body_of(body, "member")
    v.check_known(body, MEMBER_CREATE, "member")
    _member_extras(body)
    for attr in ("address", "protocol_port"):
        if body.get(attr) is None:
            raise oe.BadRequest(f"Missing mandatory field/attribute: {attr}")
    pid = project_of(op, body)
    subnet_id = None
    if body.get("subnet_id") is not None:
        subnet_id = v.uuid_str(body["subnet_id"], "subnet_id")
        sub = op.get("subnets", subnet_id)
        if sub is None or not op.service.handler("subnets").visible(op.ctx, sub, op):
            raise oe.BadRequest(f"Subnet {subnet_id} (the subnet_id) could not be found")
    address = v.ipv4(body["address"], "address")
    if subnet_id is not None and address not in cidr(sub):
        raise oe.BadRequest(f"Member address {address} is not in subnet {subnet_id} "
                            f"({sub['cidr']})")
    nbody: Data = {"pool_id": pool["id"], "address": address, "tenant_id": pid,
                   "protocol_port": v.integer(body["protocol_port"], "protocol_port", 1, 65535)}
    if body.get("weight") is not None:
        nbody["weight"] = v.integer(body["weight"], "weight", 0, model.LB_WEIGHT_MAX)
    common_fields(body, nbody)
    nat = native.create(op.txn, model.POOL_MEMBERS, nbody)
    rec = stamp({"id": nat["id"], "subnet_id": subnet_id, "tags": v.tags(body.get("tags"))},
                pid)
    op.txn.create(kind_of(MEMBERS), rec)
    return rec


def member_in(op: Op, pool_id: str, oid: str) -> tuple[Data, Data]:
    find(op, POOLS, pool_id)
    rec, nat = find(op, MEMBERS, oid)
    if nat["pool_id"] != pool_id:
        raise oe.NotFound(f"Member {oid} not found in pool {pool_id}.")
    return rec, nat


def update_member(op: Op, pool_id: str, oid: str, body: Any) -> Data:
    rec, _nat = member_in(op, pool_id, oid)
    body = v.body_of(body, "member")
    v.check_known(body, MEMBER_UPDATE, "member update")
    _member_extras(body)
    changes: Data = {}
    common_fields(body, changes)
    if body.get("weight") is not None:
        changes["weight"] = v.integer(body["weight"], "weight", 0, model.LB_WEIGHT_MAX)
    if changes:
        native.update(op.txn, model.POOL_MEMBERS, oid, changes)
    touch(op, MEMBERS, rec, body)
    return rec


def delete_member(op: Op, pool_id: str, oid: str) -> None:
    member_in(op, pool_id, oid)
    native.delete(op.txn, model.POOL_MEMBERS, oid)
    op.txn.delete(kind_of(MEMBERS), oid)


def view_member(op: Op, rec: Data, nat: Data) -> Data:
    out = base_view(op, MEMBERS, rec, nat)
    out.update(address=nat["address"], protocol_port=nat["protocol_port"],
               weight=nat.get("weight", 1), subnet_id=rec.get("subnet_id"),
               pool_id=nat["pool_id"], monitor_address=None, monitor_port=None, backup=False,
               vnic_type="normal")
    return out
