"""The agent's OpenFlow messages, built from os-ken's ``ofproto_v1_3`` and its
parser without a live switch: any object with ``ofproto`` and
``ofproto_parser`` serves as the datapath (``OFFLINE`` when there is none).
The tables, priorities and cookies are declared in ``midoflow.apps.tables``;
``send`` checks every flow-mod against them (``midoflow.apps.flowcheck``)
before it goes to OVS. ``decision_messages`` turns one simulated decision
into everything the switch must get for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import SimpleNamespace

from os_ken.ofproto import nicira_ext, ofproto_v1_3, ofproto_v1_3_parser

from midoflow.agent import sgflows
from midoflow.agent.core import Decision, Output, Tunnel
from midoflow.agent.flows import FlowIndex
from midoflow.apps import flowcheck, frames, mtu, oxm
from midoflow.apps.tables import (
    BGP_COOKIE,
    DECISION_COOKIE,
    FENCE_COOKIE,
    LOW_TTL,
    METADATA_COOKIE,
    PRIO_BGP,
    PRIO_CLASSIFY,
    PRIO_CLASSIFY_FRAG,
    PRIO_CLASSIFY_IP,
    PRIO_DHCP,
    PRIO_FENCE,
    PRIO_FRAGMENT,
    PRIO_LOW_TTL,
    PRIO_METADATA,
    PRIO_MISS,
    PRIO_SG_TOO_BIG,
    PRIO_SIMULATED,
    PRIO_STATE,
    PRIO_STORM,
    PRIO_TAGGED,
    PRIO_TCP_CLOSE,
    PRIO_TOO_BIG,
    SG_COOKIE,
    STORM_COOKIE,
    TABLE_CLASSIFY,
    TABLE_SG_EGRESS,
    TABLE_SG_INGRESS,
    TABLE_SIMULATED,
    TABLE_TO_CONTROLLER,
    UNBOUND_BURST,
    UNBOUND_METER,
    UNBOUND_RATE,
)
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.nat.conntrack import TCP_FIN, TCP_RST
from midoflow.sim.packet import ETH_ARP, ETH_IP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import Rewrite

__all__ = [
    "BGP_COOKIE", "BGP_PORT", "LOW_TTL", "OFFLINE", "OFPVID_PRESENT", "PACKET_IN_BURST",
    "PACKET_IN_RATE", "PRIO_BGP", "PRIO_CLASSIFY", "PRIO_DHCP", "PRIO_FRAGMENT", "PRIO_LOW_TTL",
    "PRIO_MISS", "PRIO_SIMULATED", "PRIO_STATE", "PRIO_STORM", "PRIO_TAGGED",
    "PRIO_TCP_CLOSE", "STORM_COOKIE", "TABLE_CLASSIFY", "TABLE_SIMULATED",
    "TABLE_TO_CONTROLLER", "TAG_ETHERTYPES", "actions_for", "allowed", "base_flows",
    "bgp_link_flows", "classify_flows", "close_copy", "close_flows", "decision_flow",
    "decision_messages", "ct_action", "ct_flush_zone", "ct_nudge", "sg_flow_mods",
    "delete_sg_flows",
    "sg_classify_flows", "is_ipv4",
    "delete_bgp_link_flows", "delete_cookie", "delete_fence_flows", "delete_meter",
    "fence_flows", "unbound_miss_flows", "match_kwargs", "meter_id",
    "meter_config_request", "meter_stats_request",
    "metered_drops", "output_actions", "packet_out", "port_meter", "rewrite_actions", "send",
    "send_batch", "storm_block_flow", "tagged_drop_flows", "to_controller_flow", "tracked",
    "unclassify_flows",
]

LOG = logging.getLogger("midoflow.agent")

OFFLINE = SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser, id=0)
"""A stand-in datapath: builds and serializes messages without a switch."""

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
BGP_PORT = 179
DHCP_SERVER_PORT = 67

_TP_FIELDS = {PROTO_TCP: ("tcp_src", "tcp_dst"), PROTO_UDP: ("udp_src", "udp_dst"),
              PROTO_ICMP: ("icmpv4_type", "icmpv4_code")}


def allowed(msg) -> bool:
    """Whether ``msg`` may be sent: a flow-mod the declared pipeline refuses
    is logged as an error (it is a bug of the code that built it)."""
    try:
        flowcheck.check(msg)
    except flowcheck.PipelineError as e:
        LOG.error("flow-mod not sent, the declared pipeline refuses it: %s", e)
        return False
    return True


def send(dp, msgs: Iterable) -> int:
    """Send each message the pipeline allows; returns how many were refused."""
    refused = 0
    for m in msgs:
        if allowed(m):
            dp.send_msg(m)
        else:
            refused += 1
    return refused


def send_batch(dp, msgs: list) -> None:
    """Hand ``msgs`` to os-ken in one write: serialized here, joined, and
    queued once (``Datapath.send_msg`` queues each message, and its sender
    thread writes each to the socket). A datapath without ``send`` (a test's)
    gets them one by one."""
    if not msgs:
        return
    send, set_xid = getattr(dp, "send", None), getattr(dp, "set_xid", None)
    if send is None or set_xid is None:
        for m in msgs:
            dp.send_msg(m)
        return
    bufs = []
    for m in msgs:
        if m.xid is None:
            set_xid(m)
        m.serialize()
        bufs.append(m.buf)
    send(b"".join(bufs))


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


def base_flows(dp, wipe: bool = True) -> list:
    """The fixed part of the pipeline; with ``wipe``, after deleting every flow
    and meter (without, it is added over what OVS holds: an add replaces the
    flow of the same table, priority and match, so it is idempotent)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    wipes = [p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                          out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch()),
             p.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=ofp.OFPM_ALL)] if wipe else []
    metered = _goto(dp, TABLE_TO_CONTROLLER)
    miss = _flow(dp, TABLE_SIMULATED, PRIO_MISS, p.OFPMatch(), metered)
    drop_ctl = _flow(dp, TABLE_TO_CONTROLLER, PRIO_MISS, p.OFPMatch(), [])
    to_ctl = [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
        p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])]
    # nw_ttl is an OVS extension field; OVS checks prerequisites in order, so
    # eth_type must come first (os-ken would put nw_ttl first).
    low_ttl = [_flow(dp, TABLE_SIMULATED, PRIO_LOW_TTL,
                     p.OFPMatch(_ordered_fields=[("eth_type", ETH_IP), ("nw_ttl", t)]), metered)
               for t in range(LOW_TTL)]
    state = _flow(dp, TABLE_CLASSIFY, PRIO_STATE, p.OFPMatch(tunnel_id=STATE_TUNNEL_KEY), to_ctl)
    # TCP FIN and RST reach the agent only for tracked connections: each
    # tracked decision brings its own close flows (``close_flows``).
    # ip_frag (NXM nw_frag) bit 0: any fragment, first or later.
    frags = _flow(dp, TABLE_SIMULATED, PRIO_FRAGMENT, p.OFPMatch(_ordered_fields=[
        ("eth_type", ETH_IP), ("ip_frag", (1, 1))]), metered)
    # DHCP from a VM always reaches the agent, which answers it itself.
    dhcp = _flow(dp, TABLE_SIMULATED, PRIO_DHCP, p.OFPMatch(
        eth_type=ETH_IP, ip_proto=PROTO_UDP, udp_dst=DHCP_SERVER_PORT), metered)
    return [*wipes, *unbound_miss_flows(dp), miss, drop_ctl, *low_ttl, state, frags, dhcp,
            *mtu.too_big_flows(dp, TABLE_TO_CONTROLLER, PRIO_TOO_BIG, PRIO_MISS),
            mtu.too_big_drop_flow(dp, TABLE_SG_INGRESS, PRIO_SG_TOO_BIG)]


def unbound_miss_flows(dp, rate: int = UNBOUND_RATE, burst: int = UNBOUND_BURST) -> list:
    """Table 0's miss: a packet of a port not classified (yet) goes to the
    agent through ONE shared meter (``midoflow.agent.unbound`` holds it until
    the port is bound). The meter is made afresh (deleting it takes the miss
    flow with it: the flow follows), so a reconnect that keeps the flows
    (fast restart) sends the same as one that wipes them."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    meter = [p.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=UNBOUND_METER),
             p.OFPMeterMod(dp, command=ofp.OFPMC_ADD,
                           flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS,
                           meter_id=UNBOUND_METER,
                           bands=[p.OFPMeterBandDrop(rate=rate, burst_size=burst)])]
    return [*meter, _flow(dp, TABLE_CLASSIFY, PRIO_MISS, p.OFPMatch(), [
        p.OFPInstructionMeter(UNBOUND_METER, ofp.OFPIT_METER),
        p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
            p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])])]


ALL_COOKIE_BITS = (1 << 64) - 1


def fence_flows(dp, ofports: Iterable[int]) -> list:
    """Table 0: what a tunnel port (an unknown tunnel key) or the metadata
    port sends that no flow above takes is dropped, never sent to the agent
    by the miss flow."""
    p = dp.ofproto_parser
    return [_flow(dp, TABLE_CLASSIFY, PRIO_FENCE, p.OFPMatch(in_port=o), [],
                  cookie=FENCE_COOKIE | o) for o in sorted(set(ofports))]


def delete_fence_flows(dp, ofport: int | None = None):
    """Delete one ofport's fence flow, or (None) every one (see fence_flows)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    cookie, mask = (FENCE_COOKIE, 0xFFFF << 48) if ofport is None \
        else (FENCE_COOKIE | ofport, ALL_COOKIE_BITS)
    return p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_CLASSIFY,
                        cookie=cookie, cookie_mask=mask,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())


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
                   rate: int = PACKET_IN_RATE, burst: int = PACKET_IN_BURST,
                   meter: int | None = None) -> list:
    """A local port: its meter and to-controller flow first (so no packet of
    it can reach table 2 before them), its tagged frames dropped, the rest of
    its traffic to simulation; tunnelled traffic for it delivered straight
    to it. ``meter``: None deletes the port's meter and adds it afresh
    (counters from zero); OFPMC_MODIFY keeps a meter OVS holds, counters and
    all, OFPMC_ADD adds a missing one (a reconnect: see meter_config_request)."""
    p = dp.ofproto_parser
    meter_msgs = [delete_meter(dp, ofport), port_meter(dp, ofport, rate, burst)] \
        if meter is None else [port_meter(dp, ofport, rate, burst, meter)]
    msgs = [*meter_msgs, to_controller_flow(dp, ofport), *tagged_drop_flows(dp, ofport),
            _flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY, p.OFPMatch(in_port=ofport),
                  _goto(dp, TABLE_SIMULATED))]
    for tp in tunnel_ofports:
        msgs.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY,
                          p.OFPMatch(in_port=tp, tunnel_id=tunnel_key),
                          _apply(dp, p.OFPActionOutput(ofport))))
    return msgs


def sg_classify_flows(dp, ofport: int, tunnel_key: int, tunnel_ofports: list[int],
                      egress: bool, ingress: bool) -> list:
    """Table 0's part of a port whose security groups are enforced here
    (``midoflow.agent.sgflows``): what it sends (``egress``) / what tunnels
    bring it (``ingress``), IPv4 only, through ``ct(zone=ofport)`` into table
    4 / 5, above the port's classify flows; deleted when not so."""
    p = dp.ofproto_parser
    out = []
    ip_from = p.OFPMatch(in_port=ofport, eth_type=ETH_IP)
    out.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_IP, ip_from, _apply(
        dp, ct_action(dp, ofport, TABLE_SG_EGRESS))) if egress
        else _delete_strict(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_IP, ip_from))
    # its fragments are committed here, once (see midoflow.agent.sgflows)
    frags_from = _ordered({"in_port": ofport, "eth_type": ETH_IP, "ip_frag": sgflows.FRAGMENT})
    out.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_FRAG, frags_from, _apply(
        dp, ct_action(dp, ofport, TABLE_SG_EGRESS, commit=True))) if egress
        else _delete_strict(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_FRAG, frags_from))
    for tp in tunnel_ofports:
        ip_to = p.OFPMatch(in_port=tp, tunnel_id=tunnel_key, eth_type=ETH_IP)
        out.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_IP, ip_to, _apply(
            dp, ct_action(dp, ofport, TABLE_SG_INGRESS))) if ingress
            else _delete_strict(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_IP, ip_to))
        frags_to = _ordered({"in_port": tp, "eth_type": ETH_IP, "tunnel_id": tunnel_key,
                             "ip_frag": sgflows.FRAGMENT})
        out.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_FRAG, frags_to, _apply(
            dp, ct_action(dp, ofport, TABLE_SG_INGRESS, commit=True))) if ingress
            else _delete_strict(dp, TABLE_CLASSIFY, PRIO_CLASSIFY_FRAG, frags_to))
    return out


def _apply(dp, *actions) -> list:
    return [dp.ofproto_parser.OFPInstructionActions(dp.ofproto.OFPIT_APPLY_ACTIONS,
                                                    list(actions))]


def _delete_strict(dp, table: int, priority: int, match):
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE_STRICT, table_id=table,
                        priority=priority, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                        match=match)


# ---- security groups in OVS (midoflow.agent.sgflows) -------------------------
NX_CT_F_COMMIT = 1
NXT_CT_FLUSH_ZONE = 29
NX_VENDOR_ID = 0x00002320
_SG_TABLES = {sgflows.EGRESS: TABLE_SG_EGRESS, sgflows.INGRESS: TABLE_SG_INGRESS}


def ct_action(dp, zone: int, table: int | None = None, commit: bool = False):
    """``ct(zone=zone[,commit][,table=table])``: to the connection tracker;
    with ``table`` a copy resumes there with its ct_state (ovs-actions(7))."""
    p = dp.ofproto_parser
    return p.NXActionCT(flags=NX_CT_F_COMMIT if commit else 0, zone_src="",
                        zone_ofs_nbits=zone, recirc_table=0xFF if table is None else table,
                        alg=0, actions=[])


def ct_nudge(dp):
    """A packet-out that passes conntrack and is dropped: fragments OVS's
    reassembly holds for the next batch through conntrack go on with it
    (``midoflow.agent.sgflows``). An invalid TCP segment (SYN and FIN) from
    and to 0.0.0.0, in zone 0, which no flow of table 5 matches."""
    return packet_out(dp, [ct_action(dp, 0, TABLE_SG_INGRESS)], _NUDGE_FRAME)


_NUDGE_FRAME = (b"\x02\x00\x00\x00\x00\x01" * 2 + b"\x08\x00"
                + bytes.fromhex("45000028000000004006") + b"\x00\x00" + b"\x00" * 8
                + b"\x00\x01\x00\x01" + b"\x00" * 8 + b"\x50\x03\x00\x00" + b"\x00" * 4)


def ct_flush_zone(dp, zone: int):
    """NXT_CT_FLUSH_ZONE: forget every connection of a zone (a port's, when
    its ofport is bound to another port or unbound)."""
    p = dp.ofproto_parser
    return p.OFPExperimenter(dp, NX_VENDOR_ID, NXT_CT_FLUSH_ZONE,
                             b"\x00" * 6 + zone.to_bytes(2, "big"))


# OXM order with every prerequisite before what needs it (OpenFlow 1.3 7.2.3.6;
# OVS refuses an ip_frag or port match that comes before its eth_type/ip_proto)
_ORDER = ("in_port", "eth_src", "eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "tcp_src",
          "tcp_dst", "udp_src", "udp_dst", "sctp_dst", "icmpv4_type", "icmpv4_code",
          "tunnel_id", "ct_state", "ct_zone", "ip_frag")


def _ordered(match: dict):
    return oxm.Match([(k, match[k]) for k in sorted(match, key=_ORDER.index)])


def sg_flow_mods(dp, ofport: int, flows: Iterable[sgflows.SgFlow],
                 delete: bool = False) -> list:
    """Adds (or strict deletes) of a port's security-group flows."""
    p = dp.ofproto_parser
    out = []
    for f in flows:
        table = _SG_TABLES[f.direction]
        match = _ordered(dict(f.match))
        if delete:
            out.append(_delete_strict(dp, table, f.priority, match))
            continue
        if f.action == sgflows.DROP:
            actions: list = []
        elif f.action == sgflows.AS_EGRESS:  # a stray fragment back on its port's way
            actions = _apply(dp, p.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(0, 15),
                                                   dst="in_port_nxm", value=ofport),
                             p.NXActionResubmitTable(in_port=0xFFF8, table_id=TABLE_SG_EGRESS))
        elif f.action == sgflows.AS_INGRESS:
            actions = _apply(dp, p.NXActionResubmitTable(in_port=0xFFF8,
                                                         table_id=TABLE_SG_INGRESS))
        else:
            acts = [ct_action(dp, ofport, commit=True)] if f.action == sgflows.COMMIT else []
            acts.append(p.NXActionResubmitTable(in_port=0xFFF8,  # OFPP_IN_PORT, 16 bits
                                                table_id=TABLE_SIMULATED)
                        if f.direction == sgflows.EGRESS else p.OFPActionOutput(ofport))
            actions = _apply(dp, *acts)
        out.append(_flow(dp, table, f.priority, match, actions, cookie=SG_COOKIE | ofport))
    return out


def delete_sg_flows(dp, ofport: int) -> list:
    """Every security-group flow of an ofport, in both tables."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return [p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=t,
                         cookie=SG_COOKIE | ofport, cookie_mask=ALL_COOKIE_BITS,
                         out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())
            for t in (TABLE_SG_EGRESS, TABLE_SG_INGRESS)]


ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF


def storm_block_flow(dp, ofport: int, seconds: int):
    """Table 0: drop everything from a port in a storm, for ``seconds``."""
    p = dp.ofproto_parser
    return _flow(dp, TABLE_CLASSIFY, PRIO_STORM, p.OFPMatch(in_port=ofport), [],
                 cookie=STORM_COOKIE | ofport, hard_timeout=seconds)


def meter_config_request(dp):
    """Ask which meters OVS holds (answered by OFPMeterConfigStatsReply)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL)


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
    ] + [*delete_sg_flows(dp, ofport), delete_meter(dp, ofport)]


def rewrite_actions(dp, rewrites: tuple[Rewrite, ...], proto: int | None = None) -> list:
    """Header rewrites as set-field / dec_ttl actions; ``proto`` (the packet's
    IP protocol) names the TCP or UDP port fields."""
    p = dp.ofproto_parser
    out = []
    for r in rewrites:
        if r.field in ("eth_src", "eth_dst"):
            out.append(oxm.SetField(**{r.field: r.value}))
        elif r.field == "ttl":
            out += [p.OFPActionDecNwTtl()] * int(r.value)
        elif r.field in ("ip_src", "ip_dst"):
            out.append(oxm.SetField(**{"ipv4_" + r.field[3:]: r.value}))
        elif r.field in ("tp_src", "tp_dst") and proto in (PROTO_TCP, PROTO_UDP):
            name = _TP_FIELDS[proto][0 if r.field == "tp_src" else 1]
            out.append(oxm.SetField(**{name: int(r.value)}))
    return out


def actions_for(dp, decision: Decision, fragment: bool | None = None) -> list:
    """The decision's actions for its packet (``fragment``: whether the frame
    sent is an IPv4 fragment; by default, whether its packet was one)."""
    pkt = decision.packet
    proto = pkt.ip_proto if pkt is not None else None
    if fragment is None:
        fragment = pkt is not None and bool(pkt.ip_frag)
    return output_actions(dp, decision.actions, decision.rewrites, proto,
                          ip=pkt is not None and pkt.eth_type == ETH_IP, fragment=fragment)


def is_ipv4(frame: bytes) -> bool:
    """Whether an Ethernet frame carries IPv4."""
    return frame[12:14] == b"\x08\x00"


def _is_fragment(frame: bytes) -> bool:
    """An IPv4 frame whose More Fragments bit or fragment offset is set."""
    return is_ipv4(frame) and len(frame) >= 22 and bool(int.from_bytes(frame[20:22], "big")
                                                       & 0x3FFF)


def output_actions(dp, outputs, rewrites: tuple[Rewrite, ...] = (),
                   proto: int | None = None, ip: bool = False, fragment: bool = False) -> list:
    """``ip``: the packet is IPv4 (an output to a port whose security groups
    are in OVS goes through its conntrack zone and table 5 instead; a
    ``fragment`` is committed there: see midoflow.agent.sgflows)."""
    p = dp.ofproto_parser
    out = rewrite_actions(dp, rewrites, proto) if outputs else []
    for a in outputs:
        if isinstance(a, Output):
            out.append(ct_action(dp, a.zone, TABLE_SG_INGRESS, commit=fragment)
                       if a.zone and ip else p.OFPActionOutput(a.ofport))
        elif isinstance(a, Tunnel):
            out += [oxm.SetField(tunnel_id=a.key),
                    oxm.SetField(tun_ipv4_dst=a.remote_ip),
                    p.OFPActionOutput(a.ofport)]
    return out


def decision_flow(dp, decision: Decision, ofport: int, idle_timeout: int, actions: list):
    """The flow for one simulated decision; matches only what it depended on.
    A path onto a smaller link sends bigger packets to the agent first
    (``midoflow.apps.mtu``)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    match = oxm.match(**match_kwargs(_match_fields(decision), decision.packet, ofport))
    actions = _flow_actions(decision, actions)
    inst = [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return _flow(dp, TABLE_SIMULATED, PRIO_SIMULATED, match, inst, cookie=decision.cookie,
                 idle_timeout=idle_timeout, flags=ofp.OFPFF_SEND_FLOW_REM)


def _match_fields(decision: Decision) -> frozenset[str]:
    """The fields a decision's flow matches: what it read, and the ethertype
    when it delivers IPv4 through a port's conntrack zone (ct() needs it)."""
    pkt = decision.packet
    if pkt is not None and pkt.eth_type == ETH_IP and "eth_type" not in decision.match_fields \
            and any(isinstance(a, Output) and a.zone for a in decision.actions):
        return decision.match_fields | {"eth_type"}
    return decision.match_fields


def _flow_actions(decision: Decision, actions: list) -> list:
    """A decision flow's actions: ``actions`` (``actions_for``), after the
    MTU check of a path onto a smaller link."""
    path_mtu = getattr(decision.result, "mtu", None)
    if actions and path_mtu is not None:
        recirc = any(isinstance(a, ofproto_v1_3_parser.NXActionCT) for a in actions)
        return [*mtu.check_actions(path_mtu, recirc), *actions]
    return list(actions)


def tracked(decision: Decision) -> bool:
    """Whether a decision's flow carries tracked TCP connections (conntrack,
    NAT, a reply of a tracked connection): their FIN and RST must reach the
    agent, which closes the connections (``close_flows``)."""
    pkt = decision.packet
    return bool(decision.uses) and pkt is not None and pkt.ip_proto == PROTO_TCP \
        and pkt.eth_type == ETH_IP


def close_flows(dp, decision: Decision, ofport: int, actions: list | None = None) -> list:
    """A tracked decision's FIN and RST: its own match plus ``tcp_flags``,
    above the decision's flow, under its cookie (deleted with it). Through
    the port's meter, an unmodified copy goes to the agent (which closes the
    connection and never forwards the copy: its packet-in's table_id is
    TABLE_SIMULATED), then the segment is forwarded in the datapath by the
    decision flow's own actions (``actions``: ``actions_for(dp, decision)``).
    No timeout: they would idle out under a long connection, whose flow
    lives on; the agent deletes them by cookie when the decision's flow goes
    (invalidation, or its flow-removed)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    if actions is None:
        actions = actions_for(dp, decision)
    kw = match_kwargs(_match_fields(decision), decision.packet, ofport)
    kw["eth_type"], kw["ip_proto"] = ETH_IP, PROTO_TCP
    fields = oxm.match(**kw)._fields2  # OXM order; the ONF field tcp_flags last
    inst = [p.OFPInstructionMeter(meter_id(ofport), ofp.OFPIT_METER),
            p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
                p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER),
                *_flow_actions(decision, actions)])]
    return [_flow(dp, TABLE_SIMULATED, PRIO_TCP_CLOSE,
                  oxm.Match([*fields, ("tcp_flags", (bit, bit))]), inst,
                  cookie=decision.cookie)
            for bit in (TCP_FIN, TCP_RST)]


def close_copy(table_id: int, cookie: int) -> bool:
    """Whether a packet-in (its ``table_id`` and ``cookie``) is a close
    flow's copy (``close_flows``): the datapath forwarded the segment, the
    agent must only close its connection. Table 2's flows (every other
    packet-in of a bound port) and table 0's carry other table ids."""
    return table_id == TABLE_SIMULATED and cookie & FlowIndex.COOKIE_MASK == DECISION_COOKIE


def delete_cookie(dp, cookie: int):
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_SIMULATED,
                        cookie=cookie, cookie_mask=0xFFFFFFFFFFFFFFFF,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())


def packet_out(dp, actions: list, data: bytes | None = None, in_port: int | None = None,
               buffer_id: int | None = None):
    """A packet-out: ``data`` (or the switch's buffer) through ``actions``, as
    if it entered by ``in_port`` (the controller when None)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPPacketOut(datapath=dp,
                          buffer_id=ofp.OFP_NO_BUFFER if buffer_id is None else buffer_id,
                          in_port=ofp.OFPP_CONTROLLER if in_port is None else in_port,
                          actions=actions, data=None if buffer_id is not None else data)


def emit_messages(dp, emits) -> list:
    """A packet-out for each frame the agent sends on its own paths (flow
    state, a binding announced)."""
    return [packet_out(dp, output_actions(dp, e.actions), e.frame) for e in emits]


def decision_messages(dp, decision: Decision, in_port: int, data: bytes,
                      buffer_id: int | None, idle_timeout: int) -> list:
    """Everything the switch gets for one decision, in the order to send:
    the flow-state pushes (they must reach other hosts before any reply),
    the packet itself, the decision's flow (when it is installed: after the
    packet, so OVS forwards it before it spends time adding the flow and
    revalidating its datapath flows; a packet of the same flow that comes
    meanwhile is simulated again and installs the same flow), then the
    frames the topology sends in answer. A frame whose rewrites cannot be
    made (``frames.apply_rewrites``) gets its pushes only."""
    msgs = emit_messages(dp, decision.pushes)
    try:  # what OpenFlow cannot set is rewritten in the packet itself
        frame = frames.apply_rewrites(data, decision.rewrites)
    except frames.FrameError:
        return msgs
    if frame is not data:
        buffer_id = None  # the switch's copy is not the packet to send
    actions = actions_for(dp, decision)  # the flow's (and, mostly, the packet's)
    sent = actions_for(dp, decision, True) if frame is not data and _is_fragment(frame) \
        else actions  # split by the agent: a fragment now (see output_actions)
    if sent:
        msgs.append(packet_out(dp, sent, frame, in_port, buffer_id))
    if decision.install:
        if tracked(decision):  # before the flow: no FIN can pass it unseen
            msgs += close_flows(dp, decision, in_port, actions)
        msgs.append(decision_flow(dp, decision, in_port, idle_timeout, actions))
    for em in decision.emits:
        acts = output_actions(dp, em.actions, em.rewrites, ip=is_ipv4(em.frame),
                              fragment=_is_fragment(em.frame))
        if acts:
            msgs.append(packet_out(dp, acts, em.frame))
    return msgs


# ---- metadata (midoflow.agent.metadata) -------------------------------------
METADATA_IP = "169.254.169.254"


def metadata_port_flows(dp, meta_ofport: int) -> list:
    """Table 0: IPv4 from the agent's metadata port goes on to table 1
    (where only the served ports' answer flows take it; the rest is dropped)."""
    p = dp.ofproto_parser
    return [_flow(dp, TABLE_CLASSIFY, PRIO_METADATA,
                  p.OFPMatch(in_port=meta_ofport, eth_type=ETH_IP),
                  _goto(dp, TABLE_SIMULATED), cookie=METADATA_COOKIE | meta_ofport)]


def metadata_steering_flows(dp, meta_ofport: int, meta_mac: str, vm_ofport: int,
                            address: str, vm_ip: str, vm_mac: str, port: int = 80) -> list:
    """Table 1, for one served VM port: its TCP to 169.254.169.254:``port``
    into the metadata port from ``address``; answers to ``address`` back to
    the VM, to its own address and MAC; its ARP for 169.254.169.254 to the
    agent (through the port's meter), which answers it."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    cookie = METADATA_COOKIE | vm_ofport

    def apply(*actions):
        return [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions))]

    out = _flow(dp, TABLE_SIMULATED, PRIO_METADATA, p.OFPMatch(
        in_port=vm_ofport, eth_type=ETH_IP, ip_proto=PROTO_TCP, ipv4_dst=METADATA_IP,
        tcp_dst=port), apply(p.OFPActionSetField(ipv4_src=address),
                             p.OFPActionSetField(eth_dst=meta_mac),
                             p.OFPActionOutput(meta_ofport)), cookie=cookie)
    back = _flow(dp, TABLE_SIMULATED, PRIO_METADATA, p.OFPMatch(
        in_port=meta_ofport, eth_type=ETH_IP, ipv4_dst=address),
        apply(p.OFPActionSetField(ipv4_dst=vm_ip), p.OFPActionSetField(eth_dst=vm_mac),
              p.OFPActionOutput(vm_ofport)), cookie=cookie)
    arp = _flow(dp, TABLE_SIMULATED, PRIO_METADATA, p.OFPMatch(
        in_port=vm_ofport, eth_type=ETH_ARP, arp_tpa=METADATA_IP),
        _goto(dp, TABLE_TO_CONTROLLER), cookie=cookie)
    return [out, back, arp]


def delete_metadata_flows(dp, ofport: int | None = None) -> list:
    """Delete the metadata flows of one served VM port (by its ofport), or
    (None) every metadata flow in tables 0 and 1."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    if ofport is None:
        return [p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=t,
                             cookie=METADATA_COOKIE, cookie_mask=0xFFFF << 48,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())
                for t in (TABLE_CLASSIFY, TABLE_SIMULATED)]
    return [p.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=TABLE_SIMULATED,
                         cookie=METADATA_COOKIE | ofport, cookie_mask=(1 << 64) - 1,
                         out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch())]
