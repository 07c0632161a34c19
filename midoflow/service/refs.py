"""What deleting an object does to the objects referencing it, from the declarations.

Every delete, of a built-in kind or a generic one, stages through :func:`delete`
into the request's :class:`~midoflow.service.txn.Txn`: the kind's own rules
first (a family registers them with :func:`special`: its refusals, worded as
its API always answered, and what no field declares, such as generated
chains), then, for each object the transaction deletes, what each field
referencing its kind declares (:mod:`midoflow.kinds.base`):

* ``cascade``: the referencing object is deleted too (its own rules apply,
  recursively);
* ``clear``: the reference is removed (null, or dropped from a list);
* ``refuse``: 409 naming the referencing objects, checked after every cascade
  and clear (an object deleted along does not refuse).

Everything lands in the one commit, each write carrying the version it was
read at: a referencing object changed or created meanwhile makes it fail
(Conflict). Object fields (nested references: tunnel-zone members, security
group rules) are their kind's code's business.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from midoflow.errors import Conflict
from midoflow.kinds import KINDS
from midoflow.kinds import base as b
from midoflow.service.txn import Txn
from midoflow.store.base import Data

# (the transaction, the object as it was): refuses (raise) or stages more changes
Stager = Callable[[Txn, Data], None]
_SPECIAL: dict[str, Stager] = {}


def special(kind: str) -> Callable[[Stager], Stager]:
    """Register what deleting an object of ``kind`` does beyond its declarations."""

    def register(fn: Stager) -> Stager:
        _SPECIAL[kind] = fn
        return fn

    return register


def referencing(kind: str) -> list[tuple[b.Kind, b.Field]]:
    """Every (kind, field) declared to reference ``kind`` with an on-delete rule."""
    return [(k, f) for k in KINDS.values() for f in k.refs
            if f.on_delete and f.type != b.OBJECT and kind in (f.ref or "").split("|")]


def delete(txn: Txn, kind: str, oid: str) -> None:
    """Stage the deletion of ``kind``/``oid`` and of everything it implies."""
    _stage(txn, kind, oid)
    done: dict[tuple[str, str], None] = {}
    while pending := [key for key in txn.deleted() if key not in done]:
        done.update(dict.fromkeys(pending))
        for target, ids in _by_kind(pending).items():
            for other, f in referencing(target):
                if f.on_delete == b.REFUSE:
                    continue
                users = [o["id"] for o in txn.scan(other.name) if _hits(o.get(f.name), ids)]
                for uid in users:
                    if f.on_delete == b.CASCADE:
                        _stage(txn, other.name, uid)
                    elif (obj := txn.get(other.name, uid)) is not None:
                        obj[f.name] = _cleared(obj.get(f.name), ids)
                        txn.put(other.name, obj)
    for target, ids in _by_kind(list(done)).items():
        for other, f in referencing(target):
            if f.on_delete == b.REFUSE:
                _refuse(txn, target, ids, other, f)


def _refuse(txn: Txn, target: str, ids: set[str], other: b.Kind, f: b.Field) -> None:
    """409 if an object still references one of ``ids`` (the first, by id)."""
    users = [o for o in txn.scan(other.name) if _hits(o.get(f.name), ids)]
    for oid in sorted(ids):
        named = sorted(o["id"] for o in users if _hits(o.get(f.name), {oid}))
        if named:
            raise Conflict(f"{KINDS[target].label} {oid} is referenced by {other.label}s "
                           f"{', '.join(named)} ({f.name}): change them first")


def _stage(txn: Txn, kind: str, oid: str) -> None:
    data = txn.get(kind, oid)
    if data is None:
        return
    txn.delete(kind, oid)
    if kind in _SPECIAL:
        _SPECIAL[kind](txn, data)


def _by_kind(keys: list[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for kind, oid in keys:
        out.setdefault(kind, set()).add(oid)
    return out


def _hits(value: Any, ids: set[str]) -> bool:
    if isinstance(value, list):
        return any(x in ids for x in value)
    return value in ids


def _cleared(value: Any, ids: set[str]) -> Any:
    return [x for x in value if x not in ids] if isinstance(value, list) else None
