"""Shared fixtures.

* ``zk_server`` (session): ONE real ZooKeeper for the whole run (per
  pytest-xdist worker). ``MIDOFLOW_ZK_HOSTS=127.0.0.1:2181`` uses a server
  you started yourself instead.
* ``zk_store``: a :class:`ZkStore` on that server under a root of its own
  (``/t-<uuid>``), removed afterwards.
* ``zk_store_factory``: more sessions on the same root (another host, an API
  process); all closed afterwards.
* ``ensemble`` (module): a three-server ZooKeeper ensemble for fault tests.
* ``cassandra_server`` (session): ONE real Cassandra node, started on first
  use, with password authentication (``.credentials``: the store role's
  login; ``MIDOFLOW_CASSANDRA_HOSTS`` uses yours, with the ``[cassandra]``
  login of the file ``MIDOFLOW_STORE_CREDENTIALS`` names, if any).

Each starts through :func:`tests.helpers.running`: a server that cannot start
fails the test with the reason, and is always stopped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from tests.fixtures_keystone import keystone_server  # noqa: F401
from tests.helpers import running


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class _ExternalZk:
    def __init__(self, hosts: str) -> None:
        self.hosts = hosts


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory):
    hosts = os.environ.get("MIDOFLOW_ZK_HOSTS")
    if hosts:
        yield _ExternalZk(hosts)
        return
    from midoflow.devenv.zookeeper import ZooKeeperError, ZooKeeperServer

    server = ZooKeeperServer(tmp_path_factory.mktemp(f"zk-{_worker()}"))
    with running(server, "ZooKeeper", ZooKeeperError):
        yield server


def _drop_root(hosts: str, root: str) -> None:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts, timeout=5)
    try:
        client.start(timeout=5)
        client.delete(root, recursive=True)
    except Exception:  # the server may be gone (fault tests); nothing to clean then
        pass
    finally:
        client.stop()
        client.close()


@pytest.fixture
def zk_store_factory(zk_server) -> Callable:
    """``factory(**kw)`` -> a new ZkStore session on this test's root."""
    from midoflow.store.zookeeper import ZkStore

    root = f"/t-{uuid.uuid4().hex[:12]}"
    stores: list[ZkStore] = []

    def factory(**kw) -> ZkStore:
        kw.setdefault("root", root)
        kw.setdefault("timeout", 10.0)
        s = ZkStore(zk_server.hosts, **kw)
        stores.append(s)
        return s

    factory.root = root
    factory.hosts = zk_server.hosts
    yield factory
    for s in stores:
        s.close()
    _drop_root(zk_server.hosts, root)


@pytest.fixture
def zk_store(zk_store_factory):
    return zk_store_factory()


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """A three-server ZooKeeper ensemble on loopback ports, one per test module
    (fault tests kill and restart its servers)."""
    from midoflow.devenv.zookeeper import ZooKeeperEnsemble, ZooKeeperError

    ens = ZooKeeperEnsemble(tmp_path_factory.mktemp("zk-ensemble"), n=3)
    with running(ens, "a 3-server ZooKeeper ensemble", ZooKeeperError, stop="kill"):
        yield ens


# ------------------------------------------------------------------ Cassandra


class _ExternalCassandra:
    def __init__(self, hosts: str) -> None:
        addrs = [h.strip() for h in hosts.split(",") if h.strip()]
        self.addresses = [a.rsplit(":", 1)[0] for a in addrs]
        self.native_port = int(addrs[0].rsplit(":", 1)[1]) if ":" in addrs[0] else 9042
        self.address = self.addresses[0]
        self.hosts = hosts
        from midoflow.store.credentials import credentials_from_env

        creds = credentials_from_env()
        self.credentials = creds.cassandra if creds else None
        self.credentials_path = creds.path if creds else None
        self.admin_credentials = self.credentials


@pytest.fixture(scope="session")
def cassandra_server(tmp_path_factory):
    """ONE real Cassandra 5.0 node for the whole run (per xdist worker), started
    on first use (tens of seconds; the jars are resolved first if missing).
    ``MIDOFLOW_CASSANDRA_HOSTS=127.0.0.1:9042`` uses a node you started yourself.
    Tests share it: each uses its own keyspace or its own port ids."""
    hosts = os.environ.get("MIDOFLOW_CASSANDRA_HOSTS")
    if hosts:
        yield _ExternalCassandra(hosts)
        return
    from midoflow.devenv.cassandra import CassandraError, CassandraNode

    node = CassandraNode(tmp_path_factory.mktemp(f"cassandra-{_worker()}"), quiet=False)
    # kill: its data is thrown away, no need to drain
    with running(node, "Cassandra", CassandraError, stop="kill"):
        yield node
