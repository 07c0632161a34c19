"""A fake OpenFlow 1.3 switch for unit tests (Faucet's ``clib/fakeoftable``
idea, written for midoflow): it applies the agent's flow-mods and meter-mods
as OVS would, then answers where a packet goes and how it is rewritten.

A packet is a dict of OpenFlow field names: ``in_port``, ``eth_src``,
``eth_dst``, ``eth_type``, ``vlan_vid`` (0x1000 | vid when tagged),
``ipv4_src``, ``ipv4_dst``, ``ip_proto``, ``nw_ttl``, ``tcp_src`` …,
``tcp_flags``, ``ip_frag`` (NXM bits: 1 any fragment, 2 a later one),
``tunnel_id``, ``arp_tpa`` …. Absent ``vlan_vid``, ``tunnel_id``,
``ip_frag`` and ``tcp_flags`` are 0, as OVS sees an untagged, untunnelled,
unfragmented packet without TCP flags; any other absent field matches
nothing. Timeouts are ignored. Every flow-mod is checked against the
declared pipeline first (``midoflow.apps.flowcheck.check``): a violation
raises.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from midoflow.apps import flowcheck

CONTROLLER = "controller"
_DEFAULTS = {"vlan_vid": 0, "tunnel_id": 0, "ip_frag": 0, "tcp_flags": 0,
             **{f"reg{i}": 0 for i in range(8)}}  # registers start at 0
_ALL = (1 << 128) - 1


class FakeTableError(AssertionError):
    """Something OVS would refuse (an unknown meter, a meter added twice) or
    a packet two flows of one priority match with different instructions."""


def _int(v: Any) -> int:
    if isinstance(v, int):
        return v
    s = str(v)
    if ":" in s:
        return int(s.replace(":", ""), 16)
    return int(ipaddress.IPv4Address(s))


def _norm(match) -> dict[str, tuple[int, int]]:
    """field -> (value, mask), masks made explicit."""
    out = {}
    for k, v in match.items():
        value, mask = v if isinstance(v, tuple) else (v, _ALL)
        mask = _int(mask)
        out[k] = (_int(value) & mask, mask)
    return out


@dataclass
class Entry:
    table: int
    priority: int
    match: dict[str, tuple[int, int]]
    instructions: list
    cookie: int

    def matches(self, pkt: dict[str, Any]) -> bool:
        for f, (value, mask) in self.match.items():
            v = pkt.get(f, _DEFAULTS.get(f))
            if v is None or _int(v) & mask != value:
                return False
        return True

    def outputs_to(self, port: int) -> bool:
        return any(isinstance(a, parser.OFPActionOutput) and a.port == port
                   for i in self.instructions if isinstance(i, parser.OFPInstructionActions)
                   for a in i.actions)


@dataclass
class Out:
    """A copy of the packet leaving by ``port`` (an ofport or CONTROLLER)."""

    port: int | str
    pkt: dict[str, Any]


@dataclass
class Trace:
    """Where one packet went: its outputs, the meters it passed, the flows it
    hit ((table, priority, cookie)), and whether an invalid TTL dropped it."""

    outputs: list[Out] = field(default_factory=list)
    meters: list[int] = field(default_factory=list)
    hits: list[tuple[int, int, int]] = field(default_factory=list)
    ttl_expired: bool = False

    @property
    def ports(self) -> list[int | str]:
        return [o.port for o in self.outputs]

    @property
    def dropped(self) -> bool:
        return not self.outputs

    @property
    def tables(self) -> list[int]:
        return [h[0] for h in self.hits]

    def out(self, port: int | str) -> dict[str, Any]:
        """The packet as it left by ``port`` (exactly one copy)."""
        found = [o.pkt for o in self.outputs if o.port == port]
        assert len(found) == 1, f"{len(found)} copies left by port {port}: {self.outputs}"
        return found[0]


class FakeOFTable:
    """The flow tables and meters of one bridge."""

    def __init__(self, check: bool = True) -> None:
        self.entries: list[Entry] = []
        self.meters: dict[int, list] = {}
        # packets each meter passed since it was added (a modify keeps them)
        self.meter_packets: dict[int, int] = {}
        self.packet_outs: list = []
        self.check = check

    # ---- messages ----------------------------------------------------------
    def apply(self, msgs) -> FakeOFTable:
        for m in msgs:
            if isinstance(m, parser.OFPFlowMod):
                self._flow_mod(m)
            elif isinstance(m, parser.OFPMeterMod):
                self._meter_mod(m)
            elif isinstance(m, parser.OFPPacketOut):
                self.packet_outs.append(m)
            else:
                raise FakeTableError(f"the fake table does not apply {type(m).__name__}")
        return self

    def _flow_mod(self, m) -> None:
        if self.check:
            flowcheck.check(m)
        match = _norm(m.match)
        if m.command == ofp.OFPFC_ADD:
            for i in m.instructions:
                if isinstance(i, parser.OFPInstructionMeter) and i.meter_id not in self.meters:
                    raise FakeTableError(f"flow in table {m.table_id} uses meter {i.meter_id}, "
                                         f"which does not exist (OFPMMFC_UNKNOWN_METER)")
            self.entries = [e for e in self.entries if not (
                e.table == m.table_id and e.priority == m.priority and e.match == match)]
            self.entries.append(Entry(m.table_id, m.priority, match, list(m.instructions),
                                      m.cookie))
            return
        strict = m.command in (ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT)
        chosen = [e for e in self.entries if self._selects(m, match, e, strict)]
        if m.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            self.entries = [e for e in self.entries if e not in chosen]
        else:
            for e in chosen:
                e.instructions = list(m.instructions)

    @staticmethod
    def _selects(m, match: dict, e: Entry, strict: bool) -> bool:
        if m.table_id not in (ofp.OFPTT_ALL, e.table):
            return False
        if e.cookie & m.cookie_mask != m.cookie & m.cookie_mask:
            return False
        if m.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT) and \
                m.out_port != ofp.OFPP_ANY and not e.outputs_to(m.out_port):
            return False
        if strict:
            return e.priority == m.priority and e.match == match
        # non-strict: the entry is at least as specific as the given match
        return all(f in e.match and e.match[f][1] & mask == mask
                   and e.match[f][0] & mask == value for f, (value, mask) in match.items())

    def _meter_mod(self, m) -> None:
        if m.command == ofp.OFPMC_ADD:
            if m.meter_id in self.meters:
                raise FakeTableError(f"meter {m.meter_id} exists (OFPMMFC_METER_EXISTS)")
            self.meters[m.meter_id] = list(m.bands)
            self.meter_packets[m.meter_id] = 0
        elif m.command == ofp.OFPMC_MODIFY:
            if m.meter_id not in self.meters:
                raise FakeTableError(f"meter {m.meter_id} does not exist (OFPMMFC_UNKNOWN_METER)")
            self.meters[m.meter_id] = list(m.bands)
        elif m.command == ofp.OFPMC_DELETE:
            gone = set(self.meters) if m.meter_id == ofp.OFPM_ALL else {m.meter_id}
            for mid in gone:
                self.meters.pop(mid, None)
                self.meter_packets.pop(mid, None)
            # as OVS does: the flows that used a deleted meter go with it
            self.entries = [e for e in self.entries if not any(
                isinstance(i, parser.OFPInstructionMeter) and i.meter_id in gone
                for i in e.instructions)]

    def meter_config(self) -> list:
        """The body of an OFPMeterConfigStatsReply: the meters held."""
        return [parser.OFPMeterConfigStats(meter_id=mid, bands=bands)
                for mid, bands in sorted(self.meters.items())]

    # ---- packets ------------------------------------------------------------
    def flows(self, table: int | None = None) -> list[Entry]:
        return [e for e in self.entries if table is None or e.table == table]

    def cookies(self, table: int | None = None) -> set[int]:
        return {e.cookie for e in self.flows(table)}

    def lookup(self, pkt: dict[str, Any], table: int = 0) -> Trace:
        """Send ``pkt`` through the tables from ``table``."""
        pkt, trace, action_set = dict(pkt), Trace(), []
        while True:
            entry = self._best(table, pkt)
            if entry is None:  # table miss, no miss flow: dropped (OpenFlow 1.3)
                break
            trace.hits.append((entry.table, entry.priority, entry.cookie))
            goto = None
            for i in sorted(entry.instructions, key=_order):
                if isinstance(i, parser.OFPInstructionMeter):
                    trace.meters.append(i.meter_id)
                    self.meter_packets[i.meter_id] += 1
                elif isinstance(i, parser.OFPInstructionActions):
                    if i.type == ofp.OFPIT_APPLY_ACTIONS:
                        if not self._run(i.actions, pkt, trace):
                            return trace
                    elif i.type == ofp.OFPIT_WRITE_ACTIONS:
                        action_set += i.actions
                    else:  # clear-actions
                        action_set = []
                elif isinstance(i, parser.OFPInstructionGotoTable):
                    goto = i.table_id
            if goto is None:
                break
            assert goto > table, f"goto_table {goto} from table {table} (only forward)"
            table = goto
        self._run(action_set, pkt, trace)
        return trace

    def packet_out(self, msg, pkt: dict[str, Any]) -> Trace:
        """What a packet-out does to ``pkt`` (its frame's fields)."""
        trace = Trace()
        self._run(msg.actions, {**pkt, "in_port": msg.in_port}, trace)
        return trace

    def _best(self, table: int, pkt: dict[str, Any]) -> Entry | None:
        hits = [e for e in self.entries if e.table == table and e.matches(pkt)]
        if not hits:
            return None
        top = max(e.priority for e in hits)
        best = [e for e in hits if e.priority == top]
        if any(str(e.instructions) != str(best[0].instructions) for e in best[1:]):
            raise FakeTableError(f"table {table}, priority {top}: {len(best)} flows with "
                                 f"different instructions match {pkt} (OpenFlow leaves "
                                 f"the choice undefined)")
        return best[0]

    def _resubmit(self, table: int, pkt: dict[str, Any], trace: Trace) -> bool:
        """OVS's resubmit(,table): that table's best flow's meter and actions,
        then back (no match: nothing). False when they ended everything."""
        entry = self._best(table, pkt)
        if entry is None:
            return True
        trace.hits.append((entry.table, entry.priority, entry.cookie))
        for i in sorted(entry.instructions, key=_order):
            if isinstance(i, parser.OFPInstructionMeter):
                trace.meters.append(i.meter_id)
                self.meter_packets[i.meter_id] += 1
            elif isinstance(i, parser.OFPInstructionActions) and \
                    i.type == ofp.OFPIT_APPLY_ACTIONS and not self._run(i.actions, pkt, trace):
                return False
        return True

    def _run(self, actions, pkt: dict[str, Any], trace: Trace) -> bool:
        """Apply ``actions`` in order; False if an invalid TTL dropped the
        packet or an ``exit`` ended the actions. ``pkt_len`` (the frame's
        length, 0 when absent) is what check_pkt_larger compares."""
        for a in actions:
            if type(a).__name__ == "NXActionCheckPktLarger":
                reg, bit = f"reg{(a.dst >> 9) & 0x7F}", 1 << a.offset
                big = bit if pkt.get("pkt_len", 0) > a.pkt_len else 0
                if big or reg in pkt:  # absent: 0 (keeps outputs comparable)
                    pkt[reg] = (pkt.get(reg, 0) & ~bit) | big
                continue
            if isinstance(a, parser.NXActionResubmitTable):
                if not self._resubmit(a.table_id, pkt, trace):
                    return False
                continue
            if isinstance(a, parser.NXActionExit):
                return False
            if isinstance(a, parser.OFPActionOutput):
                port = CONTROLLER if a.port == ofp.OFPP_CONTROLLER else a.port
                trace.outputs.append(Out(port, dict(pkt)))
            elif isinstance(a, parser.OFPActionSetField):
                pkt[a.key] = a.value
            elif isinstance(a, parser.OFPActionDecNwTtl):
                if pkt.get("nw_ttl", 0) <= 1:
                    trace.ttl_expired = True
                    return False
                pkt["nw_ttl"] -= 1
            else:
                raise FakeTableError(f"the fake table cannot run {type(a).__name__}")
        return True


def _order(inst) -> int:
    """OpenFlow's order of instructions: meter, apply, clear, write, goto."""
    if isinstance(inst, parser.OFPInstructionMeter):
        return 0
    if isinstance(inst, parser.OFPInstructionActions):
        return {ofp.OFPIT_APPLY_ACTIONS: 1, ofp.OFPIT_CLEAR_ACTIONS: 2}.get(inst.type, 3)
    return 4
