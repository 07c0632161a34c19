"""The agent's Prometheus metrics (issue 13, goal 10), with prometheus-client.

Most figures already live in the agent's parts (``AgentCore.stats``, the
protection counters, the flow index, the BGP manager, the ZooKeeper store's
session): a custom collector reads them at scrape time, so nothing on the
packet path pays for a metric it does not need. Two are measured here, by
the one hook the packet path has (:meth:`AgentMetrics.miss`, around
``AgentCore.handle_miss``): the simulation time histogram and the packet-ins
by outcome (a flow installed, a packet-out only, dropped, not simulated).

Served by :func:`serve` on the agent's eventlet hub (``eventlet.wsgi`` with
prometheus-client's WSGI app) at ``http://metrics_host:metrics_port/metrics``
when ``metrics_port`` is set in the agent config (0, the default: off).
Each agent has a registry of its own (tests run several in one process).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

LOG = logging.getLogger(__name__)

# Simulation takes 0.1-3 ms here; a slow one (a store read, a big chain) more.
SIM_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# Packet-in outcomes (label ``reason`` of midoflow_agent_packet_ins_total).
FLOW, PACKET_OUT, DROP, IGNORED, ERROR = "flow", "packet_out", "drop", "not_simulated", "error"
# AgentCore.stats keys with a metric of their own (name, help).
NAMED = {
    "simulated": ("midoflow_agent_simulations", "Simulations run (a packet may take several)"),
    "invalidated": ("midoflow_agent_flows_invalidated",
                    "Installed flows removed because something they depended on changed"),
    "ct_pushed": ("midoflow_agent_state_pushes",
                  "Flow-state messages pushed to other hosts before the packet"),
    "ct_tracked": ("midoflow_agent_connections_tracked", "Connections tracked here"),
    "ct_received": ("midoflow_agent_state_keys_received",
                    "Flow-state keys received from other hosts"),
    "state_saved": ("midoflow_agent_flow_state_writes",
                    "Flow-state entries filed in the flow-state store"),
    "state_save_failed": ("midoflow_agent_flow_state_write_failures",
                          "Failed writes to the flow-state store"),
    "state_dropped": ("midoflow_agent_flow_state_dropped",
                      "Flow-state entries dropped unfiled (the buffer overflowed)"),
}
ZK_STATES = ("CONNECTED", "SUSPENDED", "LOST")


def _ints(d: Any) -> Iterator[tuple[str, int]]:
    if isinstance(d, dict):
        for k, v in d.items():
            if isinstance(v, int) and not isinstance(v, bool):
                yield str(k), v


class AgentCollector(Collector):
    """Reads the agent's counters at scrape time. ``agent`` is anything with
    ``core`` (an AgentCore), and optionally ``bgp`` (a BgpManager) and
    ``store`` (the ZooKeeper store); a missing part is left out."""

    def __init__(self, agent: Any, metrics: AgentMetrics) -> None:
        self.agent, self.metrics = agent, metrics

    def collect(self) -> Iterable:
        core = self.agent.core
        stats = core.stats
        yield from self._packet_ins(stats)
        yield self.metrics.sim_seconds.family()
        for key, (name, doc) in NAMED.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], stats.get(key, 0))
            yield c
        yield from self._flows(core)
        events = CounterMetricFamily("midoflow_agent_events",
                                     "Every counter of AgentCore.stats, by name", labels=["event"])
        for k, v in sorted(_ints(stats)):
            events.add_metric([k], v)
        yield events
        yield from self._ports(core, stats)
        yield from self._zookeeper(getattr(self.agent, "store", None))
        yield from self._bgp(getattr(self.agent, "bgp", None))

    def _packet_ins(self, stats: dict) -> Iterator:
        c = CounterMetricFamily("midoflow_agent_packet_ins",
                                "Packet-ins handed to the simulation, by outcome",
                                labels=["reason"])
        for reason, n in sorted(self.metrics.outcomes.items()):
            c.add_metric([reason], n)
        c.add_metric(["malformed"], stats.get("malformed", 0))
        yield c
        total = CounterMetricFamily("midoflow_agent_table_misses",
                                    "Table misses the core was asked to handle")
        total.add_metric([], stats.get("packet_in", 0))
        yield total

    def _flows(self, core: Any) -> Iterator:
        c = CounterMetricFamily("midoflow_agent_flows_installed",
                                "Simulated flows sent to OVS")
        c.add_metric([], self.metrics.outcomes.get(FLOW, 0))
        yield c
        g = GaugeMetricFamily("midoflow_agent_flows", "Simulated flows installed now")
        g.add_metric([], len(getattr(core.flows, "tags_of", ())))
        yield g
        bound = GaugeMetricFamily("midoflow_agent_bound_ports", "Virtual ports bound here")
        bound.add_metric([], len(core.bindings))
        yield bound

    def _ports(self, core: Any, stats: dict) -> Iterator:
        refused = CounterMetricFamily("midoflow_agent_port_refused",
                                      "What a port's bounds refused, by limit and port",
                                      labels=["limit", "port"])
        for kind, per in sorted((getattr(core, "refused", None) or {}).items()):
            for pid, n in sorted(_ints(per)):
                refused.add_metric([kind, pid], n)
        yield refused
        for key, name, doc in (
                ("metered_drops", "midoflow_agent_port_metered_drops",
                 "Packet-ins a port's OpenFlow meter dropped"),
                ("queue_drops", "midoflow_agent_port_queue_drops",
                 "Packet-ins dropped from a port's full queue in the agent")):
            c = CounterMetricFamily(name, doc, labels=["port"])
            for pid, n in sorted(_ints(stats.get(key))):
                c.add_metric([pid], n)
            yield c
        storm = GaugeMetricFamily("midoflow_agent_port_storm_blocked",
                                  "Ports cut off by storm control now", labels=["port"])
        for pid in sorted(stats.get("storm_blocked") or {}):
            storm.add_metric([str(pid)], 1)
        yield storm
        malformed = CounterMetricFamily("midoflow_agent_malformed",
                                        "Frames the parser refused, by reason",
                                        labels=["reason"])
        for reason, n in sorted(_ints(getattr(core, "malformed_reasons", None))):
            malformed.add_metric([reason], n)
        yield malformed

    @staticmethod
    def _zookeeper(store: Any) -> Iterator:
        state = getattr(store, "_state", None) if store is not None else None
        if not isinstance(state, str):
            return
        g = GaugeMetricFamily("midoflow_agent_zookeeper_session",
                              "The ZooKeeper session's state (1: the current one)",
                              labels=["state"])
        for s in ZK_STATES:
            g.add_metric([s.lower()], 1 if state == s else 0)
        yield g

    @staticmethod
    def _bgp(bgp: Any) -> Iterator:
        states = getattr(bgp, "states", None)
        if not isinstance(states, dict):
            return
        up = GaugeMetricFamily("midoflow_agent_bgp_session_up",
                               "A BGP session of this gateway is established (1) or not (0)",
                               labels=["peer", "address", "state"])
        received = GaugeMetricFamily("midoflow_agent_bgp_prefixes_received",
                                     "Prefixes the peer sent", labels=["peer"])
        accepted = GaugeMetricFamily("midoflow_agent_bgp_prefixes_accepted",
                                     "Prefixes of the peer learned (within its limit)",
                                     labels=["peer"])
        refused = GaugeMetricFamily("midoflow_agent_bgp_prefixes_refused",
                                    "Prefixes of the peer refused at its limit", labels=["peer"])
        flaps = CounterMetricFamily("midoflow_agent_bgp_session_flaps",
                                    "Times the session was established again", labels=["peer"])
        for peer_id, st in sorted(dict(states).items()):
            if not isinstance(st, dict):
                continue
            state = str(st.get("state", "unknown"))
            up.add_metric([peer_id, str(st.get("address", "")), state],
                          1 if state == "established" else 0)
            received.add_metric([peer_id], st.get("prefixes_received") or 0)
            accepted.add_metric([peer_id], st.get("prefixes_accepted") or 0)
            refused.add_metric([peer_id], st.get("prefixes_refused") or 0)
            flaps.add_metric([peer_id], st.get("flaps") or 0)
        yield from (up, received, accepted, refused, flaps)


class LightHistogram:
    """A histogram observed on the packet path for the price of a bisect and
    two additions (prometheus-client's ``Histogram.observe`` takes a lock and
    walks every bucket: 9 % of the agent's CPU beyond the simulation itself,
    profiled); exported at scrape time as a Prometheus histogram."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.buckets = name, doc, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds

    def family(self) -> HistogramMetricFamily:
        cumulative, acc = [], 0
        for bound, n in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            acc += n
            cumulative.append((bound, acc))
        return HistogramMetricFamily(self.name, self.doc, buckets=cumulative,
                                     sum_value=self.sum)


class AgentMetrics:
    """The agent's registry: the collector, the simulation histogram and the
    packet-in outcomes counted by :meth:`miss`."""

    def __init__(self, agent: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.outcomes: dict[str, int] = {}
        self.sim_seconds = LightHistogram("midoflow_agent_simulation_seconds",
                                          "Time to handle one table miss (simulation included)",
                                          SIM_BUCKETS)
        self.registry.register(AgentCollector(agent, self))

    def miss(self, handle: Callable[..., Any], *args: Any) -> Any:
        """``handle(*args)`` (AgentCore.handle_miss), timed; its outcome counted."""
        t0 = time.perf_counter()
        try:
            decision = handle(*args)
        except Exception:
            self._count(ERROR)
            raise
        self.sim_seconds.observe(time.perf_counter() - t0)
        if decision is None:
            self._count(IGNORED)
        elif decision.install:
            self._count(FLOW)
        elif decision.actions or decision.emits:
            self._count(PACKET_OUT)
        else:
            self._count(DROP)
        return decision

    def _count(self, reason: str) -> None:
        self.outcomes[reason] = self.outcomes.get(reason, 0) + 1

    def wsgi_app(self) -> Callable:
        return make_wsgi_app(self.registry)


def serve(metrics: AgentMetrics, host: str, port: int) -> None:
    """Serve ``/metrics`` on the eventlet hub until the green thread is killed.
    A port in use is logged (the agent runs on without metrics), not raised."""
    import eventlet
    import eventlet.wsgi

    try:
        sock = eventlet.listen((host, port))
    except OSError as e:
        LOG.error("metrics not served: cannot listen on %s:%d (%s); set metrics_port to a "
                  "free port, or 0 to turn metrics off", host, port, e.strerror or e)
        return
    LOG.info("metrics at http://%s:%d/metrics", host, sock.getsockname()[1])
    eventlet.wsgi.server(sock, metrics.wsgi_app(), log_output=False, debug=False)
