"""Neutron ports: addresses from IPAM, MACs, security groups, bindings; each
translated into one native bridge port with the same id (and its chains).

For the router and floating-IP code: :func:`create_port_in`,
:func:`delete_port_in` and :func:`used_addresses` stage into the request's
transaction like the API's own handlers do.

The MACs and addresses taken on a network are read from, and written to, its
allocation index (:mod:`.allocations`) in the request's commit: a create reads
a constant number of objects, however many ports the cloud has.
"""

from __future__ import annotations

import random
from typing import Any

from midoflow import model
from midoflow.errors import Invalid
from midoflow.neutron import allocations as alloc
from midoflow.neutron import arp, ipam
from midoflow.neutron import attrs as a
from midoflow.neutron import errors as ne
from midoflow.neutron import translate_l2 as tr
from midoflow.neutron.base import Collection, Op, kind_of, on_port_deleted, owns, register
from midoflow.neutron.context import Context
from midoflow.neutron.networks import find_network
from midoflow.neutron.port_removal import delete_port_in
from midoflow.neutron.security_groups import ensure_default
from midoflow.service import dhcp
from midoflow.service.ports import tunnel_key
from midoflow.service.sync import sync_port_security
from midoflow.store import paths
from midoflow.store.base import Data

KIND = kind_of("ports")
CREATE = ("network_id", "name", "description", "admin_state_up", "mac_address", "fixed_ips",
          "device_id", "device_owner", "security_groups", "port_security_enabled",
          "allowed_address_pairs", "binding:host_id", "binding:vnic_type", "binding:profile",
          "extra_dhcp_opts", "project_id", "tenant_id")
UPDATE = ("name", "description", "admin_state_up", "mac_address", "fixed_ips", "device_id",
          "device_owner", "security_groups", "port_security_enabled", "allowed_address_pairs",
          "binding:host_id", "binding:vnic_type", "binding:profile", "extra_dhcp_opts")
READONLY = a.STANDARD + ("status", "binding:vif_type", "binding:vif_details")
# shown only to callers who may bind ports (binding:vnic_type stays visible)
HIDDEN_BINDING = ("binding:host_id", "binding:vif_type", "binding:vif_details",
                  "binding:profile")
VIF_DETAILS = {"port_filter": True, "ovs_hybrid_plug": False}
MAC_PREFIX = "fa:16:3e"


# ------------------------------------------------------------------ addresses
def used_addresses(op: Op, subnet_id: str) -> set[str]:
    """Every address taken on a subnet: the fixed IPs of Neutron ports on it and
    the floating IP addresses inside it, from the network's allocation index.
    The subnet is checked at commit (a concurrent change of its gateway or
    pools, or its deletion, makes this request re-run)."""
    sub = op.get("subnets", subnet_id)
    if sub is None:
        return set()
    op.txn.check(kind_of("subnets"), subnet_id)
    return alloc.used(op, sub["network_id"], subnet_id)


def network_subnets(op: Op, net_id: str) -> list[Data]:
    """The network's subnets, oldest first."""
    subs = [s for s in (op.get("subnets", sid) for sid in alloc.subnet_ids(op, net_id))
            if s is not None]
    return sorted(subs, key=lambda s: (s.get("created_at") or "", s["id"]))


def _fixed_ips(op: Op, net: Data, requested: Any, router: bool,
               keep: list[Data] = ()) -> list[Data]:
    """Allocate ``requested`` (Neutron's fixed_ips body, or None: one address of
    the network's first subnet). ``keep``: the port's current fixed IPs (an
    update): a subnet_id-only entry keeps the port's address on that subnet."""
    subnets = network_subnets(op, net["id"])
    by_id = {s["id"]: s for s in subnets}
    if requested is None:
        requested = [{"subnet_id": subnets[0]["id"]}] if subnets else []
    items = a.a_list(requested, "fixed_ips", unique=False)
    mine = {f["ip_address"] for f in keep}
    out: list[Data] = []
    for item in items:
        item = a.a_dict(item, "fixed_ips", ("subnet_id", "ip_address"))
        ip = a.ip(item["ip_address"], "fixed_ips") if item.get("ip_address") is not None \
            else None
        if item.get("subnet_id") is not None:
            sid = a.uuid_str(item["subnet_id"], "fixed_ips")
            sub = by_id.get(sid)
            if sub is None:
                raise ne.BadRequest(f"Invalid input for operation: Failed to create port on "
                                    f"network {net['id']}, because fixed_ips included invalid "
                                    f"subnet {sid}.")
        elif ip is not None:
            sub = next((s for s in subnets if ipam.in_subnet(s, ip)), None)
            if sub is None:
                raise ne.BadRequest(f"Invalid input for operation: IP address {ip} is not a "
                                    f"valid IP for any subnet on network {net['id']}.")
        else:
            raise a.invalid("fixed_ips", "each entry needs a subnet_id or an ip_address")
        if ip is None:
            kept = next((f for f in keep if f["subnet_id"] == sub["id"]
                         and f["ip_address"] not in {o["ip_address"] for o in out}), None)
            if kept is not None:
                out.append(dict(kept))
                continue
        used = used_addresses(op, sub["id"]) - mine | {o["ip_address"] for o in out}
        if ip is not None and ip == sub.get("gateway_ip") and not router and ip not in mine:
            raise ne.IpAddressInUse(f"Unable to complete operation for network {net['id']}. "
                                    f"The IP address {ip} is in use: it is the gateway of "
                                    f"subnet {sub['id']}.")
        out.append({"subnet_id": sub["id"], "ip_address": ipam.allocate(sub, used, ip)})
    return out


# ------------------------------------------------------------------ other attrs
def _mac(op: Op, net_id: str, value: Any, port_id: str) -> str:
    taken = {m for m, owner in alloc.macs(op, net_id).items() if owner != port_id}
    if value is not None:
        mac = a.mac(value, "mac_address")
        if mac in taken:
            raise ne.MacAddressInUse(f"Unable to complete operation for network {net_id}. "
                                     f"The mac address {mac} is in use.")
        return mac
    while True:
        b = random.getrandbits(24)
        mac = f"{MAC_PREFIX}:{b >> 16:02x}:{(b >> 8) & 0xff:02x}:{b & 0xff:02x}"
        if mac not in taken:
            return mac


def _pairs(value: Any) -> list[Data]:
    out = []
    for p in a.a_list(value, "allowed_address_pairs", unique=False):
        p = a.a_dict(p, "allowed_address_pairs", ("ip_address", "mac_address"),
                     ("ip_address",))
        out.append({"ip_address": a.ip_or_cidr(p["ip_address"], "allowed_address_pairs"),
                    "mac_address": None if p.get("mac_address") is None
                    else a.mac(p["mac_address"], "allowed_address_pairs")})
    return a.a_list(out, "allowed_address_pairs")


def _pairs_with_mac(pairs: list[Data], mac: str) -> list[Data]:
    return [{"ip_address": p["ip_address"], "mac_address": p["mac_address"] or mac}
            for p in pairs]


def _security_groups(op: Op, value: Any, project_id: str) -> list[str]:
    ids = a.a_list(value, "security_groups", a.uuid_str)
    for sid in ids:
        sg = op.get("security-groups", sid)
        if sg is None or not (op.ctx.is_admin or sg.get("project_id") == op.ctx.project_id) \
                or sg.get("project_id") != project_id:
            raise ne.SecurityGroupNotFound(f"Security group {sid} does not exist")
        op.txn.check(kind_of("security-groups"), sid)
    return ids


def find_host(op: Op, host: str) -> str | None:
    """The native host ``binding:host_id`` names (its hostname or id), if known."""
    if not host:
        return None
    for h in op.txn.scan(model.HOSTS):
        if host in (h["id"], h.get("name")):
            return h["id"]
    return None


def _binding(op: Op, body: Data, port: Data, action: str) -> None:
    for attr in ("binding:host_id", "binding:profile"):
        if attr in body and not op.ctx.binds_ports:  # Nova's (service or admin) to set
            raise a.policy(action, "port", attr)
    if "binding:host_id" in body:
        port["binding:host_id"] = a.string(body["binding:host_id"] or "", "binding:host_id")
    if "binding:vnic_type" in body:
        if body["binding:vnic_type"] != "normal":
            raise a.invalid("binding:vnic_type", f"'{body['binding:vnic_type']}' is not "
                            "supported: midoflow binds 'normal' (OVS) ports only")
        port["binding:vnic_type"] = "normal"
    if "binding:profile" in body:
        port["binding:profile"] = a.a_dict(body["binding:profile"] or {}, "binding:profile",
                                           body["binding:profile"] or {})


def _extra_dhcp_opts(value: Any, current: list[Data] | None = None) -> list[Data]:
    """Neutron's extra_dhcp_opt: a create's list, or an update merged into
    ``current`` as Neutron does (an option of the same name and IP version is
    replaced; a null opt_value removes it). IPv4 names are checked against what
    the agents' DHCP server knows (dnsmasq's names, or a number)."""
    out = [dict(o) for o in current or ()]
    for o in a.a_list(value, "extra_dhcp_opts", unique=False):
        o = a.a_dict(o, "extra_dhcp_opts", ("opt_name", "opt_value", "ip_version"),
                     ("opt_name", "opt_value"))
        version = a.integer(o.get("ip_version", 4), "extra_dhcp_opts", 4, 6)
        if version not in (4, 6):
            raise a.invalid("extra_dhcp_opts", f"ip_version {version} is not 4 or 6")
        name = a.string(o["opt_name"], "extra_dhcp_opts")
        val = None if o["opt_value"] is None else a.string(o["opt_value"], "extra_dhcp_opts",
                                                           dhcp.OPT_VALUE_MAX)
        if version == 4:
            try:
                name = dhcp.option_name(name, "opt_name")
            except Invalid as e:
                raise a.invalid("extra_dhcp_opts", e.message) from None
        out = [x for x in out if (x["opt_name"], x["ip_version"]) != (name, version)]
        if val is not None:
            out.append({"opt_name": name, "opt_value": val, "ip_version": version})
    return out


def _check_security(port: Data, *, create: bool = False) -> None:
    if not port["port_security_enabled"]:
        if port["security_groups"] and create:
            raise ne.BadRequest("Port security must be enabled and port must have an IP "
                                "address in order to use security groups.")
        if port["security_groups"]:
            raise ne.Conflict("Port has security group associated. Cannot disable port "
                              "security or ip address until security group is removed")
        if port["allowed_address_pairs"]:
            raise ne.Conflict("Address pairs require port security: enable "
                              "port_security_enabled or remove allowed_address_pairs")


# ------------------------------------------------------------------ staging
def _stage_native(op: Op, port: Data, old_native: Data | None) -> None:
    """Write the port's native bridge port (and its chains) as ``port`` says."""
    if not tr.has_native(port):
        return
    host = None if tr.is_router_port(port) else find_host(op, port.get("binding:host_id", ""))
    key = old_native["tunnel_key"] if old_native else tunnel_key(op.service)
    native = tr.port_to_native(port, key, host, old_native)
    if old_native is None:
        bridge = op.txn.get(model.BRIDGES, port["network_id"])
        if bridge is None:
            raise ne.NetworkNotFound(f"Network {port['network_id']} could not be found.")
        bridge["port_ids"] = list(bridge.get("port_ids") or ()) + [port["id"]]
        op.txn.put(model.BRIDGES, bridge)
        op.txn.create(model.PORTS, native)
    else:
        op.txn.put(model.PORTS, native)
    if host is not None:
        op.txn.touch(model.HOSTS, host)  # a concurrent delete of the host fails
    sync_port_security(op.txn, old_native, native)


def create_port_in(op: Op, body: dict, *, owner_ok: bool = False) -> dict:
    """Stage a Neutron port and its native bridge port (with its security chains)
    in ``op.txn``; return the stored Neutron port dict.

    ``body`` is a port create body (``network_id`` required; ``device_owner``
    ``network:router_interface*``/``network:router_gateway`` makes the native
    port interior, for the router code to link with ``peer_id``;
    ``network:floatingip`` makes none). ``owner_ok``: a trusted internal caller
    (router, floating-IP code): the network need only exist (not be visible to
    or owned by the caller) and ``project_id`` is taken as given."""
    body = a.body_of(body, "port")
    a.check_known(body, CREATE, READONLY)
    if "network_id" not in body:
        raise a.invalid("network_id", "network_id is required")
    if owner_ok:
        nid = a.uuid_str(body["network_id"], "network_id")
        net = op.get("networks", nid)
        if net is None:
            raise ne.NetworkNotFound(f"Network {nid} could not be found.")
        pid = body.get("project_id", body.get("tenant_id", op.ctx.project_id))
        pid = a.string(pid if pid is not None else "", "project_id")
    else:
        net = find_network(op, body["network_id"])
        pid = a.owner(op.ctx, body, "port")
        if not (op.ctx.is_admin or net.get("shared") or net.get("project_id") == pid):
            raise ne.PolicyNotAuthorized(f"Tenant {pid} not allowed to create port on this "
                                         "network")
    op.txn.check(kind_of("networks"), net["id"])  # a concurrent network delete fails
    owner = a.string(body.get("device_owner", "") or "", "device_owner")
    port: Data = {
        "id": a.new_id(),
        "network_id": net["id"],
        "name": a.string(body.get("name", "") or "", "name"),
        "description": a.string(body.get("description", "") or "", "description",
                                a.DESCRIPTION_MAX),
        "admin_state_up": a.boolean(body.get("admin_state_up", True), "admin_state_up"),
        "device_id": a.string(body.get("device_id", "") or "", "device_id"),
        "device_owner": owner,
        "port_security_enabled": a.boolean(
            body.get("port_security_enabled", net.get("port_security_enabled", True)),
            "port_security_enabled"),
        "binding:host_id": "",
        "binding:vnic_type": "normal",
        "binding:profile": {},
        "extra_dhcp_opts": _extra_dhcp_opts(body.get("extra_dhcp_opts") or []),
    }
    a.stamp_new(port, pid)
    port["mac_address"] = _mac(op, net["id"], body.get("mac_address"), port["id"])
    router = tr.is_router_port(port)
    port["fixed_ips"] = _fixed_ips(op, net, body.get("fixed_ips"), router)
    pairs = _pairs(body.get("allowed_address_pairs") or [])
    port["allowed_address_pairs"] = _pairs_with_mac(pairs, port["mac_address"])
    if body.get("security_groups") is not None:
        port["security_groups"] = _security_groups(op, body["security_groups"], pid)
    elif port["port_security_enabled"] and not owner.startswith("network:"):
        port["security_groups"] = [ensure_default(op, pid)]
    else:
        port["security_groups"] = []
    _check_security(port, create=True)
    _binding(op, body, port, "create")
    op.txn.create(KIND, port)
    # the index serialises allocations on the network: a port committed on it
    # since this request read the index makes this commit fail and re-run
    alloc.port_changed(op, None, port)
    _stage_native(op, port, None)
    return port


@on_port_deleted
def _release(op: Op, port: Data) -> None:
    """A port being deleted gives back its MAC and addresses."""
    alloc.port_changed(op, port, None)


def _active(op: Op, port_id: str) -> bool:
    """Whether an agent reports the port up: one read for the first port an Op
    views (a create, a show), every active port's name at once for a list."""
    cache = op.__dict__
    if "_active_ports" in cache:
        return port_id in cache["_active_ports"]
    if not cache.get("_viewed_one"):
        cache["_viewed_one"] = True
        return op.service.store.get_state(paths.port_active(port_id)) is not None
    cache["_active_ports"] = set(op.service.store.list_state(paths.PORTS_ACTIVE))
    return port_id in cache["_active_ports"]


class Ports(Collection):
    name = "ports"
    resource = "port"
    not_found = ne.PortNotFound

    def visible(self, ctx: Context, obj: Data, op: Op) -> bool:
        """Admin, Nova (the service role: it binds every project's ports), the
        port's project, or the owner of its network."""
        if ctx.binds_ports or obj.get("project_id") == ctx.project_id:
            return True
        net = op.get("networks", obj.get("network_id", ""))
        return net is not None and net.get("project_id") == ctx.project_id

    def create(self, op: Op, body: Any) -> Data:
        return create_port_in(op, body)

    def update(self, op: Op, obj: Data, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, UPDATE, READONLY + ("network_id", "project_id", "tenant_id"),
                      post=False)
        net = op.get("networks", obj["network_id"]) or {}
        if not (op.ctx.binds_ports or owns(op.ctx, obj) or owns(op.ctx, net)):
            raise a.policy("update", self.resource)
        new = dict(obj)
        for f, size in (("name", a.NAME_MAX), ("description", a.DESCRIPTION_MAX),
                        ("device_id", a.NAME_MAX), ("device_owner", a.NAME_MAX)):
            if f in body:
                new[f] = a.string(body[f] or "", f, size)
        if "admin_state_up" in body:
            new["admin_state_up"] = a.boolean(body["admin_state_up"], "admin_state_up")
        if "port_security_enabled" in body:
            new["port_security_enabled"] = a.boolean(body["port_security_enabled"],
                                                     "port_security_enabled")
        if "mac_address" in body and body["mac_address"] != obj["mac_address"]:
            if obj.get("binding:host_id"):
                raise ne.PortInUse(f"Unable to complete operation on port {obj['id']}: its "
                                   "MAC address cannot change while it is bound to a host")
            new["mac_address"] = _mac(op, obj["network_id"], body["mac_address"], obj["id"])
        if "fixed_ips" in body:
            new["fixed_ips"] = _fixed_ips(op, net, body["fixed_ips"],
                                          tr.is_router_port(new), keep=obj["fixed_ips"])
        if "allowed_address_pairs" in body:
            new["allowed_address_pairs"] = _pairs_with_mac(
                _pairs(body["allowed_address_pairs"] or []), new["mac_address"])
        if "security_groups" in body:
            new["security_groups"] = _security_groups(op, body["security_groups"] or [],
                                                      obj["project_id"])
        _check_security(new)
        if "extra_dhcp_opts" in body:
            new["extra_dhcp_opts"] = _extra_dhcp_opts(body["extra_dhcp_opts"] or [],
                                                      obj.get("extra_dhcp_opts") or [])
        _binding(op, body, new, "update")
        if new == obj:
            return obj
        a.stamp_update(new)
        op.txn.put(self.kind, new)
        if new["mac_address"] != obj["mac_address"] or new["fixed_ips"] != obj["fixed_ips"]:
            alloc.port_changed(op, obj, new)  # serialises MAC and address uniqueness
        _stage_native(op, new, op.txn.get(model.PORTS, obj["id"]))
        arp.port_changed(op, obj, new)  # routers forget addresses it gave up
        return new

    def delete(self, op: Op, obj: Data) -> None:
        net = op.get("networks", obj["network_id"]) or {}
        if not (owns(op.ctx, obj) or owns(op.ctx, net)):
            raise a.policy("delete", self.resource)
        owner = obj.get("device_owner") or ""
        if tr.is_router_port(obj):
            how = ("clear the router's external gateway" if owner == "network:router_gateway"
                   else "use remove_router_interface")
            raise ne.PortInUse(f"Port {obj['id']} cannot be deleted directly via the port "
                               f"API: has device owner {owner}; {how}.")
        delete_port_in(op, obj)

    def view(self, op_or_none: Op | None, obj: Data) -> Data:
        out = dict(obj)
        bound = bool(obj.get("binding:host_id"))
        out["binding:vif_type"] = "ovs" if bound else "unbound"
        out["binding:vif_details"] = dict(VIF_DETAILS) if bound else {}
        out["status"] = "DOWN"
        if op_or_none is not None and tr.has_native(obj) and _active(op_or_none, obj["id"]):
            out["status"] = "ACTIVE"
        if (obj.get("device_owner") or "").startswith("network:router_"):  # as for DVR
            out["status"] = "ACTIVE" if obj.get("admin_state_up", True) else "DOWN"
        if op_or_none is not None and not op_or_none.ctx.binds_ports:
            for attr in HIDDEN_BINDING:  # Neutron's policy shows them to admin and service
                out.pop(attr, None)
        return out


register(Ports())
