"""Fine-grained route invalidation (issue 13, goal 7): what one route change
costs on a router carrying many routed flows.

The pure layers, no OVS: an agent core (midoflow.agent.core.AgentCore) on
the memory store, with the topology cache, the simulation and the installed
flows' index. Router r has a VM network and an uplink with a default route;
the VM has a flow to each of ``--flows`` destinations (10.0.0.0 + i). Each
change adds a route for a /``--plen`` holding k of those destinations (k =
2^(32-plen)), then deletes it. Per change: the flows removed, their
re-simulation (the next packet of each removed flow misses again and is
simulated: ``handle_miss``), and the time of both (from the API's commit to
the last re-simulated flow).

The baseline, same run, same changes, alternated with the figure: the
behaviour before issue 13, every flow routed by the router invalidated by a
route change (``TopologyCache.router_wide_route_invalidation``).

Two results: ``route_invalidation_flows`` (flows removed and re-simulated
per change, lower is better) and ``route_invalidation_time`` (ms per change,
lower is better), each against its router-wide baseline.

    python -m benchmarks.bench_route_invalidation [--flows N] [--plen L] [--changes C]

``BENCH_QUICK=1``: 10 changes (a few seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.common import report
from midoflow.agent.clock import FakeClock
from midoflow.agent.config import AgentConfig
from midoflow.agent.core import AgentCore
from midoflow.store import paths
from midoflow.store.base import Create, Delete
from midoflow.store.memory import MemoryBackend, MemoryStore

QUICK = os.environ.get("BENCH_QUICK") == "1"
VM, RMAC, UPMAC = "02:00:00:00:00:01", "02:aa:00:00:00:01", "02:aa:00:00:00:09"
GW, GW2 = ("198.51.100.254", "02:ee:00:00:00:01"), ("198.51.100.253", "02:ee:00:00:00:02")
HOSTS = {"h1": "10.255.0.1", "h2": "10.255.0.2"}


def _topology() -> list[Create]:
    def rport(pid: str, key: int, mac: str, ip: str, **kw) -> Create:
        return Create("ports", {"id": pid, "device_id": "r", "device_type": "router",
                                "tunnel_key": key, "mac": mac, "ip_address": ip,
                                "prefix_len": 24, **kw})

    return [
        *(Create("hosts", {"id": h, "name": h}) for h in HOSTS),
        Create("tunnel_zones", {"id": "z", "name": "z", "type": "vxlan", "members": [
            {"host_id": h, "ip": ip} for h, ip in HOSTS.items()]}),
        Create("bridges", {"id": "b", "port_ids": ["vm", "br"]}),
        Create("routers", {"id": "r", "port_ids": ["rb", "up"]}),
        Create("ports", {"id": "vm", "device_id": "b", "tunnel_key": 11}),
        Create("ports", {"id": "br", "device_id": "b", "tunnel_key": 12, "type": "interior",
                         "peer_id": "rb"}),
        rport("rb", 13, RMAC, "192.168.1.1", type="interior", peer_id="br"),
        rport("up", 14, UPMAC, "198.51.100.1"),
        Create("routes", {"id": "default", "router_id": "r", "dst_cidr": "0.0.0.0/0",
                          "next_hop_port": "up", "next_hop_gateway": GW[0]}),
    ]


class World:
    """One backend, agents on h1 (the VM, the flows) and h2 (the uplink)."""

    def __init__(self, router_wide: bool) -> None:
        self.api = MemoryStore(MemoryBackend())
        self.api.commit(_topology())
        for ip, mac in (GW, GW2):
            self.api.put_state(paths.arp_entry("r", ip, mac, time.time()), {})
        self.gone: set[int] = set()
        self.h1 = self._agent("h1", {"vxlan0": (1, None), "vm1": (5, "vm")})
        self._agent("h2", {"vxlan0": (1, None), "uplink": (7, "up")})
        self.h1.cache.router_wide_route_invalidation = router_wide
        self.dst_of: dict[int, str] = {}  # installed cookie -> its destination

    def _agent(self, host: str, ifaces: dict) -> AgentCore:
        cfg = AgentConfig(host_id=host, zookeeper="memory", ovsdb="unix:/x",
                          tunnel_ip=HOSTS[host], max_flows_per_port=1_000_000)
        a = AgentCore(cfg, MemoryStore(self.api.backend), on_invalidate=self.gone.update,
                      clock=FakeClock(wall=time.time(), mono=time.monotonic()))
        a.start()
        a.set_interfaces(ifaces)
        return a

    def flow(self, dst: str) -> None:
        d = self.h1.handle_miss(5, {"eth_src": VM, "eth_dst": RMAC, "eth_type": 0x800,
                                    "ip_src": "192.168.1.10", "ip_dst": dst, "ip_proto": 6,
                                    "tp_src": 1000, "tp_dst": 80})
        if d is None or not d.install:
            raise SystemExit(f"no flow to {dst}: the benchmark's topology is broken")
        self.dst_of[d.cookie] = dst

    def change(self, op) -> tuple[int, float, float]:
        """Commit one route change; re-simulate what it removed. (removed,
        seconds to the flows' removal, seconds to their re-simulation)"""
        self.gone.clear()
        t0 = time.perf_counter()
        self.api.commit([op])
        t1 = time.perf_counter()
        removed = list(self.gone)
        for c in removed:
            self.flow(self.dst_of.pop(c))
        return len(removed), t1 - t0, time.perf_counter() - t0


def _ip(i: int) -> str:
    n = (10 << 24) + i
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=1000)
    ap.add_argument("--plen", type=int, default=26, help="prefix length of the changed route")
    ap.add_argument("--changes", type=int, default=10 if QUICK else 60)
    a = ap.parse_args()
    k = min(2 ** (32 - a.plen), a.flows)
    worlds = {"fine": World(False), "router": World(True)}
    for w in worlds.values():
        for i in range(a.flows):
            w.flow(_ip(i))
    removed: dict[str, list[int]] = {n: [] for n in worlds}
    took: dict[str, list[float]] = {n: [] for n in worlds}
    inval: dict[str, list[float]] = {n: [] for n in worlds}
    blocks = max(1, a.flows // k)
    for i in range(a.changes):
        net = f"{_ip((i % blocks) * k)}/{a.plen}"
        op = (Create("routes", {"id": "x", "router_id": "r", "dst_cidr": net,
                                "next_hop_port": "up", "next_hop_gateway": GW2[0]})
              if i % 2 == 0 else Delete("routes", "x"))
        for name in (("fine", "router") if i % 4 < 2 else ("router", "fine")):
            n, s_inval, s = worlds[name].change(op)
            removed[name].append(n)
            inval[name].append(s_inval)
            took[name].append(s)
    for name, w in worlds.items():
        assert len(w.h1.flows) == a.flows, f"{name}: {len(w.h1.flows)} flows left"
    fine_n, base_n = statistics.mean(removed["fine"]), statistics.mean(removed["router"])
    fine_ms = statistics.median(took["fine"]) * 1e3
    base_ms = statistics.median(took["router"]) * 1e3
    extra = {"flows": a.flows, "route_prefix_len": a.plen, "destinations_in_prefix": k,
             "changes": a.changes, "quick": QUICK,
             "removed_per_change": {"fine": fine_n, "router_wide": base_n},
             "resimulated_per_change": {"fine": fine_n, "router_wide": base_n},
             "ms_per_change_median": {"fine": round(fine_ms, 3),
                                      "router_wide": round(base_ms, 3)},
             "ms_to_remove_median": {
                 n: round(statistics.median(inval[m]) * 1e3, 3)
                 for n, m in (("fine", "fine"), ("router_wide", "router"))},
             "ms_per_change_max": {"fine": round(max(took["fine"]) * 1e3, 3),
                                   "router_wide": round(max(took["router"]) * 1e3, 3)}}
    report("route_invalidation_flows", fine_n, "flows removed and re-simulated per change",
           "router-wide invalidation", base_n, higher_is_better=False, extra=extra)
    report("route_invalidation_time", fine_ms, "ms per change (invalidate + re-simulate)",
           "router-wide invalidation", base_ms, higher_is_better=False, extra=extra)


if __name__ == "__main__":
    main()
