"""NAT in the simulation: SNAT with ports from the allocator, the reply
translated back, floating IPs (DNAT in, SNAT out), on a provider router."""

from __future__ import annotations

from midoflow.model import Chain, NatTarget, Router, Rule
from midoflow.nat.allocator import MemoryLeaser, NatAllocator
from midoflow.nat.bindings import SNAT, NatBinding
from midoflow.nat.conntrack import ConnKey
from midoflow.nat.tables import FlowTables
from midoflow.sim.packet import PROTO_ICMP, PROTO_TCP, Packet
from midoflow.sim.simulator import simulate
from tests.unit.test_sim_router import NOW, VM1, VM2, Topo, ip_pkt

EXT_GW = "02:ee:00:00:00:01"
UPLINK_MAC = "02:aa:00:00:00:09"
PUBLIC = "203.0.113.10"
FIP = "203.0.113.20"


def nat_topo():
    """r1 with an uplink 198.51.100.1/24 (gateway .254): SNAT to PUBLIC for
    traffic leaving the uplink, floating IP FIP for 192.168.2.20."""
    t = Topo()
    t.rport("r1", "up", UPLINK_MAC, "198.51.100.1", 24)
    t.route("r1", "default", "0.0.0.0/0", "up", "198.51.100.254")
    t.route("r1", "nat-ip", f"{PUBLIC}/32", type="blackhole")  # no binding: nowhere to go
    t.v.arps[("r1", "198.51.100.254")] = (EXT_GW, NOW)
    rules = [
        Rule(id="fip-out", chain_id="post", action="snat", out_ports=("up",),
             nw_src="192.168.2.20/32", nat_targets=(NatTarget(FIP, FIP),)),
        Rule(id="snat", chain_id="post", action="snat", out_ports=("up",),
             nat_targets=(NatTarget(PUBLIC, PUBLIC, 1024, 65535),)),
        Rule(id="fip-in", chain_id="pre", action="dnat", nw_dst=f"{FIP}/32",
             nat_targets=(NatTarget("192.168.2.20", "192.168.2.20"),)),
        Rule(id="rev", chain_id="pre", action="rev_snat"),
    ]
    for r in rules:
        t.v.rules[r.id] = r
    t.v.chains["post"] = Chain(id="post", rule_ids=("fip-out", "snat"))
    t.v.chains["pre"] = Chain(id="pre", rule_ids=("fip-in", "rev"))
    r = t.v.routers["r1"]
    t.v.routers["r1"] = Router(**{**r.to_dict(), "inbound_filter_id": "pre",
                                  "outbound_filter_id": "post"})
    t.state = FlowTables(NatAllocator(MemoryLeaser().for_host("h1")))
    return t


def sim(t, p):
    """One simulation over the host's flow state, read only."""
    return simulate(t.v, p, NOW, t.state.view(NOW))


def run(t, p):
    """What the agent does: simulate; lease a block and simulate again when
    the simulation found no free SNAT port; then take its ports and record
    its bindings."""
    r = sim(t, p)
    if r.nat_wants and t.state.lease(r.nat_wants):
        r = sim(t, p)
    _commit(t, r)
    return r


def _commit(t, r):
    assert t.state.commit_nat(r.nat_allocs, r.nat, NOW)


def test_snat_allocates_distinct_ports_and_rewrites_the_source():
    t = nat_topo()
    seen = set()
    for sport in (1000, 1001, 1002):
        r = run(t, ip_pkt(dst="8.8.8.8", sport=sport))
        assert r.out_ports == ("up",)
        (b,) = r.nat
        assert b.kind == SNAT and b.xlated[0] == PUBLIC and b.orig == ("192.168.1.10", sport)
        rw = dict((w.field, w.value) for w in r.rewrites)
        assert rw["ip_src"] == PUBLIC and rw["tp_src"] == b.xlated[1]
        assert rw["eth_dst"] == EXT_GW
        seen.add(b.xlated)
    assert len(seen) == 3
    # the same connection again: the same binding, nothing new
    r = sim(t, ip_pkt(dst="8.8.8.8", sport=1000))
    assert r.nat == () and dict((w.field, w.value) for w in r.rewrites)["ip_src"] == PUBLIC


def test_the_reply_is_translated_back_and_routed_to_the_vm():
    t = nat_topo()
    r = run(t, ip_pkt(dst="8.8.8.8", sport=1000))
    (b,) = r.nat
    reply = Packet(in_port="up", eth_src=EXT_GW, eth_dst=UPLINK_MAC, ip_src="8.8.8.8",
                   ip_dst=PUBLIC, ip_proto=PROTO_TCP, tp_src=80, tp_dst=b.xlated[1])
    r = sim(t, reply)
    assert r.out_ports == ("p1",)
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert (rw["ip_dst"], rw["tp_dst"], rw["eth_dst"]) == ("192.168.1.10", 1000, VM1)
    # an unsolicited packet to the public address is not translated: no route back
    stray = Packet(in_port="up", eth_src=EXT_GW, eth_dst=UPLINK_MAC, ip_src="8.8.8.8",
                   ip_dst=PUBLIC, ip_proto=PROTO_TCP, tp_src=80, tp_dst=4444)
    r = sim(t, stray)
    assert r.dropped and "blackhole" in r.trace[-1].decision


def test_floating_ip_in_and_out():
    t = nat_topo()
    inbound = Packet(in_port="up", eth_src=EXT_GW, eth_dst=UPLINK_MAC, ip_src="8.8.4.4",
                     ip_dst=FIP, ip_proto=PROTO_TCP, tp_src=5555, tp_dst=22)
    r = sim(t, inbound)
    assert r.out_ports == ("p2",)
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert rw["ip_dst"] == "192.168.2.20" and "tp_dst" not in rw  # 1:1, port kept
    assert rw["eth_dst"] == VM2
    # the VM's own outbound traffic leaves with its floating IP, port kept
    out = ip_pkt(src="192.168.2.20", dst="8.8.8.8", in_port="p2", eth_src=VM2,
                 eth_dst="02:aa:00:00:00:02", sport=3333)
    r = sim(t, out)
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert r.out_ports == ("up",) and rw["ip_src"] == FIP and "tp_src" not in rw


def test_icmp_is_translated_by_address_and_east_west_is_not_translated():
    t = nat_topo()
    r = sim(t, ip_pkt(dst="8.8.8.8", proto=PROTO_ICMP, sport=8, dport=0))
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert rw["ip_src"] == PUBLIC and "tp_src" not in rw
    r = sim(t, ip_pkt())  # 192.168.1.10 -> 192.168.2.20: not via the uplink
    assert r.out_ports == ("p2",) and r.nat == ()
    assert "ip_src" not in {w.field for w in r.rewrites}


def test_exhaustion_drops_without_crashing():
    t = nat_topo()
    rule = t.v.rules["snat"]
    t.v.rules["snat"] = Rule(**{**rule.to_dict(), "nat_targets": (
        NatTarget(PUBLIC, PUBLIC, 2000, 2001),)})
    for sport in (1, 2):
        run(t, ip_pkt(dst="8.8.8.8", sport=sport))
    r = sim(t, ip_pkt(dst="8.8.8.8", sport=3))
    assert r.dropped and not r.cacheable and r.nat == ()
    assert r.nat_wants and not t.state.lease(r.nat_wants)  # no block left to lease


def test_the_simulation_only_proposes_and_the_commit_takes():
    """The simulation writes nothing: without a block it asks for one; with
    one it proposes a port (the same each time until committed); a port
    taken meanwhile makes the commit fail, and the next walk proposes
    another."""
    t = nat_topo()
    p = ip_pkt(dst="8.8.8.8", sport=1000)
    first = sim(t, p)
    assert first.dropped and first.nat == () and first.nat_allocs == ()
    assert first.nat_wants == (((NatTarget(PUBLIC, PUBLIC, 1024, 65535),), PROTO_TCP),)
    assert t.state.allocator.leased == {}  # nothing was leased by simulating
    assert t.state.lease(first.nat_wants)
    a, b = sim(t, p), sim(t, p)
    assert a.nat_allocs == b.nat_allocs and len(a.nat_allocs) == 1
    ip, port, proto = a.nat_allocs[0]
    assert a.nat[0].xlated == (ip, port) and len(t.state.nat) == 0
    assert t.state.allocator.take(ip, port, proto)  # another packet took it meanwhile
    assert not t.state.commit_nat(a.nat_allocs, a.nat, NOW)
    assert len(t.state.nat) == 0
    again = run(t, p)
    assert again.nat_allocs[0][1] != port and t.state.nat.forward(SNAT, again.nat[0].fwd)


def test_binding_encoding_round_trips():
    b = NatBinding(SNAT, ConnKey("r", 6, "10.0.0.1", 1, "8.8.8.8", 80), ("10.0.0.1", 1),
                   (PUBLIC, 2000))
    assert NatBinding.decode(b.encode()) == b
    assert b.rev == ConnKey("r", 6, "8.8.8.8", 80, PUBLIC, 2000)



def test_icmp_echo_identifier_is_translated_like_a_port_and_never_cached():
    t = nat_topo()
    t.v.arps[("r1", "192.168.1.11")] = ("02:00:00:00:01:11", NOW)
    ids = set()
    for vm_id in (7, 7):  # two pings with the same identifier: distinct translations
        p = ip_pkt(dst="8.8.8.8", proto=PROTO_ICMP, sport=8, dport=0, src="192.168.1.10")
        p = p.evolve(icmp_id=vm_id, tp_src=8, tp_dst=0)
        p = p.evolve(ip_src="192.168.1.10" if not ids else "192.168.1.11")
        r = run(t, p)
        (b,) = r.nat
        rw = dict((w.field, w.value) for w in r.rewrites)
        assert rw["ip_src"] == PUBLIC and rw["icmp_id"] == b.xlated[1] and not r.cacheable
        ids.add(b.xlated[1])
    assert len(ids) == 2
    # the echo reply to the second translation goes back to the second sender
    nid = sorted(ids)[1] if len(ids) == 2 else None
    reply = Packet(in_port="up", eth_src=EXT_GW, eth_dst=UPLINK_MAC, ip_src="8.8.8.8",
                   ip_dst=PUBLIC, ip_proto=PROTO_ICMP, tp_src=0, tp_dst=0, icmp_id=nid)
    r = sim(t, reply)
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert rw["icmp_id"] == 7 and rw["ip_dst"] in ("192.168.1.10", "192.168.1.11")
    assert not r.cacheable


def test_set_icmp_id_rewrites_the_frame():
    from os_ken.lib.packet import ethernet, icmp, ipv4, packet

    from midoflow.apps import frames

    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=EXT_GW, src=VM1, ethertype=0x800))
    p.add_protocol(ipv4.ipv4(src="10.0.0.1", dst="8.8.8.8", proto=1))
    p.add_protocol(icmp.icmp(type_=8, code=0, data=icmp.echo(id_=7, seq=1, data=b"x" * 8)))
    p.serialize()
    out = frames.set_icmp_id(bytes(p.data), 4242)
    f = frames.parse(out)
    assert f["icmp_id"] == 4242 and f["ip_dst"] == "8.8.8.8"
    ic = packet.Packet(out).get_protocol(icmp.icmp)
    assert ic.data.seq == 1 and ic.data.data == b"x" * 8
    # the checksum is right: re-serialising the parsed packet changes nothing
    q = packet.Packet(out)
    q.get_protocol(icmp.icmp).csum = 0
    q.serialize()
    assert bytes(q.data)[-16:] == out[-16:]


def test_icmp_errors_about_a_translated_connection_are_translated_back():
    t = nat_topo()
    r = run(t, ip_pkt(dst="8.8.8.8", sport=1000))
    (b,) = r.nat
    # a router out there says the port is unreachable, quoting what it got
    err = Packet(in_port="up", eth_src=EXT_GW, eth_dst=UPLINK_MAC, ip_src="198.51.100.77",
                 ip_dst=PUBLIC, ip_proto=PROTO_ICMP, tp_src=3, tp_dst=3,
                 icmp_inner=(PROTO_TCP, PUBLIC, b.xlated[1], "8.8.8.8", 80))
    r = sim(t, err)
    assert r.out_ports == ("p1",) and not r.cacheable
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert rw["ip_dst"] == "192.168.1.10" and rw["icmp_inner_src"] == "192.168.1.10:1000"
    # an error quoting a connection we never translated goes nowhere
    stray = err.evolve(icmp_inner=(PROTO_TCP, PUBLIC, 9, "8.8.8.8", 80))
    assert sim(t, stray).dropped


def test_set_icmp_inner_rewrites_the_quoted_packet():
    from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp

    from midoflow.apps import frames

    q = packet.Packet()
    q.add_protocol(ipv4.ipv4(src=PUBLIC, dst="8.8.8.8", proto=6))
    q.add_protocol(tcp.tcp(src_port=2000, dst_port=80))
    q.serialize()
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=UPLINK_MAC, src=EXT_GW, ethertype=0x800))
    p.add_protocol(ipv4.ipv4(src="198.51.100.77", dst=PUBLIC, proto=1))
    p.add_protocol(icmp.icmp(type_=3, code=3, data=icmp.dest_unreach(data=bytes(q.data)[:28])))
    p.serialize()
    f = frames.parse(bytes(p.data))
    assert f["icmp_inner"] == (6, PUBLIC, 2000, "8.8.8.8", 80)
    out = frames.set_icmp_inner(bytes(p.data), "src", "192.168.1.10:1000")
    assert frames.parse(out)["icmp_inner"] == (6, "192.168.1.10", 1000, "8.8.8.8", 80)
    inner = packet.Packet(out).get_protocol(icmp.icmp).data.data
    assert frames._ip_checksum(inner[:20]) == 0  # the quoted header's checksum holds


def test_stateless_nat_rewrites_addresses_both_ways_without_state():
    t = nat_topo()
    t.v.rules["s-out"] = Rule(id="s-out", chain_id="post", action="static_snat",
                              out_ports=("up",), nw_src="192.168.2.20/32",
                              nat_targets=(NatTarget("203.0.113.30", "203.0.113.30"),))
    t.v.rules["s-in"] = Rule(id="s-in", chain_id="pre", action="static_dnat",
                             nw_dst="203.0.113.30/32",
                             nat_targets=(NatTarget("192.168.2.20", "192.168.2.20"),))
    t.v.chains["post"] = Chain(id="post", rule_ids=("s-out", "snat"))
    t.v.chains["pre"] = Chain(id="pre", rule_ids=("s-in",))  # stateless only
    out = ip_pkt(src="192.168.2.20", dst="8.8.8.8", in_port="p2", eth_src=VM2,
                 eth_dst="02:aa:00:00:00:02", sport=3333)
    r = sim(t, out)
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert r.out_ports == ("up",) and rw["ip_src"] == "203.0.113.30" and "tp_src" not in rw
    assert r.nat == () and r.conntrack == () and r.cacheable
    assert "tp_src" not in r.match_fields  # wildcarded: one flow for every connection
    back = Packet(in_port="up", eth_src=EXT_GW, eth_dst=UPLINK_MAC, ip_src="8.8.8.8",
                  ip_dst="203.0.113.30", ip_proto=PROTO_TCP, tp_src=80, tp_dst=4444)
    r = sim(t, back)
    rw = dict((w.field, w.value) for w in r.rewrites)
    assert r.out_ports == ("p2",) and rw["ip_dst"] == "192.168.2.20" and r.nat == ()


def test_the_simulation_imports_neither_the_agent_nor_a_store():
    """It reads flow state through the view it is given, never by calling back."""
    import ast
    import pathlib

    import midoflow.sim

    bad = []
    for path in pathlib.Path(midoflow.sim.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            bad += [f"{path.name}: {n}" for n in names
                    if n.split(".")[:2] in (["midoflow", "agent"], ["midoflow", "apps"],
                                            ["midoflow", "store"])]
    assert bad == []
