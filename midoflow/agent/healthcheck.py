"""The elected health checker's logic (no os-ken, kazoo or sockets): which
members to probe, from which load balancer's namespace, and what to write.

The leader reads the load-balancing kinds from the store (only the leader
needs them, and only once a second), checks each admin-up member of an
admin-up pool with an admin-up monitor of an admin-up load balancer, and
keeps ``paths.member_health`` in line: an entry written when a status
changes (or a write failed before), deleted when its member is gone or its
pool has no admin-up monitor any more. A new leader starts from the stored
entries (:meth:`HealthChecks.lead`): a member in ERROR stays so until
``max_retries`` probes succeed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from netaddr import IPNetwork

from midoflow.errors import MidoflowError
from midoflow.lb.health import Change, Monitor, Schedule, Target
from midoflow.lb.probes import ProbeResult
from midoflow.model import (
    HEALTH_MONITORS,
    LOAD_BALANCERS,
    POOL_MEMBERS,
    POOLS,
    HealthMonitor,
    LoadBalancer,
    Pool,
    PoolMember,
)
from midoflow.store import paths
from midoflow.store.base import Store

LOG = logging.getLogger(__name__)

NAMESPACE_PREFIX = "mfhm-"
LINK_PREFIX = "mh"  # the veth ends: mh<port id[:10]> (namespace), + "p" (OVS)
_OVS_END = re.compile(LINK_PREFIX + r"[0-9a-f]{10}p")


def namespace_name(lb_id: str, host_id: str) -> str:
    """The namespace of one load balancer's checks on one host:
    ``mfhm-<lb id[:8]>-<host id[:8]>``. The host is in the name because
    several agents may share one /var/run/netns (the lab runs every agent in
    the root namespace): a restarted agent removes its own leftovers only."""
    return f"{NAMESPACE_PREFIX}{lb_id.replace('-', '')[:8]}-{host_suffix(host_id)}"


def host_suffix(host_id: str) -> str:
    return host_id.replace("-", "")[:8]


def link_name(port_id: str) -> str:
    """The namespace end of a health link (≤ 15 characters); OVS's: + "p"."""
    return LINK_PREFIX + port_id.replace("-", "")[:10]


def is_ovs_end(name: str) -> bool:
    """Whether an OVS interface is a health link's end (``mh<10 hex>p``)."""
    return _OVS_END.fullmatch(name) is not None


def link_mac(lb_id: str) -> str:
    """A stable, locally administered MAC for the namespace end."""
    b = hashlib.sha256(lb_id.encode()).digest()[:5]
    return "02:" + ":".join(f"{x:02x}" for x in b)


@dataclass(frozen=True)
class LinkPlan:
    """One load balancer's health namespace and its link to the health port."""

    lb_id: str
    namespace: str
    port_id: str  # the router's health port (the OVS end's iface-id)
    mac: str
    ip: str  # the second host of health_cidr
    prefix_len: int
    gateway: str  # the first: the health port's own address


def plan_link(lb: LoadBalancer, host_id: str) -> LinkPlan | None:
    if not lb.health_port_id or not lb.health_cidr:
        return None
    net = IPNetwork(lb.health_cidr)
    if net.size < 4:
        return None
    return LinkPlan(lb.id, namespace_name(lb.id, host_id), lb.health_port_id, link_mac(lb.id),
                    str(net[2]), net.prefixlen, str(net[1]))


def _monitor(hm: HealthMonitor) -> Monitor:
    return Monitor(hm.type, float(hm.delay), float(hm.timeout), hm.max_retries,
                   hm.max_retries_down, hm.http_method, hm.url_path, hm.expected_codes)


@dataclass(frozen=True)
class Plan:
    links: dict[str, LinkPlan]  # lb id -> link, for the LBs with members to check
    targets: dict[str, Target]  # member id -> what to probe
    monitored: set[str]  # members whose pool has an admin-up monitor (entries kept)


def plan(lbs: list[LoadBalancer], pools: list[Pool], members: list[PoolMember],
         monitors: list[HealthMonitor], host_id: str) -> Plan:
    by_lb = {lb.id: lb for lb in lbs}
    by_pool = {p.id: p for p in pools}
    mon = {m.pool_id: m for m in monitors if m.admin_state_up}
    links: dict[str, LinkPlan] = {}
    targets: dict[str, Target] = {}
    monitored: set[str] = set()
    for m in members:
        pool = by_pool.get(m.pool_id)
        hm = mon.get(m.pool_id)
        if pool is None or hm is None:
            continue
        monitored.add(m.id)
        lb = by_lb.get(pool.load_balancer_id)
        if lb is None or not (lb.admin_state_up and pool.admin_state_up and m.admin_state_up):
            continue
        link = links.get(lb.id) or plan_link(lb, host_id)
        if link is None:
            continue
        links[lb.id] = link
        targets[m.id] = Target(m.id, pool.id, lb.id, m.address, m.protocol_port, _monitor(hm))
    return Plan(links, targets, monitored)


class HealthChecks:
    """The leader's bookkeeping: the schedule, what the store holds, the writes."""

    def __init__(self, store: Store, host_id: str,
                 wall: Callable[[], float] = time.time) -> None:
        self.store, self.host_id, self.wall = store, host_id, wall
        self.schedule = Schedule()
        self.stored: dict[str, str] = {}  # member id -> status held in the store
        self.links: dict[str, LinkPlan] = {}
        self.leading = False

    def lead(self) -> None:
        """Became the leader: start from the stored entries."""
        self.stored = {}
        for mid in self.store.list_state(paths.MEMBER_HEALTH):
            entry = self.store.get_state(paths.member_health(mid))
            if entry and entry.get("status"):
                self.stored[mid] = entry["status"]
        self.schedule = Schedule()
        self.links = {}
        self.leading = True
        LOG.info("health checks: leading, %d member entries in the store", len(self.stored))

    def resign(self) -> None:
        self.leading = False
        self.schedule = Schedule()
        self.links = {}

    def read(self) -> Plan:
        def objs(kind, cls):
            return [cls.from_dict(d) for d, _v in self.store.list(kind)]

        return plan(objs(LOAD_BALANCERS, LoadBalancer), objs(POOLS, Pool),
                    objs(POOL_MEMBERS, PoolMember), objs(HEALTH_MONITORS, HealthMonitor),
                    self.host_id)

    def sync(self, now: float) -> dict[str, LinkPlan]:
        """Read the topology: the members to check from now on, the entries
        to delete (deleted here); the links the load balancers need."""
        p = self.read()
        stale = [mid for mid in self.stored if mid not in p.monitored]
        if stale:
            self.store.delete_states([paths.member_health(mid) for mid in stale])
            for mid in stale:
                self.stored.pop(mid, None)
            LOG.info("health checks: entries of %d members deleted", len(stale))
        self.schedule.set_targets(p.targets, self.stored, now)
        self.links = p.links
        return p.links

    def due(self, now: float, ready: set[str]) -> list[Target]:
        """The probes to start now, of the load balancers whose link is ``ready``."""
        return self.schedule.due(now, lambda t: t.lb_id in ready)

    def report(self, target: Target, result: ProbeResult) -> Change | None:
        """A probe ended: write the member's status if it changed (or if an
        earlier write of it failed); the change written, if any."""
        change = self.schedule.result(target, result.ok, result.reason)
        status = self.schedule.status(target.member_id)
        if status is None or status == self.stored.get(target.member_id):
            return None
        if not self.leading:
            return None
        reason = change.reason if change else result.reason
        data = {"status": status, "since": self.wall(), "host_id": self.host_id,
                "reason": reason}
        try:
            self.store.put_state(paths.member_health(target.member_id), data, ephemeral=False)
        except MidoflowError as e:  # no quorum: written with the next result
            LOG.warning("health of member %s (%s) not written: %s", target.member_id,
                        status, e)
            return None
        self.stored[target.member_id] = status
        LOG.info("member %s (%s:%d) is %s: %s", target.member_id, target.address,
                 target.port, status, reason)
        return Change(target.member_id, status, reason)
