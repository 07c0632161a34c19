"""The gateway's route learning and ECMP selection (midoflow.bgp.policy): pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from midoflow.bgp.policy import (
    MAX_PREFIXES_PER_PEER,
    LearnedRoute,
    Path,
    PeerPolicy,
    RouteLearner,
    diff,
    multipath,
)


def learner(**peers) -> RouteLearner:
    r = RouteLearner()
    for addr, port in peers.items():
        r.set_peer(addr.replace("_", "."), PeerPolicy(port, connected="192.0.2.0/30"))
    return r


def test_equal_paths_from_two_peers_are_both_installed():
    r = RouteLearner()
    r.set_peer("192.0.2.2", PeerPolicy("up1", "192.0.2.0/30"))
    r.set_peer("192.0.2.6", PeerPolicy("up2", "192.0.2.4/30"))
    assert r.update("192.0.2.2", "0.0.0.0/0", "192.0.2.2", as_path_len=1)
    assert r.update("192.0.2.6", "0.0.0.0/0", "192.0.2.6", as_path_len=1)
    assert r.routes() == {
        "up1": {LearnedRoute("0.0.0.0/0", "192.0.2.2", "up1", 101)},
        "up2": {LearnedRoute("0.0.0.0/0", "192.0.2.6", "up2", 101)},
    }


def test_shorter_as_path_wins_and_weight_carries_the_length():
    r = RouteLearner()
    r.set_peer("a", PeerPolicy("up1"))
    r.set_peer("b", PeerPolicy("up2"))
    r.update("a", "10.9.0.0/16", "192.0.2.2", as_path_len=3)
    r.update("b", "10.9.0.0/16", "192.0.2.6", as_path_len=2)
    assert r.routes() == {"up2": {LearnedRoute("10.9.0.0/16", "192.0.2.6", "up2", 102)}}


def test_multipath_ties_on_local_pref_origin_and_med_per_neighbour_as():
    paths = [Path("a", "p", "n1", 1, 100, 0, 5, 65001), Path("b", "p", "n2", 1, 100, 0, 9, 65001),
             Path("c", "p", "n3", 1, 100, 0, 50, 65002), Path("d", "p", "n4", 1, 90, 0, 0, 65003),
             Path("e", "p", "n5", 1, 100, 2, 0, 65004)]
    assert [p.peer for p in multipath(paths)] == ["a", "c"]


def test_withdraw_and_peer_down_remove_routes():
    r = RouteLearner()
    r.set_peer("a", PeerPolicy("up1"))
    r.update("a", "0.0.0.0/0", "192.0.2.2")
    r.update("a", "10.0.0.0/8", "192.0.2.2")
    assert r.withdraw("a", "10.0.0.0/8")
    assert not r.withdraw("a", "10.0.0.0/8")
    assert len(r.routes()["up1"]) == 1
    r.peer_down("a")
    assert r.routes() == {}
    assert r.update("a", "0.0.0.0/0", "192.0.2.2")  # the session comes back


def test_filters_refuse_own_prefixes_connected_martians_and_unknown_peers():
    r = RouteLearner()
    r.set_peer("a", PeerPolicy("up1", connected="192.0.2.0/30"))
    r.set_own(["203.0.113.0/24"])
    assert not r.update("a", "203.0.113.0/24", "192.0.2.2")  # our own range, back
    assert not r.update("a", "203.0.113.128/25", "192.0.2.2")  # inside it
    assert r.update("a", "203.0.112.0/23", "192.0.2.2")  # covering it: a real route
    assert not r.update("a", "192.0.2.0/30", "192.0.2.2")  # the uplink's own link
    for martian in ("127.0.0.0/8", "169.254.1.0/24", "224.0.0.0/4", "0.0.0.0/8"):
        assert not r.update("a", martian, "192.0.2.2")
    assert r.update("a", "0.0.0.0/0", "192.0.2.2")  # the default route is welcome
    assert not r.update("nobody", "10.0.0.0/8", "192.0.2.2")
    assert not r.update("a", "not a prefix", "192.0.2.2")
    assert r.rejected["a"] == 8 and r.rejected["nobody"] == 1


def test_own_prefix_added_later_drops_what_was_learned_inside_it():
    r = RouteLearner()
    r.set_peer("a", PeerPolicy("up1"))
    r.update("a", "203.0.113.0/25", "192.0.2.2")
    r.set_own(["203.0.113.0/24"])
    assert r.routes() == {}


def test_prefix_limit_per_peer():
    r = RouteLearner()
    r.set_peer("a", PeerPolicy("up1", max_prefixes=3))
    for i in range(5):
        r.update("a", f"10.{i}.0.0/16", "192.0.2.2")
    assert r.received("a") == 5 and "a" in r.overflowed
    assert len(r.routes()["up1"]) == 3
    assert r.update("a", "10.0.0.0/16", "192.0.2.9")  # replacing one is fine
    assert MAX_PREFIXES_PER_PEER >= 1000


def test_host_bits_are_normalised():
    r = RouteLearner()
    r.set_peer("a", PeerPolicy("up1"))
    r.update("a", "10.1.2.3/16", "192.0.2.2")
    assert {x.dst_cidr for x in r.routes()["up1"]} == {"10.1.0.0/16"}


def test_diff():
    a, b, c = (LearnedRoute(f"10.{i}.0.0/16", "g", "p", 100) for i in range(3))
    assert diff({a, b}, {b, c}) == ({c}, {a})


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3), st.integers(0, 4),
                          st.booleans()), max_size=40))
def test_routes_follow_the_last_word_of_each_peer(events):
    """Whatever the order of announcements and withdrawals, the routes are
    the ECMP set of the paths each peer holds last."""
    r = RouteLearner()
    for p in "abc":
        r.set_peer(p, PeerPolicy(f"up-{p}"))
    last: dict[tuple[str, int], int | None] = {}
    for peer, net, plen, withdraw in events:
        prefix = f"10.{net}.0.0/16"
        if withdraw:
            r.withdraw(peer, prefix)
            last[(peer, net)] = None
        else:
            r.update(peer, prefix, f"192.0.2.{ord(peer)}", as_path_len=plen)
            last[(peer, net)] = plen
    routes = set().union(*r.routes().values()) if r.routes() else set()
    for net in range(4):
        held = {p: n for (p, x), n in last.items() if x == net and n is not None}
        got = {x for x in routes if x.dst_cidr == f"10.{net}.0.0/16"}
        if not held:
            assert not got
            continue
        best = min(held.values())
        assert {x.port_id for x in got} == {f"up-{p}" for p, n in held.items() if n == best}
        assert {x.weight for x in got} == {100 + best}
