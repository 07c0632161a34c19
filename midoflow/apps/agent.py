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
from typing import NamedTuple

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

from midoflow.agent import restart, sgflows
from midoflow.agent.config import AgentConfig
from midoflow.agent.core import STATE_FLUSH_SECONDS, AgentCore, BindingChange, Frames
from midoflow.agent.fairqueue import ARP, CONTROL, VM, FairQueue
from midoflow.agent.flows import FlowIndex
from midoflow.agent.metadata import METADATA_MAC, METADATA_PORT, MetadataPorts, Steering
from midoflow.agent.storm import StormControl
from midoflow.apps import frames, metrics, ofp_unix, ovsctl, ovsdb, oxm, pipeline
from midoflow.apps.healthcheck import HealthCheckRunner
from midoflow.bgp.speaker import BgpManager
from midoflow.metadata import service as metadata_service
from midoflow.metadata.proxy import MetadataProxy
from midoflow.model import DEVICE_ROUTER, STATE_TUNNEL_KEY, conntrack_enforced
from midoflow.sim.result import chain_tag, ip_addr_group_tag, port_tag
from midoflow.store.factory import load_credentials, make_store
from midoflow.store.flowstate_factory import make_flow_state

LOG = logging.getLogger("midoflow.agent")

POLL_INTERVAL = 1.0
NUDGE_SECONDS = 0.1  # see _nudge_loop
SG_FULL_SECONDS = 10.0  # see _sg_loop: every port's groups recomputed anyway


class SgSent(NamedTuple):
    """What OVS holds of a bound port's security groups (``_sg_update``)."""

    ofport: int
    egress: bool  # what it sends goes through its ct zone (table 4)
    ingress: bool  # what it gets does (table 5)
    tunnels: tuple[int, ...]  # the tunnel ofports its table-0 delivery flows cover
    flows: frozenset
# What a port's security-group flows are made of: the port, its chains and
# rules, the groups' address groups (midoflow.sim.result's tag prefixes).
_SG_TAGS = (port_tag(""), chain_tag(""), ip_addr_group_tag(""))
EXPIRY_INTERVAL = 5.0
# How often the per-port packet-in meters' drops are read (storm control
# decides on each reading).
METER_STATS_INTERVAL = 1.0
# How often the flows to install before their first packet are looked for.
PROACTIVE_INTERVAL = 0.5
PROACTIVE_YIELD = 0.02  # between the parts of a plan over its budget
# How long a fast reconnect waits for OVS to list the meters it kept before
# classifying the bound ports without that list.
METERS_WAIT = 5.0
# Fast restart: how long the flows OVS kept wait for their ports' bindings
# and flow state before they are judged anyway (a port whose binding went
# while the agent was away never comes: its flows are deleted then).
KEPT_FLOWS_WAIT = 10.0
KEPT_FLOWS_BATCH = 256  # flows judged between two yields to the other green threads
hub_time = time.monotonic
# The packet-in worker (_packet_worker) yields to the other green threads
# (the switch connection's reader, ZooKeeper, flow-removed events) after this
# much work, so what arrives meanwhile is filed in the fair queue before the
# next packet is chosen.
PACKET_WORK_SLICE = 0.0005
ofp_unix.apply()  # OVS may reach us on a unix socket (from another netns)
oxm.apply()  # packet-ins parsed without os-ken's legacy match objects


def _no_decision(_ofport, _fields):
    return None


class _OsKenFrames(Frames):
    def build(self, gen, original):
        return frames.build(gen, original)

    def parse(self, frame):
        return frames.parse(frame)


class MidoflowAgent(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    # fast restart: the flow dump asked for at connection, and its parts so far
    _kept_xid: int | None = None
    _classify_xid: int | None = None
    _kept: list = []  # noqa: RUF012 - each connection gets a list of its own
    _kept_classify: list = []  # noqa: RUF012 - the same
    # fast restart: the meters OVS held at connection (None: a wiping
    # connection, which deletes them all), those deleted since, and whether
    # classifying waits for the answer (see _meter_config)
    _meters_xid: int | None = None
    _kept_meters: set[int] | None = None
    _gone_meters: set[int] = set()  # noqa: RUF012 - each connection gets a set of its own
    _meters_wait = False
    # the ofports whose table-0 fence flows OVS holds, on which connection
    _fenced: tuple | None = None
    # metadata (see __init__; None: metadata_enabled is false)
    metadata: MetadataPorts | None = None
    meta_ofport: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("MIDOFLOW_AGENT_CONFIG")
        if not path:
            raise SystemExit("MIDOFLOW_AGENT_CONFIG is not set: start it with midoflow-agent")
        self.cfg = AgentConfig.load(path)
        self.dp = None
        self.classified: dict[str, tuple[int, int]] = {}  # port id -> (ofport, tunnel key)
        creds = load_credentials(self.cfg.credentials_file) if self.cfg.credentials_file \
            else None
        self.store = make_store(self.cfg.zookeeper, handler="eventlet",
                                timeout=self.cfg.zk_session_timeout, credentials=creds)
        self.core = AgentCore(self.cfg, self.store, on_invalidate=self._delete_cookies,
                              on_bindings=self._bindings_changed, spawn=hub.spawn,
                              frames=_OsKenFrames(), replay=self._replay,
                              send=self._send_emits,
                              flow_state=make_flow_state(self.cfg.flow_state, eventlet=True,
                                                         credentials=creds))
        self._poke = hub.Event()
        self._last_expiry = 0.0
        # Security groups in OVS (midoflow.agent.sgflows): what OVS holds of
        # each bound port (_sg_update), resent on a topology change.
        self.core.cache.sg_conntrack = self.cfg.sg_conntrack
        self.sg_sent: dict[str, SgSent] = {}
        # port -> the tags its flows were computed from; the tags changed since
        # the loop last ran (it recomputes only the ports they concern)
        self.sg_reads: dict[str, frozenset[str]] = {}
        self._sg_dirty: set[str] = set()
        self._sg_full_at = 0.0
        self._sg_wake = hub.Event()
        if self.cfg.sg_conntrack:
            invalidate = self.core.cache.on_invalidate

            def on_invalidate(tags: set[str]) -> None:
                invalidate(tags)
                mine = {t for t in tags if t.startswith(_SG_TAGS)}  # not MACs, routes...
                if mine:
                    self._sg_dirty |= mine
                    self._sg_wake.set()
            self.core.cache.on_invalidate = on_invalidate
        self.metrics = metrics.AgentMetrics(self)  # served when metrics_port is set
        # the bridge's interfaces by OVSDB notifications (see _interfaces_changed)
        self.ovs = ovsdb.OvsdbMonitor(self.cfg.ovsdb, self.cfg.bridge,
                                      on_change=self._interfaces_changed)
        self.ovs.ensure_tunnel_ports(self.cfg.tunnel_ip, self.cfg.vxlan_port, self.cfg.gre_port)
        self.bgp = BgpManager(self.core.cache, self.store, self.cfg.host_id, self.ovs,
                              self.cfg.ovs_netns,
                              bindings=lambda: dict(self.core.bindings),
                              on_links=self._bgp_links,
                              max_prefixes=self.cfg.bgp_max_prefixes,
                              stale_time=self.cfg.bgp_stale_time)
        self.health = HealthCheckRunner(
            self.store, self.cfg.host_id, self.ovs, self.cfg.ovs_netns,
            bound=lambda pid: pid in self.core.bindings) if self.cfg.health_checks else None
        self._bgp_wake = hub.Event()
        self.bgp.kick = self._bgp_wake.set
        self.core.cache.on_bgp = self._bgp_wake.set
        self.bgp_links: dict[str, tuple[int, int, str]] = {}
        self.storm = StormControl(self.cfg.storm_factor, self.cfg.storm_seconds,
                                  clock=self.core.clock)
        # packet-ins, filed by _packet_in, served by _packet_worker (issue 13)
        self.packets = FairQueue(self.cfg.packet_in_queue)
        self._packets_wake = hub.Event()
        # ofport -> (port id, round-robin weight), from ``classified`` (_port_info)
        self._ports_seen: dict[int, tuple[str, int]] = {}
        self._ports_seen_of: int = -1  # len(classified) when it was made
        # Metadata (midoflow.metadata): the port holding 169.254.169.254, the
        # proxy serving it, and the served ports' flows as sent to OVS.
        self.metadata = None
        self.meta_ofport = None
        self.meta_sent: dict[str, Steering] = {}
        self._meta_port_sent: tuple | None = None  # (datapath, ofport) of its table-0 flow
        self._meta_wake = hub.Event()
        if self.cfg.metadata_enabled:
            self.metadata = MetadataPorts(self.core.cache, _OsKenFrames())
            self.core.metadata = self.metadata
            self.meta_proxy = MetadataProxy(self.metadata.instance, self.cfg.metadata_upstream,
                                            self.cfg.metadata_secret)

    def start(self):
        # osken-manager only handles SIGINT: on SIGTERM (systemd, kill) close
        # the ZooKeeper session first, so this host's ephemeral state (alive,
        # ports, learned MACs and ARP entries) goes now, not a session timeout later.
        signal.signal(signal.SIGTERM, self._terminate)
        thread = super().start()
        self.core.start()
        self.threads.append(hub.spawn(self.ovs.run))
        self.threads.append(hub.spawn(self._ovsdb_loop))
        self.threads.append(hub.spawn(self._state_loop))
        self.threads.append(hub.spawn(self._bgp_loop))
        self.threads.append(hub.spawn(self._meter_loop))
        self.threads.append(hub.spawn(self._proactive_loop))
        if self.cfg.sg_conntrack:
            self.threads.append(hub.spawn(self._sg_loop))
            self.threads.append(hub.spawn(self._nudge_loop))
        if self.cfg.metrics_port:
            self.threads.append(hub.spawn(metrics.serve, self.metrics, self.cfg.metrics_host,
                                          self.cfg.metrics_port))
        self.threads.append(hub.spawn(self._packet_worker))
        if self.metadata is not None:
            self.threads.append(hub.spawn(self._metadata_loop))
        if self.health is not None:
            self.health.start()
        LOG.info("agent for host %s started (tunnel ip %s)", self.cfg.host_id, self.cfg.tunnel_ip)
        return thread

    def stop(self):
        try:
            if self.health is not None:
                self.health.stop()
            self.bgp.stop()
            self.core.flush_state()
            self.core.flow_state.close()
            self.store.close()
        finally:
            super().stop()

    def _terminate(self, _signum, _frame):
        """SIGTERM (systemd's stop, a restart). OVS keeps the flows either way
        (br-int is fail_mode=secure). With fast_restart the ZooKeeper session
        is left to its timeout, as after kill -9: the agent started in our
        place takes this host's ephemeral state over and the other hosts'
        flows to our ports stay valid meanwhile (closing it would make them
        drop traffic to our VMs until then). Without, it is closed now, so the
        host's state (alive, ports, learned entries) goes at once."""
        keep = self.cfg.fast_restart
        LOG.info("SIGTERM: %s the ZooKeeper session and exiting",
                 "leaving (fast restart)" if keep else "closing")
        try:
            if self.health is not None:
                self.health.stop()
            self.bgp.stop()
            self.core.flush_state()
            if not keep:
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
                pipeline.send(dp, [pipeline.delete_bgp_link_flows(dp, entry[0])])
        for pid, entry in links.items():
            if old.get(pid) != entry:
                pipeline.send(dp, pipeline.bgp_link_flows(dp, *entry))

    # ---- OVSDB ------------------------------------------------------------
    def _interfaces_changed(self, ifaces: dict[str, tuple[int, str | None]]) -> None:
        """OVSDB notified a change of the bridge's interfaces (in the monitor's
        green thread): bindings follow at once, and so do the BGP links."""
        health = getattr(self, "health", None)
        if health is not None:  # not a health link a killed run left
            ifaces = health.visible(ifaces)
        if ifaces != self.core.interfaces:
            self.core.set_interfaces(ifaces)
            self._fence()
        self._bgp_wake.set()

    def _ovsdb_loop(self):
        """The periodic jobs (the interfaces come by notification, above)."""
        while self.is_active:
            try:
                if self.ovs.interfaces != self.core.interfaces:  # a failed callback
                    self._interfaces_changed(dict(self.ovs.interfaces))
                if self.core.unsynced_ports or self.core.unsynced_host:
                    self.core.resync()  # quorum may be back: write what was refused
                if hub_time() - self._last_expiry > EXPIRY_INTERVAL:
                    self._last_expiry = hub_time()
                    self.core.expire_state()
                    self.core.cache.expire_notes()  # pushed locations not confirmed
                self.core.maybe_publish()  # what the per-port bounds refused, for status
                self.core.unbound.expire()  # unbound ports' packets held too long: dropped
                self._fence()
            except Exception:
                LOG.exception("periodic agent job failed")
            self._poke.wait(timeout=POLL_INTERVAL)
            self._poke.clear()

    # ---- OpenFlow ---------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev):
        """Connected to OVS: its fixed flows, every binding's classify flows.
        With ``fast_restart`` the simulated flows OVS holds keep carrying
        traffic and are judged once the bindings are up (``_kept_flows``);
        without, every flow and meter is wiped and simulated again."""
        dp = ev.msg.datapath
        self.dp = dp
        fast = self.cfg.fast_restart
        self.core.forget_flows()
        self.core.flows.reserved.clear()
        self._kept = []
        self._kept_classify = []
        self._kept_meters, self._gone_meters, self._meters_wait = None, set(), fast
        if fast:  # asked first: OVS answers before it applies anything sent later
            p = dp.ofproto_parser
            classify = p.OFPFlowStatsRequest(  # the base and classify flows (cookie 0)
                dp, table_id=pipeline.TABLE_CLASSIFY, cookie=0, cookie_mask=(1 << 64) - 1)
            simulated = p.OFPFlowStatsRequest(
                dp, table_id=pipeline.TABLE_SIMULATED, cookie=FlowIndex.COOKIE_BASE,
                cookie_mask=FlowIndex.COOKIE_MASK)
            meters = pipeline.meter_config_request(dp)
            for req in (classify, simulated, meters):
                dp.set_xid(req)
                dp.send_msg(req)
            self._classify_xid, self._kept_xid = classify.xid, simulated.xid
            self._meters_xid, self._kept_meters = meters.xid, set()
            self.threads.append(hub.spawn(self._meters_deadline, dp, meters.xid))
        # fixed flows: an add replaces the flow of the same match and priority
        pipeline.send(dp, pipeline.base_flows(dp, wipe=not fast))
        self._fenced = None
        self._fence()
        self.classified.clear()
        self.sg_sent = {}  # every port's security-group flows sent again (_bindings_changed)
        self.sg_reads = {}
        self.meta_sent, self._meta_port_sent = {}, None  # sent again below / by the loop
        self.core.stats["metered_drops"] = {}
        # Re-install the classify flows of every current binding.
        self.core.bindings = {}
        self.core.set_connected(True)
        self.core.recompute_bindings()
        for entry in self.bgp_links.values():  # a wipe took them; else they replace themselves
            pipeline.send(dp, pipeline.bgp_link_flows(dp, *entry))
        self._poke.set()
        if self.cfg.sg_conntrack:  # a restarted ovs-vswitchd forgot it
            self.threads.append(hub.spawn(self._tune_ovs))
        LOG.info("connected to OVS datapath %016x (%s)", dp.id,
                 "keeping its flows" if fast else "flows wiped")

    def _tune_ovs(self) -> None:
        """OVS's conntrack accepts the fragments the agent makes (see
        midoflow.apps.ovsctl)."""
        why = ovsctl.set_ipf_min_frag(ovsctl.unixctl_path(self.cfg.ovsdb, self.cfg.ovs_unixctl))
        if why:
            LOG.warning("OVS drops IPv4 fragments under 1,200 bytes to ports with security "
                        "groups: %s", why)

    # ---- fast restart: the flows OVS kept ---------------------------------
    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _kept_flows(self, ev):
        """The simulated flows OVS held when we connected (maybe in several
        parts): reserved at once (no new flow gets their cookies), judged once
        the bindings are up and their flow state is recovered."""
        msg = ev.msg
        if msg.datapath is not self.dp:
            return
        if msg.xid == self._classify_xid:  # answered first: see _features
            self._kept_classify.extend(msg.body)
            return
        if msg.xid != self._kept_xid:
            return
        self._kept.extend(msg.body)
        self.core.flows.reserve(s.cookie for s in msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        kept, self._kept, self._kept_xid = self._kept, [], None
        LOG.info("OVS kept %d simulated flow(s): judging them once the bindings are up",
                 len(kept))
        self.threads.append(hub.spawn(self._judge_kept, msg.datapath, kept))

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _meter_config(self, ev):
        """The meters OVS held when we connected (fast restart; maybe in
        several parts). The bound ports, classified meanwhile without a word
        to OVS, are classified now: their meters modified (counters kept) or
        added, never deleted (OVS would take the kept flows using them)."""
        msg = ev.msg
        if msg.datapath is not self.dp or msg.xid != self._meters_xid \
                or self._kept_meters is None:
            return
        self._kept_meters.update(c.meter_id for c in msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        self._kept_meters -= self._gone_meters  # deleted after OVS answered
        self._meters_xid, self._meters_wait = None, False
        LOG.info("OVS kept %d meter(s): classifying %d bound port(s)",
                 len(self._kept_meters), len(self.classified))
        tunnels = sorted(self.core.tunnel_ofports.values())
        for pid, (ofport, key) in self.classified.items():
            self._classify(msg.datapath, pid, ofport, key, tunnels)

    def _meters_deadline(self, dp, xid: int) -> None:
        """OVS did not answer the meter request (it always should): classify
        the bound ports anyway, adding their meters (an add of a meter OVS
        still holds is refused and leaves it as it was; the flows use it)."""
        hub.sleep(METERS_WAIT)
        if dp is not self.dp or self._meters_xid != xid or not self._meters_wait:
            return
        LOG.warning("OVS did not list its meters within %.0f s: classifying %d bound "
                    "port(s) without them", METERS_WAIT, len(self.classified))
        self._meters_xid, self._meters_wait = None, False
        tunnels = sorted(self.core.tunnel_ofports.values())
        for pid, (ofport, key) in self.classified.items():
            self._classify(dp, pid, ofport, key, tunnels)

    def _classify(self, dp, pid: str, ofport: int, key: int, tunnels: list[int]) -> None:
        """A bound port's classify flows and meter: after a fast restart's
        connection a meter OVS kept is modified (its counters go on), a
        missing one added; else the meter is made afresh."""
        command = None
        if self._kept_meters is not None:
            mid = pipeline.meter_id(ofport)
            command = dp.ofproto.OFPMC_MODIFY if mid in self._kept_meters \
                else dp.ofproto.OFPMC_ADD
            self._kept_meters.discard(mid)  # from now on, ours: unclassify deletes it
        pipeline.send(dp, pipeline.classify_flows(dp, ofport, key, tunnels,
                                                  *self._meter_rate(pid), meter=command))

    def _unclassify(self, dp, ofport: int, key: int) -> None:
        """Remove a port's flows and meter (see pipeline.unclassify_flows)."""
        mid = pipeline.meter_id(ofport)
        self._gone_meters.add(mid)
        if self._kept_meters is not None:
            self._kept_meters.discard(mid)
        pipeline.send(dp, pipeline.unclassify_flows(dp, ofport, key))

    def _settled(self, in_ports: set[int]) -> bool:
        """Interfaces read from OVSDB, every port the kept flows came in by
        bound (or gone from the bridge), and the bound ports' flow state
        recovered: the flows can be judged."""
        if not self.core.interfaces or self.core.recovering:
            return False
        present = {ofport for ofport, _iface in self.core.interfaces.values()}
        bound = set(self.core.bindings.values())
        return all(p in bound or p not in present for p in in_ports)

    def _judge_kept(self, dp, stats) -> None:
        in_ports = {s.match.get("in_port") for s in stats}
        deadline = hub_time() + KEPT_FLOWS_WAIT
        while not self._settled(in_ports) and hub_time() < deadline and dp is self.dp:
            hub.sleep(0.05)
        if dp is not self.dp:  # reconnected meanwhile: that connection asks again
            return
        t0 = hub_time()
        index = self.core.flows
        decide = getattr(self.core, "dry_decision", None)
        if decide is None:
            LOG.error("AgentCore has no dry_decision: every kept flow is deleted")
            decide = _no_decision
        # A tracked flow's close flows (same cookie) follow its verdict; those
        # whose flow OVS no longer holds go.
        closes = {s.cookie for s in stats if s.priority == pipeline.PRIO_TCP_CLOSE}
        stats = [s for s in stats if s.priority != pipeline.PRIO_TCP_CLOSE]
        orphans = (closes - {s.cookie for s in stats}) & index.reserved
        for c in orphans:
            index.release(c)
        pipeline.send(dp, [pipeline.delete_cookie(dp, c) for c in orphans])
        kept = [restart.KeptFlow(s.cookie, dict(s.match.items()), s.priority,
                                 self._instructions_key(dp, s.instructions))
                for s in stats if s.cookie in index.reserved]  # not removed meanwhile

        def build(decision, ofport):
            flow = pipeline.decision_flow(dp, decision, ofport, self.cfg.idle_timeout,
                                          pipeline.actions_for(dp, decision))
            return restart.Wanted(dict(flow.match.items()), flow.priority,
                                  self._instructions_key(dp, flow.instructions))

        verdict = restart.Verdict()
        for i in range(0, len(kept), KEPT_FLOWS_BATCH):
            # Judged and adopted without yielding: a topology change that
            # comes in between batches invalidates the adopted ones as usual
            # and is seen by the simulation of the next ones.
            if dp is not self.dp:
                return
            part = restart.judge([f for f in kept[i:i + KEPT_FLOWS_BATCH]
                                  if f.cookie in index.reserved], decide, build)
            for flow, decision in part.keep:
                self._adopt(flow, decision)
            for flow in part.stale:
                index.release(flow.cookie)
            pipeline.send(dp, [pipeline.delete_cookie(dp, f.cookie) for f in part.stale])
            verdict.keep += part.keep
            verdict.stale += part.stale
            verdict.why.update(part.why)
            hub.sleep(0)  # the agent's other work goes on between batches
        self._unclassify_orphans(dp)
        self.core.stats["restart_kept"] = len(verdict.keep)
        self.core.stats["restart_stale"] = len(verdict.stale)
        reasons: dict[str, int] = {}
        for why in verdict.why.values():
            reasons[why] = reasons.get(why, 0) + 1
        LOG.info("kept flows judged in %.3f s: %d adopted, %d stale deleted %s",
                 hub_time() - t0, len(verdict.keep), len(verdict.stale), reasons)

    def _unclassify_orphans(self, dp) -> None:
        """Remove what OVS kept of the ports bound here no more (unbound while
        the agent was away): their classify, delivery and to-controller flows
        and their meter."""
        kept, self._kept_classify = self._kept_classify, []
        orphans = restart.orphan_ports(
            [(dict(s.match.items()), self._instructions_key(dp, s.instructions))
             for s in kept],
            {ofport for ofport, _key in self.classified.values()}, pipeline.TABLE_SIMULATED)
        for ofport, key in orphans.items():
            if key is None:
                LOG.warning("ofport %d was classified and is bound no more, but has no "
                            "delivery flow: its flows stay", ofport)
                continue
            self._unclassify(dp, ofport, key)
        if orphans:
            LOG.info("flows of ports bound here no more removed: ofports %s", sorted(orphans))

    def _adopt(self, flow: restart.KeptFlow, decision) -> None:
        """Index a kept flow as if this agent had installed it (tags, ingress
        port, the flow state it keeps alive), and its match: a flow-mod of the
        same match replaces it."""
        self.core.adopt_flow(flow.cookie, decision)
        self.core.flow_replaced(tuple(sorted(flow.match.items())), flow.cookie)
        self.core.proactive.kept(flow.cookie, decision)

    @staticmethod
    def _instructions_key(dp, instructions) -> tuple:
        """Instructions in a form that compares equal between a flow-mod we
        build and the same flow read back from OVS (which may differ in
        unused fields such as an output's max_len, or in value spelling)."""
        ofp, p = dp.ofproto, dp.ofproto_parser

        def action(a):
            if isinstance(a, p.OFPActionOutput):
                return ("output", a.port, a.max_len if a.port == ofp.OFPP_CONTROLLER else 0)
            if isinstance(a, p.OFPActionSetField):
                return ("set_field", ofp.oxm_from_user(a.key, a.value))
            return (type(a).__name__, tuple(sorted(
                (k, repr(v)) for k, v in vars(a).items() if k not in ("len", "type"))))

        out = []
        for i in instructions:
            if isinstance(i, p.OFPInstructionActions):
                out.append(("actions", i.type, tuple(action(a) for a in i.actions)))
            elif isinstance(i, p.OFPInstructionGotoTable):
                out.append(("goto", i.table_id))
            elif isinstance(i, p.OFPInstructionMeter):
                out.append(("meter", i.meter_id))
            else:
                out.append((type(i).__name__, repr(i)))
        return tuple(out)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _disconnected(self, ev):
        if ev.datapath is self.dp:
            self.dp = None
            self.classified.clear()
            self.sg_sent, self.sg_reads = {}, {}
            self._kept, self._kept_xid = [], None
            self._kept_classify, self._classify_xid = [], None
            self._kept_meters, self._meters_xid, self._meters_wait = None, None, False
            self._fenced = None
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
        cookie = ev.msg.cookie
        if cookie in self.core.installed.uses and self.dp is not None:
            # a tracked flow idled out: its close flows (no timeout) go too
            pipeline.send(self.dp, [pipeline.delete_cookie(self.dp, cookie)])
        self.core.flow_removed(cookie)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        """File the packet-in in the fair queue (no parsing: os-ken's own
        event queue, one FIFO for every event, must drain fast);
        _packet_worker serves it."""
        msg = ev.msg
        data = bytes(msg.data)
        match = msg.match
        fair = self.cfg.packet_in_fair
        if match.get("tunnel_id") == STATE_TUNNEL_KEY:  # flow state from another host
            if fair:
                self._enqueue(("state", match.get("tun_ipv4_src")), CONTROL,
                              (msg.datapath, 0, data, None, False))
            else:
                self.core.receive_state(data, match.get("tun_ipv4_src"))
            return
        buffer_id = msg.buffer_id if msg.buffer_id != msg.datapath.ofproto.OFP_NO_BUFFER \
            else None
        in_port = match["in_port"]
        # a close flow's copy of a FIN/RST the datapath forwarded itself: its
        # flow's cookie (the core closes the connection from what it recorded)
        copy = pipeline.close_copy(msg.table_id, msg.cookie) and msg.cookie
        if not fair:
            self._process(msg.datapath, in_port, data, buffer_id, copy)
            return
        # an ARP reply (may release held packets) goes before first packets
        klass = ARP if data[12:14] == b"\x08\x06" and data[20:22] == b"\x00\x02" else VM
        self._enqueue(in_port, klass, (msg.datapath, in_port, data, buffer_id, copy))

    def _port_info(self, ofport: int) -> tuple[str, int]:
        """(port id, weight) of a bound ofport: an uplink, metered at
        uplink_packet_in_rate for every tenant's north-south flows, gets as
        many packets per round-robin turn as its meter passes VM ports'."""
        info = self._ports_seen.get(ofport)
        if info is None or len(self.classified) != self._ports_seen_of:
            base = self.cfg.packet_in_rate
            self._ports_seen = {of: (pid, max(1, self._meter_rate(pid)[0] // base))
                                for pid, (of, _key) in self.classified.items()}
            self._ports_seen_of = len(self.classified)
            info = self._ports_seen.get(ofport, (str(ofport), 1))
        return info

    def _enqueue(self, key, klass: int, item: tuple) -> None:
        weight = self._port_info(key)[1] if isinstance(key, int) else 1
        if self.packets.put(key, item, klass, weight) is not None:
            self._queue_dropped(key)
        if not self._packets_wake.is_set():
            self._packets_wake.set()

    def _queue_dropped(self, key) -> None:
        """A port's queue was full: its oldest packet-in was dropped."""
        stats = self.core.stats
        stats["packet_in_queue_drops"] = stats.get("packet_in_queue_drops", 0) + 1
        name = self._port_info(key)[0] if isinstance(key, int) else "flow state"
        per = stats.setdefault("queue_drops", {})
        per[name] = per.get(name, 0) + 1

    def _packet_worker(self):
        """The one green thread that simulates packet-ins: serves the fair
        queue until it is empty, then waits for _enqueue."""
        while self.is_active:
            self._serve_packets()
            self._packets_wake.clear()
            self._packets_wake.wait(timeout=POLL_INTERVAL)

    def _serve_packets(self) -> int:
        """Serve the fair queue until it is empty: flow state, then ARP
        replies and released packets, then the ports' packet-ins round
        robin; yield to the other green threads after each
        PACKET_WORK_SLICE of work. Returns how many were served."""
        q = self.packets
        n = 0
        start = hub_time()
        while (nxt := q.get()) is not None:
            key, (dp, in_port, data, buffer_id, copy) = nxt
            n += 1
            try:
                if isinstance(key, tuple):
                    self.core.receive_state(data, key[1])
                elif dp is self.dp:  # not one of a lost connection
                    self._process(dp, in_port, data, buffer_id, copy)
            except Exception:  # one bad packet must not stop the worker
                LOG.exception("a packet-in from %s failed", key)
            if hub_time() - start >= PACKET_WORK_SLICE:
                hub.sleep(0)
                start = hub_time()
        return n

    def _send_emits(self, emits) -> None:
        """Frames the core sends on its own (a port's binding announced)."""
        dp = self.dp
        if dp is not None and emits:
            pipeline.send(dp, pipeline.emit_messages(dp, emits))

    def _replay(self, ofport: int, frame: bytes) -> None:
        """A held packet whose next hop is now resolved: simulate it again
        (queued with the ARP replies: before new first packets)."""
        if self.dp is None:
            return
        if pipeline.is_ipv4(frame) and self._sg_egress(ofport):
            # IPv4 of a port whose security groups OVS enforces: through the
            # whole pipeline again (table 0, its ct zone), never around it (a
            # packet held before the port was classified never passed it)
            dp = self.dp
            pipeline.send(dp, [pipeline.packet_out(
                dp, [dp.ofproto_parser.OFPActionOutput(dp.ofproto.OFPP_TABLE)], frame,
                in_port=ofport)])
            return
        if self.cfg.packet_in_fair:
            self._enqueue(ofport, ARP, (self.dp, ofport, frame, None, False))
        else:
            self._process(self.dp, ofport, frame, None)

    def _process(self, dp, in_port: int, data: bytes, buffer_id: int | None,
                 copy: bool = False) -> None:
        """Simulate one packet-in and send what its decision says; ``copy``:
        a close flow's copy (the datapath forwarded it), closing only."""
        try:
            fields = frames.parse(data)
        except frames.FrameError as e:  # dropped: no flow, no state, no learning
            self.core.note_malformed(getattr(e, "reason", "unparsable"))
            return
        try:
            decision = self.metrics.miss(self.core.handle_miss, in_port, fields, data, copy)
        except Exception:  # one bad packet must not stop the agent either
            LOG.exception("simulation failed for a packet from ofport %s", in_port)
            self.core.stats["malformed"] += 1
            return
        if decision is None:
            return
        flow_mod = dp.ofproto_parser.OFPFlowMod
        out = []
        for m in pipeline.decision_messages(dp, decision, in_port, data, buffer_id,
                                            self.cfg.idle_timeout):
            ok = pipeline.allowed(m)
            if isinstance(m, flow_mod) and m.priority == pipeline.PRIO_SIMULATED:
                if ok:  # a burst's queued packets each install the same flow:
                    # OVS keeps the last, the index must too
                    self.core.flow_replaced(tuple(sorted(m.match.items())), decision.cookie)
                else:
                    self.core.flow_removed(decision.cookie)
            if ok:
                out.append(m)
        pipeline.send_batch(dp, out)  # one write: pushes, flow, packet, answers in order

    # ---- decisions of the core --------------------------------------------
    def _delete_cookies(self, cookies: set[int]) -> None:
        dp = self.dp
        if dp is None:
            return
        pipeline.send(dp, [pipeline.delete_cookie(dp, c) for c in cookies])

    def _bindings_changed(self, change: BindingChange) -> None:
        dp = self.dp
        if dp is None:
            return
        # Waiting for the meters OVS kept (see _meter_config), only
        # ``classified`` changes: nothing was sent for these ports yet.
        wait = self._meters_wait
        for pid in change.removed:
            old = self.classified.pop(pid, None)
            if old and not wait:
                self._unclassify(dp, *old)
            self._sg_forget(dp, pid)
        keys = self.core.tunnel_keys()
        tunnels = sorted(self.core.tunnel_ofports.values())
        for pid, ofport in change.added.items():
            if pid not in keys:
                continue
            old = self.classified.pop(pid, None)
            if old and not wait:
                self._unclassify(dp, *old)
            if old:  # unclassified: its security-group flows went too
                self._sg_forget(dp, pid, flush=old[0] != ofport)
            self.classified[pid] = (ofport, keys[pid])
            # its security groups in OVS before any of its traffic is classified
            self._sg_update(dp, pid, ofport, keys[pid], tunnels)
            if not wait:
                self._classify(dp, pid, ofport, keys[pid], tunnels)
        if self.metadata is not None:
            for pid in (*change.removed, *change.added):
                old_meta = self.meta_sent.pop(pid, None)
                if old_meta is not None:
                    pipeline.send(dp, pipeline.delete_metadata_flows(dp, old_meta.ofport))
            self._metadata_sync()
        LOG.info("bindings: +%s -%s", sorted(change.added), sorted(change.removed))

    def _fence(self) -> None:
        """Table 0: the tunnel ports' and the metadata port's unmatched
        traffic dropped, not sent to the agent by the miss flow (which
        brings the packets of ports not classified yet)."""
        dp = self.dp
        if dp is None:
            return
        want = set(self.core.tunnel_ofports.values())
        if self.meta_ofport is not None and self.meta_ofport > 0:
            want.add(self.meta_ofport)
        old = self._fenced[1] if self._fenced is not None and self._fenced[0] is dp else None
        if old == want:
            return
        msgs = [pipeline.delete_fence_flows(dp)] if old is None else [
            pipeline.delete_fence_flows(dp, o) for o in old - want]
        pipeline.send(dp, [*msgs, *pipeline.fence_flows(dp, want - (old or set()))])
        self._fenced = (dp, frozenset(want))

    # ---- security groups in OVS (midoflow.agent.sgflows) -----------------------
    def _sg_loop(self):
        """Keep every bound port's security-group flows in line with the
        topology: at once after a change (the cache's invalidations wake it),
        for the ports whose flows were computed from what changed (their
        chains, groups, address groups: ``PortFlows.reads``); every port when
        the tunnels change, and every SG_FULL_SECONDS anyway."""
        while self.is_active:
            self._sg_wake.wait(timeout=POLL_INTERVAL)
            self._sg_wake.clear()
            dp = self.dp
            if dp is None:
                continue
            tags, self._sg_dirty = self._sg_dirty, set()
            try:
                tunnels = sorted(self.core.tunnel_ofports.values())
                now = time.monotonic()
                full = now - self._sg_full_at >= SG_FULL_SECONDS
                if full:
                    self._sg_full_at = now
                for pid, (ofport, key) in list(self.classified.items()):
                    sent, reads = self.sg_sent.get(pid), self.sg_reads.get(pid)
                    if full or sent is None or reads is None or reads & tags \
                            or sent.ofport != ofport or list(sent.tunnels) != tunnels:
                        self._sg_update(dp, pid, ofport, key, tunnels)
            except Exception:
                self._sg_dirty |= tags  # again at the next pass
                LOG.exception("security-group flows not updated (retrying)")

    def _nudge_loop(self):
        """While OVS enforces some port's security groups here: one packet
        through conntrack every NUDGE_SECONDS, so fragments its reassembly
        holds for a later batch (more than 32 of one datagram) go on within
        that time (``midoflow.agent.sgflows``)."""
        while self.is_active:
            hub.sleep(NUDGE_SECONDS)
            dp = self.dp
            if dp is None or not any(v.egress or v.ingress for v in self.sg_sent.values()):
                continue
            try:
                pipeline.send(dp, [pipeline.ct_nudge(dp)])
            except Exception:
                LOG.exception("conntrack nudge not sent")

    def _sg_update(self, dp, pid: str, ofport: int, key: int, tunnels: list[int]) -> None:
        """Send OVS what changed of a bound port's security-group flows:
        rules' flows added before the ones they replace are deleted, and the
        classify table's ct() flows after the tables they lead to."""
        if not self.cfg.sg_conntrack:
            return
        port = self.core.cache.ports.get(pid)
        skipped: list[str] = []
        if port is None:
            want = SgSent(ofport, False, False, tuple(tunnels), frozenset())
        else:
            pf = sgflows.port_flows(self.core.cache, port, ofport)
            skipped = pf.skipped
            self.sg_reads[pid] = pf.reads
            want = SgSent(ofport, conntrack_enforced(port, "inbound"),
                          conntrack_enforced(port, "outbound"), tuple(tunnels), pf.flows)
        sent = self.sg_sent.get(pid)
        if sent == want:
            return
        msgs: list = []
        old: frozenset = frozenset()
        if sent is None or sent.ofport != ofport:
            msgs += pipeline.delete_sg_flows(dp, ofport)  # the last connection's, if any
        else:
            old = sent.flows
        msgs += pipeline.sg_flow_mods(dp, ofport, sorted(want.flows - old, key=repr))
        msgs += pipeline.sg_flow_mods(dp, ofport, sorted(old - want.flows, key=repr),
                                      delete=True)
        if sent is None or sent[:4] != want[:4]:  # all but the flows
            msgs += pipeline.sg_classify_flows(dp, ofport, key, tunnels, want.egress,
                                               want.ingress)
        pipeline.send(dp, msgs)
        self.sg_sent[pid] = want
        for why in skipped:
            LOG.warning("port %s: a security-group rule admits nothing in OVS: %s", pid, why)
        self.core.stats["sg_flows"] = sum(len(v.flows) for v in self.sg_sent.values())

    def _sg_egress(self, ofport: int) -> bool:
        """Whether OVS enforces the security groups of what this ofport sends."""
        pid = self.core.port_of(ofport)
        sent = self.sg_sent.get(pid) if pid else None
        return sent is not None and sent.ofport == ofport and sent.egress

    def _sg_forget(self, dp, pid: str, flush: bool = True) -> None:
        """A port unclassified: its security-group flows are gone from OVS.
        ``flush``: unbound (or bound to another ofport): its zone's
        connections forgotten, so a port given that ofport later starts with none."""
        self.sg_reads.pop(pid, None)
        sent = self.sg_sent.pop(pid, None)
        if flush and sent is not None and (sent.egress or sent.ingress):
            pipeline.send(dp, [pipeline.ct_flush_zone(dp, sent.ofport)])

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

    # ---- proactive flows (midoflow.agent.proactive) ----------------------------
    def _proactive_loop(self):
        """Install the stateless flows the bound ports' next connections will
        take, before their first packet; again when one was invalidated,
        removed or became foreseeable (every PROACTIVE_INTERVAL)."""
        pro = self.core.proactive
        kept_since = None
        while self.is_active:
            # a plan that stopped at its budget goes on after a short yield
            hub.sleep(PROACTIVE_YIELD if pro.more else PROACTIVE_INTERVAL)
            dp = self.dp
            if dp is None or self._meters_wait or self.core.recovering:
                continue
            # the flows OVS kept are judged first (restart): one made now
            # would replace a kept one of the same match under a new cookie
            if self.core.flows.reserved:
                kept_since = kept_since or hub_time()
                if hub_time() - kept_since < 2 * KEPT_FLOWS_WAIT:
                    continue
            else:
                kept_since = None
            try:
                self._install_proactive(dp, pro.plan())
            except Exception:
                pro.more = False
                LOG.exception("proactive flows failed")

    def _install_proactive(self, dp, planned: list) -> None:
        msgs = []
        for ofport, decision in planned:
            flow = pipeline.decision_flow(dp, decision, ofport, self.cfg.idle_timeout,
                                          pipeline.actions_for(dp, decision))
            if pipeline.allowed(flow):
                self.core.flow_replaced(tuple(sorted(flow.match.items())), decision.cookie)
                msgs.append(flow)
            else:
                self.core.flow_removed(decision.cookie)
        pipeline.send_batch(dp, msgs)
        if msgs:
            self.core.stats["proactive"] = self.core.stats.get("proactive", 0) + len(msgs)

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
                pipeline.send(dp, [pipeline.storm_block_flow(dp, ofport, self.storm.seconds)])
                LOG.warning("port %s floods past %d packet-ins/s: everything from it is "
                            "dropped for %d s (storm control)", pid, rate, self.storm.seconds)
        self.core.stats["storm_blocked"] = dict(self.storm.blocked)

    # ---- metadata (midoflow.metadata) ------------------------------------------
    def _metadata_loop(self):
        """Plug the metadata port and serve the proxy; then keep the served
        ports' flows in line with the topology (at once after a binding
        change, else every second), plugging the port again if OVS lost it."""
        server = None
        while self.is_active:
            try:
                ofport = self.ovs.ofport(metadata_service.PORT_NAME)
                if ofport <= 0 or ofport != self.meta_ofport:
                    self.meta_ofport = metadata_service.plug(self.ovs, self.cfg.ovs_netns,
                                                             METADATA_MAC)
                    LOG.info("metadata port %s at ofport %d (169.254.169.254, upstream %s)",
                             metadata_service.PORT_NAME, self.meta_ofport,
                             self.cfg.metadata_upstream or "none: built-in answers")
                if server is None:
                    sock = metadata_service.listen(self.cfg.ovs_netns, METADATA_PORT)
                    server = hub.spawn(metadata_service.serve, sock, self.meta_proxy)
                    self.threads.append(server)
                self._metadata_sync()
            except Exception as e:
                LOG.error("metadata service not ready (retrying in %.0f s): %s",
                          POLL_INTERVAL * 5, e)
                hub.sleep(POLL_INTERVAL * 5)
                continue
            self._meta_wake.wait(timeout=POLL_INTERVAL)
            self._meta_wake.clear()

    def _metadata_sync(self) -> None:
        """Send OVS the flows of the ports to serve now, delete the others'."""
        dp, meta = self.dp, self.meta_ofport
        if dp is None or meta is None or self.metadata is None:
            return
        if self._meta_port_sent != (dp, meta):
            # A new connection (after a fast restart OVS still holds the last
            # run's metadata flows, some of ports unbound meanwhile) or the
            # port moved: all of them again. The adds follow the delete on the
            # same connection at once, so a request is steered all along.
            pipeline.send(dp, pipeline.delete_metadata_flows(dp))
            self.meta_sent = {}
            pipeline.send(dp, pipeline.metadata_port_flows(dp, meta))
            self._meta_port_sent = (dp, meta)
            self._fence()
        wanted = self.metadata.wanted(dict(self.core.bindings))
        for pid, st in list(self.meta_sent.items()):
            if wanted.get(pid) != st:
                pipeline.send(dp, pipeline.delete_metadata_flows(dp, st.ofport))
                del self.meta_sent[pid]
        for pid, st in wanted.items():
            if self.meta_sent.get(pid) != st:
                pipeline.send(dp, pipeline.metadata_steering_flows(
                    dp, meta, METADATA_MAC, st.ofport, st.address, st.vm_ip, st.vm_mac,
                    METADATA_PORT))
                self.meta_sent[pid] = st
