"""The OpenFlow pipeline (midoflow.apps.pipeline) without a switch: each
message is built against a fake datapath, serialized to the bytes OVS would
get, and parsed back by os-ken to check what it says."""

from __future__ import annotations

import itertools
import struct
from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from midoflow.agent.clock import FakeClock
from midoflow.agent.core import Decision, Output, Tunnel
from midoflow.agent.storm import StormControl
from midoflow.apps import pipeline as pl
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.sim.packet import ETH_ARP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import Rewrite

ofp, parser = ofproto_v1_3, ofproto_v1_3_parser
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
_xids = itertools.count(1)


class FakeDatapath:
    """What os-ken's message classes need of a datapath to serialize."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1


DP = FakeDatapath()


def _meter_mod(buf: bytes) -> SimpleNamespace:
    """Decode an ofp_meter_mod as OpenFlow 1.3 (7.3.4.4) lays it out (os-ken
    3.1 cannot parse one back): command, flags, meter id, then bands of
    type, length, rate, burst size and 4 bytes of padding."""
    command, flags, meter_id = struct.unpack_from("!HHI", buf, 8)
    bands, off = [], 16
    while off < len(buf):
        btype, blen, rate, burst = struct.unpack_from("!HHII", buf, off)
        assert blen == 16 and btype == ofp.OFPMBT_DROP
        bands.append(parser.OFPMeterBandDrop(rate=rate, burst_size=burst))
        off += blen
    assert off == len(buf)
    return SimpleNamespace(kind="meter_mod", command=command, flags=flags,
                           meter_id=meter_id, bands=bands)


def wire(msg):
    """Serialize as os-ken would send it, and parse the bytes back."""
    msg.set_xid(next(_xids))
    msg.serialize()
    buf = bytes(msg.buf)
    version, msg_type, msg_len, xid = ofproto_parser.header(buf)
    assert (version, msg_len, xid) == (ofp.OFP_VERSION, len(buf), msg.xid)
    if msg_type == ofp.OFPT_METER_MOD:
        return _meter_mod(buf)
    return ofproto_parser.msg(DP, version, msg_type, msg_len, xid, buf)


def is_meter_mod(m) -> bool:
    return getattr(m, "kind", None) == "meter_mod"


def flows(msgs, table=None):
    out = [m for m in map(wire, msgs) if isinstance(m, parser.OFPFlowMod)
           and m.command == ofp.OFPFC_ADD]
    return [m for m in out if table is None or m.table_id == table]


def instr(flow, cls):
    return [i for i in flow.instructions if isinstance(i, cls)]


def sends_to_controller(flow) -> bool:
    return any(isinstance(a, parser.OFPActionOutput) and a.port == ofp.OFPP_CONTROLLER
               for i in instr(flow, parser.OFPInstructionActions) for a in i.actions)


def goes_to(flow, table) -> bool:
    return any(i.table_id == table for i in instr(flow, parser.OFPInstructionGotoTable))


# ------------------------------------------------------------------ base flows
def test_base_flows_wipe_flows_and_meters():
    msgs = [wire(m) for m in pl.base_flows(DP)]
    wipe = msgs[0]
    assert isinstance(wipe, parser.OFPFlowMod) and wipe.command == ofp.OFPFC_DELETE
    assert wipe.table_id == ofp.OFPTT_ALL
    meters = [m for m in msgs if is_meter_mod(m)]
    assert [(m.command, m.meter_id) for m in meters] == [
        (ofp.OFPMC_DELETE, ofp.OFPM_ALL),  # the wipe; then the shared meter of table 0's miss
        (ofp.OFPMC_DELETE, pl.UNBOUND_METER), (ofp.OFPMC_ADD, pl.UNBOUND_METER)]


def test_everything_a_vm_sends_to_the_agent_goes_through_table_2():
    table1 = flows(pl.base_flows(DP), pl.TABLE_SIMULATED)
    # miss, low TTLs, fragments, DHCP (FIN and RST: per tracked decision only)
    assert len(table1) == 1 + pl.LOW_TTL + 1 + 1
    assert not [f for f in table1 if "tcp_flags" in f.match]
    for f in table1:
        assert goes_to(f, pl.TABLE_TO_CONTROLLER) and not sends_to_controller(f), f
    miss = [f for f in table1 if f.priority == pl.PRIO_MISS]
    assert len(miss) == 1 and not miss[0].match.fields
    ttls = sorted(f.match["nw_ttl"] for f in table1 if f.priority == pl.PRIO_LOW_TTL)
    assert ttls == list(range(pl.LOW_TTL))
    table2 = flows(pl.base_flows(DP), pl.TABLE_TO_CONTROLLER)
    assert [(f.priority, f.instructions) for f in table2] == [(pl.PRIO_MISS, [])]  # drop


def test_every_ip_fragment_reaches_the_agent_above_simulated_flows():
    """First fragments must not ride a flow made for unfragmented packets of
    the same 5-tuple: their later fragments would find no decision."""
    table1 = flows(pl.base_flows(DP), pl.TABLE_SIMULATED)
    frag = [f for f in table1 if "ip_frag" in f.match]
    assert len(frag) == 1
    assert frag[0].match["ip_frag"] == (1, 1) and frag[0].match["eth_type"] == 0x0800
    assert pl.PRIO_SIMULATED < frag[0].priority < pl.PRIO_LOW_TTL
    assert frag[0].priority > pl.PRIO_TCP_CLOSE
    assert goes_to(frag[0], pl.TABLE_TO_CONTROLLER)


def test_flow_state_from_other_hosts_is_not_metered():
    table0 = flows(pl.base_flows(DP), pl.TABLE_CLASSIFY)
    state = [f for f in table0 if f.match.get("tunnel_id") == STATE_TUNNEL_KEY]
    assert len(state) == 1 and sends_to_controller(state[0])
    assert not instr(state[0], parser.OFPInstructionMeter)
    # table 0's miss (ports not classified yet) is metered, by one shared meter
    (miss,) = [f for f in table0 if f.priority == pl.PRIO_MISS]
    assert sends_to_controller(miss)
    assert [i.meter_id for i in instr(miss, parser.OFPInstructionMeter)] == [pl.UNBOUND_METER]


# ------------------------------------------------------------- bound ports
def test_classify_installs_the_meter_before_anything_can_use_it():
    msgs = [wire(m) for m in pl.classify_flows(DP, 5, 77, [2, 3], rate=900, burst=150)]
    delete, add = msgs[0], msgs[1]
    assert (delete.command, delete.meter_id) == (ofp.OFPMC_DELETE, 5)
    assert is_meter_mod(add) and add.command == ofp.OFPMC_ADD
    assert add.meter_id == pl.meter_id(5) == 5
    assert add.flags == ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
    (band,) = add.bands
    assert isinstance(band, parser.OFPMeterBandDrop)
    assert (band.rate, band.burst_size) == (900, 150)
    # the meter first, then its table-2 flow, then what leads to it
    assert is_meter_mod(msgs[0]) and is_meter_mod(msgs[1])
    assert isinstance(msgs[2], parser.OFPFlowMod)
    assert not any(is_meter_mod(m) for m in msgs[3:])
    assert msgs[2].table_id == pl.TABLE_TO_CONTROLLER


def test_to_controller_flow_meters_by_ingress_port():
    (f,) = flows(pl.classify_flows(DP, 5, 77, []), pl.TABLE_TO_CONTROLLER)
    assert dict(f.match.items()) == {"in_port": 5}
    (meter,) = instr(f, parser.OFPInstructionMeter)
    assert meter.meter_id == 5 and sends_to_controller(f)
    assert f.instructions[0] is meter  # meter, then output


def test_default_meter_rate_and_burst():
    add = wire(pl.classify_flows(DP, 9, 1, [])[1])
    assert (add.bands[0].rate, add.bands[0].burst_size) == (pl.PACKET_IN_RATE,
                                                            pl.PACKET_IN_BURST) == (1000, 200)


def test_tagged_frames_are_dropped_at_classify():
    table0 = flows(pl.classify_flows(DP, 5, 77, [2, 3]), pl.TABLE_CLASSIFY)
    goto = [f for f in table0 if goes_to(f, pl.TABLE_SIMULATED)]
    assert len(goto) == 1 and dict(goto[0].match.items()) == {"in_port": 5}
    tagged = [f for f in table0 if f.priority == pl.PRIO_TAGGED]
    assert all(f.instructions == [] and f.match["in_port"] == 5 for f in tagged)
    assert pl.PRIO_TAGGED > max(goto[0].priority, pl.PRIO_BGP)
    vlan = [f.match["vlan_vid"] for f in tagged if "vlan_vid" in f.match]
    assert vlan == [(ofp.OFPVID_PRESENT, ofp.OFPVID_PRESENT)]  # any tag, priority-tagged too
    assert sorted(f.match["eth_type"] for f in tagged if "eth_type" in f.match) == \
        [0x8100, 0x88A8, 0x9100]
    # tunnelled traffic for the port is delivered by key, not classified again
    deliver = [f for f in table0 if "tunnel_id" in f.match]
    assert sorted(f.match["in_port"] for f in deliver) == [2, 3]
    assert all(f.match["tunnel_id"] == 77 for f in deliver)


def test_unbinding_removes_every_trace_of_the_port():
    msgs = [wire(m) for m in pl.unclassify_flows(DP, 5, 77)]
    deletes = [(m.table_id, dict(m.match.items())) for m in msgs
               if isinstance(m, parser.OFPFlowMod)]
    assert all(m.command == ofp.OFPFC_DELETE for m in msgs if isinstance(m, parser.OFPFlowMod))
    assert deletes == [(0, {"in_port": 5}), (0, {"tunnel_id": 77}), (1, {"in_port": 5}),
                       (2, {"in_port": 5}), (4, {}), (5, {})]  # 4, 5: by the port's SG cookie
    sg = [m for m in msgs if isinstance(m, parser.OFPFlowMod) and m.table_id in (4, 5)]
    assert all(m.cookie == pl.SG_COOKIE | 5 and m.cookie_mask == (1 << 64) - 1 for m in sg)
    assert (msgs[-1].command, msgs[-1].meter_id) == (ofp.OFPMC_DELETE, 5)


# ------------------------------------------------------------- meter stats
def test_meter_stats_request_asks_for_every_meter():
    req = pl.meter_stats_request(DP)
    req.set_xid(1)
    req.serialize()
    assert req.meter_id == ofp.OFPM_ALL and len(req.buf) == 16 + 8


def test_metered_drops_by_port():
    def stats(mid, *drops):
        return parser.OFPMeterStats(meter_id=mid, band_stats=[
            parser.OFPMeterBandStats(n, n * 60) for n in drops])
    body = [stats(5, 120), stats(6, 0), stats(42, 9)]  # 42: a meter of no bound port
    assert pl.metered_drops(body, {5: "vm1", 6: "vm2"}) == {"vm1": 120, "vm2": 0}


# ------------------------------------------------------------- match_kwargs
ALL = frozenset({"in_port", "eth_src", "eth_dst", "eth_type", "ip_src", "ip_dst", "ip_proto",
                 "ip_tos", "tp_src", "tp_dst", "arp_op", "arp_tpa", "arp_spa", "arp_sha"})
IP = dict(in_port="p", eth_src=A, eth_dst=B, ip_src="10.0.0.1", ip_dst="10.0.0.2", ip_tos=0x2a)


@pytest.mark.parametrize("pkt, fields, want", [
    (Packet(**IP, ip_proto=PROTO_TCP, tp_src=1000, tp_dst=80), ALL,
     dict(eth_src=A, eth_dst=B, eth_type=0x0800, ipv4_src="10.0.0.1", ipv4_dst="10.0.0.2",
          ip_dscp=10, ip_ecn=2, ip_proto=PROTO_TCP, tcp_src=1000, tcp_dst=80)),
    (Packet(**IP, ip_proto=PROTO_UDP, tp_src=68, tp_dst=67), {"tp_dst"},
     dict(eth_type=0x0800, ip_proto=PROTO_UDP, udp_dst=67)),
    (Packet(**IP, ip_proto=PROTO_ICMP, tp_src=8, tp_dst=0), {"tp_src", "tp_dst", "ip_dst"},
     dict(eth_type=0x0800, ipv4_dst="10.0.0.2", ip_proto=PROTO_ICMP, icmpv4_type=8,
          icmpv4_code=0)),
    (Packet(**IP, ip_proto=47), {"ip_proto", "tp_dst"}, dict(eth_type=0x0800, ip_proto=47)),
    (Packet(**IP, ip_proto=PROTO_TCP), {"eth_src", "eth_dst"}, dict(eth_src=A, eth_dst=B)),
    (Packet(in_port="p", eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=2, arp_sha=A,
            arp_spa="10.0.0.1", arp_tpa="10.0.0.2"), ALL,
     dict(eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=2, arp_tpa="10.0.0.2",
          arp_spa="10.0.0.1", arp_sha=A)),
    (Packet(in_port="p", eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=1, arp_sha=A,
            arp_spa="10.0.0.1", arp_tpa="10.0.0.2"), {"arp_spa"},
     dict(eth_type=ETH_ARP, arp_spa="10.0.0.1")),
    (Packet(in_port="p", eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=1, arp_sha=A,
            arp_spa="10.0.0.1", arp_tpa="10.0.0.2"), {"arp_sha", "eth_src"},
     dict(eth_src=A, eth_type=ETH_ARP, arp_sha=A)),
    (Packet(in_port="p", eth_src=A, eth_dst=B, eth_type=0x86DD), {"eth_type", "ip_src"},
     dict(eth_type=0x86DD)),
])
def test_match_kwargs_of_each_packet_kind(pkt, fields, want):
    m = pl.match_kwargs(frozenset(fields), pkt, 4)
    assert m == {"in_port": 4, **want}
    parsed = wire(pl.decision_flow(DP, Decision([Output(2)], frozenset(fields), frozenset(),
                                                None, packet=pkt, cookie=7), 4, 30,
                                   [parser.OFPActionOutput(2)]))
    assert dict(parsed.match.items()) == m  # OVS gets exactly these fields


def test_decision_flow_actions_rewrite_then_output():
    pkt = Packet(**IP, ip_proto=PROTO_TCP, tp_src=1000, tp_dst=80)
    d = Decision([Tunnel(9, "10.10.0.2", 3)], frozenset({"ip_dst"}), frozenset(), None,
                 rewrites=(Rewrite("eth_dst", B), Rewrite("ttl", 1), Rewrite("tp_dst", 8080)),
                 packet=pkt, cookie=7)
    f = wire(pl.decision_flow(DP, d, 4, 30, pl.actions_for(DP, d)))
    (acts,) = instr(f, parser.OFPInstructionActions)
    names = [type(a).__name__ for a in acts.actions]
    assert names == ["OFPActionSetField", "OFPActionDecNwTtl", "OFPActionSetField",
                     "OFPActionSetField", "OFPActionSetField", "OFPActionOutput"]
    assert (f.table_id, f.cookie, f.idle_timeout) == (pl.TABLE_SIMULATED, 7, 30)


def test_agent_files_meter_drops_by_port_id():
    """The os-ken handler keeps the drops of current ports only, across the
    parts of a multipart reply."""
    from midoflow.apps.agent import MidoflowAgent

    def stats(mid, n):
        return parser.OFPMeterStats(meter_id=mid, band_stats=[parser.OFPMeterBandStats(n, 0)])

    sent, clock = [], FakeClock(mono=0.0)
    agent = SimpleNamespace(classified={"vm1": (5, 11), "vm2": (6, 12)},
                            core=SimpleNamespace(stats={"metered_drops": {"gone": 3}},
                                                 cache=SimpleNamespace(ports={})),
                            cfg=SimpleNamespace(packet_in_rate=100, packet_in_burst=10),
                            dp=SimpleNamespace(send_msg=sent.append, ofproto=ofp,
                                               ofproto_parser=parser),
                            storm=StormControl(factor=5, seconds=2, clock=clock))
    agent._meter_rate = lambda pid: MidoflowAgent._meter_rate(agent, pid)
    agent._storm_control = lambda d: MidoflowAgent._storm_control(agent, d)
    MidoflowAgent._meter_stats(agent, SimpleNamespace(msg=SimpleNamespace(body=[stats(5, 40)])))
    MidoflowAgent._meter_stats(agent, SimpleNamespace(msg=SimpleNamespace(body=[stats(6, 2)])))
    assert agent.core.stats["metered_drops"] == {"vm1": 40, "vm2": 2}
    assert sent == []
    # a second later vm1's meter dropped 5,000 more (50x its rate): cut off for 2 s
    clock.advance(1.0)
    MidoflowAgent._meter_stats(agent, SimpleNamespace(msg=SimpleNamespace(
        body=[stats(5, 5040), stats(6, 60)])))
    blocks = flows(sent, pl.TABLE_CLASSIFY)
    assert [(f.match["in_port"], f.priority, f.hard_timeout, f.instructions)
            for f in blocks] == [(5, pl.PRIO_STORM, 2, [])]
    assert agent.core.stats["storm_blocked"] == {"vm1": 1}


def test_agent_meters_vm_ports_and_uplinks_at_their_own_rates():
    from midoflow.apps.agent import MidoflowAgent
    from midoflow.model import DEVICE_BRIDGE, DEVICE_ROUTER

    cfg = SimpleNamespace(packet_in_rate=300, packet_in_burst=50, uplink_packet_in_rate=9000)
    ports = {"vm": SimpleNamespace(device_type=DEVICE_BRIDGE),
             "uplink": SimpleNamespace(device_type=DEVICE_ROUTER)}
    agent = SimpleNamespace(cfg=cfg, core=SimpleNamespace(cache=SimpleNamespace(ports=ports)))
    assert MidoflowAgent._meter_rate(agent, "vm") == (300, 50)
    assert MidoflowAgent._meter_rate(agent, "unknown") == (300, 50)
    assert MidoflowAgent._meter_rate(agent, "uplink") == (9000, 1800)


def test_storm_block_sits_above_every_classify_flow_of_the_port():
    block = wire(pl.storm_block_flow(DP, 7, 3))
    assert (block.table_id, block.match["in_port"], block.hard_timeout) == \
        (pl.TABLE_CLASSIFY, 7, 3)
    assert block.instructions == [] and block.cookie == pl.STORM_COOKIE | 7
    others = flows(pl.classify_flows(DP, 7, 42, [1]), pl.TABLE_CLASSIFY)
    assert all(f.priority < block.priority for f in others)
