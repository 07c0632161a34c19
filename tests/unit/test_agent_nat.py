"""Two agents, a provider router with its uplink on h1 and a VM on h2: SNAT
is decided at the VM's host with a port from a block it leased, the binding
is pushed to the uplink's host before the packet, and the reply arriving
there is translated back; the lease is given back when the binding expires."""

from __future__ import annotations

from midoflow.agent.core import Tunnel
from midoflow.agent.natlease import lease_path
from midoflow.nat import statewire
from midoflow.nat.conntrack import TCP_UNREPLIED_SECONDS
from tests.unit.worlds import GW, PUBLIC, RMAC, UPMAC, VM


def out_fields(sport):
    return {"eth_src": VM, "eth_dst": RMAC, "eth_type": 0x800, "ip_src": "192.168.1.10",
            "ip_dst": "8.8.8.8", "ip_proto": 6, "tp_src": sport, "tp_dst": 80}


def test_snat_at_the_vm_host_reply_translated_back_at_the_uplink_host(snat_world):
    api, agents = snat_world
    h1, h2 = agents["h1"], agents["h2"]
    d = h2.handle_miss(5, out_fields(40000))
    assert d.actions == [Tunnel(14, "10.0.0.1", 1)]  # straight to the uplink's host
    rw = {r.field: r.value for r in d.rewrites}
    assert rw["ip_src"] == PUBLIC and rw["eth_dst"] == GW
    port = rw["tp_src"]
    assert api.get_state(lease_path(PUBLIC, 6, port // 64)) == {"host_id": "h2"}
    (push,) = d.pushes
    _, nat, _ = statewire.decode_all(push.frame)
    assert [(b.kind, b.xlated) for b in nat] == [("snat", (PUBLIC, port))]
    # without the binding, the reply at h1 goes nowhere; with it, back to the VM
    reply = {"eth_src": GW, "eth_dst": UPMAC, "eth_type": 0x800, "ip_src": "8.8.8.8",
             "ip_dst": PUBLIC, "ip_proto": 6, "tp_src": 80, "tp_dst": port}
    assert h1.handle_miss(7, reply).actions == []
    h1.receive_state(push.frame)
    r = h1.handle_miss(7, reply)
    assert r.actions == [Tunnel(11, "10.0.0.2", 1)]
    rw = {w.field: w.value for w in r.rewrites}
    assert (rw["ip_dst"], rw["tp_dst"], rw["eth_dst"]) == ("192.168.1.10", 40000, VM)


def test_many_connections_share_the_address_with_distinct_ports(snat_world):
    _, agents = snat_world
    ports = {dict((r.field, r.value) for r in agents["h2"].handle_miss(
        5, out_fields(s)).rewrites)["tp_src"] for s in range(1000, 1100)}
    assert len(ports) == 100


def test_bindings_expire_with_their_flows_and_give_the_ports_back(snat_world):
    api, agents = snat_world
    h2 = agents["h2"]
    d = h2.handle_miss(5, out_fields(40000))
    port = {r.field: r.value for r in d.rewrites}["tp_src"]
    h2.clock.advance(10 ** 6)
    assert h2.expire_state() == 0  # its flow is installed: kept
    h2.flow_removed(d.cookie)
    # an unanswered TCP connection's binding lives as long as its connection
    h2.clock.advance(TCP_UNREPLIED_SECONDS - 1)
    h2.expire_state()
    assert len(h2.nat) == 1
    h2.clock.advance(2)
    assert h2.expire_state() >= 1
    assert api.get_state(lease_path(PUBLIC, 6, port // 64)) is None
    assert len(h2.nat) == 0


def test_a_reply_that_beats_its_state_is_decided_again_when_the_state_arrives(snat_world):
    """With ECMP a reply may reach the other gateway before the binding pushed
    there (another path through its OVS): the drop decided without it must
    not outlive the binding's arrival (its flow would keep the connection
    dead for as long as the peer retransmits)."""
    _, agents = snat_world
    h1, h2 = agents["h1"], agents["h2"]
    d = h2.handle_miss(5, out_fields(40001))
    port = {r.field: r.value for r in d.rewrites}["tp_src"]
    reply = {"eth_src": GW, "eth_dst": UPMAC, "eth_type": 0x800, "ip_src": "8.8.8.8",
             "ip_dst": PUBLIC, "ip_proto": 6, "tp_src": 80, "tp_dst": port}
    early = h1.handle_miss(7, reply)
    assert early.actions == [] and early.install  # a drop flow, for now
    gone: list[set[int]] = []
    h1.on_invalidate = gone.append
    h1.receive_state(d.pushes[0].frame)
    assert any(early.cookie in c for c in gone), "the early drop flow was not removed"
    assert h1.handle_miss(7, reply).actions == [Tunnel(11, "10.0.0.2", 1)]
