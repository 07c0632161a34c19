"""The topology store interface, implemented by ZooKeeper and in memory.

Two kinds of data:

* **models** (``kind``/``id``): persistent topology written by the API only,
  JSON dicts with a version for optimistic concurrency. Several changes are
  committed atomically with :meth:`Store.commit`.
* **state** (slash-separated ``path`` under the store root): what agents
  publish, usually ephemeral (it vanishes with the session that wrote it):
  host liveness, active ports, replicated MAC tables. See :mod:`.paths`.

Watch callbacks are called once with the current value and then on every
change; a callback that returns ``False`` ends its watch.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from midoflow.errors import TooLarge

Data = dict[str, Any]

# ZooKeeper refuses a request longer than jute.maxbuffer (1 MiB - 1 by default)
# and drops the connection it came on, failing every call in flight with it.
# Every backend refuses a transaction over MAX_TXN_BYTES (that limit less a
# margin for paths, ACLs and headers) before sending it: 413, nothing written.
ZK_MAX_BUFFER = 0xFFFFF
MAX_TXN_BYTES = ZK_MAX_BUFFER - 64 * 1024
_OP_OVERHEAD = 160  # per op: headers, flags, ACL, the store's root and kind in the path


@dataclass(frozen=True)
class Create:
    kind: str
    data: Data  # must hold "id"


@dataclass(frozen=True)
class Update:
    kind: str
    data: Data  # must hold "id"
    version: int | None = None  # None: unconditional


@dataclass(frozen=True)
class Delete:
    kind: str
    id: str
    version: int | None = None


@dataclass(frozen=True)
class Check:
    """Fails the transaction unless the object exists at this version."""

    kind: str
    id: str
    version: int


Op = Create | Update | Delete | Check


def encode(data: Data) -> bytes:
    """How an object is stored (compact JSON, sorted keys)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def txn_size(ops: Sequence[Op]) -> int:
    """An upper estimate of the transaction's size on the wire to ZooKeeper."""
    n = 0
    for op in ops:
        if isinstance(op, Create | Update):
            n += _OP_OVERHEAD + len(encode(op.data))
        else:
            n += _OP_OVERHEAD + len(str(op.id).encode())
    return n


def too_large(size: int, limit: int = MAX_TXN_BYTES) -> TooLarge:
    return TooLarge(
        f"the change is too large to store: its transaction is {size:,} bytes, over the "
        f"limit of {limit:,} bytes (ZooKeeper's 1 MiB jute.maxbuffer less a margin); make "
        "it smaller: fewer addresses, fixed IPs, ports or rules in one object or request")


def check_txn_size(ops: Sequence[Op]) -> None:
    """TooLarge (413) if the transaction could exceed ZooKeeper's limit."""
    size = txn_size(ops)
    if size > MAX_TXN_BYTES:
        raise too_large(size)


class Election(ABC):
    """This session's place in a leader election (see :meth:`Store.elect`)."""

    @property
    @abstractmethod
    def leading(self) -> bool:
        """Whether this session leads now."""

    @abstractmethod
    def cancel(self) -> None:
        """Leave the election (``on_lose`` first if leading); idempotent."""


class Store(ABC):
    # ---- models -----------------------------------------------------------
    @abstractmethod
    def get(self, kind: str, id: str) -> tuple[Data, int]:
        """The object and its version; raises NotFound."""

    @abstractmethod
    def list(self, kind: str) -> list[tuple[Data, int]]:
        """All objects of a kind with their versions."""

    @abstractmethod
    def commit(self, ops: Sequence[Op]) -> None:
        """Apply all ops or none. Raises Conflict (exists / stale version),
        NotFound (missing object), TooLarge (over :data:`MAX_TXN_BYTES`),
        Unavailable (no quorum)."""

    @abstractmethod
    def next_counter(self, name: str) -> int:
        """A cluster-wide increasing integer (1, 2, ...), never given twice."""

    @abstractmethod
    def watch_kind(self, kind: str, cb: Callable[[list[str]], Any]) -> None:
        """Watch the set of ids of a kind."""

    @abstractmethod
    def watch_object(self, kind: str, id: str, cb: Callable[[Data | None, int], Any]) -> None:
        """Watch one object; ``None`` once it is deleted (then the watch ends)."""

    def watch_objects(self, kind: str, ids: Sequence[str],
                      cb_of: Callable[[str], Callable[[Data | None, int], Any]]) -> None:
        """:meth:`watch_object` for each id, callback ``cb_of(id)``; every first
        call is made before this returns. A backend may pipeline the reads
        (ZooKeeper: one round trip for all, not one each)."""
        for oid in ids:
            self.watch_object(kind, oid, cb_of(oid))

    # ---- state ------------------------------------------------------------
    def watch_states(self, paths: Sequence[str],
                     cb_of: Callable[[str], Callable[[Data | None], Any]]) -> None:
        """:meth:`watch_state` for each path (first calls made before this
        returns; reads pipelined where the backend can)."""
        for path in paths:
            self.watch_state(path, cb_of(path))

    def watch_states_children(self, paths: Sequence[str],
                              cb_of: Callable[[str], Callable[[list[str]], Any]]) -> None:
        """:meth:`watch_state_children` for each path (first calls made before
        this returns; reads pipelined where the backend can)."""
        for path in paths:
            self.watch_state_children(path, cb_of(path))

    @abstractmethod
    def put_state(self, path: str, data: Data, ephemeral: bool = True) -> None:
        """Create or overwrite; an ephemeral node is owned by this session."""

    @abstractmethod
    def claim_state(self, path: str, data: Data) -> bool:
        """Create an ephemeral node owned by this session unless it exists:
        True if it is (now or already) ours, False if another session holds
        it. A lease: it is given back when this session ends."""

    @abstractmethod
    def get_state(self, path: str) -> Data | None: ...

    @abstractmethod
    def delete_state(self, path: str) -> None:
        """Delete a state node (and its children); no error if missing."""

    def put_states(self, items: Sequence[tuple[str, Data]], ephemeral: bool = True) -> None:
        """:meth:`put_state` for each (path, data); a backend may write them in
        a few round trips (ZooKeeper: one multi per chunk, one watch event)."""
        for path, data in items:
            self.put_state(path, data, ephemeral)

    def delete_states(self, paths: Sequence[str]) -> None:
        """:meth:`delete_state` of leaf nodes, batched where the backend can."""
        for path in paths:
            self.delete_state(path)

    @abstractmethod
    def list_state(self, path: str) -> list[str]:
        """Child names of a state path ([] if missing)."""

    @abstractmethod
    def watch_state_children(self, path: str, cb: Callable[[list[str]], Any]) -> None: ...

    @abstractmethod
    def watch_state(self, path: str, cb: Callable[[Data | None], Any]) -> None: ...

    # ---- leader election ----------------------------------------------------
    @abstractmethod
    def elect(self, path: str, identifier: str, on_lead: Callable[[], Any],
              on_lose: Callable[[], Any]) -> Election:
        """Contend for the leadership named by the state path ``path``; at most
        one session leads at a time. ``on_lead()`` is called (from the store's
        own thread or green thread: it must not block) when this session
        becomes the leader, ``on_lose()`` when it stops leading (its session
        lost or closed, :meth:`Election.cancel`); after a loss it contends
        again as soon as it can. A leader that dies is replaced once its
        session ends (ZooKeeper: within the session timeout)."""

    @abstractmethod
    def election_leader(self, path: str) -> str | None:
        """The identifier of the session leading ``path`` now (None: nobody)."""

    # ---- lifecycle --------------------------------------------------------
    @abstractmethod
    def health(self) -> Data:
        """{"connected": bool, "backend": str, ...} for `midoflow status`."""

    @abstractmethod
    def close(self) -> None:
        """End the session: this session's ephemeral state disappears."""
