"""Chains in the simulation: rule conditions and inversion, jumps, filters
on ports and devices, reject, and connection tracking, without a switch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from midoflow.model import Bridge, Chain, IpAddrGroup, NatTarget, Port, PortGroup, Rule
from midoflow.nat.conntrack import ConnKey
from midoflow.nat.tables import FlowTables
from midoflow.sim import chains
from midoflow.sim.packet import ETH_ARP, PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import Action, _Builder, chain_tag, ip_addr_group_tag
from midoflow.sim.simulator import simulate
from midoflow.sim.view import NO_FLOW_STATE, DictView

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def pkt(**kw) -> Packet:
    base = dict(in_port="pa", eth_src=A, eth_dst=B, ip_src="10.0.0.1", ip_dst="10.0.0.2",
                ip_proto=PROTO_TCP, tp_src=40000, tp_dst=80)
    base.update(kw)
    return Packet(**base)


def view(*rules: Rule, **kw) -> DictView:
    v = DictView(**kw)
    v.bridges["b"] = Bridge(id="b", port_ids=("pa", "pb"))
    v.ports["pa"] = Port(id="pa", device_id="b", tunnel_key=1)
    v.ports["pb"] = Port(id="pb", device_id="b", tunnel_key=2)
    v.macs[("b", A)] = "pa"
    v.macs[("b", B)] = "pb"
    by_chain: dict[str, list[str]] = {}
    for r in rules:
        v.rules[r.id] = r
        by_chain.setdefault(r.chain_id, []).append(r.id)
    for cid, ids in by_chain.items():
        v.chains[cid] = Chain(id=cid, name=cid, rule_ids=tuple(ids))
    return v


def R(rid, action, chain="c", **kw) -> Rule:
    return Rule(id=rid, chain_id=chain, action=action, **kw)


def verdict(v: DictView, p: Packet, chain="c", in_port="pa", out_port=None):
    b = _Builder()
    ctx = chains.Context(in_port, out_port, "dev", NO_FLOW_STATE)
    return chains.run(v, chain, p, ctx, b)[0], b


CASES = [  # (condition, value, matching packet fields, non-matching fields, flow field)
    ("nw_src", "10.0.0.0/24", {}, {"ip_src": "10.9.0.1"}, "ip_src"),
    ("nw_dst", "10.0.0.2/32", {}, {"ip_dst": "10.0.0.3"}, "ip_dst"),
    ("nw_proto", PROTO_TCP, {}, {"ip_proto": PROTO_UDP}, "ip_proto"),
    ("tp_dst", (80, 90), {}, {"tp_dst": 91}, "tp_dst"),
    ("tp_src", (40000, 40000), {}, {"tp_src": 1}, "tp_src"),
    ("eth_src", A, {}, {"eth_src": B}, "eth_src"),
    ("eth_dst", B, {}, {"eth_dst": A}, "eth_dst"),
    ("eth_type", 0x0800, {}, {"eth_type": 0x86DD}, "eth_type"),
    ("nw_tos", 0x10, {"ip_tos": 0x10}, {"ip_tos": 0}, "ip_tos"),
]


def test_each_condition_matches_and_inverts():
    for cond, value, yes, no, field in CASES:
        v = view(R("r1", "drop", **{cond: value}))
        got, b = verdict(v, pkt(**yes))
        assert got == "drop", cond
        assert field in b.fields, f"{cond} must join the flow match"
        assert verdict(v, pkt(**no))[0] is None, cond
        inv = view(R("r1", "drop", invert=(cond,), **{cond: value}))
        assert verdict(inv, pkt(**yes))[0] is None, f"inverted {cond}"
        assert verdict(inv, pkt(**no))[0] == "drop", f"inverted {cond}"


@given(st.ip_addresses(v=4).map(str), st.integers(8, 32))
def test_inversion_is_exact_negation_for_present_fields(ip, plen):
    rule = dict(nw_src=f"10.0.0.0/{plen}" if plen >= 8 else "10.0.0.0/8")
    plain = verdict(view(R("r", "drop", **rule)), pkt(ip_src=ip))[0] == "drop"
    inv = verdict(view(R("r", "drop", invert=("nw_src",), **rule)), pkt(ip_src=ip))[0] == "drop"
    assert plain != inv


def test_absent_fields_never_match_even_inverted():
    arp = Packet(in_port="pa", eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=1,
                 arp_spa="10.0.0.1", arp_tpa="10.0.0.2")
    for cond, value, *_ in CASES[2:5]:  # protocol and ports: an ARP frame has none
        assert verdict(view(R("r", "drop", **{cond: value})), arp)[0] is None
        assert verdict(view(R("r", "drop", invert=(cond,), **{cond: value})), arp)[0] is None


def test_network_addresses_match_the_arp_sender_and_target():
    """As in MidoNet: nw_src/nw_dst (and address groups) read an ARP frame's
    SPA/TPA, and the flow then matches arp_spa/arp_tpa, not IP fields."""
    arp = Packet(in_port="pa", eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=1,
                 arp_spa="10.0.0.1", arp_tpa="10.0.0.2")
    for cond, value, flow_field in (("nw_src", "10.0.0.1/32", "arp_spa"),
                                    ("nw_dst", "10.0.0.2/32", "arp_tpa")):
        got, b = verdict(view(R("r", "drop", **{cond: value})), arp)
        assert got == "drop", cond
        assert {flow_field, "eth_type"} <= b.fields and not b.fields & {"ip_src", "ip_dst"}
        assert verdict(view(R("r", "drop", **{cond: "10.9.0.0/16"})), arp)[0] is None
        assert verdict(view(R("r", "drop", invert=(cond,), **{cond: value})), arp)[0] is None
    groups = {"ig": IpAddrGroup(id="ig", addresses=("10.0.0.1",))}
    got, b = verdict(view(R("r", "drop", ip_addr_group_src="ig"), ip_addr_groups=groups), arp)
    assert got == "drop" and "arp_spa" in b.fields
    # a probe (RFC 5227) has sender address 0.0.0.0: a /32 of it matches
    probe = arp.evolve(arp_spa="0.0.0.0")
    assert verdict(view(R("r", "drop", nw_src="0.0.0.0/32")), probe)[0] == "drop"


def test_nat_rules_pass_arp_to_the_next_rule():
    """A DNAT rule whose address matches an ARP frame cannot translate it: the
    chain goes on (it does not end undecided and skip the rules after it)."""
    arp = Packet(in_port="pa", eth_src=A, eth_dst=B, eth_type=ETH_ARP, arp_op=1,
                 arp_spa="10.0.0.1", arp_tpa="10.0.0.2")
    v = view(R("r1", "dnat", nw_dst="10.0.0.2/32",
               nat_targets=(NatTarget("192.168.0.9", "192.168.0.9"),)),
             R("r2", "drop"))
    assert verdict(v, arp)[0] == "drop"


def test_ports_and_groups():
    v = view(R("r1", "drop", in_ports=("pa",)), R("r2", "reject", chain="d", out_ports=("pb",)),
             R("r3", "drop", chain="g", port_group="pg"),
             R("r4", "drop", chain="i", ip_addr_group_dst="ig"),
             port_groups={"pg": PortGroup(id="pg", port_ids=("pa",))},
             ip_addr_groups={"ig": IpAddrGroup(id="ig", addresses=("10.0.0.2",))})
    assert verdict(v, pkt())[0] == "drop"
    assert verdict(v, pkt(), in_port="pb")[0] is None
    assert verdict(v, pkt(), chain="d", out_port="pb")[0] == "reject"
    assert verdict(v, pkt(), chain="d", out_port="pa")[0] is None
    assert verdict(v, pkt(), chain="g")[0] == "drop"
    assert verdict(v, pkt(), chain="g", in_port="pb")[0] is None
    got, b = verdict(v, pkt(), chain="i")
    assert got == "drop" and ip_addr_group_tag("ig") in b.tags
    assert verdict(v, pkt(ip_dst="10.0.0.3"), chain="i")[0] is None


def test_jump_return_continue_and_fall_through():
    v = view(R("r1", "continue"), R("r2", "jump", jump_chain_id="sub"),
             R("r3", "accept", tp_dst=(22, 22)), R("r4", "drop"),
             R("s1", "return", chain="sub", tp_dst=(80, 80)),
             R("s2", "accept", chain="sub", tp_dst=(443, 443)))
    assert verdict(v, pkt(tp_dst=80))[0] == "drop"  # returned, then r4
    assert verdict(v, pkt(tp_dst=443))[0] == "accept"  # decided inside the jump
    got, b = verdict(v, pkt(tp_dst=22))
    assert got == "accept" and {chain_tag("c"), chain_tag("sub")} <= b.tags
    assert verdict(view(R("x", "return")), pkt())[0] is None  # falls off: no verdict


def test_jump_loops_are_cut_and_missing_chains_drop():
    v = view(R("r1", "jump", jump_chain_id="c"))
    assert verdict(v, pkt())[0] == "drop"
    assert verdict(view(), pkt(), chain="nope")[0] == "drop"


def test_fragments():
    v = view(R("r1", "drop", fragment_policy="unfragmented", nw_proto=PROTO_TCP),
             R("r2", "accept", chain="h", fragment_policy="header"),
             R("r3", "accept", chain="n", fragment_policy="nonheader"))
    assert verdict(v, pkt())[0] == "drop"
    got, b = verdict(v, pkt(ip_frag=2, tp_src=None, tp_dst=None))
    assert got is None and not b.cacheable
    assert verdict(v, pkt(ip_frag=1), chain="h")[0] == "accept"
    assert verdict(v, pkt(ip_frag=2), chain="h")[0] is None
    assert verdict(v, pkt(ip_frag=2), chain="n")[0] == "accept"


def sg_view(**kw) -> DictView:
    """Port pb's security: inbound to pb's VM only return flows and port 22."""
    v = view(R("o1", "accept", chain="pb-out", match_return_flow=True),
             R("o2", "accept", chain="pb-out", nw_proto=PROTO_TCP, tp_dst=(22, 22)),
             R("o3", "drop", chain="pb-out"),
             R("i1", "continue", chain="pb-in", match_forward_flow=True), **kw)
    v.ports["pb"] = Port(id="pb", device_id="b", tunnel_key=2, outbound_filter_id="pb-out",
                         inbound_filter_id="pb-in")
    return v


def test_filters_in_the_walk_default_deny_and_allowed_port():
    v = sg_view()
    r = simulate(v, pkt(tp_dst=80))
    assert r.dropped and chain_tag("pb-out") in r.tags
    r = simulate(v, pkt(tp_dst=22))
    assert r.out_ports == ("pb",)
    # a flow past conntrack matches the whole 5-tuple
    assert {"ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst"} <= r.match_fields


def test_connection_tracking_admits_the_reply_of_an_allowed_connection():
    v = sg_view()
    # pb's VM opens a connection to pa (its inbound filter tracks it at pb)
    out = simulate(v, pkt(in_port="pb", eth_src=B, eth_dst=A, ip_src="10.0.0.2",
                          ip_dst="10.0.0.1", tp_src=50000, tp_dst=443))
    assert out.out_ports == ("pa",)
    fwd = ConnKey("pb", PROTO_TCP, "10.0.0.2", 50000, "10.0.0.1", 443)
    assert out.conntrack == (fwd,)
    # the reply from pa is dropped until the return key is known...
    reply = pkt(ip_src="10.0.0.1", ip_dst="10.0.0.2", tp_src=443, tp_dst=50000)
    assert simulate(v, reply).dropped
    # ...and admitted once it is (the agent installs it before forwarding)
    tables = FlowTables()
    assert tables.track(out.conntrack, 0.0) == [fwd.reverse()]
    r = simulate(v, reply, 0.0, tables.view(0.0))
    assert r.out_ports == ("pb",) and r.conntrack == ()
    # another connection from pa to pb's VM on 443 is not a reply: dropped
    assert simulate(v, pkt(tp_src=443, tp_dst=50001), 0.0, tables.view(0.0)).dropped


def test_reject_answers_with_icmp_prohibited_from_the_destination():
    v = view(R("r1", "reject"))
    v.ports["pb"] = Port(id="pb", device_id="b", tunnel_key=2, outbound_filter_id="c")
    r = simulate(v, pkt())
    (g,) = r.generated
    assert (g.kind, g.out_port, g.get("icmp_type"), g.get("icmp_code")) == (
        "icmp_error", "pa", 3, 13)
    assert (g.get("ip_src"), g.get("ip_dst"), g.get("eth_dst")) == ("10.0.0.2", "10.0.0.1", A)
    assert r.dropped and not r.cacheable


def test_device_filters_apply_per_output_port_when_flooding():
    v = view(R("r1", "drop", out_ports=("pc",)))
    v.ports["pc"] = Port(id="pc", device_id="b", tunnel_key=3)
    v.bridges["b"] = Bridge(id="b", port_ids=("pa", "pb", "pc"), outbound_filter_id="c")
    r = simulate(v, pkt(eth_dst="ff:ff:ff:ff:ff:ff"))
    assert r.out_ports == ("pb",)
    assert r.action is Action.FORWARD
