"""Neutron router and floating-IP requests racing on a real ZooKeeper: exactly
one of two conflicting requests wins, the loser is re-run from a fresh read and
refused, and the native topology matches the Neutron state afterwards.

Each request runs over its own store session; a barrier holds each one's first
commit until all have read, so the race happens every time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from midoflow import model
from midoflow.neutron import errors as ne
from midoflow.neutron import translate_l3 as t3
from midoflow.neutron.context import Context
from midoflow.neutron.service import NeutronService

pytestmark = pytest.mark.integration

ADMIN = Context.admin()
P1 = Context(project_id="p1", user_id="u1", roles=("member",))


class Held:
    """A store whose first commit waits at a barrier shared with the others."""

    def __init__(self, store: Any, barrier: threading.Barrier) -> None:
        self._store, self._barrier, self._held = store, barrier, False

    def commit(self, ops):
        if not self._held:
            self._held = True
            self._barrier.wait(timeout=20)
        return self._store.commit(ops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def race(zk_store_factory, *calls: Callable[[NeutronService], Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    services = [NeutronService(Held(zk_store_factory(), barrier)) for _ in calls]
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = calls[i](services[i])
        except Exception as e:  # the result under test
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a racing request never returned"
    return out


@pytest.fixture
def world(zk_store):
    svc = NeutronService(zk_store)
    ext = svc.create(ADMIN, "networks", {"name": "public", "router:external": True})
    svc.create(ADMIN, "subnets", {"network_id": ext["id"], "cidr": "172.24.4.0/24",
                                  "ip_version": 4})
    net = svc.create(P1, "networks", {"name": "n1"})
    sub = svc.create(P1, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24",
                                     "ip_version": 4})
    router = svc.create(P1, "routers", {"external_gateway_info": {"network_id": ext["id"]}})
    vm = svc.create(P1, "ports", {"network_id": net["id"], "port_security_enabled": False})
    return {"svc": svc, "store": zk_store, "ext": ext, "sub": sub, "router": router,
            "vm": vm}


def _rules(store, router_id: str) -> list[dict]:
    r, _ = store.get(model.ROUTERS, router_id)
    out = []
    for f in ("inbound_filter_id", "outbound_filter_id"):
        if r[f]:
            chain, _ = store.get(model.CHAINS, r[f])
            out += [store.get(model.RULES, rid)[0] for rid in chain["rule_ids"]]
    return out


def _gw_proxy_arp(w) -> list[str]:
    (gw,) = [p for p in w["svc"].list(ADMIN, "ports")
             if p["device_owner"] == "network:router_gateway"]
    return w["store"].get(model.PORTS, t3.router_port_id(gw["id"]))[0]["proxy_arp"]


def test_two_floating_ips_for_one_port_exactly_one_wins(world, zk_store_factory):
    w = world
    w["svc"].action(P1, "routers", w["router"]["id"], "add_router_interface",
                    {"subnet_id": w["sub"]["id"]})
    fips = [w["svc"].create(P1, "floatingips", {"floating_network_id": w["ext"]["id"]})
            for _ in range(2)]
    out = race(zk_store_factory, *[
        (lambda s, f=f: s.update(P1, "floatingips", f["id"], {"port_id": w["vm"]["id"]}))
        for f in fips])
    won = [o for o in out if isinstance(o, dict)]
    lost = [o for o in out if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1, out
    assert isinstance(lost[0], ne.FloatingIPPortAlreadyAssociated), lost[0]
    listed = {f["id"]: f for f in w["svc"].list(P1, "floatingips")}
    assert [f["id"] for f in listed.values() if f["port_id"]] == [won[0]["id"]]
    dnat = [r for r in _rules(w["store"], w["router"]["id"]) if r["action"] == "dnat"]
    assert [r["nw_dst"] for r in dnat] == [f"{won[0]['floating_ip_address']}/32"]
    assert _gw_proxy_arp(w) == [won[0]["floating_ip_address"]]


def test_interface_removal_and_floating_ip_association_never_both_succeed(
        world, zk_store_factory):
    """Either the floating IP is associated and the interface stays (the removal
    is refused), or the interface is gone and the association is refused: never
    a floating IP through a router that no longer reaches its port."""
    w = world
    w["svc"].action(P1, "routers", w["router"]["id"], "add_router_interface",
                    {"subnet_id": w["sub"]["id"]})
    fip = w["svc"].create(P1, "floatingips", {"floating_network_id": w["ext"]["id"]})
    out = race(
        zk_store_factory,
        lambda s: s.update(P1, "floatingips", fip["id"], {"port_id": w["vm"]["id"]}),
        lambda s: s.action(P1, "routers", w["router"]["id"], "remove_router_interface",
                           {"subnet_id": w["sub"]["id"]}))
    assoc, removed = out
    assert isinstance(assoc, dict) != isinstance(removed, dict), out
    f = w["svc"].get(P1, "floatingips", fip["id"])
    ifaces = [p for p in w["svc"].list(P1, "ports")
              if p["device_owner"].startswith("network:router_interface")]
    if isinstance(assoc, dict):
        assert isinstance(removed, ne.RouterInterfaceInUseByFloatingIP), removed
        assert f["router_id"] == w["router"]["id"] and len(ifaces) == 1
        assert any(r["action"] == "dnat" for r in _rules(w["store"], w["router"]["id"]))
    else:
        assert isinstance(assoc, ne.ExternalGatewayForFloatingIPNotFound), assoc
        assert f["port_id"] is None and ifaces == []
        assert not any(r["action"] == "dnat" for r in _rules(w["store"], w["router"]["id"]))
        router_ports = [p for p, _ in w["store"].list(model.PORTS)
                        if p["device_id"] == w["router"]["id"]]
        assert len(router_ports) == 1  # the gateway's only


def test_same_subnet_added_twice_concurrently(world, zk_store_factory):
    w = world
    out = race(zk_store_factory, *[
        (lambda s: s.action(P1, "routers", w["router"]["id"], "add_router_interface",
                            {"subnet_id": w["sub"]["id"]})) for _ in range(2)])
    won = [o for o in out if isinstance(o, dict)]
    assert len(won) == 1 and isinstance(next(o for o in out if o not in won),
                                        ne.BadRequest), out
    ifaces = [p for p in w["svc"].list(P1, "ports")
              if p["device_owner"].startswith("network:router_interface")]
    assert [p["id"] for p in ifaces] == [won[0]["port_id"]]
    native, _ = w["store"].get(model.ROUTERS, w["router"]["id"])
    assert t3.router_port_id(won[0]["port_id"]) in native["port_ids"]
    assert len(native["port_ids"]) == 2  # the interface and the gateway
