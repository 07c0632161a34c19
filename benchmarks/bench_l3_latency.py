"""First-packet latency of a NEW TCP connection through the virtual router,
against the same connection when its flows are installed, and against OVS
NORMAL doing the same first connection on a plain L2 segment, same run.

Two cloud hosts (each its own userspace OVS, VXLAN between them), one tenant
router with 192.168.1.0/24 and 192.168.2.0/24: VM ``a`` (192.168.1.10) on host
1, VM ``b`` (192.168.2.20) on host 2, each with a default route via the
router. ``a`` times ``connect()`` (SYN -> SYN/ACK) to a silent TCP server in
``b``; every connection is NEW (fresh source port, closed with a reset: no FIN
traffic, nothing from the server after its SYN/ACK).

What "first packet" means here. midoflow's routed flows match in_port, the
MACs and the destination IP only, so a new source port alone still hits the
installed flow. Before each measured connection we therefore delete the
agent's simulated flows (cookie 0x4d...) on BOTH hosts, so the SYN is
simulated by host 1's agent and the SYN/ACK by host 2's agent: the measured
connect time is the network round trip plus two table misses, each a
packet-in, a simulation through bridge -> router -> bridge, a flow-mod and a
packet-out. The learned tables stay (the router's ARP table, the bridges'
MAC tables, the VMs' static neighbour entry for their gateway): this is a new
connection between VMs whose flows have expired, not a VM's very first packet
(that would add ARP resolution). Two variants, alternating:

* ``cold`` (headline): the datapath flow cache (megaflows) of both OVSes is
  also purged, so every OVS on the path, underlay and tunnel included, starts
  cold, as after an idle period. The OVS NORMAL baseline gets the same purge
  (for NORMAL, a purged cache is the only state in which a connection has a
  "first packet" at all: MAC learning stays, as midoflow's tables do).
* ``warm_underlay`` (extra): only the OpenFlow flows are deleted; the rest of
  each datapath cache (tunnel, underlay) stays, as on a busy host.

After each first-packet connection we check that both hosts' table 1 holds a
freshly installed flow for it (else the connection did not take the
controller path, e.g. a stale megaflow, and the sample is discarded and
counted). Then one unrecorded connection warms the datapath and one more is
timed as ``established`` (flows and megaflows in place): the baseline of
``l3_first_packet_latency``. Alternating makes both see the same noise.

OVS NORMAL rounds: agents stopped, every flow deleted, ``actions=NORMAL`` and
a point-to-point VXLAN port (as in bench_tcp_throughput), the same two VMs
given addresses on one L2 subnet (10.77.0.0/24, static neighbour entries).

Results: ``l3_first_packet_latency`` (median ms, cold) vs
``l3_established_latency``; ``l3_first_packet_vs_ovs_normal`` (the same
midoflow median) vs OVS NORMAL's cold first-connection median. Rounds
alternate midoflow / NORMAL. Run: ``.venv/bin/python -m
benchmarks.bench_l3_latency`` (root). Knobs (env): L3_LAT_ROUNDS,
L3_LAT_SAMPLES (first-packet connections per variant per round).
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks.cloudbench import (
    SIM_COOKIE,
    BenchError,
    ConnectClient,
    Tenant,
    del_sim_flows,
    flow_count,
    logger,
    parallel,
    purge_datapath,
    routed_vm,
    run_main,
    start_server,
    stop_agents_cleanly,
    summary,
    wait_ping,
)
from benchmarks.common import report

NAME = "l3_first_packet_latency"
NAME_VS_NORMAL = "l3_first_packet_vs_ovs_normal"
ROUNDS = int(os.environ.get("L3_LAT_ROUNDS", "2"))
SAMPLES = int(os.environ.get("L3_LAT_SAMPLES", "40"))
PORT = 5555
IP_A, IP_B = "192.168.1.10", "192.168.2.20"
MAC_A, MAC_B = "02:00:00:01:00:0a", "02:00:00:02:00:14"
L2_A, L2_B = "10.77.0.1", "10.77.0.2"  # the NORMAL rounds' plain L2 segment
# More failed (timed out) or discarded connections than this fraction: error.
MAX_BAD = 0.2

log = logger(NAME)


class Bad:
    """Connections that failed or did not take the path they were meant to."""

    def __init__(self) -> None:
        self.failed = 0
        self.not_simulated = 0
        self.retried_delete = 0

    def check(self, total: int) -> None:
        bad = self.failed + self.not_simulated
        if total and bad > MAX_BAD * total:
            raise BenchError(f"{bad} of {total} connections failed ({self.failed}) or were not "
                             f"simulated ({self.not_simulated}); see the agents' logs")


def timed(client, ip: str, bad: Bad) -> float | None:
    t = client.connect(ip, PORT)
    if t is None:
        bad.failed += 1
    return t


def clear_flows_for(hosts, purge: bool, bad: Bad) -> None:
    """Delete the simulated flows of a and b on both hosts (and the datapath
    caches when ``purge``); make sure none is left."""
    checks = [(hosts[0], f"{SIM_COOKIE},ip,nw_dst={IP_B}"),
              (hosts[1], f"{SIM_COOKIE},ip,nw_dst={IP_A}")]
    for _attempt in range(3):
        parallel(del_sim_flows, hosts)
        if purge:
            parallel(purge_datapath, hosts)
        if not any(parallel(lambda hm: flow_count(*hm), checks)):
            return
        bad.retried_delete += 1
    raise BenchError("the simulated flows of a and b keep coming back after deletion "
                     "(stray traffic between the VMs?)")


def simulated_both(hosts) -> bool:
    """Both hosts hold a simulated flow for the connection's direction."""
    checks = [(hosts[0], f"{SIM_COOKIE},ip,nw_dst={IP_B}"),
              (hosts[1], f"{SIM_COOKIE},ip,nw_dst={IP_A}")]
    return all(parallel(lambda hm: flow_count(*hm), checks))


def midoflow_round(mc, client, res: dict, bad: Bad, rnd: int) -> None:
    hosts = mc.hosts
    t0 = time.monotonic()
    for i in range(SAMPLES):
        for variant in ("cold", "warm_underlay"):
            clear_flows_for(hosts, purge=(variant == "cold"), bad=bad)
            t = timed(client, IP_B, bad)
            if t is None:
                continue
            if not simulated_both(hosts):
                bad.not_simulated += 1
                continue
            res[f"midoflow_first_{variant}"].append(t)
            timed(client, IP_B, bad)  # datapath warm-up, not recorded
            t = timed(client, IP_B, bad)
            if t is not None:
                res["midoflow_established"].append(t)
        if (i + 1) % 10 == 0 or i + 1 == SAMPLES:
            cold = summary(res["midoflow_first_cold"], 1e3)
            est = summary(res["midoflow_established"], 1e3)
            log(f"  round {rnd} midoflow: {i + 1}/{SAMPLES} "
                f"(first-packet median {cold.get('median', 0):.2f} ms, "
                f"established {est.get('median', 0):.2f} ms, {time.monotonic() - t0:.0f} s)")


def setup_normal_again(mc) -> None:
    from benchmarks.bench_tcp_throughput import setup_normal, teardown_normal

    teardown_normal(mc)
    setup_normal(mc)


def normal_round(mc, a, b, client, res: dict, bad: Bad, rnd: int) -> None:
    from benchmarks.bench_tcp_throughput import setup_normal, teardown_normal

    setup_normal(mc)
    try:
        a.cmd(f"ip addr add {L2_A}/24 dev eth0")
        b.cmd(f"ip addr add {L2_B}/24 dev eth0")
        a.cmd(f"ip neigh replace {L2_B} lladdr {MAC_B} dev eth0 nud permanent")
        b.cmd(f"ip neigh replace {L2_A} lladdr {MAC_A} dev eth0 nud permanent")
        try:
            wait_ping(a, L2_B, "ovs_normal")
        except BenchError as e:
            # Seen once under heavy load: say what OVS had, then try once more.
            log(f"  {e}; OVS state follows, then one more try")
            for h in mc.hosts:
                log(f"    {h.name} flows: {h.dump_flows()}")
                log(f"    {h.name} fdb: {h.ovs_appctl('fdb/show', 'br-int', check=False)!r}")
                log(f"    {h.name} ports: {h.ovs_vsctl('list-ports', 'br-int').split()}")
            log(f"    {a.vm_name} neigh: {a.cmd('ip neigh show dev eth0')!r}")
            setup_normal_again(mc)
            wait_ping(a, L2_B, "ovs_normal (second try)", timeout=30)
        wait_ping(b, L2_A, "ovs_normal")
        for _ in range(3):
            if timed(client, L2_B, bad) is None:
                raise BenchError(f"ovs_normal: {a.vm_name} cannot connect to "
                                 f"{L2_B}:{PORT}")
        t0 = time.monotonic()
        for _ in range(SAMPLES):
            parallel(purge_datapath, mc.hosts)
            t = timed(client, L2_B, bad)
            if t is None:
                continue
            res["normal_first_cold"].append(t)
            timed(client, L2_B, bad)
            t = timed(client, L2_B, bad)
            if t is not None:
                res["normal_established"].append(t)
        s = summary(res["normal_first_cold"], 1e3)
        e = summary(res["normal_established"], 1e3)
        log(f"  round {rnd} ovs_normal: {SAMPLES} connections (first-packet median "
            f"{s.get('median', 0):.2f} ms, established {e.get('median', 0):.2f} ms, "
            f"{time.monotonic() - t0:.0f} s)")
    finally:
        a.cmd(f"ip neigh del {L2_B} dev eth0; ip addr del {L2_A}/24 dev eth0")
        b.cmd(f"ip neigh del {L2_A} dev eth0; ip addr del {L2_B}/24 dev eth0")
        teardown_normal(mc)


def warm_midoflow(mc, a, b, client, bad: Bad) -> None:
    """Router ARP entries and MAC tables learned; connections work."""
    wait_ping(a, IP_B, "midoflow")
    wait_ping(b, IP_A, "midoflow")
    for _ in range(3):
        if timed(client, IP_B, bad) is None:
            raise BenchError(f"midoflow: {a.vm_name} cannot connect to {IP_B}:{PORT} "
                             f"through the router (ping works)")


def run() -> None:
    from benchmarks.bench_tcp_throughput import start_agents
    from topologies.midocloud import MidoCloud

    mc = MidoCloud(n_hosts=2, tunnel="vxlan", progress=log)
    res: dict[str, list[float]] = {k: [] for k in (
        "midoflow_first_cold", "midoflow_first_warm_underlay", "midoflow_established",
        "normal_first_cold", "normal_established")}
    bad = Bad()
    try:
        t_start = time.monotonic()
        mc.start()
        h1, h2 = mc.hosts
        ten = Tenant(mc, "lat")
        a = routed_vm(mc, ten, h1, ten.b1, "lata", f"{IP_A}/24", MAC_A)
        b = routed_vm(mc, ten, h2, ten.b2, "latb", f"{IP_B}/24", MAC_B)
        start_server(mc.cloud, b, PORT)
        client = ConnectClient(mc.cloud, a)
        log(f"router up: {a.vm_name} ({IP_A}) on {h1.name} -> {b.vm_name} ({IP_B}) on "
            f"{h2.name}; {ROUNDS} round(s), {SAMPLES} first-packet connections per variant")
        for rnd in range(1, ROUNDS + 1):
            if rnd > 1:
                log(f"round {rnd}/{ROUNDS}: restarting the agents")
                start_agents(mc, [a, b])
            log(f"round {rnd}/{ROUNDS}: midoflow (warming up: router ARP, MAC tables)")
            warm_midoflow(mc, a, b, client, bad)
            midoflow_round(mc, client, res, bad, rnd)
            log(f"round {rnd}/{ROUNDS}: OVS NORMAL on one L2 segment (agents stopped)")
            stop_agents_cleanly(mc)
            normal_round(mc, a, b, client, res, bad, rnd)
        total = sum(len(v) for v in res.values())
        bad.check(total + bad.failed + bad.not_simulated)
        for k, v in res.items():
            if not v:
                raise BenchError(f"no successful connection measured for {k}")
        client.close()
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        mc.stop()

    s = {k: summary(v, 1e3) for k, v in res.items()}
    first, est, normal = (s["midoflow_first_cold"], s["midoflow_established"],
                          s["normal_first_cold"])
    common = {
        "samples_per_variant": {k: v["n"] for k, v in s.items()},
        "rounds": ROUNDS,
        "midoflow_first_packet_ms": first,
        "midoflow_first_packet_warm_underlay_ms": s["midoflow_first_warm_underlay"],
        "midoflow_established_ms": est,
        "ovs_normal_first_packet_ms": normal,
        "ovs_normal_established_ms": s["normal_established"],
        "connections_failed": bad.failed,
        "connections_not_simulated_discarded": bad.not_simulated,
        "flow_deletions_retried": bad.retried_delete,
    }
    report(NAME, first["median"], "ms", "l3_established_latency", est["median"],
           higher_is_better=False, extra={
               "method": "TCP connect() time (SYN -> SYN/ACK) of a new connection from a VM "
                         "on 192.168.1.0/24 (host 1) to a VM on 192.168.2.0/24 (host 2) "
                         "through the virtual router; before each, the simulated flows of "
                         "both directions deleted on both hosts and both datapath caches "
                         "purged, so the SYN and the SYN/ACK are each simulated once (ARP "
                         "and MAC tables stay learned); baseline: the same connect with "
                         "flows installed, interleaved",
               "first_packet_p99_ms": first["p99"],
               "established_p99_ms": est["p99"],
               "warm_underlay_median_ms": s["midoflow_first_warm_underlay"]["median"],
               "warm_underlay_p99_ms": s["midoflow_first_warm_underlay"]["p99"],
               "ovs_normal_first_packet_median_ms": normal["median"],
               "ovs_normal_first_packet_p99_ms": normal["p99"],
               **common,
           })
    report(NAME_VS_NORMAL, first["median"], "ms", "ovs_normal_first_packet", normal["median"],
           higher_is_better=False, extra={
               "method": "the same cold first-connection latency: midoflow through the "
                         "virtual router vs OVS NORMAL (agents stopped, MAC learning, "
                         "point-to-point VXLAN) on one L2 segment between the same two VMs "
                         "and hosts; both with every datapath cache purged before each "
                         "connection, learned MACs kept",
               "first_packet_p99_ms": first["p99"],
               "ovs_normal_first_packet_p99_ms": normal["p99"],
               **common,
           })


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
