"""A BGP peer's table (midoflow.bgp.table) and the learner around it: prefix
limit, refused prefixes learned when room frees up, counters, stale paths
kept over a session reset, the session record. Pure: no os-ken, no store."""

from __future__ import annotations

import logging

from midoflow.bgp.policy import LearnedRoute, PeerPolicy, RouteLearner
from midoflow.bgp.table import PeerTable, SessionRecord

NH = "192.0.2.2"


def learner(limit: int = 3, stale_time: float = 0.0) -> RouteLearner:
    r = RouteLearner(stale_time=stale_time)
    r.set_peer(NH, PeerPolicy("up1", connected="192.0.2.0/30", max_prefixes=limit))
    return r


def nets(r: RouteLearner) -> set[str]:
    return {x.dst_cidr for x in r.routes().get("up1", set())}


def test_refused_prefixes_are_learned_when_withdrawals_make_room():
    r = learner(limit=3)
    for i in range(5):
        r.update(NH, f"10.{i}.0.0/16", NH)
    assert nets(r) == {"10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16"}
    assert r.counters(NH) == {"prefixes_received": 5, "prefixes_accepted": 3,
                              "prefixes_refused": 2, "prefixes_filtered": 0,
                              "prefixes_stale": 0, "prefix_limit": 3}
    assert r.withdraw(NH, "10.1.0.0/16")
    # the oldest refused one the peer still announces takes the room
    assert nets(r) == {"10.0.0.0/16", "10.2.0.0/16", "10.3.0.0/16"}
    r.withdraw(NH, "10.4.0.0/16")  # a refused one withdrawn: it is forgotten
    r.withdraw(NH, "10.0.0.0/16")
    assert nets(r) == {"10.2.0.0/16", "10.3.0.0/16"}
    c = r.counters(NH)
    assert (c["prefixes_received"], c["prefixes_accepted"], c["prefixes_refused"]) == (2, 2, 0)
    assert NH not in r.overflowed


def test_overflow_is_logged_once_per_episode(caplog):
    r = learner(limit=1)
    with caplog.at_level(logging.INFO, "midoflow.bgp"):
        for i in range(4):
            r.update(NH, f"10.{i}.0.0/16", NH)
    warnings = [m for m in caplog.messages if "prefix limit 1 reached" in m]
    assert len(warnings) == 1 and NH in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, "midoflow.bgp"):
        r.withdraw(NH, "10.0.0.0/16")
    assert any("refused prefix(es) accepted (10.1.0.0/16)" in m for m in caplog.messages)
    assert r.tables[NH].refused_total == 3


def test_filtered_prefixes_are_counted_apart_and_accepted_when_the_filter_lets_them():
    r = learner(limit=10)
    r.set_own(["203.0.113.0/24"])
    assert not r.update(NH, "203.0.113.0/25", NH)  # inside our own range
    assert not r.update(NH, "127.0.0.0/8", NH)
    assert r.update(NH, "0.0.0.0/0", NH)
    c = r.counters(NH)
    assert (c["prefixes_received"], c["prefixes_accepted"], c["prefixes_filtered"],
            c["prefixes_refused"]) == (3, 1, 2, 0)
    r.set_own([])  # no longer ours: the peer's announcement is learned
    assert nets(r) == {"0.0.0.0/0", "203.0.113.0/25"}


def test_raising_the_limit_accepts_the_refused_ones():
    r = learner(limit=1)
    r.update(NH, "10.0.0.0/16", NH)
    r.update(NH, "10.1.0.0/16", NH)
    r.set_peer(NH, PeerPolicy("up1", connected="192.0.2.0/30", max_prefixes=5))
    assert nets(r) == {"10.0.0.0/16", "10.1.0.0/16"}


def test_a_reset_keeps_the_routes_stale_and_the_same_announcements_change_nothing():
    r = learner(limit=100, stale_time=10)
    for i in range(5):
        r.update(NH, f"10.{i}.0.0/16", NH, as_path_len=1)
    before = r.routes()
    r.peer_down(NH, now=100.0)
    assert r.routes() == before  # kept while the session is down
    assert r.counters(NH)["prefixes_stale"] == 5
    assert not r.expire(105.0)
    for i in range(4):  # back: 10.4 is not announced again
        r.update(NH, f"10.{i}.0.0/16", NH, as_path_len=1)
    assert r.routes() == before
    assert r.counters(NH)["prefixes_stale"] == 1
    assert r.expire(110.0)  # the stale timer runs out: only what changed goes
    assert nets(r) == {f"10.{i}.0.0/16" for i in range(4)}
    assert not r.expire(200.0)


def test_a_changed_path_replaces_its_stale_copy():
    r = learner(stale_time=10)
    r.update(NH, "0.0.0.0/0", NH, as_path_len=1)
    r.peer_down(NH, now=0.0)
    r.update(NH, "0.0.0.0/0", NH, as_path_len=3)
    assert r.routes() == {"up1": {LearnedRoute("0.0.0.0/0", NH, "up1", 103)}}


def test_without_stale_time_a_reset_drops_the_routes_at_once():
    r = learner(stale_time=0)
    r.update(NH, "0.0.0.0/0", NH)
    r.peer_down(NH, now=0.0)
    assert r.routes() == {}


def test_refused_prefixes_are_not_kept_stale():
    r = learner(limit=1, stale_time=10)
    r.update(NH, "10.0.0.0/16", NH)
    r.update(NH, "10.1.0.0/16", NH)
    r.peer_down(NH, now=0.0)
    assert nets(r) == {"10.0.0.0/16"}
    assert r.counters(NH)["prefixes_received"] == 0


def test_table_alone_keeps_arrival_order_for_refused_prefixes():
    t = PeerTable("p", 1, lambda _p: True)
    t.announce("a", 1)
    t.announce("b", 2)
    t.announce("c", 3)
    t.announce("b", 4)  # re-announced: now the newest refused one
    t.withdraw("a")
    assert list(t.accepted) == ["c"] and dict(t.paths()) == {"c": 3}


def test_session_record_counts_flaps_since_and_errors():
    s = SessionRecord()
    assert s.observe("active", 1.0) and s.since == 1.0
    assert s.observe("established", 2.0)
    assert s.observe("idle", 3.0) and s.flaps == 1
    assert not s.observe("idle", 4.0) and s.since == 3.0
    s.error("notification received: hold timer expired", 3.0)
    assert s.status() == {"state": "idle", "since": 3.0, "flaps": 1,
                          "last_error": "notification received: hold timer expired",
                          "last_error_at": 3.0}


def test_session_record_takes_the_speakers_exact_count_of_flaps():
    s = SessionRecord()
    s.observe("established", 1.0, transitions=1)
    # down and up again between two polls: the speaker's count shows it
    assert s.observe("established", 2.0, transitions=2) and s.flaps == 1
    s.rebase()  # the neighbour is made again: its count restarts
    s.observe("established", 3.0, transitions=1)
    assert s.flaps == 1
    s.observe("idle", 4.0, transitions=1)
    assert s.flaps == 2
