"""Routers forget the ARP entries a Neutron port's change made stale
(midoflow.neutron.arp): the pure rule, the removal after the commit through
NeutronService over a MemoryStore, and the agent's cache invalidating the
flows that used a removed entry."""

from __future__ import annotations

import pytest

from midoflow import model
from midoflow.agent.cache import TopologyCache
from midoflow.neutron import arp
from midoflow.neutron import errors as ne
from midoflow.sim.result import arp_tag
from midoflow.store import paths
from tests.unit.test_neutron_l3 import P1, P2, World

OLD_MAC, NEW_MAC, OTHER_MAC = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02", "fa:16:3e:00:00:03"


def port(ips, mac):
    return {"id": "p", "network_id": "n", "mac_address": mac,
            "fixed_ips": [{"subnet_id": "s", "ip_address": ip} for ip in ips]}


@pytest.mark.parametrize(("ip", "mac", "old", "new", "stale"), [
    # deleted: its addresses point at nothing, nor does anything at its MAC
    ("10.0.0.5", OLD_MAC, port(["10.0.0.5"], OLD_MAC), None, True),
    ("10.0.0.5", OTHER_MAC, port(["10.0.0.5"], OLD_MAC), None, True),
    ("10.0.0.9", OLD_MAC.upper(), port(["10.0.0.5"], OLD_MAC), None, True),  # a pair
    ("10.0.0.9", OTHER_MAC, port(["10.0.0.5"], OLD_MAC), None, False),
    # created: its address points at its MAC
    ("10.0.0.5", OLD_MAC, None, port(["10.0.0.5"], NEW_MAC), True),
    ("10.0.0.5", NEW_MAC.upper(), None, port(["10.0.0.5"], NEW_MAC), False),
    ("10.0.0.6", OLD_MAC, None, port(["10.0.0.5"], NEW_MAC), False),
    # fixed_ips changed: the address given up goes, the one kept stays
    ("10.0.0.5", OLD_MAC, port(["10.0.0.5", "10.0.0.7"], OLD_MAC),
     port(["10.0.0.7"], OLD_MAC), True),
    ("10.0.0.7", OLD_MAC, port(["10.0.0.5", "10.0.0.7"], OLD_MAC),
     port(["10.0.0.7"], OLD_MAC), False),
    ("10.0.0.9", OLD_MAC, port(["10.0.0.5"], OLD_MAC), port(["10.0.0.6"], OLD_MAC), False),
    # MAC changed: the old MAC goes everywhere
    ("10.0.0.9", OLD_MAC, port(["10.0.0.5"], OLD_MAC), port(["10.0.0.5"], NEW_MAC), True),
    ("10.0.0.5", OLD_MAC, port(["10.0.0.5"], OLD_MAC), port(["10.0.0.5"], NEW_MAC), True),
])
def test_is_stale(ip, mac, old, new, stale):
    assert arp.is_stale(ip, mac, old, new) is stale


class ArpWorld(World):
    """World's networks with router r1 on 10.0.0.0/24 (and the gateway), and
    project p2's router r2 on its own 10.0.0.0/24 (an overlapping CIDR)."""

    def __init__(self) -> None:
        super().__init__()
        self.r1 = self.router()
        self.add(self.r1, subnet_id=self.sub["id"])
        self.add(self.r1, subnet_id=self.sub2["id"])
        s = self.svc
        self.p2net = s.create(P2, "networks", {"name": "p2"})
        self.p2sub = s.create(P2, "subnets", {"network_id": self.p2net["id"],
                                              "cidr": "10.0.0.0/24", "ip_version": 4})
        self.r2 = self.router(ctx=P2, gateway=False)
        self.add(self.r2, ctx=P2, subnet_id=self.p2sub["id"])

    def learn(self, router, ip, mac, at=100.0):
        """What an agent writes when its router learns ``ip`` is at ``mac``."""
        self.store.put_state(paths.arp_entry(router["id"], ip, mac, at), {}, ephemeral=True)

    def table(self, router):
        return sorted(tuple(n.split(",")[:2])
                      for n in self.store.list_state(paths.arp_table(router["id"])))


@pytest.fixture
def aw() -> ArpWorld:
    return ArpWorld()


def _ip(p):
    return p["fixed_ips"][0]["ip_address"]


def test_a_deleted_port_is_forgotten_by_the_routers_on_its_network_only(aw):
    vm, vm2 = aw.vm, aw.vm2
    aw.learn(aw.r1, _ip(vm), vm["mac_address"])
    aw.learn(aw.r1, _ip(vm2), vm2["mac_address"])  # another network of the router
    aw.learn(aw.r1, "172.24.4.1", OTHER_MAC)  # the upstream, on the gateway's network
    aw.learn(aw.r2, _ip(vm), OTHER_MAC)  # the same address in p2's network
    aw.svc.delete(P1, "ports", vm["id"])
    assert aw.table(aw.r1) == sorted([(_ip(vm2), vm2["mac_address"]),
                                      ("172.24.4.1", OTHER_MAC)])
    assert aw.table(aw.r2) == [(_ip(vm), OTHER_MAC)]


def test_the_address_reused_by_a_new_port_reaches_it(aw):
    """The acceptance engineer's case: port deleted, its address given to a new
    port (new MAC): nothing points the router at the old MAC any more."""
    vm = aw.vm
    aw.learn(aw.r1, _ip(vm), vm["mac_address"])
    aw.svc.delete(P1, "ports", vm["id"])
    new = aw.port(aw.net, fixed_ips=[{"ip_address": _ip(vm)}])
    assert new["mac_address"] != vm["mac_address"] and aw.table(aw.r1) == []


def test_fixed_ips_changed_forgets_the_address_given_up(aw):
    vm = aw.vm
    aw.learn(aw.r1, _ip(vm), vm["mac_address"])
    aw.learn(aw.r1, "10.0.0.200", OTHER_MAC)
    aw.svc.update(P1, "ports", vm["id"], {"fixed_ips": [{"ip_address": "10.0.0.77"}]})
    assert aw.table(aw.r1) == [("10.0.0.200", OTHER_MAC)]
    aw.learn(aw.r1, "10.0.0.77", vm["mac_address"])
    aw.svc.update(P1, "ports", vm["id"], {"name": "renamed"})  # addresses unchanged
    assert ("10.0.0.77", vm["mac_address"]) in aw.table(aw.r1)
    # taking an address whose entry points elsewhere: the entry goes
    aw.svc.update(P1, "ports", vm["id"], {"fixed_ips": [{"ip_address": "10.0.0.77"},
                                                       {"ip_address": "10.0.0.200"}]})
    assert aw.table(aw.r1) == [("10.0.0.77", vm["mac_address"])]


def test_a_failed_request_forgets_nothing(aw):
    vm = aw.vm
    aw.learn(aw.r1, _ip(vm), vm["mac_address"])
    with pytest.raises(ne.NeutronError):
        aw.svc.update(P1, "ports", vm["id"], {"fixed_ips": [{"ip_address": "10.9.9.9"}]})
    with pytest.raises(ne.NeutronError):  # another project may not delete it
        aw.svc.delete(P2, "ports", vm["id"])
    assert aw.table(aw.r1) == [(_ip(vm), vm["mac_address"])]


def test_removal_after_a_lost_race_runs_once_from_the_committed_attempt(aw, monkeypatch):
    """The handler re-runs on a lost race: only the attempt that committed
    schedules the removal (op.after_commit), and it runs once."""
    vm = aw.vm
    aw.learn(aw.r1, _ip(vm), vm["mac_address"])
    calls = []
    real = arp.forget_stale
    monkeypatch.setattr(arp, "forget_stale", lambda *a: calls.append(a) or real(*a))
    from midoflow.service.txn import Txn
    real_commit, lost = Txn.commit, []

    def commit(self):
        if not lost:
            lost.append(1)
            from midoflow.errors import Conflict
            raise Conflict("lost the race")
        return real_commit(self)

    monkeypatch.setattr(Txn, "commit", commit)
    aw.svc.delete(P1, "ports", vm["id"])
    assert lost and len(calls) == 1 and aw.table(aw.r1) == []


def test_a_store_failure_after_the_commit_is_not_the_requests(aw, monkeypatch, caplog):
    vm = aw.vm
    aw.learn(aw.r1, _ip(vm), vm["mac_address"])

    def down(path):
        from midoflow.errors import Unavailable
        raise Unavailable("ZooKeeper is unreachable")

    monkeypatch.setattr(aw.store, "delete_state", down)
    aw.svc.delete(P1, "ports", vm["id"])  # committed: no error
    assert aw.native(model.PORTS, vm["id"]) is None
    assert "cannot remove stale router ARP entries" in caplog.text


def test_the_agent_invalidates_flows_on_a_removed_entry_as_on_a_changed_one(aw):
    tags: list[set[str]] = []
    cache = TopologyCache(aw.store, tags.append)
    cache.start()
    vm, rid = aw.vm, aw.r1["id"]
    aw.learn(aw.r1, _ip(vm), vm["mac_address"])
    assert cache.arps[(rid, _ip(vm))][0] == vm["mac_address"]
    tags.clear()
    aw.svc.delete(P1, "ports", vm["id"])
    assert (rid, _ip(vm)) not in cache.arps
    assert any(arp_tag(rid, _ip(vm)) in t for t in tags)
