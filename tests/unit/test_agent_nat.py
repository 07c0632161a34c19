"""Two agents, a provider router with its uplink on h1 and a VM on h2: SNAT
is decided at the VM's host with a port from a block it leased, the binding
is pushed to the uplink's host before the packet, and the reply arriving
there is translated back; the lease is given back when the binding expires."""

from __future__ import annotations

import time

import pytest

from midoflow.agent.config import AgentConfig
from midoflow.agent.core import AgentCore, Tunnel
from midoflow.agent.natlease import lease_path
from midoflow.nat import statewire
from midoflow.store import paths
from midoflow.store.base import Create
from midoflow.store.memory import MemoryBackend, MemoryStore

VM, RMAC, UPMAC, GW = "02:00:00:00:00:01", "02:aa:00:00:00:01", "02:aa:00:00:00:09", \
    "02:ee:00:00:00:01"
PUBLIC = "203.0.113.10"


def cfg(host):
    return AgentConfig(host_id=host, zookeeper="memory", ovsdb="unix:/x",
                       tunnel_ip={"h1": "10.0.0.1", "h2": "10.0.0.2"}[host])


@pytest.fixture
def world():
    backend = MemoryBackend()
    api = MemoryStore(backend)
    api.commit([
        Create("hosts", {"id": "h1", "name": "h1"}),
        Create("hosts", {"id": "h2", "name": "h2"}),
        Create("tunnel_zones", {"id": "z", "name": "z", "type": "vxlan",
                                "members": [{"host_id": "h1", "ip": "10.0.0.1"},
                                            {"host_id": "h2", "ip": "10.0.0.2"}]}),
        Create("chains", {"id": "post", "rule_ids": ["snat"]}),
        Create("chains", {"id": "pre", "rule_ids": ["rev"]}),
        Create("rules", {"id": "snat", "chain_id": "post", "action": "snat",
                         "out_ports": ["up"], "nat_targets": [
                             {"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024,
                              "port_to": 65535}]}),
        Create("rules", {"id": "rev", "chain_id": "pre", "action": "rev_snat"}),
        Create("bridges", {"id": "b", "port_ids": ["vm", "br"]}),
        Create("routers", {"id": "r", "port_ids": ["rb", "up"], "inbound_filter_id": "pre",
                           "outbound_filter_id": "post"}),
        Create("ports", {"id": "vm", "device_id": "b", "tunnel_key": 11}),
        Create("ports", {"id": "br", "device_id": "b", "tunnel_key": 12, "type": "interior",
                         "peer_id": "rb"}),
        Create("ports", {"id": "rb", "device_id": "r", "device_type": "router",
                         "tunnel_key": 13, "type": "interior", "peer_id": "br", "mac": RMAC,
                         "ip_address": "192.168.1.1", "prefix_len": 24}),
        Create("ports", {"id": "up", "device_id": "r", "device_type": "router",
                         "tunnel_key": 14, "mac": UPMAC, "ip_address": "198.51.100.1",
                         "prefix_len": 24}),
        Create("routes", {"id": "default", "router_id": "r", "dst_cidr": "0.0.0.0/0",
                          "next_hop_port": "up", "next_hop_gateway": "198.51.100.254"}),
        Create("routes", {"id": "nat-ip", "router_id": "r", "dst_cidr": f"{PUBLIC}/32",
                          "type": "blackhole"}),
    ])
    api.put_state(paths.arp_entry("r", "198.51.100.254", GW, time.time()), {})
    api.put_state(paths.arp_entry("r", "192.168.1.10", VM, time.time()), {})
    agents = {}
    for h in ("h1", "h2"):
        a = AgentCore(cfg(h), MemoryStore(backend))
        a.start()
        agents[h] = a
    agents["h1"].set_interfaces({"vxlan0": (1, None), "gre0": (2, None), "uplink": (7, "up")})
    agents["h2"].set_interfaces({"vxlan0": (1, None), "gre0": (2, None), "vm1": (5, "vm")})
    return api, agents


def out_fields(sport):
    return {"eth_src": VM, "eth_dst": RMAC, "eth_type": 0x800, "ip_src": "192.168.1.10",
            "ip_dst": "8.8.8.8", "ip_proto": 6, "tp_src": sport, "tp_dst": 80}


def test_snat_at_the_vm_host_reply_translated_back_at_the_uplink_host(world):
    api, agents = world
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


def test_many_connections_share_the_address_with_distinct_ports(world):
    _, agents = world
    ports = {dict((r.field, r.value) for r in agents["h2"].handle_miss(
        5, out_fields(s)).rewrites)["tp_src"] for s in range(1000, 1100)}
    assert len(ports) == 100


def test_bindings_expire_with_their_flows_and_give_the_ports_back(world):
    api, agents = world
    h2 = agents["h2"]
    d = h2.handle_miss(5, out_fields(40000))
    port = {r.field: r.value for r in d.rewrites}["tp_src"]
    later = time.time() + 10 ** 6
    h2.clock = lambda: later
    assert h2.expire_state() == 0  # its flow is installed: kept
    h2.flow_removed(d.cookie)
    h2.clock = lambda: later + 61
    assert h2.expire_state() >= 1
    assert api.get_state(lease_path(PUBLIC, 6, port // 64)) is None
    assert len(h2.nat) == 0


def test_a_reply_that_beats_its_state_is_decided_again_when_the_state_arrives(world):
    """With ECMP a reply may reach the other gateway before the binding pushed
    there (another path through its OVS): the drop decided without it must
    not outlive the binding's arrival (its flow would keep the connection
    dead for as long as the peer retransmits)."""
    _, agents = world
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
