"""MTUs: a router's egress link MTU (``egress_mtu``), ICMP fragmentation
needed for DF packets that do not fit, the agent splitting those that may be
split, later fragments held until their first, and the flow that sends
bigger packets to the agent (check_pkt_larger, on the fake switch)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.agent.core import Decision, Output
from midoflow.agent.flows import FlowIndex
from midoflow.apps import frames, mtu
from midoflow.apps import pipeline as pl
from midoflow.model import PORT_INTERIOR, Bridge, Port
from midoflow.sim import router as rt
from midoflow.sim.packet import PROTO_ICMP, PROTO_UDP, Packet
from midoflow.sim.result import Action, Result, Rewrite
from midoflow.sim.simulator import simulate
from tests.unit import worlds
from tests.unit.fakeoftable import CONTROLLER, FakeOFTable
from tests.unit.test_fragments_split import fields as ip_fields
from tests.unit.test_fragments_split import ip_checksum, reassemble
from tests.unit.test_sim_router import NOW, R1A, Topo, ip_pkt


def udp_pkt(size: int, df: bool = False, **kw) -> Packet:
    return ip_pkt(proto=PROTO_UDP, sport=5000, dport=6000, **kw).evolve(ip_len=size, ip_df=df)


# ---- which MTU a router port's link has -------------------------------------------
def test_egress_mtu_of_each_kind_of_router_port():
    t = Topo()
    assert rt.egress_mtu(t.v, t.v.ports["r1b"]) == 1450  # the bridge's: the default
    t.v.default_mtu, t.v.underlay_mtu = 1400, 9000  # what the agent's cache says
    assert rt.egress_mtu(t.v, t.v.ports["r1b"]) == 1400
    t.v.bridges["b2"] = Bridge(**{**t.v.bridges["b2"].to_dict(), "mtu": 1300})
    assert rt.egress_mtu(t.v, t.v.ports["r1b"]) == 1300  # the network's own
    t.rport("r1", "up", "02:aa:00:00:00:09", "10.0.0.1", 24)
    assert rt.egress_mtu(t.v, t.v.ports["up"]) == 9000  # an uplink: the underlay's
    t.v.ports["up"] = Port(**{**t.v.ports["up"].to_dict(), "mtu": 1492})
    assert rt.egress_mtu(t.v, t.v.ports["up"]) == 1492  # its own
    # a router linked straight to another router: no limit of its own
    t.router("r2")
    t.rport("r2", "r2x", "02:aa:00:00:00:21", "10.9.0.2", 30, type=PORT_INTERIOR, peer_id="r1x")
    t.rport("r1", "r1x", "02:aa:00:00:00:11", "10.9.0.1", 30, type=PORT_INTERIOR, peer_id="r2x")
    assert rt.egress_mtu(t.v, t.v.ports["r1x"]) is None


# ---- the router's check ------------------------------------------------------------
def test_df_and_too_big_gets_fragmentation_needed_with_the_next_hop_mtu():
    t = Topo()
    r = simulate(t.v, udp_pkt(1500, df=True), NOW)
    assert r.action is Action.DROP and not r.cacheable
    (gen,) = r.generated
    assert (gen.kind, gen.out_port) == ("icmp_error", "r1a")
    assert (gen.get("icmp_type"), gen.get("icmp_code"), gen.get("mtu")) == (3, 4, 1450)
    assert (gen.get("ip_src"), gen.get("ip_dst"), gen.get("eth_dst")) == \
        ("192.168.1.1", "192.168.1.10", "02:00:00:00:01:01")


def test_too_big_without_df_goes_on_to_be_split_by_the_agent():
    r = simulate(Topo().v, udp_pkt(4000), NOW)
    assert r.action is Action.FORWARD and r.out_ports == ("p2",) and r.mtu == 1450


def test_a_packet_that_fits_a_link_no_smaller_than_its_own_has_no_mtu():
    r = simulate(Topo().v, udp_pkt(1450, df=True), NOW)
    assert r.action is Action.FORWARD and r.mtu is None and r.cacheable


def test_a_path_onto_a_smaller_link_records_its_mtu_for_the_flow():
    t = Topo()
    t.v.bridges["b2"] = Bridge(**{**t.v.bridges["b2"].to_dict(), "mtu": 1400})
    r = simulate(t.v, udp_pkt(100), NOW)
    assert r.action is Action.FORWARD and r.cacheable and r.mtu == 1400


def test_no_fragmentation_needed_about_an_icmp_error():
    t = Topo()
    pkt = ip_pkt(proto=PROTO_ICMP, sport=3, dport=1).evolve(ip_len=1500, ip_df=True)
    r = simulate(t.v, pkt, NOW)
    assert r.action is Action.DROP and not r.generated


@settings(max_examples=300, deadline=None)
@given(size=st.integers(20, 9000), df=st.booleans(), out_mtu=st.integers(68, 9000),
       in_mtu=st.integers(68, 9000))
def test_the_router_check_over_any_sizes(size, df, out_mtu, in_mtu):
    t = Topo()
    t.v.bridges["b1"] = Bridge(**{**t.v.bridges["b1"].to_dict(), "mtu": in_mtu})
    t.v.bridges["b2"] = Bridge(**{**t.v.bridges["b2"].to_dict(), "mtu": out_mtu})
    r = simulate(t.v, udp_pkt(size, df=df), NOW)
    fits = size <= out_mtu
    assert (r.action is Action.FORWARD) == (fits or not df)
    assert bool(r.generated) == (not fits and df)
    if r.action is Action.FORWARD:
        assert r.mtu == (out_mtu if not fits or out_mtu < in_mtu else None)


# ---- the agent: splitting, frag-needed frames, held later fragments ------------------
ETH_VM1 = bytes.fromhex(R1A.replace(":", "")) + bytes.fromhex("020000000101") + b"\x08\x00"


def udp_frame(size: int, *, df: bool = False, ident: int = 77, mf: bool = False,
              offset: int = 0, udp: bool = True) -> bytes:
    """VM1 (192.168.1.10) to VM2 (192.168.2.20): an IP packet of ``size``
    bytes (a UDP datagram, or a later fragment's data)."""
    body = struct.pack("!HHHH", 5000, 6000, size - 20, 0) + bytes(
        i % 251 for i in range(size - 28)) if udp else bytes(i % 7 for i in range(size - 20))
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, ident,
                                (0x4000 if df else 0) | (0x2000 if mf else 0) | offset,
                                64, PROTO_UDP, 0, bytes([192, 168, 1, 10]),
                                bytes([192, 168, 2, 20])))
    hdr[10:12] = struct.pack("!H", ip_checksum(bytes(hdr)))
    return ETH_VM1 + bytes(hdr) + body


def test_the_agent_splits_a_datagram_too_big_for_the_egress_link(routed_world):
    api, agents, _, _ = routed_world
    worlds.learn_arp(api, "r", {"192.168.2.20": worlds.VM2})
    frame = udp_frame(4000)
    d = agents["h1"].handle_miss(5, frames.parse(frame), frame)
    assert d.actions and Rewrite("ip_fragment", 1450) in d.rewrites
    first = frames.apply_rewrites(frame, d.rewrites)  # what the packet-out sends
    pieces = [first] + [e.frame for e in d.emits]
    assert len(pieces) == 3 and all(ip_fields(p)["total"] <= 1450 for p in pieces)
    assert reassemble(pieces) == frame[34:]
    # the later pieces go where the first goes, with the MACs and TTL of the route only
    assert all(e.actions == d.actions for e in d.emits)
    assert all({r.field for r in e.rewrites} == {"eth_src", "eth_dst", "ttl"} for e in d.emits)
    assert d.result.mtu == 1450 and agents["h1"].stats["fragmented"] == 1


def test_the_agent_answers_df_too_big_with_fragmentation_needed(routed_world):
    _, agents, _, _ = routed_world
    frame = udp_frame(1500, df=True)
    d = agents["h1"].handle_miss(5, frames.parse(frame), frame)
    assert d.actions == [] and not d.install
    (icmp_frame,) = [e.frame for e in d.emits]
    f = frames.parse(icmp_frame)
    assert (f["ip_src"], f["ip_dst"], f["tp_src"], f["tp_dst"]) == \
        ("192.168.1.1", "192.168.1.10", 3, 4)
    assert struct.unpack_from("!H", icmp_frame, 34 + 6)[0] == 1450  # RFC 1191's field
    assert f["icmp_inner"] == (PROTO_UDP, "192.168.1.10", 5000, "192.168.2.20", 6000)
    assert ip_checksum(icmp_frame[34:]) == 0  # the ICMP checksum holds


def test_later_fragments_follow_their_first_and_are_split_too(routed_world):
    api, agents, replayed, _ = routed_world
    worlds.learn_arp(api, "r", {"192.168.2.20": worlds.VM2})
    h1 = agents["h1"]
    later = udp_frame(1500, mf=True, offset=185, udp=False)  # bytes 1480.. of datagram 77
    d = h1.handle_miss(5, frames.parse(later), later)
    assert d.actions == [] and h1.frags.held == 1  # before its first: held
    first = udp_frame(1500, mf=True)
    d = h1.handle_miss(5, frames.parse(first), first)
    assert d.actions and not d.install and len(d.emits) == 1  # split: 1,500 > 1,450
    assert replayed == [("h1", 5, later)]  # the held one is handled again
    d = h1.handle_miss(5, frames.parse(later), later)
    assert d.actions and len(d.emits) == 1 and Rewrite("ip_fragment", 1450) in d.rewrites
    assert all(ip_fields(p)["total"] <= 1450 for p in
               [frames.apply_rewrites(later, d.rewrites), d.emits[0].frame])


def test_a_later_fragment_of_a_natted_datagram_is_rewritten_in_its_ip_header_only():
    frame = udp_frame(1500, mf=True, offset=185, udp=False)
    out = frames.apply_rewrites(frame, [Rewrite("frag_ip_src", "203.0.113.7")])
    assert frames.parse(out)["ip_src"] == "203.0.113.7" and ip_checksum(out[14:34]) == 0
    assert out[34:] == frame[34:]  # its data (no L4 header there) untouched


# ---- the flow: bigger packets to the agent ---------------------------------------------
def test_a_flow_with_a_path_mtu_sends_bigger_packets_to_the_agent():
    sw = FakeOFTable().apply(pl.base_flows(pl.OFFLINE))
    sw.apply(pl.classify_flows(pl.OFFLINE, 5, 11, [2]))
    pkt = udp_pkt(100, in_port="p1")
    d = Decision([Output(6)], frozenset({"ip_dst"}), frozenset(),
                 Result(action=Action.FORWARD, mtu=1400), cookie=FlowIndex.COOKIE_BASE | 1,
                 packet=pkt)
    sw.apply(pl.decision_messages(pl.OFFLINE, d, 5, udp_frame(100), None, 30))
    seen = {"in_port": 5, "eth_src": pkt.eth_src, "eth_dst": pkt.eth_dst, "eth_type": 0x800,
            "ipv4_src": pkt.ip_src, "ipv4_dst": pkt.ip_dst, "ip_proto": PROTO_UDP,
            "nw_ttl": 64, "udp_src": 5000, "udp_dst": 6000}
    assert sw.lookup({**seen, "pkt_len": 1414}).ports == [6]  # 1,400 bytes of IP: fits
    big = sw.lookup({**seen, "pkt_len": 1415})
    assert big.ports == [CONTROLLER] and big.meters == [5]  # through the port's meter
    flow = next(e for e in sw.flows(1) if e.cookie == d.cookie)
    (acts,) = [i.actions for i in flow.instructions]
    assert isinstance(acts[0], mtu.NXActionCheckPktLarger) and acts[0].pkt_len == 1414
    # without a path MTU, no check
    assert mtu.check_actions(None) == []


def test_the_check_action_encodes_as_ovs_reads_it():
    buf = bytearray()
    mtu.NXActionCheckPktLarger(1464).serialize(buf, 0)
    # OFPAT_VENDOR, 24 bytes, Nicira, subtype 49, pkt_len, offset 0, NXM_NX_REG6, padding
    assert bytes(buf) == struct.pack("!HHIHHHI6x", 0xFFFF, 24, 0x2320, 49, 1464, 0,
                                     0x00010C04)
    back = pl.OFFLINE.ofproto_parser.OFPAction.parser(bytes(buf), 0)
    assert isinstance(back, mtu.NXActionCheckPktLarger) and back.pkt_len == 1464
