"""L2 simulation rate (packets simulated per second, pure Python), against a
minimal MAC-learning switch in Python (os-ken's simple_switch logic: a dict
lookup per packet) measured in the same run."""

from __future__ import annotations

import itertools
import random

from benchmarks.common import rate, report
from midoflow.model import Bridge, Port
from midoflow.sim.packet import Packet
from midoflow.sim.simulator import simulate
from midoflow.sim.view import DictView

BRIDGES, PORTS = 20, 16


def build():
    view = DictView()
    key = itertools.count(1)
    for b in range(BRIDGES):
        bid = f"b{b}"
        ids = []
        for p in range(PORTS):
            pid = f"{bid}p{p}"
            view.ports[pid] = Port(id=pid, device_id=bid, tunnel_key=next(key))
            view.macs[(bid, f"02:00:00:00:{b:02x}:{p:02x}")] = pid
            ids.append(pid)
        view.bridges[bid] = Bridge(id=bid, port_ids=tuple(ids))
    rnd = random.Random(1)
    packets = []
    for _ in range(4096):
        b = rnd.randrange(BRIDGES)
        s, d = rnd.sample(range(PORTS), 2)
        packets.append(Packet(f"b{b}p{s}", f"02:00:00:00:{b:02x}:{s:02x}",
                              f"02:00:00:00:{b:02x}:{d:02x}"))
    return view, packets


def main() -> None:
    view, packets = build()
    it = itertools.cycle(packets)

    def sim():
        simulate(view, next(it))

    # Baseline: learn src, look up dst, as a naive reactive controller does.
    table: dict[tuple[str, str], str] = dict(view.macs)
    bridge_of = {pid: p.device_id for pid, p in view.ports.items()}
    it2 = itertools.cycle(packets)

    def naive():
        pkt = next(it2)
        b = bridge_of[pkt.in_port]
        table[(b, pkt.eth_src)] = pkt.in_port
        table.get((b, pkt.eth_dst))

    base = rate(naive)
    value = rate(sim)
    report("sim_l2_rate", value, "packets/s", "naive_mac_learning_switch", base,
           extra={"bridges": BRIDGES, "ports_per_bridge": PORTS})


if __name__ == "__main__":
    main()
