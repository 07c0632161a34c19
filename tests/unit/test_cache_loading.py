"""How the agent's TopologyCache loads a large topology (issue 13): chains
and rules of ports read at their first use (then watched like the rest),
devices' chains with the devices, a port change scanning no other port, and
the synthetic scale topology (benchmarks.scale_topology) as the service
would have written it."""

from __future__ import annotations

from benchmarks import scale_topology as st
from midoflow import model
from midoflow.agent.cache import TopologyCache, host_tag
from midoflow.service import security as sec
from midoflow.sim.result import chain_tag
from midoflow.store import paths
from midoflow.store.base import Create, Delete, Update
from midoflow.store.memory import MemoryBackend, MemoryStore


def _world():
    backend = MemoryBackend()
    api = MemoryStore(backend)
    api.commit([
        Create(model.CHAINS, {"id": "rin", "rule_ids": ["r1"]}),
        Create(model.RULES, {"id": "r1", "chain_id": "rin", "action": "accept"}),
        Create(model.ROUTERS, {"id": "r", "port_ids": ["rp"], "inbound_filter_id": "rin"}),
        Create(model.CHAINS, {"id": "pin", "rule_ids": ["r2", "r3"]}),
        Create(model.RULES, {"id": "r2", "chain_id": "pin", "action": "continue"}),
        Create(model.RULES, {"id": "r3", "chain_id": "pin", "action": "drop"}),
        Create(model.BRIDGES, {"id": "b", "port_ids": ["p1", "bp"]}),
        Create(model.PORTS, {"id": "p1", "device_id": "b", "tunnel_key": 1,
                             "inbound_filter_id": "pin"}),
        Create(model.PORTS, {"id": "rp", "device_id": "r", "tunnel_key": 2,
                             "device_type": "router", "type": "interior", "peer_id": "bp",
                             "mac": "02:00:00:00:00:aa", "ip_address": "10.0.0.1",
                             "prefix_len": 24}),
        Create(model.PORTS, {"id": "bp", "device_id": "b", "tunnel_key": 3,
                             "type": "interior", "peer_id": "rp"}),
    ])
    tags: list[set[str]] = []
    cache = TopologyCache(MemoryStore(backend), tags.append)
    cache.start()
    return api, cache, tags


def test_port_chains_are_read_at_first_use_and_then_followed():
    api, cache, tags = _world()
    assert "pin" not in cache.chains and "r2" not in cache.rules  # not loaded at start
    assert cache.chains["rin"].rule_ids == ("r1",) and "r1" in cache.rules  # a device's
    tags.clear()
    assert cache.chain("pin").rule_ids == ("r2", "r3")
    assert set(cache.rules) >= {"r2", "r3"}  # its rules came with it
    assert tags == []  # a first read invalidates nothing
    api.commit([Update(model.RULES, {"id": "r3", "chain_id": "pin", "action": "accept"})])
    assert cache.rule("r3").action == "accept" and chain_tag("pin") in set().union(*tags)
    api.commit([Delete(model.CHAINS, "pin")])
    assert "pin" not in cache.chains and cache.chain("pin") is None
    api.commit([Create(model.CHAINS, {"id": "pin", "rule_ids": ["r3"]})])  # made again
    assert cache.chain("pin").rule_ids == ("r3",)


def test_router_mac_index_follows_port_changes_without_a_rebuild():
    api, cache, _ = _world()
    assert cache.router_mac_port("b", "02:00:00:00:00:aa") == "bp"
    rp = {"id": "rp", "device_id": "r", "tunnel_key": 2, "device_type": "router",
          "type": "interior", "peer_id": "bp", "mac": "02:00:00:00:00:bb",
          "ip_address": "10.0.0.1", "prefix_len": 24}
    api.commit([Update(model.PORTS, rp)])
    assert cache.router_macs == {("b", "02:00:00:00:00:bb"): "bp"}
    api.commit([Update(model.PORTS, {"id": "bp", "device_id": "b", "tunnel_key": 3,
                                     "type": "interior"})])  # unlinked
    assert cache.router_macs == {}
    before = dict(cache.router_macs)
    cache._index_router_macs()  # the full rebuild agrees
    assert cache.router_macs == before


def test_a_batch_recomputes_bindings_once():
    backend = MemoryBackend()
    api = MemoryStore(backend)
    api.commit([Create(model.PORTS, {"id": f"p{i}", "device_id": "b", "tunnel_key": i + 1})
                for i in range(50)])
    calls = []
    cache = TopologyCache(MemoryStore(backend), lambda tags: None, calls.append)
    cache.start()
    assert len(cache.ports) == 50 and len(calls) == 1
    api.commit([Update(model.PORTS, {"id": "p3", "device_id": "b", "tunnel_key": 4,
                                     "name": "x"})])
    assert calls[-1] == "p3" and len(calls) == 2


def test_scale_topology_is_what_the_service_would_write():
    scale = st.Scale(hosts=5, ports=200, routers=10, security_groups=20)
    m = st.build(scale, "local")
    assert len(m[model.HOSTS]) == 5 and len(m[model.ROUTERS]) == 10
    vms = [p for p in m[model.PORTS].values() if p["type"] == model.PORT_EXTERIOR]
    local = sum(p["host_id"] == "local" for p in vms)
    assert len(vms) == 200 and 1 <= local <= 3  # about 1%
    # the derived chains, rules and address groups are exactly the expected ones
    derived = {k: {oid: d for oid, d in m[k].items()}
               for k in (model.CHAINS, model.RULES, model.IP_ADDR_GROUPS)}
    expected = sec.expected(m)
    assert {(k, oid) for k, objs in derived.items() for oid in objs} == set(expected)
    for (kind, oid), data in expected.items():
        assert m[kind][oid] == data
    assert not sec.port_filter_errors(m)
    keys = [p["tunnel_key"] for p in m[model.PORTS].values()]
    assert len(set(keys)) == len(keys)


def test_a_large_load_runs_without_the_cyclic_collector_then_freezes_what_it_made(
        monkeypatch):
    import gc

    from midoflow.agent import cache as cache_mod

    seen = []
    backend = MemoryBackend()
    MemoryStore(backend).commit([Create(model.BRIDGES, {"id": "b", "port_ids": []})])
    store = MemoryStore(backend)
    real = store.watch_kind
    monkeypatch.setattr(store, "watch_kind",
                        lambda kind, cb: (seen.append(gc.isenabled()), real(kind, cb)))
    assert gc.isenabled() and gc.get_freeze_count() == 0
    monkeypatch.setattr(cache_mod, "FREEZE_AFTER", 10**9)  # a small load: nothing frozen
    TopologyCache(store, lambda _t: None).start()
    assert seen and not any(seen) and gc.isenabled() and gc.get_freeze_count() == 0
    monkeypatch.setattr(cache_mod, "FREEZE_AFTER", -1)  # every load counts as large
    try:
        c = TopologyCache(store, lambda _t: None)
        c.start()
        assert gc.isenabled() and gc.get_freeze_count() > 0 and "b" in c.bridges
    finally:
        gc.unfreeze()
    gc.disable()  # a process that runs without the collector keeps it so
    try:
        TopologyCache(store, lambda _t: None).start()
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_who_enforces_a_ports_security_groups_follows_its_hosts_state():
    """sg_in_ovs: our ports by our configuration; another host's as its
    published state says; a host that says nothing, or a port bound nowhere:
    simulated (twice is safe, never is not). A host changing its mind
    invalidates the decisions sent to it (its host tag)."""
    api, cache, tags = _world()
    cache.sg_conntrack, cache.local_host = True, "h1"
    api.put_state(paths.host_alive("h2"), {"host_id": "h2"}, ephemeral=True)
    assert not any(host_tag("h2") in t for t in tags)  # its first state: nothing to redo
    api.put_state(paths.port_active("p1"), {"host_id": "h2"}, ephemeral=True)
    assert cache.port_hosts.get("p1") == "h2"
    assert cache.sg_in_ovs("p1") is False  # h2 does not say it enforces them
    tags.clear()
    api.put_state(paths.host_alive("h2"), {"host_id": "h2", "sg_conntrack": True},
                  ephemeral=True)
    assert cache.sg_in_ovs("p1") is True and host_tag("h2") in set().union(*tags)
    tags.clear()
    api.put_state(paths.host_alive("h2"), {"host_id": "h2", "sg_conntrack": True,
                                           "bound_ports": ["p1"]}, ephemeral=True)
    assert not any(host_tag("h2") in t for t in tags)  # same choice: nothing stale
    assert cache.sg_in_ovs("rp") is False  # bound nowhere
    cache.is_local = lambda pid: pid == "rp"
    assert cache.sg_in_ovs("rp") is True  # ours: our configuration
    cache.sg_conntrack = False
    assert cache.sg_in_ovs("rp") is False
    tags.clear()
    api.put_state(paths.host_alive("h3"), {"host_id": "h3", "sg_conntrack": True},
                  ephemeral=True)
    assert not any(host_tag("h3") in t for t in tags)  # a host's first state: nothing stale
