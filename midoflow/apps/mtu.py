"""Flows that must not carry packets bigger than a link on their path.

A simulated flow whose path crosses a router onto a link smaller than the
one its packets came in by (``Result.mtu``: from the uplink, 1500 bytes, to
a tenant network of 1450) would otherwise pass a bigger packet silently: no
ICMP fragmentation needed for a DF packet, no fragmenting of the others.
OpenFlow cannot match a packet's length, but Open vSwitch's
``check_pkt_larger`` action (OVS 2.12+, userspace datapath included: the
datapath's ``check_pkt_len`` with two branches) can branch on it:

    table 1: <decision's match>
             actions=check_pkt_larger(MTU+14)->reg6[0], resubmit(,3), <decision's actions>
    table 3: reg6=1/1 actions=resubmit(,2), exit      (bigger: to the agent, metered)
             (miss)   actions=                        (not bigger: go on)

``exit`` inside the resubmit ends the whole action list, so a bigger packet
reaches the agent (through its port's packet-in meter in table 2) and is not
forwarded; the agent splits it or answers ICMP fragmentation needed. Tried
on OVS 3.1's userspace datapath here: a small packet after a big one of the
same flow still passes (the datapath flow carries both branches).

Except when the flow's actions recirculate (``ct(table=5)``: a delivery to a
port whose security groups OVS enforces): OVS 3.1 then lets the bigger
branch's ``exit`` end the smaller one too, and every packet is dropped
(measured: 0 of 3 pings; /work/notes-tmp/i13b). Such a flow marks bit 1
instead, whose table-3 flow has no ``exit``, and table 5 drops a packet
marked so (registers ride the recirculation; the agent has it):

    table 3: reg6=2/2 actions=resubmit(,2)
    table 5: reg6=2/2 actions=drop            (above every port's flows)

os-ken 3.1 has no class for the action (NXAST_CHECK_PKT_LARGER, subtype 49),
so it is encoded here from OVS's ``nx_action_check_pkt_larger``: pkt_len,
the result bit's offset, the destination's NXM header, padding to 24 bytes.
"""

from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_v1_3_parser as parser

from midoflow.apps.tables import MTU_REG, MTU_REG_INDEX, TABLE_MTU

ETH_HEADER = 14  # check_pkt_larger counts the whole frame (no VLAN: ports are untagged)
NXAST_CHECK_PKT_LARGER = 49
_NXM_NX_REG = 0x0001  # the Nicira NXM class of reg0..reg15


def reg_header(index: int) -> int:
    """The 4-byte NXM header of register ``index`` (NXM_NX_REG<index>)."""
    return _NXM_NX_REG << 16 | index << 9 | 4


class NXActionCheckPktLarger(parser.NXAction):
    """``check_pkt_larger(pkt_len)->dst[offset]``: 1 into that bit when the
    packet is longer than ``pkt_len`` bytes, else 0."""

    _subtype = NXAST_CHECK_PKT_LARGER
    _fmt_str = "!HHI6x"  # pkt_len, offset, dst (NXM header), pad

    def __init__(self, pkt_len: int, offset: int = 0, dst: int = reg_header(MTU_REG_INDEX),
                 type_=None, len_=None, experimenter=None, subtype=None) -> None:
        super().__init__()
        self.pkt_len, self.offset, self.dst = pkt_len, offset, dst

    @classmethod
    def parser(cls, buf):
        pkt_len, offset, dst = struct.unpack_from(cls._fmt_str, buf, 0)
        return cls(pkt_len, offset, dst)

    def serialize_body(self) -> bytearray:
        return bytearray(struct.pack(self._fmt_str, self.pkt_len, self.offset, self.dst))


parser.NXAction.register(NXActionCheckPktLarger)  # so a dumped flow parses back


RECIRC_BIT = 1  # reg6 bit of a flow whose actions recirculate (see above)


def check_actions(mtu: int | None, recirculates: bool = False) -> list:
    """What a decision's flow starts with when its path has an MTU: bigger
    packets go to the agent (see the module's docstring); none otherwise.
    ``recirculates``: the flow's actions end in ``ct(table=...)``."""
    if mtu is None:
        return []
    return [NXActionCheckPktLarger(mtu + ETH_HEADER, RECIRC_BIT if recirculates else 0),
            parser.NXActionResubmitTable(in_port=0xFFF8, table_id=TABLE_MTU)]


def too_big_flows(dp, to_controller_table: int, priority: int, miss: int) -> list:
    """Table 3: a packet marked bigger goes to table 2 (its port's meter, then
    the agent) and nothing else of its flow happens; any other goes on."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    big = p.OFPFlowMod(datapath=dp, table_id=TABLE_MTU, priority=priority,
                       match=p.OFPMatch(**{MTU_REG: (1, 1)}), instructions=[
                           p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
                               p.NXActionResubmitTable(in_port=0xFFF8,
                                                       table_id=to_controller_table),
                               p.NXActionExit()])])
    bit = 1 << RECIRC_BIT
    big_recirc = p.OFPFlowMod(
        datapath=dp, table_id=TABLE_MTU, priority=priority,
        match=p.OFPMatch(**{MTU_REG: (bit, bit)}), instructions=[
            p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
                p.NXActionResubmitTable(in_port=0xFFF8, table_id=to_controller_table)])])
    rest = p.OFPFlowMod(datapath=dp, table_id=TABLE_MTU, priority=miss, match=p.OFPMatch(),
                        instructions=[])
    return [big, big_recirc, rest]


def too_big_drop_flow(dp, table: int, priority: int):
    """In the table a recirculating flow resumes in (5): what its check
    marked bigger is dropped (the agent got it)."""
    p = dp.ofproto_parser
    bit = 1 << RECIRC_BIT
    return p.OFPFlowMod(datapath=dp, table_id=table, priority=priority,
                        match=p.OFPMatch(**{MTU_REG: (bit, bit)}), instructions=[])
