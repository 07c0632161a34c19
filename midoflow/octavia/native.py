"""The native load-balancing objects the Octavia layer stages, through the
service rules of :mod:`midoflow.service.lb` (validation, the health port,
cascades) in the request's own transaction, and their operating status as the
native API computes it."""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.neutron.base import Op
from midoflow.service import lb as svc
from midoflow.service.txn import Txn
from midoflow.store.base import Data

_CREATE = {model.LOAD_BALANCERS: svc.create_load_balancer, model.POOLS: svc.create_pool,
           model.VIPS: svc.create_vip, model.POOL_MEMBERS: svc.create_member,
           model.HEALTH_MONITORS: svc.create_health_monitor}
_UPDATE = {model.LOAD_BALANCERS: svc.update_load_balancer, model.POOLS: svc.update_pool,
           model.VIPS: svc.update_vip, model.POOL_MEMBERS: svc.update_member,
           model.HEALTH_MONITORS: svc.update_health_monitor}


def create(txn: Txn, kind: str, body: dict[str, Any]) -> Data:
    """Stage a new native object of ``kind``; the stored dict (with its id)."""
    return _CREATE[kind](txn, body)


def update(txn: Txn, kind: str, oid: str, changes: dict[str, Any]) -> Data:
    return _UPDATE[kind](txn, oid, changes)


def delete(txn: Txn, kind: str, oid: str, *, cascade: bool = False) -> None:
    svc.delete(txn, kind, oid, cascade=cascade)


def forget_health_after_commit(op: Op) -> None:
    """Once the request has committed, drop the health entries of the members it
    deleted (best effort, as the native API does)."""
    op.after_commit.append(lambda: svc.forget_health(op.txn.store, svc.gone_health(op.txn)))


def operating_status(op: Op, kind: str, data: Data) -> str:
    """As the native API reports it (a monitor: ONLINE, or OFFLINE when disabled)."""
    if kind == model.HEALTH_MONITORS:
        return model.OP_ONLINE if data.get("admin_state_up", True) else model.OP_OFFLINE
    status = op.__dict__.get("_lb_status")
    if status is None:
        status = op.__dict__["_lb_status"] = svc.Status(op.txn.store)
    return svc.output(op.txn.store, kind, data, 0, status)["operating_status"]
