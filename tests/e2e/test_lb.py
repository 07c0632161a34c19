"""Issue 14's acceptance, end to end: layer-4 load balancing in the
simulation with real HTTP servers in member VMs on three hosts, driven
through the native REST API (``/v1/load_balancers`` ...), in the lab of
``topologies/lblab.py`` (one lab for the whole module: the tests put it
back as they need it with ``lab.reset()``).

Every request is a NEW TCP connection from a source port the lab never used
before, so no earlier connection's NAT binding or flow decides where it goes;
tests that say what must NOT arrive count the hits of each member exactly.
A change made through the API reaches each agent by a ZooKeeper watch, a few
milliseconds later: before measuring its effect, a test waits (``wait_effect``:
a handful of sequential requests) until the agents act on it.
The health tests come last: they add a monitor, and the very last one kills
the agent that runs the checks."""

from __future__ import annotations

import time

import pytest

from midoflow.model import HEALTH_ERROR, HEALTH_ONLINE
from tests.helpers import wait_until
from topologies.lblab import (
    CLIENTS,
    MEMBERS,
    TIMEOUT,
    LbLab,
    answered,
    member_hits,
    wait_effect,
)

pytestmark = pytest.mark.e2e_lb

ZK_SESSION = 4.0  # the agents' ZooKeeper session timeout (s): the checker's handover bound
NO_ANSWER = 10.0  # "requests get no answer within 10 s"
# The monitor: a member is ERROR within DELAY x RETRIES_DOWN + TIMEOUT of its
# server's death, ONLINE within DELAY x RETRIES + TIMEOUT of its return.
DELAY, HM_TIMEOUT, RETRIES, RETRIES_DOWN = 1, 1, 2, 2
SLACK = 2.0  # the store write and the poll that sees it, on a busy 2-core machine


@pytest.fixture(scope="module")
def lab(cloud_factory):
    mc = cloud_factory(3, agent_options={"zk_session_timeout": ZK_SESSION})
    lab = LbLab(mc, progress=print).build()
    try:
        lab.build_lb()
        wait_until(lambda: answered(lab.requests("c", 1, timeout=1, concurrency=1)) == 1, 30,
                   "the VIP to answer the client on the other subnet")
        yield lab
    finally:
        lab.stop()
        mc.stop()  # before the namespaces: no agent may make them again
        lab.remove_health_namespaces()


@pytest.fixture
def fresh(lab) -> LbLab:
    lab.reset()
    wait_effect(lab, lambda got: answered(got) == 6 and all(member_hits(got).values()),
                "round robin over the three members after the reset")
    return lab


def _one_member(got) -> bool:
    return answered(got) == sum(got.values()) and sum(1 for n in member_hits(got).values()
                                                      if n) == 1


def _all_answered(lab: LbLab, client: str, n: int) -> dict[str, int]:
    got = lab.requests(client, n)
    assert answered(got) == n, f"{n} requests from {client}: {dict(got)}"
    return member_hits(got)


def test_non_persistent_vip_spreads_400_requests_over_all_three(fresh):
    hits = _all_answered(fresh, "c", 400)
    print(f"round robin, 400 requests: {hits}")
    assert all(hits.values()), f"a member got nothing: {hits}"


def test_weights_1_3_9_rank_the_hits_like_the_weights(fresh):
    fresh.set("pools", fresh.pool_id, lb_method="WEIGHTED_ROUND_ROBIN")
    for m, w in zip(MEMBERS, (1, 3, 9), strict=True):
        fresh.set_member(m, weight=w)
    hits = _all_answered(fresh, "c", 400)
    print(f"weights 1/3/9, 400 requests: {hits}")
    assert hits["m1"] < hits["m2"] < hits["m3"], hits


def test_source_ip_persistence_keeps_all_400_on_one_member(fresh):
    fresh.set("vips", fresh.vip_id, session_persistence="SOURCE_IP")
    wait_effect(fresh, _one_member, "the persistence to take effect")
    hits = _all_answered(fresh, "c", 400)
    print(f"source-IP persistence, 400 requests: {hits}")
    assert sorted(hits.values()) == [0, 0, 400], hits


def test_disabling_the_sticky_member_moves_the_next_200_to_the_other_two(fresh):
    fresh.set("vips", fresh.vip_id, session_persistence="SOURCE_IP")
    wait_effect(fresh, _one_member, "the persistence to take effect")
    first = _all_answered(fresh, "c", 20)
    stuck = [m for m, n in first.items() if n]
    assert len(stuck) == 1, f"source-IP persistence, 20 requests: {first}"
    sticky = stuck[0]
    fresh.set_member(sticky, admin_state_up=False)
    wait_effect(fresh, lambda got: answered(got) == 6 and not got.get(sticky),
                f"{sticky} disabled to take effect")
    hits = _all_answered(fresh, "c", 200)
    print(f"{sticky} (sticky) disabled, 200 requests: {hits}")
    assert hits[sticky] == 0, hits


@pytest.mark.parametrize("client", CLIENTS)
def test_clients_on_another_subnet_the_members_subnet_and_the_internet(fresh, client):
    """c: routed; cm: hairpin (the members' own subnet: its source is SNATed
    to the VIP so the member answers the router); inet: the floating IP
    DNAT'd to the VIP on the router's uplink."""
    hits = _all_answered(fresh, client, 150)
    print(f"{client}: {hits}")
    assert all(hits.values()), f"{client}: a member got nothing: {hits}"


def _disable(lab: LbLab, what: str, up: bool) -> None:
    if what == "all members":
        for m in MEMBERS:
            lab.set_member(m, admin_state_up=up)
    else:
        kind, id_ = {"pool": ("pools", lab.pool_id), "listener": ("vips", lab.vip_id),
                     "load balancer": ("load_balancers", lab.lb_id)}[what]
        lab.set(kind, id_, admin_state_up=up)


@pytest.mark.parametrize("what", ["all members", "pool", "listener", "load balancer"])
def test_disabled_gets_no_answer_in_10_s_and_enabling_brings_it_back(fresh, what):
    _disable(fresh, what, up=False)
    wait_effect(fresh, lambda got: not answered(got), f"{what} disabled to take effect",
                n=1, request_timeout=1)
    got = fresh.requests("c", 3, timeout=NO_ANSWER, concurrency=3)
    assert got == {TIMEOUT: 3}, f"{what} disabled: {dict(got)} (expected 3 unanswered)"
    _disable(fresh, what, up=True)
    wait_until(lambda: answered(fresh.requests("c", 1, timeout=1, concurrency=1)) == 1, 10,
               f"an answer once {what} is enabled again")
    hits = _all_answered(fresh, "c", 60)
    assert all(hits.values()), f"{what} enabled again: {hits}"


# ---- health monitors (last: they leave a monitor behind) ------------------------------

def _status(lab: LbLab, member: str) -> str | None:
    entry = lab.member_health(member)
    return entry["status"] if entry else None


@pytest.fixture
def monitored(fresh) -> LbLab:
    fresh.monitor("HTTP", delay=DELAY, timeout=HM_TIMEOUT, max_retries=RETRIES,
                  max_retries_down=RETRIES_DOWN)
    wait_until(lambda: all(_status(fresh, m) == HEALTH_ONLINE for m in MEMBERS), 30,
               "every member ONLINE under the monitor")
    return fresh


def _kill_and_revive(lab: LbLab, victim: str) -> dict:
    """Kill ``victim``'s server: ERROR within the bound, no request reaches it;
    restart it: ONLINE within the bound, requests reach it again. The entry
    that said ERROR."""
    t0 = time.monotonic()
    lab.kill_server(victim)
    wait_until(lambda: _status(lab, victim) == HEALTH_ERROR, 30, f"{victim} marked ERROR")
    down = time.monotonic() - t0
    bound = DELAY * RETRIES_DOWN + HM_TIMEOUT + SLACK
    print(f"{victim}'s server killed: ERROR after {down:.2f} s (bound {bound:g} s)")
    assert down <= bound, f"{victim} marked ERROR after {down:.2f} s, over {bound:g} s"
    entry = lab.member_health(victim)
    wait_effect(lab, lambda got: answered(got) == 6 and not got.get(victim),
                f"{victim}'s ERROR to reach the agents")
    hits = _all_answered(lab, "c", 200)
    assert hits[victim] == 0, f"{victim} is down yet got requests: {hits}"
    t0 = time.monotonic()
    lab.start_server(victim)
    wait_until(lambda: _status(lab, victim) == HEALTH_ONLINE, 30, f"{victim} ONLINE again")
    up = time.monotonic() - t0
    bound = DELAY * RETRIES + HM_TIMEOUT + SLACK
    print(f"{victim}'s server back: ONLINE after {up:.2f} s (bound {bound:g} s)")
    assert up <= bound, f"{victim} ONLINE again after {up:.2f} s, over {bound:g} s"
    hits = _all_answered(lab, "c", 60)
    assert hits[victim] > 0, f"{victim} is ONLINE again yet got no request: {hits}"
    return entry


def test_health_monitor_takes_a_dead_member_out_and_brings_it_back(monitored):
    _kill_and_revive(monitored, "m2")


def test_killing_the_checking_agent_hands_the_checks_to_another(monitored):
    from midoflow.store import paths

    lab, mc = monitored, monitored.mc
    names = {hid: name for name, hid in mc.host_ids.items()}

    def leader() -> str | None:
        ident = mc.store.election_leader(paths.HEALTH_ELECTION)
        return names.get(ident, ident)

    old = wait_until(leader, 10, "a health-check leader")
    assert wait_until(lab.health_port_host, 10, "the health port bound") == old
    host = mc.cloud.host(old)
    t0 = time.monotonic()
    mc.kill_agent(host, sig=9)
    try:
        new = wait_until(lambda: (x := leader()) and x != old and x, ZK_SESSION + 10,
                         "another agent to win the health-check election")
        elected = time.monotonic() - t0
        wait_until(lambda: lab.health_port_host() == new, 20,
                   f"the health port bound at the new leader {new}")
        bound_at = time.monotonic() - t0
        print(f"{old}'s agent killed: {new} elected after {elected:.2f} s, its health port "
              f"bound after {bound_at:.2f} s (ZooKeeper session timeout {ZK_SESSION:g} s)")
        assert elected <= ZK_SESSION + SLACK, \
            f"the checks moved after {elected:.2f} s, over the session timeout {ZK_SESSION:g} s"
        live = [m for i, m in enumerate(MEMBERS, start=1) if mc.cloud.host(i) is not host]
        assert all(_status(lab, m) == HEALTH_ONLINE for m in live), \
            {m: lab.member_health(m) for m in MEMBERS}
    finally:
        mc.start_agent(host)
        mc.wait_agents([host])
    wait_until(lambda: all(_status(lab, m) == HEALTH_ONLINE for m in MEMBERS), 30,
               "every member ONLINE with the killed agent back")
    victim = next(m for i, m in enumerate(MEMBERS, start=1) if mc.cloud.host(i).name != new)
    entry = _kill_and_revive(lab, victim)
    assert entry["host_id"] == mc.host_ids[new], \
        f"{victim} marked ERROR by {entry['host_id']}, not by the new leader {new}"
    assert leader() == new and lab.health_port_host() == new, \
        f"the checks left {new} after the old leader came back: leader {leader()}, " \
        f"health port at {lab.health_port_host()}"
