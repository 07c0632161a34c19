"""Local bindings: the bridge's interfaces as OVS reports them become the
virtual ports bound here (by ``iface-id`` or by a binding made through the
API), each activated in the store (``port_active``) or deactivated."""

from __future__ import annotations

import logging
from collections.abc import Callable

from midoflow.agent.cache import TopologyCache
from midoflow.agent.config import AgentConfig
from midoflow.agent.decision import BindingChange
from midoflow.errors import MidoflowError
from midoflow.model import PORT_EXTERIOR
from midoflow.store import paths
from midoflow.store.base import Store

LOG = logging.getLogger(__name__)


class Bindings:
    def __init__(self, cfg: AgentConfig, store: Store, cache: TopologyCache) -> None:
        self.cfg, self.store, self.cache = cfg, store, cache
        self.interfaces: dict[str, tuple[int, str | None]] = {}  # name -> (ofport, iface-id)
        self.bound: dict[str, int] = {}  # port id -> ofport
        self.tunnel_ofports: dict[str, int] = {}  # "vxlan"/"gre" -> ofport
        # Ports bound here whose flow state is still being recovered.
        self.recovering: set[str] = set()
        # Ports whose (de)activation the store refused (no quorum): see resync.
        self.unsynced: set[str] = set()

    def set_interfaces(self, interfaces: dict[str, tuple[int, str | None]]) -> bool:
        """Record the interfaces; whether the tunnel ports changed."""
        self.interfaces = dict(interfaces)
        old = self.tunnel_ofports
        self.tunnel_ofports = {}
        for kind, name in (("vxlan", self.cfg.vxlan_port), ("gre", self.cfg.gre_port)):
            if name in interfaces and interfaces[name][0] > 0:
                self.tunnel_ofports[kind] = interfaces[name][0]
        return old != self.tunnel_ofports

    def wanted(self) -> dict[str, int]:
        wanted: dict[str, int] = {}
        for _name, (ofport, iface_id) in self.interfaces.items():
            if ofport <= 0 or not iface_id:
                continue
            p = self.cache.ports.get(iface_id)
            if p is not None and p.type == PORT_EXTERIOR:
                wanted[p.id] = ofport
        for p in self.cache.ports.values():
            if p.host_id == self.cfg.host_id and p.interface_name in self.interfaces:
                ofport = self.interfaces[p.interface_name][0]
                if ofport > 0 and p.type == PORT_EXTERIOR:
                    wanted[p.id] = ofport
        return wanted

    def recompute(self) -> BindingChange:
        """What changed against the wanted bindings (now the bound ones);
        the ports added start recovering."""
        wanted = self.wanted()
        change = BindingChange()
        for pid, ofport in self.bound.items():
            if wanted.get(pid) != ofport:
                change.removed[pid] = ofport
        for pid, ofport in wanted.items():
            if self.bound.get(pid) != ofport:
                change.added[pid] = ofport
        if change.added or change.removed:
            self.bound = wanted
            self.recovering |= set(change.added)
        return change

    def port_of(self, ofport: int) -> str | None:
        for pid, op in self.bound.items():
            if op == ofport:
                return pid
        return None

    def tunnel_keys(self) -> dict[str, int]:
        """Local port id -> its tunnel key, for egress delivery flows."""
        return {pid: self.cache.ports[pid].tunnel_key
                for pid in self.bound if pid in self.cache.ports}

    def mark_active(self, port_id: str) -> None:
        try:
            self.store.put_state(paths.port_active(port_id), {"host_id": self.cfg.host_id})
            self.unsynced.discard(port_id)
        except MidoflowError as e:
            if port_id not in self.unsynced:
                LOG.warning("cannot mark port %s active (will retry): %s", port_id, e)
            self.unsynced.add(port_id)

    def deactivate(self, port_id: str) -> None:
        try:
            cur = self.store.get_state(paths.port_active(port_id))
            if cur and cur.get("host_id") == self.cfg.host_id:
                self.store.delete_state(paths.port_active(port_id))
            for (bridge_id, mac), pid in list(self.cache.macs.items()):
                if pid == port_id:
                    self.store.delete_state(paths.mac_entry(bridge_id, mac, port_id))
            self.unsynced.discard(port_id)
        except MidoflowError as e:
            if port_id not in self.unsynced:
                LOG.warning("cannot mark port %s inactive (will retry): %s", port_id, e)
            self.unsynced.add(port_id)

    def resync(self, activate: Callable[[str], None]) -> None:
        """Write again what the store refused, as things are now."""
        for pid in sorted(self.unsynced):
            if pid in self.bound:
                activate(pid)
            else:
                self.deactivate(pid)
