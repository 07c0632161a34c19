"""A port bound here is announced to the other hosts over the tunnel before
its packets go (issue 13, goal 4): the answer to a new VM's first packet can
reach it at once, not after the store's write and each host's watch. The
store stays the truth: its word replaces the note, and a note it never
confirms is forgotten."""

from __future__ import annotations

import pytest

from midoflow.agent import cache as cache_mod
from midoflow.agent.core import Tunnel
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.nat import statewire
from tests.unit.worlds import M1, M2, TUNNELS, agent, l2_bridge, learn_macs, tcp, two_hosts

TO_P1 = tcp("10.1.0.2", "10.1.0.1", 40000, 80, M2, M1)


@pytest.fixture
def world():
    api = two_hosts(*l2_bridge())
    learn_macs(api, "b", {M1: "p1", M2: "p2"})
    sent: list = []
    h1 = agent(api, "h1", send=sent.append)
    h2 = agent(api, "h2")
    h2.set_interfaces({**TUNNELS, "vm2": (5, "p2")})
    return api, h1, h2, sent


def test_a_port_bound_here_is_announced_to_every_other_host_before_the_store_has_it(world):
    api, h1, h2, sent = world
    seen_by_h2 = []
    h1.send = lambda emits: (sent.append(emits),
                             seen_by_h2.append(h2.cache.port_hosts.get("p1")))
    h1.set_interfaces({**TUNNELS, "vm1": (5, "p1")})
    (emits,) = sent
    (e,) = emits
    assert e.actions == [Tunnel(STATE_TUNNEL_KEY, "10.0.0.2", 1)]
    assert statewire.decode_bound(e.frame) == ("h1", ["p1"])
    assert seen_by_h2 == [None]  # sent before the store was written
    assert h2.cache.port_hosts.get("p1") == "h1"  # then the store's word
    # a port the store already shows here (an agent restart) is not announced again
    assert h1.announce_bound("p1") == 0


def test_an_announced_port_is_reached_before_the_store_says_where_it_is(world):
    api, h1, h2, _sent = world
    assert h2.handle_miss(5, TO_P1).actions == []  # bound nowhere known: dropped
    frame = statewire.encode([], 1, bound=("h1", ["p1"]))
    h2.receive_state(frame, "10.0.0.1")
    assert h2.cache.port_hosts["p1"] == "h1"
    assert h2.handle_miss(5, TO_P1).actions == [Tunnel(11, "10.0.0.1", 1)]


def test_an_announcement_from_another_address_or_of_an_unknown_port_changes_nothing(world):
    _api, _h1, h2, _sent = world
    h2.receive_state(statewire.encode([], 1, bound=("h1", ["p1"])), "10.0.0.9")
    assert "p1" not in h2.cache.port_hosts and h2.stats["bound_refused"] == 1
    h2.receive_state(statewire.encode([], 1, bound=("h1", ["nope"])), "10.0.0.1")
    h2.receive_state(statewire.encode([], 1, bound=("h9", ["p1"])), "10.0.0.1")
    assert "p1" not in h2.cache.port_hosts and "nope" not in h2.cache.port_hosts
    # malformed: counted, never fatal
    bad = statewire.encode([], 1).replace(b'"ttl"', b'"bound":[1],"host":7,"ttl"')
    assert h2.receive_state(bad, "10.0.0.1") == 0 and h2.stats["malformed"] == 1


def test_a_note_the_store_never_confirms_is_forgotten(world, monkeypatch):
    _api, _h1, h2, _sent = world
    h2.receive_state(statewire.encode([], 1, bound=("h1", ["p1"])), "10.0.0.1")
    assert h2.cache.expire_notes() == 0 and h2.cache.port_hosts["p1"] == "h1"
    monkeypatch.setattr(cache_mod, "LOCATION_NOTE_SECONDS", -1.0)
    assert h2.cache.expire_notes() == 1
    assert "p1" not in h2.cache.port_hosts
    assert h2.handle_miss(5, TO_P1).actions == []


def test_the_stores_word_replaces_the_note(world, monkeypatch):
    _api, h1, h2, _sent = world
    h2.receive_state(statewire.encode([], 1, bound=("h1", ["p1"])), "10.0.0.1")
    h1.set_interfaces({**TUNNELS, "vm1": (5, "p1")})  # the store now says h1
    monkeypatch.setattr(cache_mod, "LOCATION_NOTE_SECONDS", -1.0)
    assert h2.cache.expire_notes() == 0  # confirmed: nothing to forget
    assert h2.cache.port_hosts["p1"] == "h1"


# ---- the ports' own addresses, indexed by the cache (the router's and bridge's answer) --

def test_the_cache_indexes_a_ports_fixed_ips_and_mac_and_says_when_they_change(world):
    from midoflow.sim.result import address_tag, mac_tag
    from midoflow.store.base import Delete, Update

    api, _h1, h2, _sent = world
    c = h2.cache
    seen: list[set[str]] = []
    h2.cache.on_invalidate = lambda tags: seen.append(set(tags))
    p1 = api.get("ports", "p1")[0]
    api.commit([Update("ports", {**p1, "mac": M1, "fixed_ips": ["10.1.0.1"]})])
    assert c.address_port("b", "10.1.0.1").id == "p1" and c.own_mac_port("b", M1) == "p1"
    assert {address_tag("b", "10.1.0.1"), mac_tag("b", M1)} <= set().union(*seen)
    seen.clear()
    api.commit([Update("ports", {**api.get("ports", "p1")[0], "fixed_ips": ["10.1.0.9"]})])
    assert c.address_port("b", "10.1.0.1") is None and c.address_port("b", "10.1.0.9").id == "p1"
    assert {address_tag("b", "10.1.0.1"), address_tag("b", "10.1.0.9")} <= set().union(*seen)
    assert mac_tag("b", M1) not in set().union(*seen)  # the MAC did not change
    api.commit([Update("bridges", {**api.get("bridges", "b")[0],
                                   "port_ids": ["p2", "p3"]}), Delete("ports", "p1")])
    assert c.address_port("b", "10.1.0.9") is None and c.own_mac_port("b", M1) is None
