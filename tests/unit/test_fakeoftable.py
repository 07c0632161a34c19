"""The fake OpenFlow table itself (tests/unit/fakeoftable.py): it must answer
as OVS would, or the pipeline tests built on it prove nothing. Flows here are
built by hand (check off) to reach each rule of OpenFlow 1.3 it follows."""

from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as p

from midoflow.apps.pipeline import OFFLINE as DP
from tests.unit.fakeoftable import CONTROLLER, FakeOFTable, FakeTableError

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def add(table, prio, actions=(), goto=None, cookie=0, meter=None, **match):
    inst = [p.OFPInstructionMeter(meter, ofp.OFPIT_METER)] if meter is not None else []
    if actions:
        inst.append(p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions)))
    if goto is not None:
        inst.append(p.OFPInstructionGotoTable(goto))
    return p.OFPFlowMod(DP, table_id=table, priority=prio, cookie=cookie,
                        match=p.OFPMatch(**match), instructions=inst)


def delete(table, strict=False, cookie=0, mask=0, prio=0, out_port=ofp.OFPP_ANY, **match):
    return p.OFPFlowMod(DP, table_id=table, cookie=cookie, cookie_mask=mask, priority=prio,
                        command=ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE,
                        out_port=out_port, out_group=ofp.OFPG_ANY, match=p.OFPMatch(**match))


def out(port):
    return p.OFPActionOutput(port)


def meter(mid, command=ofp.OFPMC_ADD):
    return p.OFPMeterMod(DP, command=command, meter_id=mid,
                         bands=[p.OFPMeterBandDrop(rate=10, burst_size=1)])


@pytest.fixture
def t():
    return FakeOFTable(check=False)


def test_highest_priority_wins_and_a_miss_drops(t):
    t.apply([add(0, 10, [out(1)], in_port=5), add(0, 20, [out(2)], in_port=5, eth_dst=B)])
    assert t.lookup({"in_port": 5, "eth_dst": B}).ports == [2]
    assert t.lookup({"in_port": 5, "eth_dst": A}).ports == [1]
    assert t.lookup({"in_port": 6}).dropped


def test_masks_and_absent_fields():
    t = FakeOFTable(check=False).apply([
        add(0, 10, [out(1)], eth_type=0x800, ipv4_dst=("10.0.0.0", "255.255.255.0")),
        add(0, 20, [out(2)], vlan_vid=(0x1000, 0x1000))])
    assert t.lookup({"eth_type": 0x800, "ipv4_dst": "10.0.0.77"}).ports == [1]
    assert t.lookup({"eth_type": 0x800, "ipv4_dst": "10.0.1.1"}).dropped
    assert t.lookup({"eth_type": 0x800}).dropped  # no address: matches no address
    assert t.lookup({"vlan_vid": 0x1000 | 7, "eth_type": 0x800}).ports == [2]


def test_apply_actions_run_in_order_then_goto_then_the_action_set(t):
    t.apply([add(0, 1, [out(1), p.OFPActionSetField(eth_dst=B), out(2)], goto=1),
             p.OFPFlowMod(DP, table_id=1, priority=1, match=p.OFPMatch(), instructions=[
                 p.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [out(4)]),
                 p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [p.OFPActionDecNwTtl(),
                                                                   out(3)])])])
    tr = t.lookup({"in_port": 9, "eth_dst": A, "nw_ttl": 5})
    assert tr.ports == [1, 2, 3, 4] and tr.tables == [0, 1]
    assert tr.out(1)["eth_dst"] == A and tr.out(2)["eth_dst"] == B
    assert tr.out(3)["nw_ttl"] == 4
    expired = t.lookup({"in_port": 9, "nw_ttl": 1})
    assert expired.ttl_expired and expired.ports == [1, 2]


def test_an_add_replaces_the_flow_of_same_table_priority_and_match(t):
    t.apply([add(1, 5, [out(1)], cookie=1, in_port=3, eth_dst=B),
             add(1, 5, [out(2)], cookie=2, eth_dst=B, in_port=3),  # same match, other order
             add(1, 6, [out(3)], cookie=3, in_port=3, eth_dst=B)])
    assert sorted(t.cookies(1)) == [2, 3] and len(t.flows()) == 2
    assert t.lookup({"in_port": 3, "eth_dst": B}, table=1).ports == [3]


def test_delete_by_cookie_and_mask_and_match(t):
    t.apply([add(1, 5, [out(1)], cookie=0x4D00000000000001, in_port=3),
             add(1, 5, [out(1)], cookie=0x4D00000000000002, in_port=4),
             add(1, 5, [out(2)], cookie=0x5700000000000001, in_port=5),
             add(0, 5, [out(2)], cookie=0, in_port=3)])
    t.apply([delete(1, cookie=0x4D00000000000001, mask=(1 << 64) - 1)])
    assert t.cookies(1) == {0x4D00000000000002, 0x5700000000000001}
    t.apply([delete(1, cookie=0x4D << 56, mask=0xFF << 56)])  # a group, by mask
    assert t.cookies(1) == {0x5700000000000001}
    t.apply([delete(ofp.OFPTT_ALL, in_port=3)])  # non-strict: every flow as specific
    assert t.cookies() == {0x5700000000000001}


def test_delete_strict_wants_the_same_match_and_priority_and_out_port_filters(t):
    t.apply([add(0, 5, [out(1)], in_port=3), add(0, 5, [out(2)], in_port=3, eth_dst=B)])
    t.apply([delete(0, strict=True, prio=6, in_port=3), delete(0, out_port=7)])
    assert len(t.flows()) == 2
    t.apply([delete(0, out_port=2)])
    assert [e.match for e in t.flows()] == [{"in_port": (3, (1 << 128) - 1)}]
    t.apply([delete(0, strict=True, prio=5, in_port=3)])
    assert t.flows() == []


def test_meters_must_exist_before_their_flows_and_take_them_when_deleted(t):
    with pytest.raises(FakeTableError, match="meter 5, which does not exist"):
        t.apply([add(2, 1, [out(ofp.OFPP_CONTROLLER)], meter=5, in_port=5)])
    t.apply([meter(5), add(2, 1, [out(ofp.OFPP_CONTROLLER)], meter=5, in_port=5),
             add(2, 1, [out(ofp.OFPP_CONTROLLER)], in_port=6)])
    tr = t.lookup({"in_port": 5}, table=2)
    assert tr.ports == [CONTROLLER] and tr.meters == [5]
    with pytest.raises(FakeTableError, match="exists"):
        t.apply([meter(5)])
    t.apply([meter(5, ofp.OFPMC_DELETE)])
    assert t.lookup({"in_port": 5}, table=2).dropped and len(t.flows()) == 1
    with pytest.raises(FakeTableError, match="does not exist"):
        t.apply([meter(5, ofp.OFPMC_MODIFY)])


def test_two_flows_of_one_priority_with_different_instructions_are_an_error(t):
    t.apply([add(0, 5, [out(1)], in_port=3), add(0, 5, [out(2)], eth_dst=B)])
    with pytest.raises(FakeTableError, match="undefined"):
        t.lookup({"in_port": 3, "eth_dst": B})
    assert t.lookup({"in_port": 3, "eth_dst": A}).ports == [1]


def test_packet_outs_are_kept_and_can_be_run(t):
    po = p.OFPPacketOut(DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=4,
                        actions=[p.OFPActionSetField(eth_src=A), out(1)], data=b"x")
    t.apply([po])
    assert t.packet_outs == [po]
    tr = t.packet_out(po, {"eth_src": B})
    assert tr.ports == [1] and tr.out(1) == {"eth_src": A, "in_port": 4}
