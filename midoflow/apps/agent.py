"""The midoflow agent: an os-ken app, one per host, run by osken-manager.

Thin glue: os-ken events become calls of :class:`midoflow.agent.core.AgentCore`
and its decisions become OpenFlow messages (see :mod:`midoflow.apps.pipeline`).
The configuration file is named by ``MIDOFLOW_AGENT_CONFIG`` (set by the
``midoflow-agent`` launcher).
"""

from __future__ import annotations

import logging
import os
import signal
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from midoflow.agent.config import AgentConfig
from midoflow.agent.core import STATE_FLUSH_SECONDS, AgentCore, BindingChange, Frames
from midoflow.agent.flowstate_client import make_flow_state
from midoflow.agent.storm import StormControl
from midoflow.apps import frames, ofp_unix, ovsdb, pipeline
from midoflow.bgp.speaker import BgpManager
from midoflow.model import DEVICE_ROUTER, STATE_TUNNEL_KEY
from midoflow.store.factory import make_store

LOG = logging.getLogger("midoflow.agent")

POLL_INTERVAL = 1.0
EXPIRY_INTERVAL = 5.0
# How often the per-port packet-in meters' drops are read (storm control
# decides on each reading).
METER_STATS_INTERVAL = 1.0
hub_time = time.monotonic
ofp_unix.apply()  # OVS may reach us on a unix socket (from another netns)


class _OsKenFrames(Frames):
    def build(self, gen, original):
        return frames.build(gen, original)

    def parse(self, frame):
        return frames.parse(frame)


class MidoflowAgent(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("MIDOFLOW_AGENT_CONFIG")
        if not path:
            raise SystemExit("MIDOFLOW_AGENT_CONFIG is not set: start it with midoflow-agent")
        self.cfg = AgentConfig.load(path)
        self.dp = None
        self.classified: dict[str, tuple[int, int]] = {}  # port id -> (ofport, tunnel key)
        self.store = make_store(self.cfg.zookeeper, handler="eventlet",
                                timeout=self.cfg.zk_session_timeout)
        self.core = AgentCore(self.cfg, self.store, on_invalidate=self._delete_cookies,
                              on_bindings=self._bindings_changed, spawn=hub.spawn,
                              frames=_OsKenFrames(), replay=self._replay,
                              flow_state=make_flow_state(self.cfg.flow_state, eventlet=True))
        self._poke = hub.Event()
        self._last_expiry = 0.0
        self.bgp = BgpManager(self.core.cache, self.store, self.cfg.host_id, self.cfg.ovsdb,
                              self.cfg.bridge, self.cfg.ovs_netns,
                              bindings=lambda: dict(self.core.bindings),
                              on_links=self._bgp_links)
        self._bgp_wake = hub.Event()
        self.bgp.kick = self._bgp_wake.set
        self.bgp.interfaces = lambda: self.core.interfaces
        self.core.cache.on_bgp = self._bgp_wake.set
        self.bgp_links: dict[str, tuple[int, int, str]] = {}
        self.storm = StormControl(self.cfg.storm_factor, self.cfg.storm_seconds)

    def start(self):
        # osken-manager only handles SIGINT: on SIGTERM (systemd, kill) close
        # the ZooKeeper session first, so this host's ephemeral state (alive,
        # ports, learned MACs and ARP entries) goes now, not a session timeout later.
        signal.signal(signal.SIGTERM, self._terminate)
        thread = super().start()
        self.core.start()
        self.threads.append(hub.spawn(self._ovsdb_loop))
        self.threads.append(hub.spawn(self._state_loop))
        self.threads.append(hub.spawn(self._bgp_loop))
        self.threads.append(hub.spawn(self._meter_loop))
        LOG.info("agent for host %s started (tunnel ip %s)", self.cfg.host_id, self.cfg.tunnel_ip)
        return thread

    def stop(self):
        try:
            self.bgp.stop()
            self.core.flush_state()
            self.core.flow_state.close()
            self.store.close()
        finally:
            super().stop()

    def _terminate(self, _signum, _frame):
        LOG.info("SIGTERM: closing the ZooKeeper session and exiting")
        try:
            self.bgp.stop()
            self.core.flush_state()
            self.store.close()
            self.core.flow_state.close()
        finally:
            logging.shutdown()
            os._exit(0)

    def _state_loop(self):
        """File buffered flow state in the store, behind the packets."""
        while self.is_active:
            hub.sleep(STATE_FLUSH_SECONDS)
            if self.core._unsaved:
                try:
                    self.core.flush_state()
                except Exception:
                    LOG.exception("filing flow state failed")

    # ---- BGP (gateway hosts) ----------------------------------------------
    def _bgp_loop(self):
        """Keep the speaker, its links and the learned routes in line with the
        topology: at once after a change or a BGP event, else every second."""
        while self.is_active:
            self._bgp_wake.wait(timeout=POLL_INTERVAL)
            self._bgp_wake.clear()
            try:
                self.bgp.reconcile()
            except Exception:
                LOG.exception("BGP reconcile failed")

    def _bgp_links(self, links: dict[str, tuple[int, int, str]]) -> None:
        """BGP links appeared or went: pass BGP and ARP between each and its uplink."""
        old, self.bgp_links = self.bgp_links, dict(links)
        dp = self.dp
        if dp is None:
            return
        for pid, entry in old.items():
            if links.get(pid) != entry:
                dp.send_msg(pipeline.delete_bgp_link_flows(dp, entry[0]))
        for pid, entry in links.items():
            if old.get(pid) != entry:
                for m in pipeline.bgp_link_flows(dp, *entry):
                    dp.send_msg(m)

    # ---- OVSDB ------------------------------------------------------------
    def _ovsdb_loop(self):
        ensured = False
        while self.is_active:
            try:
                if not ensured:
                    ovsdb.ensure_tunnel_ports(self.cfg.ovsdb, self.cfg.bridge, self.cfg.tunnel_ip,
                                              self.cfg.vxlan_port, self.cfg.gre_port)
                    ensured = True
                ifaces = ovsdb.list_interfaces(self.cfg.ovsdb, self.cfg.bridge)
                if ifaces != self.core.interfaces:
                    self.core.set_interfaces(ifaces)
            except ovsdb.OvsError as e:
                LOG.warning("OVSDB: %s", e)
            except Exception:
                LOG.exception("OVSDB poll failed")
            if self.core.unsynced_ports or self.core.unsynced_host:
                self.core.resync()  # quorum may be back: write what was refused
            if hub_time() - self._last_expiry > EXPIRY_INTERVAL:
                self._last_expiry = hub_time()
                self.core.expire_state()
            self.core.maybe_publish()  # what the per-port bounds refused, for status
            self._poke.wait(timeout=POLL_INTERVAL)
            self._poke.clear()

    # ---- OpenFlow ---------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev):
        dp = ev.msg.datapath
        self.dp = dp
        for m in pipeline.base_flows(dp):  # flows and meters wiped: counts restart
            dp.send_msg(m)
        self.classified.clear()
        self.core.stats["metered_drops"] = {}
        self.core.forget_flows()
        # Re-install the classify flows of every current binding.
        self.core.bindings = {}
        self.core.set_connected(True)
        self.core.recompute_bindings()
        for entry in self.bgp_links.values():  # the wipe took them
            for m in pipeline.bgp_link_flows(dp, *entry):
                dp.send_msg(m)
        self._poke.set()
        LOG.info("connected to OVS datapath %016x", dp.id)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _disconnected(self, ev):
        if ev.datapath is self.dp:
            self.dp = None
            self.classified.clear()
            self.core.set_connected(False)
            LOG.warning("lost the OVS connection")

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        self._poke.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        """OVS refused something we sent: say what, it is always our bug."""
        msg = ev.msg
        self.core.stats["of_errors"] = self.core.stats.get("of_errors", 0) + 1
        LOG.error("OVS answered OpenFlow error type=%d code=%d to xid %s: %s",
                  msg.type, msg.code, msg.xid, bytes(msg.data[:64]).hex())

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev):
        self.core.flow_removed(ev.msg.cookie)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        ofp = msg.datapath.ofproto
        data = bytes(msg.data)
        if msg.match.get("tunnel_id") == STATE_TUNNEL_KEY:
            self.core.receive_state(data)  # flow state from another host's agent
            return
        buffer_id = msg.buffer_id if msg.buffer_id != ofp.OFP_NO_BUFFER else None
        self._process(msg.datapath, msg.match["in_port"], data, buffer_id)

    def _replay(self, ofport: int, frame: bytes) -> None:
        """A held packet whose next hop is now resolved: simulate it again."""
        if self.dp is not None:
            self._process(self.dp, ofport, frame, None)

    def _process(self, dp, in_port: int, data: bytes, buffer_id: int | None) -> None:
        try:
            fields = frames.parse(data)
        except frames.FrameError as e:  # dropped: no flow, no state, no learning
            self.core.note_malformed(getattr(e, "reason", "unparsable"))
            return
        try:
            decision = self.core.handle_miss(in_port, fields, data)
        except Exception:  # one bad packet must not stop the agent either
            LOG.exception("simulation failed for a packet from ofport %s", in_port)
            self.core.stats["malformed"] += 1
            return
        if decision is None:
            return
        p, ofp = dp.ofproto_parser, dp.ofproto
        for push in decision.pushes:  # flow state first: it must arrive before the reply
            dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                       in_port=ofp.OFPP_CONTROLLER, data=push.frame,
                                       actions=pipeline.output_actions(dp, push.actions)))
        try:  # what OpenFlow cannot set is rewritten in the packet itself
            for r in decision.rewrites:
                if r.field == "icmp_id":
                    data, buffer_id = frames.set_icmp_id(data, int(r.value)), None
                elif r.field in ("icmp_inner_src", "icmp_inner_dst"):
                    data = frames.set_icmp_inner(data, r.field[-3:], str(r.value))
                    buffer_id = None
        except frames.FrameError:
            return
        actions = pipeline.actions_for(dp, decision)
        if decision.install:
            flow = pipeline.decision_flow(dp, decision, in_port, self.cfg.idle_timeout, actions)
            # a burst's queued packets each install the same flow: OVS keeps
            # the last, the index must too
            self.core.flow_replaced(tuple(sorted(flow.match.items())), decision.cookie)
            dp.send_msg(flow)
        if actions:
            if buffer_id is not None:
                dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=buffer_id, in_port=in_port,
                                           actions=actions, data=None))
            else:
                dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                           in_port=in_port, actions=actions, data=data))
        for em in decision.emits:
            acts = pipeline.output_actions(dp, em.actions, em.rewrites)
            if acts:
                dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                           in_port=ofp.OFPP_CONTROLLER, actions=acts,
                                           data=em.frame))

    # ---- decisions of the core --------------------------------------------
    def _delete_cookies(self, cookies: set[int]) -> None:
        dp = self.dp
        if dp is None:
            return
        for c in cookies:
            dp.send_msg(pipeline.delete_cookie(dp, c))

    def _bindings_changed(self, change: BindingChange) -> None:
        dp = self.dp
        if dp is None:
            return
        for pid in change.removed:
            old = self.classified.pop(pid, None)
            if old:
                for m in pipeline.unclassify_flows(dp, *old):
                    dp.send_msg(m)
        keys = self.core.tunnel_keys()
        tunnels = sorted(self.core.tunnel_ofports.values())
        for pid, ofport in change.added.items():
            if pid not in keys:
                continue
            old = self.classified.pop(pid, None)
            if old:
                for m in pipeline.unclassify_flows(dp, *old):
                    dp.send_msg(m)
            self.classified[pid] = (ofport, keys[pid])
            for m in pipeline.classify_flows(dp, ofport, keys[pid], tunnels,
                                             *self._meter_rate(pid)):
                dp.send_msg(m)
        LOG.info("bindings: +%s -%s", sorted(change.added), sorted(change.removed))

    # ---- per-port packet-in meters ------------------------------------------
    def _meter_rate(self, port_id: str) -> tuple[int, int]:
        """(packets per second, burst) of a bound port's packet-in meter: a VM
        port's, or an uplink's (a router's exterior port carries every
        tenant's new north-south flows)."""
        rate, burst = self.cfg.packet_in_rate, self.cfg.packet_in_burst
        port = self.core.cache.ports.get(port_id)
        if port is not None and port.device_type == DEVICE_ROUTER:
            rate = self.cfg.uplink_packet_in_rate
            burst = max(burst, rate // 5)
        return rate, burst

    def _meter_loop(self):
        """Ask OVS for the meters' counters now and then (see _meter_stats)."""
        while self.is_active:
            hub.sleep(METER_STATS_INTERVAL)
            dp = self.dp
            if dp is not None:
                try:
                    dp.send_msg(pipeline.meter_stats_request(dp))
                except Exception:
                    LOG.exception("asking for meter statistics failed")

    @set_ev_cls(ofp_event.EventOFPMeterStatsReply, MAIN_DISPATCHER)
    def _meter_stats(self, ev):
        """Packet-ins each port's meter dropped (since its binding), by port id,
        in ``stats["metered_drops"]``; a reply may come in several parts."""
        by_meter = {pipeline.meter_id(ofport): pid
                    for pid, (ofport, _key) in self.classified.items()}
        drops = {pid: n for pid, n in self.core.stats.get("metered_drops", {}).items()
                 if pid in self.classified}
        fresh = pipeline.metered_drops(ev.msg.body, by_meter)
        drops.update(fresh)
        self.core.stats["metered_drops"] = drops
        self._storm_control(fresh)

    def _storm_control(self, drops: dict[str, int]) -> None:
        """Cut off, for a moment, a VM port flooding far past its meter (see
        midoflow.agent.storm); uplinks are never cut."""
        dp = self.dp
        for pid, n in drops.items():
            port = self.core.cache.ports.get(pid)
            if dp is None or pid not in self.classified or \
                    (port is not None and port.device_type == DEVICE_ROUTER):
                continue
            rate, _burst = self._meter_rate(pid)
            if self.storm.observe(pid, n, rate):
                ofport = self.classified[pid][0]
                dp.send_msg(pipeline.storm_block_flow(dp, ofport, self.storm.seconds))
                LOG.warning("port %s floods past %d packet-ins/s: everything from it is "
                            "dropped for %d s (storm control)", pid, rate, self.storm.seconds)
        self.core.stats["storm_blocked"] = dict(self.storm.blocked)
