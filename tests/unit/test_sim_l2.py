"""The L2 simulation: learning, flooding, isolation, interior links, tags."""

from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.model import PORT_INTERIOR, Bridge, Port
from midoflow.sim.packet import BROADCAST, Packet
from midoflow.sim.result import Action, bridge_tag, flood_tag, mac_tag, port_tag
from midoflow.sim.simulator import MAX_DEVICES, simulate
from midoflow.sim.view import DictView

MAC = [f"02:00:00:00:00:{i:02x}" for i in range(16)]


def topo(n_ports=3, bridges=("b1",)):
    ports, brs = {}, {}
    key = 1
    for b in bridges:
        ids = []
        for i in range(n_ports):
            pid = f"{b}-p{i}"
            ports[pid] = Port(id=pid, device_id=b, tunnel_key=key)
            key += 1
            ids.append(pid)
        brs[b] = Bridge(id=b, port_ids=tuple(ids))
    return DictView(ports, brs, {})


def test_unknown_destination_floods_to_every_other_port_and_learns_source():
    v = topo()
    r = simulate(v, Packet("b1-p0", MAC[0], MAC[1]))
    assert r.action is Action.FORWARD
    assert set(r.out_ports) == {"b1-p1", "b1-p2"}
    assert r.learned == (("b1", MAC[0], "b1-p0"),)
    assert r.flooded
    # Learning the destination must invalidate this flood flow.
    assert mac_tag("b1", MAC[1]) in r.tags and flood_tag("b1") in r.tags


def test_known_destination_goes_to_one_port_only():
    v = topo()
    v.macs[("b1", MAC[1])] = "b1-p2"
    v.macs[("b1", MAC[0])] = "b1-p0"
    r = simulate(v, Packet("b1-p0", MAC[0], MAC[1]))
    assert r.out_ports == ("b1-p2",)
    # the source is reported (the agent decides on a write), but nothing new is learned
    assert r.learned == (("b1", MAC[0], "b1-p0"),)
    assert not any("learn" in s.decision for s in r.trace)
    assert not r.flooded and flood_tag("b1") not in r.tags
    assert {port_tag("b1-p0"), port_tag("b1-p2"), bridge_tag("b1"), mac_tag("b1", MAC[1])} <= r.tags
    assert r.match_fields == {"in_port", "eth_src", "eth_dst"}


def test_broadcast_floods_and_depends_on_no_mac():
    v = topo(4)
    r = simulate(v, Packet("b1-p3", MAC[3], BROADCAST))
    assert set(r.out_ports) == {"b1-p0", "b1-p1", "b1-p2"}
    assert not any(t.startswith("mac:") for t in r.tags)


def test_destination_behind_ingress_port_is_dropped():
    v = topo()
    v.macs[("b1", MAC[1])] = "b1-p0"
    r = simulate(v, Packet("b1-p0", MAC[0], MAC[1]))
    assert r.action is Action.DROP


def test_two_bridges_with_same_macs_are_isolated():
    v = topo(2, bridges=("t1", "t2"))
    v.macs[("t2", MAC[1])] = "t2-p1"  # the same MAC lives on tenant 2's bridge
    r = simulate(v, Packet("t1-p0", MAC[0], MAC[1]))
    assert set(r.out_ports) == {"t1-p1"}
    assert all(not p.startswith("t2") for p in r.out_ports)


def test_port_and_bridge_admin_state():
    v = topo()
    v.ports["b1-p0"] = Port(id="b1-p0", device_id="b1", tunnel_key=1, admin_state_up=False)
    assert simulate(v, Packet("b1-p0", MAC[0], MAC[1])).action is Action.DROP
    v = topo()
    v.ports["b1-p2"] = Port(id="b1-p2", device_id="b1", tunnel_key=3, admin_state_up=False)
    assert simulate(v, Packet("b1-p0", MAC[0], BROADCAST)).out_ports == ("b1-p1",)
    v.macs[("b1", MAC[2])] = "b1-p2"
    assert simulate(v, Packet("b1-p0", MAC[0], MAC[2])).action is Action.DROP
    v = topo()
    v.bridges["b1"] = Bridge(id="b1", port_ids=v.bridges["b1"].port_ids, admin_state_up=False)
    r = simulate(v, Packet("b1-p0", MAC[0], MAC[1]))
    assert r.action is Action.DROP and bridge_tag("b1") in r.tags


def test_unknown_ingress_port_drops_with_its_tag():
    r = simulate(topo(), Packet("nope", MAC[0], MAC[1]))
    assert r.action is Action.DROP and r.tags == {port_tag("nope")}


def link(v, a, b):
    pa, pb = v.ports[a], v.ports[b]
    v.ports[a] = Port(id=a, device_id=pa.device_id, tunnel_key=pa.tunnel_key,
                      type=PORT_INTERIOR, peer_id=b)
    v.ports[b] = Port(id=b, device_id=pb.device_id, tunnel_key=pb.tunnel_key,
                      type=PORT_INTERIOR, peer_id=a)


def test_flood_crosses_interior_link_and_learns_on_both_bridges():
    v = topo(3, bridges=("x", "y"))
    link(v, "x-p2", "y-p2")
    r = simulate(v, Packet("x-p0", MAC[0], BROADCAST))
    assert set(r.out_ports) == {"x-p1", "y-p0", "y-p1"}
    assert ("x", MAC[0], "x-p0") in r.learned and ("y", MAC[0], "y-p2") in r.learned


def test_unicast_across_interior_link():
    v = topo(3, bridges=("x", "y"))
    link(v, "x-p2", "y-p2")
    v.macs[("x", MAC[5])] = "x-p2"
    v.macs[("y", MAC[5])] = "y-p1"
    r = simulate(v, Packet("x-p0", MAC[0], MAC[5]))
    assert r.out_ports == ("y-p1",)
    assert {port_tag("x-p2"), port_tag("y-p2"), bridge_tag("y"), mac_tag("y", MAC[5])} <= r.tags


def test_loop_guard_stops_a_bridge_loop():
    v = topo(3, bridges=("x", "y"))
    link(v, "x-p1", "y-p1")
    link(v, "x-p2", "y-p2")
    r = simulate(v, Packet("x-p0", MAC[0], BROADCAST))
    assert r.action is Action.DROP and r.reason == "loop guard"
    assert len([s for s in r.trace if s.kind == "bridge"]) <= 2 * MAX_DEVICES


def test_trace_names_each_decision():
    v = topo()
    r = simulate(v, Packet("b1-p0", MAC[0], MAC[1]))
    text = "\n".join(map(str, r.trace))
    assert "learn" in text and "unknown: flood" in text


macs = st.sampled_from(MAC[:6] + [BROADCAST, "01:00:5e:00:00:01"])


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 6),
    src_port=st.integers(0, 5),
    src=st.sampled_from(MAC[:6]),
    dst=macs,
    table=st.dictionaries(st.sampled_from(MAC[:6]), st.integers(0, 5)),
    down=st.sets(st.integers(0, 5)),
)
def test_properties(n, src_port, src, dst, table, down):
    v = topo(n)
    src_port %= n
    for i in down:
        if i < n and i != src_port:
            p = v.ports[f"b1-p{i}"]
            v.ports[p.id] = Port(id=p.id, device_id="b1", tunnel_key=p.tunnel_key,
                                 admin_state_up=False)
    for mac, i in table.items():
        v.macs[("b1", mac)] = f"b1-p{i % n}"
    pkt = Packet(f"b1-p{src_port}", src, dst)
    r = simulate(v, pkt)
    # Never back out of the ingress port, never to a down port, always deterministic.
    assert pkt.in_port not in r.out_ports
    assert all(v.ports[p].admin_state_up for p in r.out_ports)
    assert simulate(v, pkt) == r
    # Every egress port is tagged, so its removal invalidates the flow.
    assert all(port_tag(p) in r.tags or r.flooded for p in r.out_ports)
    if r.flooded:
        assert flood_tag("b1") in r.tags
    if r.action is Action.FORWARD and not r.flooded:
        assert len(r.out_ports) == 1 and r.out_ports[0] == v.macs[("b1", dst)]
