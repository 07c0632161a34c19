"""The Neutron service: every request is one store commit of the Neutron
objects it changes and their translation into native objects.

Collections register a :class:`Collection` handler (networks, subnets, ports,
security-groups, security-group-rules in their modules; routers and
floatingips in theirs). A handler stages its writes in ``op.txn`` (a
:class:`midoflow.service.txn.Txn`) and never commits: :class:`NeutronService`
commits once, and retries the whole request from a fresh read when the commit
loses a race (the store's optimistic versions), as Neutron retries a DB
deadlock. A failure of any kind therefore writes nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from midoflow import errors as mf
from midoflow.neutron import collections as _collections  # noqa: F401 (they register)
from midoflow.neutron import errors as ne
from midoflow.neutron.base import COLLECTIONS, Collection, Op, kind_of, register
from midoflow.neutron.context import Context
from midoflow.service.txn import Txn
from midoflow.store.base import Data, Store

__all__ = ["COLLECTIONS", "Collection", "NeutronService", "Op", "kind_of", "register"]

LOG = logging.getLogger("midoflow.neutron")

# A request that lost a race waits BACKOFF_FIRST seconds, doubling up to
# BACKOFF_MAX, each wait drawn uniformly from [d/2, d] (jitter: the losers of one
# race do not all come back together), and gives up after RETRY_SECONDS.
BACKOFF_FIRST = 0.005
BACKOFF_MAX = 0.2
RETRY_SECONDS = 10.0


class NeutronService:
    """Neutron's resources over a topology store."""

    def __init__(self, store: Store, *, tunnel_type: str = "vxlan",
                 underlay_mtu: int = 1500) -> None:
        self.store = store
        self.tunnel_type = tunnel_type
        self.underlay_mtu = underlay_mtu

    # ------------------------------------------------------------ plumbing
    def handler(self, collection: str) -> Collection:
        try:
            return COLLECTIONS[collection]
        except KeyError:
            raise ne.ResourceNotFound(f"The resource collection {collection!r} could not "
                                      "be found") from None

    def run(self, ctx: Context, fn: Callable[[Op], Any]) -> Any:
        """``fn(op)`` staged in a fresh Txn, then one commit; the whole request is
        retried when a concurrent request won the race, after a jittered
        exponential backoff, for up to RETRY_SECONDS. Store errors become
        Neutron's."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = BACKOFF_FIRST
        attempts = 0
        while True:
            attempts += 1
            op = Op(ctx=ctx, txn=Txn(self.store), service=self)
            try:
                result = fn(op)
            except mf.MidoflowError as e:
                raise _neutron_error(e) from None
            try:
                op.txn.commit()
            except (mf.Conflict, mf.NotFound) as e:
                # the store moved since this attempt read it: read again and redo
                wait = random.uniform(delay / 2, delay)
                if time.monotonic() + wait > deadline:
                    break
                LOG.debug("neutron request lost a race (%s); retrying", e.message)
                time.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            except mf.MidoflowError as e:
                raise _neutron_error(e) from None
            for cb in op.after_commit:
                cb()
            return result
        raise ne.Conflict("the request kept losing races with concurrent requests "
                          f"({attempts} attempts in {RETRY_SECONDS:.0f} s): the objects it "
                          "changes are being changed by others; try again")

    def read(self, ctx: Context, fn: Callable[[Op], Any]) -> Any:
        """``fn(op)`` over a fresh read, no commit."""
        op = Op(ctx=ctx, txn=Txn(self.store), service=self)
        try:
            return fn(op)
        except mf.MidoflowError as e:
            raise _neutron_error(e) from None

    def find(self, op: Op, collection: str, oid: str) -> Data:
        """A visible object, or the collection's 404 (not 403: existence is not
        disclosed to other projects)."""
        h = self.handler(collection)
        obj = op.get(collection, oid) if isinstance(oid, str) else None
        if obj is None or not h.visible(op.ctx, obj, op):
            raise h.not_found(f"{h.resource.replace('_', ' ').capitalize()} {oid} "
                              "could not be found")
        return obj

    # ------------------------------------------------------------ the API
    def list(self, ctx: Context, collection: str) -> list[Data]:
        h = self.handler(collection)
        if type(h).prepare_list is not Collection.prepare_list:
            self.run(ctx, h.prepare_list)
        return self.read(ctx, lambda op: [h.view(op, o) for o in op.scan(collection)
                                          if h.visible(ctx, o, op)])

    def get(self, ctx: Context, collection: str, oid: str) -> Data:
        h = self.handler(collection)
        return self.read(ctx, lambda op: h.view(op, self.find(op, collection, oid)))

    def create(self, ctx: Context, collection: str, body: Data) -> Data:
        h = self.handler(collection)
        return self.run(ctx, lambda op: h.view(op, h.create(op, body)))

    def update(self, ctx: Context, collection: str, oid: str, body: Data) -> Data:
        h = self.handler(collection)
        return self.run(ctx, lambda op: h.view(op, h.update(
            op, self.find(op, collection, oid), body)))

    def delete(self, ctx: Context, collection: str, oid: str) -> None:
        h = self.handler(collection)
        self.run(ctx, lambda op: h.delete(op, self.find(op, collection, oid)))

    def action(self, ctx: Context, collection: str, oid: str, action: str,
               body: Data) -> Data:
        """``PUT /v2.0/<collection>/<id>/<action>`` (add_router_interface, ...)."""
        h = self.handler(collection)
        method = h.actions.get(action)
        if method is None:
            raise ne.ResourceNotFound(f"{collection} have no action {action!r}")
        return self.run(ctx, lambda op: getattr(h, method)(
            op, self.find(op, collection, oid), body))

    # tags: a list of strings on every stored object (Neutron's standard-attr tags)
    def set_tags(self, ctx: Context, collection: str, oid: str, tags: list[str]) -> list[str]:
        def fn(op: Op) -> list[str]:
            obj = self.find(op, collection, oid)
            obj["tags"] = sorted(set(tags))
            op.txn.put(kind_of(collection), obj)
            return obj["tags"]
        return self.run(ctx, fn)


def _neutron_error(e: mf.MidoflowError) -> ne.NeutronError:
    """A native layer's error as Neutron's (a handler should raise Neutron's own)."""
    if isinstance(e, mf.Invalid | mf.TooLarge):
        return ne.BadRequest(e.message)
    if isinstance(e, mf.NotFound):
        return ne.ResourceNotFound(e.message)
    if isinstance(e, mf.Conflict):
        return ne.Conflict(e.message)
    if isinstance(e, mf.Unavailable):
        return ne.ServiceUnavailable(e.message)
    return ne.NeutronError(e.message)
