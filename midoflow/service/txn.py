"""Staged writes over a Store, committed as one transaction.

A request that changes several objects (a port and the chains its security
groups generate, a chain and its rules, ...) reads through a :class:`Txn`,
stages its writes in it, and commits once. Reads see the staged state; every
write carries the version the object had when the transaction first read it,
so a concurrent change of anything the request read and wrote makes the
commit fail (Conflict) instead of being overwritten. ``create`` stages a new
object that must not exist when the commit is applied: of two requests
creating one id, exactly one succeeds (the other's commit fails with Conflict,
where ``put`` would have turned it into an update of the first's object). ``touch`` re-writes an
object unchanged (it bumps its version: a concurrent delete that checked for
references fails); ``check`` only asserts that an object did not change.
"""

from __future__ import annotations

import copy

from midoflow.errors import NotFound
from midoflow.store.base import Check, Create, Data, Delete, Op, Store, Update

Key = tuple[str, str]


class Txn:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[Key, tuple[Data | None, int | None]] = {}
        self._staged: dict[Key, Data | None] = {}
        self._touched: dict[Key, None] = {}
        self._checked: dict[Key, None] = {}
        self._created: dict[Key, None] = {}
        self._lists: dict[str, list[str]] = {}

    # ---------------------------------------------------------------- reads
    def _read(self, kind: str, oid: str) -> tuple[Data | None, int | None]:
        key = (kind, oid)
        if key not in self._seen:
            try:
                self._seen[key] = self.store.get(kind, oid)
            except NotFound:
                self._seen[key] = (None, None)
        return self._seen[key]

    def seen(self, kind: str, data: Data, version: int) -> None:
        """Record an object read outside the transaction (first read wins)."""
        self._seen.setdefault((kind, data["id"]), (copy.deepcopy(data), version))

    def get(self, kind: str, oid: str) -> Data | None:
        key = (kind, oid)
        if key in self._staged:
            return copy.deepcopy(self._staged[key])
        return copy.deepcopy(self._read(kind, oid)[0])

    def version(self, kind: str, oid: str) -> int | None:
        return self._read(kind, oid)[1]

    def list(self, kind: str) -> list[Data]:
        """All objects of a kind as staged (read from the store once)."""
        return [copy.deepcopy(d) for d in self.scan(kind)]

    def scan(self, kind: str) -> list[Data]:
        """:meth:`list` without the copies: for reading only."""
        if kind not in self._lists:
            ids = []
            for d, ver in self.store.list(kind):
                self._seen.setdefault((kind, d["id"]), (d, ver))
                ids.append(d["id"])
            self._lists[kind] = ids
        ids = list(self._lists[kind])
        ids += [oid for (k, oid) in self._staged if k == kind and oid not in ids]
        out = []
        for oid in ids:
            key = (kind, oid)
            d = self._staged[key] if key in self._staged else self._read(kind, oid)[0]
            if d is not None:
                out.append(d)
        return out

    # --------------------------------------------------------------- writes
    def put(self, kind: str, data: Data) -> None:
        """Create or update (always written, even unchanged)."""
        self._read(kind, data["id"])
        self._staged[(kind, data["id"])] = copy.deepcopy(data)

    def create(self, kind: str, data: Data) -> None:
        """A new object: the commit fails (Conflict) if it exists by then."""
        key = (kind, data["id"])
        self._seen.setdefault(key, (None, None))
        self._staged[key] = copy.deepcopy(data)
        self._created[key] = None

    def sync(self, kind: str, data: Data) -> None:
        """Create or update, only if different from what is there."""
        if self.get(kind, data["id"]) != data:
            self.put(kind, data)

    def delete(self, kind: str, oid: str) -> None:
        self._read(kind, oid)
        self._staged[(kind, oid)] = None

    def touch(self, kind: str, oid: str) -> None:
        self._read(kind, oid)
        self._touched[(kind, oid)] = None

    def check(self, kind: str, oid: str) -> None:
        self._read(kind, oid)
        self._checked[(kind, oid)] = None

    def deleted(self) -> list[Key]:
        """The objects staged for deletion, in the order they were staged."""
        return [key for key, data in self._staged.items() if data is None]

    def ops(self) -> list[Op]:
        ops: list[Op] = []
        for (kind, oid), data in self._staged.items():
            orig, ver = self._seen[(kind, oid)]
            if data is None:
                if orig is not None:
                    ops.append(Delete(kind, oid, ver))
            elif orig is None or (kind, oid) in self._created:
                ops.append(Create(kind, data))
            else:
                ops.append(Update(kind, data, ver))
        for key in self._touched:
            orig, ver = self._seen[key]
            if key not in self._staged and orig is not None:
                ops.append(Update(key[0], orig, ver))
        for key in self._checked:
            orig, ver = self._seen[key]
            if key not in self._staged and key not in self._touched and orig is not None:
                ops.append(Check(key[0], key[1], ver))
        return ops

    def commit(self) -> None:
        ops = self.ops()
        if ops:
            self.store.commit(ops)
