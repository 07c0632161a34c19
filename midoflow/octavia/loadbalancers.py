"""Octavia load balancers: a Neutron port on the VIP subnet (device owner
``Octavia``, so a floating IP can be set on it) and a native LoadBalancer on
the Neutron router with an interface on that subnet."""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.neutron import attrs as na
from midoflow.neutron import errors as ne
from midoflow.neutron import translate_l3 as t3
from midoflow.neutron.base import Op, on_port_deleted
from midoflow.neutron.networks import find_network
from midoflow.neutron.port_removal import delete_port_in
from midoflow.neutron.ports import create_port_in, network_subnets
from midoflow.octavia import errors as oe
from midoflow.octavia import native
from midoflow.octavia import values as v
from midoflow.octavia.common import (
    LISTENERS,
    LOADBALANCERS,
    POOLS,
    PROVIDER,
    VIP_OWNER,
    base_view,
    children,
    cidr,
    common_fields,
    drop_pool_records,
    find,
    ids,
    kind_of,
    project_of,
    stamp,
    touch,
)
from midoflow.store.base import Data

LB_CREATE = ("name", "description", "admin_state_up", "vip_subnet_id", "vip_network_id",
             "vip_port_id", "vip_address", "project_id", "tenant_id", "provider", "tags",
             "flavor_id", "availability_zone", "vip_qos_policy_id", "vip_vnic_type",
             "additional_vips", "vip_sg_ids", "listeners", "pools")
LB_UPDATE = ("name", "description", "admin_state_up", "tags", "vip_qos_policy_id")


def _router_of_subnet(op: Op, subnet_id: str) -> str | None:
    """The Neutron router with an interface on the subnet."""
    for p in sorted(op.scan("ports"), key=lambda p: p["id"]):
        if p.get("device_owner") in t3.INTERFACE_OWNERS and t3.fixed_ip(p, subnet_id):
            return p.get("device_id") or None
    return None


def _vip_subnet(op: Op, body: Data) -> tuple[Data, str | None, Data | None]:
    """(subnet, requested address, existing VIP port) from the body's vip_*."""
    port = None
    address = v.ipv4(body["vip_address"], "vip_address") \
        if body.get("vip_address") is not None else None
    if body.get("vip_port_id") is not None:
        pid = v.uuid_str(body["vip_port_id"], "vip_port_id")
        port = op.get("ports", pid)
        if port is None or not op.service.handler("ports").visible(op.ctx, port, op):
            raise oe.BadRequest(f"Port {pid} (the vip_port_id) could not be found")
        if port.get("device_owner"):
            raise oe.Conflict(f"Port {pid} is in use by {port['device_owner']} "
                              f"{port.get('device_id') or ''}: give a free port, or a "
                              "vip_subnet_id to have one made")
        fixed = [f for f in port.get("fixed_ips") or () if address in (None, f["ip_address"])]
        if not fixed:
            raise oe.BadRequest(f"Port {pid} has no fixed IP "
                                f"{address or ''}: give a port with an IPv4 address")
        sub = op.get("subnets", fixed[0]["subnet_id"])
        return sub, fixed[0]["ip_address"], port
    if body.get("vip_subnet_id") is not None:
        sid = v.uuid_str(body["vip_subnet_id"], "vip_subnet_id")
        sub = op.get("subnets", sid)
        if sub is None or not op.service.handler("subnets").visible(op.ctx, sub, op):
            raise oe.BadRequest(f"Subnet {sid} (the vip_subnet_id) could not be found")
        if body.get("vip_network_id") is not None and \
                body["vip_network_id"] != sub["network_id"]:
            raise oe.BadRequest(f"Subnet {sid} is not on network {body['vip_network_id']}: "
                                "give a vip_subnet_id of the vip_network_id")
        return sub, address, None
    if body.get("vip_network_id") is not None:
        try:
            net = find_network(op, body["vip_network_id"], "vip_network_id")
        except Exception as e:  # noqa: BLE001 - Neutron's 404 is the body's mistake here
            raise oe.BadRequest(f"Network {body['vip_network_id']} (the vip_network_id) "
                                f"could not be found ({e})") from None
        subs = [s for s in network_subnets(op, net["id"]) if s.get("ip_version", 4) == 4]
        if address is not None:
            subs = [s for s in subs if address in cidr(s)]
        if not subs:
            raise oe.BadRequest(f"Network {net['id']} has no IPv4 subnet"
                                + (f" containing {address}" if address else "")
                                + ": give a vip_subnet_id")
        return subs[0], address, None
    raise oe.BadRequest("Missing mandatory field/attribute: give vip_subnet_id, "
                        "vip_network_id or vip_port_id")


def _unsupported_lb(body: Data) -> None:
    if body.get("provider") not in (None, PROVIDER):
        raise oe.BadRequest(f"Provider '{body['provider']}' is not enabled: the only "
                            f"provider is '{PROVIDER}' (omit --provider)")
    for attr in ("flavor_id", "availability_zone", "vip_qos_policy_id"):
        if body.get(attr) is not None:
            raise oe.unsupported(attr, f"omit {attr}")
    if body.get("vip_vnic_type") not in (None, "normal"):
        raise oe.unsupported("vip_vnic_type", "only 'normal'")
    for attr in ("additional_vips", "vip_sg_ids", "listeners", "pools"):
        if body.get(attr):
            raise oe.unsupported(attr, f"create the load balancer without {attr} and add "
                                 "them one by one")


def create_loadbalancer(op: Op, body: Any) -> Data:
    body = v.body_of(body, "loadbalancer")
    v.check_known(body, LB_CREATE, "load balancer")
    _unsupported_lb(body)
    pid = project_of(op, body)
    sub, address, port = _vip_subnet(op, body)
    if sub.get("ip_version", 4) != 4:
        raise oe.BadRequest(f"Subnet {sub['id']} is IPv6: midoflow balances IPv4")
    rid = _router_of_subnet(op, sub["id"])
    if rid is None:
        raise oe.BadRequest(f"Subnet {sub['id']} is on no router: midoflow balances in the "
                            "router of the VIP's subnet; add the subnet to a router "
                            "(openstack router add subnet) first")
    nbody: Data = {"router_id": rid, "tenant_id": pid}
    common_fields(body, nbody)
    nat = native.create(op.txn, model.LOAD_BALANCERS, nbody)
    if port is None:
        fixed: Data = {"subnet_id": sub["id"]}
        if address is not None:
            fixed["ip_address"] = address
        port = create_port_in(op, {"network_id": sub["network_id"], "fixed_ips": [fixed],
                                   "device_owner": VIP_OWNER, "device_id": f"lb-{nat['id']}",
                                   "name": f"octavia-lb-{nat['id']}",
                                   "port_security_enabled": False, "project_id": pid},
                              owner_ok=True)
        owned = True
    else:
        port = dict(port, device_owner=VIP_OWNER, device_id=f"lb-{nat['id']}")
        op.txn.put(op.service.handler("ports").kind, na.stamp_update(port))
        owned = False
    vip = t3.fixed_ip(port, sub["id"])["ip_address"]
    rec = stamp({"id": nat["id"], "vip_subnet_id": sub["id"],
                 "vip_network_id": sub["network_id"], "vip_port_id": port["id"],
                 "vip_address": vip, "owns_port": owned, "tags": v.tags(body.get("tags"))},
                pid)
    op.txn.create(kind_of(LOADBALANCERS), rec)
    return rec


def update_loadbalancer(op: Op, oid: str, body: Any) -> Data:
    rec, _nat = find(op, LOADBALANCERS, oid)
    body = v.body_of(body, "loadbalancer")
    v.check_known(body, LB_UPDATE, "load balancer update")
    if body.get("vip_qos_policy_id") is not None:
        raise oe.unsupported("vip_qos_policy_id", "omit it")
    changes: Data = {}
    common_fields(body, changes)
    if changes:
        native.update(op.txn, model.LOAD_BALANCERS, oid, changes)
    touch(op, LOADBALANCERS, rec, body)
    return rec


def delete_loadbalancer(op: Op, oid: str, cascade: bool) -> None:
    rec, _nat = find(op, LOADBALANCERS, oid)
    vips = children(op, LISTENERS, "load_balancer_id", oid)
    pools = children(op, POOLS, "load_balancer_id", oid)
    if (vips or pools) and not cascade:
        raise oe.BadRequest(f"Cannot delete Load Balancer {oid} - it has children: delete its "
                            f"{len(vips)} listener(s) and {len(pools)} pool(s) first, or "
                            "delete with --cascade")
    for p in pools:
        drop_pool_records(op, p["id"])
    for lst in vips:
        op.txn.delete(kind_of(LISTENERS), lst["id"])
    native.delete(op.txn, model.LOAD_BALANCERS, oid, cascade=cascade)
    op.txn.delete(kind_of(LOADBALANCERS), oid)
    port = op.get("ports", rec.get("vip_port_id") or "")
    if port is not None and port.get("device_id") == f"lb-{oid}":
        if rec.get("owns_port", True):
            delete_port_in(op, port)
        else:
            op.txn.put(op.service.handler("ports").kind, na.stamp_update(
                dict(port, device_owner="", device_id="")))


@on_port_deleted
def _vip_port_deleted(op: Op, port: Data) -> None:
    """A load balancer's VIP port goes with the load balancer only."""
    if port.get("device_owner") != VIP_OWNER:
        return
    lb_id = (port.get("device_id") or "").removeprefix("lb-")
    if lb_id and op.txn.get(kind_of(LOADBALANCERS), lb_id) is not None:
        raise ne.Conflict(f"Port {port['id']} is the VIP port of load balancer {lb_id}: "
                          "delete the load balancer instead (openstack loadbalancer delete)")


def view_loadbalancer(op: Op, rec: Data, nat: Data) -> Data:
    out = base_view(op, LOADBALANCERS, rec, nat)
    out.update(description=nat.get("description") or "", provider=PROVIDER,
               vip_address=rec["vip_address"], vip_port_id=rec["vip_port_id"],
               vip_subnet_id=rec["vip_subnet_id"], vip_network_id=rec["vip_network_id"],
               vip_qos_policy_id=None, vip_vnic_type="normal", vip_sg_ids=[],
               additional_vips=[], flavor_id=None, availability_zone=None,
               listeners=ids(children(op, LISTENERS, "load_balancer_id", nat["id"])),
               pools=ids(children(op, POOLS, "load_balancer_id", nat["id"])))
    return out
