"""Fast restart: kept flows judged again after a restart (agent/restart.py)
and adopted into the flow index under their own cookies (agent/flows.py)."""

from __future__ import annotations

import time

import pytest

from midoflow.agent.config import AgentConfig
from midoflow.agent.core import AgentCore
from midoflow.agent.flows import FlowIndex
from midoflow.agent.restart import TCP_ACK, KeptFlow, Wanted, judge, orphan_ports, packet_of
from midoflow.apps.pipeline import PRIO_SIMULATED, match_kwargs
from midoflow.store.base import Create, Delete
from midoflow.store.memory import MemoryBackend, MemoryStore

BCAST = "ff:ff:ff:ff:ff:ff"
M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
IFACES = {"h1": {"vxlan0": (1, None), "vm1": (5, "p1")},
          "h2": {"vxlan0": (1, None), "vm2": (5, "p2")}}


# ---- the flow index ------------------------------------------------------

def test_adopted_cookies_are_indexed_and_never_handed_out_again():
    idx = FlowIndex(first=1)
    kept = FlowIndex.COOKIE_BASE | 2
    idx.reserve([FlowIndex.COOKIE_BASE | 1, kept])
    assert idx.add({"x"}) == FlowIndex.COOKIE_BASE | 3  # 1 and 2 are OVS's
    idx.adopt(kept, {"port:p1", "bridge:b"}, owner="p1")
    assert idx.count("p1") == 1 and kept not in idx.reserved
    idx.remove(FlowIndex.COOKIE_BASE | 1)  # OVS removed it (idle) before it was judged
    assert idx.reserved == set()
    idx._next = 1  # wrapped around: still no clash with the adopted cookie
    assert idx.add(set()) == FlowIndex.COOKIE_BASE | 1
    assert idx.add(set()) == FlowIndex.COOKIE_BASE | 4
    assert idx.invalidate({"bridge:b"}) == {kept} and idx.count("p1") == 0


def test_adopt_refuses_a_cookie_that_is_no_simulated_flows():
    with pytest.raises(ValueError, match="not a simulated flow"):
        FlowIndex().adopt(0x5702 << 48, set())


def test_an_index_numbers_its_cookies_from_the_microsecond_it_starts():
    # An agent takes far fewer than a million cookies a second, so a restarted
    # agent's cookies start past every cookie its previous run handed out.
    t0 = time.time_ns() // 1000
    cookie = FlowIndex().add(set())
    t1 = time.time_ns() // 1000
    assert cookie & FlowIndex.COOKIE_MASK == FlowIndex.COOKIE_BASE
    assert t0 <= cookie & ~FlowIndex.COOKIE_MASK <= t1


# ---- a kept flow's match as a packet -----------------------------------------

def test_an_exact_tcp_match_becomes_a_mid_connection_segment():
    port, f = packet_of({"in_port": 5, "eth_type": 0x800, "ipv4_src": "10.0.0.1",
                         "ipv4_dst": "10.0.0.2", "ip_proto": 6, "tcp_src": 3333,
                         "tcp_dst": 80})
    assert port == 5
    assert f["tcp_flags"] == TCP_ACK and (f["tp_src"], f["tp_dst"]) == (3333, 80)
    assert (f["ip_src"], f["ip_dst"], f["ip_tos"]) == ("10.0.0.1", "10.0.0.2", 0)


def test_unmatched_fields_get_values_a_decision_would_have_to_match():
    _, f = packet_of({"in_port": 5, "eth_src": M1, "eth_dst": M2})
    assert f["ip_src"] == f["ip_dst"] == "0.0.0.0" and f["ip_proto"] == 0
    _, f = packet_of({"in_port": 5, "eth_type": 0x806, "arp_tpa": "10.0.0.9"})
    assert (f["arp_op"], f["arp_tpa"], f["arp_spa"]) == (1, "10.0.0.9", "0.0.0.0")


@pytest.mark.parametrize("match", [
    {"eth_src": M1},  # no in_port
    {"in_port": 5, "ipv4_dst": ("10.0.0.0", "255.0.0.0")},  # masked
    {"in_port": 5, "tunnel_id": 7},  # not a simulated flow's field
    {"in_port": 5, "eth_type": 0x86DD, "ip_proto": 6},
])
def test_matches_no_simulated_flow_has_are_unreadable(match):
    assert packet_of(match) is None


# ---- judging kept flows against a restarted agent ----------------------------

@pytest.fixture
def store():
    backend = MemoryBackend()
    MemoryStore(backend).commit([
        Create("hosts", {"id": "h1", "name": "h1"}),
        Create("hosts", {"id": "h2", "name": "h2"}),
        Create("tunnel_zones", {"id": "z", "name": "z", "type": "vxlan",
                                "members": [{"host_id": "h1", "ip": "10.0.0.1"},
                                            {"host_id": "h2", "ip": "10.0.0.2"}]}),
        Create("bridges", {"id": "b", "name": "b", "port_ids": ["p1", "p2"]}),
        Create("ports", {"id": "p1", "device_id": "b", "tunnel_key": 11}),
        Create("ports", {"id": "p2", "device_id": "b", "tunnel_key": 12}),
    ])
    return backend


def agent(backend, host: str) -> AgentCore:
    a = AgentCore(AgentConfig(host_id=host, zookeeper="memory", ovsdb="unix:/x",
                              tunnel_ip={"h1": "10.0.0.1", "h2": "10.0.0.2"}[host]),
                  MemoryStore(backend))
    a.start()
    a.set_interfaces(IFACES[host])
    return a


def decide(core: AgentCore):
    """The restarted core's verdict, committing nothing."""
    return core.dry_decision


def build(decision, ofport: int) -> Wanted:
    """The flow the agent would install, in a comparable form."""
    return Wanted(match_kwargs(decision.match_fields, decision.packet, ofport),
                  PRIO_SIMULATED, (tuple(decision.actions), decision.rewrites))


def installed(decision, ofport: int) -> KeptFlow:
    w = build(decision, ofport)
    return KeptFlow(decision.cookie, w.match, w.priority, w.instructions)


@pytest.fixture
def kept(store):
    """h1's agent installed an L2 flow M1 -> M2 (M2 learned at h2), then died."""
    agent(store, "h2").handle_miss(5, {"eth_src": M2, "eth_dst": BCAST, "eth_type": 0x806})
    old = agent(store, "h1")
    d = old.handle_miss(5, {"eth_src": M1, "eth_dst": M2, "eth_type": 0x800,
                            "ip_src": "10.1.0.1", "ip_dst": "10.1.0.2", "ip_proto": 17,
                            "tp_src": 1000, "tp_dst": 2000})
    assert d.install and d.actions, d
    return installed(d, 5), d


def test_a_flow_that_is_still_right_is_kept_with_its_tags_and_owner(store, kept):
    flow, old = kept
    new = agent(store, "h1")
    v = judge([flow], decide(new), build)
    assert v.stale == [] and [f for f, _ in v.keep] == [flow]
    (_, d), = v.keep
    assert d.tags == old.tags and d.actions == old.actions
    new.flows.adopt(flow.cookie, d.tags, owner="p1")
    assert new.flows.count("p1") >= 1
    assert flow.cookie in new.flows.invalidate(old.tags)


def test_a_flow_the_topology_no_longer_gives_is_stale(store, kept):
    flow, _ = kept
    MemoryStore(store).commit([Delete("ports", "p2")])  # while h1's agent was down
    v = judge([flow], decide(agent(store, "h1")), build)
    assert v.keep == [] and v.stale == [flow]
    assert v.why[flow.cookie] in ("differs", "no decision", "not installable")


def test_other_instructions_priority_or_an_unbound_port_make_a_flow_stale(store, kept):
    flow, _ = kept
    new = agent(store, "h1")
    other = KeptFlow(flow.cookie + 1, flow.match, flow.priority, ((), ()))
    low = KeptFlow(flow.cookie + 2, flow.match, flow.priority - 1, flow.instructions)
    unbound = KeptFlow(flow.cookie + 3, {**flow.match, "in_port": 9}, flow.priority,
                       flow.instructions)
    masked = KeptFlow(flow.cookie + 4, {**flow.match, "eth_dst": (M2, BCAST)},
                      flow.priority, flow.instructions)
    v = judge([other, low, unbound, masked, flow], decide(new), build)
    assert [f for f, _ in v.keep] == [flow]
    assert v.why == {other.cookie: "differs", low.cookie: "differs",
                     unbound.cookie: "no decision", masked.cookie: "unreadable match"}


def test_a_decision_that_raises_makes_the_flow_stale(kept):
    flow, _ = kept

    def broken(_ofport, _fields):
        raise RuntimeError("simulation bug")
    assert judge([flow], broken, build).why == {flow.cookie: "no decision"}


def test_ports_classified_in_ovs_but_bound_no_more_are_orphans():
    goto = (("goto", 1),)
    flows = [({"in_port": 5}, goto), ({"in_port": 6}, goto), ({"in_port": 7}, goto),
             ({"in_port": 1, "tunnel_id": 11}, (("actions", 4, (("output", 5, 0),)),)),
             ({"in_port": 1, "tunnel_id": 12}, (("actions", 4, (("output", 6, 0),)),)),
             ({"in_port": 5, "vlan_vid": (0x1000, 0x1000)}, ()),  # a tagged-frame drop
             ({"in_port": 9}, (("actions", 4, (("output", 1, 0),)),))]  # e.g. a BGP link
    assert orphan_ports(flows, bound=[5], simulated_table=1) == {6: 12, 7: None}
    assert orphan_ports(flows, bound=[5, 6, 7], simulated_table=1) == {}
