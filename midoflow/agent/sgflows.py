"""Security groups as Open vSwitch connection tracking at the port's own host
(issue 13, goal 2): the flows of one protected port, as data.

With ``sg_conntrack`` on, the simulation no longer evaluates a protected
port's generated filter chains for IPv4 (``midoflow.sim.simulator``): each
host's OVS does, for the ports bound there, with static flows and its own
conntrack (``ct()``), one zone per port (the zone is the port's ofport), as
Neutron's OVS firewall and OVN do. No connection of such a port needs the
agent: its flows are stateless decisions, proactive or wildcarded.

* Egress (from the VM): table 0 sends the port's IPv4 through ``ct(zone)``
  into table 4 (``SG_EGRESS``), here per ``in_port``.
* Ingress (to the VM): every delivery of IPv4 to the port (a simulated flow's
  output on its host, or table 0's delivery of tunnelled traffic by key)
  goes through ``ct(zone)`` into table 5 (``SG_INGRESS``), here per
  ``ct_zone``.

In both tables: invalid → drop; a reply of a tracked connection, or an ICMP
error related to one → pass; DHCP and metadata requests (egress: the agent
and the metadata flows serve them, as before) → pass; a packet in the
original direction (new or established) that a rule of the port's groups
admits → ``ct(commit)`` and pass; anything else of the port → drop.
Original-direction packets are checked against the rules every time, so a
rule removed stops its established connections at once (as the simulated
chains did); replies ride the connection. "Pass" is a resubmit to table 1
(egress) or the output to the port (ingress).

Fragments: OVS's conntrack reassembles them (``ipf``) and sends them on with
the datagram's state; a second ct() on them would reassemble them again (and
hold them past a batch for good), so they are never committed in tables 4
and 5: a first fragment admitted by a rule passes (its ports are the
datagram's), later fragments of an original-direction datagram pass (without
their first fragment they are nothing; the overlap checks of the reassembly
stay), and fragments are committed by the ct() that brings them to table 4
or 5, before the rules: a fragmented ping's reply is then a reply (a
datagram the rules drop leaves an entry only a packet of its own 5-tuple
back could use, which the port never got). Reassembly sends at most 32 fragments (a
datapath batch) on at once; the rest
wait for the next batch that passes conntrack, *anywhere*, and resume in
that batch's table with its frozen registers and ``in_port`` (only
``ct_zone``, ``ct_state`` and the headers are theirs). So every port also
has "stray" flows that put such a fragment back on its own path by what is
its own: in table 5, one from the port's zone with one of its MACs as
source is its egress (``in_port`` set back, table 4 again); in table 4, one
of its zone and MAC from another ``in_port`` likewise, and any other of its
zone is ingress (table 5). The agent sends one harmless packet through
conntrack every ``NUDGE_SECONDS`` (``apps.agent``) so no fragment waits
longer for a batch.

A rule is the simulated chains' rule (``midoflow.service.security``:
``eth_type`` IPv4, ``nw_proto``, ``tp_dst`` [lo, hi] or an ICMP type/code,
``nw_src``/``nw_dst`` CIDRs, address groups): each becomes the cross product
of its remote addresses and the bitwise-masked prefixes of its port range.
A rule this cannot express exactly (inverted conditions, other fields, a port
range on a protocol OpenFlow has no port field for) admits nothing, and says
so in ``skipped``: never more than the group allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from midoflow.model import (
    FRAG_ANY,
    RULE_ACCEPT,
    RULE_JUMP,
    Port,
    Rule,
    conntrack_enforced,
    port_chain_id,
)
from midoflow.sim.result import chain_tag, ip_addr_group_tag, port_tag

EGRESS, INGRESS = "egress", "ingress"
ETH_IP = 0x0800
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_SCTP = 1, 6, 17, 132
_PORT_FIELD = {PROTO_TCP: "tcp_dst", PROTO_UDP: "udp_dst", PROTO_SCTP: "sctp_dst"}

# ct_state bits (ovs-fields(7))
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

PRIO_STRAY_EGRESS = 310  # table 5: a fragment of the port's egress (see above)
PRIO_INVALID = 300
PRIO_ESTABLISHED = 290
PRIO_SERVICE = 280
PRIO_RULE = 200
PRIO_DEFAULT = 100
PRIO_STRAY = 50  # table 4: a fragment of the port's zone from another in_port
PRIO_STRAY_INGRESS = 40
PRIORITIES = frozenset((PRIO_STRAY_EGRESS, PRIO_INVALID, PRIO_ESTABLISHED, PRIO_SERVICE,
                        PRIO_RULE, PRIO_DEFAULT, PRIO_STRAY, PRIO_STRAY_INGRESS))

PASS, COMMIT, DROP = "pass", "commit", "drop"
# ip_frag (value, mask): OVS's nw_frag bits "fragment" (1) and "later" (2)
NOT_FRAGMENT, FRAG_FIRST, FRAG_LATER, FRAGMENT = (0, 1), (1, 3), (3, 3), (1, 1)
# strays: back into table 4 as the port's own egress (in_port set), or to table 5
AS_EGRESS, AS_INGRESS = "as_egress", "as_ingress"
METADATA_IP = "169.254.169.254"


@dataclass(frozen=True)
class SgFlow:
    """One flow of a port in SG_EGRESS (``direction`` egress) or SG_INGRESS:
    ``match`` as OFPMatch keyword arguments (sorted pairs; the port's
    ``in_port`` or ``ct_zone`` included), ``action`` PASS, COMMIT, DROP,
    AS_EGRESS or AS_INGRESS."""

    direction: str
    priority: int
    match: tuple[tuple[str, object], ...]
    action: str


@dataclass
class PortFlows:
    flows: frozenset[SgFlow]
    skipped: list[str] = field(default_factory=list)  # rules admitting nothing, and why
    # The invalidation tags of what they were computed from (the port's, its
    # chains' and groups', the address groups'): only a change of one of
    # these can change them.
    reads: frozenset[str] = frozenset()


class _Reads:
    """A view that notes the tags of the chains and address groups read."""

    def __init__(self, view) -> None:
        self.view, self.tags = view, set()

    def chain(self, chain_id: str):
        self.tags.add(chain_tag(chain_id))
        return self.view.chain(chain_id)

    def rule(self, rule_id: str):
        return self.view.rule(rule_id)  # a rule's change is its chain's (chain_tag)

    def ip_addr_group(self, group_id: str):
        self.tags.add(ip_addr_group_tag(group_id))
        return self.view.ip_addr_group(group_id)


def range_masks(lo: int, hi: int, bits: int = 16) -> list[tuple[int, int]]:
    """The fewest (value, mask) prefixes covering exactly [lo, hi]."""
    full = (1 << bits) - 1
    if not 0 <= lo <= hi <= full:
        raise ValueError(f"range [{lo}, {hi}] is not within 0..{full}")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits  # largest aligned block starting at lo
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, full & ~(size - 1)))
        lo += size
    return out


def _cidr(cidr: str) -> str | tuple[str, str] | None:
    """An IPv4 match value for a CIDR; None for /0 (no match on it)."""
    addr, _, plen = cidr.partition("/")
    bits = int(plen) if plen else 32
    if bits == 0:
        return None
    if bits == 32:
        return addr
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    net = ".".join(str((_int(addr) & mask) >> s & 0xFF) for s in (24, 16, 8, 0))
    return net, ".".join(str(mask >> s & 0xFF) for s in (24, 16, 8, 0))


def _int(ip: str) -> int:
    a, b, c, d = (int(x) for x in ip.split("."))
    return a << 24 | b << 16 | c << 8 | d


_SIMPLE = ("in_ports", "out_ports", "port_group", "eth_src", "eth_dst", "nw_tos",
           "match_forward_flow", "match_return_flow", "invert", "nat_targets")


def rule_matches(rule: Rule, addresses: Callable[[str], Iterable[str] | None]
                 ) -> tuple[list[dict], str | None]:
    """(the matches expressing an ACCEPT rule, why it admits nothing or None).
    ``addresses``: an address group's members (None: unknown group)."""
    if rule.action != RULE_ACCEPT:
        return [], f"rule {rule.id}: action {rule.action}, not accept"
    for name in _SIMPLE:
        if getattr(rule, name, None):
            return [], f"rule {rule.id}: condition {name} has no conntrack flow form"
    if rule.fragment_policy != FRAG_ANY:
        return [], f"rule {rule.id}: fragment policy {rule.fragment_policy}"
    if rule.eth_type is not None and rule.eth_type != ETH_IP:
        return [], None  # not IPv4: admits nothing here (ARP is passed before ct)
    base: dict = {"eth_type": ETH_IP}
    proto = rule.nw_proto
    if proto is not None:
        base["ip_proto"] = proto
    ports: list[dict] = [{}]
    if rule.tp_src is not None or rule.tp_dst is not None:
        if proto == PROTO_ICMP:
            ports = [{}]
            for name, r in (("icmpv4_type", rule.tp_src), ("icmpv4_code", rule.tp_dst)):
                if r is None:
                    continue
                if r[0] != r[1]:
                    return [], f"rule {rule.id}: an ICMP {name} range"
                ports[0][name] = r[0]
        elif proto in _PORT_FIELD and rule.tp_src is None:
            name = _PORT_FIELD[proto]
            ports = [{name: v if m == 0xFFFF else (v, m)}
                     for v, m in range_masks(*rule.tp_dst)]  # type: ignore[misc]
        else:
            return [], f"rule {rule.id}: ports on protocol {proto}"
    remotes: list[dict] = [{}]
    for which, cidr, group in (("ipv4_src", rule.nw_src, rule.ip_addr_group_src),
                               ("ipv4_dst", rule.nw_dst, rule.ip_addr_group_dst)):
        if cidr and group:
            return [], f"rule {rule.id}: both a prefix and an address group on {which}"
        if cidr:
            value = _cidr(cidr)
            if value is not None:
                remotes = [{**r, which: value} for r in remotes]
        elif group:
            members = addresses(group)
            if members is None:
                return [], f"rule {rule.id}: address group {group} unknown"
            values = [_cidr(a) for a in sorted(set(members))]
            if None in values:  # 0.0.0.0/0 among them: any address
                continue
            remotes = [{**r, which: v} for r in remotes for v in values]
    return [{**base, **r, **p} for r in remotes for p in ports], None


def group_rules(view, port: Port, which: str) -> list[Rule]:
    """The rules of the security groups the port's generated ``which`` chain
    jumps to (its egress groups' for "inbound", ingress groups' for
    "outbound"); the anti-spoof chain, ARP and the conntrack rules are not
    group rules."""
    chain = view.chain(port_chain_id(port.id, which))
    if chain is None:
        return []
    spoof = port_chain_id(port.id, "anti-spoof")
    out: list[Rule] = []
    for rid in chain.rule_ids:
        r = view.rule(rid)
        if r is None or r.action != RULE_JUMP or not r.jump_chain_id or r.jump_chain_id == spoof:
            continue
        group = view.chain(r.jump_chain_id)
        if group is None:
            continue
        out += [x for x in (view.rule(g) for g in group.rule_ids) if x is not None]
    return out


def _sorted(d: dict) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(d.items()))


def port_flows(view, port: Port, ofport: int) -> PortFlows:
    """Every SG_EGRESS and SG_INGRESS flow of a bound port (none for a port
    whose filters are not enforced here)."""
    flows: set[SgFlow] = set()
    skipped: list[str] = []
    view = _Reads(view)
    view.tags.add(port_tag(port.id))

    def addresses(gid: str):
        g = view.ip_addr_group(gid)
        return None if g is None else g.addresses

    for which, direction, key in (("inbound", EGRESS, {"in_port": ofport, "ct_zone": ofport}),
                                  ("outbound", INGRESS, {"ct_zone": ofport})):
        if not conntrack_enforced(port, which):
            continue

        def add(priority: int, match: dict, action: str, key=key, direction=direction) -> None:
            flows.add(SgFlow(direction, priority, _sorted({**key, **match}), action))

        add(PRIO_INVALID, {"ct_state": (CT_TRK | CT_INV, CT_TRK | CT_INV)}, DROP)
        add(PRIO_ESTABLISHED, {"ct_state": (CT_TRK | CT_EST | CT_RPL,
                                            CT_TRK | CT_EST | CT_RPL | CT_INV)}, PASS)
        add(PRIO_ESTABLISHED, {"ct_state": (CT_TRK | CT_REL, CT_TRK | CT_REL | CT_INV)}, PASS)
        if direction == EGRESS:  # served by the agent / the metadata flows, as before
            add(PRIO_SERVICE, {"eth_type": ETH_IP, "ip_proto": PROTO_UDP, "udp_src": 68,
                               "udp_dst": 67}, PASS)
            add(PRIO_SERVICE, {"eth_type": ETH_IP, "ip_proto": PROTO_TCP,
                               "ipv4_dst": METADATA_IP, "tcp_dst": 80}, PASS)
        add(PRIO_DEFAULT, {}, DROP)
        original = {"ct_state": (CT_TRK, CT_TRK | CT_RPL | CT_INV)}
        add(PRIO_RULE, {**original, "eth_type": ETH_IP, "ip_frag": FRAG_LATER}, PASS)
        for rule in group_rules(view, port, which):
            matches, why = rule_matches(rule, addresses)
            if why:
                skipped.append(why)
            for m in matches:
                add(PRIO_RULE, {**original, **m, "ip_frag": NOT_FRAGMENT}, COMMIT)
                add(PRIO_RULE, {**original, **m, "ip_frag": FRAG_FIRST}, PASS)
    # fragments a conntrack batch left for a later one (see the module's doc)
    zone = {"ct_zone": ofport}
    if conntrack_enforced(port, "inbound"):
        for mac in port_macs(port):
            flows.add(SgFlow(INGRESS, PRIO_STRAY_EGRESS, _sorted({**zone, "eth_src": mac}),
                             AS_EGRESS))
            flows.add(SgFlow(EGRESS, PRIO_STRAY, _sorted({**zone, "eth_src": mac}), AS_EGRESS))
    if conntrack_enforced(port, "outbound"):
        flows.add(SgFlow(EGRESS, PRIO_STRAY_INGRESS, _sorted(zone), AS_INGRESS))
    return PortFlows(frozenset(flows), skipped, frozenset(view.tags))


def port_macs(port: Port) -> list[str]:
    """The MACs a port may send from: its own and its allowed pairs'."""
    macs = [port.mac] if port.mac else []
    macs += [mac for _ip, mac in port.allowed_address_pairs if mac]
    return list(dict.fromkeys(m.lower() for m in macs))
