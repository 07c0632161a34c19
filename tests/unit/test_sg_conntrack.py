"""Security groups in OVS conntrack (issue 13, goal 2; ``midoflow.agent.sgflows``):
the rules compiled to flows admit exactly what the simulated chains admit,
port ranges become exact masked prefixes, the simulation leaves a protected
port's IPv4 to its host's OVS (and keeps anti-spoofing and ARP), and every
message built for it passes the declared pipeline."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_v1_3_parser as parser

from midoflow.agent import sgflows
from midoflow.agent.decision import Decision, Output
from midoflow.apps import flowcheck
from midoflow.apps import pipeline as pl
from midoflow.model import Bridge, Chain, IpAddrGroup, Port, Rule, port_chain_id
from midoflow.service import security
from midoflow.sim import chains
from midoflow.sim.packet import ETH_ARP, ETH_IP, PROTO_TCP, Packet
from midoflow.sim.result import _Builder, chain_tag, ip_addr_group_tag, port_tag
from midoflow.sim.simulator import simulate
from midoflow.sim.view import NO_FLOW_STATE, DictView

A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
A_IP, B_IP = "10.1.0.10", "10.1.0.11"


# ------------------------------------------------------------------ ranges
def _covered(masks, bits):
    full = (1 << bits) - 1
    return {v for v in range(1 << bits) if any(v & m == val & m for val, m in masks)} \
        if masks else set(), full


def test_range_masks_cover_exactly_every_range_of_six_bits():
    for lo in range(64):
        for hi in range(lo, 64):
            masks = sgflows.range_masks(lo, hi, bits=6)
            got, _ = _covered(masks, 6)
            assert got == set(range(lo, hi + 1)), (lo, hi, masks)
            assert len(masks) <= 2 * 6 - 2 or (lo, hi) == (0, 63)


@given(st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535))
def test_range_masks_of_sixteen_bits_hold_a_port_iff_it_is_in_range(a, b, port):
    lo, hi = min(a, b), max(a, b)
    masks = sgflows.range_masks(lo, hi)
    assert any(port & m == v & m for v, m in masks) == (lo <= port <= hi)
    assert len(masks) <= 30


def test_range_masks_refuse_what_is_no_range():
    with pytest.raises(ValueError):
        sgflows.range_masks(10, 5)
    with pytest.raises(ValueError):
        sgflows.range_masks(0, 70000)


# ------------------------------------------- compiled rules == chain rules
GROUP = "g-remote"
GROUP_ADDRS = ("10.9.0.1", "10.9.0.7", "192.168.3.3")


def _flow_matches(m: dict, pkt: Packet) -> bool:
    """Whether an OpenFlow match (as sgflows gives it) holds a packet."""
    def masked(v, want, bits):
        value, mask = want if isinstance(want, tuple) else (want, (1 << bits) - 1)
        return v is not None and v & mask == value & mask

    def ip(v, want):
        if v is None:
            return False
        if isinstance(want, tuple):
            net = ipaddress.ip_network(f"{want[0]}/{want[1]}")
            return ipaddress.ip_address(v) in net
        return v == want

    for k, want in m.items():
        if k == "eth_type" and pkt.eth_type != want:
            return False
        if k == "ip_proto" and pkt.ip_proto != want:
            return False
        if k in ("ipv4_src", "ipv4_dst") and not ip(getattr(pkt, "ip_" + k[5:]), want):
            return False
        if k in ("tcp_dst", "udp_dst", "sctp_dst") and not masked(pkt.tp_dst, want, 16):
            return False
        if k == "icmpv4_type" and pkt.tp_src != want:
            return False
        if k == "icmpv4_code" and pkt.tp_dst != want:
            return False
    return True


neutron_rules = st.fixed_dictionaries({
    "id": st.just("r1"),
    "direction": st.sampled_from(["ingress", "egress"]),
    "protocol": st.sampled_from([None, 1, 6, 17, 132]),
    "port_range_min": st.one_of(st.none(), st.integers(0, 300)),
    "port_range_max": st.one_of(st.none(), st.integers(0, 300)),
    "remote_ip_prefix": st.sampled_from([None, "0.0.0.0/0", "10.9.0.0/29", "10.9.0.7/32",
                                         "192.168.0.0/16"]),
    "remote_group_id": st.sampled_from([None, GROUP]),
})

packets = st.builds(
    lambda proto, src, dst, sport, dport: Packet(
        in_port="p", eth_src=A_MAC, eth_dst=B_MAC, eth_type=ETH_IP, ip_src=src, ip_dst=dst,
        ip_proto=proto, tp_src=sport, tp_dst=dport),
    st.sampled_from([1, 6, 17, 132, 47]),
    st.sampled_from(["10.9.0.1", "10.9.0.5", "10.9.0.7", "10.9.0.9", "192.168.3.3", "8.8.8.8"]),
    st.sampled_from(["10.9.0.1", "10.9.0.5", "10.9.0.7", "10.9.0.9", "192.168.3.3", "8.8.8.8"]),
    st.integers(0, 300), st.integers(0, 300))


@settings(max_examples=400, deadline=None)
@given(neutron_rules, packets)
def test_a_compiled_rule_admits_exactly_what_the_simulated_rule_admits(nr, pkt):
    if nr["protocol"] not in (1, 6, 17, 132):
        nr = {**nr, "port_range_min": None, "port_range_max": None}
    if nr["port_range_min"] is not None and nr["port_range_max"] is not None \
            and nr["port_range_min"] > nr["port_range_max"] and nr["protocol"] != 1:
        nr = {**nr, "port_range_max": nr["port_range_min"]}
    if nr["remote_group_id"]:
        nr = {**nr, "remote_ip_prefix": None}
    if nr["protocol"] != 1 and (nr["port_range_min"] is None) != (nr["port_range_max"] is None):
        nr = {**nr, "port_range_max": nr["port_range_min"]}
    data = security.sg_rule_to_rule("sg", "chain", nr)
    data["ip_addr_group_src" if nr["direction"] == "ingress" else "ip_addr_group_dst"] = \
        GROUP if nr["remote_group_id"] else None
    rule = Rule.from_dict(data)
    view = DictView(ip_addr_groups={GROUP: IpAddrGroup(id=GROUP, addresses=GROUP_ADDRS)})
    ctx = chains.Context("p", None, "p", NO_FLOW_STATE)
    simulated = chains.matches(view, rule, pkt, ctx, _Builder())
    compiled, why = sgflows.rule_matches(
        rule, lambda g: view.ip_addr_group(g).addresses if view.ip_addr_group(g) else None)
    assert why is None, why
    assert any(_flow_matches(m, pkt) for m in compiled) == simulated, (nr, pkt, compiled)


def test_a_rule_that_cannot_be_expressed_admits_nothing_and_says_why():
    inverted = Rule(id="x", chain_id="c", action="accept", eth_type=ETH_IP, nw_proto=6,
                    invert=("nw_proto",))
    matches, why = sgflows.rule_matches(inverted, lambda g: None)
    assert matches == [] and "invert" in why
    unknown_group = Rule(id="y", chain_id="c", action="accept", eth_type=ETH_IP,
                         ip_addr_group_src="nope")
    matches, why = sgflows.rule_matches(unknown_group, lambda g: None)
    assert matches == [] and "unknown" in why
    dccp_ports = Rule(id="z", chain_id="c", action="accept", eth_type=ETH_IP, nw_proto=33,
                      tp_dst=(5000, 5001))
    matches, why = sgflows.rule_matches(dccp_ports, lambda g: None)
    assert matches == [] and "protocol 33" in why


# ------------------------------------------------------------ a port's flows
def _cloud(sg_conntrack: bool = True) -> DictView:
    """Bridge ``net`` with ``pa`` (unprotected) and ``pb`` (port security and
    group ``web``: TCP 8080 in, anything out)."""
    web = {"id": "web", "name": "web", "rules": [
        {"id": "in", "direction": "ingress", "protocol": 6, "port_range_min": 8080,
         "port_range_max": 8080},
        {"id": "out", "direction": "egress"}]}
    pb_data = {"id": "pb", "mac": B_MAC, "fixed_ips": [B_IP], "port_security_enabled": True,
               "security_group_ids": ["web"]}
    ipag, sg_chains = security.sg_objects(web, [pb_data])
    view = DictView(ip_addr_groups={ipag["id"]: IpAddrGroup.from_dict(ipag)})
    for chain, rules in sg_chains + security.port_objects(pb_data):
        view.chains[chain["id"]] = Chain.from_dict(chain)
        for r in rules:
            view.rules[r["id"]] = Rule.from_dict(r)
    cin, cout = security.port_filters(pb_data)
    view.ports["pa"] = Port(id="pa", device_id="net", tunnel_key=1, mac=A_MAC)
    view.ports["pb"] = Port(id="pb", device_id="net", tunnel_key=2, mac=B_MAC,
                            fixed_ips=(B_IP,), security_group_ids=("web",),
                            port_security_enabled=True, inbound_filter_id=cin,
                            outbound_filter_id=cout)
    view.bridges["net"] = Bridge(id="net", port_ids=("pa", "pb"))
    view.macs[("net", A_MAC)] = "pa"
    view.macs[("net", B_MAC)] = "pb"
    view.sg_conntrack = sg_conntrack
    return view


def _tcp(src_port="pa", dport=80, src=A_IP, dst=B_IP, smac=A_MAC, dmac=B_MAC) -> Packet:
    return Packet(in_port=src_port, eth_src=smac, eth_dst=dmac, eth_type=ETH_IP, ip_src=src,
                  ip_dst=dst, ip_proto=PROTO_TCP, tp_src=40000, tp_dst=dport)


def test_port_flows_hold_the_groups_rules_per_direction():
    view = _cloud()
    pf = sgflows.port_flows(view, view.ports["pb"], 7)
    assert pf.skipped == []
    commits = {(f.direction, f.match) for f in pf.flows if f.action == sgflows.COMMIT}
    original = ("ct_state", (sgflows.CT_TRK, sgflows.CT_TRK | sgflows.CT_RPL | sgflows.CT_INV))
    ingress = {"ct_zone": 7, "eth_type": ETH_IP, "ip_proto": 6, "tcp_dst": 8080,
               original[0]: original[1]}
    egress = {"in_port": 7, "ct_zone": 7, "eth_type": ETH_IP, original[0]: original[1]}
    assert commits == {("ingress", tuple(sorted({**ingress, "ip_frag": (0, 1)}.items()))),
                       ("egress", tuple(sorted({**egress, "ip_frag": (0, 1)}.items())))}
    # fragments are never committed in these tables: a rule admits a first
    # fragment, a later one of an original-direction datagram passes
    passes = {(f.direction, f.match) for f in pf.flows
              if f.action == sgflows.PASS and f.priority == sgflows.PRIO_RULE}
    later = {original[0]: original[1], "eth_type": ETH_IP, "ip_frag": (3, 3)}
    assert passes == {("ingress", tuple(sorted({**ingress, "ip_frag": (1, 3)}.items()))),
                      ("egress", tuple(sorted({**egress, "ip_frag": (1, 3)}.items()))),
                      ("ingress", tuple(sorted({**later, "ct_zone": 7}.items()))),
                      ("egress", tuple(sorted({**later, "ct_zone": 7, "in_port": 7}.items())))}
    for direction in ("ingress", "egress"):
        mine = [f for f in pf.flows if f.direction == direction]
        assert any(f.action == sgflows.DROP and f.priority == sgflows.PRIO_DEFAULT for f in mine)
        assert any(f.action == sgflows.DROP and f.priority == sgflows.PRIO_INVALID for f in mine)
        assert sum(f.action == sgflows.PASS and f.priority == sgflows.PRIO_ESTABLISHED
                   for f in mine) == 2  # replies, related
    assert sgflows.port_flows(view, view.ports["pa"], 3).flows == frozenset()
    # fragments a conntrack batch left for a later one find their way back
    strays = {(f.direction, f.priority, f.action, f.match) for f in pf.flows
              if f.action in (sgflows.AS_EGRESS, sgflows.AS_INGRESS)}
    assert strays == {
        ("ingress", sgflows.PRIO_STRAY_EGRESS, sgflows.AS_EGRESS,
         (("ct_zone", 7), ("eth_src", B_MAC))),
        ("egress", sgflows.PRIO_STRAY, sgflows.AS_EGRESS, (("ct_zone", 7), ("eth_src", B_MAC))),
        ("egress", sgflows.PRIO_STRAY_INGRESS, sgflows.AS_INGRESS, (("ct_zone", 7),))}


def test_a_ports_flows_name_what_they_were_computed_from():
    """PortFlows.reads: the agent recomputes a port's flows only when one of
    these tags is invalidated (a rule of its group, a remote group's
    members, the port itself), not on every security-group change."""
    view = _cloud()
    reads = sgflows.port_flows(view, view.ports["pb"], 7).reads
    web = {chain_tag(security.sg_chain_id("web", d)) for d in ("ingress", "egress")}
    own = {chain_tag(port_chain_id("pb", w)) for w in ("inbound", "outbound")}
    assert {port_tag("pb")} | web | own <= reads
    assert not any(t.startswith(ip_addr_group_tag("")) for t in reads)  # no remote group
    ipag = security.sg_ipag_id("web")
    rid = next(r.id for r in view.rules.values()
               if r.chain_id == security.sg_chain_id("web", "ingress"))
    view.rules[rid] = Rule(**{**view.rules[rid].__dict__, "ip_addr_group_src": ipag})
    assert ip_addr_group_tag(ipag) in sgflows.port_flows(view, view.ports["pb"], 7).reads
    other = sgflows.port_flows(view, view.ports["pa"], 3).reads
    assert not (other & web)  # pa's flows do not depend on pb's group


def test_a_port_whose_filter_a_user_replaced_is_simulated():
    view = _cloud()
    pb = view.ports["pb"]
    view.ports["pb"] = Port(**{**pb.__dict__, "outbound_filter_id": "users-own-chain"})
    flows = sgflows.port_flows(view, view.ports["pb"], 7).flows
    assert {f.direction for f in flows if f.action != sgflows.AS_EGRESS} == {"egress"}
    assert not any("ct_zone" in dict(f.match) and "in_port" not in dict(f.match)
                   and f.action != sgflows.AS_EGRESS for f in flows)  # no ingress of its own


# ------------------------------------------------------------- simulation
def test_the_simulation_leaves_a_protected_ports_ipv4_to_its_host():
    on, off = _cloud(True), _cloud(False)
    # to b's port 80, which its group does not admit: conntrack at b's host drops it
    r = simulate(on, _tcp(dport=80))
    assert r.out_ports == ("pb",) and not r.conntrack and "eth_type" in r.match_fields
    assert not simulate(off, _tcp(dport=80)).out_ports  # the chain drops it
    # admitted: the simulated chain tracks the connection; in OVS nothing is tracked
    assert simulate(off, _tcp(dport=8080)).conntrack
    assert not simulate(on, _tcp(dport=8080)).conntrack


def test_a_port_whose_host_simulates_its_groups_is_filtered_here():
    """Hosts may differ (a cloud changing sg_conntrack host by host): the
    groups of a port whose host does not enforce them in OVS are simulated
    wherever the packet enters, so no host's choice opens a hole."""
    view = _cloud(True)
    view.sg_simulated_ports = {"pb"}
    assert not simulate(view, _tcp(dport=80)).out_ports  # its chain drops it here
    admitted = simulate(view, _tcp(dport=8080))
    assert admitted.out_ports == ("pb",) and admitted.conntrack  # tracked here
    view.sg_simulated_ports = set()
    assert simulate(view, _tcp(dport=80)).out_ports == ("pb",)  # left to pb's host


def test_anti_spoofing_and_arp_stay_in_the_simulation():
    view = _cloud(True)
    spoofed = _tcp(src_port="pb", src="10.1.0.99", dst=A_IP, smac=B_MAC, dmac=A_MAC)
    assert not simulate(view, spoofed).out_ports
    own = _tcp(src_port="pb", src=B_IP, dst=A_IP, smac=B_MAC, dmac=A_MAC)
    assert simulate(view, own).out_ports == ("pa",)
    arp = Packet(in_port="pa", eth_src=A_MAC, eth_dst=B_MAC, eth_type=ETH_ARP, arp_op=2,
                 arp_sha=A_MAC, arp_spa=A_IP, arp_tha=B_MAC, arp_tpa=B_IP)
    r = simulate(view, arp)
    assert r.out_ports == ("pb",) and any(s.kind == "chain" for s in r.trace)


# ---------------------------------------------------------------- messages
def _checked(msgs):
    for m in msgs:
        flowcheck.check(m)
        m.set_xid(1)
        m.serialize()
    return msgs


def test_every_security_group_message_passes_the_pipeline_and_serializes():
    view = _cloud()
    flows = sgflows.port_flows(view, view.ports["pb"], 7).flows
    adds = _checked(pl.sg_flow_mods(pl.OFFLINE, 7, flows))
    assert {m.table_id for m in adds} == {pl.TABLE_SG_EGRESS, pl.TABLE_SG_INGRESS}
    assert all(m.cookie == pl.SG_COOKIE | 7 for m in adds)
    _checked(pl.sg_flow_mods(pl.OFFLINE, 7, flows, delete=True))
    _checked(pl.delete_sg_flows(pl.OFFLINE, 7))
    on = _checked(pl.sg_classify_flows(pl.OFFLINE, 7, 99, [1, 2], True, True))
    assert all(isinstance(m.instructions[0].actions[0], parser.NXActionCT) for m in on)
    off = _checked(pl.sg_classify_flows(pl.OFFLINE, 7, 99, [1, 2], False, False))
    assert all(m.command == pl.OFFLINE.ofproto.OFPFC_DELETE_STRICT for m in off)
    nudge = pl.ct_nudge(pl.OFFLINE)
    nudge.set_xid(1)
    nudge.serialize()
    flush = pl.ct_flush_zone(pl.OFFLINE, 7)
    flush.set_xid(1)
    flush.serialize()
    assert bytes(flush.buf)[-2:] == b"\x00\x07"


def test_a_delivery_to_a_protected_port_goes_through_its_zone_for_ipv4_only():
    view = _cloud()
    r = simulate(view, _tcp(dport=8080))
    d = Decision([Output(7, zone=7)], r.match_fields, frozenset(), r, cookie=pl.DECISION_COOKIE,
                 packet=_tcp(dport=8080))
    actions = pl.actions_for(pl.OFFLINE, d)
    assert isinstance(actions[-1], parser.NXActionCT)
    assert actions[-1].recirc_table == pl.TABLE_SG_INGRESS and actions[-1].zone_ofs_nbits == 7
    flowcheck.check(pl.decision_flow(pl.OFFLINE, d, 3, 60, actions))
    arp = Packet(in_port="pa", eth_src=A_MAC, eth_dst=B_MAC, eth_type=ETH_ARP, arp_op=1,
                 arp_sha=A_MAC, arp_spa=A_IP, arp_tpa=B_IP)
    d_arp = Decision([Output(7, zone=7)], frozenset({"in_port"}), frozenset(), r, packet=arp)
    assert isinstance(pl.actions_for(pl.OFFLINE, d_arp)[-1], parser.OFPActionOutput)


def test_a_path_mtu_check_before_a_zone_delivery_marks_its_own_bit():
    """OVS 3.1 lets table 3's ``exit`` (a bigger packet's branch) end the
    smaller branch too when the flow's actions recirculate, dropping every
    packet: such a flow marks reg6 bit 1, whose table-3 flow has no exit,
    and table 5 drops what is marked so (midoflow.apps.mtu)."""
    from dataclasses import replace

    from midoflow.apps import mtu

    view = _cloud()
    r = replace(simulate(view, _tcp(dport=8080)), mtu=1450)
    zone = Decision([Output(7, zone=7)], r.match_fields, frozenset(), r,
                    cookie=pl.DECISION_COOKIE, packet=_tcp(dport=8080))
    plain = Decision([Output(7)], r.match_fields, frozenset(), r,
                     cookie=pl.DECISION_COOKIE, packet=_tcp(dport=8080))
    for d, bit in ((zone, mtu.RECIRC_BIT), (plain, 0)):
        flow = pl.decision_flow(pl.OFFLINE, d, 3, 60, pl.actions_for(pl.OFFLINE, d))
        flowcheck.check(flow)
        check = flow.instructions[0].actions[0]
        assert isinstance(check, mtu.NXActionCheckPktLarger) and check.offset == bit
    base = [m for m in pl.base_flows(pl.OFFLINE) if isinstance(m, parser.OFPFlowMod)]
    table3 = {tuple(dict(m.match.items()).get("reg6", ())): m for m in base if m.table_id == 3}
    assert any(isinstance(a, parser.NXActionExit)
               for a in table3[(1, 1)].instructions[0].actions)
    assert not any(isinstance(a, parser.NXActionExit)
                   for a in table3[(2, 2)].instructions[0].actions)
    assert any(m.table_id == pl.TABLE_SG_INGRESS and dict(m.match.items()) == {"reg6": (2, 2)}
               and not m.instructions for m in base)
