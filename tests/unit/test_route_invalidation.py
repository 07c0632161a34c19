"""Issue 13 goal 7: a route change removes only the flows to the destinations
it can move (FlowIndex's route lookups by prefix, the cache's route tags),
and a flow left in place is one whose decision did not change."""

from __future__ import annotations

import random

import pytest

from midoflow.agent.flows import FlowIndex
from midoflow.agent.installed import InstalledFlows
from midoflow.sim.result import route_dst_tag, route_prefix_tag
from midoflow.store import paths
from midoflow.store.base import Create, Delete, Update
from tests.unit import worlds
from tests.unit.worlds import RMAC, TUNNELS, VM

GWS = {"198.51.100.254": "02:ee:00:00:00:01", "198.51.100.253": "02:ee:00:00:00:02",
       "198.51.100.252": "02:ee:00:00:00:03"}
NEIGHBOUR = ("198.51.100.50", "02:ee:00:00:00:50")  # a host on the uplink's network


# ---- FlowIndex alone ------------------------------------------------------------------
def test_a_prefix_finds_the_lookups_in_it_no_more_specific_than_itself():
    idx = FlowIndex(first=1)
    a = idx.add({route_dst_tag("r", "10.1.0.1", 0)})       # by the default route
    b = idx.add({route_dst_tag("r", "10.1.0.200", 24)})    # by a /24
    c = idx.add({route_dst_tag("r", "10.2.0.1", 0)})
    d = idx.add({route_dst_tag("r2", "10.1.0.1", 0)})      # another router
    e = idx.add({route_dst_tag("r", "10.1.0.1", 32), "mac:b:m"})  # its own address
    assert idx.invalidate({route_prefix_tag("r", "10.1.0.0/16")}) == {a}
    assert idx.invalidate({route_prefix_tag("r", "10.1.0.0/24")}) == {b}
    assert idx.invalidate({route_prefix_tag("r", "0.0.0.0/0")}) == {c}
    assert idx.invalidate({route_prefix_tag("r", "10.1.0.1/32")}) == {e}
    assert set(idx.tags_of) == {d} and set(idx.dsts) == {"r2"}


def test_the_lookup_index_is_emptied_as_flows_go_and_shared_while_they_stay():
    idx = FlowIndex(first=1)
    tag = route_dst_tag("r", "10.0.0.1", 8)
    a, b = idx.add({tag}), idx.add({tag})
    idx.remove(a)
    assert list(idx.dsts["r"].values()) == [tag]  # b still routed there
    idx.remove(b)
    assert idx.dsts == {} and tag not in idx.by_tag
    c = idx.add({tag})
    idx.clear()
    assert idx.dsts == {} and idx.invalidate({route_prefix_tag("r", "0.0.0.0/0")}) == set()
    assert c not in idx.tags_of


def test_a_prefix_that_does_not_parse_takes_every_flow_the_router_routed():
    gone: list[set[int]] = []
    f = InstalledFlows(gone.append, {"invalidated": 0})
    a = f.add({route_dst_tag("r", "10.0.0.1", 32)}, "p")
    f.add({route_dst_tag("x", "10.0.0.1", 32)}, "p")
    assert f.invalidate_tags({route_prefix_tag("r", "not-a-prefix")}) == {a} and gone == [{a}]


# ---- an agent: the cache's route changes --------------------------------------------
def _world() -> list[Create]:
    """Bridge b (VM port vm, bound at h1's ofport 5) on router r: rb
    192.168.1.1/24 and the uplink up 198.51.100.1/24 (bound at h2) with a
    default route via .254."""
    return [
        Create("bridges", {"id": "b", "port_ids": ["vm", "br"]}),
        Create("routers", {"id": "r", "port_ids": ["rb", "up"]}),
        Create("ports", {"id": "vm", "device_id": "b", "tunnel_key": 11}),
        worlds.bridge_link("br", "b", 12, "rb"),
        worlds.router_port("rb", "r", 13, RMAC, "192.168.1.1", peer="br"),
        worlds.router_port("up", "r", 14, worlds.UPMAC, "198.51.100.1"),
        Create("routes", {"id": "default", "router_id": "r", "dst_cidr": "0.0.0.0/0",
                          "next_hop_port": "up", "next_hop_gateway": "198.51.100.254"}),
    ]


@pytest.fixture
def world():
    """(api, h1's core, the cookies h1 invalidated)."""
    api = worlds.two_hosts(*_world())
    worlds.learn_arp(api, "r", {**GWS, NEIGHBOUR[0]: NEIGHBOUR[1]})
    gone: set[int] = set()
    h1 = worlds.agent(api, "h1", on_invalidate=gone.update)
    h2 = worlds.agent(api, "h2")
    worlds.bind({"h1": h1, "h2": h2}, {"h1": {**TUNNELS, "vm1": (5, "vm")},
                                       "h2": {**TUNNELS, "uplink": (7, "up")}})
    return api, h1, gone


def _pkt(dst: str, sport: int = 1000) -> dict:
    return worlds.tcp("192.168.1.10", dst, sport, 80, VM, RMAC)


def _flows(core, dsts) -> dict[str, int]:
    """Install a flow to each destination: destination -> its cookie."""
    out = {}
    for dst in dsts:
        d = core.handle_miss(5, _pkt(dst))
        assert d.install, dst
        out[dst] = d.cookie
    return out


def _next_hop(core, dst: str, sport: int = 1000) -> str:
    d = core.dry_decision(5, _pkt(dst, sport))
    return dict((w.field, w.value) for w in d.rewrites).get("eth_dst", "drop")


ROUTE = {"id": "x", "router_id": "r", "next_hop_port": "up"}


def test_a_more_specific_route_takes_only_the_flows_it_now_answers(world):
    api, h1, gone = world
    flows = _flows(h1, ["10.1.0.1", "10.1.0.200", "10.1.1.1", "8.8.8.8"])
    api.commit([Create("routes", {**ROUTE, "dst_cidr": "10.1.0.0/24",
                                  "next_hop_gateway": "198.51.100.253"})])
    assert gone == {flows["10.1.0.1"], flows["10.1.0.200"]}
    assert _next_hop(h1, "10.1.0.1") == GWS["198.51.100.253"]
    assert _next_hop(h1, "10.1.1.1") == GWS["198.51.100.254"]
    assert h1.flows.tags_of.keys() == {flows["10.1.1.1"], flows["8.8.8.8"]}


def test_a_removed_or_changed_route_takes_the_flows_that_used_it(world):
    api, h1, gone = world
    api.commit([Create("routes", {**ROUTE, "dst_cidr": "10.1.0.0/24",
                                  "next_hop_gateway": "198.51.100.253"})])
    flows = _flows(h1, ["10.1.0.1", "10.1.1.1"])
    api.commit([Update("routes", {**ROUTE, "dst_cidr": "10.1.0.0/24",
                                  "next_hop_gateway": "198.51.100.252"})])
    assert gone == {flows["10.1.0.1"]}
    gone.clear()
    flows = _flows(h1, ["10.1.0.1"])
    assert _next_hop(h1, "10.1.0.1") == GWS["198.51.100.252"]
    api.commit([Delete("routes", "x")])
    assert gone == {flows["10.1.0.1"]}
    assert _next_hop(h1, "10.1.0.1") == GWS["198.51.100.254"]


def test_a_less_specific_route_leaves_the_flows_a_more_specific_one_answers(world):
    api, h1, gone = world
    api.commit([Create("routes", {**ROUTE, "dst_cidr": "10.1.0.0/24",
                                  "next_hop_gateway": "198.51.100.253"})])
    flows = _flows(h1, ["10.1.0.1", "10.2.0.1", "198.51.100.50"])
    api.commit([Create("routes", {**ROUTE, "id": "agg", "dst_cidr": "10.0.0.0/8",
                                  "next_hop_gateway": "198.51.100.252"})])
    assert gone == {flows["10.2.0.1"]}  # the /24 still answers 10.1.0.1
    gone.clear()
    # a new default gateway moves what the default route answered, never the
    # connected subnet nor what a more specific route answers
    flows.update(_flows(h1, ["10.2.0.1", "8.8.8.8"]))
    api.commit([Update("routes", {"id": "default", "router_id": "r", "dst_cidr": "0.0.0.0/0",
                                  "next_hop_port": "up", "next_hop_gateway": "198.51.100.252"})])
    assert gone == {flows["8.8.8.8"]}


def test_an_equal_route_makes_ecmp_for_its_prefix_only(world):
    api, h1, gone = world
    api.commit([Create("routes", {**ROUTE, "dst_cidr": "10.1.0.0/16",
                                  "next_hop_gateway": "198.51.100.253"})])
    flows = _flows(h1, ["10.1.0.1", "10.1.2.3", "10.2.0.1"])
    api.commit([Create("routes", {**ROUTE, "id": "y", "dst_cidr": "10.1.0.0/16",
                                  "next_hop_gateway": "198.51.100.252"})])
    assert gone == {flows["10.1.0.1"], flows["10.1.2.3"]}
    hops = {_next_hop(h1, "10.1.0.1", sport) for sport in range(1000, 1040)}
    assert hops == {GWS["198.51.100.253"], GWS["198.51.100.252"]}  # both paths used
    gone.clear()
    flows = _flows(h1, ["10.1.0.1"])
    api.commit([Delete("routes", "y")])
    assert gone == {flows["10.1.0.1"]}


def test_learned_routes_invalidate_by_their_prefix(world):
    api, h1, gone = world
    flows = _flows(h1, ["203.0.113.7", "8.8.8.8"])
    entry = paths.learned_route_entry("r", "203.0.113.0/24", "198.51.100.253", "up", 100)
    api.put_state(entry, {}, ephemeral=True)
    assert gone == {flows["203.0.113.7"]}
    gone.clear()
    flows = _flows(h1, ["203.0.113.7"])
    api.delete_state(entry)
    assert gone == {flows["203.0.113.7"]}


def test_router_port_changes_invalidate_what_they_should(world):
    api, h1, gone = world
    flows = _flows(h1, ["8.8.8.8", "10.9.0.1"])
    # an address change of the uplink: its network's and its address's lookups
    # go, and every flow out through it (its port tag)
    up = api.get("ports", "up")[0]
    api.commit([Update("ports", {**up, "ip_address": "198.51.100.2"})])
    assert gone == set(flows.values())
    gone.clear()
    # a router port that routes none of them: its name changes no flow; its
    # network moving into 10.9/16 takes the flow to 10.9.0.1, now connected
    api.commit([worlds.router_port("side", "r", 15, "02:aa:00:00:00:05", "172.16.0.1")])
    flows = _flows(h1, ["8.8.8.8", "10.9.0.1"])
    router = api.get("routers", "r")[0]
    api.commit([Update("routers", {**router, "port_ids": ["rb", "up", "side"]})])
    assert gone == set()  # a new interface: only the lookups in its network
    side = api.get("ports", "side")[0]
    api.commit([Update("ports", {**side, "name": "renamed"})])
    assert gone == set()
    api.commit([Update("ports", {**side, "name": "renamed", "ip_address": "10.9.0.254",
                                 "prefix_len": 16})])
    assert gone == {flows["10.9.0.1"]}
    assert _next_hop(h1, "10.9.0.1") == "drop"  # now on side: the router ARPs for it
    gone.clear()
    flows = _flows(h1, ["8.8.8.8", "198.51.100.50"])
    api.commit([Update("routers", {**router, "port_ids": ["rb", "up"]})])  # side goes
    assert gone == set()
    api.commit([Update("routers", {**router, "port_ids": ["rb"]})])  # so does the uplink
    assert set(flows.values()) <= gone and not h1.flows.tags_of  # every flow used it
    gone.clear()
    api.commit([Update("routers", {**router, "port_ids": ["rb", "up"]})])
    flows = _flows(h1, ["8.8.8.8"])
    api.commit([Update("routers", {**router, "admin_state_up": False})])
    assert set(flows.values()) <= gone and not h1.flows.tags_of  # all through the router


def test_the_baseline_switch_invalidates_every_flow_the_router_routed(world):
    api, h1, gone = world
    h1.cache.router_wide_route_invalidation = True
    flows = _flows(h1, ["10.1.0.1", "8.8.8.8", "198.51.100.50"])
    api.commit([Create("routes", {**ROUTE, "dst_cidr": "10.1.0.0/24", "type": "blackhole"})])
    assert gone == set(flows.values())


def test_flows_left_in_place_keep_their_decision_through_random_route_changes(world):
    """Exactness both ways: each flow a change leaves installed decides as a
    new simulation would, and the ones it took were in a changed prefix."""
    api, h1, gone = world
    rnd = random.Random(13)
    dsts = [f"10.{rnd.randrange(4)}.{rnd.randrange(4)}.{rnd.randrange(1, 255)}"
            for _ in range(120)] + ["8.8.8.8", "198.51.100.50", "192.168.1.1"]
    dsts = list(dict.fromkeys(dsts))
    cookie_of = _flows(h1, dsts)
    decided = {dst: _next_hop(h1, dst) for dst in dsts}
    live: dict[str, str] = {}
    kept = took = 0
    for step in range(40):
        gone.clear()
        rid = f"rt{rnd.randrange(8)}"
        plen = rnd.choice([8, 14, 15, 16, 20, 24, 30])
        net = f"10.{rnd.randrange(4)}.{rnd.randrange(4)}.0/{plen}"
        if rid in live and rnd.random() < 0.4:
            api.commit([Delete("routes", rid)])
            del live[rid]
        else:
            body = {"id": rid, "router_id": "r", "dst_cidr": net, "next_hop_port": "up",
                    "next_hop_gateway": rnd.choice(list(GWS))}
            if rnd.random() < 0.2:
                body = {"id": rid, "router_id": "r", "dst_cidr": net, "type": "blackhole"}
            api.commit([(Update if rid in live else Create)("routes", body)])
            live[rid] = net
        for dst in dsts:
            now = _next_hop(h1, dst)
            if cookie_of[dst] in gone:
                took += 1
                d = h1.handle_miss(5, _pkt(dst))
                cookie_of[dst] = d.cookie if d.install else -step - 1
            else:
                kept += 1
                assert now == decided[dst], (step, dst, live)
            decided[dst] = now
    assert kept > took > 0  # the changes moved some flows, and left most
