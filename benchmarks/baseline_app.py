"""The baseline controller for flow-setup benchmarks: the minimal os-ken app.

It answers every packet-in with one exact-match flow-mod (in_port, eth_src,
eth_dst) and one packet-out to a fixed port: the ceiling of a naive reactive
design, with no simulation and no state. Output port: env BASELINE_OUT_PORT
(default: flood).
"""

from __future__ import annotations

import os

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3


class BaselineApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev):
        dp = ev.msg.datapath
        ofp, p = dp.ofproto, dp.ofproto_parser
        dp.send_msg(p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                                 out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                                 match=p.OFPMatch()))
        dp.send_msg(p.OFPFlowMod(datapath=dp, table_id=0, priority=0, match=p.OFPMatch(),
                                 instructions=[p.OFPInstructionGotoTable(1)]))
        dp.send_msg(p.OFPFlowMod(datapath=dp, table_id=1, priority=0, match=p.OFPMatch(),
                                 instructions=[p.OFPInstructionActions(
                                     ofp.OFPIT_APPLY_ACTIONS,
                                     [p.OFPActionOutput(ofp.OFPP_CONTROLLER,
                                                        ofp.OFPCML_NO_BUFFER)])]))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp, p = dp.ofproto, dp.ofproto_parser
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None:
            return
        in_port = msg.match["in_port"]
        out = int(os.environ.get("BASELINE_OUT_PORT", ofp.OFPP_FLOOD))
        actions = [p.OFPActionOutput(out)]
        dp.send_msg(p.OFPFlowMod(
            datapath=dp, table_id=1, priority=100, idle_timeout=60,
            match=p.OFPMatch(in_port=in_port, eth_src=eth.src, eth_dst=eth.dst),
            instructions=[p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]))
        dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                   actions=actions, data=msg.data))
