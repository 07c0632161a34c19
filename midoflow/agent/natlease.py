"""SNAT port blocks leased in the store (ZooKeeper ephemeral nodes): a block
is this host's while its agent's session lives, as in MidoNet."""

from __future__ import annotations

import logging

from midoflow.errors import MidoflowError
from midoflow.store.base import Store

LOG = logging.getLogger(__name__)


def lease_path(ip: str, proto: int, block: int) -> str:
    return f"state/nat_blocks/{ip}/{proto}/{block}"


class StoreLeaser:
    """The allocator's Leaser over the store's ephemeral claims. A store that
    cannot answer (no quorum) leases nothing: SNAT uses the blocks it has."""

    def __init__(self, store: Store, host_id: str) -> None:
        self.store, self.host_id = store, host_id

    def try_lease(self, ip: str, proto: int, block: int) -> bool:
        try:
            return self.store.claim_state(lease_path(ip, proto, block), {"host_id": self.host_id})
        except MidoflowError as e:
            LOG.warning("cannot lease NAT block %s/%d/%d: %s", ip, proto, block, e)
            return False

    def release(self, ip: str, proto: int, block: int) -> None:
        try:
            self.store.delete_state(lease_path(ip, proto, block))
        except MidoflowError as e:  # the session's end gives it back anyway
            LOG.warning("cannot release NAT block %s/%d/%d: %s", ip, proto, block, e)
