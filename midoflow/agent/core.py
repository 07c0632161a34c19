"""The agent's logic, free of os-ken: local bindings, simulation of table
misses, translation of a simulation result into datapath actions, and which
installed flows each change invalidates. The os-ken app (midoflow.apps.agent)
only turns these decisions into OpenFlow messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from midoflow.agent.cache import TopologyCache, host_tag
from midoflow.agent.config import AgentConfig
from midoflow.agent.flows import FlowIndex
from midoflow.errors import MidoflowError
from midoflow.model import HOSTS, PORT_EXTERIOR, TUNNEL_GRE
from midoflow.sim.packet import Packet
from midoflow.sim.result import Result, port_tag
from midoflow.sim.simulator import simulate
from midoflow.store import paths
from midoflow.store.base import Create, Store

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    ofport: int


@dataclass(frozen=True)
class Tunnel:
    key: int
    remote_ip: str
    ofport: int


@dataclass
class Decision:
    """What to install for one table miss."""

    actions: list[Output | Tunnel]
    match_fields: frozenset[str]
    tags: frozenset[str]
    result: Result
    cookie: int = 0


@dataclass
class BindingChange:
    added: dict[str, int] = field(default_factory=dict)  # port id -> ofport
    removed: dict[str, int] = field(default_factory=dict)


class AgentCore:
    def __init__(
        self,
        cfg: AgentConfig,
        store: Store,
        on_invalidate: Callable[[set[int]], None] = lambda cookies: None,
        on_bindings: Callable[[BindingChange], None] = lambda change: None,
        spawn: Callable[..., object] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.flows = FlowIndex()
        self.on_invalidate = on_invalidate
        self.on_bindings = on_bindings
        self.spawn = spawn or (lambda f, *a: f(*a))
        self.cache = TopologyCache(store, self._invalidate_tags, self._port_changed)
        self.interfaces: dict[str, tuple[int, str | None]] = {}  # name -> (ofport, iface-id)
        self.bindings: dict[str, int] = {}  # port id -> ofport
        self.tunnel_ofports: dict[str, int] = {}  # "vxlan"/"gre" -> ofport
        self.ovs_connected = False
        self.stats = {"packet_in": 0, "simulated": 0, "dropped": 0, "malformed": 0,
                      "invalidated": 0, "learned": 0}
        self.started_at = time.time()

    # ---- lifecycle --------------------------------------------------------
    def start(self) -> None:
        self._register_host()
        self.cache.start()

    def _register_host(self) -> None:
        try:
            self.store.get(HOSTS, self.cfg.host_id)
        except MidoflowError:
            try:
                self.store.commit([Create(HOSTS, {"id": self.cfg.host_id,
                                                  "name": self.cfg.host_name or self.cfg.host_id,
                                                  "description": ""})])
            except MidoflowError as e:
                LOG.info("host %s not created (%s)", self.cfg.host_id, e)
        self.publish_state()

    def publish_state(self) -> None:
        state = {
            "host_id": self.cfg.host_id,
            "hostname": self.cfg.host_name,
            "tunnel_ips": {"underlay": self.cfg.tunnel_ip},
            "ovs_connected": self.ovs_connected,
            "started_at": self.started_at,
            "bound_ports": sorted(self.bindings),
        }
        try:
            self.store.put_state(paths.host_alive(self.cfg.host_id), state, ephemeral=True)
        except MidoflowError as e:
            LOG.warning("cannot publish host state: %s", e)

    def set_connected(self, connected: bool) -> None:
        self.ovs_connected = connected
        if not connected:
            self.flows.clear()
        self.publish_state()

    # ---- invalidation -----------------------------------------------------
    def _invalidate_tags(self, tags: set[str]) -> None:
        if not tags:
            return
        cookies = self.flows.invalidate(tags)
        if cookies:
            self.stats["invalidated"] += len(cookies)
            LOG.debug("invalidate %d flow(s) for %s", len(cookies), sorted(tags))
            self.on_invalidate(cookies)

    def flow_removed(self, cookie: int) -> None:
        self.flows.remove(cookie)

    # ---- bindings ---------------------------------------------------------
    def set_interfaces(self, interfaces: dict[str, tuple[int, str | None]]) -> None:
        """The bridge's interfaces as OVS reports them: name -> (ofport, iface-id)."""
        self.interfaces = dict(interfaces)
        old_tunnels = self.tunnel_ofports
        self.tunnel_ofports = {}
        for kind, name in (("vxlan", self.cfg.vxlan_port), ("gre", self.cfg.gre_port)):
            if name in interfaces and interfaces[name][0] > 0:
                self.tunnel_ofports[kind] = interfaces[name][0]
        change = self.recompute_bindings()
        if old_tunnels != self.tunnel_ofports:
            # Tunnel ports (re)appeared: redo every binding's delivery flows and
            # every flow that may have skipped a tunnel.
            rest = {p: o for p, o in self.bindings.items() if p not in change.added}
            if rest:
                self.on_bindings(BindingChange(added=rest))
            everything = set(self.flows.tags_of)
            self.flows.clear()
            if everything:
                self.on_invalidate(everything)

    def _port_changed(self, _port_id: str) -> None:
        self.recompute_bindings()

    def wanted_bindings(self) -> dict[str, int]:
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

    def recompute_bindings(self) -> BindingChange:
        wanted = self.wanted_bindings()
        change = BindingChange()
        for pid, ofport in self.bindings.items():
            if wanted.get(pid) != ofport:
                change.removed[pid] = ofport
        for pid, ofport in wanted.items():
            if self.bindings.get(pid) != ofport:
                change.added[pid] = ofport
        if not change.added and not change.removed:
            return change
        self.bindings = wanted
        for pid in change.removed:
            if pid not in wanted:
                self.spawn(self._deactivate, pid)
        for pid in change.added:
            self.spawn(self._activate, pid)
        self._invalidate_tags({port_tag(p) for p in (*change.added, *change.removed)})
        self.on_bindings(change)
        self.spawn(self.publish_state)
        return change

    def _activate(self, port_id: str) -> None:
        try:
            self.store.put_state(paths.port_active(port_id), {"host_id": self.cfg.host_id})
        except MidoflowError as e:
            LOG.warning("cannot mark port %s active: %s", port_id, e)

    def _deactivate(self, port_id: str) -> None:
        try:
            cur = self.store.get_state(paths.port_active(port_id))
            if cur and cur.get("host_id") == self.cfg.host_id:
                self.store.delete_state(paths.port_active(port_id))
            for (bridge_id, mac), pid in list(self.cache.macs.items()):
                if pid == port_id:
                    self.store.delete_state(paths.mac_entry(bridge_id, mac, port_id))
        except MidoflowError as e:
            LOG.warning("cannot mark port %s inactive: %s", port_id, e)

    def tunnel_keys(self) -> dict[str, int]:
        """Local port id -> its tunnel key, for egress delivery flows."""
        return {pid: self.cache.ports[pid].tunnel_key
                for pid in self.bindings if pid in self.cache.ports}

    # ---- table misses -----------------------------------------------------
    def port_of(self, ofport: int) -> str | None:
        for pid, op in self.bindings.items():
            if op == ofport:
                return pid
        return None

    def handle_miss(
        self, ofport: int, eth_src: str, eth_dst: str, eth_type: int
    ) -> Decision | None:
        """Simulate a packet that missed the flow table. None: not ours."""
        self.stats["packet_in"] += 1
        in_port = self.port_of(ofport)
        if in_port is None:
            return None
        pkt = Packet(in_port=in_port, eth_src=eth_src.lower(), eth_dst=eth_dst.lower(),
                     eth_type=eth_type)
        result = simulate(self.cache, pkt)
        self.stats["simulated"] += 1
        if result.learned:
            self.spawn(self._learn, result.learned)
        decision = self.translate(result)
        decision.cookie = self.flows.add(decision.tags)
        if not decision.actions:
            self.stats["dropped"] += 1
        return decision

    def translate(self, result: Result) -> Decision:
        actions: list[Output | Tunnel] = []
        tags = set(result.tags)
        for pid in result.out_ports:
            tags.add(port_tag(pid))
            if pid in self.bindings:
                actions.append(Output(self.bindings[pid]))
                continue
            port = self.cache.ports.get(pid)
            host = self.cache.port_hosts.get(pid)
            if port is None or host is None:
                continue  # not bound anywhere: its activation invalidates this flow
            tags.add(host_tag(host))
            if host == self.cfg.host_id:
                continue  # stale state of ours: the binding table is the truth here
            route = self.cache.tunnel_to(self.cfg.host_id, host)
            if route is None:
                continue
            ip, ttype = route
            ofport = self.tunnel_ofports.get("gre" if ttype == TUNNEL_GRE else "vxlan")
            if ofport is None:
                continue
            actions.append(Tunnel(port.tunnel_key, ip, ofport))
        return Decision(actions, result.match_fields, frozenset(tags), result)

    def _learn(self, learned) -> None:
        for bridge_id, mac, port_id in learned:
            if self.cache.macs.get((bridge_id, mac)) == port_id:
                continue
            try:
                # Drop older entries for this MAC (a VM that moved), then record ours.
                for name in self.store.list_state(paths.mac_table(bridge_id)):
                    if name.startswith(mac + ",") and name != f"{mac},{port_id}":
                        self.store.delete_state(f"{paths.mac_table(bridge_id)}/{name}")
                self.store.put_state(paths.mac_entry(bridge_id, mac, port_id), {}, ephemeral=True)
                self.stats["learned"] += 1
            except MidoflowError as e:
                LOG.warning("cannot record %s on bridge %s: %s", mac, bridge_id, e)
