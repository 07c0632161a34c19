"""ZkStore against a real ZooKeeper (one server for the whole session, see
tests/conftest.py): the shared store contract plus what only ZooKeeper has
(sessions that die with their process, session expiry, the eventlet handler)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from midoflow.devenv.zookeeper import free_port
from midoflow.errors import Conflict, Unavailable
from midoflow.store.base import Create, Delete, Update
from midoflow.store.zookeeper import ZkStore
from tests.store_contract import StoreContract, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(zk_store):
    return zk_store


@pytest.fixture
def new_session(zk_store_factory):
    return zk_store_factory


class TestZkStore(StoreContract):
    def test_health_reports_zookeeper(self, store, zk_server):
        h = store.health()
        assert h["backend"] == "zookeeper"
        assert h["state"] == "CONNECTED"
        assert h["hosts"] == zk_server.hosts
        assert h["server_mode"] == "standalone"

    def test_layout_in_zookeeper(self, store, zk_store_factory):
        store.commit([Create("bridges", {"id": "b1"})])
        store.put_state("state/hosts/h1", {"up": True})
        c = KazooClient(hosts=zk_store_factory.hosts)
        c.start(timeout=5)
        try:
            root = zk_store_factory.root
            raw, stat = c.get(f"{root}/models/bridges/b1")
            assert json.loads(raw) == {"id": "b1"} and stat.version == 0
            assert c.exists(f"{root}/state/hosts/h1").ephemeralOwner == \
                store._client.client_id[0]
            for kind in ("hosts", "tunnel_zones", "bridges", "ports"):
                assert c.exists(f"{root}/models/{kind}")  # made at start
        finally:
            c.stop()
            c.close()

    def test_conflict_between_two_sessions(self, store, new_session):
        other = new_session()
        store.commit([Create("bridges", {"id": "b1", "v": 0})])
        _, ver = other.get("bridges", "b1")
        store.commit([Update("bridges", {"id": "b1", "v": 1}, ver)])
        with pytest.raises(Conflict, match="bridges b1 changed meanwhile"):
            other.commit([Update("bridges", {"id": "b1", "v": 2}, ver)])
        with pytest.raises(Conflict):
            other.commit([Delete("bridges", "b1", ver)])

    def test_watch_sees_changes_from_another_session(self, store, new_session):
        api = new_session()
        seen: list = []
        store.watch_kind("ports", seen.append)
        api.commit([Create("ports", {"id": "p1"})])
        wait_until(lambda: seen[-1] == ["p1"])

    def test_session_expiry_recreates_ephemerals_and_keeps_watches(self, store, zk_server):
        store.put_state("state/hosts/h1", {"name": "h1"})
        store.put_state("state/ports/p1", {"host_id": "h1"})
        store.delete_state("state/ports/p1")  # no longer ours to restore
        seen: list = []
        store.watch_kind("bridges", seen.append)
        old_session = store._client.client_id[0]
        # Expire the session the way a long partition would: another client
        # takes over the session id and closes it.
        evil = KazooClient(hosts=zk_server.hosts, client_id=store._client.client_id)
        evil.start(timeout=5)
        evil.stop()
        evil.close()
        wait_until(lambda: store._client.client_id and
                   store._client.client_id[0] != old_session and
                   store.health()["connected"], timeout=15, what="a new session")
        wait_until(lambda: store.get_state("state/hosts/h1") == {"name": "h1"},
                   timeout=10, what="ephemeral re-created")
        assert store.get_state("state/ports/p1") is None
        store.commit([Create("bridges", {"id": "b1"})])
        wait_until(lambda: seen and seen[-1] == ["b1"], what="watch after session loss")

    def test_connect_to_nothing_is_unavailable_quickly(self):
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match="midoflow.devenv.zookeeper start"):
            ZkStore(f"127.0.0.1:{free_port()}", timeout=2.0)
        assert time.monotonic() - t0 < 5

    def test_closed_store_is_unavailable(self, zk_store_factory):
        s = zk_store_factory()
        s.close()
        with pytest.raises(Unavailable):
            s.get("bridges", "b1")
        assert s.health()["state"] == "CLOSED"


def _spawn(script: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


HOLDER = """
    import sys, time
    from midoflow.store.zookeeper import ZkStore
    s = ZkStore(sys.argv[1], root=sys.argv[2], timeout=2.0)
    s.put_state("state/hosts/h-dead", {"pid": 1})
    print("ready", flush=True)
    time.sleep(120)
"""


def test_ephemeral_goes_when_its_process_is_killed(zk_store_factory):
    store = zk_store_factory()
    seen: list = []
    store.watch_state_children("state/hosts", seen.append)
    proc = _spawn(HOLDER, zk_store_factory.hosts, zk_store_factory.root)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert store.get_state("state/hosts/h-dead") == {"pid": 1}
        wait_until(lambda: seen[-1] == ["h-dead"])
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        wait_until(lambda: store.get_state("state/hosts/h-dead") is None, timeout=10,
                   what="the killed process's ephemeral to vanish")
        gone_after = time.monotonic() - t0
        wait_until(lambda: seen[-1] == [], what="children watch to see it go")
        assert gone_after < 8, gone_after  # session timeout 2 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


EVENTLET_APP = """
    import eventlet
    eventlet.monkey_patch(thread=False)  # like osken-manager's hub.patch(thread=False)
    import json, sys
    from midoflow.store.base import Create
    from midoflow.store.zookeeper import ZkStore
    s = ZkStore(sys.argv[1], root=sys.argv[2], handler="eventlet", timeout=5.0)
    seen = []
    s.watch_kind("hosts", seen.append)
    def writer():
        for i in range(3):
            s.commit([Create("hosts", {"id": f"h{i}"})])
    eventlet.spawn(writer).wait()
    for _ in range(200):
        if seen[-1] == ["h0", "h1", "h2"]:
            break
        eventlet.sleep(0.01)
    s.put_state("state/hosts/h0", {"up": True})
    out = {"seen": seen[-1], "counter": [s.next_counter("c") for _ in range(3)],
           "state": s.get_state("state/hosts/h0"), "health": s.health()["state"]}
    s.close()
    print(json.dumps(out), flush=True)
"""


def test_eventlet_handler(zk_store_factory):
    proc = _spawn(EVENTLET_APP, zk_store_factory.hosts, zk_store_factory.root)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res == {"seen": ["h0", "h1", "h2"], "counter": [1, 2, 3],
                   "state": {"up": True}, "health": "CONNECTED"}
