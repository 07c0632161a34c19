"""Proactive flows (midoflow.agent.proactive): the stateless flows of the
ports bound here, simulated before their first packet from what the cache
knows, installed only when they depend on nothing the foreseen packet did
not know and track nothing; invalidated like any flow and found again."""

from __future__ import annotations

import dataclasses

from midoflow.agent import restart
from midoflow.agent.proactive import (
    KNOWN_L2,
    KNOWN_L3,
    RETRY_MAX_SECONDS,
    RETRY_SECONDS,
    Proactive,
    is_proactive,
)
from midoflow.apps import pipeline as pl
from midoflow.store.base import Delete, Update
from tests.unit import worlds
from tests.unit.test_core_through_table import (
    CONTROLLER,
    DP,
    IDLE,
    A,
    B,
    assert_as_decided,
    build_campus,
    frame,
    tcp_from,
)

VM2_IP = "192.168.2.20"


def _routed(routed_world, limit: int = 16):
    api, agents, _replayed, invalidated = routed_world
    worlds.learn_macs(api, "b1", {worlds.VM1: "p1"})
    worlds.learn_arp(api, "r", {VM2_IP: worlds.VM2})
    return api, agents["h1"], Proactive(agents["h1"], limit), invalidated, agents["h1"].clock


def test_a_routed_stateless_path_is_installed_before_its_first_packet(routed_world):
    _api, core, pro, _inv, _clock = _routed(routed_world)
    (planned,) = pro.plan()
    ofport, d = planned
    assert ofport == 5 and d.install and not d.uses and is_proactive(d.cookie)
    assert d.packet.ip_dst == VM2_IP and d.match_fields <= KNOWN_L3
    assert d.cookie in core.flows.tags_of and core.installed.count("p1") == 1
    assert pro.plan() == []  # installed: nothing more to do


def test_an_invalidated_proactive_flow_is_found_again(routed_world):
    _api, core, pro, invalidated, _clock = _routed(routed_world)
    ((_, d),) = pro.plan()
    core._invalidate_tags(set(d.tags))
    assert d.cookie in invalidated and d.cookie not in core.flows.tags_of
    ((_, again),) = pro.plan()
    assert again.cookie != d.cookie and again.match_fields == d.match_fields


def test_nothing_is_foreseen_when_off_or_without_the_ports_own_mac(routed_world):
    api, agents, _r, _i = routed_world
    worlds.learn_arp(api, "r", {VM2_IP: worlds.VM2})
    assert Proactive(agents["h1"], 16).plan() == []  # p1's MAC not learned yet
    _api, _core, _pro, _inv, _clock = _routed(routed_world, limit=0)
    assert _pro.plan() == []


def test_stateful_or_port_dependent_paths_stay_reactive_and_are_retried_later():
    campus = build_campus()
    core = campus.h1.core
    clock = core.clock
    pro = Proactive(core, 64)
    planned = pro.plan()
    assert planned and all(not d.uses and d.match_fields <= KNOWN_L3 for _o, d in planned)
    assert all(d.match_fields <= KNOWN_L2 for _o, d in planned)  # the campus router reads ports
    refused = set(pro.refused)
    assert refused and pro.plan() == []  # not simulated again before RETRY_SECONDS
    clock.advance(RETRY_SECONDS + 1)
    assert pro.plan() == [] and set(pro.refused) == refused  # simulated again, same verdict


def test_the_installed_flow_carries_the_real_packet_as_the_simulation_decides():
    campus = build_campus()
    h1 = campus.h1
    pro = Proactive(h1.core, 64)
    planned = pro.plan()
    to_b = [(o, d) for o, d in planned if o == A.ofport and d.packet.eth_dst == B.mac]
    assert to_b
    for ofport, d in planned:
        flow = pl.decision_flow(DP, d, ofport, IDLE, pl.actions_for(DP, d))
        h1.core.flow_replaced(tuple(sorted(flow.match.items())), d.cookie)
        h1.table.apply([flow])
    data = frame(tcp_from(A, B.ip, 1000, 80, to_mac=B.mac))
    assert CONTROLLER not in h1.lookup(A.ofport, data).ports  # no packet-in
    assert_as_decided(h1, A.ofport, data, to_b[0][1])
    # the destination's port goes: its flow with it, and its MAC (forgotten
    # with the port) is foreseen no more
    bridge, v = campus.api.get("bridges", "b1")
    bridge["port_ids"] = [p for p in bridge["port_ids"] if p != "p2"]
    campus.api.commit([Delete("ports", "p2"), Update("bridges", bridge, v)])
    assert to_b[0][1].cookie not in h1.table.cookies()
    assert h1.lookup(A.ofport, data).ports == [CONTROLLER]
    assert B.mac not in {mac for (_bridge, mac) in h1.core.cache.macs}
    assert not [d for _o, d in pro.plan() if d.packet.eth_dst == B.mac]
    assert not [k for k in pro.cookies if k[1][0] == "l2" and k[1][-1] == B.mac]


def _many_resolved(routed_world, limit: int, n: int = 10):
    api, core, pro, _inv, _clock = _routed(routed_world, limit)
    macs = {f"192.168.2.{100 + i}": f"02:00:00:00:02:{100 + i:02x}" for i in range(n)}
    worlds.learn_macs(api, "b2", {m: "p2" for m in macs.values()})
    worlds.learn_arp(api, "r", macs)
    return core, pro


def test_a_port_gets_no_more_than_its_limit_nor_half_its_flow_limit(routed_world):
    core, pro = _many_resolved(routed_world, limit=4)
    planned = pro.plan()
    assert len(planned) == 4 and core.installed.count("p1") == 4
    assert pro.plan() == []


def test_proactive_flows_take_at_most_half_the_ports_flow_limit(routed_world):
    core, pro = _many_resolved(routed_world, limit=16)
    core.cfg = dataclasses.replace(core.cfg, max_flows_per_port=6)
    assert len(pro.plan()) == 3 and core.installed.count("p1") == 3  # the rest: its packets
    assert pro.plan() == []


def test_a_plan_over_its_budget_goes_on_in_the_next_calls(routed_world):
    core, pro = _many_resolved(routed_world, limit=16)
    parts = []
    while True:
        parts.append(pro.plan(budget=3))
        if not pro.more:
            break
    assert [len(p) for p in parts] == [3, 3, 3, 2]  # VM2 and the 10 others
    assert core.installed.count("p1") == 11
    assert pro.plan() == [] and not pro.more


def test_a_path_refused_again_waits_twice_as_long_up_to_the_maximum():
    campus = build_campus()
    core = campus.h1.core
    pro = Proactive(core, 64)
    pro.plan()
    k = next(iter(pro.refused))
    delays = []
    for _ in range(8):
        when, delay = pro.refused[k]
        delays.append(delay)
        core.clock.advance(when - core.clock.mono() + 0.1)
        pro.plan()
    assert delays[:3] == [RETRY_SECONDS, 2 * RETRY_SECONDS, 4 * RETRY_SECONDS]
    assert max(delays) == RETRY_MAX_SECONDS == delays[-1]


def test_a_proactive_flow_kept_across_a_restart_is_adopted_not_made_again(routed_world):
    _api, core, pro, _inv, _clock = _routed(routed_world)
    ((ofport, d),) = pro.plan()
    flow = pl.decision_flow(DP, d, ofport, IDLE, pl.actions_for(DP, d))
    core.forget_flows()  # the restarted agent: nothing indexed, a new Proactive
    again = Proactive(core, 16)
    port, fields = restart.packet_of(dict(flow.match.items()))
    judged = core.dry_decision(port, fields)
    assert judged.install and judged.match_fields == d.match_fields
    core.adopt_flow(d.cookie, judged)
    again.kept(d.cookie, judged)
    assert again.plan() == [] and core.installed.count("p1") == 1
