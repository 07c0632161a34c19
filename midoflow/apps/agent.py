"""The midoflow agent: an os-ken app, one per host, run by osken-manager.

Thin glue: os-ken events become calls of :class:`midoflow.agent.core.AgentCore`
and its decisions become OpenFlow messages (see :mod:`midoflow.apps.pipeline`).
The configuration file is named by ``MIDOFLOW_AGENT_CONFIG`` (set by the
``midoflow-agent`` launcher).
"""

from __future__ import annotations

import logging
import os

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3

from midoflow.agent.config import AgentConfig
from midoflow.agent.core import AgentCore, BindingChange
from midoflow.apps import ofp_unix, ovsdb, pipeline
from midoflow.store.factory import make_store

LOG = logging.getLogger("midoflow.agent")

POLL_INTERVAL = 1.0
ofp_unix.apply()  # OVS may reach us on a unix socket (from another netns)


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
        self.store = make_store(self.cfg.zookeeper, handler="eventlet")
        self.core = AgentCore(self.cfg, self.store, on_invalidate=self._delete_cookies,
                              on_bindings=self._bindings_changed, spawn=hub.spawn)
        self._poke = hub.Event()

    def start(self):
        thread = super().start()
        self.core.start()
        self.threads.append(hub.spawn(self._ovsdb_loop))
        LOG.info("agent for host %s started (tunnel ip %s)", self.cfg.host_id, self.cfg.tunnel_ip)
        return thread

    def stop(self):
        try:
            self.store.close()
        finally:
            super().stop()

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
            self._poke.wait(timeout=POLL_INTERVAL)
            self._poke.clear()

    # ---- OpenFlow ---------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev):
        dp = ev.msg.datapath
        self.dp = dp
        for m in pipeline.base_flows(dp):
            dp.send_msg(m)
        self.classified.clear()
        self.core.flows.clear()
        # Re-install the classify flows of every current binding.
        self.core.bindings = {}
        self.core.set_connected(True)
        self.core.recompute_bindings()
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

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev):
        self.core.flow_removed(ev.msg.cookie)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        try:
            eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        except Exception:  # a malformed frame must never hurt the agent
            eth = None
        if eth is None:
            self.core.stats["malformed"] += 1
            return
        in_port = msg.match["in_port"]
        decision = self.core.handle_miss(in_port, eth.src, eth.dst, eth.ethertype)
        if decision is None:
            return
        actions = pipeline.actions_for(dp, decision)
        fields = {"in_port": in_port, "eth_src": eth.src, "eth_dst": eth.dst}
        dp.send_msg(pipeline.decision_flow(dp, decision, fields, self.cfg.idle_timeout, actions))
        if actions:
            p, ofp = dp.ofproto_parser, dp.ofproto
            data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
            dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id, in_port=in_port,
                                       actions=actions, data=data))

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
            for m in pipeline.classify_flows(dp, ofport, keys[pid], tunnels):
                dp.send_msg(m)
        LOG.info("bindings: +%s -%s", sorted(change.added), sorted(change.removed))
