"""Router ICMP "related" (issue 12, item 6): an ICMP error about a tracked
connection passes a security group's established rule (the port chains'
``match_return_flow`` ACCEPT), as iptables' RELATED; an error about no
tracked connection does not, and neither ever becomes a flow or a
connection of its own. Before this, only NAT translated such an error and
the port's chains dropped it (no group admits ICMP here)."""

from __future__ import annotations

import pytest

from midoflow.model import Chain, Port, Rule
from midoflow.service import security
from midoflow.sim.packet import PROTO_ICMP, PROTO_UDP, Packet
from midoflow.sim.simulator import simulate
from tests.unit.test_sim_nat import EXT_GW, NOW, PUBLIC, UPLINK_MAC, nat_topo, run
from tests.unit.test_sim_router import R1A, VM1, VM3

VM_IP, NEIGHBOUR = "192.168.1.10", "192.168.1.30"


@pytest.fixture
def t():
    """nat_topo (p1 = VM_IP behind r1, which SNATs to PUBLIC) with p1 in a
    security group that admits everything out and only UDP 53 in; an
    unprotected neighbour p3 (NEIGHBOUR) on p1's bridge."""
    t = nat_topo()
    sg = {"id": "sg", "name": "web", "rules": [
        {"id": "out", "direction": "egress"},
        {"id": "dns", "direction": "ingress", "protocol": PROTO_UDP, "port_range_min": 53,
         "port_range_max": 53}]}
    data = {"id": "p1", "mac": VM1, "fixed_ips": [VM_IP], "security_group_ids": ["sg"]}
    _, sg_chains = security.sg_objects(sg, [data])
    for chain, rules in sg_chains + security.port_objects(data):
        t.v.chains[chain["id"]] = Chain.from_dict(chain)
        for r in rules:
            t.v.rules[r["id"]] = Rule.from_dict(r)
    cin, cout = security.port_filters(data)
    t.v.ports["p1"] = Port(**{**t.v.ports["p1"].to_dict(), "inbound_filter_id": cin,
                              "outbound_filter_id": cout})
    t.port("p3", "b1")
    t.v.macs[("b1", VM3)] = "p3"
    return t


def udp(src, dst, sport, dport, in_port, eth_src, eth_dst) -> Packet:
    return Packet(in_port=in_port, eth_src=eth_src, eth_dst=eth_dst, ip_src=src, ip_dst=dst,
                  ip_proto=PROTO_UDP, tp_src=sport, tp_dst=dport)


def unreachable(src, dst, inner, in_port, eth_src, eth_dst, code=3) -> Packet:
    return Packet(in_port=in_port, eth_src=eth_src, eth_dst=eth_dst, ip_src=src, ip_dst=dst,
                  ip_proto=PROTO_ICMP, tp_src=3, tp_dst=code, icmp_inner=inner)


def track(t, r):
    """What the agent commits: bindings (run did) and connections."""
    t.state.track(r.conntrack, NOW)


def test_port_unreachable_through_snat_reaches_the_vm_as_related(t):
    out = run(t, udp(VM_IP, "8.8.8.8", 5000, 53, "p1", VM1, R1A))
    track(t, out)
    (b,) = out.nat
    err = unreachable("8.8.8.8", PUBLIC, (PROTO_UDP, PUBLIC, b.xlated[1], "8.8.8.8", 53),
                      "up", EXT_GW, UPLINK_MAC)
    r = simulate(t.v, err, NOW, t.state.view(NOW))
    assert r.out_ports == ("p1",), [str(s) for s in r.trace]
    assert any("related" in s.decision for s in r.trace)
    assert not r.cacheable and not r.conntrack  # never a flow, never a connection
    rw = {w.field: w.value for w in r.rewrites}
    assert rw["ip_dst"] == VM_IP and rw["icmp_inner_src"] == f"{VM_IP}:5000"


def test_an_error_about_no_tracked_connection_is_dropped_and_not_cached(t):
    out = run(t, udp(VM_IP, NEIGHBOUR, 5000, 53, "p1", VM1, VM3))
    track(t, out)
    stray = unreachable(NEIGHBOUR, VM_IP, (PROTO_UDP, VM_IP, 5001, NEIGHBOUR, 53),
                        "p3", VM3, VM1)
    r = simulate(t.v, stray, NOW, t.state.view(NOW))
    assert r.dropped and not r.cacheable and not r.conntrack
    # the same error about the tracked one passes: the drop did not stick
    ok = stray.evolve(icmp_inner=(PROTO_UDP, VM_IP, 5000, NEIGHBOUR, 53))
    r = simulate(t.v, ok, NOW, t.state.view(NOW))
    assert r.out_ports == ("p1",) and not r.cacheable
    # a plain ICMP packet (not an error) from there is still refused
    echo = Packet(in_port="p3", eth_src=VM3, eth_dst=VM1, ip_src=NEIGHBOUR, ip_dst=VM_IP,
                  ip_proto=PROTO_ICMP, tp_src=8, tp_dst=0, icmp_id=7)
    assert simulate(t.v, echo, NOW, t.state.view(NOW)).dropped


def test_an_error_about_the_vms_reply_is_related_too(t):
    """A connection opened from outside (UDP 53, admitted in): an error
    quoting the VM's reply (the connection's return direction) is related."""
    q = run(t, udp(NEIGHBOUR, VM_IP, 4000, 53, "p3", VM3, VM1))
    assert q.out_ports == ("p1",)
    track(t, q)
    err = unreachable(NEIGHBOUR, VM_IP, (PROTO_UDP, VM_IP, 53, NEIGHBOUR, 4000), "p3", VM3,
                      VM1, code=1)
    r = simulate(t.v, err, NOW, t.state.view(NOW))
    assert r.out_ports == ("p1",) and not r.cacheable


def test_the_error_the_vm_sends_about_an_admitted_packet_leaves(t):
    """The VM answers a datagram to a closed port (admitted by its group)
    with port unreachable: related on the way out as well."""
    q = run(t, udp(NEIGHBOUR, VM_IP, 4000, 53, "p3", VM3, VM1))
    track(t, q)
    err = unreachable(VM_IP, NEIGHBOUR, (PROTO_UDP, NEIGHBOUR, 4000, VM_IP, 53), "p1", VM1,
                      VM3)
    r = simulate(t.v, err, NOW, t.state.view(NOW))
    assert r.out_ports == ("p3",) and not r.conntrack


def test_time_exceeded_about_a_ping_through_snat_reaches_the_vm_as_related(t):
    """A ping's connection is keyed by its echo identifier; the quoted echo's
    identifier (read by the parser into both port slots) finds it, and NAT
    puts the VM's own identifier back into the quoted echo."""
    ping = Packet(in_port="p1", eth_src=VM1, eth_dst=R1A, ip_src=VM_IP, ip_dst="8.8.8.8",
                  ip_proto=PROTO_ICMP, tp_src=8, tp_dst=0, icmp_id=4242)
    out = run(t, ping)
    track(t, out)
    (b,) = out.nat
    xid = b.xlated[1]
    err = Packet(in_port="up", eth_src=EXT_GW, eth_dst=UPLINK_MAC, ip_src="198.51.100.7",
                 ip_dst=PUBLIC, ip_proto=PROTO_ICMP, tp_src=11, tp_dst=0,
                 icmp_inner=(PROTO_ICMP, PUBLIC, xid, "8.8.8.8", xid))
    r = simulate(t.v, err, NOW, t.state.view(NOW))
    assert r.out_ports == ("p1",), [str(s) for s in r.trace]
    assert any("related" in s.decision for s in r.trace)
    rw = {w.field: w.value for w in r.rewrites}
    assert rw["ip_dst"] == VM_IP and rw["icmp_inner_src"] == f"{VM_IP}:4242"
