"""Neutron floating IPs: an address of an external network's subnet, associated
with a port's fixed IP through the router that joins the port's subnet to that
network. Their translation lives in the router's generated NAT chains and its
gateway port's proxy ARP: every change regenerates the routers concerned
(:func:`midoflow.neutron.routers.sync_router`).

No ``network:floatingip`` port is created: the address is reserved by the
floating IP itself, in the network's allocation index (:mod:`.allocations`).
"""

from __future__ import annotations

from typing import Any

import netaddr

from midoflow.neutron import allocations as alloc
from midoflow.neutron import attrs as a
from midoflow.neutron import errors as ne
from midoflow.neutron import ipam
from midoflow.neutron import ports as nports
from midoflow.neutron import translate_l3 as t3
from midoflow.neutron.base import Collection, Op, kind_of, on_port_deleted, register
from midoflow.neutron.routers import sync_router
from midoflow.store.base import Data

RESOURCE = "floatingip"
CREATE = ("floating_network_id", "floating_ip_address", "subnet_id", "port_id",
          "fixed_ip_address", "description", "project_id", "tenant_id")
UPDATE = ("port_id", "fixed_ip_address", "description")
READONLY = ("id", "status", "router_id", "tags", "created_at", "updated_at",
            "revision_number", "floating_network_id", "floating_ip_address", "subnet_id",
            "project_id", "tenant_id", "port_forwardings")


class BadFloatingIPRequest(ne.BadRequest):
    @property
    def type(self) -> str:
        return "BadRequest"


def bad(msg: str) -> BadFloatingIPRequest:
    return BadFloatingIPRequest(f"Bad floatingip request: {msg}.")


def _allocate(op: Op, fip_id: str, net_id: str, subnet_id: str | None,
              address: str | None) -> str:
    """An address of the external network (of ``subnet_id`` / ``address`` if given),
    claimed for ``fip_id`` in the network's allocation index."""
    subnets = sorted((s for s in op.scan("subnets") if s.get("network_id") == net_id
                      and s.get("ip_version", 4) == 4), key=lambda s: s["id"])
    if subnet_id is not None:
        subnets = [s for s in subnets if s["id"] == subnet_id]
        if not subnets:
            raise bad(f"Subnet {subnet_id} is not on network {net_id}")
    if address is not None:
        subnets = [s for s in subnets if netaddr.IPAddress(address) in
                   netaddr.IPNetwork(s["cidr"])]
        if not subnets:
            raise ne.InvalidInput(f"IP address {address} is not a valid IP for the subnets "
                                  f"of network {net_id}.")
    if not subnets:
        raise bad(f"Network {net_id} does not contain any IPv4 subnet")
    last: ne.NeutronError | None = None
    for s in subnets:
        try:  # the index serialises allocations on the network (one retries)
            addr = ipam.allocate(s, nports.used_addresses(op, s["id"]), address)
        except ne.IpAddressGenerationFailure as e:
            last = e
            continue
        alloc.claim_ip(op, net_id, s["id"], addr, fip_id)
        return addr
    raise last or ne.IpAddressGenerationFailure(f"No more IP addresses available on network "
                                                f"{net_id}.")


def _associate(op: Op, fip: Data, port_id: Any, fixed: Any) -> None:
    """Point ``fip`` at a port's fixed IP, through the router that reaches it."""
    port_id = a.uuid_str(port_id, "port_id")
    port = op.service.find(op, "ports", port_id)
    if not op.ctx.is_admin and port.get("project_id") != fip["project_id"]:
        raise ne.PortNotFound(f"Port {port_id} could not be found")
    owner = port.get("device_owner") or ""
    if owner.startswith("network:"):
        raise bad(f"Port {port_id} has owner {owner} and therefore cannot be assigned a "
                  "floating IP")
    v4 = [f for f in port.get("fixed_ips") or () if netaddr.IPAddress(f["ip_address"]).version
          == 4]
    if fixed is not None:
        fixed = a.ip(fixed, "fixed_ip_address")
        chosen = next((f for f in v4 if f["ip_address"] == fixed), None)
        if chosen is None:
            raise bad(f"Port {port_id} does not have fixed ip {fixed}")
    elif not v4:
        raise bad(f"Port {port_id} does not have any IPv4 fixed IP")
    elif len(v4) > 1:
        raise bad(f"Port {port_id} has multiple fixed IPv4 addresses. Must provide a "
                  "specific IPv4 address when assigning a floating IP")
    else:
        chosen = v4[0]
    for other in op.scan("floatingips"):
        if other["id"] != fip["id"] and other.get("port_id") == port_id and \
                other.get("fixed_ip_address") == chosen["ip_address"] and \
                other.get("floating_network_id") == fip["floating_network_id"]:
            raise ne.FloatingIPPortAlreadyAssociated(
                f"Cannot associate floating IP {fip['floating_ip_address']} ({fip['id']}) "
                f"with port {port_id} using fixed IP {chosen['ip_address']}, as that fixed IP "
                f"already has a floating IP on external network "
                f"{fip['floating_network_id']}.")
    found = _router_for(op, chosen["subnet_id"], fip["floating_network_id"])
    if found is None:
        raise ne.ExternalGatewayForFloatingIPNotFound(
            f"External network {fip['floating_network_id']} is not reachable from subnet "
            f"{chosen['subnet_id']}.  Therefore, cannot associate Port {port_id} with a "
            "Floating IP.")
    router_id, iface_id = found
    # re-written (versions checked at commit): two associations of the port, its
    # deletion, the removal of the interface or of the router's gateway serialise
    # with this request; the loser re-runs and sees the winner's state
    for kind, oid in (("ports", port_id), ("ports", iface_id), ("routers", router_id)):
        op.txn.touch(kind_of(kind), oid)
    fip.update(port_id=port_id, fixed_ip_address=chosen["ip_address"], router_id=router_id,
               status="ACTIVE")


def _router_for(op: Op, subnet_id: str, ext_net: str) -> tuple[str, str] | None:
    """(router, its interface port) for the router with an interface on
    ``subnet_id`` and its gateway on ``ext_net``."""
    for p in sorted(op.scan("ports"), key=lambda p: p["id"]):
        if p.get("device_owner") in t3.INTERFACE_OWNERS and t3.fixed_ip(p, subnet_id):
            router = op.get("routers", p.get("device_id") or "")
            info = (router or {}).get("external_gateway_info") or {}
            if info.get("network_id") == ext_net:
                return router["id"], p["id"]
    return None


def _disassociate(fip: Data) -> None:
    fip.update(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")


@on_port_deleted
def port_deleted(op: Op, port: Data) -> None:
    """A port is being deleted (staged by the ports code): its floating IPs are
    disassociated and their routers' NAT rules regenerated, in the same commit."""
    routers = set()
    for fip in op.scan("floatingips"):
        if fip.get("port_id") == port["id"]:
            fip = dict(fip)
            if fip.get("router_id"):
                routers.add(fip["router_id"])
            _disassociate(fip)
            a.stamp_update(fip)
            op.txn.put(kind_of("floatingips"), fip)
    for rid in sorted(routers):
        sync_router(op, rid)


class FloatingIPs(Collection):
    name = "floatingips"
    resource = RESOURCE
    not_found = ne.FloatingIPNotFound

    def create(self, op: Op, body: Data) -> Data:
        body = a.body_of(body, RESOURCE)
        a.check_known(body, CREATE, tuple(x for x in READONLY if x not in CREATE))
        if body.get("floating_network_id") is None:
            raise a.invalid("floating_network_id", "'None' is not a valid UUID")
        net_id = a.uuid_str(body["floating_network_id"], "floating_network_id")
        pid = a.owner(op.ctx, body, RESOURCE)
        net = op.service.find(op, "networks", net_id)
        if not net.get("router:external"):
            raise bad(f"Network {net_id} is not a valid external network")
        subnet_id = a.uuid_str(body["subnet_id"], "subnet_id") \
            if body.get("subnet_id") is not None else None
        address = a.ip(body["floating_ip_address"], "floating_ip_address") \
            if body.get("floating_ip_address") is not None else None
        fip_id = a.new_id()
        fip = a.stamp_new({
            "id": fip_id,
            "floating_network_id": net_id,
            "floating_ip_address": _allocate(op, fip_id, net_id, subnet_id, address),
            "router_id": None, "port_id": None, "fixed_ip_address": None, "status": "DOWN",
            "description": a.string(body.get("description", ""), "description",
                                    a.DESCRIPTION_MAX),
            "port_forwardings": [],
        }, pid)
        if body.get("port_id") is not None:
            _associate(op, fip, body["port_id"], body.get("fixed_ip_address"))
        elif body.get("fixed_ip_address") is not None:
            raise bad("fixed_ip_address needs port_id")
        op.txn.create(self.kind, fip)
        if fip["router_id"]:
            sync_router(op, fip["router_id"])
        return fip

    def update(self, op: Op, obj: Data, body: Data) -> Data:
        body = a.body_of(body, RESOURCE)
        a.check_known(body, UPDATE, READONLY, post=False)
        fip = dict(obj)
        if "description" in body:
            fip["description"] = a.string(body["description"], "description",
                                          a.DESCRIPTION_MAX)
        old_router = obj.get("router_id")
        if "port_id" in body:
            if body["port_id"] is None:
                if body.get("fixed_ip_address") is not None:
                    raise bad("fixed_ip_address needs port_id")
                _disassociate(fip)
            else:
                _associate(op, fip, body["port_id"], body.get("fixed_ip_address"))
        elif body.get("fixed_ip_address") is not None:
            if not fip.get("port_id"):
                raise bad("fixed_ip_address needs port_id")
            _associate(op, fip, fip["port_id"], body["fixed_ip_address"])
        a.stamp_update(fip)
        op.txn.put(self.kind, fip)
        for rid in sorted({r for r in (old_router, fip.get("router_id")) if r}):
            sync_router(op, rid)
        return fip

    def delete(self, op: Op, obj: Data) -> None:
        op.txn.delete(self.kind, obj["id"])
        alloc.release_ip(op, obj["floating_network_id"], obj["floating_ip_address"],
                         obj["id"])
        if obj.get("router_id"):
            sync_router(op, obj["router_id"])


register(FloatingIPs())
