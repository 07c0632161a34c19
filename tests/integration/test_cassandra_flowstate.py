"""CassandraFlowState against one real Cassandra 5.0 node (the session's
``cassandra_server``): round trip, a new client session after an "agent
restart", TTL expiry, delete, QUORUM on every statement, schema, validation,
eventlet, and a fast, clear failure when no server answers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel
from cassandra.query import BatchStatement

from midoflow.devenv.cassandra import free_port
from midoflow.nat.flowstate import CONNTRACK, NAT, Entry, FlowStateStore, FlowStateUnavailable
from midoflow.store.cassandra_flowstate import CassandraFlowState
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cassandra]

REPO = Path(__file__).resolve().parents[2]

CT1 = Entry(CONNTRACK, "tcp:10.0.0.1:1234>10.0.0.2:80")
CT2 = Entry(CONNTRACK, "tcp:10.0.0.1:1235>10.0.0.2:80")
NAT1 = Entry(NAT, "snat:tcp:10.0.0.1:1234>8.8.8.8:53", "203.0.113.5:40001")


@pytest.fixture(scope="module")
def keyspace(cassandra_server):
    """A keyspace of this module's own, dropped at the end."""
    ks = f"t_{uuid.uuid4().hex[:12]}"
    yield ks
    try:
        with CassandraFlowState([cassandra_server.address], cassandra_server.native_port,
                                keyspace=ks, create_schema=False,
                                auth=cassandra_server.credentials) as s:
            s.session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=30)
    except Exception:  # the server may be gone; nothing to clean then
        pass


@pytest.fixture
def make_store(cassandra_server, keyspace):
    """``make_store(**kw)`` -> a new client session (RF 1) on this module's
    keyspace; all closed afterwards."""
    stores: list[CassandraFlowState] = []

    def factory(**kw) -> CassandraFlowState:
        kw.setdefault("keyspace", keyspace)
        kw.setdefault("replication_factor", 1)
        kw.setdefault("auth", cassandra_server.credentials)
        s = CassandraFlowState([cassandra_server.address], cassandra_server.native_port, **kw)
        stores.append(s)
        return s

    yield factory
    for s in stores:
        s.close()


@pytest.fixture
def store(make_store) -> CassandraFlowState:
    return make_store()


def port_id() -> str:
    return f"port-{uuid.uuid4()}"


def test_is_a_flow_state_store(store):
    assert isinstance(store, FlowStateStore)


def test_round_trip(store):
    p_in, p_out = port_id(), port_id()
    store.save([p_in, p_out], [NAT1, CT2, CT1], ttl=60)
    store.save([p_in], [Entry(CONNTRACK, "only-in")], ttl=60)
    assert store.load(p_out) == [CT1, CT2, NAT1]
    assert store.load(p_in) == sorted([CT1, CT2, NAT1, Entry(CONNTRACK, "only-in")])
    assert store.load(port_id()) == []


def test_save_again_replaces_value_and_last_duplicate_wins(store):
    p = port_id()
    store.save([p], [NAT1], ttl=60)
    newer = Entry(NAT, NAT1.key, "203.0.113.5:40002")
    store.save([p], [newer], ttl=60)
    assert store.load(p) == [newer]
    newest = Entry(NAT, NAT1.key, "203.0.113.5:40003")
    store.save([p], [NAT1, newest], ttl=60)  # the same key twice in one save
    assert store.load(p) == [newest]


def test_new_client_session_reads_back(make_store):
    """An agent restart: state written by one client is read by a new one."""
    p1, p2 = port_id(), port_id()
    first = make_store()
    first.save([p1, p2], [CT1, NAT1], ttl=60)
    first.close()
    second = make_store()
    assert second is not first
    assert second.load(p1) == [CT1, NAT1]
    assert second.load(p2) == [CT1, NAT1]


def test_ttl_expiry(store):
    p = port_id()
    store.save([p], [CT1, NAT1], ttl=2)
    store.save([p], [CT2], ttl=60)
    t0 = time.monotonic()
    assert store.load(p) == [CT1, CT2, NAT1]
    # Cassandra expires at whole-second granularity: gone within ttl + 1 s.
    wait_until(lambda: store.load(p) == [CT2], 6, "the 2 s entries to expire",
               interval=0.2)
    assert time.monotonic() - t0 >= 1.0


def test_save_again_refreshes_ttl(store):
    p, control = port_id(), port_id()
    store.save([p, control], [CT1], ttl=2)
    store.save([p], [CT1], ttl=60)  # traffic refreshed the key (of p only)
    # once the control copy, saved with the same 2 s TTL, has expired, so would have p's
    wait_until(lambda: store.load(control) == [], 6, "the control entry (ttl 2 s) to expire",
               interval=0.2)
    assert store.load(p) == [CT1]


def test_delete(store):
    p_in, p_out = port_id(), port_id()
    store.save([p_in, p_out], [CT1, CT2, NAT1], ttl=60)
    store.delete([p_in, p_out], [CT1])
    assert store.load(p_in) == [CT2, NAT1]
    assert store.load(p_out) == [CT2, NAT1]
    store.delete([p_out], [CT2, Entry(NAT, NAT1.key)])  # the value is not needed
    assert store.load(p_out) == []
    assert store.load(p_in) == [CT2, NAT1]
    store.delete([port_id()], [CT1])  # nothing there: harmless


def test_many_entries_are_batched_per_port(make_store):
    store = make_store(batch_size=50)
    ports = [port_id() for _ in range(3)]
    entries = [Entry(CONNTRACK, f"tcp:10.0.0.1:{i}>10.0.0.2:80") for i in range(120)]
    statements = store._batches(store.prepared["insert"], ports,
                                [(e.kind, e.key, e.value, 60) for e in entries])
    assert len(statements) == 3 * 3  # 50 + 50 + 20 per port
    store.save(ports, entries, ttl=60)
    for p in ports:
        assert store.load(p) == sorted(entries)
    store.delete(ports, entries[:100])
    assert all(store.load(p) == sorted(entries[100:]) for p in ports)


def test_every_statement_is_prepared_at_quorum(store):
    assert set(store.prepared) == {"insert", "select", "delete"}
    for name, ps in store.prepared.items():
        assert ps.consistency_level == ConsistencyLevel.QUORUM, name
        assert ps.is_idempotent, name
    assert "USING TTL ?" in store.prepared["insert"].query_string
    rows = [(CT1.kind, CT1.key, CT1.value, 60), (CT2.kind, CT2.key, CT2.value, 60)]
    batches = store._batches(store.prepared["insert"], ["a", "b"], rows)
    assert len(batches) == 2  # one per port (partition)
    for b in batches:
        assert isinstance(b, BatchStatement)
        assert b.consistency_level == ConsistencyLevel.QUORUM
        assert b.batch_type.name == "UNLOGGED"
    single = store._batches(store.prepared["delete"], ["a"], [(CT1.kind, CT1.key)])
    assert [s.consistency_level for s in single] == [ConsistencyLevel.QUORUM]


def test_schema_created_with_given_replication(cassandra_server):
    ks = f"t_{uuid.uuid4().hex[:12]}"
    with CassandraFlowState([cassandra_server.address], cassandra_server.native_port,
                            keyspace=ks, replication_factor=1,
                            auth=cassandra_server.credentials) as s:
        row = s.session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (ks,)).one()
        assert row.replication["replication_factor"] == "1"
        assert row.replication["class"].endswith("SimpleStrategy")
        table = s._cluster.metadata.keyspaces[ks].tables["flow_state"]
        assert [c.name for c in table.partition_key] == ["port_id"]
        assert [c.name for c in table.clustering_key] == ["kind", "key"]
        assert table.columns["value"].cql_type == "text"
        p = port_id()
        s.save([p], [CT1], ttl=30)
        # A second client finds the schema there and does not mind.
        with CassandraFlowState([cassandra_server.address], cassandra_server.native_port,
                                keyspace=ks, replication_factor=3,
                                auth=cassandra_server.credentials) as again:
            assert again.load(p) == [CT1]
        s.session.execute(f"DROP KEYSPACE {ks}", timeout=30)


@pytest.mark.parametrize("ttl", [0, -1, 1.5, "60", None, True, 10**10])
def test_bad_ttl_rejected(store, ttl):
    p = port_id()
    with pytest.raises(ValueError, match="ttl"):
        store.save([p], [CT1], ttl=ttl)
    assert store.load(p) == []


@pytest.mark.parametrize("ports", [[""], ["ok", ""], [None], [5]])
def test_bad_port_ids_rejected(store, ports):
    with pytest.raises(ValueError, match="port id"):
        store.save(ports, [CT1], ttl=60)
    with pytest.raises(ValueError, match="port id"):
        store.delete(ports, [CT1])


def test_bad_arguments_rejected(store):
    with pytest.raises(ValueError, match="port id"):
        store.load("")
    with pytest.raises(TypeError, match="iterable"):
        store.save("port-1", [CT1], ttl=60)  # one id, not a list of its characters
    with pytest.raises(ValueError, match="key"):
        store.save([port_id()], [Entry(CONNTRACK, "")], ttl=60)
    with pytest.raises(ValueError, match="kind"):
        store.save([port_id()], [Entry("", "k")], ttl=60)
    with pytest.raises(TypeError, match="Entry"):
        store.save([port_id()], [("ct", "k", "")], ttl=60)
    with pytest.raises(ValueError, match="keyspace"):
        CassandraFlowState(["127.0.0.1"], keyspace="bad-name; DROP")
    with pytest.raises(ValueError, match="replication_factor"):
        CassandraFlowState(["127.0.0.1"], replication_factor=0)


def test_nothing_to_do_is_not_an_error(store):
    p = port_id()
    store.save([], [CT1], ttl=60)
    store.save([p], [], ttl=60)
    store.delete([], [CT1])
    assert store.load(p) == []
    store.save([p], [CT1], ttl=60)  # the session is still good
    assert store.load(p) == [CT1]


def test_no_server_fails_fast_and_clearly():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(FlowStateUnavailable) as err:
        CassandraFlowState(["127.0.0.1"], port, connect_timeout=2.0)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg
    assert "start Cassandra" in msg


def test_closed_store_raises(make_store):
    s = make_store()
    s.close()
    with pytest.raises(FlowStateUnavailable, match="closed"):
        s.load(port_id())


def test_eventlet_needs_green_threads(cassandra_server):
    # This process is not monkey patched: the EventletConnection would hang.
    with pytest.raises(RuntimeError, match="monkey_patch"):
        CassandraFlowState([cassandra_server.address], cassandra_server.native_port,
                           eventlet=True)


def _auth(server) -> tuple[str, str] | None:
    """The server's store login as a literal for a child script."""
    return tuple(server.credentials) if server.credentials else None


def _run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def test_eventlet_connection_like_osken_manager(cassandra_server, keyspace):
    """As under osken-manager: patched without threads first, then with them,
    then the apps (and so the driver) imported; green threads save and load
    concurrently through EventletConnection."""
    res = _run_python(f"""
        import eventlet
        eventlet.monkey_patch(thread=False)
        eventlet.monkey_patch(thread=True)
        from midoflow.store.cassandra_flowstate import CassandraFlowState
        from midoflow.nat.flowstate import Entry
        from cassandra.io.eventletreactor import EventletConnection
        s = CassandraFlowState([{cassandra_server.address!r}], {cassandra_server.native_port},
                               keyspace={keyspace!r}, eventlet=True,
                               auth={_auth(cassandra_server)!r})
        assert s._cluster.connection_class is EventletConnection
        def work(i):
            p = "evt-%d-{uuid.uuid4().hex[:8]}" % i
            s.save([p], [Entry("ct", "k%d" % i)], ttl=30)
            return s.load(p) == [Entry("ct", "k%d" % i)]
        results = list(eventlet.GreenPool(8).imap(work, range(16)))
        s.close()
        print("OK", sum(results))
    """)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-2:] == ["OK", "16"], res.stdout + res.stderr[-2000:]


def test_eventlet_refuses_a_driver_imported_before_threads_were_patched(cassandra_server):
    """Imported between the two patches, the driver's executor lock is real
    and green threads can block the hub on it forever: a clear error instead."""
    res = _run_python(f"""
        import eventlet
        eventlet.monkey_patch(thread=False)
        from midoflow.store.cassandra_flowstate import CassandraFlowState
        eventlet.monkey_patch(thread=True)
        try:
            CassandraFlowState([{cassandra_server.address!r}], {cassandra_server.native_port},
                               eventlet=True)
        except RuntimeError as e:
            print("REFUSED", e)
    """, timeout=30)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "REFUSED" in res.stdout and "patch threads before importing" in res.stdout, \
        res.stdout + res.stderr[-2000:]


def test_agent_store_connects_once_without_blocking_the_hub(cassandra_server, keyspace):
    """The agent's LazyCassandra as under osken-manager (patched without
    threads, then with them, then imported): green threads that
    need it at once (a restarted agent recovering its ports while packets
    arrive) share ONE connection, and the eventlet hub keeps running other
    green threads while it is made."""
    res = _run_python(f"""
        import eventlet
        eventlet.monkey_patch(thread=False)
        eventlet.monkey_patch(thread=True)
        from midoflow.store import flowstate_factory as flowstate_client
        import midoflow.store.cassandra_flowstate as cfs
        made = []
        class Counting(cfs.CassandraFlowState):
            def __init__(self, *a, **kw):
                made.append(1)
                super().__init__(*a, **kw)
        cfs.CassandraFlowState = Counting
        from midoflow.store.credentials import Login, StoreCredentials
        auth = {_auth(cassandra_server)!r}
        lazy = flowstate_client.make_flow_state(
            "cassandra:{cassandra_server.address}:{cassandra_server.native_port}/{keyspace}",
            eventlet=True, credentials=StoreCredentials(cassandra=Login(*auth)) if auth else None)
        ticks, done = [], []
        def ticker():
            while not done:
                ticks.append(1)
                eventlet.sleep(0.01)
        eventlet.spawn(ticker)
        pool = eventlet.GreenPool(8)
        results = list(pool.imap(lambda i: lazy.load("lazy-%d" % i), range(8)))
        done.append(1)
        lazy.close()
        print("OK", len(made), len(ticks), results == [[]] * 8)
    """)
    assert res.returncode == 0, res.stderr[-2000:]
    ok, made, ticks, loaded = res.stdout.split()[-4:]
    assert ok == "OK" and loaded == "True", res.stdout + res.stderr[-2000:]
    assert made == "1", f"{made} connections made for 8 concurrent first callers"
    assert int(ticks) >= 3, f"the hub ran other green threads only {ticks} times while connecting"


def test_imports_neither_os_ken_nor_kazoo():
    res = _run_python("""
        import sys
        import midoflow.store.cassandra_flowstate
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("os_ken", "kazoo"))
        print("BAD", bad)
    """)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "BAD []", res.stdout
