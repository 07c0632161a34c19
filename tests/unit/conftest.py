"""Fixtures for the service and REST tests (a memory store, the service, the
app) and the agent tests' two-host worlds (built from tests/unit/worlds.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import webob

from midoflow.agent.clock import FakeClock
from midoflow.agent.core import AgentCore
from midoflow.errors import Unavailable
from midoflow.nat.flowstate import LocalFlowState
from midoflow.rest.app import make_app
from midoflow.service.topology import TopologyService
from midoflow.store.base import Store
from midoflow.store.memory import MemoryStore
from tests.unit import worlds
from tests.unit.worlds import TUNNELS

_NO_BODY = object()


class FlakyStore(Store):
    """Delegates to a MemoryStore; raises Unavailable while ``down``. ``before_commit``
    (if set) runs just before each commit: a hook to simulate a concurrent writer."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.down = False
        self.before_commit: Callable[[], Any] | None = None

    def _check(self) -> None:
        if self.down:
            raise Unavailable("ZooKeeper has no quorum (test)")

    def get(self, kind, id):
        self._check()
        return self.inner.get(kind, id)

    def list(self, kind):
        self._check()
        return self.inner.list(kind)

    def commit(self, ops):
        self._check()
        if self.before_commit is not None:
            hook, self.before_commit = self.before_commit, None
            hook()
        return self.inner.commit(ops)

    def next_counter(self, name):
        self._check()
        return self.inner.next_counter(name)

    def watch_kind(self, kind, cb):
        return self.inner.watch_kind(kind, cb)

    def watch_object(self, kind, id, cb):
        return self.inner.watch_object(kind, id, cb)

    def put_state(self, path, data, ephemeral=True):
        self._check()
        return self.inner.put_state(path, data, ephemeral)

    def claim_state(self, path, data):
        self._check()
        return self.inner.claim_state(path, data)

    def get_state(self, path):
        self._check()
        return self.inner.get_state(path)

    def delete_state(self, path):
        return self.inner.delete_state(path)

    def elect(self, path, identifier, on_lead, on_lose):
        return self.inner.elect(path, identifier, on_lead, on_lose)

    def election_leader(self, path):
        return self.inner.election_leader(path)

    def list_state(self, path):
        self._check()
        return self.inner.list_state(path)

    def watch_state_children(self, path, cb):
        return self.inner.watch_state_children(path, cb)

    def watch_state(self, path, cb):
        return self.inner.watch_state(path, cb)

    def health(self):
        return {"backend": "flaky", "connected": not self.down}

    def close(self):
        self.inner.close()


def store_snapshot(store: MemoryStore) -> Any:
    """Everything a request could change (models with versions, state)."""
    b = store.backend
    return copy.deepcopy(({k: dict(v) for k, v in b.models.items() if v}, dict(b.state)))


class ApiClient:
    """Calls the WSGI app in process with webob."""

    def __init__(self, app) -> None:
        self.app = app

    def call(self, method: str, path: str, body: Any = _NO_BODY, *, raw: bytes | None = None,
             content_type: str | None = "application/json") -> webob.Response:
        req = webob.Request.blank(path, method=method)
        if raw is not None or body is not _NO_BODY:
            req.body = raw if raw is not None else json.dumps(body).encode()
            if content_type:
                req.content_type = content_type
            else:
                req.environ.pop("CONTENT_TYPE", None)
        return req.get_response(self.app)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=_NO_BODY, **kw):
        return self.call("POST", path, body, **kw)

    def put(self, path, body=_NO_BODY, **kw):
        return self.call("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def ok(self, method: str, path: str, body: Any = _NO_BODY, status: int | None = None) -> Any:
        """Call and assert success; the decoded body."""
        resp = self.call(method, path, body)
        want = status or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert resp.status_int == want, (method, path, resp.status, resp.text)
        return resp.json if resp.body else None


@pytest.fixture
def mem_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def flaky_store(mem_store) -> FlakyStore:
    return FlakyStore(mem_store)


@pytest.fixture
def service(flaky_store) -> TopologyService:
    return TopologyService(flaky_store)


@pytest.fixture
def api(flaky_store) -> ApiClient:
    return ApiClient(make_app(flaky_store))


# ---- the agent tests' two-host worlds ------------------------------------------------
@pytest.fixture
def l2_world():
    """Bridge b: p1 and p3 bound on h1 (ofports 5, 6), p2 on h2 (5); the
    cookies each host's core invalidated. (api, agents, invalidated)"""
    api = worlds.two_hosts(*worlds.l2_bridge())
    invalidated: dict[str, set[int]] = {h: set() for h in worlds.HOSTS}
    agents = {h: worlds.agent(api, h, on_invalidate=invalidated[h].update)
              for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "vm1": (5, "p1"), "vm3": (6, "p3")},
                         "h2": {**TUNNELS, "vm2": (5, "p2")}})
    return api, agents, invalidated


@pytest.fixture
def limits_world():
    """Bridge b with M2 learned on p2 at h2 (VXLAN only); ``make(host, **cfg)``
    starts another core with those configuration fields. (api, make)"""
    api = worlds.two_hosts(*worlds.l2_bridge())

    def make(host: str, **kw) -> AgentCore:
        return worlds.agent(api, host, config=kw)

    h2 = make("h2")
    h2.set_interfaces({"vxlan0": (1, None), "vm2": (5, "p2")})
    h2.handle_miss(5, {"eth_src": worlds.M2, "eth_dst": worlds.BCAST, "eth_type": 0x800,
                       "ip_src": "10.0.0.11", "ip_dst": "10.0.0.12", "ip_proto": 17,
                       "ip_ttl": 64, "ip_tos": 0, "tp_src": 1, "tp_dst": 53})
    return api, make


@pytest.fixture
def snat_world():
    """worlds.snat_uplink: the uplink bound on h1 (ofport 7), the VM on h2
    (5); the router knows the gateway's and the VM's MACs. (api, agents)"""
    api = worlds.two_hosts(*worlds.snat_uplink())
    worlds.learn_arp(api, "r", {"198.51.100.254": worlds.GW, "192.168.1.10": worlds.VM})
    agents = {h: worlds.agent(api, h) for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "uplink": (7, "up")},
                         "h2": {**TUNNELS, "vm1": (5, "vm")}})
    return api, agents


@pytest.fixture
def ct_world():
    """worlds.guarded_bridge: p1 on h1, p2 on h2 (ofport 5 each), M1 and M2
    learned; one flow-state store for both. (agents, state)"""
    api = worlds.two_hosts(*worlds.guarded_bridge())
    state = LocalFlowState()
    agents = {h: worlds.agent(api, h, flow_state=state) for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "vm1": (5, "p1")},
                         "h2": {**TUNNELS, "vm2": (5, "p2")}})
    worlds.learn_macs(api, "b", {worlds.M1: "p1", worlds.M2: "p2"})
    return agents, state


@pytest.fixture
def routed_world():
    """worlds.two_subnets: p1 on h1, p2 on h2 (ofport 5 each), VM2 learned;
    os-ken frames, a fixed clock (NOW), the packets replayed (host, ofport,
    frame) and the cookies h1 invalidated. (api, agents, replayed, invalidated)"""
    api = worlds.two_hosts(*worlds.two_subnets())
    replayed: list = []
    invalidated: set = set()
    agents = {h: worlds.agent(api, h, frames=worlds.OsKenFrames(),
                              on_invalidate=invalidated.update if h == "h1" else lambda c: None,
                              replay=lambda ofport, frame, h=h: replayed.append((h, ofport, frame)),
                              clock=FakeClock(wall=worlds.NOW))
              for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "vm1": (5, "p1")},
                         "h2": {**TUNNELS, "vm2": (5, "p2")}})
    worlds.learn_macs(api, "b2", {worlds.VM2: "p2"})
    return api, agents, replayed, invalidated
