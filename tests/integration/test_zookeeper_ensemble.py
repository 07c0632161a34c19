"""ZkStore against a three-server ensemble on loopback ports, with servers
killed (SIGKILL) under it: one down keeps everything; two down (no quorum)
makes calls fail fast with Unavailable; back up, the client carries on."""

from __future__ import annotations

import time
import uuid

import pytest
from kazoo.client import KazooClient

from midoflow.devenv.zookeeper import ZooKeeperEnsemble
from midoflow.errors import Unavailable
from midoflow.store.base import Create, Update
from midoflow.store.zookeeper import ZkStore
from tests.store_contract import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.ensemble]


def _heal(ensemble: ZooKeeperEnsemble) -> None:
    for s in ensemble.servers:
        if not s.running():
            s.launch()
    ensemble.wait_quorum(30)


@pytest.fixture
def root(ensemble):
    root = f"/t-{uuid.uuid4().hex[:12]}"
    yield root
    _heal(ensemble)  # the next test starts from a whole ensemble
    c = KazooClient(hosts=ensemble.hosts, timeout=5)
    c.start(timeout=10)
    try:
        c.delete(root, recursive=True)
    finally:
        c.stop()
        c.close()


def retry(fn, timeout: float = 15.0):
    """Call ``fn`` until it does not raise Unavailable (the client is moving
    to another server)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _connected_server(ensemble, store):
    port = int(store.health()["server"].rsplit(":", 1)[1])
    return next(s for s in ensemble.servers if s.client_port == port)


def test_one_server_down_keeps_every_acknowledged_write(ensemble, root):
    store = ZkStore(ensemble.hosts, root=root, timeout=4.0, op_timeout=2.0)
    try:
        acked = []
        for i in range(30):
            store.commit([Create("ports", {"id": f"p{i}", "n": i})])
            acked.append(f"p{i}")
        victim = _connected_server(ensemble, store)  # the worst one to lose
        victim.kill()
        ids = retry(lambda: sorted(d["id"] for d, _ in store.list("ports")))
        assert ids == sorted(acked)
        for i in range(30, 40):  # writes still work with 2 of 3
            retry(lambda i=i: store.commit([Create("ports", {"id": f"p{i}", "n": i})]))
            acked.append(f"p{i}")
        retry(lambda: store.commit([Update("ports", {"id": "p0", "n": -1}, 0)]))
        assert store.get("ports", "p0") == ({"id": "p0", "n": -1}, 1)
        # the killed server comes back and catches up
        victim.start()
        only = ZkStore(victim.hosts, root=root, timeout=4.0)
        try:
            wait_until(lambda: len(only.list("ports")) == 40, timeout=10)
            assert sorted(d["id"] for d, _ in only.list("ports")) == sorted(acked)
        finally:
            only.close()
    finally:
        store.close()


def test_quorum_loss_fails_fast_then_recovers(ensemble, root):
    store = ZkStore(ensemble.hosts, root=root, timeout=4.0, op_timeout=2.0)
    try:
        store.commit([Create("bridges", {"id": "b1", "name": "red"})])
        store.put_state("state/hosts/h1", {"name": "h1"})
        cache: dict = {}
        kinds: list = []
        store.watch_object("bridges", "b1", lambda d, v: cache.update(b1=(d, v)))
        store.watch_kind("bridges", kinds.append)
        assert cache["b1"] == ({"id": "b1", "name": "red"}, 0)

        survivor = _connected_server(ensemble, store)
        victims = [s for s in ensemble.servers if s is not survivor]
        t0 = time.monotonic()
        for s in victims:
            s.kill()

        # every call returns quickly; within a few seconds they all say Unavailable
        first_unavailable = None
        while time.monotonic() - t0 < 15:
            c0 = time.monotonic()
            try:
                store.get("bridges", "b1")
            except Unavailable as e:
                assert "quorum" in str(e)
                first_unavailable = time.monotonic() - t0
                break
            finally:
                assert time.monotonic() - c0 < store.op_timeout + 1.0
            time.sleep(0.05)
        assert first_unavailable is not None and first_unavailable < 8, first_unavailable
        for call in (lambda: store.commit([Create("bridges", {"id": "b2"})]),
                     lambda: store.list("bridges"),
                     lambda: store.put_state("state/hosts/h2", {}),
                     lambda: store.next_counter("c")):
            c0 = time.monotonic()
            with pytest.raises(Unavailable):
                call()
            assert time.monotonic() - c0 < 1.0
        assert store.health()["connected"] is False
        # what the watches delivered is still there for the caller
        assert cache["b1"] == ({"id": "b1", "name": "red"}, 0)
        assert kinds[-1] == ["b1"]

        # quorum back: the same client carries on
        for s in victims:
            s.launch()
        ensemble.wait_quorum(30)
        wait_until(lambda: store.health()["connected"], timeout=15, what="reconnection")
        retry(lambda: store.commit([Create("bridges", {"id": "b2"}),
                                    Update("bridges", {"id": "b1", "name": "blue"}, 0)]))
        wait_until(lambda: kinds[-1] == ["b1", "b2"], what="kind watch after recovery")
        wait_until(lambda: cache["b1"] == ({"id": "b1", "name": "blue"}, 1),
                   what="object watch after recovery")
        # the ephemeral state of the session is there, seen by another client
        other = ZkStore(ensemble.hosts, root=root, timeout=4.0)
        try:
            wait_until(lambda: other.get_state("state/hosts/h1") == {"name": "h1"},
                       timeout=10, what="ephemeral state after recovery")
        finally:
            other.close()
    finally:
        store.close()
