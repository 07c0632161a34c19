"""The topology service: validation and referential integrity over a Store.

Everything the API writes goes through here. Each request is one
``store.commit`` (all or nothing) whose ops carry the versions the checks were
made against, so a concurrent change of any object a decision depended on
makes the commit fail with Conflict instead of leaving a dangling reference.

Objects that others point at (a host bound by ports or listed in tunnel zones)
are "touched" (re-written unchanged, which bumps their version) in the commit
that adds the reference; deleting them is conditional on the version read when
the references were checked.

Chains, rules, port groups, IP address groups and security groups live in
:mod:`midoflow.service.chains`, BGP peers and networks in
:mod:`midoflow.service.bgp` (mixins of this class); the chains generated for
security groups and protected ports are computed by
:mod:`midoflow.service.security` and written in the same commit as the port,
bridge or group change that affects them (through :class:`~.txn.Txn`).
"""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.service import security as sec
from midoflow.service import trace as tracing
from midoflow.service import validate as v
from midoflow.service.bgp import BgpMixin
from midoflow.service.chains import FILTERS, ChainsMixin
from midoflow.service.txn import Txn
from midoflow.store import paths
from midoflow.store.base import Create, Data, Delete, Op, Store, Update

HOST_FIELDS = ("id", "name", "description")
TZ_FIELDS = ("id", "name", "type", "members")
BRIDGE_FIELDS = ("id", "tenant_id", "name", "admin_state_up", "port_ids", "inbound_filter_id",
                 "outbound_filter_id")
PORT_FIELDS = (
    "id",
    "device_id",
    "device_type",
    "type",
    "admin_state_up",
    "host_id",
    "interface_name",
    "peer_id",
    "name",
    "tunnel_key",
    "mac",
    "ip_address",
    "prefix_len",
    "inbound_filter_id",
    "outbound_filter_id",
    "fixed_ips",
    "security_group_ids",
    "port_security_enabled",
    "allowed_address_pairs",
)
# What a bridge port's create body may hold.
BRIDGE_PORT_CREATE = ("id", "type", "admin_state_up", "name", "mac", "fixed_ips",
                      "security_group_ids", "port_security_enabled", "allowed_address_pairs",
                      "inbound_filter_id", "outbound_filter_id")
ROUTER_FIELDS = ("id", "tenant_id", "name", "admin_state_up", "port_ids", "inbound_filter_id",
                 "outbound_filter_id")
ROUTE_FIELDS = (
    "id",
    "router_id",
    "dst_cidr",
    "src_cidr",
    "next_hop_port",
    "next_hop_gateway",
    "weight",
    "type",
)
# What makes two routes of a router the same route (weight is not part of it).
ROUTE_IDENTITY = ("dst_cidr", "src_cidr", "next_hop_port", "next_hop_gateway", "type")

_LABEL = {
    model.HOSTS: "host",
    model.TUNNEL_ZONES: "tunnel zone",
    model.BRIDGES: "bridge",
    model.PORTS: "port",
    model.ROUTERS: "router",
    model.ROUTES: "route",
    model.CHAINS: "chain",
    model.RULES: "rule",
    model.PORT_GROUPS: "port group",
    model.IP_ADDR_GROUPS: "IP address group",
    model.SECURITY_GROUPS: "security group",
    model.BGP_PEERS: "BGP peer",
    model.BGP_NETWORKS: "BGP network",
}


def _sort_key(obj: Data) -> tuple[str, str]:
    return (obj.get("name") or "", obj["id"])


class TopologyService(ChainsMixin, BgpMixin):
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ helpers
    def _get(self, kind: str, id: str) -> tuple[Data, int]:
        id = v.url_id(id, _LABEL[kind])
        try:
            return self.store.get(kind, id)
        except NotFound:
            raise NotFound(f"{_LABEL[kind]} {id} not found") from None

    def _get_ref(self, kind: str, id: str, field: str) -> tuple[Data, int]:
        """An object referenced from a request body: missing is Invalid (400)."""
        try:
            return self.store.get(kind, id)
        except NotFound:
            raise Invalid(f"{_LABEL[kind]} {id} does not exist", field) from None

    def _new_id(self, kind: str, body: dict[str, Any]) -> str:
        if "id" not in body:
            return v.new_id()
        oid = v.uuid_str(body["id"], "id")
        try:
            self.store.get(kind, oid)
        except NotFound:
            return oid
        raise Conflict(f"{_LABEL[kind]} {oid} already exists", "id")

    def _commit(self, ops: list[Op]) -> None:
        self.store.commit(ops)

    @staticmethod
    def _out(data: Data, version: int, fields: tuple[str, ...]) -> Data:
        out = {f: data.get(f) for f in fields}
        out["version"] = version
        return out

    @staticmethod
    def _check_version(body: dict[str, Any], current: int, what: str) -> None:
        want = v.version(body)
        if want is not None and want != current:
            raise Conflict(
                f"{what} is at version {current}, not {want}: read it again", "version"
            )

    def _touch(self, kind: str, data: Data, version: int) -> Update:
        return Update(kind, data, version)

    # --------------------------------------------------------------- hosts
    def _host_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, HOST_FIELDS)
        state = self.store.get_state(paths.host_alive(data["id"]))
        out["alive"] = state is not None
        out["state"] = state
        return out

    def list_hosts(self) -> list[Data]:
        return sorted(
            (self._host_out(d, ver) for d, ver in self.store.list(model.HOSTS)), key=_sort_key
        )

    def get_host(self, id: str) -> Data:
        return self._host_out(*self._get(model.HOSTS, id))

    def create_host(self, body: Any) -> Data:
        body = v.body_object(body)
        v.check_fields(body, HOST_FIELDS)
        data = {
            "name": v.string(v.require(body, "name"), "name", min_len=1),
            "description": v.string(body.get("description", ""), "description",
                                    v.DESCRIPTION_MAX),
        }
        data["id"] = self._new_id(model.HOSTS, body)
        self._commit([Create(model.HOSTS, data)])
        return self.get_host(data["id"])

    def update_host(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._get(model.HOSTS, id)
        v.check_fields(body, HOST_FIELDS + ("version", "alive", "state"))
        v.readonly(body, data, ("id",))
        if "alive" in body:
            v.boolean(body["alive"], "alive")  # computed: accepted and ignored
        if "state" in body and body["state"] is not None and not isinstance(body["state"], dict):
            raise Invalid("state must be an object or null", "state")
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name", min_len=1)
        if "description" in body:
            new["description"] = v.string(body["description"], "description",
                                          v.DESCRIPTION_MAX)
        self._check_version(body, ver, f"host {data['id']}")
        self._commit([Update(model.HOSTS, new, ver)])
        return self.get_host(data["id"])

    def delete_host(self, id: str) -> None:
        data, ver = self._get(model.HOSTS, id)
        hid = data["id"]
        bound = [p["id"] for p, _ in self.store.list(model.PORTS) if p.get("host_id") == hid]
        if bound:
            raise Conflict(f"host {hid} has bound ports ({', '.join(sorted(bound))}): "
                           "unbind them first")
        zones = [z["id"] for z, _ in self.store.list(model.TUNNEL_ZONES)
                 if any(m.get("host_id") == hid for m in z.get("members", ()))]
        if zones:
            raise Conflict(f"host {hid} is a member of tunnel zones ({', '.join(sorted(zones))})"
                           ": remove it from them first")
        self._commit([Delete(model.HOSTS, hid, ver)])

    def host_bindings(self, id: str) -> list[Data]:
        data, _ = self._get(model.HOSTS, id)
        return sorted(
            (self._port_out(p, pv) for p, pv in self.store.list(model.PORTS)
             if p.get("host_id") == data["id"]),
            key=_sort_key,
        )

    # -------------------------------------------------------- tunnel zones
    def _tz_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, TZ_FIELDS)
        out["members"] = [dict(m) for m in data.get("members", ())]
        return out

    def list_tunnel_zones(self) -> list[Data]:
        return sorted((self._tz_out(d, ver) for d, ver in self.store.list(model.TUNNEL_ZONES)),
                      key=_sort_key)

    def get_tunnel_zone(self, id: str) -> Data:
        return self._tz_out(*self._get(model.TUNNEL_ZONES, id))

    def _member(self, body: Any, prefix: str = "") -> tuple[dict[str, str], Data, int]:
        if not isinstance(body, dict):
            raise Invalid(f"{prefix or 'member'} must be an object", prefix or None)
        for k in body:
            if k not in ("host_id", "ip"):
                raise Invalid(f"unknown field {k!r}", prefix + k)
        for k in ("host_id", "ip"):
            if k not in body:
                raise Invalid(f"{prefix + k} is required", prefix + k)
        hid = v.uuid_str(body["host_id"], prefix + "host_id")
        ip = v.unicast_ipv4(body["ip"], prefix + "ip")
        host, hver = self._get_ref(model.HOSTS, hid, prefix + "host_id")
        return {"host_id": hid, "ip": ip}, host, hver

    def create_tunnel_zone(self, body: Any) -> Data:
        body = v.body_object(body)
        v.check_fields(body, TZ_FIELDS)
        data: Data = {
            "name": v.string(v.require(body, "name"), "name", min_len=1),
            "type": v.enum(body.get("type", model.TUNNEL_VXLAN), "type", model.TUNNEL_TYPES),
        }
        raw = body.get("members", [])
        if not isinstance(raw, list):
            raise Invalid("members must be a list", "members")
        members: list[dict[str, str]] = []
        ops: list[Op] = []
        for i, m in enumerate(raw):
            member, host, hver = self._member(m, f"members[{i}].")
            if any(x["host_id"] == member["host_id"] for x in members):
                raise Invalid(f"host {member['host_id']} is listed twice",
                              f"members[{i}].host_id")
            _check_tunnel_ip(members, member, f"members[{i}].ip")
            members.append(member)
            ops.append(self._touch(model.HOSTS, host, hver))
        data["members"] = members
        data["id"] = self._new_id(model.TUNNEL_ZONES, body)
        self._commit([Create(model.TUNNEL_ZONES, data)] + ops)
        return self.get_tunnel_zone(data["id"])

    def update_tunnel_zone(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._get(model.TUNNEL_ZONES, id)
        v.check_fields(body, TZ_FIELDS + ("version",))
        v.readonly(body, data, ("id", "members"))
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name", min_len=1)
        if "type" in body:
            new["type"] = v.enum(body["type"], "type", model.TUNNEL_TYPES)
        self._check_version(body, ver, f"tunnel zone {data['id']}")
        self._commit([Update(model.TUNNEL_ZONES, new, ver)])
        return self.get_tunnel_zone(data["id"])

    def delete_tunnel_zone(self, id: str) -> None:
        data, ver = self._get(model.TUNNEL_ZONES, id)
        self._commit([Delete(model.TUNNEL_ZONES, data["id"], ver)])

    def list_members(self, id: str) -> list[Data]:
        return self.get_tunnel_zone(id)["members"]

    def add_member(self, id: str, body: Any) -> Data:
        """Add {host_id, ip}; answers the zone."""
        zone, zver = self._get(model.TUNNEL_ZONES, id)
        body = v.body_object(body)
        member, host, hver = self._member(body)
        if any(m["host_id"] == member["host_id"] for m in zone.get("members", ())):
            raise Conflict(f"host {member['host_id']} is already in tunnel zone {zone['id']}",
                           "host_id")
        _check_tunnel_ip(zone.get("members", ()), member, "ip", zone["id"])
        new = dict(zone)
        new["members"] = list(zone.get("members", ())) + [member]
        self._commit([Update(model.TUNNEL_ZONES, new, zver),
                      self._touch(model.HOSTS, host, hver)])
        return self.get_tunnel_zone(zone["id"])

    def remove_member(self, id: str, host_id: str) -> Data:
        """Remove a host from a zone; answers the zone."""
        zone, zver = self._get(model.TUNNEL_ZONES, id)
        hid = v.url_id(host_id, "member")
        members = list(zone.get("members", ()))
        kept = [m for m in members if m["host_id"] != hid]
        if len(kept) == len(members):
            raise NotFound(f"host {hid} is not a member of tunnel zone {zone['id']}")
        new = dict(zone)
        new["members"] = kept
        self._commit([Update(model.TUNNEL_ZONES, new, zver)])
        return self.get_tunnel_zone(zone["id"])

    # ------------------------------------------------------------- bridges
    def _bridge_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, BRIDGE_FIELDS)
        out["port_ids"] = list(data.get("port_ids", ()))
        return out

    def list_bridges(self, tenant_id: str | None = None) -> list[Data]:
        return sorted(
            (self._bridge_out(d, ver) for d, ver in self.store.list(model.BRIDGES)
             if tenant_id is None or d.get("tenant_id") == tenant_id),
            key=_sort_key,
        )

    def get_bridge(self, id: str) -> Data:
        return self._bridge_out(*self._get(model.BRIDGES, id))

    def _create_device(self, kind: str, body: Any) -> str:
        """A bridge or router: name, tenant, admin state, filters."""
        body = v.body_object(body)
        v.check_fields(body, ("id", "tenant_id", "name", "admin_state_up") + FILTERS)
        data = {
            "name": v.string(body.get("name", ""), "name"),
            "tenant_id": v.string(body.get("tenant_id", ""), "tenant_id"),
            "admin_state_up": v.boolean(body.get("admin_state_up", True), "admin_state_up"),
            "port_ids": [],
        }
        txn = Txn(self.store)
        self._apply_filters(txn, body, data, None)
        data["id"] = self._new_id(kind, body)
        txn.create(kind, data)
        txn.commit()
        return data["id"]

    def _update_device(self, kind: str, id: str, body: Any, fields: tuple[str, ...]) -> str:
        body = v.body_object(body)
        data, ver = self._get(kind, id)
        v.check_fields(body, fields + ("version",))
        v.readonly(body, data, ("id", "port_ids"))
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name")
        if "tenant_id" in body:
            new["tenant_id"] = v.string(body["tenant_id"], "tenant_id")
        if "admin_state_up" in body:
            new["admin_state_up"] = v.boolean(body["admin_state_up"], "admin_state_up")
        txn = Txn(self.store)
        txn.seen(kind, data, ver)
        self._apply_filters(txn, body, new, data)
        self._check_version(body, ver, f"{_LABEL[kind]} {data['id']}")
        txn.put(kind, new)
        if kind == model.BRIDGES and new.get("tenant_id") != data.get("tenant_id"):
            # the generated chains of its protected ports carry the tenant
            for pid in new.get("port_ids", ()):
                port = txn.get(model.PORTS, pid)
                if port is not None and sec.port_managed(port):
                    self._sync_port(txn, pid)
        txn.commit()
        return data["id"]

    def create_bridge(self, body: Any) -> Data:
        return self.get_bridge(self._create_device(model.BRIDGES, body))

    def update_bridge(self, id: str, body: Any) -> Data:
        return self.get_bridge(self._update_device(model.BRIDGES, id, body, BRIDGE_FIELDS))

    def delete_bridge(self, id: str) -> None:
        data, ver = self._get(model.BRIDGES, id)
        if data.get("port_ids"):
            raise Conflict(f"bridge {data['id']} still has {len(data['port_ids'])} port(s): "
                           "delete them first")
        self._commit([Delete(model.BRIDGES, data["id"], ver)])

    def list_bridge_ports(self, id: str) -> list[Data]:
        bridge, _ = self._get(model.BRIDGES, id)
        return sorted(
            (self._port_out(p, pv) for p, pv in self.store.list(model.PORTS)
             if p.get("device_id") == bridge["id"]),
            key=_sort_key,
        )

    # --------------------------------------------------------------- ports
    def list_ports(self) -> list[Data]:
        return sorted((self._port_out(d, ver) for d, ver in self.store.list(model.PORTS)),
                      key=_sort_key)

    def get_port(self, id: str) -> Data:
        return self._port_out(*self._get(model.PORTS, id))

    def _port_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, PORT_FIELDS)
        out["fixed_ips"] = list(data.get("fixed_ips") or ())
        out["security_group_ids"] = list(data.get("security_group_ids") or ())
        out["port_security_enabled"] = bool(data.get("port_security_enabled", False))
        out["allowed_address_pairs"] = self._pairs_out(data.get("allowed_address_pairs"))
        return out

    def create_port(self, bridge_id: str, body: Any) -> Data:
        """A port on a bridge; its id joins the bridge's port_ids in the same commit,
        with the chains its security groups or port security need."""
        bridge, bver = self._get(model.BRIDGES, bridge_id)
        body = v.body_object(body)
        v.check_fields(body, BRIDGE_PORT_CREATE)
        data: Data = {
            "device_id": bridge["id"],
            "device_type": model.DEVICE_BRIDGE,
            "type": v.enum(body.get("type", model.PORT_EXTERIOR), "type",
                           (model.PORT_EXTERIOR, model.PORT_INTERIOR)),
            "admin_state_up": v.boolean(body.get("admin_state_up", True), "admin_state_up"),
            "host_id": None,
            "interface_name": None,
            "peer_id": None,
            "name": v.string(body.get("name", ""), "name"),
            "mac": None,
            "ip_address": None,
            "prefix_len": None,
        }
        txn = Txn(self.store)
        txn.seen(model.BRIDGES, bridge, bver)
        self._port_security_fields(txn, body, data, None)
        data["id"] = self._new_id(model.PORTS, body)
        new_bridge = dict(bridge)
        new_bridge["port_ids"] = list(bridge.get("port_ids", ())) + [data["id"]]
        txn.put(model.BRIDGES, new_bridge)
        self._check_port_conflicts(txn, body, data, None)
        data["tunnel_key"] = self._tunnel_key()
        txn.create(model.PORTS, data)
        self._sync_port_security(txn, None, data)
        txn.commit()
        return self.get_port(data["id"])

    def update_port(self, id: str, body: Any) -> Data:
        """Name, admin state, filters and (bridge ports) the port-security fields;
        the generated chains follow in the same commit."""
        body = v.body_object(body)
        data, ver = self._get(model.PORTS, id)
        v.check_fields(body, PORT_FIELDS + ("version",))
        fixed = ("id", "device_id", "device_type", "type", "tunnel_key", "host_id",
                 "interface_name", "peer_id", "ip_address", "prefix_len")
        if data.get("device_type") == model.DEVICE_ROUTER:
            fixed += ("mac",)
        v.readonly(body, data, fixed)
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name")
        if "admin_state_up" in body:
            new["admin_state_up"] = v.boolean(body["admin_state_up"], "admin_state_up")
        txn = Txn(self.store)
        txn.seen(model.PORTS, data, ver)
        self._port_security_fields(txn, body, new, data)
        self._check_version(body, ver, f"port {data['id']}")
        self._check_port_conflicts(txn, body, new, data)
        txn.put(model.PORTS, new)
        self._sync_port_security(txn, data, new)
        txn.commit()
        return self.get_port(data["id"])

    def delete_port(self, id: str) -> None:
        """Delete a port, atomically: it leaves its bridge or router and its port
        groups, its peer is unlinked, the routes through it (next_hop_port) are
        deleted, and so are its BGP peers and networks and its generated chains
        (its security groups' address groups lose its addresses). Refused while
        a rule matches on it."""
        port, pver = self._get(model.PORTS, id)
        pid = port["id"]
        txn = Txn(self.store)
        txn.seen(model.PORTS, port, pver)
        users = sorted(r["id"] for r in txn.list(model.RULES)
                       if pid in (r.get("in_ports") or ()) or pid in (r.get("out_ports") or ()))
        if users:
            raise Conflict(f"port {pid} is matched by rules {', '.join(users)} "
                           "(in_ports/out_ports): change them first")
        txn.delete(model.PORTS, pid)
        kind = (model.ROUTERS if port.get("device_type") == model.DEVICE_ROUTER
                else model.BRIDGES)
        device = txn.get(kind, port["device_id"])
        if device is not None:
            device["port_ids"] = [p for p in device.get("port_ids", ()) if p != pid]
            txn.put(kind, device)
        for r in txn.list(model.ROUTES):
            if r.get("next_hop_port") == pid:
                txn.delete(model.ROUTES, r["id"])
        self._delete_port_bgp(txn, pid)
        if port.get("peer_id"):
            peer = txn.get(model.PORTS, port["peer_id"])
            if peer is not None and peer.get("peer_id") == pid:
                peer["peer_id"] = None
                txn.put(model.PORTS, peer)
        for g in txn.list(model.PORT_GROUPS):
            if pid in g.get("port_ids", ()):
                g["port_ids"] = [p for p in g["port_ids"] if p != pid]
                txn.put(model.PORT_GROUPS, g)
        self._sync_port_security(txn, port, None)
        txn.commit()

    def _tunnel_key(self) -> int:
        """A new port's tunnel key (one counter for bridge and router ports)."""
        key = self.store.next_counter("tunnel_key")
        if not model.TUNNEL_KEY_MIN <= key <= model.TUNNEL_KEY_MAX:
            raise Conflict("no tunnel key left for a new port (24-bit space exhausted)")
        return key

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
        port, pver = self._get(model.PORTS, port_id)
        body = v.body_object(body)
        v.check_fields(body, ("host_id", "interface_name"))
        host_id = v.uuid_str(v.require(body, "host_id"), "host_id")
        iface = v.interface_name(v.require(body, "interface_name"))
        return self._bind(port, pver, host_id, iface, in_body=True)

    def bind_port(self, port_id: str, host_id: str, interface_name: str) -> Data:
        port, pver = self._get(model.PORTS, port_id)
        host_id = v.uuid_str(host_id, "host_id")
        iface = v.interface_name(interface_name)
        return self._bind(port, pver, host_id, iface, in_body=False)

    def _bind(self, port: Data, pver: int, host_id: str, iface: str, in_body: bool) -> Data:
        if port.get("type") != model.PORT_EXTERIOR:
            raise Conflict(f"port {port['id']} is {port.get('type')}: only exterior ports "
                           "are bound to a host interface", "type")
        if in_body:
            host, hver = self._get_ref(model.HOSTS, host_id, "host_id")
        else:
            host, hver = self._get(model.HOSTS, host_id)
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
        self._commit([Update(model.PORTS, new, pver), self._touch(model.HOSTS, host, hver)])
        return self.get_port(port["id"])

    def unbind_port(self, port_id: str) -> Data:
        port, pver = self._get(model.PORTS, port_id)
        if not port.get("host_id"):
            raise Conflict(f"port {port['id']} is not bound")
        new = dict(port)
        new["host_id"] = None
        new["interface_name"] = None
        self._commit([Update(model.PORTS, new, pver)])
        return self.get_port(port["id"])

    # --------------------------------------------------------------- links
    def set_link(self, port_id: str, body: Any) -> Data:
        """PUT /ports/{id}/link with {peer_id}."""
        port, pver = self._get(model.PORTS, port_id)
        body = v.body_object(body)
        v.check_fields(body, ("peer_id",))
        peer_id = v.uuid_str(v.require(body, "peer_id"), "peer_id")
        return self._link(port, pver, peer_id)

    def link_port(self, port_id: str, peer_id: str) -> Data:
        port, pver = self._get(model.PORTS, port_id)
        return self._link(port, pver, v.uuid_str(peer_id, "peer_id"))

    def _link(self, port: Data, pver: int, peer_id: str) -> Data:
        if peer_id == port["id"]:
            raise Invalid("a port cannot be linked to itself", "peer_id")
        peer, peer_ver = self._get_ref(model.PORTS, peer_id, "peer_id")
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
        self._commit([Update(model.PORTS, new, pver), Update(model.PORTS, new_peer, peer_ver)])
        return self.get_port(port["id"])

    def unlink_port(self, port_id: str) -> Data:
        port, pver = self._get(model.PORTS, port_id)
        if not port.get("peer_id"):
            raise Conflict(f"port {port['id']} is not linked")
        new = dict(port)
        new["peer_id"] = None
        self._commit([Update(model.PORTS, new, pver)] + self._unlink_peer_ops(port))
        return self.get_port(port["id"])

    # ------------------------------------------------------------- routers
    def _router_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, ROUTER_FIELDS)
        out["port_ids"] = list(data.get("port_ids", ()))
        return out

    def list_routers(self, tenant_id: str | None = None) -> list[Data]:
        return sorted(
            (self._router_out(d, ver) for d, ver in self.store.list(model.ROUTERS)
             if tenant_id is None or d.get("tenant_id") == tenant_id),
            key=_sort_key,
        )

    def get_router(self, id: str) -> Data:
        return self._router_out(*self._get(model.ROUTERS, id))

    def create_router(self, body: Any) -> Data:
        return self.get_router(self._create_device(model.ROUTERS, body))

    def update_router(self, id: str, body: Any) -> Data:
        return self.get_router(self._update_device(model.ROUTERS, id, body, ROUTER_FIELDS))

    def delete_router(self, id: str) -> None:
        """Refused while the router has ports; its routes go with it, atomically.

        Every route write touches its router, so a route added meanwhile makes
        this commit fail (stale version) instead of leaving the route behind."""
        data, ver = self._get(model.ROUTERS, id)
        if data.get("port_ids"):
            raise Conflict(f"router {data['id']} still has {len(data['port_ids'])} port(s): "
                           "delete them first")
        ops: list[Op] = [Delete(model.ROUTERS, data["id"], ver)]
        ops += [Delete(model.ROUTES, r["id"], rv) for r, rv in self.store.list(model.ROUTES)
                if r.get("router_id") == data["id"]]
        self._commit(ops)

    def _router_ports(self, router_id: str) -> list[tuple[Data, int]]:
        return [(p, pv) for p, pv in self.store.list(model.PORTS)
                if p.get("device_id") == router_id]

    def list_router_ports(self, id: str) -> list[Data]:
        router, _ = self._get(model.ROUTERS, id)
        return sorted((self._port_out(p, pv) for p, pv in self._router_ports(router["id"])),
                      key=_sort_key)

    def create_router_port(self, router_id: str, body: Any) -> Data:
        """A port on a router, with its MAC and its address on the attached network.

        409 if its network overlaps the network of another port of the router,
        or its MAC is already used by one. The port joins the router's port_ids
        in the same commit, conditional on the router's version (so two
        concurrent creations cannot both pass the overlap check)."""
        router, rver = self._get(model.ROUTERS, router_id)
        body = v.body_object(body)
        v.check_fields(body, ("id", "type", "admin_state_up", "name", "ip_address",
                              "prefix_len", "mac") + FILTERS)
        ip = v.unicast_ipv4(v.require(body, "ip_address"), "ip_address")
        plen = v.integer(v.require(body, "prefix_len"), "prefix_len", 1, 32)
        net = v.network(ip, plen)
        if plen <= 30 and ip in (str(net.network), str(net.broadcast)):
            which = "network" if ip == str(net.network) else "broadcast"
            raise Invalid(f"ip_address {ip} is the {which} address of {net}", "ip_address")
        data: Data = {
            "device_id": router["id"],
            "device_type": model.DEVICE_ROUTER,
            "type": v.enum(body.get("type", model.PORT_EXTERIOR), "type",
                           (model.PORT_EXTERIOR, model.PORT_INTERIOR)),
            "admin_state_up": v.boolean(body.get("admin_state_up", True), "admin_state_up"),
            "host_id": None,
            "interface_name": None,
            "peer_id": None,
            "name": v.string(body.get("name", ""), "name"),
            "mac": v.mac(body["mac"], "mac") if "mac" in body else None,
            "ip_address": ip,
            "prefix_len": plen,
        }
        txn = Txn(self.store)
        txn.seen(model.ROUTERS, router, rver)
        self._apply_filters(txn, body, data, None)
        others = [p for p, _ in self._router_ports(router["id"])]
        # a MAC answers ARP for a router: two routers' ports never share one
        router_ports = [p for p, _ in self.store.list(model.PORTS)
                        if p.get("device_type") == model.DEVICE_ROUTER]
        used_macs = {p.get("mac") for p in router_ports}
        for other in router_ports:
            if data["mac"] is not None and other.get("mac") == data["mac"] and \
                    other.get("device_id") != router["id"]:
                raise Conflict(f"MAC {data['mac']} is already used by port {other['id']} of "
                               f"router {other.get('device_id')}", "mac")
        for other in others:
            if data["mac"] is not None and other.get("mac") == data["mac"]:
                raise Conflict(f"MAC {data['mac']} is already used by port {other['id']} of "
                               f"router {router['id']}", "mac")
            if other.get("ip_address") and other.get("prefix_len") is not None:
                onet = v.network(other["ip_address"], other["prefix_len"])
                if v.overlaps(net, onet):
                    raise Conflict(f"network {net} overlaps {onet} of port {other['id']} on "
                                   f"router {router['id']}", "ip_address")
        while data["mac"] is None or data["mac"] in used_macs:
            data["mac"] = v.random_mac()
        data["id"] = self._new_id(model.PORTS, body)
        data["tunnel_key"] = self._tunnel_key()
        new_router = dict(router)
        new_router["port_ids"] = list(router.get("port_ids", ())) + [data["id"]]
        txn.create(model.PORTS, data)
        txn.put(model.ROUTERS, new_router)
        txn.commit()
        return self.get_port(data["id"])

    # -------------------------------------------------------------- routes
    @staticmethod
    def _route_out(data: Data, version: int) -> Data:
        return TopologyService._out(data, version, ROUTE_FIELDS)

    def list_routes(self) -> list[Data]:
        return sorted((self._route_out(d, ver) for d, ver in self.store.list(model.ROUTES)),
                      key=_route_key)

    def list_router_routes(self, id: str) -> list[Data]:
        router, _ = self._get(model.ROUTERS, id)
        return sorted((self._route_out(d, ver) for d, ver in self.store.list(model.ROUTES)
                       if d.get("router_id") == router["id"]), key=_route_key)

    def get_route(self, id: str) -> Data:
        return self._route_out(*self._get(model.ROUTES, id))

    def _check_hop(self, router_id: str, rtype: str, port_id: str | None,
                   gateway: str | None) -> None:
        """next_hop_port is a port of this router (required for normal routes);
        next_hop_gateway, when given, lies on that port's network."""
        if port_id is None:
            if rtype == model.ROUTE_NORMAL:
                raise Invalid("a normal route needs next_hop_port (a port of the router)",
                              "next_hop_port")
            if gateway is not None:
                raise Invalid("next_hop_gateway needs next_hop_port", "next_hop_gateway")
            return
        port, _ = self._get_ref(model.PORTS, port_id, "next_hop_port")
        if port.get("device_id") != router_id:
            raise Invalid(f"port {port_id} is not a port of router {router_id}",
                          "next_hop_port")
        if gateway is None:
            return
        if port.get("ip_address") is None or port.get("prefix_len") is None:
            raise Invalid(f"port {port_id} has no address, so no gateway can be reached "
                          "through it", "next_hop_gateway")
        net = v.network(port["ip_address"], port["prefix_len"])
        if gateway not in net:
            raise Invalid(f"next_hop_gateway {gateway} is not on the network {net} of port "
                          f"{port_id}", "next_hop_gateway")
        if gateway == port["ip_address"]:
            raise Invalid(f"next_hop_gateway {gateway} is the address of port {port_id} "
                          "itself", "next_hop_gateway")
        if net.prefixlen <= 30 and gateway in (str(net.network), str(net.broadcast)):
            raise Invalid(f"next_hop_gateway {gateway} is the network or broadcast address "
                          f"of {net}", "next_hop_gateway")

    def _check_duplicate(self, route: Data) -> None:
        for other, _ in self.store.list(model.ROUTES):
            if (other["id"] != route["id"] and other.get("router_id") == route["router_id"]
                    and all(other.get(f) == route.get(f) for f in ROUTE_IDENTITY)):
                raise Conflict(f"router {route['router_id']} already has this route "
                               f"({other['id']})")

    def create_route(self, router_id: str, body: Any) -> Data:
        router, rver = self._get(model.ROUTERS, router_id)
        body = v.body_object(body)
        v.check_fields(body, ("id", "dst_cidr", "src_cidr", "type", "next_hop_port",
                              "next_hop_gateway", "weight"))
        data: Data = {
            "router_id": router["id"],
            "dst_cidr": v.cidr(v.require(body, "dst_cidr"), "dst_cidr"),
            "src_cidr": v.cidr(body.get("src_cidr", "0.0.0.0/0"), "src_cidr"),
            "next_hop_port": _opt(body, "next_hop_port", v.uuid_str),
            "next_hop_gateway": _opt(body, "next_hop_gateway", v.unicast_ipv4),
            "weight": v.integer(body.get("weight", model.ROUTE_DEFAULT_WEIGHT), "weight",
                                0, 65535),
            "type": v.enum(body.get("type", model.ROUTE_NORMAL), "type", model.ROUTE_TYPES),
        }
        self._check_hop(router["id"], data["type"], data["next_hop_port"],
                        data["next_hop_gateway"])
        data["id"] = self._new_id(model.ROUTES, body)
        self._check_duplicate(data)
        # Touching the router serialises route writes per router (duplicates) and
        # makes a concurrent delete of the router, or of the next-hop port (which
        # updates the router's port_ids), fail instead of leaving a dangling route.
        self._commit([Create(model.ROUTES, data), self._touch(model.ROUTERS, router, rver)])
        return self.get_route(data["id"])

    def update_route(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._get(model.ROUTES, id)
        v.check_fields(body, ROUTE_FIELDS + ("version",))
        v.readonly(body, data, ("id", "router_id", "dst_cidr", "src_cidr"))
        new = dict(data)
        if "weight" in body:
            new["weight"] = v.integer(body["weight"], "weight", 0, 65535)
        if "type" in body:
            new["type"] = v.enum(body["type"], "type", model.ROUTE_TYPES)
        if "next_hop_port" in body:
            new["next_hop_port"] = _opt(body, "next_hop_port", v.uuid_str)
        if "next_hop_gateway" in body:
            new["next_hop_gateway"] = _opt(body, "next_hop_gateway", v.unicast_ipv4)
        router, rver = self._get(model.ROUTERS, data["router_id"])
        self._check_hop(router["id"], new["type"], new.get("next_hop_port"),
                        new.get("next_hop_gateway"))
        self._check_version(body, ver, f"route {data['id']}")
        self._check_duplicate(new)
        self._commit([Update(model.ROUTES, new, ver), self._touch(model.ROUTERS, router, rver)])
        return self.get_route(data["id"])

    def delete_route(self, id: str) -> None:
        data, ver = self._get(model.ROUTES, id)
        self._commit([Delete(model.ROUTES, data["id"], ver)])

    # --------------------------------------------------------------- trace
    def trace(self, body: Any) -> Data:
        """Simulate a packet through the topology as it is now; changes nothing."""
        return tracing.trace(self.store, body)

    # -------------------------------------------------------------- status
    def status(self) -> Data:
        hosts = []
        seen = set()
        for h in self.list_hosts():
            seen.add(h["id"])
            hosts.append(_status_host(h["id"], h["name"], h["state"]))
        for hid in self.store.list_state(paths.HOSTS_ALIVE):
            if hid not in seen and v.UUID_RE.fullmatch(hid):
                state = self.store.get_state(paths.host_alive(hid))
                if state is not None:
                    hosts.append(_status_host(hid, str(state.get("hostname") or ""), state))
        return {"store": self.store.health(), "hosts": hosts}


def _opt(body: dict[str, Any], field: str, check) -> Any:
    """An optional, nullable field: None when absent or null, else ``check``ed."""
    value = body.get(field)
    return None if value is None else check(value, field)


def _check_tunnel_ip(members, member: dict[str, str], field: str,
                     zone_id: str | None = None) -> None:
    """Conflict if another member of the zone has the same tunnel IP."""
    for m in members:
        if m.get("ip") == member["ip"] and m.get("host_id") != member["host_id"]:
            where = f" of tunnel zone {zone_id}" if zone_id else ""
            raise Conflict(f"tunnel IP {member['ip']} is already used by host {m['host_id']}"
                           f"{where}: each member needs its own", field)


def _route_key(route: Data) -> tuple:
    """Routing-table order: longest destination prefix first, then address, source,
    weight (lowest first)."""
    dst = v.network(*route["dst_cidr"].split("/"))
    src = v.network(*route["src_cidr"].split("/"))
    return (-dst.prefixlen, dst.first, -src.prefixlen, src.first, route["weight"], route["id"])


def _status_host(hid: str, name: str, state: Data | None) -> Data:
    state = state if isinstance(state, dict) else None
    ips = (state or {}).get("tunnel_ips") or {}
    return {
        "id": hid,
        "name": name,
        "alive": state is not None,
        "ovs_connected": bool((state or {}).get("ovs_connected", False)),
        "tunnel_ips": {str(k): str(val) for k, val in ips.items()} if isinstance(ips, dict)
        else {},
        # what the agent's per-port bounds refused (issue 9), as it published it
        "protection": prot if isinstance(prot := (state or {}).get("protection"), dict) else {},
    }

