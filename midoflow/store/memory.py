"""An in-memory Store: unit tests and single-host use.

Several :class:`MemoryStore` sessions may share one :class:`MemoryBackend`, the
way several ZooKeeper clients share one ensemble; closing a session removes
its ephemeral state. Watches fire synchronously, after the change.
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.store.base import (
    Check,
    Create,
    Data,
    Delete,
    Election,
    Op,
    Store,
    Update,
    check_txn_size,
)


class MemoryBackend:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.models: dict[str, dict[str, tuple[Data, int]]] = defaultdict(dict)
        self.counters: dict[str, int] = defaultdict(int)
        # state path -> (data, owner session id or None)
        self.state: dict[str, tuple[Data, int | None]] = {}
        self.kind_watches: dict[str, list[Callable]] = defaultdict(list)
        self.object_watches: dict[tuple[str, str], list[Callable]] = defaultdict(list)
        self.state_watches: dict[str, list[Callable]] = defaultdict(list)
        self.children_watches: dict[str, list[Callable]] = defaultdict(list)
        self._next_session = 0
        # election path -> contenders in the order they joined (the first leads)
        self.elections: dict[str, list[_MemoryElection]] = defaultdict(list)

    def new_session_id(self) -> int:
        with self.lock:
            self._next_session += 1
            return self._next_session


class _MemoryElection(Election):
    def __init__(self, store: MemoryStore, path: str, identifier: str,
                 on_lead: Callable[[], Any], on_lose: Callable[[], Any]) -> None:
        self.store, self.path, self.identifier = store, path, identifier
        self.on_lead, self.on_lose = on_lead, on_lose
        self._leading = False
        self.cancelled = False

    @property
    def leading(self) -> bool:
        return self._leading

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            _leave(self.store.backend, [self])


def _leave(b: MemoryBackend, gone: list[_MemoryElection]) -> None:
    """Take contenders out of their elections: a leader loses, its successor leads."""
    promote: list[_MemoryElection] = []
    lost: list[_MemoryElection] = []
    with b.lock:
        for e in gone:
            queue = b.elections[e.path]
            if e in queue:
                queue.remove(e)
                if e._leading:
                    e._leading = False
                    lost.append(e)
                if queue and not queue[0]._leading:
                    queue[0]._leading = True
                    promote.append(queue[0])
    for e in lost:
        e.on_lose()
    for e in promote:
        e.on_lead()


def _fire(watches: list[Callable], *args: Any) -> None:
    for cb in list(watches):
        if cb(*args) is False:
            watches.remove(cb)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


class MemoryStore(Store):
    def __init__(self, backend: MemoryBackend | None = None) -> None:
        self.backend = backend or MemoryBackend()
        self.session = self.backend.new_session_id()
        self.closed = False

    # ---- models -----------------------------------------------------------
    def get(self, kind: str, id: str) -> tuple[Data, int]:
        with self.backend.lock:
            try:
                data, version = self.backend.models[kind][id]
            except KeyError:
                raise NotFound(f"{kind} {id} not found") from None
            return copy.deepcopy(data), version

    def list(self, kind: str) -> list[tuple[Data, int]]:
        with self.backend.lock:
            return [(copy.deepcopy(d), v) for d, v in self.backend.models[kind].values()]

    def commit(self, ops: Sequence[Op]) -> None:
        check_txn_size(ops)  # the same limit as ZooKeeper's
        b = self.backend
        fired: list[tuple[str, str]] = []
        kinds: set[str] = set()
        with b.lock:
            staged = {k: dict(v) for k, v in b.models.items()}
            for op in ops:
                objs = staged.setdefault(op.kind, {})
                if isinstance(op, Create):
                    oid = op.data.get("id")
                    if not oid:
                        raise Invalid("object has no id", "id")
                    if oid in objs:
                        raise Conflict(f"{op.kind} {oid} already exists")
                    objs[oid] = (copy.deepcopy(op.data), 0)
                    kinds.add(op.kind)
                elif isinstance(op, Update):
                    oid = op.data.get("id")
                    cur = objs.get(oid)
                    if cur is None:
                        raise NotFound(f"{op.kind} {oid} not found")
                    if op.version is not None and cur[1] != op.version:
                        raise Conflict(f"{op.kind} {oid} changed meanwhile (stale version)")
                    objs[oid] = (copy.deepcopy(op.data), cur[1] + 1)
                elif isinstance(op, Delete):
                    cur = objs.get(op.id)
                    if cur is None:
                        raise NotFound(f"{op.kind} {op.id} not found")
                    if op.version is not None and cur[1] != op.version:
                        raise Conflict(f"{op.kind} {op.id} changed meanwhile (stale version)")
                    del objs[op.id]
                    kinds.add(op.kind)
                elif isinstance(op, Check):
                    cur = objs.get(op.id)
                    if cur is None:
                        raise NotFound(f"{op.kind} {op.id} not found")
                    if cur[1] != op.version:
                        raise Conflict(f"{op.kind} {op.id} changed meanwhile (stale version)")
                    continue
                fired.append((op.kind, op.data["id"] if hasattr(op, "data") else op.id))
            b.models.clear()
            b.models.update(staged)
        for kind, oid in fired:
            cur = b.models[kind].get(oid)
            if cur is None:
                _fire(b.object_watches.pop((kind, oid), []), None, -1)
            else:
                _fire(b.object_watches[(kind, oid)], copy.deepcopy(cur[0]), cur[1])
        for kind in kinds:
            _fire(b.kind_watches[kind], sorted(b.models[kind]))

    def next_counter(self, name: str) -> int:
        with self.backend.lock:
            self.backend.counters[name] += 1
            return self.backend.counters[name]

    def watch_kind(self, kind: str, cb: Callable[[list[str]], Any]) -> None:
        with self.backend.lock:
            ids = sorted(self.backend.models[kind])
        if cb(ids) is not False:
            self.backend.kind_watches[kind].append(cb)

    def watch_object(self, kind: str, id: str, cb: Callable[[Data | None, int], Any]) -> None:
        with self.backend.lock:
            cur = self.backend.models[kind].get(id)
        if cur is None:
            cb(None, -1)
            return
        if cb(copy.deepcopy(cur[0]), cur[1]) is not False:
            self.backend.object_watches[(kind, id)].append(cb)

    # ---- state ------------------------------------------------------------
    def put_state(self, path: str, data: Data, ephemeral: bool = True) -> None:
        b = self.backend
        with b.lock:
            new = path not in b.state
            b.state[path] = (copy.deepcopy(data), self.session if ephemeral else None)
        _fire(b.state_watches[path], copy.deepcopy(data))
        if new:
            self._fire_children(_parent(path))

    def claim_state(self, path: str, data: Data) -> bool:
        b = self.backend
        with b.lock:
            cur = b.state.get(path)
            if cur is not None:
                return cur[1] == self.session
            b.state[path] = (copy.deepcopy(data), self.session)
        _fire(b.state_watches[path], copy.deepcopy(data))
        self._fire_children(_parent(path))
        return True

    def get_state(self, path: str) -> Data | None:
        with self.backend.lock:
            cur = self.backend.state.get(path)
            return copy.deepcopy(cur[0]) if cur else None

    def delete_state(self, path: str) -> None:
        b = self.backend
        with b.lock:
            gone = [p for p in b.state if p == path or p.startswith(path + "/")]
            for p in gone:
                del b.state[p]
        self._after_delete(gone)

    def _after_delete(self, gone: list[str]) -> None:
        for p in gone:
            _fire(self.backend.state_watches[p], None)
        for parent in {_parent(p) for p in gone}:
            self._fire_children(parent)

    def _children(self, path: str) -> list[str]:
        prefix = path + "/"
        with self.backend.lock:
            names = {p[len(prefix) :].split("/", 1)[0] for p in self.backend.state
                     if p.startswith(prefix)}
        return sorted(names)

    def _fire_children(self, path: str) -> None:
        _fire(self.backend.children_watches[path], self._children(path))

    def list_state(self, path: str) -> list[str]:
        return self._children(path)

    def watch_state_children(self, path: str, cb: Callable[[list[str]], Any]) -> None:
        if cb(self._children(path)) is not False:
            self.backend.children_watches[path].append(cb)

    def watch_state(self, path: str, cb: Callable[[Data | None], Any]) -> None:
        if cb(self.get_state(path)) is not False:
            self.backend.state_watches[path].append(cb)

    # ---- leader election ----------------------------------------------------
    def elect(self, path: str, identifier: str, on_lead: Callable[[], Any],
              on_lose: Callable[[], Any]) -> Election:
        e = _MemoryElection(self, path, identifier, on_lead, on_lose)
        with self.backend.lock:
            queue = self.backend.elections[path]
            queue.append(e)
            e._leading = len(queue) == 1
        if e._leading:
            on_lead()
        return e

    def election_leader(self, path: str) -> str | None:
        with self.backend.lock:
            queue = self.backend.elections.get(path)
            return queue[0].identifier if queue else None

    # ---- lifecycle --------------------------------------------------------
    def health(self) -> Data:
        return {"backend": "memory", "connected": not self.closed}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        b = self.backend
        with b.lock:
            mine = [e for q in b.elections.values() for e in q if e.store is self]
        _leave(b, mine)
        with b.lock:
            gone = [p for p, (_, owner) in b.state.items() if owner == self.session]
            for p in gone:
                del b.state[p]
        self._after_delete(gone)
