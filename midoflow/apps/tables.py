"""The agent's OpenFlow 1.3 pipeline, declared as data (Faucet's
``faucet_pipeline`` idea): each table states what its flows may match, the
actions, set-fields and instructions they may carry, and which part of the
agent writes which of its flows (by priority and cookie). Every flow-mod the
agent builds is checked against this (``midoflow.apps.flowcheck``) before it
is sent.

Table 0 (classify)
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
    * a gateway's BGP link and its uplink: BGP and ARP passed between them;
    * from the agent's metadata port (169.254.169.254): IPv4 → table 1;
    * from a tunnel port or the metadata port, anything else (an unknown
      tunnel key): dropped, by one flow per such ofport (``FENCE_COOKIE``);
    * anything else (a port not classified yet: a new VM's first ARP) → the
      controller through ONE shared low-rate meter (``UNBOUND_METER``): the
      agent holds a few packets per ofport a moment and replays them once the
      port is bound (``midoflow.agent.unbound``), so no unbound or hostile
      interface can flood it.
Table 1 (simulated)
    * metadata (``midoflow.agent.metadata``), per served VM port, above all
      else: its TCP to 169.254.169.254:80 → the metadata port, the source
      rewritten to the port's link-local address; answers from the metadata
      port to that address → the VM (its address and MAC restored); its ARP
      for 169.254.169.254 → table 2 (the agent answers);
    * DHCP from VMs (UDP to port 67) always → table 2: the agent answers it
      itself (``midoflow.agent.dhcp``), never through a flow;
    * per tracked TCP decision (conntrack, NAT, a reply of a tracked
      connection), under its cookie and above its flow: its match plus
      ``tcp_flags`` FIN, and plus RST → the port's meter, then an unmodified
      copy to the controller (the agent recognises it by its table_id 1 and
      cookie and only closes the connection: it never forwards it), then
      the decision flow's own actions (the datapath forwards the segment, no
      controller trip on the connection's path). The meter applies to the
      whole flow (OpenFlow 1.3 runs the meter instruction before
      apply-actions): a port flooding FINs beyond its packet-in meter loses
      them, acceptable (TCP retransmits a FIN; an honest VM closes far below
      its meter). Only this writer may output to the controller in table 1,
      and only through a meter of the match's ``in_port`` with the
      controller first. No timeout: they go with the decision's flow
      (deleted by cookie when it is invalidated or idles out). Untracked
      paths get none: their FIN and RST follow their flow in the datapath;
    * IPv4 fragments (first and later) always → table 2: a first fragment is
      simulated and its decision remembered (``midoflow.agent.fragments``);
      later fragments, which carry no ports, follow it (one that comes
      before it waits a moment) or are dropped; the agent splits what is too
      big for a router's egress link;
    * IPv4 packets with a TTL below ``LOW_TTL`` always → table 2 (OpenFlow
      cannot match "TTL > n", and a router on the path may have to answer with
      ICMP time exceeded);
    * flows computed by the simulation, each with its own cookie and an idle
      timeout, matching only the fields the decision read; a miss → table 2.
    * a flow whose path crosses a router onto a smaller link (``Result.mtu``)
      starts with ``check_pkt_larger`` into ``MTU_REG`` and a resubmit to
      table 3 (``midoflow.apps.mtu``);
Table 3 (too big, resubmitted to from table 1)
    * marked bigger than its path's MTU → resubmitted to table 2 (the agent,
      through the port's meter), and the flow's actions end there (exit);
    * anything else: nothing (the flow's actions go on).
Table 4 (SG_EGRESS) and table 5 (SG_INGRESS): security groups in OVS
    (``sg_conntrack``, ``midoflow.agent.sgflows``). Table 0 sends a
    protected port's IPv4 through ``ct(zone=ofport, table=4)`` (at
    ``PRIO_CLASSIFY_IP``, above its goto table 1); every delivery of IPv4 to
    such a port (a simulated flow's output on its host, table 0's delivery of
    tunnelled traffic by key) goes through ``ct(zone=ofport, table=5)``
    instead of the output. Their flows, per port (cookie ``SG_COOKIE`` |
    ofport, no timeout): invalid → drop; reply or related → pass; (egress)
    DHCP and metadata requests → pass; original direction admitted by a rule
    → ``ct(commit)`` and pass; the rest → drop. Pass: a resubmit to table 1
    (egress), the output to the port (ingress).
Table 2 (to controller)
    * one flow per bound port (its ``in_port``): that port's meter (meter id =
      the ofport), then the controller;
    * anything else is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from midoflow.agent import sgflows
from midoflow.agent.flows import FlowIndex

TABLE_CLASSIFY = 0
TABLE_SIMULATED = 1
TABLE_TO_CONTROLLER = 2
TABLE_MTU = 3  # only resubmitted to (midoflow.apps.mtu)
TABLE_SG_EGRESS = 4  # only recirculated to, by ct() (midoflow.agent.sgflows)
TABLE_SG_INGRESS = 5
# The bit check_pkt_larger sets for a packet bigger than its path's MTU.
MTU_REG, MTU_REG_INDEX = "reg6", 6
PRIO_TOO_BIG = 100
PRIO_SG_TOO_BIG = 320  # table 5: marked bigger by a recirculating flow (midoflow.apps.mtu)

PRIO_MISS = 0
PRIO_FENCE = 10  # table 0: a tunnel's or the metadata port's unmatched traffic, dropped
PRIO_CLASSIFY = 100
PRIO_CLASSIFY_IP = 110  # table 0: a protected port's IPv4, through ct() (sg_conntrack)
PRIO_CLASSIFY_FRAG = 111  # ... and its fragments, committed there
PRIO_SIMULATED = 100
PRIO_TCP_CLOSE = 150  # a tracked decision's close flows: above its own flow
PRIO_FRAGMENT = 190
PRIO_LOW_TTL = 200
PRIO_BGP = 250
PRIO_TAGGED = 280  # above the goto and the BGP link's flows of the same port
PRIO_STORM = 290
PRIO_STATE = 300
PRIO_DHCP = 210  # table 1: above simulated flows (DHCP is never one)
PRIO_METADATA = 230  # table 0: the metadata port; table 1: above every other flow

ALL_BITS = (1 << 64) - 1
# Storm-control flows carry this cookie (| the ofport).
STORM_COOKIE = 0x5702 << 48
# Flows of a BGP link carry this cookie (| the link's ofport).
BGP_COOKIE = 0xB6B0 << 48
# Metadata flows carry this cookie (| the served VM's ofport, or the
# metadata port's in table 0).
METADATA_COOKIE = 0x6D64 << 48
# Security-group flows (tables 4 and 5) carry this cookie (| the port's ofport).
SG_COOKIE = 0x5EC7 << 48
# Table 0 drop flows of tunnel ports and the metadata port carry this cookie
# (| the ofport).
FENCE_COOKIE = 0xFE0C << 48
# The shared meter of table 0's miss (packets of ports not classified yet):
# no ofport reaches it (OVS numbers ports up to 0xfeff), so no port's meter
# (meter id = ofport) is it.
UNBOUND_METER = 0xFF00
UNBOUND_RATE = 100  # packets per second, all unbound ports together
UNBOUND_BURST = 50
# Simulated flows: the flow index's cookies (top byte 0x4D).
DECISION_COOKIE = FlowIndex.COOKIE_BASE
# More routers than this in one simulated flow is impossible (MAX_DEVICES).
LOW_TTL = 8

# The agent's parts that write flows.
BASE, CLASSIFY, DECISION, BGP_LINK, STORM = "base", "classify", "decision", "bgp_link", "storm"
FENCE = "fence"  # table 0's drops of tunnel ports' and the metadata port's rest
CLOSE = "close"  # a tracked decision's FIN/RST flows
METADATA = "metadata"
SECURITY = "security_groups"  # tables 4 and 5 (midoflow.agent.sgflows)


@dataclass(frozen=True)
class Writer:
    """Flows of one part of the agent in one table: their priorities, their
    cookies (``cookie & mask == value``) and which timeout they must carry
    (``"idle"``, ``"hard"``, or None: none, they live until deleted).
    ``copy_to_controller``: in a table whose flows may not output to the
    controller, this writer's may, as their first action and through the
    meter of their match's ``in_port`` (a copy, metered per port)."""

    name: str
    priorities: frozenset[int]
    cookie: int = 0
    mask: int = ALL_BITS
    timeout: str | None = None
    copy_to_controller: bool = False

    def owns(self, priority: int, cookie: int) -> bool:
        return priority in self.priorities and cookie & self.mask == self.cookie


@dataclass(frozen=True)
class Table:
    """One table: what its flows may match and carry, and who writes them.
    ``controller``: whether its flows may output to the controller;
    ``meter``: whether they may pass a meter instruction."""

    table_id: int
    name: str
    match: frozenset[str]
    actions: frozenset[str]
    set_fields: frozenset[str]
    goto: frozenset[int]
    writers: tuple[Writer, ...]
    controller: bool = False
    meter: bool = False

    def writer(self, priority: int, cookie: int) -> Writer | None:
        return next((w for w in self.writers if w.owns(priority, cookie)), None)


def _fs(*names) -> frozenset:
    return frozenset(names)


_L4 = ("ip_proto", "tcp_src", "tcp_dst", "udp_src", "udp_dst", "icmpv4_type", "icmpv4_code")

_SG_MATCH = _fs("in_port", "ct_zone", "ct_state", "eth_src", "eth_type", "ipv4_src",
                "ipv4_dst", *_L4, "sctp_dst", "ip_frag")
_SG_WRITER = Writer(SECURITY, sgflows.PRIORITIES, SG_COOKIE, 0xFFFF << 48)

PIPELINE: dict[int, Table] = {t.table_id: t for t in (
    Table(TABLE_CLASSIFY, "classify",
          match=_fs("in_port", "tunnel_id", "vlan_vid", "eth_type", "ip_proto", "ipv4_dst",
                    "tcp_src", "tcp_dst", "arp_tpa", "ip_frag"),
          actions=_fs("output", "NXActionCT"), set_fields=frozenset(),
          goto=_fs(TABLE_SIMULATED), controller=True, meter=True,
          writers=(Writer(BASE, _fs(PRIO_MISS, PRIO_STATE)),
                   Writer(CLASSIFY, _fs(PRIO_CLASSIFY, PRIO_CLASSIFY_IP, PRIO_CLASSIFY_FRAG,
                                        PRIO_TAGGED)),
                   Writer(FENCE, _fs(PRIO_FENCE), FENCE_COOKIE, 0xFFFF << 48),
                   Writer(BGP_LINK, _fs(PRIO_BGP), BGP_COOKIE, 0xFFFF << 48),
                   Writer(STORM, _fs(PRIO_STORM), STORM_COOKIE, 0xFFFF << 48, "hard"),
                   Writer(METADATA, _fs(PRIO_METADATA), METADATA_COOKIE, 0xFFFF << 48))),
    Table(TABLE_SIMULATED, "simulated",
          match=_fs("in_port", "eth_src", "eth_dst", "eth_type", "ipv4_src", "ipv4_dst",
                    "ip_dscp", "ip_ecn", *_L4, "arp_op", "arp_spa", "arp_tpa", "arp_sha",
                    "nw_ttl", "tcp_flags", "ip_frag"),
          actions=_fs("output", "set_field", "dec_nw_ttl", "NXActionCheckPktLarger",
                      "NXActionResubmitTable", "NXActionCT"),
          set_fields=_fs("eth_src", "eth_dst", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst",
                         "udp_src", "udp_dst", "tunnel_id", "tun_ipv4_dst"),
          goto=_fs(TABLE_TO_CONTROLLER),
          writers=(Writer(BASE, _fs(PRIO_MISS, PRIO_FRAGMENT, PRIO_LOW_TTL, PRIO_DHCP)),
                   Writer(DECISION, _fs(PRIO_SIMULATED), DECISION_COOKIE, FlowIndex.COOKIE_MASK,
                          "idle"),
                   Writer(CLOSE, _fs(PRIO_TCP_CLOSE), DECISION_COOKIE, FlowIndex.COOKIE_MASK,
                          copy_to_controller=True),
                   Writer(METADATA, _fs(PRIO_METADATA), METADATA_COOKIE, 0xFFFF << 48))),
    Table(TABLE_MTU, "too_big", match=_fs(MTU_REG),
          actions=_fs("NXActionResubmitTable", "NXActionExit"), set_fields=frozenset(),
          goto=frozenset(), writers=(Writer(BASE, _fs(PRIO_MISS, PRIO_TOO_BIG)),)),
    Table(TABLE_SG_EGRESS, "sg_egress", match=_SG_MATCH,
          actions=_fs("NXActionCT", "NXActionResubmitTable", "NXActionRegLoad"),
          set_fields=frozenset(), goto=frozenset(), writers=(_SG_WRITER,)),
    Table(TABLE_SG_INGRESS, "sg_ingress", match=_SG_MATCH | {MTU_REG},
          actions=_fs("NXActionCT", "output", "NXActionResubmitTable", "NXActionRegLoad"),
          set_fields=frozenset(), goto=frozenset(),
          writers=(_SG_WRITER, Writer(BASE, _fs(PRIO_SG_TOO_BIG)))),
    Table(TABLE_TO_CONTROLLER, "to_controller",
          match=_fs("in_port"), actions=_fs("output"), set_fields=frozenset(),
          goto=frozenset(), controller=True, meter=True,
          writers=(Writer(BASE, _fs(PRIO_MISS)), Writer(CLASSIFY, _fs(PRIO_CLASSIFY)))),
)}

# OpenFlow 1.3 prerequisites (OXM, 7.2.3.6) of the fields used here: a match
# or a set-field of the key needs the match to fix these fields to one of
# these values (OVS refuses the flow otherwise).
ETH_IP, ETH_ARP = 0x0800, 0x0806
_IP = {"eth_type": (ETH_IP,)}
PREREQUISITES: dict[str, dict[str, tuple[int, ...]]] = {
    **{f: _IP for f in ("ipv4_src", "ipv4_dst", "ip_dscp", "ip_ecn", "ip_proto", "nw_ttl",
                        "ip_frag")},
    **{f: {"ip_proto": (6,)} for f in ("tcp_src", "tcp_dst", "tcp_flags")},
    **{f: {"ip_proto": (17,)} for f in ("udp_src", "udp_dst")},
    "sctp_dst": {"ip_proto": (132,)},
    **{f: {"ip_proto": (1,)} for f in ("icmpv4_type", "icmpv4_code")},
    **{f: {"eth_type": (ETH_ARP,)} for f in ("arp_op", "arp_spa", "arp_tpa", "arp_sha")},
    "dec_nw_ttl": _IP,
    "NXActionCT": _IP,  # OVS refuses ct() in a flow that may carry another protocol
}
