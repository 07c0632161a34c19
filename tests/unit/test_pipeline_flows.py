"""The agent's flows on a fake OpenFlow switch (tests/unit/fakeoftable.py):
the base pipeline, a port's classify flows, decisions (L2, routed, NAT,
drop), FIN/RST, BGP links and storm control are applied as the agent sends
them (each flow-mod checked against the declared pipeline), then packets
are looked up: where they go, rewritten how."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from midoflow.agent.core import Decision, Emit, Output, Tunnel
from midoflow.agent.flows import FlowIndex
from midoflow.apps import pipeline as pl
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.sim.packet import PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import Rewrite
from tests.unit.fakeoftable import CONTROLLER, FakeOFTable

DP = pl.OFFLINE
VM1, VM2, R1, R2 = "02:00:00:00:01:01", "02:00:00:00:02:02", "02:aa:00:00:00:01", \
    "02:aa:00:00:00:02"
P1, P2 = 5, 6  # VM ports' ofports
K1, K2 = 11, 12  # their tunnel keys
VXLAN, GRE = 2, 3
IDLE = 30
COOKIE = FlowIndex.COOKIE_BASE | 1


def tcp(in_port=P1, flags=0x10, **kw):
    """A TCP segment from VM1 to VM2, as the switch sees its fields."""
    return {"in_port": in_port, "eth_src": VM1, "eth_dst": VM2, "eth_type": 0x800,
            "ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2", "ip_proto": PROTO_TCP,
            "nw_ttl": 64, "tcp_src": 1000, "tcp_dst": 80, "tcp_flags": flags, **kw}


def packet(**kw) -> Packet:
    """The simulation's view of the same segment."""
    base = dict(in_port="p1", eth_src=VM1, eth_dst=VM2, ip_src="10.0.0.1",
                ip_dst="10.0.0.2", ip_proto=PROTO_TCP, tp_src=1000, tp_dst=80)
    return Packet(**{**base, **kw})


@pytest.fixture
def sw() -> FakeOFTable:
    """A host with two bound VM ports and a VXLAN and a GRE tunnel port."""
    t = FakeOFTable().apply(pl.base_flows(DP))
    t.apply(pl.classify_flows(DP, P1, K1, [VXLAN, GRE]))
    t.apply(pl.classify_flows(DP, P2, K2, [VXLAN, GRE]))
    t.apply(pl.fence_flows(DP, [VXLAN, GRE]))  # as the agent fences its tunnel ports
    return t


def unbound(tr) -> bool:
    """To the agent by table 0's miss, through the one shared meter only."""
    return tr.ports == [CONTROLLER] and tr.meters == [pl.UNBOUND_METER] and tr.tables == [0]


def install(sw, decision, in_port=P1, data=b"frame"):
    msgs = pl.decision_messages(DP, decision, in_port, data, None, IDLE)
    sw.apply(msgs)
    return msgs


def decision(actions, fields, cookie=COOKIE, rewrites=(), pkt=None, **kw) -> Decision:
    return Decision(list(actions), frozenset(fields), frozenset(), None, cookie=cookie,
                    packet=pkt or packet(), rewrites=tuple(rewrites), **kw)


# ------------------------------------------------------------------ classify
def test_a_vm_ports_first_packet_reaches_the_agent_through_its_meter(sw):
    tr = sw.lookup(tcp())
    assert tr.ports == [CONTROLLER] and tr.meters == [P1] and tr.tables == [0, 1, 2]
    assert sw.lookup(tcp(in_port=P2)).meters == [P2]


def test_tunnelled_traffic_is_delivered_by_key_alone(sw):
    for tp in (VXLAN, GRE):
        tr = sw.lookup(tcp(in_port=tp, tunnel_id=K2))
        assert tr.ports == [P2] and tr.tables == [0] and tr.out(P2)["eth_dst"] == VM2
    assert sw.lookup(tcp(in_port=VXLAN, tunnel_id=99)).dropped  # no local port has it
    assert sw.lookup(tcp(in_port=VXLAN)).dropped  # no key at all


def test_flow_state_from_another_host_goes_to_the_agent_unmetered(sw):
    tr = sw.lookup({"in_port": VXLAN, "tunnel_id": STATE_TUNNEL_KEY, "eth_type": 0x800})
    assert tr.ports == [CONTROLLER] and tr.meters == []


def test_an_unknown_port_reaches_the_agent_through_the_shared_meter(sw):
    assert unbound(sw.lookup(tcp(in_port=9)))
    # and nothing reaches the controller by table 2 but a bound port's flow
    assert sw.lookup(tcp(in_port=9), table=2).dropped


@pytest.mark.parametrize("tag", [{"vlan_vid": 0x1000 | 10}, {"vlan_vid": 0x1000},
                                 {"eth_type": 0x88A8}, {"eth_type": 0x9100}])
def test_tagged_frames_are_dropped_even_with_a_flow_for_their_addresses(sw, tag):
    install(sw, decision([Output(P2)], {"eth_dst"}))
    assert sw.lookup(tcp()).ports == [P2]
    assert sw.lookup({**tcp(), **tag}).dropped


@pytest.mark.parametrize("extra", [{"ip_frag": 1}, {"ip_frag": 3}, {"nw_ttl": 7},
                                   {"nw_ttl": 0}])
def test_fragments_and_low_ttls_always_reach_the_agent(sw, extra):
    install(sw, decision([Output(P2)], {"ip_dst", "tp_dst"}))
    assert sw.lookup(tcp()).ports == [P2]
    tr = sw.lookup(tcp(**extra))
    assert tr.ports == [CONTROLLER] and tr.meters == [P1]


@pytest.mark.parametrize("flags", [0x11, 0x04, 0x14, 0x01])
def test_fin_and_rst_of_an_untracked_flow_stay_in_the_datapath(sw, flags):
    msgs = install(sw, decision([Output(P2)], {"ip_dst"}))
    assert not [m for m in msgs if getattr(m, "priority", None) == pl.PRIO_TCP_CLOSE]
    assert sw.lookup(tcp(flags=flags)).ports == [P2]


FIVE = {"ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst"}


@pytest.mark.parametrize("flags", [0x11, 0x04, 0x14, 0x01])
def test_fin_and_rst_of_a_tracked_flow_are_forwarded_and_copied_to_the_agent(sw, flags):
    nat = [Rewrite("ip_src", "203.0.113.5"), Rewrite("tp_src", 40001), Rewrite("eth_dst", R1)]
    install(sw, decision([Output(P2), Tunnel(K2, "10.9.0.2", VXLAN)], FIVE, rewrites=nat,
                         uses=(("nat", "b"),)))
    main = sw.lookup(tcp())
    assert main.ports == [P2, VXLAN] and main.meters == []
    tr = sw.lookup(tcp(flags=flags))
    # first an unmodified copy to the agent, through the port's meter, by the close flow
    assert tr.ports == [CONTROLLER, P2, VXLAN] and tr.meters == [P1]
    assert tr.hits == [(0, pl.PRIO_CLASSIFY, 0), (1, pl.PRIO_TCP_CLOSE, COOKIE)]
    assert tr.out(CONTROLLER) == tcp(flags=flags)
    # then forwarded as the connection's flow forwards: same rewrites, same outputs
    for port in (P2, VXLAN):
        assert tr.out(port) == {**main.out(port), "tcp_flags": flags}
    assert tr.out(P2)["ipv4_src"] == "203.0.113.5" and tr.out(VXLAN)["tunnel_id"] == K2
    assert sw.lookup(tcp(flags=flags, tcp_src=1001)).ports == [CONTROLLER]  # a miss: simulated
    sw.apply([pl.delete_cookie(DP, COOKIE)])  # invalidated: the close flows go with it
    assert COOKIE not in sw.cookies()


def test_a_close_flows_copy_is_told_from_a_miss_by_its_table_and_cookie():
    assert pl.close_copy(pl.TABLE_SIMULATED, COOKIE)
    assert not pl.close_copy(pl.TABLE_TO_CONTROLLER, 0)  # a bound port's miss
    assert not pl.close_copy(pl.TABLE_CLASSIFY, 0)  # an unbound port's, flow state
    assert not pl.close_copy(pl.TABLE_TO_CONTROLLER, COOKIE)


def test_a_tracked_drop_copies_its_fin_to_the_agent_and_forwards_nothing(sw):
    install(sw, decision([], FIVE, uses=(("nat", "b"),)))
    tr = sw.lookup(tcp(flags=0x11))
    assert tr.ports == [CONTROLLER] and tr.meters == [P1]


def test_a_fin_beyond_its_ports_meter_goes_with_it(sw):
    """OpenFlow 1.3 applies the meter instruction before the actions: the
    close flow's meter is in front of its forwarding too (tables.py)."""
    (close, _rst) = pl.close_flows(DP, decision([Output(P2)], FIVE, uses=(("nat", "b"),)), P1)
    meters = [i for i in close.instructions if isinstance(i, DP.ofproto_parser.OFPInstructionMeter)]
    assert [m.meter_id for m in meters] == [pl.meter_id(P1)]
    assert close.instructions[0] is meters[0]


def test_a_tracked_flow_onto_a_smaller_link_checks_its_fins_size_too(sw):
    d = Decision([Output(P2)], frozenset(FIVE), frozenset(), SimpleNamespace(mtu=1400),
                 cookie=COOKIE, packet=packet(), uses=(("nat", "b"),))
    install(sw, d)
    small = sw.lookup(tcp(flags=0x11, pkt_len=100))
    assert small.ports == [CONTROLLER, P2] and small.meters == [P1]
    big = sw.lookup(tcp(flags=0x11, pkt_len=1500))  # the copy, then the agent splits it
    assert big.ports == [CONTROLLER, CONTROLLER] and big.meters == [P1, P1]
    assert big.hits[-1][0] == pl.TABLE_TO_CONTROLLER


def test_a_tracked_udp_flow_gets_no_close_flows(sw):
    pkt = packet(ip_proto=PROTO_UDP)
    msgs = install(sw, decision([Output(P2)], {"ip_dst", "ip_proto", "tp_dst"}, pkt=pkt,
                                uses=(("nat", "b"),)))
    assert [m.priority for m in msgs if hasattr(m, "priority")] == [pl.PRIO_SIMULATED]


def test_the_lowest_ttl_a_flow_forwards_is_low_ttl(sw):
    install(sw, decision([Output(P2)], {"ip_dst"}))
    assert sw.lookup(tcp(nw_ttl=pl.LOW_TTL)).ports == [P2]


def test_unbinding_a_port_removes_its_flows_meter_and_delivery(sw):
    install(sw, decision([Output(P2)], {"eth_dst"}))
    install(sw, decision([Output(P1)], {"eth_dst"}, cookie=COOKIE + 1,
                         pkt=packet(in_port="p2", eth_src=VM2, eth_dst=VM1)), in_port=P2)
    sw.apply(pl.unclassify_flows(DP, P1, K1))
    assert unbound(sw.lookup(tcp()))  # an unbound port's again
    assert sw.lookup(tcp(in_port=VXLAN, tunnel_id=K1)).dropped
    assert P1 not in sw.meters and sw.cookies(1) >= {COOKIE + 1} and COOKIE not in sw.cookies()
    assert sw.lookup(tcp(in_port=P2, eth_src=VM2, eth_dst=VM1)).ports == [P1]


def test_rebinding_a_port_redoes_its_meter_without_error(sw):
    sw.apply(pl.classify_flows(DP, P1, K1, [VXLAN], rate=50, burst=5))
    assert sw.meters[P1][0].rate == 50
    assert sw.lookup(tcp()).meters == [P1]


def test_base_flows_without_wipe_keep_what_the_switch_holds(sw):
    """Fast restart: the fixed flows added again over a live switch replace
    themselves; simulated flows, classify flows and meters stay."""
    install(sw, decision([Output(P2)], {"eth_dst"}))
    def flows():
        return sorted(str((e.table, e.priority, e.match, e.cookie)) for e in sw.flows())

    def meters():
        return {m: [(b.rate, b.burst_size) for b in bands] for m, bands in sw.meters.items()}

    before, meters_before = flows(), meters()
    sw.apply(pl.base_flows(DP, wipe=False))
    assert flows() == before
    assert meters() == meters_before and sw.lookup(tcp()).ports == [P2]
    sw.apply(pl.base_flows(DP))  # the wipe: only the fixed flows are left
    assert set(sw.meters) == {pl.UNBOUND_METER} and sw.cookies() == {0}
    assert unbound(sw.lookup(tcp()))


# ------------------------------------------------------------------ decisions
def test_l2_forward_and_its_first_packet(sw):
    msgs = install(sw, decision([Output(P2)], {"eth_dst", "eth_src"}))
    tr = sw.lookup(tcp())
    assert tr.ports == [P2] and tr.out(P2) == tcp()  # untouched
    assert sw.lookup(tcp(eth_dst="02:00:00:00:09:09")).ports == [CONTROLLER]
    (po,) = sw.packet_outs
    assert po is msgs[0] and po.in_port == P1 and po.data == b"frame"  # before the flow
    assert sw.packet_out(po, tcp()).ports == [P2]


def test_routed_to_another_host_rewrites_macs_decrements_ttl_and_tunnels(sw):
    d = decision([Tunnel(K2 + 100, "10.10.0.2", VXLAN)], {"ip_dst"},
                 rewrites=[Rewrite("eth_src", R2), Rewrite("eth_dst", VM2), Rewrite("ttl", 1)],
                 pkt=packet(eth_dst=R1))
    install(sw, d)
    out = sw.lookup(tcp(eth_dst=R1, ipv4_dst="10.0.0.2")).out(VXLAN)
    assert (out["eth_src"], out["eth_dst"], out["nw_ttl"]) == (R2, VM2, 63)
    assert (out["tunnel_id"], out["tun_ipv4_dst"]) == (K2 + 100, "10.10.0.2")
    assert sw.lookup(tcp(eth_dst=R1, ipv4_dst="10.0.0.3")).ports == [CONTROLLER]


def test_two_routers_on_the_path_decrement_twice(sw):
    install(sw, decision([Output(P2)], {"ip_dst"}, rewrites=[Rewrite("ttl", 2)]))
    assert sw.lookup(tcp(nw_ttl=9)).out(P2)["nw_ttl"] == 7


@pytest.mark.parametrize("proto, src, dst", [(PROTO_TCP, "tcp_src", "tcp_dst"),
                                             (PROTO_UDP, "udp_src", "udp_dst")])
def test_nat_rewrites_addresses_and_ports(sw, proto, src, dst):
    pkt = packet(ip_proto=proto)
    fields = {"ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst"}
    install(sw, decision([Output(P2)], fields, pkt=pkt, rewrites=[
        Rewrite("ip_src", "203.0.113.5"), Rewrite("tp_src", 40001)]))
    seg = {**tcp(), "ip_proto": proto, src: 1000, dst: 80}
    if proto == PROTO_UDP:
        del seg["tcp_src"], seg["tcp_dst"], seg["tcp_flags"]
    out = sw.lookup(seg).out(P2)
    assert (out["ipv4_src"], out[src], out["ipv4_dst"], out[dst]) == \
        ("203.0.113.5", 40001, "10.0.0.2", 80)
    # exact 5-tuple: another source port is simulated afresh
    assert sw.lookup({**seg, src: 1001}).ports == [CONTROLLER]


def test_dnat_of_a_reply_rewrites_the_destination(sw):
    fields = {"ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst"}
    pkt = packet(ip_dst="203.0.113.5", tp_dst=40001)
    install(sw, decision([Output(P2)], fields, pkt=pkt, rewrites=[
        Rewrite("ip_dst", "192.168.1.10"), Rewrite("tp_dst", 1000)]))
    out = sw.lookup(tcp(ipv4_dst="203.0.113.5", tcp_dst=40001)).out(P2)
    assert (out["ipv4_dst"], out["tcp_dst"]) == ("192.168.1.10", 1000)


def test_a_drop_decision_drops_in_the_switch_and_sends_no_packet(sw):
    msgs = install(sw, decision([], {"ip_src"}, rewrites=[Rewrite("eth_dst", VM2)]))
    tr = sw.lookup(tcp())
    assert tr.dropped and tr.hits[-1] == (1, pl.PRIO_SIMULATED, COOKIE)
    assert sw.packet_outs == [] and len(msgs) == 1


def test_an_uninstalled_decision_forwards_the_packet_only(sw):
    msgs = install(sw, decision([Output(P2)], {"eth_dst"}, install=False))
    assert sw.cookies(1) == {0} and [type(m).__name__ for m in msgs] == ["OFPPacketOut"]
    assert sw.lookup(tcp()).ports == [CONTROLLER]


def test_a_new_flow_with_the_same_match_replaces_the_old(sw):
    install(sw, decision([Output(P2)], {"eth_dst"}))
    install(sw, decision([Output(VXLAN)], {"eth_dst"}, cookie=COOKIE + 1))
    assert sw.cookies(1) - {0} == {COOKIE + 1}
    assert sw.lookup(tcp()).ports == [VXLAN]


def test_deleting_by_cookie_removes_exactly_that_flow(sw):
    install(sw, decision([Output(P2)], {"eth_dst"}))
    other = packet(eth_dst="02:00:00:00:09:09")
    install(sw, decision([Output(VXLAN)], {"eth_dst"}, cookie=COOKIE + 1, pkt=other))
    sw.apply([pl.delete_cookie(DP, COOKIE)])
    assert sw.lookup(tcp()).ports == [CONTROLLER]
    assert sw.lookup(tcp(eth_dst="02:00:00:00:09:09")).ports == [VXLAN]
    assert len(sw.flows(0)) == len(FakeOFTable().apply(pl.base_flows(DP)).flows(0)) + 2 * 7 \
        + 2  # the tunnel ports' fence flows


# ------------------------------------------------------ decision_messages itself
def test_pushes_go_first_then_the_packet_the_flow_and_the_answers():
    pushes = [Emit(b"state", [Tunnel(STATE_TUNNEL_KEY, "10.10.0.2", VXLAN)])]
    emits = [Emit(b"arp", [Output(P1)]), Emit(b"nowhere", [])]
    d = decision([Output(P2)], {"eth_dst"}, pushes=pushes, emits=emits)
    msgs = pl.decision_messages(DP, d, P1, b"frame", 77, IDLE)
    kinds = [(type(m).__name__, getattr(m, "data", None)) for m in msgs]
    assert kinds == [("OFPPacketOut", b"state"), ("OFPPacketOut", None),
                     ("OFPFlowMod", None), ("OFPPacketOut", b"arp")]
    assert msgs[1].buffer_id == 77 and msgs[1].in_port == P1  # the switch's copy
    assert msgs[0].in_port == msgs[3].in_port == DP.ofproto.OFPP_CONTROLLER
    t = FakeOFTable()
    assert t.packet_out(msgs[0], {}).out(VXLAN)["tunnel_id"] == STATE_TUNNEL_KEY


def _echo(ident: int) -> bytes:
    from os_ken.lib.packet import ethernet, icmp, ipv4
    from os_ken.lib.packet import packet as pk

    p = pk.Packet()
    p.add_protocol(ethernet.ethernet(dst=VM2, src=VM1, ethertype=0x800))
    p.add_protocol(ipv4.ipv4(src="10.0.0.1", dst="8.8.8.8", proto=1))
    p.add_protocol(icmp.icmp(type_=8, data=icmp.echo(id_=ident, seq=1, data=b"x")))
    p.serialize()
    return bytes(p.data)


def test_an_icmp_identifier_is_rewritten_in_the_frame_sent_not_the_buffer():
    from midoflow.apps import frames

    d = decision([Output(P2)], {"ip_src"}, install=False,
                 rewrites=[Rewrite("ip_src", "203.0.113.5"), Rewrite("icmp_id", 4242)])
    (po,) = pl.decision_messages(DP, d, P1, _echo(7), 77, IDLE)
    assert po.buffer_id == DP.ofproto.OFP_NO_BUFFER
    assert frames.parse(po.data)["icmp_id"] == 4242
    # the address is OpenFlow's to set: the frame keeps it, the actions set it
    assert frames.parse(po.data)["ip_src"] == "10.0.0.1"
    out = FakeOFTable().packet_out(po, {"eth_type": 0x800}).out(P2)
    assert out["ipv4_src"] == "203.0.113.5"


def test_a_frame_whose_rewrite_fails_gets_its_pushes_only():
    pushes = [Emit(b"state", [Output(VXLAN)])]
    d = decision([Output(P2)], {"eth_dst"}, pushes=pushes, rewrites=[Rewrite("icmp_id", 1)])
    msgs = pl.decision_messages(DP, d, P1, b"not an icmp echo", None, IDLE)
    assert [m.data for m in msgs] == [b"state"]


# ------------------------------------------------------------------ BGP links
LINK, UPLINK, LINK_IP = 40, 7, "192.0.2.1"


def test_bgp_link_passes_bgp_and_arp_between_speaker_and_uplink(sw):
    sw.apply(pl.classify_flows(DP, UPLINK, 13, [VXLAN]))
    sw.apply(pl.bgp_link_flows(DP, LINK, UPLINK, LINK_IP))
    assert sw.lookup({"in_port": LINK, "eth_type": 0x806}).ports == [UPLINK]
    bgp = {"in_port": UPLINK, "eth_type": 0x800, "ip_proto": PROTO_TCP,
           "ipv4_dst": LINK_IP, "nw_ttl": 1}
    for ports in ({"tcp_src": 5000, "tcp_dst": 179}, {"tcp_src": 179, "tcp_dst": 5000}):
        assert sw.lookup({**bgp, **ports}).ports == [LINK]
    arp = sw.lookup({"in_port": UPLINK, "eth_type": 0x806, "arp_tpa": LINK_IP})
    assert arp.ports == [LINK, CONTROLLER] and arp.meters == [UPLINK]  # the router too
    other = sw.lookup({**bgp, "tcp_src": 5000, "tcp_dst": 22, "nw_ttl": 64})
    assert other.ports == [CONTROLLER]
    sw.apply([pl.delete_bgp_link_flows(DP, LINK)])
    assert all(e.cookie & ~0xFFFF != pl.BGP_COOKIE for e in sw.flows())
    assert unbound(sw.lookup({"in_port": LINK}))  # an unbound port's again
    assert sw.lookup({**bgp, "tcp_dst": 179, "tcp_src": 5000}).ports == [CONTROLLER]


# ------------------------------------------------------------------ storm control
def test_a_storm_block_drops_everything_from_the_port_only(sw):
    install(sw, decision([Output(P2)], {"eth_dst"}))
    sw.apply([pl.storm_block_flow(DP, P1, 2)])
    assert sw.lookup(tcp()).dropped and sw.lookup(tcp(vlan_vid=0x1001)).dropped
    assert sw.lookup(tcp(in_port=P2)).ports == [CONTROLLER]
    assert sw.lookup(tcp(in_port=VXLAN, tunnel_id=K1)).ports == [P1]  # delivery to it holds
    (block,) = [e for e in sw.flows(0) if e.priority == pl.PRIO_STORM]
    assert block.cookie == pl.STORM_COOKIE | P1
