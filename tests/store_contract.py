"""The behaviour every Store backend must have, run against each of them.

A backend's test module subclasses :class:`StoreContract` and provides two
fixtures: ``store`` (a fresh, empty store) and ``new_session`` (a callable
giving another session on the same data, as another host would have).
Watches may fire asynchronously (ZooKeeper), so tests wait for them.
"""

from __future__ import annotations

import threading
import time

import pytest

from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.store.base import Check, Create, Delete, Update
from tests.helpers import wait_until

__all__ = ["StoreContract", "settle", "wait_until"]


def settle(seconds: float = 0.3) -> None:
    """Give asynchronous watches time to (wrongly) fire. This sleep IS the
    test: it checks that something does NOT happen, and no condition marks
    the moment it could no longer happen."""
    time.sleep(seconds)


class StoreContract:
    # ---- models ---------------------------------------------------------------
    def test_create_get_list_update_delete(self, store):
        store.commit([Create("bridges", {"id": "b1", "name": "red"}),
                      Create("bridges", {"id": "b2", "name": "blue"})])
        assert store.get("bridges", "b1") == ({"id": "b1", "name": "red"}, 0)
        assert sorted(d["id"] for d, _ in store.list("bridges")) == ["b1", "b2"]
        store.commit([Update("bridges", {"id": "b1", "name": "green"}, 0)])
        assert store.get("bridges", "b1") == ({"id": "b1", "name": "green"}, 1)
        store.commit([Update("bridges", {"id": "b1", "name": "teal"})])  # unconditional
        assert store.get("bridges", "b1")[1] == 2
        store.commit([Delete("bridges", "b1", 2)])
        with pytest.raises(NotFound):
            store.get("bridges", "b1")
        assert [d["id"] for d, _ in store.list("bridges")] == ["b2"]
        store.commit([Delete("bridges", "b2")])
        assert store.list("bridges") == []

    def test_any_kind_and_empty_list(self, store):
        assert store.list("widgets") == []
        store.commit([Create("widgets", {"id": "w1", "n": [1, 2, {"x": None}]})])
        assert store.get("widgets", "w1") == ({"id": "w1", "n": [1, 2, {"x": None}]}, 0)

    def test_missing_objects(self, store):
        with pytest.raises(NotFound, match="b9"):
            store.get("bridges", "b9")
        with pytest.raises(NotFound, match="b9"):
            store.commit([Update("bridges", {"id": "b9"})])
        with pytest.raises(NotFound, match="b9"):
            store.commit([Delete("bridges", "b9")])
        with pytest.raises(NotFound, match="b9"):
            store.commit([Check("bridges", "b9", 0)])

    def test_duplicate_create_conflicts(self, store):
        store.commit([Create("ports", {"id": "p1"})])
        with pytest.raises(Conflict, match="ports p1 already exists"):
            store.commit([Create("ports", {"id": "p1"})])

    def test_create_without_id_is_invalid(self, store):
        with pytest.raises(Invalid):
            store.commit([Create("ports", {"name": "no id"})])

    def test_stale_versions_conflict(self, store):
        store.commit([Create("ports", {"id": "p1", "v": 1})])
        store.commit([Update("ports", {"id": "p1", "v": 2}, 0)])
        with pytest.raises(Conflict, match="p1"):
            store.commit([Update("ports", {"id": "p1", "v": 3}, 0)])
        with pytest.raises(Conflict, match="p1"):
            store.commit([Delete("ports", "p1", 0)])
        with pytest.raises(Conflict, match="p1"):
            store.commit([Check("ports", "p1", 0)])
        store.commit([Check("ports", "p1", 1)])
        assert store.get("ports", "p1") == ({"id": "p1", "v": 2}, 1)

    def test_failed_transaction_changes_nothing(self, store):
        store.commit([Create("bridges", {"id": "b1", "v": 1}),
                      Create("ports", {"id": "p1", "v": 1})])
        with pytest.raises(Conflict, match="ports p1"):
            store.commit([
                Create("bridges", {"id": "b2"}),
                Update("bridges", {"id": "b1", "v": 2}, 0),
                Delete("ports", "p1", 7),  # stale: the whole commit fails
            ])
        with pytest.raises(NotFound):
            store.get("bridges", "b2")
        assert store.get("bridges", "b1") == ({"id": "b1", "v": 1}, 0)
        assert store.get("ports", "p1") == ({"id": "p1", "v": 1}, 0)
        with pytest.raises(Conflict):
            store.commit([Create("bridges", {"id": "b3"}), Create("bridges", {"id": "b1"})])
        assert [d["id"] for d, _ in store.list("bridges")] == ["b1"]

    def test_ops_in_one_commit_see_each_other(self, store):
        store.commit([Create("bridges", {"id": "b1", "v": 1}),
                      Update("bridges", {"id": "b1", "v": 2}, 0),
                      Check("bridges", "b1", 1)])
        assert store.get("bridges", "b1") == ({"id": "b1", "v": 2}, 1)

    def test_counters(self, store):
        assert [store.next_counter("vni") for _ in range(3)] == [1, 2, 3]
        assert store.next_counter("other") == 1

    def test_counters_unique_under_threads(self, store):
        got: list[int] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker():
            try:
                for _ in range(20):
                    v = store.next_counter("tunnel_key")
                    with lock:
                        got.append(v)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert sorted(got) == list(range(1, 121))

    # ---- model watches ------------------------------------------------------
    def test_watch_kind(self, store):
        seen: list[list[str]] = []
        store.commit([Create("hosts", {"id": "h1"})])
        store.watch_kind("hosts", seen.append)
        assert seen == [["h1"]]  # called once, now
        store.commit([Create("hosts", {"id": "h2"})])
        wait_until(lambda: seen[-1] == ["h1", "h2"], what="h2 in the kind watch")
        store.commit([Delete("hosts", "h1")])
        wait_until(lambda: seen[-1] == ["h2"], what="h1 gone from the kind watch")

    def test_watch_kind_stops_on_false(self, store):
        seen: list[list[str]] = []

        def cb(ids):
            seen.append(ids)
            return False if ids else None

        store.watch_kind("hosts", cb)
        store.commit([Create("hosts", {"id": "h1"})])
        wait_until(lambda: seen[-1] == ["h1"])
        store.commit([Create("hosts", {"id": "h2"})])
        settle()
        assert seen == [[], ["h1"]]

    def test_watch_object(self, store):
        seen: list = []
        store.commit([Create("bridges", {"id": "b1", "v": 1})])
        store.watch_object("bridges", "b1", lambda d, v: seen.append((d, v)))
        assert seen == [({"id": "b1", "v": 1}, 0)]
        store.commit([Update("bridges", {"id": "b1", "v": 2})])
        wait_until(lambda: seen[-1] == ({"id": "b1", "v": 2}, 1), what="update seen")
        store.commit([Delete("bridges", "b1")])
        wait_until(lambda: seen[-1] == (None, -1), what="delete seen")
        store.commit([Create("bridges", {"id": "b1", "v": 3})])  # the watch has ended
        settle()
        assert seen[-1] == (None, -1)

    def test_watch_missing_object(self, store):
        seen: list = []
        store.watch_object("bridges", "nope", lambda d, v: seen.append((d, v)))
        assert seen == [(None, -1)]

    # ---- state --------------------------------------------------------------
    def test_state_put_get_list_delete(self, store):
        assert store.get_state("state/hosts/h1") is None
        assert store.list_state("state/hosts") == []
        store.put_state("state/hosts/h1", {"up": True})
        store.put_state("state/hosts/h2", {"up": True}, ephemeral=False)
        assert store.get_state("state/hosts/h1") == {"up": True}
        assert store.list_state("state/hosts") == ["h1", "h2"]
        store.put_state("state/hosts/h1", {"up": False})  # overwrite
        assert store.get_state("state/hosts/h1") == {"up": False}
        store.delete_state("state/hosts/h1")
        store.delete_state("state/hosts/h1")  # no error if missing
        assert store.list_state("state/hosts") == ["h2"]

    def test_delete_state_is_recursive(self, store):
        store.put_state("tables/bridges/b1/macs/aa,p1", {}, ephemeral=False)
        store.put_state("tables/bridges/b1/macs/bb,p2", {})
        assert store.list_state("tables/bridges/b1/macs") == ["aa,p1", "bb,p2"]
        store.delete_state("tables/bridges/b1")
        assert store.list_state("tables/bridges/b1/macs") == []
        assert store.get_state("tables/bridges/b1/macs/aa,p1") is None

    def test_watch_state(self, store):
        seen: list = []
        store.watch_state("state/ports/p1", seen.append)
        assert seen == [None]
        store.put_state("state/ports/p1", {"host_id": "h1"})
        wait_until(lambda: seen[-1] == {"host_id": "h1"}, what="state created")
        store.put_state("state/ports/p1", {"host_id": "h2"})
        wait_until(lambda: seen[-1] == {"host_id": "h2"}, what="state changed")
        store.delete_state("state/ports/p1")
        wait_until(lambda: seen[-1] is None and len(seen) > 1, what="state deleted")

    def test_watch_state_children_of_missing_path(self, store):
        seen: list[list[str]] = []
        store.watch_state_children("tables/bridges/b1/macs", seen.append)
        assert seen == [[]]
        store.put_state("tables/bridges/b1/macs/aa,p1", {})
        wait_until(lambda: seen[-1] == ["aa,p1"], what="child added")
        store.put_state("tables/bridges/b1/macs/bb,p2", {})
        wait_until(lambda: seen[-1] == ["aa,p1", "bb,p2"], what="second child")
        store.delete_state("tables/bridges/b1/macs/aa,p1")
        wait_until(lambda: seen[-1] == ["bb,p2"], what="child removed")
        # the watched path itself goes and comes back: the watch follows
        store.delete_state("tables/bridges/b1")
        wait_until(lambda: seen[-1] == [], what="path deleted")
        store.put_state("tables/bridges/b1/macs/cc,p3", {})
        wait_until(lambda: seen[-1] == ["cc,p3"], what="child after re-creation")

    def test_watch_state_children_stops_on_false(self, store):
        seen: list[list[str]] = []

        def cb(children):
            seen.append(children)
            return False if children else None

        store.watch_state_children("state/hosts", cb)
        store.put_state("state/hosts/h1", {})
        wait_until(lambda: seen[-1] == ["h1"])
        store.put_state("state/hosts/h2", {})
        settle()
        assert seen == [[], ["h1"]]

    # ---- sessions -----------------------------------------------------------
    def test_ephemeral_state_goes_with_its_session(self, store, new_session):
        agent = new_session()
        agent.put_state("state/hosts/h1", {"name": "h1"})
        agent.put_state("state/hosts/h1-info", {"name": "h1"}, ephemeral=False)
        seen: list[list[str]] = []
        store.watch_state_children("state/hosts", seen.append)
        assert store.get_state("state/hosts/h1") == {"name": "h1"}
        agent.close()
        wait_until(lambda: store.get_state("state/hosts/h1") is None, what="ephemeral gone")
        assert store.get_state("state/hosts/h1-info") == {"name": "h1"}
        wait_until(lambda: seen[-1] == ["h1-info"], what="children watch sees it go")
        assert agent.health()["connected"] is False

    def test_put_state_takes_over_another_sessions_ephemeral(self, store, new_session):
        old = new_session()
        old.put_state("state/hosts/h1", {"gen": 1})
        store.put_state("state/hosts/h1", {"gen": 2})  # e.g. the agent restarted
        old.close()
        settle()
        assert store.get_state("state/hosts/h1") == {"gen": 2}

    def test_claim_is_a_lease_given_back_with_its_session(self, store, new_session):
        a, b = new_session(), new_session()
        assert a.claim_state("state/nat/1.2.3.4/6/3", {"host": "a"}) is True
        assert a.claim_state("state/nat/1.2.3.4/6/3", {"host": "a"}) is True  # ours already
        assert b.claim_state("state/nat/1.2.3.4/6/3", {"host": "b"}) is False
        assert store.get_state("state/nat/1.2.3.4/6/3") == {"host": "a"}
        a.close()
        wait_until(lambda: store.get_state("state/nat/1.2.3.4/6/3") is None,
                   what="the lease to go with its session")
        assert b.claim_state("state/nat/1.2.3.4/6/3", {"host": "b"}) is True
        b.delete_state("state/nat/1.2.3.4/6/3")
        assert store.get_state("state/nat/1.2.3.4/6/3") is None

    def test_health(self, store):
        h = store.health()
        assert h["connected"] is True
        assert isinstance(h["backend"], str)
