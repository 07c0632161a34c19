"""CRUD of a declared kind that has no special rules: the declaration is the whole of it.

Bodies are checked by :mod:`.body`; a written reference must name an existing
object (400) and is touched in the same commit (a concurrent delete of it
fails). A delete does to the objects referencing the deleted one what their
field declares (:mod:`.refs`, as every delete does).
"""

from __future__ import annotations

from typing import Any

from midoflow.kinds import KINDS
from midoflow.service import body as gen
from midoflow.service import validate as v
from midoflow.service.context import Ctx, ref, sort_key
from midoflow.service.txn import Txn
from midoflow.store.base import Data


class KindCrud:
    def __init__(self, ctx: Ctx, kind: str) -> None:
        self.ctx = ctx
        self.kind = KINDS[kind]

    def _out(self, data: Data, version: int) -> Data:
        return self.ctx.out(self.kind.name, data, version)

    def list(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._out(d, ver) for d, ver in
                       self.ctx.listed(self.kind.name, tenant_id)), key=sort_key)

    def list_under(self, parent: str, parent_id: str) -> list[Data]:
        """The objects created under one parent object (404 if it is missing)."""
        field = dict(self.kind.parents)[parent]
        pdata, _ = self.ctx.get(parent, parent_id)
        return [o for o in self.list() if o.get(field) == pdata["id"]]

    def get(self, id: str) -> Data:
        return self._out(*self.ctx.get(self.kind.name, id))

    def create(self, body: Any, parent: str | None = None, parent_id: str = "") -> Data:
        txn = Txn(self.ctx.store)
        if parent is not None:
            pdata, pver = self.ctx.get(parent, parent_id)
            txn.seen(parent, pdata, pver)
            txn.touch(parent, pdata["id"])  # a concurrent delete of the parent fails
        body, data = gen.create(self.kind.name, body)
        if parent is not None:
            data[dict(self.kind.parents)[parent]] = pdata["id"]
        self._refs(txn, data, None)
        data["id"] = self.ctx.new_id(self.kind.name, body)
        txn.create(self.kind.name, data)
        txn.commit()
        return self.get(data["id"])

    def update(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(self.kind.name, id)
        new = gen.update(self.kind.name, body, data)
        txn = Txn(self.ctx.store)
        txn.seen(self.kind.name, data, ver)
        self._refs(txn, new, data)
        self.ctx.check_version(body, ver, f"{self.kind.label} {data['id']}")
        txn.put(self.kind.name, new)
        txn.commit()
        return self.get(data["id"])

    def delete(self, id: str) -> None:
        self.ctx.delete(self.kind.name, *self.ctx.get(self.kind.name, id))

    def _refs(self, txn: Txn, new: Data, old: Data | None) -> None:
        """Each reference exists (400 naming the field); a new one is touched."""
        for f in self.kind.refs:
            if "|" in (f.ref or "") or any(f.ref == p for p, _ in self.kind.parents):
                continue
            vals = new.get(f.name)
            before = (old or {}).get(f.name)
            for oid in vals if isinstance(vals, list) else [vals] if vals else []:
                ref(txn, f.ref or "", oid, f.name)
                if not _names(before, oid):
                    txn.touch(f.ref or "", oid)


def _names(value: Any, oid: str) -> bool:
    return oid in value if isinstance(value, list) else value == oid
