"""Hosts and tunnel zones.

Objects that others point at (a host bound by ports or listed in tunnel zones)
are "touched" (re-written unchanged, which bumps their version) in the commit
that adds the reference; deleting them is conditional on the version read when
the references were checked.
"""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.service import body as gen
from midoflow.service import refs
from midoflow.service import validate as v
from midoflow.service.context import Ctx, sort_key
from midoflow.service.ports import port_out
from midoflow.service.txn import Txn
from midoflow.store import paths
from midoflow.store.base import Create, Data, Op, Update


@refs.special(model.HOSTS)
def _deleting_host(txn: Txn, host: Data) -> None:
    """Refused while ports are bound to it or it is a tunnel-zone member."""
    hid = host["id"]
    bound = [p["id"] for p in txn.list(model.PORTS) if p.get("host_id") == hid]
    if bound:
        raise Conflict(f"host {hid} has bound ports ({', '.join(sorted(bound))}): "
                       "unbind them first")
    zones = [z["id"] for z in txn.list(model.TUNNEL_ZONES)
             if any(m.get("host_id") == hid for m in z.get("members", ()))]
    if zones:
        raise Conflict(f"host {hid} is a member of tunnel zones ({', '.join(sorted(zones))})"
                       ": remove it from them first")


class Hosts:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    # --------------------------------------------------------------- hosts
    def _host_out(self, data: Data, version: int) -> Data:
        out = self.ctx.out(model.HOSTS, data, version)
        state = self.store.get_state(paths.host_alive(data["id"]))
        out["alive"] = state is not None
        out["state"] = state
        return out

    def list_hosts(self) -> list[Data]:
        return sorted((self._host_out(d, ver) for d, ver in self.store.list(model.HOSTS)),
                      key=sort_key)

    def get_host(self, id: str) -> Data:
        return self._host_out(*self.ctx.get(model.HOSTS, id))

    def create_host(self, body: Any) -> Data:
        body, data = gen.create(model.HOSTS, body)
        data["id"] = self.ctx.new_id(model.HOSTS, body)
        self.ctx.commit([Create(model.HOSTS, data)])
        return self.get_host(data["id"])

    def update_host(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(model.HOSTS, id)
        new = gen.update(model.HOSTS, body, data)  # alive and state: checked, ignored
        self.ctx.check_version(body, ver, f"host {data['id']}")
        self.ctx.commit([Update(model.HOSTS, new, ver)])
        return self.get_host(data["id"])

    def delete_host(self, id: str) -> None:
        self.ctx.delete(model.HOSTS, *self.ctx.get(model.HOSTS, id))

    def host_bindings(self, id: str) -> list[Data]:
        data, _ = self.ctx.get(model.HOSTS, id)
        return sorted((port_out(self.ctx, p, pv) for p, pv in self.store.list(model.PORTS)
                       if p.get("host_id") == data["id"]), key=sort_key)

    # -------------------------------------------------------- tunnel zones
    def _tz_out(self, data: Data, version: int) -> Data:
        return self.ctx.out(model.TUNNEL_ZONES, data, version)

    def list_tunnel_zones(self) -> list[Data]:
        return sorted((self._tz_out(d, ver) for d, ver in self.store.list(model.TUNNEL_ZONES)),
                      key=sort_key)

    def get_tunnel_zone(self, id: str) -> Data:
        return self._tz_out(*self.ctx.get(model.TUNNEL_ZONES, id))

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
        host, hver = self.ctx.get_ref(model.HOSTS, hid, prefix + "host_id")
        return {"host_id": hid, "ip": ip}, host, hver

    def create_tunnel_zone(self, body: Any) -> Data:
        body, data = gen.create(model.TUNNEL_ZONES, body)
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
            ops.append(self.ctx.touch(model.HOSTS, host, hver))
        data["members"] = members
        data["id"] = self.ctx.new_id(model.TUNNEL_ZONES, body)
        self.ctx.commit([Create(model.TUNNEL_ZONES, data)] + ops)
        return self.get_tunnel_zone(data["id"])

    def update_tunnel_zone(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(model.TUNNEL_ZONES, id)
        new = gen.update(model.TUNNEL_ZONES, body, data)
        self.ctx.check_version(body, ver, f"tunnel zone {data['id']}")
        self.ctx.commit([Update(model.TUNNEL_ZONES, new, ver)])
        return self.get_tunnel_zone(data["id"])

    def delete_tunnel_zone(self, id: str) -> None:
        self.ctx.delete(model.TUNNEL_ZONES, *self.ctx.get(model.TUNNEL_ZONES, id))

    def list_members(self, id: str) -> list[Data]:
        return self.get_tunnel_zone(id)["members"]

    def add_member(self, id: str, body: Any) -> Data:
        """Add {host_id, ip}; answers the zone."""
        zone, zver = self.ctx.get(model.TUNNEL_ZONES, id)
        body = v.body_object(body)
        member, host, hver = self._member(body)
        if any(m["host_id"] == member["host_id"] for m in zone.get("members", ())):
            raise Conflict(f"host {member['host_id']} is already in tunnel zone {zone['id']}",
                           "host_id")
        _check_tunnel_ip(zone.get("members", ()), member, "ip", zone["id"])
        new = dict(zone)
        new["members"] = list(zone.get("members", ())) + [member]
        self.ctx.commit([Update(model.TUNNEL_ZONES, new, zver),
                         self.ctx.touch(model.HOSTS, host, hver)])
        return self.get_tunnel_zone(zone["id"])

    def remove_member(self, id: str, host_id: str) -> Data:
        """Remove a host from a zone; answers the zone."""
        zone, zver = self.ctx.get(model.TUNNEL_ZONES, id)
        hid = v.url_id(host_id, "member")
        members = list(zone.get("members", ()))
        kept = [m for m in members if m["host_id"] != hid]
        if len(kept) == len(members):
            raise NotFound(f"host {hid} is not a member of tunnel zone {zone['id']}")
        new = dict(zone)
        new["members"] = kept
        self.ctx.commit([Update(model.TUNNEL_ZONES, new, zver)])
        return self.get_tunnel_zone(zone["id"])


def _check_tunnel_ip(members, member: dict[str, str], field: str,
                     zone_id: str | None = None) -> None:
    """Conflict if another member of the zone has the same tunnel IP."""
    for m in members:
        if m.get("ip") == member["ip"] and m.get("host_id") != member["host_id"]:
            where = f" of tunnel zone {zone_id}" if zone_id else ""
            raise Conflict(f"tunnel IP {member['ip']} is already used by host {m['host_id']}"
                           f"{where}: each member needs its own", field)
