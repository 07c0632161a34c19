"""Pick a Store backend from a connection string."""

from __future__ import annotations

import os

from midoflow.store.base import Store
from midoflow.store.credentials import StoreCredentials, load_credentials

__all__ = ["load_credentials", "make_store"]


def make_store(spec: str, handler: str = "threading", timeout: float = 10.0,
               credentials: StoreCredentials | str | os.PathLike | None = None) -> Store:
    """``memory`` for the embedded store, else ZooKeeper ``host:port,...[/chroot]``
    (``timeout``: the session timeout, seconds). ``credentials`` (loaded, or
    the path of a credentials file): with a ``[zookeeper]`` login, the store
    authenticates by digest and every node it creates is readable and
    writable by that login only."""
    if spec == "memory":
        from midoflow.store.memory import MemoryStore

        return MemoryStore()
    from midoflow.store.zookeeper import ZkStore

    if credentials is not None and not isinstance(credentials, StoreCredentials):
        credentials = load_credentials(credentials)
    auth = credentials.zookeeper if credentials is not None else None
    return ZkStore(spec, timeout=timeout, handler=handler, connect_timeout=max(10.0, timeout),
                   auth=tuple(auth) if auth else None)
