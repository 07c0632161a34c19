"""The agent's logic, free of os-ken: local bindings, simulation of table
misses, translation of a simulation result into datapath actions, and which
installed flows each change invalidates. The os-ken app (midoflow.apps.agent)
only turns these decisions into OpenFlow messages.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from midoflow.agent.cache import TopologyCache, host_tag
from midoflow.agent.config import AgentConfig
from midoflow.agent.flows import FlowIndex
from midoflow.agent.fragments import FragmentTable
from midoflow.agent.natlease import StoreLeaser
from midoflow.errors import MidoflowError
from midoflow.model import HOSTS, PORT_EXTERIOR, PORT_INTERIOR, STATE_TUNNEL_KEY, TUNNEL_GRE
from midoflow.nat import statewire
from midoflow.nat.allocator import NatAllocator, NatExhausted
from midoflow.nat.bindings import NatBinding, NatTable
from midoflow.nat.conntrack import IDLE_SECONDS, TCP_FIN, TCP_RST, ConnKey, ConnTrackTable
from midoflow.nat.flowstate import CONNTRACK, NAT, Entry, FlowStateStore, LocalFlowState
from midoflow.sim.packet import ETH_ARP, ETH_IP, Packet
from midoflow.sim.result import (
    Action,
    Generated,
    Result,
    Rewrite,
    ct_miss_tag,
    nat_miss_tag,
    port_tag,
)
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


@dataclass(frozen=True)
class Emit:
    """A frame the topology sends (ARP, ICMP), with where it goes."""

    frame: bytes
    actions: list[Output | Tunnel]
    rewrites: tuple[Rewrite, ...] = ()


@dataclass
class Decision:
    """What to do for one table miss: a flow (when ``install``), the actions
    for the packet itself, and frames the topology sends in answer."""

    actions: list[Output | Tunnel]
    match_fields: frozenset[str]
    tags: frozenset[str]
    result: Result
    cookie: int = 0
    packet: Packet | None = None
    rewrites: tuple[Rewrite, ...] = ()
    emits: list[Emit] = field(default_factory=list)
    install: bool = True
    # Flow state for other hosts: sent before the packet itself.
    pushes: list[Emit] = field(default_factory=list)


@dataclass
class BindingChange:
    added: dict[str, int] = field(default_factory=dict)  # port id -> ofport
    removed: dict[str, int] = field(default_factory=dict)


class Frames:
    """How the core turns generated packets into frames and frames into
    packet fields (the agent app gives it os-ken's packet library)."""

    def build(self, gen: Generated, original: bytes | None) -> bytes:
        raise NotImplementedError

    def parse(self, frame: bytes) -> dict:
        raise NotImplementedError


# A packet waiting for an ARP answer waits this long at most, this many per next hop.
ARP_HOLD_SECONDS = 3.0
ARP_HOLD_MAX = 16
ARP_RETRY_SECONDS = 1.0
# ICMP errors a router generates, per router: a token bucket.
ICMP_RATE = 100.0
ICMP_BURST = 50.0
# A learned ARP entry is re-written to the store at most this often.
ARP_REWRITE_SECONDS = 60.0
# A MAC or ARP entry being written is not written again before this (also the
# back-off after a failed write).
LEARN_RETRY_SECONDS = 1.0
# Buffered flow state is filed when this many entries wait (and every
# STATE_FLUSH_SECONDS by the agent's loop).
STATE_FLUSH_ENTRIES = 256
STATE_FLUSH_SECONDS = 0.05
# At most this many entries wait while the flow-state store is unreachable.
STATE_HOLD_MAX = 100_000
# Host state (with the protection counters) is published at most this often
# when only counters changed.
PROTECTION_PUBLISH_SECONDS = 2.0
# The protection report names at most this many ports per limit (the worst).
PROTECTION_REPORT_PORTS = 20
# Rewrites a later IP fragment can take (it has no L4 header).
_FRAGMENT_REWRITES = frozenset({"eth_src", "eth_dst", "ttl", "ip_src", "ip_dst"})


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        now = self.clock()
        tokens, last = self.tokens.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self.tokens[key] = (tokens - 1.0 if ok else tokens, now)
        return ok


class AgentCore:
    def __init__(
        self,
        cfg: AgentConfig,
        store: Store,
        on_invalidate: Callable[[set[int]], None] = lambda cookies: None,
        on_bindings: Callable[[BindingChange], None] = lambda change: None,
        spawn: Callable[..., object] | None = None,
        frames: Frames | None = None,
        replay: Callable[[int, bytes], None] = lambda ofport, frame: None,
        clock: Callable[[], float] = time.time,
        flow_state: FlowStateStore | None = None,
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
                      "invalidated": 0, "learned": 0, "generated": 0, "arp_held": 0,
                      "arp_expired": 0, "icmp_limited": 0}
        self.started_at = time.time()
        # What the per-port bounds refused (issue 9): by kind, then by port.
        self.refused: dict[str, dict[str, int]] = {"mac_limit": {}, "flow_limit": {}}
        self.malformed_reasons: dict[str, int] = {}
        self._published_report: dict | None = None
        self._published_at = 0.0
        self.frags = FragmentTable(clock=time.monotonic)
        # The MACs each local port has been allowed to have learned (the limit).
        self.port_macs: dict[str, set[tuple[str, str]]] = {}
        self.frames = frames or Frames()
        self.replay = replay
        self.clock = clock
        self.icmp_bucket = TokenBucket(ICMP_RATE, ICMP_BURST, time.monotonic)
        # (router, ip) -> [(deadline, ofport, frame)]: packets waiting for ARP
        self.held: dict[tuple[str, str], list[tuple[float, int, bytes]]] = defaultdict(list)
        self.arp_asked: dict[tuple[str, str], float] = {}
        # Ports bound here whose flow state is still being recovered: their
        # packets wait in ``held`` (key ("recovering", port)), see _activate.
        self.recovering: set[str] = set()
        self.cache.on_arp = self._arp_resolved
        self._writing: dict[tuple, float] = {}  # learned entry -> claimed until
        # Entries this process wrote: others (a previous run's, about to vanish
        # with its session) are written again when seen.
        self._mine: set = set()
        self._by_match: dict[tuple, int] = {}  # installed flow match -> its cookie
        self._match_of: dict[int, tuple] = {}
        # Connection tracking: return keys, kept alive while a flow uses them.
        self.ct = ConnTrackTable()
        self.ct_cookies: dict[int, tuple[ConnKey, ...]] = {}
        self.flow_state = flow_state or LocalFlowState()
        self._unsaved: dict[str, list[Entry]] = {}  # port -> entries to file
        self._unsaved_n = 0
        self._flushing = False
        # NAT: bindings of connections through this host, ports from leased blocks.
        self.nat = NatTable()
        self.nat_until: dict[NatBinding, float] = {}
        self.allocator = NatAllocator(StoreLeaser(store, cfg.host_id), salt=cfg.host_id)
        self.cache.runtime = self
        # State the store refused (no quorum): written again by resync().
        self.unsynced_ports: set[str] = set()
        self.unsynced_host = False

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
            "protection": self.protection_report(),
        }
        try:
            self.store.put_state(paths.host_alive(self.cfg.host_id), state, ephemeral=True)
            self.unsynced_host = False
        except MidoflowError as e:
            if not self.unsynced_host:  # once, not at every retry
                LOG.warning("cannot publish host state (will retry): %s", e)
            self.unsynced_host = True

    # ---- protection (issue 9) ----------------------------------------------
    def note_malformed(self, reason: str) -> None:
        """A frame the parser refused (dropped: no flow, no state)."""
        self.stats["malformed"] += 1
        self.malformed_reasons[reason] = self.malformed_reasons.get(reason, 0) + 1

    def _refuse(self, kind: str, port_id: str) -> None:
        per = self.refused[kind]
        if port_id not in per:
            limit = self.cfg.max_macs_per_port if kind == "mac_limit" \
                else self.cfg.max_flows_per_port
            LOG.warning("port %s reached its %s (%d): %s", port_id, kind.replace("_", " "),
                        limit, "frames from further new source MACs are dropped"
                        if kind == "mac_limit" else "further flows are not installed")
        per[port_id] = per.get(port_id, 0) + 1
        self.stats[kind] = self.stats.get(kind, 0) + 1

    def protection_report(self) -> dict:
        """What the per-port bounds refused, for the host state (``midoflow
        status``): the worst ports of each limit, the malformed frames by
        reason, fragments dropped and packet-ins the meters dropped."""
        def worst(per: dict[str, int]) -> dict[str, int]:
            top = sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))
            return dict(top[:PROTECTION_REPORT_PORTS])

        metered = self.stats.get("metered_drops")
        storms = self.stats.get("storm_blocked")
        return {
            "limits": {"max_macs_per_port": self.cfg.max_macs_per_port,
                       "max_flows_per_port": self.cfg.max_flows_per_port,
                       "packet_in_rate": self.cfg.packet_in_rate,
                       "packet_in_burst": self.cfg.packet_in_burst,
                       "uplink_packet_in_rate": self.cfg.uplink_packet_in_rate,
                       "storm_factor": self.cfg.storm_factor,
                       "storm_seconds": self.cfg.storm_seconds},
            "mac_limit": worst(self.refused["mac_limit"]),
            "flow_limit": worst(self.refused["flow_limit"]),
            "malformed": dict(sorted(self.malformed_reasons.items())),
            "fragments_dropped": self.stats.get("fragments_dropped", 0),
            "metered_drops": worst(metered) if isinstance(metered, dict) else {},
            "storm_blocked": worst(storms) if isinstance(storms, dict) else {},
        }

    def maybe_publish(self) -> bool:
        """Publish the host state again when the protection counters changed
        (at most every PROTECTION_PUBLISH_SECONDS)."""
        now = time.monotonic()
        if now - self._published_at < PROTECTION_PUBLISH_SECONDS:
            return False
        report = self.protection_report()
        if report == self._published_report:
            return False
        self._published_report, self._published_at = report, now
        self.publish_state()
        return True

    def _mac_limit_hit(self, learned, in_port: str) -> bool:
        """Whether ``learned`` holds a MAC new on ``in_port`` while the port
        already has its limit of MACs; else the new ones are counted. A known
        MAC costs one set lookup (this runs for every bridged packet-in)."""
        mine = self.port_macs.setdefault(in_port, set())
        new = {(b, m) for b, m, pid in learned if pid == in_port and (b, m) not in mine}
        if not new:
            return False
        limit = self.cfg.max_macs_per_port
        if len(mine) + len(new) > limit:
            # MACs since learned on another port (a VM that moved) no longer count
            mine -= {bm for bm in mine if self.cache.macs.get(bm) not in (None, in_port)}
            if len(mine) + len(new) > limit:
                return True
        mine |= new
        return False

    def _later_fragment(self, in_port: str, pkt: Packet) -> Decision:
        """A later IP fragment (no L4 header) follows its first fragment's
        decision, made at this port shortly before, or is dropped: it is never
        simulated on its own, so it can neither open a port nor create state."""
        key = (pkt.ip_src, pkt.ip_dst, pkt.ip_proto, pkt.ip_id)
        known = self.frags.lookup(in_port, key)
        if known is None:
            self.stats["fragments_dropped"] = self.stats.get("fragments_dropped", 0) + 1
            self.stats["dropped"] += 1
            return Decision([], frozenset(), frozenset(), Result(action=Action.DROP,
                            reason="later fragment without its first"), packet=pkt,
                            install=False)
        actions, rewrites = known
        return Decision(list(actions), frozenset(), frozenset(),
                        Result(action=Action.FORWARD, reason="later fragment"),
                        packet=pkt, rewrites=rewrites, install=False)

    def forget_flows(self) -> None:
        """OVS's simulated flows are gone (wiped, or the switch is lost)."""
        self.flows.clear()
        self.ct_cookies.clear()
        self._by_match.clear()
        self._match_of.clear()

    def set_connected(self, connected: bool) -> None:
        self.ovs_connected = connected
        if not connected:
            self.forget_flows()
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

    def flow_replaced(self, match_key: tuple, cookie: int) -> None:
        """A new flow with the same match and priority as an installed one
        replaces it in OVS, which says nothing: forget the old cookie."""
        old = self._by_match.get(match_key)
        if old is not None and old != cookie:
            self.flow_removed(old)
        self._by_match[match_key] = cookie
        self._match_of[cookie] = match_key

    def flow_removed(self, cookie: int) -> None:
        self.flows.remove(cookie)
        self.ct_cookies.pop(cookie, None)
        key = self._match_of.pop(cookie, None)
        if key is not None and self._by_match.get(key) == cookie:
            del self._by_match[key]

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
            self.forget_flows()
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
                self.port_macs.pop(pid, None)
                self.spawn(self._deactivate, pid)
        for pid in change.added:
            self.recovering.add(pid)
            self.spawn(self._activate, pid)
        self._invalidate_tags({port_tag(p) for p in (*change.added, *change.removed)})
        self.on_bindings(change)
        self.spawn(self.publish_state)
        return change

    def _activate(self, port_id: str) -> None:
        self.recover_state(port_id)
        # Only now are the port's packets simulated: before, a connection's
        # next packet would get a new SNAT port and the peer would reset it.
        self.recovering.discard(port_id)
        now = time.monotonic()
        for deadline, ofport, frame in self.held.pop(("recovering", port_id), []):
            if deadline > now:
                self.spawn(self.replay, ofport, frame)
        try:
            self.store.put_state(paths.port_active(port_id), {"host_id": self.cfg.host_id})
            self.unsynced_ports.discard(port_id)
        except MidoflowError as e:
            if port_id not in self.unsynced_ports:
                LOG.warning("cannot mark port %s active (will retry): %s", port_id, e)
            self.unsynced_ports.add(port_id)

    def _deactivate(self, port_id: str) -> None:
        try:
            cur = self.store.get_state(paths.port_active(port_id))
            if cur and cur.get("host_id") == self.cfg.host_id:
                self.store.delete_state(paths.port_active(port_id))
            for (bridge_id, mac), pid in list(self.cache.macs.items()):
                if pid == port_id:
                    self.store.delete_state(paths.mac_entry(bridge_id, mac, port_id))
            self.unsynced_ports.discard(port_id)
        except MidoflowError as e:
            if port_id not in self.unsynced_ports:
                LOG.warning("cannot mark port %s inactive (will retry): %s", port_id, e)
            self.unsynced_ports.add(port_id)

    def resync(self) -> bool:
        """Write again what the store refused (ports activated or deactivated,
        the host's state) as things are now. True when nothing is left."""
        for pid in sorted(self.unsynced_ports):
            if pid in self.bindings:
                self._activate(pid)
            else:
                self._deactivate(pid)
        if self.unsynced_host:
            self.publish_state()
        return not self.unsynced_ports and not self.unsynced_host

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

    def handle_miss(self, ofport: int, fields: dict, frame: bytes | None = None
                    ) -> Decision | None:
        """Simulate a packet that missed the flow table. None: not ours.

        ``fields``: the packet's header fields (``Packet`` minus in_port);
        ``frame``: its bytes, quoted by ICMP answers and held while the
        router resolves a next hop."""
        self.stats["packet_in"] += 1
        in_port = self.port_of(ofport)
        if in_port is None:
            return None
        if in_port in self.recovering and frame is not None and self.replay is not None:
            self._hold(("recovering", in_port), ofport, frame)  # see _activate
            return None
        pkt = Packet(in_port=in_port, **fields)
        if pkt.ip_frag == 2:
            return self._later_fragment(in_port, pkt)
        result = simulate(self.cache, pkt, self.clock())
        self.stats["simulated"] += 1
        if result.learned and self._mac_limit_hit(result.learned, in_port):
            self._refuse("mac_limit", in_port)
            self.stats["dropped"] += 1
            return Decision([], frozenset(), frozenset(), Result(
                action=Action.DROP, reason="the port's learned-MAC limit"), packet=pkt,
                install=False)
        decision = self._decide(result, pkt, frame)
        if pkt.ip_frag:  # flows cannot tell fragments apart: decide each one here
            decision.install = False
            if decision.actions:  # its later fragments follow (same id, addresses)
                self.frags.remember(in_port, (pkt.ip_src, pkt.ip_dst, pkt.ip_proto,
                                              pkt.ip_id),
                                    (tuple(decision.actions), tuple(
                                        r for r in decision.rewrites
                                        if r.field in _FRAGMENT_REWRITES)))
        closing = pkt.tcp_flags is not None and pkt.tcp_flags & (TCP_FIN | TCP_RST)
        if closing:  # a FIN or RST of a connection whose flow is installed already
            decision.install = False
            decision.pushes = self._closing(result, pkt.tcp_flags)
            if not decision.actions:
                self.stats["dropped"] += 1
            return decision
        if result.wait_arp is not None and frame is not None:
            self._hold(result.wait_arp, ofport, frame)
        if decision.install and self.flows.count(in_port) >= self.cfg.max_flows_per_port:
            # forwarded packet by packet (under the port's packet-in meter)
            self._refuse("flow_limit", in_port)
            decision.install = False
        if decision.install:
            decision.cookie = self.flows.add(decision.tags, owner=in_port)
            used = tuple(result.ct_hits) + tuple(k.reverse() for k in result.conntrack) \
                + tuple(("nat", b) for b in result.nat)
            if used:
                self.ct_cookies[decision.cookie] = used
        if result.nat:
            now = self.clock()
            for b in result.nat:
                self.nat.add(b)
                self.nat_until[b] = now + IDLE_SECONDS
        if (result.conntrack or result.nat) and decision.actions:
            decision.pushes = self._track(result, in_port)
        if not decision.actions:
            self.stats["dropped"] += 1
        return decision

    # ---- connection tracking ------------------------------------------------
    def _closing(self, result: Result, flags: int) -> list[Emit]:
        """A FIN or RST: close the connection here, and tell the hosts that
        track it too (each sees only its own side's segments)."""
        now = self.clock()
        seen = [*result.conntrack, *(k for k in result.ct_hits if isinstance(k, ConnKey))]
        for k in seen:
            self.ct.tcp_flags(k, flags, now)
        if not seen:
            return []
        frame = statewire.encode([], int(self.ct.idle), closing=[(k, flags) for k in seen])
        return self._to_hosts(frame, self._state_ports(result))

    def _to_hosts(self, frame: bytes, ports) -> list[Emit]:
        hosts = {self.cache.port_hosts.get(p) for p in ports}
        hosts.discard(None)
        hosts.discard(self.cfg.host_id)
        out = []
        for host in sorted(hosts):
            route = self.cache.tunnel_to(self.cfg.host_id, host)
            ofport = self.tunnel_ofports.get("gre" if route and route[1] == TUNNEL_GRE
                                             else "vxlan")
            if route is not None and ofport is not None:
                out.append(Emit(frame, [Tunnel(STATE_TUNNEL_KEY, route[0], ofport)]))
        return out

    def _track(self, result: Result, in_port: str) -> list[Emit]:
        """Track the connections a packet opens and tell every host that may
        see a reply, before the packet leaves ("zero-delay"): the hosts of
        its egress ports. Also filed in the flow-state store for recovery."""
        now = self.clock()
        rets = [self.ct.track(fwd, now) for fwd in result.conntrack]
        self.stats["ct_tracked"] = self.stats.get("ct_tracked", 0) + len(rets)
        frame = statewire.encode(rets, int(self.ct.idle), list(result.nat))
        pushes = self._to_hosts(frame, self._state_ports(result, in_port))
        self.stats["ct_pushed"] = self.stats.get("ct_pushed", 0) + len(pushes)
        ports = (in_port, *result.out_ports)
        entries = [Entry(CONNTRACK, k.encode()) for k in rets]
        entries += [Entry(NAT, b.encode()) for b in result.nat]
        self._buffer_state(ports, entries)
        return pushes

    def _state_ports(self, result: Result, in_port: str | None = None) -> set[str]:
        """Ports whose hosts may see this connection again: the egress ports,
        and every member of a stateful port group that the ingress or an
        egress port is in (gateway uplinks: with ECMP upstream, the next
        packet of either direction may arrive at another gateway)."""
        ports = set(result.out_ports)
        seen = ports | ({in_port} if in_port else set())
        for g in self.cache.port_groups.values():
            if g.stateful and seen & set(g.port_ids):
                ports |= set(g.port_ids)
        return ports

    def is_return(self, key: ConnKey) -> bool:
        return self.ct.is_return(key, self.clock())

    def nat_allocate(self, targets, proto: int):
        try:
            return self.allocator.allocate(targets, proto)
        except NatExhausted as e:
            self.stats["nat_exhausted"] = self.stats.get("nat_exhausted", 0) + 1
            LOG.warning("SNAT: %s", e)
            return None

    def _buffer_state(self, ports, entries) -> None:
        """Flow state waits here to be filed in the store, grouped by port:
        one write per port for many connections (the Python driver costs about
        a millisecond of CPU per request). The push to the peers, which the
        reply needs, has already gone."""
        for p in ports:
            self._unsaved.setdefault(p, []).extend(entries)
        self._unsaved_n += len(entries)
        if self._unsaved_n >= STATE_FLUSH_ENTRIES and not self._flushing:
            self._flushing = True
            self.spawn(self.flush_state)

    def flush_state(self) -> int:
        """File the buffered flow state (called often by the agent's loop)."""
        pending, self._unsaved, self._unsaved_n = self._unsaved, {}, 0
        self._flushing = False
        n = 0
        for port, entries in pending.items():
            try:
                self.flow_state.save((port,), entries, int(IDLE_SECONDS))
                n += len(entries)
            except Exception as e:  # the store is for recovery: forwarding goes on
                self.stats["state_save_failed"] = self.stats.get("state_save_failed", 0) + 1
                self._keep_unsaved(port, entries)
                LOG.warning("cannot file flow state for port %s (kept for a retry): %s",
                            port, e)
        self.stats["state_saved"] = self.stats.get("state_saved", 0) + n
        return n

    def _keep_unsaved(self, port: str, entries: list[Entry]) -> None:
        """Hold what the store refused for the next flush, up to a bound (the
        oldest go first: their connections are the likeliest to be gone)."""
        held = self._unsaved.setdefault(port, [])
        held[:0] = entries
        self._unsaved_n += len(entries)
        excess = self._unsaved_n - STATE_HOLD_MAX
        if excess > 0:
            drop = min(excess, len(held))
            del held[:drop]
            self._unsaved_n -= drop
            self.stats["state_dropped"] = self.stats.get("state_dropped", 0) + drop

    def receive_state(self, frame: bytes) -> int:
        """Flow state pushed by another host's agent; returns keys installed."""
        try:
            keys, nat, closing, ttl = statewire.decode_full(frame)
        except ValueError as e:
            self.stats["malformed"] += 1
            LOG.warning("bad flow-state message: %s", e)
            return 0
        now = self.clock()
        # A reply may have beaten its state here (another path through OVS):
        # what was decided without state that is new here goes, the next
        # packet sees it. State already known (pushed again) changes nothing.
        stale: set[str] = set()
        for k in keys:
            if not self.ct.is_return(k, now):
                stale.add(ct_miss_tag(k))
            self.ct.install(k, now, ttl)
        for b in nat:
            if self.nat.reverse(b.kind, b.rev) != b:
                stale.add(nat_miss_tag(b.kind, b.rev))
            self.nat.add(b)
            self.nat_until[b] = max(self.nat_until.get(b, 0.0), now + ttl)
        for k, flags in closing:
            self.ct.tcp_flags(k, flags, now)
        self.stats["ct_received"] = self.stats.get("ct_received", 0) + len(keys) + len(nat)
        if stale:
            self._invalidate_tags(stale)
        return len(keys) + len(nat)

    def recover_state(self, port_id: str) -> int:
        """Connections of a port bound here, from the flow-state store (an
        agent restart, a VM that moved here)."""
        try:
            entries = self.flow_state.load(port_id)
        except Exception as e:
            LOG.warning("cannot recover flow state of port %s: %s", port_id, e)
            return 0
        now = self.clock()
        n = 0
        for e in entries:
            try:
                if e.kind == CONNTRACK:
                    self.ct.install(ConnKey.decode(e.key), now)
                elif e.kind == NAT:
                    b = NatBinding.decode(e.key)
                    self.nat.add(b)
                    self.nat_until[b] = max(self.nat_until.get(b, 0.0), now + IDLE_SECONDS)
                else:
                    continue
                n += 1
            except ValueError:
                continue
        return n

    def expire_state(self) -> int:
        """Forget idle connections and NAT bindings (those no installed flow
        uses); give their SNAT ports back."""
        self.frags.expire()
        keep = {k for keys in self.ct_cookies.values() for k in keys}
        now = self.clock()
        expired = set(self.ct.expire(now, keep))
        gone = len(expired)
        if expired:  # closed connections: their flows go with them
            dead = {c for c, keys in self.ct_cookies.items() if expired & set(keys)}
            for c in dead:
                self.flows.remove(c)
                self.ct_cookies.pop(c, None)
            if dead:
                self.on_invalidate(dead)
        for b, until in list(self.nat_until.items()):
            if ("nat", b) in keep:
                self.nat_until[b] = max(until, now + IDLE_SECONDS)
            elif until <= now:
                del self.nat_until[b]
                self.nat.remove(b)
                if b.kind == "snat":
                    self.allocator.free(b.xlated[0], b.xlated[1], b.fwd.proto)
                gone += 1
        return gone

    def _decide(self, result: Result, pkt: Packet, frame: bytes | None,
                depth: int = 0) -> Decision:
        learned = self._claim(result.learned)
        if learned:
            self.spawn(self._learn, learned)
        arps = self._claim(result.arp_learned)
        if arps:
            self.spawn(self._learn_arp, arps)
        decision = self.translate(result)
        decision.packet = pkt
        decision.install = result.cacheable
        if pkt.eth_type not in (ETH_IP, ETH_ARP):
            # parsed as Ethernet only (IPv6, LLC...): its flow names its
            # ethertype, so it can never carry IPv4 or ARP between the same MACs
            decision.match_fields = decision.match_fields | {"eth_type"}
        if depth < 2:
            for gen in result.generated:
                decision.emits += self.emit(gen, frame, depth + 1)
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
        return Decision(actions, result.match_fields, frozenset(tags), result,
                        rewrites=result.rewrites if actions else ())

    # ---- packets the topology sends ---------------------------------------
    def emit(self, gen: Generated, original: bytes | None, depth: int = 1) -> list[Emit]:
        """Send a generated packet out of router port ``gen.out_port``: into
        the peer device (simulated from there) or out of the exterior port."""
        if gen.kind == "icmp_error":
            p = self.cache.ports.get(gen.out_port)
            router = p.device_id if p else gen.out_port
            if not self.icmp_bucket.take(router):
                self.stats["icmp_limited"] += 1
                return []
        if gen.kind == "arp_request":
            key = (self.cache.ports[gen.out_port].device_id, gen.get("ip_dst")) \
                if gen.out_port in self.cache.ports else ("", "")
            now = time.monotonic()
            if now - self.arp_asked.get(key, -1e9) < ARP_RETRY_SECONDS:
                return []  # asked very recently: the answer is on its way
            self.arp_asked[key] = now
        try:
            frame = self.frames.build(gen, original)
            fields = self.frames.parse(frame)
        except (ValueError, NotImplementedError) as e:
            LOG.warning("cannot build %s from port %s: %s", gen.kind, gen.out_port, e)
            return []
        self.stats["generated"] += 1
        port = self.cache.ports.get(gen.out_port)
        if port is None:
            return []
        if port.type == PORT_INTERIOR:
            peer = self.cache.ports.get(port.peer_id) if port.peer_id else None
            if peer is None:
                return []
            pkt = Packet(in_port=peer.id, **fields)
            result = simulate(self.cache, pkt, self.clock())
            d = self._decide(result, pkt, frame, depth)
            out = [Emit(frame, d.actions, d.rewrites)] if d.actions else []
            return out + d.emits
        # An exterior port: straight out of its binding, wherever it is.
        d = self.translate(Result(action=Action.FORWARD, out_ports=(port.id,)))
        return [Emit(frame, d.actions)] if d.actions else []

    # ---- next-hop resolution ------------------------------------------------
    def _hold(self, key: tuple[str, str], ofport: int, frame: bytes) -> None:
        now = time.monotonic()
        q = [h for h in self.held[key] if h[0] > now]
        if len(q) >= ARP_HOLD_MAX:
            q.pop(0)
            self.stats["arp_expired"] += 1
        q.append((now + ARP_HOLD_SECONDS, ofport, frame))
        self.held[key] = q
        self.stats["arp_held"] += 1

    def _arp_resolved(self, router_id: str, ip: str) -> None:
        """An ARP entry appeared: the packets waiting for it are simulated again."""
        waiting = self.held.pop((router_id, ip), [])
        self.arp_asked.pop((router_id, ip), None)
        now = time.monotonic()
        for deadline, ofport, frame in waiting:
            if deadline > now:
                self.spawn(self.replay, ofport, frame)
            else:
                self.stats["arp_expired"] += 1

    def _learn_arp(self, entries) -> None:
        for router_id, ip, mac in entries:
            cur = self.cache.arps.get((router_id, ip))
            now = self.clock()
            if cur and cur[0] == mac and now - cur[1] < ARP_REWRITE_SECONDS \
                    and cur[2] in self._mine:
                continue
            try:
                table = paths.arp_table(router_id)
                name = paths.arp_entry(router_id, ip, mac, now).rsplit("/", 1)[1]
                # the new entry first, then the old ones: never a moment without
                self.store.put_state(paths.arp_entry(router_id, ip, mac, now), {},
                                     ephemeral=True)
                for old in self.store.list_state(table):
                    e = paths.parse_arp_entry(old)
                    if e and e[0] == ip and old != name:
                        self.store.delete_state(f"{table}/{old}")
                self._mine = {n for n in self._mine
                              if not (isinstance(n, str) and n.startswith(ip + ","))}
                self._mine.add(name)
                self._writing.pop((router_id, ip, mac), None)
            except MidoflowError as e:  # the claim stays: no retry for a while
                LOG.warning("cannot record ARP %s -> %s on router %s: %s", ip, mac,
                            router_id, e)

    def _claim(self, entries) -> tuple:
        """The entries no write is in flight (or just failed) for: every packet
        of a flow misses until the learned entry comes back through the watch,
        and each must not start a store write of its own."""
        if not entries:
            return ()
        now = time.monotonic()
        out = []
        for e in entries:
            until = self._writing.get(e)
            if until is None or until < now:
                self._writing[e] = now + LEARN_RETRY_SECONDS
                out.append(e)
        if len(self._writing) > 65536:  # forget stale claims
            self._writing = {k: t for k, t in self._writing.items() if t >= now}
        return tuple(out)

    def _learn(self, learned) -> None:
        for entry in learned:
            bridge_id, mac, port_id = entry
            if self.cache.macs.get((bridge_id, mac)) == port_id and entry in self._mine:
                self._writing.pop(entry, None)
                continue
            try:
                # Drop older entries for this MAC (a VM that moved), then record ours.
                for name in self.store.list_state(paths.mac_table(bridge_id)):
                    if name.startswith(mac + ",") and name != f"{mac},{port_id}":
                        self.store.delete_state(f"{paths.mac_table(bridge_id)}/{name}")
                self.store.put_state(paths.mac_entry(bridge_id, mac, port_id), {}, ephemeral=True)
                self.stats["learned"] += 1
                self._writing.pop(entry, None)
                self._mine.add(entry)
            except MidoflowError as e:  # the claim stays: no retry for a while
                LOG.warning("cannot record %s on bridge %s (retry in %.0f s): %s", mac,
                            bridge_id, LEARN_RETRY_SECONDS, e)
