"""Learned routes written in batches to a real ZooKeeper (ZkStore.put_states /
delete_states): one multi per chunk, one change for a watcher, a chunk the
server refuses written node by node, ephemeral nodes gone with the session."""

from __future__ import annotations

import threading

from midoflow.store import paths
from tests.helpers import wait_until

R = "router-1"


def entries(n: int, start: int = 0) -> list[tuple[str, dict]]:
    return [(paths.learned_route_entry(R, f"10.{i // 250}.{i % 250}.0/24", "192.0.2.2", "up1",
                                       101), {"host_id": "gw"}) for i in range(start, n)]


def test_put_and_delete_states_in_batches(zk_store_factory):
    writer, watcher = zk_store_factory(), zk_store_factory()
    parent = paths.learned_routes(R)
    seen: list[int] = []
    lock = threading.Lock()

    def on_children(names):
        with lock:
            seen.append(len(names))

    writer.put_states(entries(1))  # the parent exists before the watch
    watcher.watch_state_children(parent, on_children)
    wait_until(lambda: seen and seen[-1] == 1, 5, "the watch's first call")
    writer.put_states(entries(1200, start=1))  # 3 chunks of at most 500
    wait_until(lambda: seen[-1] == 1200, 5, "1,200 learned routes seen by the watcher")
    assert len(watcher.list_state(parent)) == 1200
    assert len(seen) <= 1 + 3, seen  # one change per multi, not one per route
    # a chunk with a node that exists already is written node by node
    writer.put_states(entries(1205, start=1195))
    assert len(watcher.list_state(parent)) == 1205
    # deletes, one of them of a node that is gone already
    gone = [p for p, _ in entries(600)] + [paths.learned_route_entry(R, "10.99.0.0/24",
                                                                    "192.0.2.2", "up1", 101)]
    writer.delete_states(gone)
    assert len(watcher.list_state(parent)) == 605
    # ephemeral: they go with the writer's session
    writer.close()
    wait_until(lambda: watcher.list_state(parent) == [], 15, "the routes to go with the session")
