"""What every service family shares: the store and the read/commit/output helpers."""

from __future__ import annotations

from typing import Any

from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.kinds import KINDS
from midoflow.service import body as gen
from midoflow.service import refs
from midoflow.service import security as sec
from midoflow.service import validate as v
from midoflow.service.txn import Txn
from midoflow.store.base import Data, Op, Store, Update


def label(kind: str) -> str:
    return KINDS[kind].label


def sort_key(obj: Data) -> tuple[str, str]:
    return (obj.get("name") or "", obj["id"])


def generated(kind: str, oid: str, field: str | None = None) -> Conflict:
    """The 409 for a direct change of an object generated from security settings."""
    return Conflict(f"{label(kind)} {oid} is generated from security groups and port "
                    "security settings: change those instead", field)


def ref(txn: Txn, kind: str, oid: str, field: str) -> Data:
    """An object a request body references, read through ``txn``: missing is 400."""
    obj = txn.get(kind, oid)
    if obj is None:
        raise Invalid(f"{label(kind)} {oid} does not exist", field)
    return obj


class Ctx:
    """The store, and how the families read, identify, check and write objects."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, kind: str, id: str) -> tuple[Data, int]:
        """An object named in the URL: missing (or not a UUID) is 404."""
        id = v.url_id(id, label(kind))
        try:
            return self.store.get(kind, id)
        except NotFound:
            raise NotFound(f"{label(kind)} {id} not found") from None

    def get_ref(self, kind: str, id: str, field: str) -> tuple[Data, int]:
        """An object referenced from a request body: missing is Invalid (400)."""
        try:
            return self.store.get(kind, id)
        except NotFound:
            raise Invalid(f"{label(kind)} {id} does not exist", field) from None

    def new_id(self, kind: str, body: dict[str, Any]) -> str:
        if "id" not in body:
            return v.new_id()
        oid = v.uuid_str(body["id"], "id")
        try:
            self.store.get(kind, oid)
        except NotFound:
            return oid
        raise Conflict(f"{label(kind)} {oid} already exists", "id")

    def user_id(self, kind: str, body: dict[str, Any]) -> str:
        """A new id for a user-created chain, rule or address group: version-5 UUIDs
        are reserved for generated objects."""
        if "id" in body and sec.is_generated(v.uuid_str(body["id"], "id")):
            raise Invalid("id: version-5 UUIDs are reserved for generated objects", "id")
        return self.new_id(kind, body)

    def commit(self, ops: list[Op]) -> None:
        self.store.commit(ops)

    def delete(self, kind: str, data: Data, version: int) -> None:
        """Delete an object read at ``version`` and what its deletion implies (the
        kind's own rules and every referencing field's declaration), in one commit."""
        txn = Txn(self.store)
        txn.seen(kind, data, version)
        refs.delete(txn, kind, data["id"])
        txn.commit()

    def out(self, kind: str, data: Data, version: int) -> Data:
        return gen.output(kind, data, version)

    def listed(self, kind: str, tenant_id: str | None = None) -> list[tuple[Data, int]]:
        """Every object of a kind, or those of one tenant."""
        return [(d, ver) for d, ver in self.store.list(kind)
                if tenant_id is None or d.get("tenant_id") == tenant_id]

    @staticmethod
    def check_version(body: dict[str, Any], current: int, what: str) -> None:
        want = v.version(body)
        if want is not None and want != current:
            raise Conflict(
                f"{what} is at version {current}, not {want}: read it again", "version"
            )

    @staticmethod
    def touch(kind: str, data: Data, version: int) -> Update:
        """Re-write unchanged: bumps the version, so a concurrent delete fails."""
        return Update(kind, data, version)
