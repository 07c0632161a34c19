"""Pick a Store backend from a connection string."""

from __future__ import annotations

from midoflow.store.base import Store


def make_store(spec: str, handler: str = "threading", timeout: float = 10.0) -> Store:
    """``memory`` for the embedded store, else ZooKeeper ``host:port,...``
    (``timeout``: the session timeout, seconds)."""
    if spec == "memory":
        from midoflow.store.memory import MemoryStore

        return MemoryStore()
    from midoflow.store.zookeeper import ZkStore

    return ZkStore(spec, timeout=timeout, handler=handler, connect_timeout=max(10.0, timeout))
