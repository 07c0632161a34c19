"""Where flow state (conntrack and NAT entries) is kept for recovery.

The agent holds live state in memory and pushes it to the hosts that may see
the return packet; this store keeps a replicated copy so that a restarted
agent, or the host a VM migrated to, gets its connections back. Entries are
filed under every port they concern (ingress and egress virtual ports), so a
host recovers by reading the state of the ports bound to it, as MidoNet did.

Two backends behind :class:`FlowStateStore`: :class:`LocalFlowState` (in
memory, single host and unit tests, here) and Cassandra
(``midoflow.store.cassandra_flowstate``: QUORUM writes, TTL).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Entry kinds.
CONNTRACK = "ct"  # key: a connection's forward key; value: "" (its existence is the state)
NAT = "nat"  # key: a NAT key (see midoflow.nat); value: the translated address and port


@dataclass(frozen=True, order=True)
class Entry:
    """One piece of flow state: ``kind`` and ``key`` name it, ``value`` is
    what it holds (a NAT binding, encoded as text by its owner)."""

    kind: str
    key: str
    value: str = ""


class FlowStateStore(ABC):
    @abstractmethod
    def save(self, port_ids: Iterable[str], entries: Sequence[Entry], ttl: int) -> None:
        """File ``entries`` under every port in ``port_ids``; they expire after
        ``ttl`` seconds unless saved again. Raises FlowStateUnavailable when the
        write cannot be acknowledged (Cassandra: by a QUORUM of replicas)."""

    @abstractmethod
    def load(self, port_id: str) -> list[Entry]:
        """Every live entry filed under the port."""

    @abstractmethod
    def delete(self, port_ids: Iterable[str], entries: Sequence[Entry]) -> None:
        """Forget entries (a connection closed) under those ports."""

    @abstractmethod
    def close(self) -> None: ...


class FlowStateUnavailable(RuntimeError):
    """The flow-state store cannot acknowledge a write or answer a read."""


class LocalFlowState(FlowStateStore):
    """In memory, with TTLs: one host, unit tests. Thread safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        # port -> (kind, key) -> (value, expires_at)
        self._ports: dict[str, dict[tuple[str, str], tuple[str, float]]] = {}

    def save(self, port_ids: Iterable[str], entries: Sequence[Entry], ttl: int) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        until = self.clock() + ttl
        with self._lock:
            for pid in port_ids:
                table = self._ports.setdefault(pid, {})
                for e in entries:
                    table[(e.kind, e.key)] = (e.value, until)

    def load(self, port_id: str) -> list[Entry]:
        now = self.clock()
        with self._lock:
            table = self._ports.get(port_id, {})
            live = {k: v for k, v in table.items() if v[1] > now}
            if len(live) != len(table):
                self._ports[port_id] = live
            return sorted(Entry(k[0], k[1], v[0]) for k, v in live.items())

    def delete(self, port_ids: Iterable[str], entries: Sequence[Entry]) -> None:
        with self._lock:
            for pid in port_ids:
                table = self._ports.get(pid)
                if table:
                    for e in entries:
                        table.pop((e.kind, e.key), None)

    def close(self) -> None:
        with self._lock:
            self._ports.clear()
