"""AgentCore.dry_decision: the Decision handle_miss would return for a
packet, with nothing committed (a restarted agent judges the flows OVS kept
with it)."""

from __future__ import annotations

import copy

from midoflow.agent.core import Tunnel
from midoflow.nat.bindings import SNAT
from midoflow.store import paths
from tests.unit.test_agent_conntrack import OUT, REPLY
from tests.unit.test_agent_nat import out_fields


def snapshot(a, api, bridge="b"):
    """Everything of the core that a commit would change, and the store's
    learned MACs and NAT leases."""
    return copy.deepcopy((
        a.stats, a.flows.tags_of, a.installed.uses, sorted(a.ct.keys()), a.nat.by_fwd,
        a.state.tables.nat_until, a.allocator.leased, a.state.unsaved, a.learning.writing,
        a.port_macs, a.held, sorted(api.list_state(paths.mac_table(bridge))),
    ))


def same(dry, d):
    assert dry is not None and d is not None
    assert (dry.actions, dry.rewrites, dry.match_fields, dry.tags, dry.install, dry.uses) == (
        d.actions, d.rewrites, d.match_fields, d.tags, d.install, d.uses)
    assert dry.cookie == 0 and dry.pushes == [] and dry.emits == []


def test_a_new_snat_connection_gets_the_port_handle_miss_then_takes(snat_world):
    api, agents = snat_world
    h2 = agents["h2"]
    h2.handle_miss(5, out_fields(40000))  # leases a block
    before = snapshot(h2, api)
    dry = h2.dry_decision(5, out_fields(40001))
    assert snapshot(h2, api) == before  # nothing taken, recorded, pushed or counted
    d = h2.handle_miss(5, out_fields(40001))
    same(dry, d)
    assert d.cookie and d.pushes and dry.actions == [Tunnel(14, "10.0.0.1", 1)]
    (b,) = d.result.nat
    assert h2.nat.forward(SNAT, b.fwd) == b and ("nat", b) in dry.uses


def test_an_established_connection_is_judged_by_its_binding(snat_world):
    api, agents = snat_world
    h2 = agents["h2"]
    first = h2.handle_miss(5, out_fields(40000))
    before = snapshot(h2, api)
    dry = h2.dry_decision(5, out_fields(40000))
    assert snapshot(h2, api) == before
    assert dry.rewrites == first.rewrites and dry.actions == first.actions
    assert dry.result.nat == ()  # no new binding: the recorded one was found


def test_without_a_leased_block_nothing_is_leased_and_the_packet_would_drop(snat_world):
    api, agents = snat_world
    h2 = agents["h2"]
    before = snapshot(h2, api)
    dry = h2.dry_decision(5, out_fields(40000))
    assert dry.actions == [] and not dry.install and dry.result.nat_wants
    assert snapshot(h2, api) == before and h2.allocator.leased == {}


def test_conntrack_and_learning_are_not_committed(ct_world):
    agents, state = ct_world
    h2 = agents["h2"]
    api = h2.store
    new_mac = {**OUT, "eth_src": "02:00:00:00:00:77"}
    before = snapshot(h2, api)
    dry = h2.dry_decision(5, new_mac)
    assert snapshot(h2, api) == before  # no claim, no MAC written, no key tracked
    assert dry.result.conntrack and dry.result.learned
    assert state.load("p2") == []
    same(dry, h2.handle_miss(5, new_mac))
    assert len(h2.ct) == 1  # handle_miss did track it


def test_the_reply_needs_the_state_it_finds(ct_world):
    agents, _ = ct_world
    h1, h2 = agents["h1"], agents["h2"]
    assert h1.dry_decision(5, REPLY).actions == []  # no state yet: dropped
    d = h2.handle_miss(5, OUT)
    h1.receive_state(d.pushes[0].frame)
    dry = h1.dry_decision(5, REPLY)
    same(dry, h1.handle_miss(5, REPLY))
    assert dry.actions == [Tunnel(12, "10.0.0.2", 1)]


def test_not_a_local_port_or_still_recovering(snat_world):
    _, agents = snat_world
    h2 = agents["h2"]
    assert h2.dry_decision(99, out_fields(1)) is None
    h2.recovering.add("vm")
    assert h2.dry_decision(5, out_fields(1)) is None


def test_an_adopted_flow_keeps_its_state_alive(snat_world):
    _, agents = snat_world
    h2 = agents["h2"]
    d = h2.handle_miss(5, out_fields(40000))
    h2.forget_flows()  # a restart: the index is empty, OVS kept the flow
    dry = h2.dry_decision(5, out_fields(40000))
    h2.adopt_flow(d.cookie, dry)
    assert h2.flows.tags_of[d.cookie] == dry.tags and h2.flows.count("vm") == 1
    h2.clock.advance(1e12)  # long idle: only the adopted flow keeps the binding
    h2.expire_state()
    assert len(h2.nat) == 1


def test_a_port_taken_between_simulation_and_commit_is_simulated_again(snat_world):
    _, agents = snat_world
    h2 = agents["h2"]
    h2.handle_miss(5, out_fields(40000))  # leases a block
    commit, raced = h2.state.commit_nat, []

    def racing_commit(result):  # another packet takes the proposed port first
        if not raced:
            ip, port, proto = result.nat_allocs[0]
            raced.append(port)
            assert h2.allocator.take(ip, port, proto)
        return commit(result)

    h2.state.commit_nat = racing_commit
    d = h2.handle_miss(5, out_fields(40001))
    (b,) = d.result.nat
    assert b.xlated[1] != raced[0] and h2.stats["nat_retaken"] == 1
    assert h2.nat.forward(SNAT, b.fwd) == b
    assert {r.field: r.value for r in d.rewrites}["tp_src"] == b.xlated[1]
