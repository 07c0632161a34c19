"""DHCP subnets of bridges, and the DHCP/instance fields of ports (issue 12).

A bridge's DHCP subnet is what the agent of each VM's host answers DHCP with
for the bridge ports whose fixed address lies in it; its ``bridge_id`` is
declared ``cascade``, so deleting the bridge deletes it in the same commit.
Two subnets of one bridge may not overlap (409): every write touches the
bridge, so two concurrent creations cannot both pass that check.

The field checks are plain functions (the Neutron translation reuses them):
each raises :class:`~midoflow.errors.Invalid` naming the field.
"""

from __future__ import annotations

import re
from typing import Any

import netaddr

from midoflow import model
from midoflow.errors import Conflict, Invalid
from midoflow.kinds.dhcp_subnets import DNS_SERVERS_MAX, DOMAIN_NAME_MAX
from midoflow.service import body as gen
from midoflow.service import validate as v
from midoflow.service.context import Ctx, sort_key
from midoflow.service.txn import Txn
from midoflow.store.base import Data

HOST_ROUTES_MAX = 32  # option 121 is split over several options past 255 bytes
EXTRA_DHCP_OPTS_MAX = 32
OPT_VALUE_MAX = 255
SPECIAL = ("gateway_ip", "server_ip", "dns_servers", "domain_name", "lease_time", "host_routes")
# Port fields for bridge ports only, with the value a router port holds.
INSTANCE_FIELDS = {"extra_dhcp_opts": [], "instance_id": None, "tenant_id": "", "hostname": ""}

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_LABEL_RE = re.compile(_LABEL)
_DOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_OPTION_NAMES = {k.lower(): k for k in model.DHCP_OPTION_CODES}


# ------------------------------------------------------------- field checks
def host_address(value: Any, field: str, net: netaddr.IPNetwork) -> str:
    """A unicast address of ``net`` that is neither its network nor its broadcast."""
    ip = v.unicast_ipv4(value, field)
    if netaddr.IPAddress(ip) not in net:
        raise Invalid(f"{field} {ip} is not in {net}", field)
    if net.prefixlen <= 30 and ip in (str(net.network), str(net.broadcast)):
        which = "network" if ip == str(net.network) else "broadcast"
        raise Invalid(f"{field} {ip} is the {which} address of {net}", field)
    return ip


def subnet_cidr(value: Any, field: str = "cidr") -> netaddr.IPNetwork:
    net = netaddr.IPNetwork(v.cidr(value, field))
    if net.prefixlen > 30:
        raise Invalid(f"{field} {net} has no room for a server and a client: use a /30 or a "
                      "larger network", field)
    return net


def dns_servers(value: Any, field: str = "dns_servers") -> list[str]:
    servers = v.ipv4_list(value, field)
    if len(servers) > DNS_SERVERS_MAX:
        raise Invalid(f"{field} lists {len(servers)} servers: at most {DNS_SERVERS_MAX}",
                      field)
    return servers


def domain_name(value: Any, field: str = "domain_name") -> str:
    name = v.string(value, field, DOMAIN_NAME_MAX)
    if name and not _DOMAIN_RE.fullmatch(name):
        raise Invalid(f"{field} {name!r} is not a DNS domain name (labels of letters, digits "
                      "and '-', 1 to 63 characters, separated by '.')", field)
    return name.rstrip(".")


def lease_time(value: Any, field: str = "lease_time") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            value == model.DHCP_LEASE_INFINITE
            or model.DHCP_LEASE_MIN <= value <= model.DHCP_LEASE_MAX):
        raise Invalid(f"{field} must be a number of seconds from {model.DHCP_LEASE_MIN} to "
                      f"{model.DHCP_LEASE_MAX}, or {model.DHCP_LEASE_INFINITE} for an infinite "
                      "lease", field)
    return value


def host_routes(value: Any, field: str = "host_routes") -> list[Data]:
    """[{"destination": cidr, "nexthop": ip}], distinct destinations; a nexthop
    of 0.0.0.0 means the destination is on the link."""
    routes = v.a_list(value, field)
    if len(routes) > HOST_ROUTES_MAX:
        raise Invalid(f"{field} lists {len(routes)} routes: at most {HOST_ROUTES_MAX}", field)
    out: list[Data] = []
    for i, r in enumerate(routes):
        where = f"{field}[{i}]."
        v.item(r, field, where, ("destination", "nexthop"), ("destination", "nexthop"))
        dest = v.cidr(r["destination"], where + "destination")
        hop = v.ipv4(r["nexthop"], where + "nexthop")
        if hop != "0.0.0.0":
            hop = v.unicast_ipv4(hop, where + "nexthop")
        if any(o["destination"] == dest for o in out):
            raise Invalid(f"{field} lists destination {dest} twice", field)
        out.append({"destination": dest, "nexthop": hop})
    return out


def extra_dhcp_opts(value: Any, field: str = "extra_dhcp_opts") -> list[Data]:
    """[{"opt_name": name or number, "opt_value": text}], each option once. Names
    are dnsmasq's (model.DHCP_OPTION_CODES, and server-ip-address); numbers
    1..254 name any option but the DHCP protocol's own."""
    opts = v.a_list(value, field)
    if len(opts) > EXTRA_DHCP_OPTS_MAX:
        raise Invalid(f"{field} lists {len(opts)} options: at most {EXTRA_DHCP_OPTS_MAX}",
                      field)
    out: list[Data] = []
    for i, o in enumerate(opts):
        where = f"{field}[{i}]."
        v.item(o, field, where, ("opt_name", "opt_value"))
        name = option_name(o.get("opt_name"), where + "opt_name")
        if "opt_value" not in o:
            raise Invalid(f"{where}opt_value is required", where + "opt_value")
        val = v.string(o["opt_value"], where + "opt_value", OPT_VALUE_MAX)
        if any(option_code(x["opt_name"]) == option_code(name) for x in out):
            raise Invalid(f"{field} sets option {name} twice", field)
        out.append({"opt_name": name, "opt_value": val})
    return out


def option_name(value: Any, field: str) -> str:
    """A known option name (canonical spelling) or a number 1..254 as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise Invalid(f"{field} is required: an option name (router, dns-server, mtu, "
                      "classless-static-route, ...) or a number from 1 to 254", field)
    if value.isdigit():
        code = int(value)
        if not 1 <= code <= 254:
            raise Invalid(f"{field} {value}: option numbers are 1 to 254", field)
        if code in model.DHCP_RESERVED_CODES:
            raise Invalid(f"{field} {value}: option {code} is the DHCP protocol's own and "
                          "cannot be set per port", field)
        return str(code)
    if value.lower() == model.DHCP_SIADDR_OPTION:
        return model.DHCP_SIADDR_OPTION
    name = _OPTION_NAMES.get(value.lower())
    if name is None:
        raise Invalid(f"{field} {value[:64]!r} is not a DHCP option name: use one of "
                      f"{', '.join(sorted(_OPTION_NAMES))}, {model.DHCP_SIADDR_OPTION} or a "
                      "number from 1 to 254", field)
    if model.DHCP_OPTION_CODES[name] in model.DHCP_RESERVED_CODES:
        raise Invalid(f"{field} {value}: option {name} is the DHCP protocol's own and "
                      "cannot be set per port", field)
    return name


def option_code(name: str) -> int | str:
    """An option name's number (server-ip-address: itself, not an option)."""
    if name.isdigit():
        return int(name)
    return model.DHCP_OPTION_CODES.get(name, name)


def hostname(value: Any, field: str = "hostname") -> str:
    name = v.string(value, field, 63)
    if name and not _LABEL_RE.fullmatch(name):
        raise Invalid(f"{field} {name!r} is not a DNS label (letters, digits and '-', 1 to "
                      "63 characters, not starting or ending with '-')", field)
    return name


def default_hostname(ip: str | None) -> str:
    """Neutron's name for a port without dns_name: host-10-0-0-5."""
    return f"host-{ip.replace('.', '-')}" if ip else ""


def check_subnet(body: dict[str, Any], data: Data) -> None:
    """The special fields of ``body`` into ``data``, then the cross-field checks
    (gateway, server and each route's nexthop in the subnet)."""
    net = subnet_cidr(data["cidr"])
    if "dns_servers" in body:
        data["dns_servers"] = dns_servers(body["dns_servers"])
    if "domain_name" in body:
        data["domain_name"] = domain_name(body["domain_name"])
    if "lease_time" in body:
        data["lease_time"] = lease_time(body["lease_time"])
    if "host_routes" in body:
        data["host_routes"] = host_routes(body["host_routes"])
    for f in ("gateway_ip", "server_ip"):
        if f in body:
            data[f] = None if body[f] is None else host_address(body[f], f, net)
    for i, r in enumerate(data.get("host_routes") or ()):
        if r["nexthop"] != "0.0.0.0" and netaddr.IPAddress(r["nexthop"]) not in net:
            raise Invalid(f"host_routes[{i}].nexthop {r['nexthop']} is not in {net}: a "
                          "classless static route's next hop is on the subnet",
                          f"host_routes[{i}].nexthop")


def overlapping(subnets: list[Data], bridge_id: str, cidr: str, oid: str) -> Data | None:
    """Another DHCP subnet of the bridge whose network overlaps ``cidr``."""
    net = netaddr.IPNetwork(cidr)
    for s in subnets:
        if s["id"] != oid and s.get("bridge_id") == bridge_id and \
                v.overlaps(net, netaddr.IPNetwork(s["cidr"])):
            return s
    return None


def check_port_fields(body: dict[str, Any], new: Data) -> None:
    """The DHCP/instance fields of a port (bridge ports) and mtu (router ports)."""
    router = new.get("device_type") == model.DEVICE_ROUTER
    if "mtu" in body:
        if not router and body["mtu"] is not None:
            raise Invalid("mtu is for router ports: a bridge port takes its bridge's mtu "
                          "(PUT /bridges/{id} with mtu)", "mtu")
        new["mtu"] = None if body["mtu"] is None else v.integer(body["mtu"], "mtu", 68, 9000)
    for f, empty in INSTANCE_FIELDS.items():
        if f not in body:
            continue
        if router:
            if v._norm(body[f]) != v._norm(new.get(f, empty)):
                raise Invalid(f"{f} is for bridge ports (a VM's)", f)
            continue
        if f == "extra_dhcp_opts":
            new[f] = extra_dhcp_opts(body[f])
        elif f == "hostname":
            new[f] = hostname(body[f])
        elif f == "instance_id":
            new[f] = None if body[f] is None else v.string(body[f], f, 255, 1)
        else:
            new[f] = v.string(body[f], f)


# ------------------------------------------------------------------ family
class Dhcp:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def _out(self, data: Data, version: int) -> Data:
        return self.ctx.out(model.DHCP_SUBNETS, data, version)

    def list_dhcp_subnets(self) -> list[Data]:
        return sorted((self._out(d, ver) for d, ver in self.store.list(model.DHCP_SUBNETS)),
                      key=_subnet_key)

    def list_bridge_dhcp_subnets(self, bridge_id: str) -> list[Data]:
        bridge, _ = self.ctx.get(model.BRIDGES, bridge_id)
        return [s for s in self.list_dhcp_subnets() if s["bridge_id"] == bridge["id"]]

    def get_dhcp_subnet(self, id: str) -> Data:
        return self._out(*self.ctx.get(model.DHCP_SUBNETS, id))

    def create_dhcp_subnet(self, bridge_id: str, body: Any) -> Data:
        bridge, bver = self.ctx.get(model.BRIDGES, bridge_id)
        body, data = gen.create(model.DHCP_SUBNETS, body)
        data["bridge_id"] = bridge["id"]
        check_subnet(body, data)
        txn = Txn(self.store)
        txn.seen(model.BRIDGES, bridge, bver)
        txn.touch(model.BRIDGES, bridge["id"])  # serialises the overlap check
        data["id"] = self.ctx.new_id(model.DHCP_SUBNETS, body)
        self._no_overlap(txn, data)
        txn.create(model.DHCP_SUBNETS, data)
        txn.commit()
        return self.get_dhcp_subnet(data["id"])

    def update_dhcp_subnet(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(model.DHCP_SUBNETS, id)
        new = gen.update(model.DHCP_SUBNETS, body, data, shown=self._out(data, ver))
        check_subnet(body, new)
        txn = Txn(self.store)
        txn.seen(model.DHCP_SUBNETS, data, ver)
        self.ctx.check_version(body, ver, f"DHCP subnet {data['id']}")
        txn.put(model.DHCP_SUBNETS, new)
        txn.commit()
        return self.get_dhcp_subnet(data["id"])

    def delete_dhcp_subnet(self, id: str) -> None:
        self.ctx.delete(model.DHCP_SUBNETS, *self.ctx.get(model.DHCP_SUBNETS, id))

    @staticmethod
    def _no_overlap(txn: Txn, data: Data) -> None:
        other = overlapping(txn.list(model.DHCP_SUBNETS), data["bridge_id"], data["cidr"],
                            data["id"])
        if other is not None:
            raise Conflict(f"cidr {data['cidr']} overlaps {other['cidr']} of DHCP subnet "
                           f"{other['id']} on bridge {data['bridge_id']}", "cidr")


def _subnet_key(s: Data) -> tuple:
    net = netaddr.IPNetwork(s["cidr"])
    return (s.get("bridge_id") or "", net.first, net.prefixlen, *sort_key(s))
