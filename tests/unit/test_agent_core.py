"""AgentCore on the memory store: bindings, translation, exact invalidation."""

from midoflow.agent.core import AgentCore, Output, Tunnel
from midoflow.store import paths
from midoflow.store.base import Delete, Update
from midoflow.store.memory import MemoryStore
from tests.unit.worlds import BCAST, M1, M2, M3, cfg


def eth(src: str, dst: str, eth_type: int) -> dict:
    """Packet-in fields of a frame with only these headers."""
    return {"eth_src": src, "eth_dst": dst, "eth_type": eth_type}


def test_bindings_publish_active_ports_and_host_state(l2_world):
    api, agents, _ = l2_world
    assert agents["h1"].bindings == {"p1": 5, "p3": 6}
    assert api.get_state(paths.port_active("p2")) == {"host_id": "h2"}
    assert api.get_state(paths.host_alive("h1"))["tunnel_ips"] == {"underlay": "10.0.0.1"}
    assert agents["h1"].cache.port_hosts == {"p1": "h1", "p2": "h2", "p3": "h1"}


def test_broadcast_goes_local_and_through_the_tunnel_with_the_port_key(l2_world):
    _, agents, _ = l2_world
    d = agents["h1"].handle_miss(5, eth(M1, BCAST, 0x806))
    assert set(d.actions) == {Output(6), Tunnel(12, "10.0.0.2", 1)}


def test_learning_is_replicated_and_invalidates_flood_flows(l2_world):
    api, agents, inv = l2_world
    flood = agents["h2"].handle_miss(5, eth(M2, M1, 0x800))  # M1 unknown yet: flood
    assert set(flood.actions) == {Tunnel(11, "10.0.0.1", 1), Tunnel(13, "10.0.0.1", 1)}
    agents["h1"].handle_miss(5, eth(M1, BCAST, 0x806))  # learns M1 on p1
    assert api.list_state(paths.mac_table("b")) == [f"{M1},p1", f"{M2},p2"]
    assert flood.cookie in inv["h2"]
    d = agents["h2"].handle_miss(5, eth(M2, M1, 0x800))
    assert d.actions == [Tunnel(11, "10.0.0.1", 1)]


def test_deleting_a_port_removes_exactly_the_flows_through_it(l2_world):
    api, agents, inv = l2_world
    a = agents["h1"]
    a.handle_miss(5, eth(M1, BCAST, 0x806))
    a.handle_miss(6, eth(M3, BCAST, 0x806))
    agents["h2"].handle_miss(5, eth(M2, BCAST, 0x806))
    to_m2 = a.handle_miss(5, eth(M1, M2, 0x800))
    m1_to_m3 = a.handle_miss(5, eth(M1, M3, 0x800))
    assert to_m2.actions == [Tunnel(12, "10.0.0.2", 1)] and m1_to_m3.actions == [Output(6)]
    inv["h1"].clear()
    bridge, v = api.get("bridges", "b")
    bridge["port_ids"] = ["p1", "p3"]
    api.commit([Delete("ports", "p2"), Update("bridges", bridge, v)])
    assert to_m2.cookie in inv["h1"]
    assert m1_to_m3.cookie not in inv["h1"]


def test_port_down_drops_and_port_up_restores(l2_world):
    api, agents, inv = l2_world
    a = agents["h1"]
    agents["h2"].handle_miss(5, eth(M2, BCAST, 0x806))
    d = a.handle_miss(5, eth(M1, M2, 0x800))
    port, v = api.get("ports", "p2")
    port["admin_state_up"] = False
    api.commit([Update("ports", port, v)])
    assert d.cookie in inv["h1"]
    assert a.handle_miss(5, eth(M1, M2, 0x800)).actions == []


def test_unbinding_on_one_host_and_binding_on_another_moves_the_port(l2_world):
    api, agents, inv = l2_world
    agents["h2"].handle_miss(5, eth(M2, BCAST, 0x806))
    d = agents["h1"].handle_miss(5, eth(M1, M2, 0x800))
    agents["h2"].set_interfaces({"vxlan0": (1, None), "gre0": (2, None)})
    assert api.get_state(paths.port_active("p2")) is None
    assert d.cookie in inv["h1"]
    agents["h1"].set_interfaces({"vxlan0": (1, None), "gre0": (2, None), "vm1": (5, "p1"),
                                 "vm3": (6, "p3"), "vm2": (7, "p2")})
    # The old host forgot M2 when the port left it: flooded, now locally only.
    assert set(agents["h1"].handle_miss(5, eth(M1, M2, 0x800)).actions) == {Output(6), Output(7)}


def test_api_binding_without_iface_id(l2_world):
    api, agents, _ = l2_world
    port, v = api.get("ports", "p2")
    port.update(host_id="h1", interface_name="tapx")
    agents["h1"].set_interfaces({"vxlan0": (1, None), "gre0": (2, None), "tapx": (9, None)})
    api.commit([Update("ports", port, v)])
    assert agents["h1"].bindings == {"p2": 9}


def test_host_death_removes_its_ports(l2_world):
    api, agents, inv = l2_world
    agents["h2"].handle_miss(5, eth(M2, BCAST, 0x806))
    d = agents["h1"].handle_miss(5, eth(M1, M2, 0x800))
    agents["h2"].store.close()
    assert "p2" not in agents["h1"].cache.port_hosts
    assert d.cookie in inv["h1"]


def test_gre_zone_uses_the_gre_port(l2_world):
    api, agents, _ = l2_world
    zone, v = api.get("tunnel_zones", "z")
    zone["type"] = "gre"
    api.commit([Update("tunnel_zones", zone, v)])
    d = agents["h1"].handle_miss(5, eth(M1, BCAST, 0x806))
    assert Tunnel(12, "10.0.0.2", 2) in d.actions


def test_packet_from_unbound_ofport_is_ignored(l2_world):
    _, agents, _ = l2_world
    assert agents["h1"].handle_miss(42, eth(M1, BCAST, 0x806)) is None


def test_a_replaced_flow_leaves_the_index(l2_world):
    _, agents, _ = l2_world
    a = agents["h1"]
    cookies = []
    for _ in range(5):  # a burst: each queued packet-in installs the same flow
        d = a.handle_miss(5, eth(M1, M2, 0x800))
        a.flow_replaced((("eth_dst", M2), ("in_port", 5)), d.cookie)
        cookies.append(d.cookie)
    assert len(set(cookies)) == 5 and len(a.flows) == 1
    a.flow_removed(cookies[-1])
    assert len(a.flows) == 0


def test_a_restarted_agent_writes_again_what_its_previous_run_learned(l2_world):
    api, agents, _ = l2_world
    agents["h1"].handle_miss(5, eth(M1, BCAST, 0x806))
    assert paths.parse_mac_entry(api.list_state(paths.mac_table("b"))[0]) == (M1, "p1")
    # a new agent process: its cache shows the entry, but the old session owns it
    fresh = AgentCore(cfg("h1"), MemoryStore(api.backend))
    fresh.spawn = lambda f, *args: f(*args)
    fresh.start()
    fresh.set_interfaces({"vxlan0": (1, None), "gre0": (2, None), "vm1": (5, "p1")})
    fresh.handle_miss(5, eth(M1, BCAST, 0x806))  # takes the entry over...
    agents["h1"].store.close()  # ...so when the old session ends, it stays
    assert (M1, "p1") in [paths.parse_mac_entry(n) for n in api.list_state(paths.mac_table("b"))]
