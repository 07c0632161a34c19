"""Goal 3 of issue 13: the extra latency of a new routed TCP connection's
first packet over OVS NORMAL, median and p99, measured in the same run.

Two cloud hosts, a VM on each side of a tenant router (bench_l3_latency's
lab, its OVS NORMAL rounds and its connect client). The agents run with
``proactive_flows`` on (midoflow/agent/proactive.py): the stateless routed
flows of each bound port are installed before the first packet. Each timed
``connect()`` (SYN -> SYN/ACK) is a new connection with every datapath cache
on the path purged (megaflows, as after an idle period: OVS NORMAL gets the
same purge), in two variants, alternating:

* ``proactive`` (headline): the flows installed from earlier packet-ins
  (reactive cookies) are deleted on both hosts, the proactive ones stay,
  as they stay in a running cloud; the sample counts only if no packet of it
  reached an agent (no reactive flow appeared);
* ``reactive``: every simulated flow is deleted on both hosts, so the SYN is
  simulated at host 1 and the SYN/ACK at host 2 (bench_l3_latency's cold
  case); the sample counts only if both hosts installed a reactive flow
  for it (the proactive pass, every 0.5 s, may have been quicker).

Reported: the proactive median against OVS NORMAL's, and the extra latency
(midoflow - NORMAL) of both variants at the median and at p99, beside the
goal (<= 1 ms, <= 3 ms).

Run: ``.venv/bin/python -m benchmarks.bench_first_packet`` (root). Knobs
(env): ``BENCH_QUICK=1`` (one round of 15 connections per variant: about a
minute), FIRST_PACKET_ROUNDS, FIRST_PACKET_SAMPLES.
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks import bench_l3_latency as lat
from benchmarks.cloudbench import (
    BenchError,
    ConnectClient,
    Tenant,
    flow_count,
    logger,
    parallel,
    purge_datapath,
    routed_vm,
    run_main,
    start_server,
    stop_agents_cleanly,
    summary,
)
from benchmarks.common import report

NAME = "first_packet_vs_ovs_normal"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = int(os.environ.get("FIRST_PACKET_ROUNDS", "1" if QUICK else "2"))
SAMPLES = int(os.environ.get("FIRST_PACKET_SAMPLES", "15" if QUICK else "40"))
GOAL_MEDIAN_MS, GOAL_P99_MS = 1.0, 3.0

log = logger(NAME)
# Cookies of the agent's simulated flows: reactive (from a packet-in) and
# proactive (midoflow.agent.proactive.PROACTIVE_BIT).
REACTIVE = "cookie=0x4d00000000000000/0xff80000000000000"
PROACTIVE = "cookie=0x4d80000000000000/0xff80000000000000"
SIMULATED = "cookie=0x4d00000000000000/0xff00000000000000"


def _checks(hosts, cookie: str) -> list:
    return [(hosts[0], f"{cookie},ip,nw_dst={lat.IP_B}"),
            (hosts[1], f"{cookie},ip,nw_dst={lat.IP_A}")]


def held(hosts, cookie: str) -> list[int]:
    """Flows of the connection's two directions with this cookie, per host."""
    return parallel(lambda hm: flow_count(*hm), _checks(hosts, cookie))


def clear(hosts, cookie: str) -> None:
    """Delete these flows of both directions and purge both datapath caches."""
    parallel(lambda hm: hm[0].ovs_ofctl("del-flows", f"table=1,{hm[1]}"),
             _checks(hosts, cookie))
    parallel(purge_datapath, hosts)


def wait_for_flows(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not installed within {timeout:.0f} s (agents' logs?)")
        time.sleep(0.05)


def midoflow_round(mc, client, res: dict, bad: lat.Bad, rnd: int) -> None:
    hosts = mc.hosts
    for _ in range(SAMPLES):
        # proactive: only the reactive flows go; the proactive ones must be there
        wait_for_flows(lambda: all(held(hosts, PROACTIVE)), 10,
                       "the proactive flows of both directions")
        clear(hosts, REACTIVE)
        t = lat.timed(client, lat.IP_B, bad)
        if t is not None:
            if any(held(hosts, REACTIVE)):
                bad.not_simulated += 1  # a packet of it reached an agent
            else:
                res["midoflow_first_proactive"].append(t)
        # reactive: every simulated flow goes
        clear(hosts, SIMULATED)
        t = lat.timed(client, lat.IP_B, bad)
        if t is not None:
            if all(held(hosts, REACTIVE)):
                res["midoflow_first_reactive"].append(t)
            else:
                bad.not_simulated += 1
        lat.timed(client, lat.IP_B, bad)  # datapath warm-up, not recorded
        t = lat.timed(client, lat.IP_B, bad)
        if t is not None:
            res["midoflow_established"].append(t)
    pro = summary(res["midoflow_first_proactive"], 1e3)
    rea = summary(res["midoflow_first_reactive"], 1e3)
    log(f"  round {rnd} midoflow: first-packet median {pro.get('median', 0):.2f} ms "
        f"proactive, {rea.get('median', 0):.2f} ms reactive")


def run() -> None:
    from benchmarks.bench_tcp_throughput import start_agents
    from topologies.midocloud import MidoCloud

    lat.SAMPLES = SAMPLES  # its rounds read the module's count
    mc = MidoCloud(n_hosts=2, tunnel="vxlan", progress=log)  # proactive_flows: its default
    res: dict[str, list[float]] = {k: [] for k in (
        "midoflow_first_proactive", "midoflow_first_reactive", "midoflow_established",
        "normal_first_cold", "normal_established")}
    bad = lat.Bad()
    try:
        t_start = time.monotonic()
        mc.start()
        h1, h2 = mc.hosts
        ten = Tenant(mc, "fp")
        a = routed_vm(mc, ten, h1, ten.b1, "fpa", f"{lat.IP_A}/24", lat.MAC_A)
        b = routed_vm(mc, ten, h2, ten.b2, "fpb", f"{lat.IP_B}/24", lat.MAC_B)
        start_server(mc.cloud, b, lat.PORT)
        client = ConnectClient(mc.cloud, a)
        log(f"router up: {a.vm_name} on {h1.name} -> {b.vm_name} on {h2.name}; {ROUNDS} "
            f"round(s), {SAMPLES} first-packet connections per variant")
        for rnd in range(1, ROUNDS + 1):
            if rnd > 1:
                start_agents(mc, [a, b])
            lat.warm_midoflow(mc, a, b, client, bad)
            midoflow_round(mc, client, res, bad, rnd)
            stop_agents_cleanly(mc)
            lat.normal_round(mc, a, b, client, res, bad, rnd)
        bad.check(sum(len(v) for v in res.values()) + bad.failed + bad.not_simulated)
        for k, v in res.items():
            if not v:
                raise BenchError(f"no successful connection measured for {k}")
        client.close()
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        mc.stop()

    s = {k: summary(v, 1e3) for k, v in res.items()}
    pro, rea, normal = (s["midoflow_first_proactive"], s["midoflow_first_reactive"],
                        s["normal_first_cold"])
    extra = {f"{name}_extra_{q}_ms": round(v[q] - normal[q], 3)
             for name, v in (("proactive", pro), ("reactive", rea)) for q in ("median", "p99")}
    met = extra["proactive_extra_median_ms"] <= GOAL_MEDIAN_MS \
        and extra["proactive_extra_p99_ms"] <= GOAL_P99_MS
    figures = ", ".join(f"{k} {v:.2f}" for k, v in extra.items())
    log(f"extra over OVS NORMAL (goal median <= {GOAL_MEDIAN_MS} ms, p99 <= {GOAL_P99_MS} "
        f"ms): {figures}")
    report(NAME, pro["median"], "ms", "ovs_normal_first_packet", normal["median"],
           higher_is_better=False, extra={
               "method": "TCP connect() (SYN -> SYN/ACK) of a new connection routed across "
                         "two hosts (bench_l3_latency's lab), every datapath cache purged "
                         "before each; agents with proactive_flows on; 'proactive': the "
                         "reactive flows deleted before each (no packet may reach an "
                         "agent), 'reactive': every simulated flow deleted (both packets "
                         "simulated); baseline: OVS NORMAL on one L2 segment between the "
                         "same VMs, caches purged the same way; rounds alternate",
               **extra,
               "goal_extra_median_ms": GOAL_MEDIAN_MS,
               "goal_extra_p99_ms": GOAL_P99_MS,
               "goal_met_proactive": met,
               "first_packet_proactive_ms": pro,
               "first_packet_reactive_ms": rea,
               "established_ms": s["midoflow_established"],
               "ovs_normal_first_packet_ms": normal,
               "ovs_normal_established_ms": s["normal_established"],
               "rounds": ROUNDS, "quick": QUICK,
               "connections_failed": bad.failed,
               "connections_discarded_wrong_path": bad.not_simulated,
           })


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
