"""What the proactive loop (midoflow.agent.proactive) costs the agent per
pass: 50 ports bound here on one bridge, a router to a second bridge whose
``--dsts`` VMs (MACs learned, addresses resolved by the router) are on
another host. The pure layers, no OVS: an agent core on the memory store.

Three figures (ms, lower is better): the first pass (every candidate
simulated dry), a steady pass (everything installed: nothing changed), and a
pass after one destination's ARP entry changed (one flow per port again).

    python -m benchmarks.bench_proactive_plan [--ports N] [--dsts D] [--limit L]
"""

from __future__ import annotations

import argparse
import statistics
import time

from midoflow.agent.clock import FakeClock
from midoflow.agent.config import AgentConfig
from midoflow.agent.core import AgentCore
from midoflow.store import paths
from midoflow.store.base import Create
from midoflow.store.memory import MemoryBackend, MemoryStore


def _mac(i: int, net: int) -> str:
    return f"02:00:{net:02x}:00:{i >> 8:02x}:{i & 0xff:02x}"


def build(ports: int, dsts: int, limit: int):
    api = MemoryStore(MemoryBackend())
    local = [f"p{i}" for i in range(ports)]
    remote = [f"q{i}" for i in range(dsts)]
    api.commit([
        *(Create("hosts", {"id": h, "name": h}) for h in ("h1", "h2")),
        Create("tunnel_zones", {"id": "z", "name": "z", "type": "vxlan", "members": [
            {"host_id": "h1", "ip": "10.0.0.1"}, {"host_id": "h2", "ip": "10.0.0.2"}]}),
        Create("bridges", {"id": "b1", "port_ids": [*local, "b1r"]}),
        Create("bridges", {"id": "b2", "port_ids": [*remote, "b2r"]}),
        Create("routers", {"id": "r", "port_ids": ["r1", "r2"]}),
        *(Create("ports", {"id": p, "device_id": "b1", "tunnel_key": 100 + i})
          for i, p in enumerate(local)),
        *(Create("ports", {"id": q, "device_id": "b2", "tunnel_key": 5000 + i,
                           "host_id": "h2", "interface_name": f"vm{i}"})
          for i, q in enumerate(remote)),
        Create("ports", {"id": "b1r", "device_id": "b1", "tunnel_key": 20, "type": "interior",
                         "peer_id": "r1"}),
        Create("ports", {"id": "b2r", "device_id": "b2", "tunnel_key": 21, "type": "interior",
                         "peer_id": "r2"}),
        Create("ports", {"id": "r1", "device_id": "r", "device_type": "router",
                         "tunnel_key": 22, "mac": "02:aa:00:00:00:01",
                         "ip_address": "192.168.1.1", "prefix_len": 24, "type": "interior",
                         "peer_id": "b1r"}),
        Create("ports", {"id": "r2", "device_id": "r", "device_type": "router",
                         "tunnel_key": 23, "mac": "02:aa:00:00:00:02",
                         "ip_address": "10.1.0.1", "prefix_len": 16, "type": "interior",
                         "peer_id": "b2r"}),
    ])
    for i, p in enumerate(local):
        api.put_state(paths.mac_entry("b1", _mac(i, 1), p), {})
    for i, q in enumerate(remote):
        api.put_state(paths.mac_entry("b2", _mac(i, 2), q), {})
        api.put_state(paths.port_active(q), {"host_id": "h2"})
        api.put_state(paths.arp_entry("r", f"10.1.{(i + 2) >> 8}.{(i + 2) & 0xff}",
                                      _mac(i, 2), time.time()), {})
    cfg = AgentConfig(host_id="h1", zookeeper="memory", ovsdb="unix:/x", tunnel_ip="10.0.0.1",
                      proactive_flows=limit)
    core = AgentCore(cfg, MemoryStore(api.backend),
                     clock=FakeClock(wall=time.time(), mono=time.monotonic()))
    core.start()
    core.set_interfaces({"vxlan0": (1, None), **{f"vm{i}": (10 + i, p)
                                                  for i, p in enumerate(local)}})
    return api, core


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=50)
    ap.add_argument("--dsts", type=int, default=500)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--passes", type=int, default=20)
    a = ap.parse_args()
    api, core = build(a.ports, a.dsts, a.limit)
    pro = core.proactive
    first_ms, planned = timed(pro.plan)  # its first part (the budget of one call)
    total_ms, chunks = first_ms, 1
    while pro.more:
        ms, more = timed(pro.plan)
        total_ms, chunks, planned = total_ms + ms, chunks + 1, planned + more
    steady = [timed(pro.plan)[0] for _ in range(a.passes)]
    again = []
    for k in range(a.passes):  # one destination moves: its flows go, found again
        api.put_state(paths.arp_entry("r", "10.1.0.2", _mac(1000 + k, 2), time.time()), {})
        ms, _ = timed(pro.plan)
        again.append(ms)
    flows = len(core.flows.tags_of)
    per_port = max(core.installed.count(f"p{i}") for i in range(a.ports))
    print(f"{a.ports} ports, {a.dsts} destinations, limit {a.limit}: first plan "
          f"{total_ms:.1f} ms in {chunks} calls (first part {first_ms:.1f} ms) for "
          f"{len(planned)} flows, steady pass "
          f"{statistics.median(steady):.2f} ms, pass after one ARP change "
          f"{statistics.median(again):.2f} ms; {flows} flows, at most {per_port} per port")


if __name__ == "__main__":
    main()
