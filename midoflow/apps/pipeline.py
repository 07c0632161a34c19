"""The agent's OpenFlow 1.3 pipeline, declared in one place.

Table 0 (CLASSIFY)
    * flow state from another host's agent (the reserved tunnel key) → the
      controller, straight (not metered per VM port: it is the hosts' own
      traffic, and a reply may depend on it);
    * from a VM port in a storm (its meter dropped far more than it passed,
      see ``midoflow.agent.storm``): everything, for a few seconds (a hard
      timeout), by one flow that OVS's datapath applies without an upcall;
    * from a bound VM port: a tagged frame (802.1Q or 802.1ad VLAN present, or
      the ethertypes 0x8100, 0x88a8, 0x9100) is dropped (ports are
      VLAN-unaware: a tag must never ride a flow made for untagged traffic);
      anything else → table 1;
    * from a tunnel port with the tunnel key of a local port → that port
      (egress delivery by key alone: the ingress host already simulated it);
    * anything else is dropped.
Table 1 (SIMULATED)
    * TCP FIN and RST segments → table 2 (they close connections);
    * IPv4 fragments (first and later) always → table 2: a first fragment is
      simulated and its decision remembered (``midoflow.agent.fragments``);
      later fragments, which carry no ports, follow it or are dropped. No
      flow made for unfragmented packets may carry a first fragment past the
      agent (its later fragments would then find no decision);
    * IPv4 packets with a TTL below ``LOW_TTL`` always → table 2 (OpenFlow
      cannot match "TTL > n", and a router on the path may have to answer with
      ICMP time exceeded: traceroute works, nothing expires in OVS);
    * flows computed by the simulation, each with its own cookie and an idle
      timeout, matching only the fields the decision read; a miss → table 2,
      to be simulated.
Table 2 (TO_CONTROLLER)
    * one flow per bound port (its ``in_port``): that port's meter (a drop
      band of ``packet_in_rate`` packets per second with a burst of
      ``packet_in_burst``; meter id = the ofport), then the controller. One VM
      flooding new flows or malformed frames loses its own excess packet-ins
      in OVS; the others' first packets still reach the agent at once;
    * anything else is dropped (nothing else reaches table 1).
"""

from __future__ import annotations

from midoflow.agent.core import Decision, Output, Tunnel
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.nat.conntrack import TCP_FIN, TCP_RST
from midoflow.sim.packet import ETH_ARP, ETH_IP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import Rewrite

TABLE_CLASSIFY = 0
TABLE_SIMULATED = 1
TABLE_TO_CONTROLLER = 2

PRIO_MISS = 0
PRIO_CLASSIFY = 100
PRIO_SIMULATED = 100
PRIO_LOW_TTL = 200
PRIO_TCP_CLOSE = 150
PRIO_FRAGMENT = 190
PRIO_STATE = 300
PRIO_BGP = 250
PRIO_TAGGED = 280  # above the goto and the BGP link's flows of the same port
PRIO_STORM = 290
# Storm-control flows carry this cookie (| the ofport).
STORM_COOKIE = 0x5702 << 48
# Ethertypes of a tagged frame: 802.1Q, 802.1ad (QinQ), and the older 0x9100
# QinQ tag, which OVS does not parse as a VLAN.
TAG_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
OFPVID_PRESENT = 0x1000
# Packet-in meter defaults (per bound port; the agent's config overrides):
# 1000/s is a fifth of what one agent simulates here (about 5,000 new flows/s),
# far above any honest VM's rate of new connections; 200 lets a VM open a
# burst of connections at once (a browser, a boot) without losing one.
PACKET_IN_RATE = 1000
PACKET_IN_BURST = 200
# Flows of a BGP link carry this cookie (| the link's ofport): no simulated
# flow's cookie has these high bits (see midoflow.agent.flows.FlowIndex).
BGP_COOKIE = 0xB6B0 << 48
BGP_PORT = 179
# More routers than this in one simulated flow is impossible (MAX_DEVICES).
LOW_TTL = 8

_TP_FIELDS = {PROTO_TCP: ("tcp_src", "tcp_dst"), PROTO_UDP: ("udp_src", "udp_dst"),
              PROTO_ICMP: ("icmpv4_type", "icmpv4_code")}


def match_kwargs(fields: frozenset[str], pkt: Packet, ofport: int) -> dict:
    """OpenFlow match of a decision: the fields it read, with their
    prerequisites (eth_type under IP/ARP fields, ip_proto under ports)."""
    m: dict = {"in_port": ofport}
    for f in ("eth_src", "eth_dst"):
        if f in fields:
            m[f] = getattr(pkt, f)
    if fields - {"in_port", "eth_src", "eth_dst"}:  # any L3 field needs its eth_type
        m["eth_type"] = pkt.eth_type
    if pkt.eth_type == ETH_IP:
        if "ip_src" in fields and pkt.ip_src:
            m["ipv4_src"] = pkt.ip_src
        if "ip_dst" in fields and pkt.ip_dst:
            m["ipv4_dst"] = pkt.ip_dst
        if "ip_tos" in fields:
            m["ip_dscp"], m["ip_ecn"] = pkt.ip_tos >> 2, pkt.ip_tos & 3
        tp = fields & {"tp_src", "tp_dst"}
        if ("ip_proto" in fields or tp) and pkt.ip_proto is not None:
            m["ip_proto"] = pkt.ip_proto
            names = _TP_FIELDS.get(pkt.ip_proto)
            if names:
                for f, name in zip(("tp_src", "tp_dst"), names, strict=True):
                    if f in tp and getattr(pkt, f) is not None:
                        m[name] = getattr(pkt, f)
    elif pkt.eth_type == ETH_ARP:
        if "arp_op" in fields and pkt.arp_op is not None:
            m["arp_op"] = pkt.arp_op
        if "arp_tpa" in fields and pkt.arp_tpa:
            m["arp_tpa"] = pkt.arp_tpa
        if "arp_spa" in fields and pkt.arp_spa:
            m["arp_spa"] = pkt.arp_spa
        if "arp_sha" in fields and pkt.arp_sha:
            m["arp_sha"] = pkt.arp_sha
    return m


def _flow(dp, table, priority, match, instructions, **kw):
    p = dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, table_id=table, priority=priority, match=match,
                        instructions=instructions, **kw)


def _goto(dp, table: int) -> list:
    return [dp.ofproto_parser.OFPInstructionGotoTable(table)]


def base_flows(dp) -> list:
    """Wipe every flow and meter, then the fixed part of the pipeline."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    wipe = p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())
    wipe_meters = p.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=ofp.OFPM_ALL)
    metered = _goto(dp, TABLE_TO_CONTROLLER)
    miss = _flow(dp, TABLE_SIMULATED, PRIO_MISS, p.OFPMatch(), metered)
    drop = _flow(dp, TABLE_CLASSIFY, PRIO_MISS, p.OFPMatch(), [])
    drop_ctl = _flow(dp, TABLE_TO_CONTROLLER, PRIO_MISS, p.OFPMatch(), [])
    to_ctl = [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
        p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])]
    # nw_ttl is an OVS extension field; OVS checks prerequisites in order, so
    # eth_type must come first (os-ken would put nw_ttl first).
    low_ttl = [_flow(dp, TABLE_SIMULATED, PRIO_LOW_TTL,
                     p.OFPMatch(_ordered_fields=[("eth_type", ETH_IP), ("nw_ttl", t)]), metered)
               for t in range(LOW_TTL)]
    state = _flow(dp, TABLE_CLASSIFY, PRIO_STATE, p.OFPMatch(tunnel_id=STATE_TUNNEL_KEY), to_ctl)
    # TCP FIN and RST always reach the agent (forwarded by packet-out): they
    # close tracked connections, which a flow would never tell it.
    close = [_flow(dp, TABLE_SIMULATED, PRIO_TCP_CLOSE, p.OFPMatch(_ordered_fields=[
        ("eth_type", ETH_IP), ("ip_proto", PROTO_TCP), ("tcp_flags", (bit, bit))]), metered)
        for bit in (TCP_FIN, TCP_RST)]
    # ip_frag (NXM nw_frag) bit 0: any fragment, first or later.
    frags = _flow(dp, TABLE_SIMULATED, PRIO_FRAGMENT, p.OFPMatch(_ordered_fields=[
        ("eth_type", ETH_IP), ("ip_frag", (1, 1))]), metered)
    return [wipe, wipe_meters, drop, miss, drop_ctl, *low_ttl, state, *close, frags]


def meter_id(ofport: int) -> int:
    """A bound port's packet-in meter: its ofport (unique on the bridge, and
    far below OpenFlow's largest meter id)."""
    return ofport


def port_meter(dp, ofport: int, rate: int = PACKET_IN_RATE, burst: int = PACKET_IN_BURST,
               command: int | None = None):
    """The meter-mod that adds (or, with ``command``, modifies) a port's
    packet-in meter: one drop band, in packets per second, with counters."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPMeterMod(dp, command=ofp.OFPMC_ADD if command is None else command,
                         flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS,
                         meter_id=meter_id(ofport),
                         bands=[p.OFPMeterBandDrop(rate=rate, burst_size=burst)])


def delete_meter(dp, ofport: int):
    """Delete a port's meter (OVS removes the flows that use it too; deleting
    a meter that does not exist is no error)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=meter_id(ofport))


def to_controller_flow(dp, ofport: int):
    """Table 2: what the port sends to the agent, through the port's meter."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return _flow(dp, TABLE_TO_CONTROLLER, PRIO_CLASSIFY, p.OFPMatch(in_port=ofport), [
        p.OFPInstructionMeter(meter_id(ofport), ofp.OFPIT_METER),
        p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
            p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])])


def tagged_drop_flows(dp, ofport: int) -> list:
    """Table 0: tagged frames from a VM-facing port are dropped."""
    p = dp.ofproto_parser
    matches = [p.OFPMatch(in_port=ofport, vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT))]
    matches += [p.OFPMatch(in_port=ofport, eth_type=t) for t in TAG_ETHERTYPES]
    return [_flow(dp, TABLE_CLASSIFY, PRIO_TAGGED, m, []) for m in matches]


def classify_flows(dp, ofport: int, tunnel_key: int, tunnel_ofports: list[int],
                   rate: int = PACKET_IN_RATE, burst: int = PACKET_IN_BURST) -> list:
    """A local port: its meter and to-controller flow first (so no packet of
    it can reach table 2 before them), its tagged frames dropped, the rest of
    its traffic to simulation; tunnelled traffic for it delivered straight
    to it."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    msgs = [delete_meter(dp, ofport), port_meter(dp, ofport, rate, burst),
            to_controller_flow(dp, ofport), *tagged_drop_flows(dp, ofport),
            _flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY, p.OFPMatch(in_port=ofport),
                  _goto(dp, TABLE_SIMULATED))]
    for tp in tunnel_ofports:
        msgs.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY,
                          p.OFPMatch(in_port=tp, tunnel_id=tunnel_key),
                          [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                   [p.OFPActionOutput(ofport)])]))
    return msgs


def storm_block_flow(dp, ofport: int, seconds: int):
    """Table 0: drop everything from a port in a storm, for ``seconds``."""
    p = dp.ofproto_parser
    return _flow(dp, TABLE_CLASSIFY, PRIO_STORM, p.OFPMatch(in_port=ofport), [],
                 cookie=STORM_COOKIE | ofport, hard_timeout=seconds)


def meter_stats_request(dp):
    """Ask for every meter's counters (answered by OFPMeterStatsReply)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPMeterStatsRequest(dp, 0, ofp.OFPM_ALL)


def metered_drops(stats, ports_by_meter: dict[int, str]) -> dict[str, int]:
    """Packets each port's meter dropped, by port id, from the bodies of meter
    stats replies (meters of no current port are left out)."""
    out: dict[str, int] = {}
    for s in stats:
        pid = ports_by_meter.get(s.meter_id)
        if pid is not None:
            out[pid] = sum(b.packet_band_count for b in s.band_stats)
    return out


def bgp_link_flows(dp, link_ofport: int, uplink_ofport: int, ip: str) -> list:
    """A gateway's BGP link (see midoflow.bgp.link): everything the speaker's
    kernel sends goes out of the uplink as it is; from the uplink, BGP to or
    from the port's address goes to the link, and ARP for that address goes
    to the link and on to simulation (the router answers and learns too)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    to_link = [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [p.OFPActionOutput(link_ofport)])]
    cookie = BGP_COOKIE | link_ofport
    msgs = [_flow(dp, TABLE_CLASSIFY, PRIO_BGP, p.OFPMatch(in_port=link_ofport), [
        p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [p.OFPActionOutput(uplink_ofport)])],
        cookie=cookie)]
    for tp in ("tcp_dst", "tcp_src"):
        msgs.append(_flow(dp, TABLE_CLASSIFY, PRIO_BGP, p.OFPMatch(
            in_port=uplink_ofport, eth_type=ETH_IP, ip_proto=PROTO_TCP, ipv4_dst=ip,
            **{tp: BGP_PORT}), to_link, cookie=cookie))
    msgs.append(_flow(dp, TABLE_CLASSIFY, PRIO_BGP, p.OFPMatch(
        in_port=uplink_ofport, eth_type=ETH_ARP, arp_tpa=ip),
        [*to_link, p.OFPInstructionGotoTable(TABLE_SIMULATED)], cookie=cookie))
    return msgs


def delete_bgp_link_flows(dp, link_ofport: int):
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_CLASSIFY,
                        cookie=BGP_COOKIE | link_ofport, cookie_mask=0xFFFFFFFFFFFFFFFF,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())


def unclassify_flows(dp, ofport: int, tunnel_key: int) -> list:
    """Everything a port's binding installed: its classify flows (tagged
    drops included), the flows simulated for its packets, its to-controller
    flow, then its meter."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return [
        p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_CLASSIFY,
                     out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=m)
        for m in (p.OFPMatch(in_port=ofport), p.OFPMatch(tunnel_id=tunnel_key))
    ] + [
        # Flows simulated for packets that entered through this ofport, and
        # the port's way to the controller.
        p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=table,
                     out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                     match=p.OFPMatch(in_port=ofport))
        for table in (TABLE_SIMULATED, TABLE_TO_CONTROLLER)
    ] + [delete_meter(dp, ofport)]


def rewrite_actions(dp, rewrites: tuple[Rewrite, ...], proto: int | None = None) -> list:
    """Header rewrites as set-field / dec_ttl actions; ``proto`` (the packet's
    IP protocol) names the TCP or UDP port fields."""
    p = dp.ofproto_parser
    out = []
    for r in rewrites:
        if r.field in ("eth_src", "eth_dst"):
            out.append(p.OFPActionSetField(**{r.field: r.value}))
        elif r.field == "ttl":
            out += [p.OFPActionDecNwTtl()] * int(r.value)
        elif r.field in ("ip_src", "ip_dst"):
            out.append(p.OFPActionSetField(**{"ipv4_" + r.field[3:]: r.value}))
        elif r.field in ("tp_src", "tp_dst") and proto in (PROTO_TCP, PROTO_UDP):
            name = _TP_FIELDS[proto][0 if r.field == "tp_src" else 1]
            out.append(p.OFPActionSetField(**{name: int(r.value)}))
    return out


def actions_for(dp, decision: Decision) -> list:
    proto = decision.packet.ip_proto if decision.packet is not None else None
    return output_actions(dp, decision.actions, decision.rewrites, proto)


def output_actions(dp, outputs, rewrites: tuple[Rewrite, ...] = (),
                   proto: int | None = None) -> list:
    p = dp.ofproto_parser
    out = rewrite_actions(dp, rewrites, proto) if outputs else []
    for a in outputs:
        if isinstance(a, Output):
            out.append(p.OFPActionOutput(a.ofport))
        elif isinstance(a, Tunnel):
            out += [p.OFPActionSetField(tunnel_id=a.key),
                    p.OFPActionSetField(tun_ipv4_dst=a.remote_ip),
                    p.OFPActionOutput(a.ofport)]
    return out


def decision_flow(dp, decision: Decision, ofport: int, idle_timeout: int, actions: list):
    """The flow for one simulated decision; matches only what it depended on."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    match = p.OFPMatch(**match_kwargs(decision.match_fields, decision.packet, ofport))
    inst = [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return _flow(dp, TABLE_SIMULATED, PRIO_SIMULATED, match, inst, cookie=decision.cookie,
                 idle_timeout=idle_timeout, flags=ofp.OFPFF_SEND_FLOW_REM)


def delete_cookie(dp, cookie: int):
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_SIMULATED,
                        cookie=cookie, cookie_mask=0xFFFFFFFFFFFFFFFF,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())
