"""The agent's OpenFlow 1.3 pipeline, declared in one place.

Table 0 (CLASSIFY)
    * from a bound VM port → table 1;
    * from a tunnel port with the tunnel key of a local port → that port
      (egress delivery by key alone: the ingress host already simulated it);
    * anything else is dropped.
Table 1 (SIMULATED)
    * flows computed by the simulation, each with its own cookie and an idle
      timeout; a miss goes to the controller (packet-in) to be simulated.
"""

from __future__ import annotations

from midoflow.agent.core import Decision, Output, Tunnel

TABLE_CLASSIFY = 0
TABLE_SIMULATED = 1

PRIO_MISS = 0
PRIO_CLASSIFY = 100
PRIO_SIMULATED = 100

MATCH_FIELDS = {"in_port": "in_port", "eth_src": "eth_src", "eth_dst": "eth_dst"}


def _flow(dp, table, priority, match, instructions, **kw):
    p = dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, table_id=table, priority=priority, match=match,
                        instructions=instructions, **kw)


def base_flows(dp) -> list:
    """Wipe everything, then the fixed part of the pipeline."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    wipe = p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())
    miss = _flow(dp, TABLE_SIMULATED, PRIO_MISS, p.OFPMatch(), [
        p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
            p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])])
    drop = _flow(dp, TABLE_CLASSIFY, PRIO_MISS, p.OFPMatch(), [])
    return [wipe, drop, miss]


def classify_flows(dp, ofport: int, tunnel_key: int, tunnel_ofports: list[int]) -> list:
    """A local port: its traffic goes to simulation; tunnelled traffic for it
    is delivered straight to it."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    msgs = [_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY, p.OFPMatch(in_port=ofport),
                  [p.OFPInstructionGotoTable(TABLE_SIMULATED)])]
    for tp in tunnel_ofports:
        msgs.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY,
                          p.OFPMatch(in_port=tp, tunnel_id=tunnel_key),
                          [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                   [p.OFPActionOutput(ofport)])]))
    return msgs


def unclassify_flows(dp, ofport: int, tunnel_key: int) -> list:
    ofp, p = dp.ofproto, dp.ofproto_parser
    return [
        p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_CLASSIFY,
                     out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=m)
        for m in (p.OFPMatch(in_port=ofport), p.OFPMatch(tunnel_id=tunnel_key))
    ] + [
        # Flows simulated for packets that entered through this ofport.
        p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_SIMULATED,
                     out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                     match=p.OFPMatch(in_port=ofport))
    ]


def actions_for(dp, decision: Decision) -> list:
    p = dp.ofproto_parser
    out = []
    for a in decision.actions:
        if isinstance(a, Output):
            out.append(p.OFPActionOutput(a.ofport))
        elif isinstance(a, Tunnel):
            out += [p.OFPActionSetField(tunnel_id=a.key),
                    p.OFPActionSetField(tun_ipv4_dst=a.remote_ip),
                    p.OFPActionOutput(a.ofport)]
    return out


def decision_flow(dp, decision: Decision, fields: dict, idle_timeout: int, actions: list):
    """The flow for one simulated decision; matches only what it depended on."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    match = p.OFPMatch(**{MATCH_FIELDS[f]: fields[f] for f in sorted(decision.match_fields)
                          if f in MATCH_FIELDS})
    inst = [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return _flow(dp, TABLE_SIMULATED, PRIO_SIMULATED, match, inst, cookie=decision.cookie,
                 idle_timeout=idle_timeout, flags=ofp.OFPFF_SEND_FLOW_REM)


def delete_cookie(dp, cookie: int):
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_SIMULATED,
                        cookie=cookie, cookie_mask=0xFFFFFFFFFFFFFFFF,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())
