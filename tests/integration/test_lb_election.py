"""The health checkers' election on a real ZooKeeper (kazoo's Election recipe
behind Store.elect): one leader at a time; when the leader's session closes,
or its process is killed, another contender leads within the session
timeout, and the member health entries stay as they were."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from midoflow.model import HEALTH_ERROR
from midoflow.store import paths
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT = 2.0


class Contender:
    def __init__(self, store, name: str) -> None:
        self.events: list[str] = []
        self.election = store.elect(paths.HEALTH_ELECTION, name,
                                    on_lead=lambda: self.events.append("lead"),
                                    on_lose=lambda: self.events.append("lose"))


def test_one_leader_and_takeover_on_close(zk_store_factory):
    a = zk_store_factory(timeout=SESSION_TIMEOUT)
    b = zk_store_factory(timeout=SESSION_TIMEOUT)
    ca = Contender(a, "host-a")
    wait_until(lambda: ca.events == ["lead"], what="the first contender to lead")
    cb = Contender(b, "host-b")
    wait_until(lambda: b.election_leader(paths.HEALTH_ELECTION) == "host-a",
               what="the leader seen by the other")
    time.sleep(0.3)  # (nothing to await: the second must stay a follower)
    assert cb.events == [] and not cb.election.leading
    a.put_state(paths.member_health("m1"), {"status": HEALTH_ERROR, "host_id": "host-a"},
                ephemeral=False)
    a.close()
    assert ca.events == ["lead", "lose"]
    wait_until(lambda: cb.events == ["lead"], timeout=SESSION_TIMEOUT + 3,
               what="the other contender to lead")
    assert b.get_state(paths.member_health("m1"))["status"] == HEALTH_ERROR
    cb.election.cancel()
    assert cb.events == ["lead", "lose"]
    wait_until(lambda: b.election_leader(paths.HEALTH_ELECTION) is None,
               what="the election to be empty")


LEADER = """
    import sys, time
    from midoflow.store.zookeeper import ZkStore
    from midoflow.store import paths
    s = ZkStore(sys.argv[1], root=sys.argv[2], timeout=float(sys.argv[3]))
    s.put_state(paths.member_health("m1"), {"status": "ERROR"}, ephemeral=False)
    s.elect(paths.HEALTH_ELECTION, "killed", lambda: print("lead", flush=True), lambda: None)
    time.sleep(120)
"""


def test_takeover_within_the_session_timeout_when_the_leader_is_killed(zk_store_factory):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LEADER),
                             zk_store_factory.hosts, zk_store_factory.root,
                             str(SESSION_TIMEOUT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "lead", proc.stderr.read()
        b = zk_store_factory(timeout=SESSION_TIMEOUT)
        cb = Contender(b, "survivor")
        assert b.election_leader(paths.HEALTH_ELECTION) == "killed"
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        wait_until(lambda: cb.events == ["lead"], timeout=SESSION_TIMEOUT * 4,
                   what="the survivor to lead")
        took = time.monotonic() - t0
        # ZooKeeper expires a session between 1 and 2 session timeouts after
        # its last heartbeat (its ticks round it up); add a margin for 2 cores
        assert took < SESSION_TIMEOUT * 2 + 2, took
        assert b.get_state(paths.member_health("m1")) == {"status": "ERROR"}
        assert b.election_leader(paths.HEALTH_ELECTION) == "survivor"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_leader_whose_session_expires_loses_and_contends_again(zk_store_factory):
    """A session expired under the leader (kazoo's LOST): it stops leading at
    once, and contends again on its new session."""
    a = zk_store_factory(timeout=SESSION_TIMEOUT)
    ca = Contender(a, "host-a")
    wait_until(lambda: ca.events == ["lead"], what="leading")
    client = a._client
    # force an expiry: another client on the same session id and password closes it
    sid, pwd = client.client_id
    twin = KazooClient(hosts=zk_store_factory.hosts, client_id=(sid, pwd), timeout=5)
    twin.start(timeout=5)
    twin.stop()
    twin.close()
    wait_until(lambda: ca.events[:2] == ["lead", "lose"], timeout=15,
               what="the leader to learn its session expired")
    wait_until(lambda: ca.events == ["lead", "lose", "lead"], timeout=15,
               what="leading again on the new session")
