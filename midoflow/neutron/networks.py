"""Neutron networks, each translated into one native bridge with the same id."""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.neutron import allocations as alloc
from midoflow.neutron import attrs as a
from midoflow.neutron import errors as ne
from midoflow.neutron import translate_l2 as tr
from midoflow.neutron.base import Collection, Op, kind_of, owns, register
from midoflow.neutron.context import Context
from midoflow.neutron.port_removal import delete_port_in
from midoflow.service import refs
from midoflow.store.base import Data

# Tunnel overhead over an IPv4 underlay (outer IP + UDP/GRE + inner Ethernet).
OVERHEAD = {model.TUNNEL_VXLAN: 50, model.TUNNEL_GRE: 42}
PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")
ADMIN_ONLY = ("router:external", "shared", "provider:network_type",
              "provider:physical_network", "provider:segmentation_id", "is_default")
CREATE = ("name", "admin_state_up", "shared", "router:external", "port_security_enabled",
          "provider:network_type", "provider:physical_network", "provider:segmentation_id",
          "description", "availability_zone_hints", "mtu", "is_default", "project_id",
          "tenant_id")
UPDATE = ("name", "admin_state_up", "shared", "router:external", "port_security_enabled",
          "description", "mtu", "is_default", "provider:network_type",
          "provider:physical_network", "provider:segmentation_id")
READONLY = a.STANDARD + ("status", "subnets", "availability_zones", "ipv4_address_scope",
                         "ipv6_address_scope")
DEFAULTS: Data = {"name": "", "admin_state_up": True, "shared": False, "router:external": False,
                  "port_security_enabled": True, "description": "", "is_default": False,
                  "provider:physical_network": None}


def mtu(service: Any) -> int:
    return service.underlay_mtu - OVERHEAD.get(service.tunnel_type, 50)


def visible(ctx: Context, net: Data) -> bool:
    """Admin, the owner, or anyone for a shared or external network."""
    return (ctx.is_admin or net.get("project_id") == ctx.project_id
            or bool(net.get("shared")) or bool(net.get("router:external")))


def find_network(op: Op, net_id: Any, attr: str = "network_id") -> Data:
    """A network the caller may see (404 NetworkNotFound otherwise)."""
    nid = a.uuid_str(net_id, attr)
    net = op.get("networks", nid)
    if net is None or not visible(op.ctx, net):
        raise ne.NetworkNotFound(f"Network {nid} could not be found.")
    return net


def _check_provider(op: Op, body: Data, current: Data | None) -> None:
    tunnel = op.service.tunnel_type
    if "provider:network_type" in body and body["provider:network_type"] != tunnel:
        raise a.invalid("provider:network_type",
                        f"'{body['provider:network_type']}' is not supported: this cloud's "
                        f"networks are '{tunnel}' (set by its tunnel type)")
    if body.get("provider:physical_network") is not None:
        raise a.invalid("provider:physical_network", f"{tunnel} networks have no physical "
                        "network; leave it null")
    seg = body.get("provider:segmentation_id")
    if seg is not None and (current is None or seg != current.get("provider:segmentation_id")):
        raise a.invalid("provider:segmentation_id", "the segmentation id is allocated by "
                        "midoflow and read-only; leave it out")


def _check_mtu(op: Op, body: Data) -> None:
    if "mtu" in body and body["mtu"] is not None:
        m = a.integer(body["mtu"], "mtu", 68)
        if m != mtu(op.service):
            raise a.invalid("mtu", f"the MTU is computed from the underlay and tunnel type: "
                            f"{mtu(op.service)}; it cannot be set to {m}")


class Networks(Collection):
    name = "networks"
    resource = "network"
    not_found = ne.NetworkNotFound

    def visible(self, ctx: Context, obj: Data, op: Op) -> bool:
        return visible(ctx, obj)

    def create(self, op: Op, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, CREATE, READONLY)
        a.admin_only(op.ctx, body, ADMIN_ONLY, "create", self.resource, DEFAULTS)
        pid = a.owner(op.ctx, body, self.resource)
        _check_provider(op, body, None)
        _check_mtu(op, body)
        hints = a.a_list(body.get("availability_zone_hints", []), "availability_zone_hints",
                         a.string)
        if any(h != "nova" for h in hints):
            raise a.invalid("availability_zone_hints", "the only availability zone is 'nova'")
        net = {
            "id": a.new_id(),
            "name": a.string(body.get("name", ""), "name"),
            "description": a.string(body.get("description", ""), "description",
                                    a.DESCRIPTION_MAX),
            "admin_state_up": a.boolean(body.get("admin_state_up", True), "admin_state_up"),
            "shared": a.boolean(body.get("shared", False), "shared"),
            "router:external": a.boolean(body.get("router:external", False),
                                         "router:external"),
            "port_security_enabled": a.boolean(body.get("port_security_enabled", True),
                                               "port_security_enabled"),
            "provider:network_type": op.service.tunnel_type,
            "provider:physical_network": None,
            "provider:segmentation_id": op.service.store.next_counter("neutron_segment"),
            "mtu": mtu(op.service),
            "status": "ACTIVE",
            "availability_zone_hints": hints,
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "is_default": a.boolean(body.get("is_default", False), "is_default"),
        }
        if net["is_default"] and not net["router:external"]:
            raise a.invalid("is_default", "only an external network can be the default")
        a.stamp_new(net, pid)
        op.txn.create(self.kind, net)
        op.txn.create(model.BRIDGES, tr.network_to_bridge(net))
        alloc.create(op, net["id"])
        return net

    def update(self, op: Op, obj: Data, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, UPDATE, READONLY + ("project_id", "tenant_id"), post=False)
        if not owns(op.ctx, obj):
            raise a.policy("update", self.resource)
        a.admin_only(op.ctx, body, ADMIN_ONLY, "update", self.resource, obj)
        _check_provider(op, body, obj)
        _check_mtu(op, body)
        new = dict(obj)
        for f in ("name",):
            if f in body:
                new[f] = a.string(body[f], f)
        if "description" in body:
            new["description"] = a.string(body["description"], "description",
                                          a.DESCRIPTION_MAX)
        for f in ("admin_state_up", "shared", "router:external", "port_security_enabled",
                  "is_default"):
            if f in body:
                new[f] = a.boolean(body[f], f)
        if new["is_default"] and not new["router:external"]:
            raise a.invalid("is_default", "only an external network can be the default")
        if obj.get("router:external") and not new["router:external"]:
            fips = [f for f in op.scan("floatingips")
                    if f.get("floating_network_id") == obj["id"]]
            if fips:
                raise ne.Conflict(f"Network {obj['id']} still has floating IPs "
                                  f"({', '.join(sorted(f['id'] for f in fips))}): it must stay "
                                  "external; delete them first")
        if obj.get("shared") and not new["shared"]:
            others = sorted({p.get("project_id") for p in op.scan("ports")
                             if p.get("network_id") == obj["id"]
                             and p.get("project_id") != obj.get("project_id")})
            if others:
                raise ne.Conflict(f"Unable to reconfigure sharing settings for network "
                                  f"{obj['id']}. Multiple tenants are using it.")
        if new == obj:
            return obj
        a.stamp_update(new)
        op.txn.put(self.kind, new)
        bridge = op.txn.get(model.BRIDGES, obj["id"])
        op.txn.sync(model.BRIDGES, tr.network_to_bridge(new, current=bridge))
        return new

    def delete(self, op: Op, obj: Data) -> None:
        if not owns(op.ctx, obj):
            raise a.policy("delete", self.resource)
        nid = obj["id"]
        if op.txn.get(model.BRIDGES, nid) is not None:
            # the bridge's version first, then the native ports, then the Neutron ports:
            # a port created after any of these reads bumps the bridge, so this commit
            # fails and the request is retried (then NetworkInUse), never a native 409
            op.txn.touch(model.BRIDGES, nid)
            op.txn.scan(model.PORTS)
        # the allocation index too (read before the Neutron ports): a port or floating
        # IP allocated on the network after it makes this commit fail and re-run
        alloc.load(op, nid)
        ports = [p for p in op.scan("ports") if p.get("network_id") == nid]
        if any(p.get("device_owner") != "network:dhcp" for p in ports):
            raise ne.NetworkInUse(f"Unable to complete operation on network {nid}. There are "
                                  "one or more ports still in use on the network.")
        for p in ports:  # the network's own (DHCP) ports go with it
            delete_port_in(op, p)
        for s in op.scan("subnets"):
            if s.get("network_id") == nid:
                op.txn.delete(kind_of("subnets"), s["id"])
        op.txn.delete(self.kind, nid)
        alloc.drop(op, nid)
        if op.txn.get(model.BRIDGES, nid) is not None:
            refs.delete(op.txn, model.BRIDGES, nid)

    def view(self, op_or_none: Op | None, obj: Data) -> Data:
        out = dict(obj)
        if op_or_none is not None:
            out["mtu"] = mtu(op_or_none.service)
            out["subnets"] = sorted(s["id"] for s in op_or_none.scan("subnets")
                                    if s.get("network_id") == obj["id"])
        else:
            out.setdefault("subnets", [])
        out["availability_zones"] = ["nova"]
        if op_or_none is not None and not op_or_none.ctx.is_admin:
            for attr in PROVIDER:  # Neutron's policy shows them to admin only
                out.pop(attr, None)
        return out


register(Networks())
