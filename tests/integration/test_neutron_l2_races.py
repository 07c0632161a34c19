"""Neutron L2 requests racing on a real ZooKeeper: each request is one commit,
the loser of a race is re-run from a fresh read, and nothing dangles.

Two API processes are two store sessions; a barrier holds each request's first
commit until both have read, so the race is real every time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from midoflow import model
from midoflow.neutron import errors as ne
from midoflow.neutron.context import Context
from midoflow.neutron.service import NeutronService

pytestmark = pytest.mark.integration

P1 = Context(project_id="p1", user_id="u1", roles=("member",))


class Held:
    """A store whose first commit waits at a barrier shared with the other
    racers (all have read by then); ``after``: and then until that event is set
    (another racer's first commit is done: the order of the commits is forced)."""

    def __init__(self, store: Any, barrier: threading.Barrier,
                 after: threading.Event | None = None) -> None:
        self._store, self._barrier, self._after = store, barrier, after
        self._held = False
        self.committed = threading.Event()

    def commit(self, ops):
        if self._held:
            return self._store.commit(ops)
        self._held = True
        self._barrier.wait(timeout=20)
        if self._after is not None:
            assert self._after.wait(timeout=20), "the other request never committed"
        try:
            return self._store.commit(ops)
        finally:
            self.committed.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def race(zk_store_factory, *calls: Callable[[NeutronService], Any],
         first: int | None = None) -> list[Any]:
    """Run each call in its own thread over its own session; results or errors.
    ``first``: the index of the call whose commit goes first (else: free race)."""
    barrier = threading.Barrier(len(calls))
    stores = [Held(zk_store_factory(), barrier) for _ in calls]
    if first is not None:
        for i, st in enumerate(stores):
            if i != first:
                st._after = stores[first].committed
    services = [NeutronService(st) for st in stores]
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = calls[i](services[i])
        except Exception as e:  # the result under test
            out[i] = e
        finally:
            stores[i].committed.set()  # a request that failed before committing

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a racing request never returned"
    return out


def test_two_ports_racing_for_the_last_address(zk_store_factory):
    svc = NeutronService(zk_store_factory())
    net = svc.create(P1, "networks", {"name": "n"})
    sub = svc.create(P1, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24",
                                     "allocation_pools": [{"start": "10.0.0.9",
                                                           "end": "10.0.0.10"}]})
    svc.create(P1, "ports", {"network_id": net["id"]})  # takes .9; the default group too
    for _round in range(2):
        res = race(zk_store_factory,
                   *[lambda s: s.create(P1, "ports", {"network_id": net["id"]})] * 2)
        won = [r for r in res if isinstance(r, dict)]
        lost = [r for r in res if not isinstance(r, dict)]
        assert len(won) == 1, res
        assert len(lost) == 1 and isinstance(lost[0], ne.IpAddressGenerationFailure), res
        assert won[0]["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.0.0.10"}]
        ports = svc.list(P1, "ports")
        assert sorted(p["fixed_ips"][0]["ip_address"] for p in ports) == ["10.0.0.10",
                                                                          "10.0.0.9"]
        natives = {p["id"] for p, _ in svc.store.list(model.PORTS)}
        assert natives == {p["id"] for p in ports}
        assert set(svc.store.get(model.BRIDGES, net["id"])[0]["port_ids"]) == natives
        svc.delete(P1, "ports", won[0]["id"])


def test_two_ports_requesting_one_address(zk_store_factory):
    svc = NeutronService(zk_store_factory())
    net = svc.create(P1, "networks", {})
    svc.create(P1, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24"})
    body = {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.50"}]}
    res = race(zk_store_factory, *[lambda s: s.create(P1, "ports", body)] * 2)
    assert sorted(type(r).__name__ for r in res) == ["IpAddressInUse", "dict"], res
    assert len(svc.store.list(model.PORTS)) == 1


def test_network_delete_racing_a_port_create(zk_store_factory):
    """Either the port exists with its network, or the network is gone and no
    Neutron port, native port, bridge or subnet is left of it."""
    svc = NeutronService(zk_store_factory())
    svc.list(P1, "security-groups")  # the default group exists before the race
    outcomes = []
    for first in (None, 0, 1, None):
        net = svc.create(P1, "networks", {})
        svc.create(P1, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24"})
        res = race(zk_store_factory,
                   lambda s, nid=net["id"]: s.delete(P1, "networks", nid),
                   lambda s, nid=net["id"]: s.create(P1, "ports", {"network_id": nid}),
                   first=first)
        deleted, port = res
        nports = [p for p, _ in svc.store.list("neutron.ports")
                  if p["network_id"] == net["id"]]
        natives = [p for p, _ in svc.store.list(model.PORTS) if p["device_id"] == net["id"]]
        subnets = [s for s, _ in svc.store.list("neutron.subnets")
                   if s["network_id"] == net["id"]]
        if isinstance(port, dict):
            assert isinstance(deleted, ne.NetworkInUse), res
            assert svc.get(P1, "networks", net["id"])["id"] == net["id"]
            assert [p["id"] for p in nports] == [p["id"] for p in natives] == [port["id"]]
            assert svc.store.get(model.BRIDGES, net["id"])[0]["port_ids"] == [port["id"]]
            assert len(subnets) == 1
            outcomes.append((first, "port won"))
            svc.delete(P1, "ports", port["id"])
            svc.delete(P1, "networks", net["id"])
        else:
            assert deleted is None and isinstance(port, ne.NetworkNotFound), res
            assert nports == [] and natives == [] and subnets == []
            assert net["id"] not in {b["id"] for b, _ in svc.store.list(model.BRIDGES)}
            outcomes.append((first, "delete won"))
    # a forced order has one outcome; a free race either
    assert (0, "delete won") in outcomes and (1, "port won") in outcomes, outcomes
    # nothing of any round is left behind, generated chains included
    assert svc.store.list(model.PORTS) == [] and svc.store.list(model.BRIDGES) == []
    assert svc.store.list("neutron.ports") == []


def test_eight_concurrent_port_creates_on_one_network_all_succeed(zk_store_factory):
    """Eight sessions create a port each on one network at once (their first
    commits held until all have read): the losers back off and re-run, every
    create succeeds, no address or MAC is given twice, and the allocation index
    names exactly the ports."""
    svc = NeutronService(zk_store_factory())
    net = svc.create(P1, "networks", {"name": "n"})
    sub = svc.create(P1, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24"})
    svc.list(P1, "security-groups")  # the default group exists before the race
    res = race(zk_store_factory,
               *[lambda s: s.create(P1, "ports", {"network_id": net["id"]})] * 8)
    assert all(isinstance(r, dict) for r in res), res
    ips = [r["fixed_ips"][0]["ip_address"] for r in res]
    macs = [r["mac_address"] for r in res]
    assert len(set(ips)) == len(set(macs)) == 8, (ips, macs)
    stored = [p for p, _ in svc.store.list("neutron.ports")]
    assert sorted(p["id"] for p in stored) == sorted(r["id"] for r in res)
    idx = svc.store.get("neutron.allocations", net["id"])[0]
    assert idx["ips"] == {sub["id"]: {ip: r["id"] for ip, r in zip(ips, res, strict=True)}}
    assert idx["macs"] == {m: r["id"] for m, r in zip(macs, res, strict=True)}
    natives = {p["id"] for p, _ in svc.store.list(model.PORTS)}
    assert natives == {r["id"] for r in res}
    assert set(svc.store.get(model.BRIDGES, net["id"])[0]["port_ids"]) == natives
