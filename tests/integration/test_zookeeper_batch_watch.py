"""The pipelined watches of ZkStore (issue 13: an agent loading 10,000
objects): watch_objects, watch_states and watch_states_children deliver every
first value before returning, then follow changes, deletions and
re-creations like the one-at-a-time watches, and survive a replaced client."""

from __future__ import annotations

import pytest

from midoflow.model import PORTS
from midoflow.store.base import Create, Delete, Update
from tests.store_contract import wait_until

pytestmark = pytest.mark.integration


def _port(i: int, name: str = "") -> dict:
    return {"id": f"p{i}", "device_id": "b", "tunnel_key": i + 1, "name": name}


def test_many_objects_first_values_then_changes_and_deletion(zk_store):
    zk_store.commit([Create(PORTS, _port(i)) for i in range(300)])
    seen: dict[str, list] = {}

    def cb_of(oid):
        def cb(data, version):
            seen.setdefault(oid, []).append((data and data.get("name"), version))
            return False if data is None else None
        return cb

    ids = [f"p{i}" for i in range(300)] + ["missing"]
    zk_store.watch_objects(PORTS, ids, cb_of)
    assert len(seen) == 301  # every first value before returning
    assert seen["p7"] == [("", 0)] and seen["missing"] == [(None, -1)]
    zk_store.commit([Update(PORTS, _port(7, "renamed"))])
    wait_until(lambda: seen["p7"][-1] == ("renamed", 1))
    zk_store.commit([Delete(PORTS, "p8")])
    wait_until(lambda: seen["p8"][-1] == (None, -1))
    # the watch ended with the deletion: a re-created object is not followed
    zk_store.commit([Create(PORTS, _port(8, "again")), Update(PORTS, _port(9, "x"))])
    wait_until(lambda: seen["p9"][-1] == ("x", 1))
    assert seen["p8"][-1] == (None, -1)


def test_states_follow_a_node_through_deletion_and_recreation(zk_store_factory):
    a, b = zk_store_factory(), zk_store_factory()
    a.put_state("state/ports/x", {"host_id": "h1"})
    got: dict[str, list] = {}
    b.watch_states(["state/ports/x", "state/ports/y"],
                   lambda path: lambda data: got.setdefault(path, []).append(data))
    assert got == {"state/ports/x": [{"host_id": "h1"}], "state/ports/y": [None]}
    a.put_state("state/ports/y", {"host_id": "h2"})
    wait_until(lambda: got["state/ports/y"][-1] == {"host_id": "h2"})
    a.delete_state("state/ports/x")
    wait_until(lambda: got["state/ports/x"][-1] is None)
    a.put_state("state/ports/x", {"host_id": "h3"})
    wait_until(lambda: got["state/ports/x"][-1] == {"host_id": "h3"})
    assert got["state/ports/x"] == [{"host_id": "h1"}, None, {"host_id": "h3"}]


def test_children_of_many_paths_missing_deleted_and_made_again(zk_store_factory):
    a, b = zk_store_factory(), zk_store_factory()
    a.put_state("tables/bridges/b1/macs/m1,p1", {})
    got: dict[str, list] = {}
    paths_ = [f"tables/bridges/b{i}/macs" for i in range(1, 4)]
    b.watch_states_children(paths_, lambda p: lambda names: got.setdefault(p, []).append(names))
    assert got == {paths_[0]: [["m1,p1"]], paths_[1]: [[]], paths_[2]: [[]]}
    a.put_state("tables/bridges/b2/macs/m2,p2", {})  # its parent did not exist
    wait_until(lambda: got[paths_[1]][-1] == ["m2,p2"])
    a.delete_state("tables/bridges/b1/macs")
    wait_until(lambda: got[paths_[0]][-1] == [])
    a.put_state("tables/bridges/b1/macs/m3,p3", {})
    wait_until(lambda: got[paths_[0]][-1] == ["m3,p3"])
    assert got[paths_[2]] == [[]]  # nothing changed there: nothing delivered again


def test_a_replaced_client_keeps_the_batch_watches(zk_store):
    zk_store.commit([Create(PORTS, _port(1))])
    seen = []
    zk_store.watch_objects(PORTS, ["p1"], lambda _oid: lambda d, v: seen.append(v))
    zk_store._replace_client(zk_store._client)  # what the watchdog does
    zk_store.commit([Update(PORTS, _port(1, "after"))])
    wait_until(lambda: seen and seen[-1] == 1)


def test_batch_watches_survive_session_expiry(zk_store, zk_server):
    from kazoo.client import KazooClient

    zk_store.commit([Create(PORTS, _port(1)), Create(PORTS, _port(2))])
    seen: dict[str, list] = {}
    zk_store.watch_objects(PORTS, ["p1", "p2"], lambda oid: lambda d, v: seen.setdefault(
        oid, []).append(d and d.get("name")))
    old = zk_store._client.client_id[0]
    evil = KazooClient(hosts=zk_server.hosts, client_id=zk_store._client.client_id)
    evil.start(timeout=5)  # takes the session over and closes it: expired
    evil.stop()
    evil.close()
    wait_until(lambda: zk_store._client.client_id and zk_store._client.client_id[0] != old
               and zk_store.health()["connected"], timeout=15, what="a new session")
    # the new session has none of the old watches: the followers read again
    zk_store.commit([Update(PORTS, _port(2, "after expiry"))])
    wait_until(lambda: seen["p2"][-1] == "after expiry", what="a change after expiry")
    assert seen["p1"] == [""]  # unchanged: not delivered again


def test_queued_requests_go_out_in_batches_and_are_answered_in_order(zk_store):
    zk_store.commit([Create(PORTS, _port(i, f"n{i}")) for i in range(400)])
    conn = zk_store._client._connection
    writes: list[int] = []
    real = conn._write
    conn._write = lambda msg, timeout: (writes.append(len(msg)), real(msg, timeout))[1]
    seen: dict[str, str | None] = {}
    zk_store.watch_objects(PORTS, [f"p{i}" for i in range(400)] + ["missing"],
                           lambda oid: lambda data, _v: seen.__setitem__(
                               oid, data and data.get("name")))
    assert seen == {**{f"p{i}": f"n{i}" for i in range(400)}, "missing": None}
    assert len(writes) <= 40  # 401 reads: kazoo alone writes each on its own
    zk_store.commit([Update(PORTS, _port(5, "renamed"))])  # single requests still go
    wait_until(lambda: seen["p5"] == "renamed")


def test_a_request_queued_without_its_wake_up_byte_goes_out_with_the_next(zk_store):
    from kazoo.protocol.serialization import Exists

    client = zk_store._client
    lost = client.handler.async_result()
    client._queue.append((Exists(zk_store.root, None), lost))  # no byte written for it
    assert zk_store.get_state("state/none") is None  # answered: no stall
    assert lost.get(timeout=5) is not None
