"""Neutron IPv4 subnets: the address plan of a network (their addresses reach the
native ports through the ports' fixed IPs) and its DHCP service: each subnet has
a native DHCP subnet on the network's bridge, written in the same commit
(:func:`~midoflow.neutron.translate_l2.subnet_to_dhcp`; ``enable_dhcp`` false
keeps it, disabled), deleted with it."""

from __future__ import annotations

from typing import Any

import netaddr

from midoflow import model
from midoflow.neutron import allocations as alloc
from midoflow.neutron import attrs as a
from midoflow.neutron import errors as ne
from midoflow.neutron import ipam
from midoflow.neutron import translate_l2 as tr
from midoflow.neutron.base import Collection, Op, owns, register
from midoflow.neutron.context import Context
from midoflow.neutron.networks import find_network
from midoflow.neutron.networks import visible as net_visible
from midoflow.neutron.ports import used_addresses
from midoflow.store.base import Data

CREATE = ("network_id", "cidr", "ip_version", "name", "gateway_ip", "allocation_pools",
          "dns_nameservers", "host_routes", "enable_dhcp", "description", "subnetpool_id",
          "ipv6_address_mode", "ipv6_ra_mode", "service_types", "segment_id",
          "use_default_subnetpool", "project_id", "tenant_id")
UPDATE = ("name", "gateway_ip", "allocation_pools", "dns_nameservers", "host_routes",
          "enable_dhcp", "description", "service_types", "segment_id")
READONLY = a.STANDARD
FIXED = ("network_id", "cidr", "ip_version", "subnetpool_id", "ipv6_address_mode",
         "ipv6_ra_mode", "project_id", "tenant_id")


def _pools(value: Any) -> list[dict[str, str]]:
    items = a.a_list(value, "allocation_pools", unique=False)
    out = []
    for p in items:
        p = a.a_dict(p, "allocation_pools", ("start", "end"), ("start", "end"))
        out.append({"start": a.ip(p["start"], "allocation_pools"),
                    "end": a.ip(p["end"], "allocation_pools")})
    return out


def _routes(value: Any) -> list[dict[str, str]]:
    out = []
    for r in a.a_list(value, "host_routes"):
        r = a.a_dict(r, "host_routes", ("destination", "nexthop"), ("destination", "nexthop"))
        out.append({"destination": a.cidr(r["destination"], "host_routes"),
                    "nexthop": a.ip(r["nexthop"], "host_routes")})
    return a.a_list(out, "host_routes")


def _nameservers(value: Any) -> list[str]:
    return a.a_list([a.ip(x, "dns_nameservers") for x in
                     a.a_list(value, "dns_nameservers", unique=False)], "dns_nameservers")


def _must_be_null(body: Data, attrs: tuple[str, ...], why: str) -> None:
    for f in attrs:
        if body.get(f) not in (None, False, []):
            raise a.invalid(f, why)


def _stage_dhcp(op: Op, sub: Data) -> None:
    """The subnet's native DHCP subnet, as the subnet now says."""
    dhcp = tr.subnet_to_dhcp(sub)
    if dhcp is not None and op.txn.get(model.BRIDGES, sub["network_id"]) is not None:
        op.txn.sync(model.DHCP_SUBNETS, dhcp)


class Subnets(Collection):
    name = "subnets"
    resource = "subnet"
    not_found = ne.SubnetNotFound

    def visible(self, ctx: Context, obj: Data, op: Op) -> bool:
        if ctx.is_admin or obj.get("project_id") == ctx.project_id:
            return True
        net = op.get("networks", obj.get("network_id", ""))
        return net is not None and net_visible(ctx, net)

    def create(self, op: Op, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, CREATE, READONLY)
        if "network_id" not in body:
            raise a.invalid("network_id", "network_id is required")
        net = find_network(op, body["network_id"])
        if not owns(op.ctx, net):
            raise a.policy("create", self.resource, "network_id")
        pid = a.owner(op.ctx, body, self.resource)
        version = a.integer(body.get("ip_version", 4), "ip_version")
        if version == 6:
            raise ne.BadRequest("IPv6 subnets are not supported yet: create an IPv4 subnet "
                                "(ip_version 4)")
        if version != 4:
            raise a.invalid("ip_version", f"'{version}' is not in [4, 6]")
        _must_be_null(body, ("subnetpool_id", "use_default_subnetpool", "ipv6_address_mode",
                             "ipv6_ra_mode", "segment_id", "service_types"),
                      "not supported by midoflow: leave it out or null")
        if "cidr" not in body or body["cidr"] is None:
            raise a.invalid("cidr", "a cidr is required (subnet pools are not supported)")
        cidr = a.cidr(body["cidr"], "cidr")
        if netaddr.IPNetwork(cidr).prefixlen > 30:
            raise a.invalid("cidr", f"'{cidr}' is too small: a subnet needs room for a "
                            "gateway and hosts (/30 at most)")
        if "gateway_ip" in body:
            gw = None if body["gateway_ip"] is None else a.ip(body["gateway_ip"], "gateway_ip")
        else:
            gw = str(netaddr.IPAddress(netaddr.IPNetwork(cidr).first + 1))
        if gw is not None:
            ipam.check_gateway(cidr, gw)
        if body.get("allocation_pools") is not None:
            pools = ipam.validate_pools(cidr, gw, _pools(body["allocation_pools"]))
        else:
            pools = ipam.default_pools(cidr, gw)
        for other in op.scan(self.name):
            if other.get("network_id") == net["id"] and ipam.overlaps(other["cidr"], cidr):
                raise ne.BadRequest(f"Invalid input for operation: Requested subnet with cidr: "
                                    f"{cidr} for network: {net['id']} overlaps with another "
                                    f"subnet ({other['id']}, {other['cidr']}).")
        sub = {
            "id": a.new_id(),
            "network_id": net["id"],
            "name": a.string(body.get("name", ""), "name"),
            "description": a.string(body.get("description", ""), "description",
                                    a.DESCRIPTION_MAX),
            "ip_version": 4,
            "cidr": cidr,
            "gateway_ip": gw,
            "allocation_pools": pools,
            "dns_nameservers": _nameservers(body.get("dns_nameservers", [])),
            "host_routes": _routes(body.get("host_routes", [])),
            "enable_dhcp": a.boolean(body.get("enable_dhcp", True), "enable_dhcp"),
            "subnetpool_id": None,
            "ipv6_address_mode": None,
            "ipv6_ra_mode": None,
            "service_types": [],
            "segment_id": None,
        }
        a.stamp_new(sub, pid)
        # serialises subnet creation per network (the overlap check)
        op.txn.touch("neutron.networks", net["id"])
        op.txn.create(self.kind, sub)
        alloc.subnet_added(op, net["id"], sub["id"])
        _stage_dhcp(op, sub)
        return sub

    def update(self, op: Op, obj: Data, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, UPDATE, READONLY + FIXED, post=False)
        if not owns(op.ctx, obj):
            raise a.policy("update", self.resource)
        _must_be_null(body, ("segment_id", "service_types"),
                      "not supported by midoflow: leave it out or null")
        new = dict(obj)
        if "name" in body:
            new["name"] = a.string(body["name"], "name")
        if "description" in body:
            new["description"] = a.string(body["description"], "description",
                                          a.DESCRIPTION_MAX)
        if "enable_dhcp" in body:
            new["enable_dhcp"] = a.boolean(body["enable_dhcp"], "enable_dhcp")
        if "dns_nameservers" in body:
            new["dns_nameservers"] = _nameservers(body["dns_nameservers"])
        if "host_routes" in body:
            new["host_routes"] = _routes(body["host_routes"])
        if "gateway_ip" in body:
            gw = None if body["gateway_ip"] is None else a.ip(body["gateway_ip"], "gateway_ip")
            if gw is not None:
                ipam.check_gateway(obj["cidr"], gw)
                if gw != obj.get("gateway_ip"):
                    if gw in used_addresses(op, obj["id"]):
                        raise ne.IpAddressInUse(f"Unable to complete operation for network "
                                                f"{obj['network_id']}. The IP address {gw} is "
                                                "in use.")
            new["gateway_ip"] = gw
        if "allocation_pools" in body:
            new["allocation_pools"] = ipam.validate_pools(obj["cidr"], new["gateway_ip"],
                                                          _pools(body["allocation_pools"]))
        elif new["gateway_ip"] != obj.get("gateway_ip"):
            ipam.validate_pools(obj["cidr"], new["gateway_ip"], new["allocation_pools"])
        if new == obj:
            return obj
        a.stamp_update(new)
        op.txn.put(self.kind, new)
        _stage_dhcp(op, new)
        return new

    def delete(self, op: Op, obj: Data) -> None:
        if not owns(op.ctx, obj):
            raise a.policy("delete", self.resource)
        sid = obj["id"]
        if used_addresses(op, sid):
            raise ne.SubnetInUse(f"Unable to complete operation on subnet {sid}: One or more "
                                 "ports have an IP allocation from this subnet.")
        op.txn.delete(self.kind, sid)
        if op.txn.get(model.DHCP_SUBNETS, tr.dhcp_subnet_id(sid)) is not None:
            op.txn.delete(model.DHCP_SUBNETS, tr.dhcp_subnet_id(sid))
        # the index (read by used_addresses above) loses the subnet: an allocation
        # from it committed meanwhile makes this commit fail and re-run
        alloc.subnet_removed(op, obj["network_id"], sid)


register(Subnets())
