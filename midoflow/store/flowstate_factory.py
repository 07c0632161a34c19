"""The agent's flow-state store, from its configuration: the local one, or
Cassandra reached lazily (an agent starts, and forwards, while Cassandra is
down; it connects when it can and says so). The os-ken app injects it into
the agent core, which sees only the FlowStateStore interface (as
:mod:`midoflow.store.factory` does for the topology store)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence

from midoflow.nat.flowstate import (
    Entry,
    FlowStateStore,
    FlowStateUnavailable,
    LocalFlowState,
)
from midoflow.store.credentials import StoreCredentials
from midoflow.store.endpoints import parse_cassandra

LOG = logging.getLogger(__name__)
RETRY_SECONDS = 5.0


class LazyCassandra(FlowStateStore):
    """Connects on first use. One connection for all callers: those that come
    while it is being made wait for it (under ``osken-manager`` the lock is
    green: it is made after eventlet patched ``threading``)."""

    def __init__(self, hosts: list[str], port: int, keyspace: str, eventlet: bool,
                 auth: tuple[str, str] | None = None) -> None:
        self.hosts, self.port, self.keyspace, self.eventlet = hosts, port, keyspace, eventlet
        self._auth = auth
        self._store: FlowStateStore | None = None
        self._next_try = 0.0
        self._connecting = threading.Lock()

    def _get(self) -> FlowStateStore:
        if self._store is not None:
            return self._store
        with self._connecting:
            return self._connect()

    def _connect(self) -> FlowStateStore:
        if self._store is not None:  # made while this caller waited
            return self._store
        now = time.monotonic()
        if now < self._next_try:
            raise FlowStateUnavailable(f"Cassandra at {self.hosts} unreachable; next try in "
                                       f"{max(1.0, self._next_try - now):.0f} s")
        from midoflow.store.cassandra_flowstate import CassandraFlowState

        try:
            self._store = CassandraFlowState(self.hosts, self.port, keyspace=self.keyspace,
                                             eventlet=self.eventlet,
                                             replication_factor=min(3, len(self.hosts)),
                                             auth=self._auth)
            LOG.info("flow state: connected to Cassandra at %s", ",".join(self.hosts))
        except (FlowStateUnavailable, OSError) as e:
            self._next_try = now + RETRY_SECONDS
            raise FlowStateUnavailable(str(e)) from e
        return self._store

    def save(self, port_ids: Iterable[str], entries: Sequence[Entry], ttl: int) -> None:
        self._get().save(port_ids, entries, ttl)

    def load(self, port_id: str) -> list[Entry]:
        return self._get().load(port_id)

    def delete(self, port_ids: Iterable[str], entries: Sequence[Entry]) -> None:
        self._get().delete(port_ids, entries)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def make_flow_state(spec: str, eventlet: bool = False,
                    credentials: StoreCredentials | None = None) -> FlowStateStore:
    """``local`` or ``cassandra:HOST[,HOST...][:PORT][/KEYSPACE]``; with
    ``credentials`` holding a ``[cassandra]`` login, Cassandra is logged into
    with it."""
    if spec == "local":
        return LocalFlowState()
    parsed = parse_cassandra(spec)
    if parsed is None:
        raise ValueError(f"bad flow_state {spec!r}")
    login = credentials.cassandra if credentials is not None else None
    return LazyCassandra(*parsed, eventlet=eventlet, auth=tuple(login) if login else None)
