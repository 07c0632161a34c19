"""Bridges, their ports, and every port's binding, link and port-security settings.

A port joins its device's ``port_ids`` in the commit that creates it, with the
chains its security groups or port security need (:mod:`.sync`). Routers and
their ports reuse the device and port helpers here (:mod:`.routers`).
"""

from __future__ import annotations

import copy
from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.kinds.filters import FILTERS
from midoflow.service import body as gen
from midoflow.service import dhcp, refs
from midoflow.service import security as sec
from midoflow.service import validate as v
from midoflow.service.context import Ctx, label, ref, sort_key
from midoflow.service.sync import apply_filters, sync_port, sync_port_security
from midoflow.service.txn import Txn
from midoflow.store.base import Data, Op, Update

SECURITY_FIELDS = ("fixed_ips", "security_group_ids", "port_security_enabled",
                   "allowed_address_pairs")


def port_out(ctx: Ctx, data: Data, version: int) -> Data:
    out = ctx.out(model.PORTS, data, version)
    out["port_security_enabled"] = bool(data.get("port_security_enabled", False))
    out["allowed_address_pairs"] = pairs_out(data.get("allowed_address_pairs"))
    return out


def pairs_out(pairs: Any) -> list[Data]:
    return [{"ip_address": p["ip_address"], "mac_address": p.get("mac_address")}
            for p in pairs or ()]


def tunnel_key(ctx: Ctx) -> int:
    """A new port's tunnel key (one counter for bridge and router ports)."""
    key = ctx.store.next_counter("tunnel_key")
    if not model.TUNNEL_KEY_MIN <= key <= model.TUNNEL_KEY_MAX:
        raise Conflict("no tunnel key left for a new port (24-bit space exhausted)")
    return key


def create_device(ctx: Ctx, kind: str, body: Any) -> str:
    """A bridge or router: name, tenant, admin state, filters."""
    body, data = gen.create(kind, body)
    txn = Txn(ctx.store)
    apply_filters(txn, body, data, None)
    data["id"] = ctx.new_id(kind, body)
    txn.create(kind, data)
    txn.commit()
    return data["id"]


def update_device(ctx: Ctx, kind: str, id: str, body: Any) -> str:
    body = v.body_object(body)
    data, ver = ctx.get(kind, id)
    new = gen.update(kind, body, data)
    txn = Txn(ctx.store)
    txn.seen(kind, data, ver)
    apply_filters(txn, body, new, data)
    ctx.check_version(body, ver, f"{label(kind)} {data['id']}")
    txn.put(kind, new)
    if kind == model.BRIDGES and new.get("tenant_id") != data.get("tenant_id"):
        # the generated chains of its protected ports carry the tenant
        for pid in new.get("port_ids", ()):
            port = txn.get(model.PORTS, pid)
            if port is not None and sec.port_managed(port):
                sync_port(txn, pid)
    txn.commit()
    return data["id"]


@refs.special(model.BRIDGES)
def _deleting_bridge(txn: Txn, bridge: Data) -> None:
    if bridge.get("port_ids"):
        raise Conflict(f"bridge {bridge['id']} still has {len(bridge['port_ids'])} port(s): "
                       "delete them first")


@refs.special(model.PORTS)
def _deleting_port(txn: Txn, port: Data) -> None:
    """Refused while a rule matches on it; its generated chains go with it."""
    pid = port["id"]
    users = sorted(r["id"] for r in txn.list(model.RULES)
                   if pid in (r.get("in_ports") or ()) or pid in (r.get("out_ports") or ()))
    if users:
        raise Conflict(f"port {pid} is matched by rules {', '.join(users)} "
                       "(in_ports/out_ports): change them first")
    sync_port_security(txn, port, None)


class Ports:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def _port_out(self, data: Data, version: int) -> Data:
        return port_out(self.ctx, data, version)

    # ------------------------------------------------------------- bridges
    def list_bridges(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self.ctx.out(model.BRIDGES, d, ver)
                       for d, ver in self.ctx.listed(model.BRIDGES, tenant_id)), key=sort_key)

    def get_bridge(self, id: str) -> Data:
        return self.ctx.out(model.BRIDGES, *self.ctx.get(model.BRIDGES, id))

    def create_bridge(self, body: Any) -> Data:
        return self.get_bridge(create_device(self.ctx, model.BRIDGES, body))

    def update_bridge(self, id: str, body: Any) -> Data:
        return self.get_bridge(update_device(self.ctx, model.BRIDGES, id, body))

    def delete_bridge(self, id: str) -> None:
        self.ctx.delete(model.BRIDGES, *self.ctx.get(model.BRIDGES, id))

    def list_bridge_ports(self, id: str) -> list[Data]:
        bridge, _ = self.ctx.get(model.BRIDGES, id)
        return sorted((self._port_out(p, pv) for p, pv in self.store.list(model.PORTS)
                       if p.get("device_id") == bridge["id"]), key=sort_key)

    # --------------------------------------------------------------- ports
    def list_ports(self) -> list[Data]:
        return sorted((self._port_out(d, ver) for d, ver in self.store.list(model.PORTS)),
                      key=sort_key)

    def get_port(self, id: str) -> Data:
        return self._port_out(*self.ctx.get(model.PORTS, id))

    def create_port(self, bridge_id: str, body: Any) -> Data:
        """A port on a bridge; its id joins the bridge's port_ids in the same commit,
        with the chains its security groups or port security need."""
        bridge, bver = self.ctx.get(model.BRIDGES, bridge_id)
        body, data = gen.create(model.PORTS, body)
        data.update(device_id=bridge["id"], device_type=model.DEVICE_BRIDGE)
        txn = Txn(self.store)
        txn.seen(model.BRIDGES, bridge, bver)
        self._security_fields(txn, body, data, None)
        dhcp.check_port_fields(body, data)
        data["id"] = self.ctx.new_id(model.PORTS, body)
        new_bridge = dict(bridge)
        new_bridge["port_ids"] = list(bridge.get("port_ids", ())) + [data["id"]]
        txn.put(model.BRIDGES, new_bridge)
        self._check_conflicts(txn, body, data, None)
        data["tunnel_key"] = tunnel_key(self.ctx)
        txn.create(model.PORTS, data)
        sync_port_security(txn, None, data)
        txn.commit()
        return self.get_port(data["id"])

    def update_port(self, id: str, body: Any) -> Data:
        """Name, admin state, filters and (bridge ports) the port-security fields;
        the generated chains follow in the same commit."""
        body = v.body_object(body)
        data, ver = self.ctx.get(model.PORTS, id)
        new = gen.update(model.PORTS, body, data)
        if data.get("device_type") == model.DEVICE_ROUTER:
            gen.readonly(model.PORTS, body, data, ("mac",))  # fixed at creation
        txn = Txn(self.store)
        txn.seen(model.PORTS, data, ver)
        self._security_fields(txn, body, new, data)
        dhcp.check_port_fields(body, new)
        self.ctx.check_version(body, ver, f"port {data['id']}")
        self._check_conflicts(txn, body, new, data)
        txn.put(model.PORTS, new)
        sync_port_security(txn, data, new)
        txn.commit()
        return self.get_port(data["id"])

    def delete_port(self, id: str) -> None:
        """Delete a port, atomically: it leaves its bridge or router and its port
        groups, its peer is unlinked, the routes through it (next_hop_port) are
        deleted, and so are its BGP peers and networks (all as declared) and its
        generated chains (its security groups' address groups lose its addresses).
        Refused while a rule matches on it."""
        self.ctx.delete(model.PORTS, *self.ctx.get(model.PORTS, id))

    def _unlink_peer_ops(self, port: Data) -> list[Op]:
        if not port.get("peer_id"):
            return []
        try:
            peer, peer_ver = self.store.get(model.PORTS, port["peer_id"])
        except NotFound:
            return []
        if peer.get("peer_id") != port["id"]:
            return []
        new_peer = dict(peer)
        new_peer["peer_id"] = None
        return [Update(model.PORTS, new_peer, peer_ver)]

    # ------------------------------------------------------------ bindings
    def set_binding(self, port_id: str, body: Any) -> Data:
        """PUT /ports/{id}/binding with {host_id, interface_name}."""
        port, pver = self.ctx.get(model.PORTS, port_id)
        body = v.body_object(body)
        v.check_fields(body, ("host_id", "interface_name"))
        host_id = v.uuid_str(v.require(body, "host_id"), "host_id")
        iface = v.interface_name(v.require(body, "interface_name"))
        return self._bind(port, pver, host_id, iface, in_body=True)

    def bind_port(self, port_id: str, host_id: str, interface_name: str) -> Data:
        port, pver = self.ctx.get(model.PORTS, port_id)
        host_id = v.uuid_str(host_id, "host_id")
        iface = v.interface_name(interface_name)
        return self._bind(port, pver, host_id, iface, in_body=False)

    def _bind(self, port: Data, pver: int, host_id: str, iface: str, in_body: bool) -> Data:
        if port.get("type") != model.PORT_EXTERIOR:
            raise Conflict(f"port {port['id']} is {port.get('type')}: only exterior ports "
                           "are bound to a host interface", "type")
        if in_body:
            host, hver = self.ctx.get_ref(model.HOSTS, host_id, "host_id")
        else:
            host, hver = self.ctx.get(model.HOSTS, host_id)
        if port.get("host_id"):
            raise Conflict(f"port {port['id']} is already bound to {port.get('interface_name')} "
                           f"on host {port['host_id']}: unbind it first")
        for other, _ in self.store.list(model.PORTS):
            if other.get("host_id") == host_id and other.get("interface_name") == iface:
                raise Conflict(f"interface {iface} on host {host_id} is already bound to port "
                               f"{other['id']}", "interface_name")
        new = dict(port)
        new["host_id"] = host_id
        new["interface_name"] = iface
        # Touching the host serialises bindings per host (interface uniqueness)
        # and makes a concurrent delete of the host fail.
        self.ctx.commit([Update(model.PORTS, new, pver), self.ctx.touch(model.HOSTS, host, hver)])
        return self.get_port(port["id"])

    def unbind_port(self, port_id: str) -> Data:
        port, pver = self.ctx.get(model.PORTS, port_id)
        if not port.get("host_id"):
            raise Conflict(f"port {port['id']} is not bound")
        new = dict(port)
        new["host_id"] = None
        new["interface_name"] = None
        self.ctx.commit([Update(model.PORTS, new, pver)])
        return self.get_port(port["id"])

    # --------------------------------------------------------------- links
    def set_link(self, port_id: str, body: Any) -> Data:
        """PUT /ports/{id}/link with {peer_id}."""
        port, pver = self.ctx.get(model.PORTS, port_id)
        body = v.body_object(body)
        v.check_fields(body, ("peer_id",))
        peer_id = v.uuid_str(v.require(body, "peer_id"), "peer_id")
        return self._link(port, pver, peer_id)

    def link_port(self, port_id: str, peer_id: str) -> Data:
        port, pver = self.ctx.get(model.PORTS, port_id)
        return self._link(port, pver, v.uuid_str(peer_id, "peer_id"))

    def _link(self, port: Data, pver: int, peer_id: str) -> Data:
        if peer_id == port["id"]:
            raise Invalid("a port cannot be linked to itself", "peer_id")
        peer, peer_ver = self.ctx.get_ref(model.PORTS, peer_id, "peer_id")
        for p in (port, peer):
            if p.get("type") != model.PORT_INTERIOR:
                raise Conflict(f"port {p['id']} is {p.get('type')}: only interior ports are "
                               "linked", "type" if p is port else "peer_id")
        if port["device_id"] == peer["device_id"]:
            raise Invalid(f"ports {port['id']} and {peer_id} are on the same device", "peer_id")
        for p in (port, peer):
            if p.get("peer_id"):
                raise Conflict(f"port {p['id']} is already linked to {p['peer_id']}: "
                               "unlink it first", None if p is port else "peer_id")
        new, new_peer = dict(port), dict(peer)
        new["peer_id"] = peer_id
        new_peer["peer_id"] = port["id"]
        self.ctx.commit([Update(model.PORTS, new, pver),
                         Update(model.PORTS, new_peer, peer_ver)])
        return self.get_port(port["id"])

    def unlink_port(self, port_id: str) -> Data:
        port, pver = self.ctx.get(model.PORTS, port_id)
        if not port.get("peer_id"):
            raise Conflict(f"port {port['id']} is not linked")
        new = dict(port)
        new["peer_id"] = None
        self.ctx.commit([Update(model.PORTS, new, pver)] + self._unlink_peer_ops(port))
        return self.get_port(port["id"])

    # ------------------------------------------------------- port security
    def _security_fields(self, txn: Txn, body: dict[str, Any], new: Data,
                         old: Data | None) -> None:
        """mac, fixed_ips, security_group_ids, port_security_enabled,
        allowed_address_pairs and the filters of a port (400s and the 409s
        that depend only on the body and the referenced objects)."""
        for f, default in zip(SECURITY_FIELDS, ([], [], False, []), strict=True):
            new.setdefault(f, copy.deepcopy(default))
        if new.get("device_type") == model.DEVICE_ROUTER:
            cur = {f: new[f] for f in SECURITY_FIELDS}
            cur["allowed_address_pairs"] = pairs_out(new["allowed_address_pairs"])
            for f in SECURITY_FIELDS:
                if f in body and v._norm(body[f]) != v._norm(cur[f]):
                    raise Invalid(f"{f} is for bridge ports (a router port's address is "
                                  "ip_address)", f)
        else:
            if "mac" in body:
                new["mac"] = v.optional(body, "mac", v.mac)
            if "fixed_ips" in body:
                new["fixed_ips"] = v.ipv4_list(body["fixed_ips"], "fixed_ips")
            if "security_group_ids" in body:
                new["security_group_ids"] = v.id_list(body["security_group_ids"],
                                                      "security_group_ids")
                for sid in new["security_group_ids"]:
                    ref(txn, model.SECURITY_GROUPS, sid, "security_group_ids")
            if "port_security_enabled" in body:
                new["port_security_enabled"] = v.boolean(body["port_security_enabled"],
                                                         "port_security_enabled")
            if "allowed_address_pairs" in body:
                new["allowed_address_pairs"] = _pairs(body["allowed_address_pairs"])
            if new["port_security_enabled"] and not new.get("mac"):
                raise Invalid("port security needs the port's mac",
                              "mac" if "mac" in body else "port_security_enabled")
            if new["allowed_address_pairs"] and not new["port_security_enabled"]:
                raise Invalid("allowed_address_pairs need port_security_enabled",
                              "allowed_address_pairs" if "allowed_address_pairs" in body
                              else "port_security_enabled")
        apply_filters(txn, body, new, old)

    @staticmethod
    def _check_conflicts(txn: Txn, body: dict[str, Any], new: Data,
                         old: Data | None) -> None:
        """409s of a bridge port: its MAC and fixed IPs are unique on the bridge;
        a protected port's filters are its own chains (not user chains)."""
        if new.get("device_type") == model.DEVICE_BRIDGE:
            changed = old is None or old.get("mac") != new.get("mac") or \
                (old.get("fixed_ips") or []) != new["fixed_ips"]
            if changed and (new.get("mac") or new["fixed_ips"]):
                for other in txn.list(model.PORTS):
                    if other["id"] == new["id"] or other.get("device_id") != new["device_id"]:
                        continue
                    if new.get("mac") and other.get("mac") == new["mac"]:
                        raise Conflict(f"MAC {new['mac']} is already used by port "
                                       f"{other['id']} of bridge {new['device_id']}", "mac")
                    both = set(new["fixed_ips"]) & set(other.get("fixed_ips") or ())
                    if both:
                        raise Conflict(f"{min(both)} is already a fixed IP of port "
                                       f"{other['id']} of bridge {new['device_id']}",
                                       "fixed_ips")
                txn.touch(model.BRIDGES, new["device_id"])  # serialises the uniqueness
        if not sec.port_managed(new):
            return
        for f, mine in zip(FILTERS, sec.port_filters(new), strict=True):
            if new.get(f) not in (None, mine):
                field = f if f in body else (
                    "security_group_ids" if "security_group_ids" in body
                    else "port_security_enabled")
                raise Conflict(f"port {new['id']} filters through chain {new[f]}, set by "
                               f"hand; security groups and port security need the port's "
                               f"own chains: set {f} to null in the same request", field)


def _pairs(value: Any) -> list[Data]:
    out = []
    for i, p in enumerate(v.a_list(value, "allowed_address_pairs")):
        where = f"allowed_address_pairs[{i}]."
        if not isinstance(p, dict):
            raise Invalid("allowed_address_pairs items must be objects",
                          "allowed_address_pairs")
        for k in p:
            if k not in ("ip_address", "mac_address"):
                raise Invalid(f"unknown field {k!r}", where + k)
        if "ip_address" not in p:
            raise Invalid(f"{where}ip_address is required", where + "ip_address")
        ip = p["ip_address"]
        if isinstance(ip, str) and "/" in ip:
            ip = v.cidr(ip, where + "ip_address")
        else:
            ip = v.unicast_ipv4(ip, where + "ip_address")
        mac = p.get("mac_address")
        out.append({"ip_address": ip,
                    "mac_address": None if mac is None else v.mac(mac, where + "mac_address")})
    return v.unique(out, "allowed_address_pairs")
