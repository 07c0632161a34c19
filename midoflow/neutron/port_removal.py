"""Removing a Neutron port with everything hanging on it, for every collection
that removes ports (ports, networks, routers): what else must go first is
registered by its owner (:func:`midoflow.neutron.base.on_port_deleted`)."""

from __future__ import annotations

from midoflow import model
from midoflow.neutron.base import PORT_DELETED, Op, kind_of
from midoflow.service import refs


def delete_port_in(op: Op, port: dict) -> None:
    """Stage the deletion of a Neutron port, its native port and generated chains
    (midoflow.service.refs), after the hooks its dependents registered (the
    floating IPs disassociate and regenerate their routers' NAT rules)."""
    for hook in PORT_DELETED:
        hook(op, port)
    op.txn.delete(kind_of("ports"), port["id"])
    if op.txn.get(model.PORTS, port["id"]) is not None:
        refs.delete(op.txn, model.PORTS, port["id"])
