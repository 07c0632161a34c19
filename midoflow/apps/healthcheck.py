"""Health checks in the agent (glue): this agent joins the election at
``paths.HEALTH_ELECTION``; while it leads, it keeps one namespace per load
balancer with members to check (``mfhm-<lb>-<host>``), linked by a veth to
the host's OVS bridge with ``external_ids:iface-id`` = the load balancer's
health port, so the agent binds it like a VM port and the probes cross
midoflow's own data path to the members; the probes run in green threads
with sockets made inside that namespace. The logic is in
:mod:`midoflow.agent.healthcheck` and :mod:`midoflow.lb`; the namespace and
veth handling is :mod:`midoflow.bgp.link`'s.

Namespaces left by an earlier run of this agent are removed at start; on
losing the leadership or stopping, its namespaces and OVS ports go. A
health link's OVS end that this run did not make (a killed run's, still in
OVS) is hidden from the agent's bindings (:meth:`HealthCheckRunner.visible`)
and removed: bound, it would take the health port from the leader's host.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from eventlet import greenpool
from os_ken.lib import hub

from midoflow.agent.healthcheck import (
    NAMESPACE_PREFIX,
    HealthChecks,
    LinkPlan,
    host_suffix,
    is_ovs_end,
    link_name,
)
from midoflow.bgp import link as bgplink
from midoflow.lb.health import Target
from midoflow.lb.probes import ProbeResult, http_probe, parse_expected_codes, tcp_probe
from midoflow.store import paths

LOG = logging.getLogger("midoflow.agent.health")

SYNC_INTERVAL = 1.0  # topology read and links reconciled at least this often
MAX_PROBES = 64  # probes in flight at once


@dataclass(frozen=True)
class HealthLinkSpec(bgplink.LinkSpec):
    """A BGP link's spec with the health link's names (``mh<port>``, ``mh<port>p``)."""

    @property
    def name(self) -> str:
        return link_name(self.port_id)


class _BindingSwitch:
    """The OVS end plugged with ``iface-id``: the agent binds it as the health port."""

    def __init__(self, switch: bgplink.Switch, plan: LinkPlan) -> None:
        self.switch, self.plan = switch, plan

    def add_port(self, name: str, external_ids: dict[str, str]) -> None:
        self.switch.add_port(name, {"iface-id": self.plan.port_id,
                                    "midoflow-health-lb": self.plan.lb_id})

    def del_port(self, name: str) -> None:
        self.switch.del_port(name)

    def ofport(self, name: str) -> int:
        return self.switch.ofport(name)


def _spec(p: LinkPlan) -> HealthLinkSpec:
    return HealthLinkSpec(p.port_id, p.mac, p.ip, p.prefix_len)


class HealthCheckRunner:
    def __init__(self, store, host_id: str, switch, ovs_netns: str | None,
                 bound: Callable[[str], bool]) -> None:
        self.store, self.host_id, self.switch = store, host_id, switch
        self.ovs_netns = ovs_netns or None
        self.bound = bound
        self.checks = HealthChecks(store, host_id)
        self.made: dict[str, LinkPlan] = {}  # lb id -> link made on this host
        # the OVS ends of the links this run makes or made (see visible)
        self.own_ends: set[str] = set()
        self._want_lead = False
        self._wake = hub.Event()
        self._running = False
        self._pool = greenpool.GreenPool(MAX_PROBES)
        self.election = None
        self._thread = None

    # ---- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        self._remove_leftovers()
        self._running = True
        self._thread = hub.spawn(self._loop)
        self.election = self.store.elect(paths.HEALTH_ELECTION, self.host_id,
                                         on_lead=self._on_lead, on_lose=self._on_lose)

    def stop(self) -> None:
        self._running = False
        if self.election is not None:
            try:
                self.election.cancel()
            except Exception as e:
                LOG.debug("leaving the health-check election: %s", e)
        self._resign()

    def _on_lead(self) -> None:
        self._want_lead = True
        self._wake.set()

    def _on_lose(self) -> None:
        self._want_lead = False
        self._wake.set()

    # ---- the loop -------------------------------------------------------------
    def _loop(self) -> None:
        last_sync = 0.0
        while self._running:
            timeout = SYNC_INTERVAL
            try:
                if self._want_lead and not self.checks.leading:
                    self.checks.lead()
                    last_sync = 0.0
                elif not self._want_lead and self.checks.leading:
                    self._resign()
                self._remove_stray_ports()
                if self.checks.leading:
                    now = time.monotonic()
                    if now - last_sync >= SYNC_INTERVAL:
                        last_sync = now
                        self._links(self.checks.sync(now))
                    ready = {lb for lb, p in self.made.items() if self.bound(p.port_id)}
                    for t in self.checks.due(now, ready):
                        self._pool.spawn_n(self._probe, t, self.made[t.lb_id].namespace)
                    nxt = self.checks.schedule.next_due()
                    if nxt is not None:
                        timeout = max(0.05, min(timeout, nxt - time.monotonic()))
            except Exception:
                LOG.exception("health checks: reconcile failed")
            self._wake.wait(timeout=timeout)
            self._wake.clear()

    def _probe(self, t: Target, namespace: str) -> None:
        def factory():
            return bgplink.socket_in(namespace)

        m = t.monitor
        try:
            if m.http:
                result = http_probe(factory, t.address, t.port, m.timeout,
                                    method=m.http_method, path=m.url_path,
                                    expected=parse_expected_codes(m.expected_codes), tls=m.tls)
            else:
                result = tcp_probe(factory, t.address, t.port, m.timeout)
        except Exception as e:  # a namespace gone under us, a bad monitor
            result = ProbeResult(False, f"{type(e).__name__}: {e}")
        try:
            self.checks.report(t, result)
        except Exception:
            LOG.exception("health checks: recording a result failed")

    def visible(self, interfaces: dict) -> dict:
        """The bridge's interfaces the agent may bind: not a health link this
        run did not make (an earlier run's, left in OVS by a killed agent):
        bound, it would take the health port from the leader's host."""
        return {n: v for n, v in interfaces.items()
                if not is_ovs_end(n) or n in self.own_ends}

    # ---- namespaces and links -------------------------------------------------
    def _links(self, want: dict[str, LinkPlan]) -> None:
        for lb_id, p in list(self.made.items()):
            if want.get(lb_id) != p:
                self._unmake(p)
                del self.made[lb_id]
        for lb_id, p in want.items():
            if lb_id in self.made:
                continue
            try:
                self._make(p)
            except Exception as e:
                self.own_ends.discard(_spec(p).ovs_name)
                LOG.warning("health namespace %s for load balancer %s: %s", p.namespace,
                            lb_id, e)
                continue
            self.made[lb_id] = p

    def _make(self, p: LinkPlan) -> None:
        self.own_ends.add(_spec(p).ovs_name)  # before OVS may report it
        bgplink.create(_spec(p), _BindingSwitch(self.switch, p), p.namespace, self.ovs_netns)
        with bgplink._iproute(p.namespace) as ipr:
            ipr.route("replace", dst="0.0.0.0/0", gateway=p.gateway)
        LOG.info("health namespace %s: %s/%d via %s, port %s", p.namespace, p.ip,
                 p.prefix_len, p.gateway, p.port_id)

    def _unmake(self, p: LinkPlan) -> None:
        bgplink.remove(_spec(p), _BindingSwitch(self.switch, p), p.namespace)
        self.own_ends.discard(_spec(p).ovs_name)
        bgplink.remove_namespace(p.namespace)

    def _resign(self) -> None:
        for p in list(self.made.values()):
            try:
                self._unmake(p)
            except Exception as e:
                LOG.warning("removing health namespace %s: %s", p.namespace, e)
        self.made.clear()
        self.checks.resign()

    def _remove_leftovers(self) -> None:
        """This agent's namespaces and OVS ports from an earlier run."""
        suffix = "-" + host_suffix(self.host_id)
        try:
            names = os.listdir("/var/run/netns")
        except OSError:
            names = []
        for name in names:
            if name.startswith(NAMESPACE_PREFIX) and name.endswith(suffix):
                LOG.info("removing health namespace %s left by an earlier run", name)
                bgplink.remove_namespace(name)
        self._remove_stray_ports()

    def _remove_stray_ports(self) -> None:
        """Health links' OVS ends on the bridge that no namespace of ours uses
        (an earlier run's: OVS reports them once its monitor has synced)."""
        for name in list(getattr(self.switch, "interfaces", {})):
            if is_ovs_end(name) and name not in self.own_ends:
                LOG.info("removing stray health link %s from OVS", name)
                try:
                    self.switch.del_port(name)
                except Exception as e:
                    LOG.debug("removing %s from OVS: %s", name, e)
