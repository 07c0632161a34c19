"""What every Neutron collection handler is built on: the store kinds, one
request's working state (:class:`Op`), the handler base class and registry.

Kept apart from :mod:`.service` so the collection modules import this and the
service imports them, with no cycle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from midoflow.neutron import errors as ne
from midoflow.neutron.context import Context
from midoflow.service.txn import Txn
from midoflow.store.base import Data, Store


class Service(Protocol):
    """What a handler uses of :class:`midoflow.neutron.service.NeutronService`."""

    store: Store
    tunnel_type: str
    underlay_mtu: int

    def handler(self, collection: str) -> Collection: ...

    def find(self, op: Op, collection: str, oid: str) -> Data: ...


def kind_of(collection: str) -> str:
    """The store kind Neutron objects of a collection are kept under."""
    return f"neutron.{collection}"


@dataclass
class Op:
    """One attempt at one request: who asks, the transaction, the service."""

    ctx: Context
    txn: Txn
    service: Service
    # run after a successful commit (never on failure or retry)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def get(self, collection: str, oid: str) -> Data | None:
        """A Neutron object as staged in this request (no visibility check)."""
        return self.txn.get(kind_of(collection), oid)

    def scan(self, collection: str) -> list[Data]:
        return self.txn.scan(kind_of(collection))


class Collection:
    """A Neutron collection's behaviour. Subclasses set the names and override
    what they support; the defaults answer a clear 400 for what they do not."""

    name: str = ""          # "networks" (URL)
    resource: str = ""      # "network" (JSON key of one object)
    not_found: type[ne.NotFound] = ne.ResourceNotFound
    actions: dict[str, str] = {}  # action name in the URL -> method name

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    def visible(self, ctx: Context, obj: Data, op: Op) -> bool:
        """May ``ctx`` see ``obj``? Default: admin, or the object's project."""
        return owns(ctx, obj)

    def create(self, op: Op, body: Data) -> Data:
        raise ne.BadRequest(f"{self.name} cannot be created")

    def update(self, op: Op, obj: Data, body: Data) -> Data:
        raise ne.BadRequest(f"{self.name} cannot be updated")

    def delete(self, op: Op, obj: Data) -> None:
        raise ne.BadRequest(f"{self.name} cannot be deleted")

    def view(self, op_or_none: Op | None, obj: Data) -> Data:
        """What a GET returns for a stored object (computed fields added)."""
        return obj

    def prepare_list(self, op: Op) -> None:
        """Staged (and committed) before a list: e.g. the project's default
        security group, created on its first list. Default: nothing."""


def owns(ctx: Context, obj: Data) -> bool:
    """Admin, or the object's own project (Neutron's ``rule:admin_or_owner``)."""
    return ctx.is_admin or obj.get("project_id") == ctx.project_id


COLLECTIONS: dict[str, Collection] = {}


def register(handler: Collection) -> Collection:
    COLLECTIONS[handler.name] = handler
    return handler


# Called (op, port) before a Neutron port is deleted, by :mod:`.port_removal`.
PORT_DELETED: list[Callable[[Op, Data], None]] = []


def on_port_deleted(fn: Callable[[Op, Data], None]) -> Callable[[Op, Data], None]:
    PORT_DELETED.append(fn)
    return fn
