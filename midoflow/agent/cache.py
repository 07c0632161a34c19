"""The agent's local copy of the topology, kept current by store watches.

It is the simulation's TopologyView, answers where a port lives and how to
reach that host, and turns each change into the set of flow tags it
invalidates (see :mod:`midoflow.sim.result`). Uses the Store interface only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from midoflow import model
from midoflow.model import BRIDGES, HOSTS, PORTS, TUNNEL_ZONES, Bridge, Port, TunnelZone
from midoflow.sim.result import bridge_tag, flood_tag, mac_tag, port_tag
from midoflow.store import paths
from midoflow.store.base import Data, Store

LOG = logging.getLogger(__name__)


def host_tag(host_id: str) -> str:
    """Flows that tunnel to a host depend on its tunnel address."""
    return f"host:{host_id}"


class TopologyCache:
    def __init__(
        self,
        store: Store,
        on_invalidate: Callable[[set[str]], None],
        on_port_change: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.on_invalidate = on_invalidate
        self.on_port_change = on_port_change or (lambda _pid: None)
        self.ports: dict[str, Port] = {}
        self.bridges: dict[str, Bridge] = {}
        self.hosts: dict[str, Data] = {}
        self.zones: dict[str, TunnelZone] = {}
        self.port_hosts: dict[str, str] = {}  # active port -> host id
        self.host_state: dict[str, Data] = {}
        self.macs: dict[tuple[str, str], str] = {}  # (bridge, mac) -> port
        self._watched: set[tuple[str, str]] = set()

    # ---- TopologyView -----------------------------------------------------
    def port(self, port_id: str) -> Port | None:
        return self.ports.get(port_id)

    def bridge(self, bridge_id: str) -> Bridge | None:
        return self.bridges.get(bridge_id)

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        return self.macs.get((bridge_id, mac))

    # ---- locations --------------------------------------------------------
    def tunnel_to(self, local_host: str, remote_host: str) -> tuple[str, str] | None:
        """(remote tunnel IP, tunnel type) through a zone both hosts are in."""
        for zone in sorted(self.zones.values(), key=lambda z: z.id):
            members = {m.host_id: m.ip for m in zone.members}
            if local_host in members and remote_host in members:
                return members[remote_host], zone.type
        return None

    # ---- watches ----------------------------------------------------------
    def start(self) -> None:
        for kind in (TUNNEL_ZONES, HOSTS, BRIDGES, PORTS):
            self.store.watch_kind(kind, self._kind_cb(kind))
        self.store.watch_state_children(paths.PORTS_ACTIVE, self._active_ports)
        self.store.watch_state_children(paths.HOSTS_ALIVE, self._alive_hosts)

    def _kind_cb(self, kind: str):
        def cb(ids: list[str]) -> None:
            for oid in ids:
                if (kind, oid) not in self._watched:
                    self._watched.add((kind, oid))
                    self.store.watch_object(kind, oid, self._object_cb(kind, oid))

        return cb

    def _object_cb(self, kind: str, oid: str):
        def cb(data: Data | None, _version: int):
            try:
                self._apply(kind, oid, data)
            except Exception:  # a bad object must not kill the watch thread
                LOG.exception("cannot apply %s %s", kind, oid)
            if data is None:
                self._watched.discard((kind, oid))
                return False
            return None

        return cb

    def _apply(self, kind: str, oid: str, data: Data | None) -> None:
        tags: set[str] = set()
        if kind == PORTS:
            old = self.ports.get(oid)
            new = model.Port.from_dict(data) if data else None
            if new:
                self.ports[oid] = new
            else:
                self.ports.pop(oid, None)
            if old != new:
                tags.add(port_tag(oid))
                for p in (old, new):
                    if p:
                        tags.add(flood_tag(p.device_id))
                        if p.peer_id:
                            tags.add(port_tag(p.peer_id))
            self.on_invalidate(tags)
            self.on_port_change(oid)
            return
        if kind == BRIDGES:
            old_b = self.bridges.get(oid)
            new_b = model.Bridge.from_dict(data) if data else None
            if new_b:
                self.bridges[oid] = new_b
                if old_b is None:
                    self.store.watch_state_children(paths.mac_table(oid), self._mac_cb(oid))
            else:
                self.bridges.pop(oid, None)
            if old_b is None or new_b is None:
                tags |= {bridge_tag(oid), flood_tag(oid)}
            elif old_b != new_b:
                if old_b.port_ids != new_b.port_ids:
                    tags.add(flood_tag(oid))
                if (old_b.admin_state_up, old_b.name) != (new_b.admin_state_up, new_b.name):
                    tags.add(bridge_tag(oid))
        elif kind == TUNNEL_ZONES:
            old_z = self.zones.get(oid)
            new_z = model.TunnelZone.from_dict(data) if data else None
            if new_z:
                self.zones[oid] = new_z
            else:
                self.zones.pop(oid, None)
            before = {(m.host_id, m.ip) for m in old_z.members} if old_z else set()
            after = {(m.host_id, m.ip) for m in new_z.members} if new_z else set()
            if old_z and new_z and old_z.type != new_z.type:
                before = after | before
            tags |= {host_tag(h) for h, _ in before ^ after}
        elif kind == HOSTS:
            if data:
                self.hosts[oid] = data
            else:
                self.hosts.pop(oid, None)
        if tags:
            self.on_invalidate(tags)

    def _mac_cb(self, bridge_id: str):
        def cb(children: list[str]):
            if bridge_id not in self.bridges:
                return False
            new: dict[str, str] = {}
            for name in children:
                entry = paths.parse_mac_entry(name)
                if entry:
                    mac, pid = entry
                    # Two entries for one MAC (a VM moving): prefer an active port.
                    if mac not in new or pid in self.port_hosts:
                        new[mac] = pid
            old = {m: p for (b, m), p in self.macs.items() if b == bridge_id}
            changed = {m for m in old.keys() | new.keys() if old.get(m) != new.get(m)}
            for m in changed:
                if m in new:
                    self.macs[(bridge_id, m)] = new[m]
                else:
                    self.macs.pop((bridge_id, m), None)
            if changed:
                self.on_invalidate({mac_tag(bridge_id, m) for m in changed})
            return None

        return cb

    def _active_ports(self, children: list[str]) -> None:
        for pid in children:
            if pid not in self.port_hosts:
                self.store.watch_state(paths.port_active(pid), self._active_cb(pid))

    def _active_cb(self, pid: str):
        def cb(data: Data | None):
            old = self.port_hosts.get(pid)
            new = data.get("host_id") if data else None
            if new:
                self.port_hosts[pid] = new
            else:
                self.port_hosts.pop(pid, None)
            if old != new:
                tags = {port_tag(pid)}
                p = self.ports.get(pid)
                if p:
                    tags.add(flood_tag(p.device_id))
                self.on_invalidate(tags)
            return None if new else False

        return cb

    def _alive_hosts(self, children: list[str]) -> None:
        for hid in children:
            if hid not in self.host_state:
                self.host_state[hid] = {}
                self.store.watch_state(paths.host_alive(hid), self._alive_cb(hid))

    def _alive_cb(self, hid: str):
        def cb(data: Data | None):
            if data is None:
                self.host_state.pop(hid, None)
                self.on_invalidate({host_tag(hid)})
                return False
            self.host_state[hid] = data
            return None

        return cb
