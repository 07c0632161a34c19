"""Simulation rate through bridge -> router -> bridge (pure Python), against
the L2-only path (bridge to bridge port) on the same topology, same run.

Both run over the agent's own view (``TopologyCache`` fed by the in-memory
store through the same watches as from ZooKeeper), as the agent simulates."""

from __future__ import annotations

import itertools
import random

from benchmarks.common import rate, report
from midoflow.agent.cache import TopologyCache
from midoflow.model import (
    BRIDGES,
    DEVICE_ROUTER,
    PORT_INTERIOR,
    PORTS,
    ROUTERS,
    ROUTES,
    Bridge,
    Port,
    Route,
    Router,
)
from midoflow.sim.packet import PROTO_TCP, Packet
from midoflow.sim.simulator import simulate
from midoflow.sim.view import DictView
from midoflow.store import paths
from midoflow.store.base import Create
from midoflow.store.memory import MemoryStore

NETS, VMS, N_ROUTES = 8, 16, 50
NOW = 1000.0


def build():
    """One router, NETS bridges of VMS VMs each, ROUTES extra routes."""
    v = DictView()
    key = itertools.count(1)
    rports = []
    for n in range(NETS):
        bid = f"b{n}"
        ids = [f"{bid}p{i}" for i in range(VMS)]
        for i, pid in enumerate(ids):
            v.ports[pid] = Port(id=pid, device_id=bid, tunnel_key=next(key))
            v.macs[(bid, f"02:00:00:00:{n:02x}:{i:02x}")] = pid
            v.arps[("r", f"10.{n}.0.{i + 10}")] = (f"02:00:00:00:{n:02x}:{i:02x}", NOW)
        rp, bp = f"r-{n}", f"{bid}-r"
        v.ports[rp] = Port(id=rp, device_id="r", device_type=DEVICE_ROUTER,
                           tunnel_key=next(key), type=PORT_INTERIOR, peer_id=bp,
                           mac=f"02:aa:00:00:00:{n:02x}", ip_address=f"10.{n}.0.1",
                           prefix_len=24)
        v.ports[bp] = Port(id=bp, device_id=bid, tunnel_key=next(key), type=PORT_INTERIOR,
                           peer_id=rp)
        v.bridges[bid] = Bridge(id=bid, port_ids=(*ids, bp))
        rports.append(rp)
    v.routers["r"] = Router(id="r", port_ids=tuple(rports))
    v.routes_by_router["r"] = [
        Route(id=f"rt{i}", router_id="r", dst_cidr=f"172.{16 + i // 256}.{i % 256}.0/24",
              next_hop_port="r-0", next_hop_gateway="10.0.0.10") for i in range(N_ROUTES)]
    rnd = random.Random(1)
    l2, l3 = [], []
    for _ in range(4096):
        n, m = rnd.sample(range(NETS), 2)
        s, d = rnd.sample(range(VMS), 2)
        src = f"02:00:00:00:{n:02x}:{s:02x}"
        l2.append(Packet(f"b{n}p{s}", src, f"02:00:00:00:{n:02x}:{d:02x}",
                         ip_src=f"10.{n}.0.{s + 10}", ip_dst=f"10.{n}.0.{d + 10}",
                         ip_proto=PROTO_TCP, tp_src=1000 + s, tp_dst=80))
        l3.append(Packet(f"b{n}p{s}", src, f"02:aa:00:00:00:{n:02x}",
                         ip_src=f"10.{n}.0.{s + 10}", ip_dst=f"10.{m}.0.{d + 10}",
                         ip_proto=PROTO_TCP, tp_src=1000 + s, tp_dst=80))
    return v, l2, l3


def agent_view(v: DictView) -> TopologyCache:
    """The same topology loaded into the agent's cache through a store."""
    store = MemoryStore()
    ops = [Create(BRIDGES, b.to_dict()) for b in v.bridges.values()]
    ops += [Create(ROUTERS, r.to_dict()) for r in v.routers.values()]
    ops += [Create(PORTS, p.to_dict()) for p in v.ports.values()]
    ops += [Create(ROUTES, r.to_dict()) for rs in v.routes_by_router.values() for r in rs]
    store.commit(ops)
    for (bid, mac), pid in v.macs.items():
        store.put_state(paths.mac_entry(bid, mac, pid), {})
    for (rid, ip), (mac, at) in v.arps.items():
        store.put_state(paths.arp_entry(rid, ip, mac, at), {})
    cache = TopologyCache(store, lambda tags: None)
    cache.start()
    return cache


def main() -> None:
    dict_view, l2, l3 = build()
    view = agent_view(dict_view)
    r = simulate(view, l3[0], NOW)
    assert not r.dropped and r.rewrites, r.trace  # the routed path really routes
    i2, i3 = itertools.cycle(l2), itertools.cycle(l3)
    base = rate(lambda: simulate(view, next(i2), NOW))
    value = rate(lambda: simulate(view, next(i3), NOW))
    report("sim_router_rate", value, "packets/s", "sim_l2_path", base,
           extra={"networks": NETS, "vms_per_network": VMS, "routes": N_ROUTES + NETS})


if __name__ == "__main__":
    main()
