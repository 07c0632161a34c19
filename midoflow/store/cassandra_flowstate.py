"""Flow state (conntrack and NAT entries) replicated in Cassandra.

    store = CassandraFlowState(["127.0.0.1"], port=9042, replication_factor=1)
    store.save([in_port, out_port], [Entry(CONNTRACK, key)], ttl=60)
    store.load(in_port)            # after an agent restart, on the new host of a VM
    store.close()

One table, one partition per virtual port, ``(kind, key)`` as clustering
columns, so recovering a port is a single-partition read::

    flow_state(port_id text, kind text, key text, value text,
               PRIMARY KEY ((port_id), kind, key))

Every statement is prepared once; writes carry ``USING TTL ?`` and run at
QUORUM, reads at QUORUM, so what a save acknowledged is what any later load
sees while a majority of the replicas is up (RF 3: one node may be down).

A save sends one UNLOGGED batch per port (partition): Cassandra applies a
single-partition batch as one mutation, atomically and in isolation on each
replica, in one round trip, and the batch log (what LOGGED buys) is only
needed across partitions. The per-port batches go out concurrently and the save
waits for all of them: multi-partition batches would only move the fan-out to
one coordinator. If any port's batch is not acknowledged by a QUORUM the save
raises :class:`FlowStateUnavailable` (the entries may have reached some
replicas; saving them again is harmless: the writes are idempotent).

Driver failures (no node reachable, too few replicas alive, timeouts) become
:class:`FlowStateUnavailable` with a message that says what to do.

With ``auth=(role, password)`` the session logs in with the driver's
``PlainTextAuthProvider`` (Cassandra's PasswordAuthenticator); a refused or
missing login is a :class:`FlowStateUnavailable` saying which credentials
to fix. The role needs CREATE on the keyspace's parent (``ALL KEYSPACES``)
the first time, when the store makes its keyspace and table, and owns them
from then on (see :mod:`midoflow.devenv.cassandra`).

The agent runs under eventlet (``osken-manager``): pass ``eventlet=True`` to use
the driver's ``EventletConnection``. Nothing here imports os-ken or kazoo.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

with warnings.catch_warnings():
    # cassandra.cluster imports its eventlet reactor (to detect monkey patching),
    # and eventlet announces its own deprecation on import: not ours to report.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import cassandra.cluster  # noqa: F401

from cassandra import (
    AuthenticationFailed,
    ConsistencyLevel,
    CoordinationFailure,
    OperationTimedOut,
    ReadTimeout,
    Unauthorized,
    Unavailable,
    WriteTimeout,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.connection import ConnectionException
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from midoflow.nat.flowstate import Entry, FlowStateStore, FlowStateUnavailable

DEFAULT_KEYSPACE = "midoflow"
DEFAULT_TABLE = "flow_state"
# Tombstones (deletes) are kept as long as hints are (Cassandra's default
# max_hint_window): a replica that was down for less than that gets them back
# by hints; entries live about a minute, so nothing older matters.
GC_GRACE_SECONDS = 3 * 3600
MAX_TTL = 20 * 365 * 24 * 3600  # Cassandra's limit (630720000 s)
QUORUM = ConsistencyLevel.QUORUM

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}\Z")

# Everything that means "the cluster cannot acknowledge this now".
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    NoHostAvailable,
    Unavailable,
    WriteTimeout,
    ReadTimeout,
    OperationTimedOut,
    CoordinationFailure,  # ReadFailure, WriteFailure
    ConnectionException,
    # refused by the authorizer: a lacking permission, or (most often) the
    # permissions could not be read because system_auth has lost its quorum
    Unauthorized,
)


def _check_id(port_id: object) -> str:
    if not isinstance(port_id, str) or not port_id:
        raise ValueError(f"port id must be a non-empty string, not {port_id!r}")
    return port_id


def _check_ports(port_ids: Iterable[str]) -> list[str]:
    if isinstance(port_ids, str):  # one id, not its characters
        raise TypeError("port_ids must be an iterable of port ids, not one string")
    return list(dict.fromkeys(_check_id(p) for p in port_ids))


def _check_entries(entries: Sequence[Entry]) -> list[Entry]:
    last: dict[tuple[str, str], Entry] = {}
    for e in entries:
        if not isinstance(e, Entry):
            raise TypeError(f"flow-state entries must be Entry objects, not {e!r}")
        if not isinstance(e.kind, str) or not e.kind:
            raise ValueError(f"entry kind must be a non-empty string: {e!r}")
        if not isinstance(e.key, str) or not e.key:
            raise ValueError(f"entry key must be a non-empty string: {e!r}")
        if not isinstance(e.value, str):
            raise ValueError(f"entry value must be a string: {e!r}")
        last[(e.kind, e.key)] = e  # one write per key; the last one given wins
    return list(last.values())


def _check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValueError(f"ttl must be a positive int (seconds), not {ttl!r}")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds, not {ttl}")
    return ttl


def _ident(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"{what} {name!r} is not a valid CQL name (letters, digits, _; "
                         f"starts with a letter; at most 48 characters)")
    return name.lower()


def _eventlet_connection_class() -> type:
    """The driver's EventletConnection, if this process is patched for it.

    It needs sockets *and* threads green: the driver's own threads (its
    executor, its timer scheduler) wait on locks the eventlet hub must be able
    to switch away from. Measured here: with ``monkey_patch(thread=False)``
    the first request never completes (``osken-manager`` patches threads too,
    unless run with ``--enable-debugger``).

    Patching after the import is not enough: ``concurrent.futures.thread``
    makes a module-level lock at import that every executor ``submit`` takes,
    and eventlet greens only RLocks made before it patched. If that lock is a
    real one, two green threads submitting at once block the hub for good
    (seen here: 8 green threads connecting at once hung in its submit). Under
    ``osken-manager`` the apps, hence the driver, are imported after both
    patches, so it is green."""
    import sys

    import eventlet.patcher

    missing = [m for m in ("socket", "select", "thread", "time")
               if not eventlet.patcher.is_monkey_patched(m)]
    if missing:
        raise RuntimeError(
            f"eventlet=True needs eventlet.monkey_patch() with {', '.join(missing)} patched "
            f"(osken-manager does so unless started with --enable-debugger); without it the "
            f"driver hangs")
    lock = getattr(sys.modules.get("concurrent.futures.thread"), "_global_shutdown_lock", None)
    if lock is not None and not type(lock).__module__.startswith("eventlet"):
        raise RuntimeError(
            "eventlet=True: concurrent.futures (which cassandra-driver uses) was imported "
            "before eventlet.monkey_patch() patched threads, so its executor lock is a real "
            "one that can block the eventlet hub for good: patch threads before importing "
            "cassandra or midoflow.store (osken-manager does so for its apps)")
    from cassandra.io.eventletreactor import EventletConnection

    return EventletConnection


class CassandraFlowState(FlowStateStore):
    """:class:`FlowStateStore` on a Cassandra cluster (cassandra-driver).

    ``contact_points``: addresses (or one comma-separated string) of some
    nodes, all on ``port``. ``replication_factor``: for the keyspace if it does
    not exist yet (1 for one node, 3 for a production cluster); ``replication``
    (a CQL replication map) overrides it, e.g. NetworkTopologyStrategy.
    ``eventlet=True`` uses the driver's EventletConnection (under
    ``osken-manager``); ``connection_class`` picks any other. The keyspace and
    table are created if missing unless ``create_schema=False``.
    ``protocol_version``: 4 by default, which Cassandra 3 to 5 speak. Not 5:
    with it cassandra-driver 3.30 now and then fails a connection with "CRC
    mismatch on header" (seen here twice in about 80 connections under
    eventlet; a known driver issue, PYTHON-1337); None negotiates (and logs a
    warning per downgrade). ``auth``: the (role, password) to log in with.
    """

    def __init__(self, contact_points: Sequence[str] | str = ("127.0.0.1",), port: int = 9042,
                 *, keyspace: str = DEFAULT_KEYSPACE, table: str = DEFAULT_TABLE,
                 replication_factor: int = 1, replication: dict[str, Any] | None = None,
                 eventlet: bool = False, connection_class: type | None = None,
                 connect_timeout: float = 5.0, request_timeout: float = 10.0,
                 batch_size: int = 100, create_schema: bool = True,
                 protocol_version: int | None = 4,
                 auth: tuple[str, str] | None = None) -> None:
        if isinstance(contact_points, str):
            contact_points = [p.strip() for p in contact_points.split(",")]
        self.contact_points = [p for p in contact_points if p]
        if not self.contact_points:
            raise ValueError("at least one Cassandra contact point is needed")
        if isinstance(replication_factor, bool) or not isinstance(replication_factor, int) \
                or replication_factor < 1:
            raise ValueError(f"replication_factor must be a positive int, not "
                             f"{replication_factor!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
        self.port = port
        self.keyspace = _ident(keyspace, "keyspace")
        self.table = _ident(table, "table")
        self.replication = dict(replication or {"class": "SimpleStrategy",
                                                "replication_factor": replication_factor})
        self.request_timeout = request_timeout
        self.batch_size = batch_size
        if connection_class is None and eventlet:
            connection_class = _eventlet_connection_class()
        self.connection_class = connection_class
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=QUORUM, request_timeout=request_timeout)
        kw: dict[str, Any] = {}
        if protocol_version is not None:
            kw["protocol_version"] = protocol_version
        if connection_class is not None:
            kw["connection_class"] = connection_class
        self.auth_user = None
        if auth is not None:
            self.auth_user, password = auth
            kw["auth_provider"] = PlainTextAuthProvider(username=self.auth_user,
                                                        password=password)
        self._cluster = Cluster(
            self.contact_points, port=port,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=connect_timeout, control_connection_timeout=connect_timeout,
            # A node that comes back is used again within seconds (the default
            # backs off up to 10 minutes).
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0),
            **kw)
        self._session: Session | None = None
        self.prepared: dict[str, PreparedStatement] = {}
        try:
            self._session = self._cluster.connect()
            if create_schema:
                self._create_schema()
            self._prepare()
        except DRIVER_ERRORS as e:
            self._cluster.shutdown()
            raise FlowStateUnavailable(self._explain("connect", e)) from e
        except BaseException:
            self._cluster.shutdown()
            raise

    # ------------------------------------------------------------------ setup

    @property
    def hosts(self) -> str:
        return ",".join(f"{h}:{self.port}" for h in self.contact_points)

    @property
    def qualified_table(self) -> str:
        return f"{self.keyspace}.{self.table}"

    def _create_schema(self) -> None:
        assert self._session is not None
        repl = ", ".join(f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}"
                         for k, v in self.replication.items())
        # Schema statements cannot be prepared; the names are checked identifiers.
        self._session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {{{repl}}}",
            timeout=max(self.request_timeout, 30.0))
        self._session.execute(
            f"CREATE TABLE IF NOT EXISTS {self.qualified_table} ("
            "port_id text, kind text, key text, value text, "
            "PRIMARY KEY ((port_id), kind, key)) "
            f"WITH gc_grace_seconds = {GC_GRACE_SECONDS} "
            "AND comment = 'midoflow flow state (conntrack, NAT) per virtual port'",
            timeout=max(self.request_timeout, 30.0))

    def _prepare(self) -> None:
        assert self._session is not None
        t = self.qualified_table
        texts = {
            "insert": f"INSERT INTO {t} (port_id, kind, key, value) VALUES (?, ?, ?, ?) "
                      "USING TTL ?",
            "select": f"SELECT kind, key, value FROM {t} WHERE port_id = ?",
            "delete": f"DELETE FROM {t} WHERE port_id = ? AND kind = ? AND key = ?",
        }
        for name, cql in texts.items():
            ps = self._session.prepare(cql)
            ps.consistency_level = QUORUM
            ps.is_idempotent = True  # upserts and deletes of given values: safe to retry
            self.prepared[name] = ps
        self.prepared["select"].fetch_size = 1000

    # --------------------------------------------------------------- helpers

    def _explain(self, op: str, e: BaseException) -> str:
        where = f"Cassandra at {self.hosts}"
        if isinstance(e, Unavailable):
            return (f"flow state {op} failed: {where} has {e.alive_replicas} of the "
                    f"{e.required_replicas} replicas a QUORUM needs alive: start the Cassandra "
                    f"nodes that are down, then retry")
        if isinstance(e, WriteTimeout | ReadTimeout):
            got = getattr(e, "received_responses", None)
            need = getattr(e, "required_responses", None)
            acks = f" ({got} of {need} replicas answered)" if need is not None else ""
            return (f"flow state {op} failed: a QUORUM of replicas did not answer {where} "
                    f"within the server's timeout{acks}: nodes are down or overloaded; check "
                    f"them (nodetool status) and retry")
        if isinstance(e, Unauthorized):
            if "timed out" in str(e) or "Unable to perform authorization" in str(e):
                return (f"flow state {op} failed: {where} could not check the permissions of "
                        f"role {self.auth_user!r} (a QUORUM of the system_auth replicas does "
                        f"not answer: nodes are down): start the Cassandra nodes that are "
                        f"down, then retry")
            return (f"flow state {op} failed: {where} refuses role {self.auth_user!r} on "
                    f"{self.qualified_table} ({e}): grant it the permissions (see "
                    f"midoflow/devenv/cassandra.py setup_auth)")
        if isinstance(e, CoordinationFailure):
            return (f"flow state {op} failed: replicas reported errors to {where} ({e}): see "
                    f"the Cassandra logs")
        if isinstance(e, OperationTimedOut):
            return (f"flow state {op} failed: no answer from {where} within "
                    f"{self.request_timeout:g} s: check that the nodes are up and not "
                    f"overloaded, then retry")
        if isinstance(e, NoHostAvailable):
            auth = [err for err in e.errors.values() if isinstance(err, AuthenticationFailed)]
            if auth and self.auth_user is None:
                return (f"flow state {op} failed: {where} requires a password: give the agent "
                        f"the store credentials file with a [cassandra] section "
                        f"(credentials_file in its config)")
            if auth:
                return (f"flow state {op} failed: {where} refused the login of role "
                        f"{self.auth_user!r}: check the [cassandra] user and password of the "
                        f"store credentials file")
            errs = "; ".join(f"{h}: {err}" for h, err in list(e.errors.items())[:3])
            return (f"flow state {op} failed: no node of {where} could be used"
                    f"{' (' + errs + ')' if errs else ''}: start Cassandra (for tests: "
                    f"python -m midoflow.devenv.cassandra start) or fix the contact points")
        return f"flow state {op} failed: {where}: {type(e).__name__}: {e}: check the nodes"

    @property
    def session(self) -> Session:
        if self._session is None:
            raise FlowStateUnavailable("the Cassandra flow-state store is closed")
        return self._session

    def _run_all(self, op: str, statements: list) -> None:
        """Execute concurrently; wait for every one; raise on the first failure."""
        session = self.session
        futures = []
        try:
            for st in statements:
                futures.append(session.execute_async(st, timeout=self.request_timeout))
        except DRIVER_ERRORS as e:
            raise FlowStateUnavailable(self._explain(op, e)) from e
        first: BaseException | None = None
        for f in futures:
            try:
                f.result()
            except DRIVER_ERRORS as e:
                first = first or e
        if first is not None:
            raise FlowStateUnavailable(self._explain(op, first)) from first

    def _batches(self, ps: PreparedStatement, port_ids: list[str],
                 rows: list[tuple]) -> list:
        """One UNLOGGED batch per port (per ``batch_size`` rows) of ``ps``
        bound to ``(port_id, *row)``; a single statement when there is one row."""
        out: list = []
        for pid in port_ids:
            for i in range(0, len(rows), self.batch_size):
                chunk = rows[i:i + self.batch_size]
                if len(chunk) == 1:
                    out.append(ps.bind((pid, *chunk[0])))
                    continue
                batch = BatchStatement(BatchType.UNLOGGED, consistency_level=QUORUM)
                for row in chunk:
                    batch.add(ps, (pid, *row))
                batch.is_idempotent = True
                out.append(batch)
        return out

    # ------------------------------------------------------------------- API

    def save(self, port_ids: Iterable[str], entries: Sequence[Entry], ttl: int) -> None:
        ttl = _check_ttl(ttl)
        ports = _check_ports(port_ids)
        rows = [(e.kind, e.key, e.value, ttl) for e in _check_entries(entries)]
        if ports and rows:
            self._run_all("save", self._batches(self.prepared["insert"], ports, rows))

    def load(self, port_id: str) -> list[Entry]:
        _check_id(port_id)
        try:
            result = self.session.execute(self.prepared["select"], (port_id,),
                                          timeout=self.request_timeout)
            # Iterating may fetch more pages: failures there are mapped too.
            return sorted(Entry(r.kind, r.key, r.value or "") for r in result)
        except DRIVER_ERRORS as e:
            raise FlowStateUnavailable(self._explain("load", e)) from e

    def delete(self, port_ids: Iterable[str], entries: Sequence[Entry]) -> None:
        ports = _check_ports(port_ids)
        rows = [(e.kind, e.key) for e in _check_entries(entries)]
        if ports and rows:
            self._run_all("delete", self._batches(self.prepared["delete"], ports, rows))

    def close(self) -> None:
        self._session = None
        self._cluster.shutdown()

    def __enter__(self) -> CassandraFlowState:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CassandraFlowState({self.hosts}, {self.qualified_table})"
