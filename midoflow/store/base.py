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

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Data = dict[str, Any]


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
        NotFound (missing object), Unavailable (no quorum)."""

    @abstractmethod
    def next_counter(self, name: str) -> int:
        """A cluster-wide increasing integer (1, 2, ...), never given twice."""

    @abstractmethod
    def watch_kind(self, kind: str, cb: Callable[[list[str]], Any]) -> None:
        """Watch the set of ids of a kind."""

    @abstractmethod
    def watch_object(self, kind: str, id: str, cb: Callable[[Data | None, int], Any]) -> None:
        """Watch one object; ``None`` once it is deleted (then the watch ends)."""

    # ---- state ------------------------------------------------------------
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

    @abstractmethod
    def list_state(self, path: str) -> list[str]:
        """Child names of a state path ([] if missing)."""

    @abstractmethod
    def watch_state_children(self, path: str, cb: Callable[[list[str]], Any]) -> None: ...

    @abstractmethod
    def watch_state(self, path: str, cb: Callable[[Data | None], Any]) -> None: ...

    # ---- lifecycle --------------------------------------------------------
    @abstractmethod
    def health(self) -> Data:
        """{"connected": bool, "backend": str, ...} for `midoflow status`."""

    @abstractmethod
    def close(self) -> None:
        """End the session: this session's ephemeral state disappears."""
