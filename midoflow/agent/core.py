"""The agent's logic, free of os-ken: a thin coordinator over parts with one
job each, sharing one injected :class:`~midoflow.agent.clock.Clock` --

* :mod:`~midoflow.agent.bindings`: interfaces -> local bindings, activation;
* :mod:`~midoflow.agent.installed`: installed flows, invalidation by tag;
* :mod:`~midoflow.agent.egress`: egress ports as local outputs or tunnels;
* :mod:`~midoflow.agent.flowstate`: conntrack and NAT state, its commit,
  push, store copy, recovery and expiry;
* :mod:`~midoflow.agent.arphold`: packets waiting for ARP or recovery;
* :mod:`~midoflow.agent.learning`: learned MAC/ARP writes, the MAC limit;
* :mod:`~midoflow.agent.protection`: what the per-port bounds refused.

A table miss is simulated over the topology cache and a read-only view of
the flow state; the core then commits what the simulation wants (a block
leased, SNAT ports taken, bindings and keys recorded: simulated again when
a port was taken meanwhile or a block was leased) and translates the result
into datapath actions. The os-ken app (midoflow.apps.agent) only turns
these decisions into OpenFlow messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from midoflow.agent.arphold import ArpHold
from midoflow.agent.bindings import Bindings
from midoflow.agent.cache import TopologyCache
from midoflow.agent.clock import Clock
from midoflow.agent.config import AgentConfig
from midoflow.agent.decision import (
    BindingChange,
    Decision,
    Emit,
    Frames,
    Output,
    Tunnel,
    dropped,
)
from midoflow.agent.dhcp import DhcpResponder
from midoflow.agent.egress import Egress
from midoflow.agent.flowstate import STATE_FLUSH_SECONDS, FlowState
from midoflow.agent.fragments import (
    FragmentTable,
    SplitError,
    later_rewrites,
    set_addresses,
    split_frame,
)
from midoflow.agent.installed import InstalledFlows, Known
from midoflow.agent.learning import Learning
from midoflow.agent.natlease import StoreLeaser
from midoflow.agent.proactive import Proactive
from midoflow.agent.protection import Protection, TokenBucket
from midoflow.agent.unbound import UnboundHold
from midoflow.errors import MidoflowError
from midoflow.model import HOSTS, PORT_INTERIOR
from midoflow.nat import statewire
from midoflow.nat.allocator import NatAllocator
from midoflow.nat.conntrack import TCP_FIN, TCP_RST
from midoflow.nat.flowstate import FlowStateStore, LocalFlowState
from midoflow.sim.packet import ETH_ARP, ETH_IP, Packet
from midoflow.sim.result import Action, Generated, Result, Rewrite, port_tag
from midoflow.sim.simulator import simulate
from midoflow.store import paths
from midoflow.store.base import Create, Store

__all__ = ["STATE_FLUSH_SECONDS", "AgentCore", "BindingChange", "Decision", "Emit", "Frames",
           "Output", "TokenBucket", "Tunnel"]

LOG = logging.getLogger(__name__)

# ICMP errors a router generates, per router: a token bucket.
ICMP_RATE = 100.0
ICMP_BURST = 50.0
# Simulations of one packet at most (a block leased, a port taken meanwhile).
_MAX_WALKS = 3
# What a tracked connection's exact flow matches at most: a packet with
# these fields equal is that flow's (midoflow.agent.installed.Known).
_CONN_FIELDS = ("eth_src", "eth_dst", "eth_type", "ip_src", "ip_dst", "ip_proto",
                "tp_src", "tp_dst")
_CONN_MATCH = frozenset(("in_port", *_CONN_FIELDS))
# IPv4 below this TTL always reaches the agent (midoflow.apps.tables.LOW_TTL).
_LOW_TTL = 8
# announce_bound: a flow-state message must have a TTL; a port location has none
ANNOUNCE_TTL = 1
_INSTALLED = Result(action=Action.FORWARD, reason="its connection's installed flow")


def _conn_key(ofport: int, fields: dict) -> tuple | None:
    """The key of a TCP or UDP packet's exact flow (None: not such a packet)."""
    if fields.get("ip_proto") not in (6, 17) or fields.get("ip_frag"):
        return None
    return (ofport, *(fields.get(f) for f in _CONN_FIELDS))


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
        send: Callable[[list[Emit]], None] | None = None,
        clock: Clock | None = None,
        flow_state: FlowStateStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock or Clock()  # the one clock of every part
        self.on_invalidate = on_invalidate
        self.on_bindings = on_bindings
        self.spawn = spawn or (lambda f, *a: f(*a))
        self.frames = frames or Frames()
        self.replay = replay
        self.send = send  # frames sent outside a packet-in's answer (announce_bound)
        self.ovs_connected = False
        self.unsynced_host = False
        self.started_at = self.clock.wall()
        self.stats = {"packet_in": 0, "simulated": 0, "dropped": 0, "malformed": 0,
                      "invalidated": 0, "learned": 0, "generated": 0, "arp_held": 0,
                      "arp_expired": 0, "icmp_limited": 0}
        self.cache = TopologyCache(store, self._invalidate_tags, self._port_changed)
        self.cache.default_mtu, self.cache.underlay_mtu = cfg.default_mtu, cfg.underlay_mtu
        self.installed = InstalledFlows(self._flows_gone, self.stats)
        self.ports = Bindings(cfg, store, self.cache)
        self.cache.local_host = cfg.host_id
        self.cache.is_local = lambda pid: pid in self.ports.bound
        self.egress = Egress(cfg.host_id, self.cache, self.ports)
        self.state = FlowState(flow_state or LocalFlowState(),
                               NatAllocator(StoreLeaser(store, cfg.host_id), salt=cfg.host_id),
                               self.clock, self._spawn, self.stats)
        self.state.on_ended = self.installed.drop_using  # a closed VIP connection's flows
        self.arp = ArpHold(self.clock, self._spawn, self._replay, self.stats)
        # packets of ofports not bound yet (a VM's first ARP): see midoflow.agent.unbound
        self.unbound = UnboundHold(self.clock, self._spawn, self._replay, self.stats)
        self.learning = Learning(store, self.cache, cfg.max_macs_per_port, self.clock,
                                 self.stats)
        self.protection = Protection(cfg, self.stats, self.clock)
        self.frags = FragmentTable(clock=self.clock)
        self.icmp_bucket = TokenBucket(ICMP_RATE, ICMP_BURST, self.clock)
        self.cache.on_arp = lambda router_id, ip: self.arp.release((router_id, ip))
        self.cache.on_port_location = lambda _pid: self.arp.retry()  # see ArpHold.retry
        # DHCP answered here, before simulation (issue 12; never a flow).
        self.dhcp = DhcpResponder(self.cache, self.stats, self.note_malformed,
                                  metadata_route=cfg.metadata_enabled)
        # The metadata service's part (midoflow.agent.metadata.MetadataPorts,
        # set by the agent app): answers a VM's ARP for 169.254.169.254.
        self.metadata = None
        # Stateless flows installed before their first packet (the app sends them).
        self.proactive = Proactive(self, cfg.proactive_flows)

    # The parts call back through these: ``spawn``, ``replay`` and
    # ``on_invalidate`` may be replaced after construction (tests do).
    def _spawn(self, f: Callable[..., object], *args: object) -> object:
        return self.spawn(f, *args)

    def _replay(self, ofport: int, frame: bytes) -> None:
        self.replay(ofport, frame)

    def _flows_gone(self, cookies: set[int]) -> None:
        self.on_invalidate(cookies)

    # ---- the parts' state, by the names the glue and the tests use ----------
    flows = property(lambda self: self.installed.index)
    bindings = property(lambda self: self.ports.bound,
                        lambda self, v: setattr(self.ports, "bound", v))
    interfaces = property(lambda self: self.ports.interfaces)
    tunnel_ofports = property(lambda self: self.ports.tunnel_ofports)
    recovering = property(lambda self: self.ports.recovering)
    unsynced_ports = property(lambda self: self.ports.unsynced)
    flow_state = property(lambda self: self.state.store)
    ct = property(lambda self: self.state.tables.ct)
    nat = property(lambda self: self.state.tables.nat)
    allocator = property(lambda self: self.state.tables.allocator)
    _unsaved = property(lambda self: self.state.unsaved)
    held = property(lambda self: self.arp.held)
    port_macs = property(lambda self: self.learning.port_macs)
    refused = property(lambda self: self.protection.refused)
    malformed_reasons = property(lambda self: self.protection.malformed_reasons)

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
            # others' simulations leave our ports' security groups to our OVS
            "sg_conntrack": self.cache.sg_conntrack,
        }
        try:
            self.store.put_state(paths.host_alive(self.cfg.host_id), state, ephemeral=True)
            self.unsynced_host = False
        except MidoflowError as e:
            if not self.unsynced_host:  # once, not at every retry
                LOG.warning("cannot publish host state (will retry): %s", e)
            self.unsynced_host = True

    def set_connected(self, connected: bool) -> None:
        self.ovs_connected = connected
        if not connected:
            self.forget_flows()
        self.publish_state()

    # ---- protection (issue 9) ----------------------------------------------
    def note_malformed(self, reason: str) -> None:
        """A frame the parser refused (dropped: no flow, no state)."""
        self.protection.note_malformed(reason)

    def protection_report(self) -> dict:
        return self.protection.report()

    def maybe_publish(self) -> bool:
        """Publish the host state again when the protection counters changed."""
        if not self.protection.changed():
            return False
        self.publish_state()
        return True

    # ---- installed flows ------------------------------------------------------
    def _invalidate_tags(self, tags: set[str]) -> None:
        self.installed.invalidate_tags(tags)

    def forget_flows(self) -> None:
        """OVS's simulated flows are gone (wiped, or the switch is lost)."""
        self.installed.forget()

    def flow_replaced(self, match_key: tuple, cookie: int) -> None:
        self.installed.replaced(match_key, cookie)

    def flow_removed(self, cookie: int) -> None:
        self.installed.removed(cookie)

    def adopt_flow(self, cookie: int, decision: Decision) -> None:
        """Index a flow OVS kept across a restart, judged right by
        :meth:`dry_decision`, under its own cookie: its tags, its ingress
        port, and the flow state it keeps alive."""
        owner = decision.packet.in_port if decision.packet is not None else None
        self.installed.adopt(cookie, decision.tags, owner, decision.uses)

    # ---- bindings ---------------------------------------------------------
    def set_interfaces(self, interfaces: dict[str, tuple[int, str | None]]) -> None:
        """The bridge's interfaces as OVS reports them: name -> (ofport, iface-id)."""
        tunnels_changed = self.ports.set_interfaces(interfaces)
        change = self.recompute_bindings()
        if tunnels_changed:
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
        return self.ports.wanted()

    def recompute_bindings(self) -> BindingChange:
        change = self.ports.recompute()
        if not change.added and not change.removed:
            return change
        for pid in change.removed:
            if pid not in self.bindings:
                self.learning.forget_port(pid)
                self.spawn(self.ports.deactivate, pid)
        for pid in change.added:
            self.spawn(self._activate, pid)
        self._invalidate_tags({port_tag(p) for p in (*change.added, *change.removed)})
        self.on_bindings(change)
        for ofport in change.added.values():  # classified now: what it sent before, again
            self.unbound.release(ofport)
        self.spawn(self.publish_state)
        return change

    def _activate(self, port_id: str) -> None:
        self.recover_state(port_id)
        self.announce_bound(port_id)
        # Only now are the port's packets simulated: before, a connection's
        # next packet would get a new SNAT port and the peer would reset it.
        self.recovering.discard(port_id)
        self.arp.release(("recovering", port_id))
        self.ports.mark_active(port_id)

    def announce_bound(self, port_id: str) -> int:
        """Tell every other host now that ``port_id`` is bound here, over the
        tunnel like flow state, before its packets go: the answer to its first
        packet (and the ARP request that answer needs) can then reach it
        at once instead of after the store's write and each host's watch
        (issue 13, goal 4). The store stays the truth (TopologyCache.port_bound_at).
        Nothing is sent for a port the store already shows here (a restart).
        How many hosts were told."""
        if self.send is None or self.cache.port_hosts.get(port_id) == self.cfg.host_id:
            return 0
        frame = statewire.encode([], ANNOUNCE_TTL, bound=(self.cfg.host_id, [port_id]))
        emits = self.egress.to_every_host(frame)
        if emits:
            self.send(emits)
            self.stats["bound_announced"] = self.stats.get("bound_announced", 0) + len(emits)
        return len(emits)

    def resync(self) -> bool:
        """Write again what the store refused (ports activated or deactivated,
        the host's state) as things are now. True when nothing is left."""
        self.ports.resync(self._activate)
        if self.unsynced_host:
            self.publish_state()
        return not self.unsynced_ports and not self.unsynced_host

    def tunnel_keys(self) -> dict[str, int]:
        """Local port id -> its tunnel key, for egress delivery flows."""
        return self.ports.tunnel_keys()

    def port_of(self, ofport: int) -> str | None:
        return self.ports.port_of(ofport)

    # ---- flow state -------------------------------------------------------------
    def flush_state(self) -> int:
        """File the buffered flow state (called often by the agent's loop)."""
        return self.state.flush()

    def receive_state(self, frame: bytes, tun_src: str | None = None) -> int:
        """Flow state pushed by another host's agent (from the underlay
        address ``tun_src`` when known); returns keys installed."""
        try:
            if b'"bound"' in frame:
                self._bound_elsewhere(frame, tun_src)
            n, stale = self.state.receive(frame)
        except ValueError as e:
            self.stats["malformed"] += 1
            LOG.warning("bad flow-state message: %s", e)
            return 0
        if stale:
            self._invalidate_tags(stale)
        return n

    def _bound_elsewhere(self, frame: bytes, tun_src: str | None) -> None:
        """Ports another host announces it has bound (announce_bound); only
        from that host's own tunnel address, when the datapath says it."""
        said = statewire.decode_bound(frame)
        if said is None:
            return
        host, port_ids = said
        route = self.cache.tunnel_to(self.cfg.host_id, host)
        if route is None or (tun_src is not None and route[0] != tun_src):
            self.stats["bound_refused"] = self.stats.get("bound_refused", 0) + 1
            return
        self.stats["bound_heard"] = self.stats.get("bound_heard", 0) + len(port_ids)
        for pid in port_ids:
            if self.cache.port_bound_at(pid, host):
                self.stats["bound_noted"] = self.stats.get("bound_noted", 0) + 1

    def recover_state(self, port_id: str) -> int:
        """Connections of a port bound here, from the flow-state store."""
        return self.state.recover(port_id)

    def expire_state(self) -> int:
        """Forget idle connections and NAT bindings (those no installed flow
        uses); give their SNAT ports back. Closed connections' flows go."""
        self.frags.expire()
        gone, nat_gone = self.state.expire(self.installed.in_use())
        if gone:
            self.installed.drop_using(gone)
        return len(gone) + nat_gone

    # ---- table misses -----------------------------------------------------
    def _walk(self, pkt: Packet) -> Result:
        """Simulate over the read-only flow state; lease a block and walk
        again when the simulation found no free SNAT port."""
        for _ in range(_MAX_WALKS):
            result = simulate(self.cache, pkt, self.clock.wall(), self.state.view())
            self.stats["simulated"] += 1
            if not result.nat_wants or not self.state.lease(result):
                break
        return result

    def handle_miss(self, ofport: int, fields: dict, frame: bytes | None = None,
                    copy: bool | int = False) -> Decision | None:
        """Simulate a packet that missed the flow table. None: not ours.

        ``fields``: the packet's header fields (``Packet`` minus in_port);
        ``frame``: its bytes, quoted by ICMP answers and held while the
        router resolves a next hop. ``copy``: a tracked connection's FIN or
        RST that its close flow forwarded in the datapath and copied here:
        its connection is closed (and the close pushed to the hosts that
        track it), the segment is never forwarded again (no packet-out, no
        flow, no answer), nor held to be replayed; an int: that copy, with
        its flow's cookie (the packet-in's), closed from what the flow
        recorded (``_close_known``) when the agent installed it.

        A packet of a tracked connection whose exact flow is installed (the
        datapath had not revalidated its cache yet) is sent on with that
        flow's actions, not simulated (``_installed_answer``)."""
        self.stats["packet_in"] += 1
        in_port = self.port_of(ofport)
        if copy and (in_port is None or in_port in self.recovering
                     or not fields.get("tcp_flags", 0) & (TCP_FIN | TCP_RST)):
            # not bound (any more), or its state still loading: the closed
            # connection idles out instead
            self.stats["close_copies_ignored"] = self.stats.get("close_copies_ignored", 0) + 1
            return None
        if copy is not True and copy and in_port is not None:  # its flow's cookie
            closed = self._close_known(copy, ofport, in_port, fields)
            if closed is not None:
                return closed
        if in_port is None:
            # an ofport not bound (yet): held until it is (its first packets)
            if ofport in self.tunnel_ofports.values():
                self.unbound.forget(ofport)
                self.stats["unbound_dropped"] += 1
            elif frame is not None and self.replay is not None:
                self.unbound.hold(ofport, frame)
            return None
        if (fields.get("ip_proto") == 17 and fields.get("tp_dst") == 67 and frame is not None
                and not fields.get("ip_frag") and self.dhcp.subnet_for(in_port) is not None):
            return self._dhcp(ofport, in_port, fields, frame)
        if self.metadata is not None and fields.get("arp_tpa"):
            answer = self.metadata.answer_arp(in_port, ofport, fields)
            if answer is not None:
                return answer
        if fields.get("arp_op") == 1 and fields.get("arp_tpa"):
            server = self.dhcp.server_arp(in_port, fields)
            if server is not None:
                return self._answer_arp(ofport, in_port, fields, *server)
        if in_port in self.recovering and frame is not None and self.replay is not None:
            self.arp.hold(("recovering", in_port), ofport, frame)  # see _activate
            return None
        if not copy and self.installed.known:
            known = self._installed_answer(ofport, in_port, fields)
            if known is not None:
                return known
        pkt = Packet(in_port=in_port, **fields)
        if pkt.ip_frag == 2:
            return self._later_fragment(in_port, pkt, ofport, frame)
        for _ in range(_MAX_WALKS):
            result = self._walk(pkt)
            if result.learned and self.learning.mac_limit_hit(result.learned, in_port):
                self.protection.refuse("mac_limit", in_port)
                self.stats["dropped"] += 1
                return dropped(pkt, "the port's learned-MAC limit")
            if self.state.commit_nat(result):
                if result.lb_picks or result.lb_sticky:
                    self.state.commit_lb(result)
                break
            self.stats["nat_retaken"] = self.stats.get("nat_retaken", 0) + 1
        else:
            self.stats["dropped"] += 1
            return dropped(pkt, "SNAT ports taken while simulating")
        decision = self._decide(result, pkt, frame, in_port)
        if result.ct_hits and decision.actions:  # replies: their connections are answered
            self.state.replies(result, pkt)
        if pkt.ip_frag and decision.actions:  # its later fragments follow
            held = self.frags.remember(
                in_port, (pkt.ip_src, pkt.ip_dst, pkt.ip_proto, pkt.ip_id),
                (tuple(decision.actions), later_rewrites(decision.rewrites), result.mtu))
            for held_ofport, held_frame in held:  # came before it: simulated again
                self.spawn(self._replay, held_ofport, held_frame)
        if result.mtu is not None and pkt.ip_len > result.mtu and decision.actions \
                and not copy:
            decision = self._split(decision, frame, result.mtu)
        if pkt.tcp_flags is not None and pkt.tcp_flags & (TCP_FIN | TCP_RST):
            # a FIN or RST of a connection whose flow is installed already
            decision.install = False
            msg = self.state.closing(result, pkt.tcp_flags, pkt)
            if msg is not None:
                decision.pushes = self.egress.to_hosts(msg, self.egress.state_ports(result))
            if copy:  # the datapath forwarded it (its close flow): bookkeeping only
                # (the pushes may reach the other hosts after the segment:
                # closing is a set of FIN flags per side, in any order)
                decision.actions, decision.emits = [], []
                self.stats["close_copies"] = self.stats.get("close_copies", 0) + 1
                return decision
            if not decision.actions:
                self.stats["dropped"] += 1
            return decision
        if result.wait_arp is not None and frame is not None:
            self.arp.hold(result.wait_arp, ofport, frame)
        if decision.install and self.installed.count(in_port) >= self.cfg.max_flows_per_port:
            # forwarded packet by packet (under the port's packet-in meter)
            self.protection.refuse("flow_limit", in_port)
            decision.install = False
        if decision.install:
            decision.cookie = self.installed.add(
                decision.tags, in_port, decision.uses,
                self._known(ofport, fields, decision, pkt) if decision.uses else None)
        if (result.conntrack or result.nat or self.state.pending(result)) and decision.actions:
            msg = self.state.track(result, (in_port, *result.out_ports))
            decision.pushes = self.egress.to_hosts(msg, self.egress.state_ports(result, in_port))
            self.stats["ct_pushed"] = self.stats.get("ct_pushed", 0) + len(decision.pushes)
        if not decision.actions:
            self.stats["dropped"] += 1
        return decision

    # ---- tracked connections' installed flows, without a simulation -----------
    def _known(self, ofport: int, fields: dict, decision: Decision,
               pkt: Packet) -> Known | None:
        """What a tracked connection's new exact flow does, for its later
        packets that still reach the agent and its close copies (None: its
        flow matches more than the connection)."""
        key = _conn_key(ofport, fields)
        if key is None or not decision.match_fields <= _CONN_MATCH:
            return None
        closes = None
        if pkt.ip_proto == 6:
            result = decision.result
            seen, nat = self.state.close_keys(result, pkt)
            # the bindings this packet made: it went through them forward
            nat = (*nat, *((b, b.fwd, True) for b in result.nat))
            closes = (seen, nat, result.out_ports)
        return Known(key, tuple(decision.actions), decision.rewrites,
                     decision.match_fields, closes, decision.result.mtu)

    def _installed_answer(self, ofport: int, in_port: str, fields: dict) -> Decision | None:
        """A packet of a tracked connection whose exact flow is installed
        already (the datapath still sent it here: its cache is revalidated
        later): sent on with that flow's actions, not simulated, nothing
        installed or pushed again. None: no such flow, or a FIN or RST (it
        closes its connection: simulated), a TTL the flow never sees, or a
        packet bigger than its path's MTU (split or refused there)."""
        if fields.get("tcp_flags", 0) & (TCP_FIN | TCP_RST) \
                or fields.get("ip_ttl", _LOW_TTL) < _LOW_TTL:
            return None
        key = _conn_key(ofport, fields)
        hit = self.installed.lookup(key) if key is not None else None
        if hit is None:
            return None
        cookie, known = hit
        if known.mtu is not None and fields.get("ip_len", 0) > known.mtu:
            return None
        self.stats["installed_answers"] = self.stats.get("installed_answers", 0) + 1
        return Decision(list(known.actions), known.match_fields, frozenset(), _INSTALLED,
                        cookie=cookie, packet=Packet(in_port=in_port, **fields),
                        rewrites=known.rewrites, install=False)

    def _close_known(self, cookie: int, ofport: int, in_port: str,
                     fields: dict) -> Decision | None:
        """A close flow's copy of a FIN or RST (``cookie``: its flow's):
        its connection closed from what the flow recorded, not simulated.
        None: the flow is not known here (simulated instead)."""
        known = self.installed.known.get(cookie)
        if known is None or known.closes is None \
                or known.key != _conn_key(ofport, fields):
            return None
        seen, nat, out_ports = known.closes
        pkt = Packet(in_port=in_port, **fields)
        decision = Decision([], known.match_fields, frozenset(), _INSTALLED, cookie=cookie,
                            packet=pkt, install=False)
        msg = self.state.close(seen, nat, fields["tcp_flags"])
        if msg is not None:
            ports = self.egress.state_ports(Result(action=Action.FORWARD, out_ports=out_ports))
            decision.pushes = self.egress.to_hosts(msg, ports)
        self.stats["close_copies"] = self.stats.get("close_copies", 0) + 1
        self.stats["close_copies_known"] = self.stats.get("close_copies_known", 0) + 1
        return decision

    def _dhcp(self, ofport: int, in_port: str, fields: dict, frame: bytes) -> Decision:
        """A DHCP request from a VM port whose bridge serves DHCP: answered by
        this agent out of the same port, no flow (``midoflow.agent.dhcp``)."""
        reply = self.dhcp.reply(in_port, frame)
        pkt = Packet(in_port=in_port, **fields)
        decision = dropped(pkt, "DHCP answered by the agent")
        if reply is not None:
            decision.emits.append(Emit(reply, [Output(ofport)]))
        return decision

    def _answer_arp(self, ofport: int, in_port: str, fields: dict, mac: str,
                    ip: str) -> Decision:
        """An ARP request answered by this agent out of the same port, no flow."""
        decision = dropped(Packet(in_port=in_port, **fields), f"ARP for {ip} answered")
        sha, spa = fields.get("arp_sha"), fields.get("arp_spa")
        if not sha or not spa:
            return decision
        gen = Generated("arp_reply", in_port, (("eth_dst", sha), ("eth_src", mac),
                                               ("ip_dst", spa), ("ip_src", ip)))
        try:
            decision.emits.append(Emit(self.frames.build(gen, None), [Output(ofport)]))
        except (ValueError, NotImplementedError) as e:
            LOG.warning("cannot answer ARP for %s on port %s: %s", ip, in_port, e)
        return decision

    def dry_decision(self, ofport: int, fields: dict) -> Decision | None:
        """The Decision handle_miss would return for this packet, committing
        nothing: no learned entry, no block leased, no SNAT port taken, no
        binding or connection recorded, no flow-state push, no cookie, no
        counter (a restarted agent judges the flows OVS kept with it). A
        connection without its state here gets the port a new one would be
        proposed; one that would need a new SNAT block is dropped. None:
        not a port bound here, or a port still recovering its state."""
        in_port = self.port_of(ofport)
        if in_port is None or in_port in self.recovering:
            return None
        pkt = Packet(in_port=in_port, **fields)
        if pkt.ip_frag == 2:
            return None  # follows its first fragment; never a flow of its own
        result = simulate(self.cache, pkt, self.clock.wall(), self.state.view())
        if result.learned and self.learning.would_hit(result.learned, in_port):
            return dropped(pkt, "the port's learned-MAC limit")
        decision = self._decide(result, pkt, None, in_port, dry=True)
        if (pkt.tcp_flags is not None and pkt.tcp_flags & (TCP_FIN | TCP_RST)) or (
                decision.install
                and self.installed.count(in_port) >= self.cfg.max_flows_per_port):
            decision.install = False
        return decision

    def _later_fragment(self, in_port: str, pkt: Packet, ofport: int | None = None,
                        frame: bytes | None = None) -> Decision:
        """A later IP fragment (no L4 header) follows its first fragment's
        decision, made at this port shortly before: it is never simulated on
        its own, so it can neither open a port nor create state. One that
        comes before its first is held a moment (``midoflow.agent.fragments``)
        and handled again when the first has been decided, else dropped."""
        key = (pkt.ip_src, pkt.ip_dst, pkt.ip_proto, pkt.ip_id)
        known = self.frags.lookup(in_port, key)
        if known is None:
            if frame is not None and ofport is not None:
                self.frags.hold(in_port, key, (ofport, frame))
                self.stats["fragments_held"] = self.stats.get("fragments_held", 0) + 1
                return dropped(pkt, "later fragment before its first: held")
            self.stats["fragments_dropped"] = self.stats.get("fragments_dropped", 0) + 1
            self.stats["dropped"] += 1
            return dropped(pkt, "later fragment without its first")
        actions, rewrites, mtu = known
        decision = Decision(list(actions), frozenset(), frozenset(),
                            Result(action=Action.FORWARD, reason="later fragment"),
                            packet=pkt, rewrites=rewrites, install=False)
        if mtu is not None and pkt.ip_len > mtu:
            decision = self._split(decision, frame, mtu)
            if not decision.actions:
                self.stats["dropped"] += 1
        return decision

    def _split(self, decision: Decision, frame: bytes | None, mtu: int) -> Decision:
        """A packet bigger than its egress link (no DF: the router let it on)
        leaves in pieces of at most ``mtu``: the packet itself becomes the
        first (the frame rewrite ``ip_fragment``, made as it is sent), the
        others follow with the rewrites a later fragment takes."""
        try:
            pieces = split_frame(frame, mtu) if frame is not None else []
        except SplitError as e:
            LOG.debug("cannot fragment for MTU %s: %s", mtu, e)
            pieces = []
        if not pieces:
            return dropped(decision.packet, f"bigger than the MTU {mtu} and not splittable")
        later = later_rewrites(decision.rewrites) if decision.packet is None or \
            decision.packet.ip_frag != 2 else decision.rewrites  # already a later one's
        try:
            rest = [Emit(set_addresses(p, later), list(decision.actions), later)
                    for p in pieces[1:]]
        except SplitError as e:
            LOG.debug("cannot rewrite a fragment: %s", e)
            return dropped(decision.packet, "a fragment that cannot be rewritten")
        decision.rewrites = (*decision.rewrites, Rewrite("ip_fragment", mtu))
        decision.emits = rest + decision.emits
        self.stats["fragmented"] = self.stats.get("fragmented", 0) + 1
        return decision

    def _decide(self, result: Result, pkt: Packet, frame: bytes | None,
                in_port: str | None = None, depth: int = 0, dry: bool = False) -> Decision:
        """The Decision for a result; unless ``dry``, its learned entries are
        claimed and written, and the frames it generates are built."""
        if not dry:
            learned = self.learning.claim(result.learned)
            if learned:
                self.spawn(self.learning.learn_macs, learned)
            arps = self.learning.claim(result.arp_learned)
            if arps:
                self.spawn(self.learning.record_arps, self.learning.note_arps(arps))
        decision = self.translate(result)
        decision.packet = pkt
        decision.install = result.cacheable and not pkt.ip_frag
        decision.uses = (*result.ct_hits, *(k.reverse() for k in result.conntrack),
                         *(("nat", b) for b in result.nat))
        if pkt.eth_type not in (ETH_IP, ETH_ARP):
            # parsed as Ethernet only (IPv6, LLC...): its flow names its
            # ethertype, so it can never carry IPv4 or ARP between the same MACs
            decision.match_fields = decision.match_fields | {"eth_type"}
        if depth < 2 and not dry:
            for gen in result.generated:
                decision.emits += self.emit(gen, frame, depth + 1)
        return decision

    def translate(self, result: Result) -> Decision:
        return self.egress.translate(result)

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
            if not self.arp.should_ask(key):
                return []  # asked very recently: the answer is on its way
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
            result = simulate(self.cache, pkt, self.clock.wall(), self.state.view())
            d = self._decide(result, pkt, frame, depth=depth)
            out = [Emit(frame, d.actions, d.rewrites)] if d.actions else []
            return out + d.emits
        # An exterior port: straight out of its binding, wherever it is.
        d = self.translate(Result(action=Action.FORWARD, out_ports=(port.id,)))
        return [Emit(frame, d.actions)] if d.actions else []
