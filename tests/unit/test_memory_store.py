"""The store contract (tests/store_contract.py) against the in-memory store."""

from __future__ import annotations

import pytest

from midoflow.store.memory import MemoryBackend, MemoryStore
from tests.store_contract import StoreContract


@pytest.fixture
def backend():
    return MemoryBackend()


@pytest.fixture
def store(backend):
    s = MemoryStore(backend)
    yield s
    s.close()


@pytest.fixture
def new_session(backend):
    sessions: list[MemoryStore] = []

    def make() -> MemoryStore:
        sessions.append(MemoryStore(backend))
        return sessions[-1]

    yield make
    for s in sessions:
        s.close()


class TestMemoryStore(StoreContract):
    def test_health_names_backend(self, store):
        assert store.health()["backend"] == "memory"
