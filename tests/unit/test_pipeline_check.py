"""The declared pipeline (midoflow.apps.tables) and its check
(midoflow.apps.flowcheck): every message the pipeline builds passes it, and
flows that break the declaration are refused with a message naming the table
and the field or action; the agent logs and does not send them."""

from __future__ import annotations

import inspect
import logging

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as p

from midoflow.agent import sgflows
from midoflow.agent.core import Decision, Emit, Output, Tunnel
from midoflow.agent.flows import FlowIndex
from midoflow.apps import pipeline as pl
from midoflow.apps import tables
from midoflow.apps.flowcheck import PipelineError, check
from midoflow.sim.packet import ETH_ARP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import Rewrite
from tests.unit.fakeoftable import FakeOFTable

DP = pl.OFFLINE
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
COOKIE = FlowIndex.COOKIE_BASE | 9
ALL_FIELDS = frozenset({"in_port", "eth_src", "eth_dst", "eth_type", "ip_src", "ip_dst",
                        "ip_proto", "ip_tos", "tp_src", "tp_dst", "arp_op", "arp_tpa",
                        "arp_spa", "arp_sha"})
IP = dict(in_port="p", eth_src=A, eth_dst=B, ip_src="10.0.0.1", ip_dst="10.0.0.2")
PACKETS = [Packet(**IP, ip_proto=PROTO_TCP, tp_src=1, tp_dst=2),
           Packet(**IP, ip_proto=PROTO_UDP, tp_src=1, tp_dst=2),
           Packet(**IP, ip_proto=PROTO_ICMP, tp_src=8, tp_dst=0, icmp_id=3),
           Packet(**IP, ip_proto=47),
           Packet(in_port="p", eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=1, arp_sha=A,
                  arp_spa="10.0.0.1", arp_tpa="10.0.0.2"),
           Packet(in_port="p", eth_src=A, eth_dst=B, eth_type=0x86DD)]
REWRITES = (Rewrite("eth_src", A), Rewrite("eth_dst", B), Rewrite("ttl", 1),
            Rewrite("ip_src", "1.2.3.4"), Rewrite("ip_dst", "5.6.7.8"),
            Rewrite("tp_src", 9), Rewrite("tp_dst", 10))
OUTS = [Output(3), Tunnel(77, "10.10.0.2", 2), Output(6, zone=6)]  # 6: security groups in OVS


def _decisions():
    """Decisions of every packet kind, forwarded with the rewrites the
    simulation makes on what it read (MACs on a bridge; MACs, TTL and
    addresses after a route or a stateless NAT on the destination; ports too
    after a stateful NAT, which reads the 5-tuple), or dropped."""
    for pkt in PACKETS:
        ip = pkt.eth_type == 0x0800
        for fields, rewrites in ((ALL_FIELDS, REWRITES if ip else REWRITES[:2]),
                                 (frozenset({"ip_dst"}), REWRITES[:5] if ip else ()),
                                 (frozenset({"eth_dst"}), REWRITES[:2])):
            yield Decision(OUTS, fields, frozenset(), None, cookie=COOKIE, packet=pkt,
                           rewrites=rewrites, pushes=[Emit(b"s", OUTS)],
                           emits=[Emit(b"e", OUTS, REWRITES[:2])])
            yield Decision([], fields, frozenset(), None, cookie=COOKIE, packet=pkt)
            yield Decision(OUTS, fields, frozenset(), None, cookie=COOKIE, packet=pkt,
                           rewrites=rewrites, uses=(("nat", "b"),))  # tracked


# Every message-building function of the pipeline, with arguments.
BUILDERS = {
    "base_flows": [(DP,), (DP, False)],
    "classify_flows": [(DP, 5, 77, [2, 3]), (DP, 5, 77, [], 10, 1),
                       (DP, 5, 77, [2], 10, 1, DP.ofproto.OFPMC_MODIFY)],
    "to_controller_flow": [(DP, 5)],
    "tagged_drop_flows": [(DP, 5)],
    "unclassify_flows": [(DP, 5, 77)],
    "port_meter": [(DP, 5)],
    "delete_meter": [(DP, 5)],
    "meter_stats_request": [(DP,)],
    "meter_config_request": [(DP,)],
    "storm_block_flow": [(DP, 5, 2)],
    "bgp_link_flows": [(DP, 40, 5, "192.0.2.1")],
    "delete_bgp_link_flows": [(DP, 40)],
    "delete_cookie": [(DP, COOKIE)],
    "decision_flow": [(DP, d, 4, 30, pl.actions_for(DP, d)) for d in _decisions()],
    "close_flows": [(DP, d, 4) for d in _decisions() if pl.tracked(d)],
    "decision_messages": [(DP, d, 4, b"frame", None, 30) for d in _decisions()],
    "packet_out": [(DP, [p.OFPActionOutput(3)], b"x")],
    "unbound_miss_flows": [(DP,), (DP, 10, 5)],
    "fence_flows": [(DP, [2, 3])],
    "delete_fence_flows": [(DP,), (DP, 2)],
    "sg_flow_mods": [(DP, 7, [sgflows.SgFlow(d, prio, m, a)
                              for d, m in (("egress", (("in_port", 7),)),
                                           ("ingress", (("ct_zone", 7),)))
                              for prio, a in ((sgflows.PRIO_DEFAULT, sgflows.DROP),
                                              (sgflows.PRIO_ESTABLISHED, sgflows.PASS))]
                      + [sgflows.SgFlow(d, prio, (("ct_zone", 7), ("eth_src", A)), a)
                         for d, prio, a in (("ingress", sgflows.PRIO_STRAY_EGRESS,
                                             sgflows.AS_EGRESS),
                                            ("egress", sgflows.PRIO_STRAY, sgflows.AS_EGRESS))]
                      + [sgflows.SgFlow("egress", sgflows.PRIO_STRAY_INGRESS,
                                        (("ct_zone", 7),), sgflows.AS_INGRESS)]
                      + [sgflows.SgFlow("ingress", sgflows.PRIO_RULE, tuple(sorted({
                          "ct_zone": 7, "ct_state": (0x20, 0x38), "eth_type": 0x800,
                          "ip_proto": 6, "tcp_dst": (8080, 0xFFF0),
                          "ipv4_src": ("10.0.0.0", "255.0.0.0")}.items())), sgflows.COMMIT)]),
                     (DP, 7, [sgflows.SgFlow("egress", sgflows.PRIO_DEFAULT,
                                             (("in_port", 7),), sgflows.DROP)], True)],
    "delete_sg_flows": [(DP, 7)],
    "sg_classify_flows": [(DP, 7, 77, [2, 3], True, True), (DP, 7, 77, [2], False, False)],
    "ct_flush_zone": [(DP, 7)],
    "ct_nudge": [(DP,)],
}
# Public functions of the pipeline that build no message.
NOT_BUILDERS = {"allowed", "close_copy", "send", "send_batch", "tracked", "match_kwargs",
                "meter_id", "metered_drops", "rewrite_actions", "output_actions", "actions_for",
                "ct_action", "is_ipv4"}


def _messages(result):
    return result if isinstance(result, list) else [result]


def test_every_builder_of_the_pipeline_is_covered_here():
    public = {n for n in pl.__all__ if inspect.isfunction(getattr(pl, n))}
    assert public - NOT_BUILDERS == set(BUILDERS), \
        "a new message builder: add it to BUILDERS so its flows are checked"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_message_the_pipeline_builds_passes_the_check_and_serializes(name):
    n = 0
    for args in BUILDERS[name]:
        for m in _messages(getattr(pl, name)(*args)):
            check(m)
            m.set_xid(1)
            m.serialize()  # os-ken can put it on the wire
            n += 1
    assert n > 0


def test_the_flows_name_their_writers():
    writers = {check(m) for m in pl.base_flows(DP)} - {None}
    assert writers == {tables.BASE}
    assert {check(m) for m in pl.classify_flows(DP, 5, 7, [2])} == {None, tables.CLASSIFY}
    assert {check(m) for m in pl.bgp_link_flows(DP, 40, 5, "192.0.2.1")} == {tables.BGP_LINK}
    assert check(pl.storm_block_flow(DP, 5, 2)) == tables.STORM
    d = next(_decisions())
    assert check(pl.decision_flow(DP, d, 4, 30, pl.actions_for(DP, d))) == tables.DECISION


def test_every_table_a_flow_may_go_to_is_declared():
    for t in tables.PIPELINE.values():
        assert t.goto <= set(tables.PIPELINE) and all(g > t.table_id for g in t.goto)
        prios = [pr for w in t.writers for pr in w.priorities]
        owners = {pr: [w.name for w in t.writers if pr in w.priorities] for pr in prios}
        # a priority two writers share is told apart by cookie
        for pr, names in owners.items():
            ws = [w for w in t.writers if w.name in names]
            assert len({(w.cookie, w.mask) for w in ws}) == len(ws), (t.name, pr)


# ------------------------------------------------------------------ refusals
def flow(table, prio, actions=(), goto=None, cookie=0, idle=0, hard=0, meter=None, **match):
    inst = [p.OFPInstructionMeter(meter, ofp.OFPIT_METER)] if meter is not None else []
    if actions:
        inst.append(p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions)))
    if goto is not None:
        inst.append(p.OFPInstructionGotoTable(goto))
    return p.OFPFlowMod(DP, table_id=table, priority=prio, cookie=cookie, idle_timeout=idle,
                        hard_timeout=hard, match=p.OFPMatch(**match), instructions=inst)


def dec(actions=(), **match):
    """A decision flow in table 1 (the right priority, cookie and timeout)."""
    return flow(1, tables.PRIO_SIMULATED, actions, cookie=COOKIE, idle=30, **match)


IPM = {"in_port": 4, "eth_type": 0x800}
CTL = p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)


def close(actions=(), meter=None):
    """A close flow in table 1 (its priority and cookie, no timeout)."""
    return flow(1, tables.PRIO_TCP_CLOSE, actions, cookie=COOKIE, meter=meter, in_port=4,
                eth_type=0x800, ip_proto=6, tcp_flags=(1, 1))


@pytest.mark.parametrize("msg, says", [
    (flow(0, tables.PRIO_CLASSIFY, [p.OFPActionSetField(eth_dst=B), p.OFPActionOutput(3)],
          in_port=4), r"table 0 \(classify\).*set_field eth_dst not allowed"),
    (dec([p.OFPActionSetField(vlan_vid=0x1005), p.OFPActionOutput(3)], in_port=4),
     r"table 1 \(simulated\).*set_field vlan_vid not allowed"),
    (dec([p.OFPActionOutput(ofp.OFPP_CONTROLLER)], in_port=4),
     "output to the controller is not allowed"),
    (flow(6, 0), "table 6 is not declared"),
    (flow(2, tables.PRIO_CLASSIFY, [p.OFPActionOutput(ofp.OFPP_CONTROLLER)], in_port=4,
          eth_src=A), "table 2 .* match field.* eth_src not declared"),
    (dec([p.OFPActionOutput(3)], in_port=4, eth_type=0x800, tcp_dst=80),
     "match field tcp_dst needs ip_proto in \\[6\\]"),
    (dec([p.OFPActionOutput(3)], in_port=4, ipv4_dst="10.0.0.1"),
     "match field ipv4_dst needs eth_type in \\['0x800'\\]"),
    (dec([p.OFPActionSetField(tcp_src=1), p.OFPActionOutput(3)], **IPM, ip_proto=17),
     "set_field tcp_src needs ip_proto in \\[6\\]"),
    (dec([p.OFPActionDecNwTtl(), p.OFPActionOutput(3)], in_port=4, eth_dst=B),
     "dec_nw_ttl needs eth_type"),
    (flow(1, tables.PRIO_SIMULATED, [p.OFPActionOutput(3)], cookie=COOKIE, in_port=4),
     "writer decision: idle_timeout 0.*take idle timeout"),
    (flow(1, tables.PRIO_SIMULATED, [p.OFPActionOutput(3)], cookie=7, idle=30, in_port=4),
     "cookie 0x7: no writer of this table"),
    (flow(0, tables.PRIO_STORM, in_port=4, cookie=tables.STORM_COOKIE | 4),
     "writer storm: .*take hard timeout"),
    (flow(0, 123, in_port=4), "priority 123.*no writer"),
    (dec(goto=0, in_port=4), "goto_table 0 not allowed"),
    (dec([p.OFPActionOutput(3)], meter=4, in_port=4), "this table takes no meter"),
    (dec([p.OFPActionPushVlan(), p.OFPActionOutput(3)], in_port=4),
     "action OFPActionPushVlan not allowed"),
    # a close flow copies to the controller first, through its in_port's meter only
    (close([CTL, p.OFPActionOutput(3)], meter=5), "take their in_port's meter only"),
    (close([CTL, p.OFPActionOutput(3)]), "must be the first action, through the in_port's"),
    (close([p.OFPActionOutput(3), CTL], meter=4), "must be the first action"),
    (close([CTL, p.OFPActionSetField(vlan_vid=0x1005)], meter=4),
     "set_field vlan_vid not allowed"),
    (p.OFPFlowMod(DP, table_id=1, priority=tables.PRIO_SIMULATED, cookie=COOKIE,
                  idle_timeout=30, match=p.OFPMatch(in_port=4), instructions=[
                      p.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS,
                                              [p.OFPActionOutput(3)])]),
     "instruction OFPInstructionActions"),
    (p.OFPFlowMod(DP, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                  match=p.OFPMatch(in_port=4)), "the base wipe only"),
    (p.OFPFlowMod(DP, command=ofp.OFPFC_DELETE, table_id=1, cookie=5,
                  cookie_mask=(1 << 64) - 1, match=p.OFPMatch()), "cookie 0x5 is no writer's"),
    (p.OFPFlowMod(DP, command=ofp.OFPFC_DELETE, table_id=2, match=p.OFPMatch(tunnel_id=4)),
     "table 2 .*delete: match field.* tunnel_id"),
])
def test_the_check_refuses_what_the_declaration_does_not_allow(msg, says):
    with pytest.raises(PipelineError, match=says):
        check(msg)
    with pytest.raises(PipelineError):  # the fake switch refuses it too
        FakeOFTable().apply([p.OFPMeterMod(DP, command=ofp.OFPMC_ADD, meter_id=4), msg])


def test_a_rewrite_the_table_cannot_carry_is_refused_at_the_decision():
    """A routed decision that matched no IP field (the simulation must make
    its flows depend on the destination it routed by)."""
    d = Decision([Output(3)], frozenset({"eth_dst"}), frozenset(), None, cookie=COOKIE,
                 packet=PACKETS[0], rewrites=(Rewrite("ttl", 1),))
    with pytest.raises(PipelineError, match="dec_nw_ttl needs eth_type"):
        check(pl.decision_flow(DP, d, 4, 30, pl.actions_for(DP, d)))


class Recorder:
    ofproto, ofproto_parser = ofp, p

    def __init__(self):
        self.sent = []

    def send_msg(self, m):
        self.sent.append(m)


def test_send_logs_a_refused_flow_and_sends_the_rest(caplog):
    dp = Recorder()
    good = pl.storm_block_flow(DP, 5, 2)
    bad = dec([p.OFPActionOutput(ofp.OFPP_CONTROLLER)], in_port=4)
    po = pl.packet_out(DP, [p.OFPActionOutput(3)], b"x")
    with caplog.at_level(logging.ERROR, logger="midoflow.agent"):
        assert pl.send(dp, [good, bad, po]) == 1
    assert dp.sent == [good, po]
    (rec,) = caplog.records
    assert "not sent" in rec.getMessage() and "table 1 (simulated)" in rec.getMessage()


# ------------------------------------------------------------------ the agent's glue
def _agent(decision):
    from types import SimpleNamespace

    calls = []
    core = SimpleNamespace(
        handle_miss=lambda in_port, fields, data, copy=False: decision,
        flow_replaced=lambda key, cookie: calls.append(("replaced", key, cookie)),
        flow_removed=lambda cookie: calls.append(("removed", cookie)),
        note_malformed=lambda reason: calls.append(("malformed", reason)),
        stats={"malformed": 0})
    from midoflow.apps.metrics import AgentMetrics

    agent = SimpleNamespace(core=core, cfg=SimpleNamespace(idle_timeout=30))
    agent.metrics = AgentMetrics(agent)  # _process times handle_miss through it
    return agent, calls


def _frame() -> bytes:
    return bytes.fromhex(B.replace(":", "") + A.replace(":", "")) + b"\x86\xdd" + bytes(40)


def test_the_agent_sends_a_decisions_messages_and_indexes_its_flow():
    from midoflow.apps.agent import MidoflowAgent

    d = Decision([Output(3)], frozenset({"eth_dst"}), frozenset(), None, cookie=COOKIE,
                 packet=PACKETS[0], pushes=[Emit(b"s", OUTS)])
    agent, calls = _agent(d)
    dp = Recorder()
    MidoflowAgent._process(agent, dp, 4, _frame(), None)
    assert [type(m).__name__ for m in dp.sent] == ["OFPPacketOut", "OFPPacketOut", "OFPFlowMod"]
    assert calls == [("replaced", (("eth_dst", B), ("in_port", 4)), COOKIE)]


def test_the_agent_does_not_send_nor_index_a_refused_flow(caplog):
    from midoflow.apps.agent import MidoflowAgent

    d = Decision([Output(3)], frozenset({"eth_dst"}), frozenset(), None, cookie=7,
                 packet=PACKETS[0])
    agent, calls = _agent(d)
    dp = Recorder()
    with caplog.at_level(logging.ERROR, logger="midoflow.agent"):
        MidoflowAgent._process(agent, dp, 4, _frame(), None)
    assert [type(m).__name__ for m in dp.sent] == ["OFPPacketOut"]  # the packet still goes
    assert calls == [("removed", 7)] and "cookie 0x7" in caplog.text
    MidoflowAgent._process(agent, dp, 4, b"runt", None)
    assert calls[-1] == ("malformed", "runt")
