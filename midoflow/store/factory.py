"""Pick a Store backend from a connection string."""

from __future__ import annotations

from midoflow.store.base import Store


def make_store(spec: str, handler: str = "threading") -> Store:
    """``memory`` for the embedded store, else ZooKeeper ``host:port,...``."""
    if spec == "memory":
        from midoflow.store.memory import MemoryStore

        return MemoryStore()
    from midoflow.store.zookeeper import ZkStore

    return ZkStore(spec, handler=handler)
