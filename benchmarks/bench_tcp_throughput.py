"""TCP throughput (Gbit/s, iperf3) VM to VM across two cloud hosts over VXLAN
through midoflow's flows, against OVS NORMAL on the same topology in the same
run.

Two cloud hosts (each its own userspace OVS), one virtual bridge, one VM on
each host. Rounds alternate between:

* ``midoflow``: the agents simulate the first packets and install their flows
  (set ``tun_dst``/``tun_id``, output to the flow-based ``vxlan0``; the egress
  host delivers by tunnel key);
* ``ovs_normal``: the agents stopped, every flow deleted, one
  ``actions=NORMAL`` flow and a point-to-point VXLAN port to the other host
  (fixed ``remote_ip``): plain OVS MAC learning over VXLAN, as an operator
  would run it without any controller;
* ``static_l2_flows`` (extra figure): the harness's controller-less flows
  (``topologies.cloud.install_static_l2_flows``): the same tunnel actions as
  midoflow's over the same ``vxlan0``, written by hand.

Each side reports its best round: other work on this 2-core machine only ever
slows a round down. Run: ``.venv/bin/python -m benchmarks.bench_tcp_throughput``
(root). Knobs (env): TCP_ROUNDS, TCP_SECONDS.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time

from benchmarks.common import report

NAME = "tcp_throughput"
ROUNDS = int(os.environ.get("TCP_ROUNDS", "3"))
SECONDS = float(os.environ.get("TCP_SECONDS", "4"))
NORMAL_PORT = "vxnormal"  # the point-to-point VXLAN port of the NORMAL rounds
NORMAL_VNI = 0x77
IP_A, IP_B = "192.168.77.1", "192.168.77.2"
MAC_A, MAC_B = "02:00:00:77:00:01", "02:00:00:77:00:02"


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{NAME}] {msg}", flush=True)


def warm_up(a, b, what: str, timeout: float = 15) -> None:
    """Until a ping from ``a`` to ``b`` answers (ARP resolved, flows in place)."""
    from topologies.cloud import ping

    deadline = time.monotonic() + timeout
    while ping(a, IP_B, count=1, timeout=1.0)[1] != 1:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {a.vm_name} cannot ping {b.vm_name} ({IP_B}) "
                             f"after {timeout:.0f} s")
    sent, got = ping(a, IP_B, count=3)
    if got != sent:
        raise BenchError(f"{what}: ping {a.vm_name} -> {b.vm_name} lost {sent - got}/{sent}")


def iperf(a, b, what: str) -> float:
    from topologies.cloud import iperf_tcp

    gbps = iperf_tcp(a, b, seconds=SECONDS)
    if gbps <= 0:
        raise BenchError(f"{what}: iperf3 carried nothing")
    log(f"  {what}: {gbps:.3f} Gbit/s")
    return gbps


def used_flows(host, pattern: str) -> list[str]:
    """Flows of ``host``'s br-int matching ``pattern`` that carried packets."""
    rx = re.compile(pattern)
    return [f for f in host.dump_flows() if rx.search(f) and "n_packets=0," not in f]


def stop_agents(mc) -> None:
    for h in mc.hosts:
        mc.cloud.kill_agent(h, sig=signal.SIGTERM)


def start_agents(mc, vms) -> None:
    """Restart every agent; wait until each classifies its VM's port again."""
    for h in mc.hosts:
        mc.start_agent(h)
    deadline = time.monotonic() + 30
    for vm in vms:
        h = vm.cloud_host
        rx = re.compile(rf"\bin_port={vm.ofport}\b.*goto_table:1")
        while not rx.search(h.ovs_ofctl("dump-flows", "table=0", check=False)):
            if time.monotonic() > deadline:
                raise BenchError(f"the restarted agent of {h.name} did not classify "
                                 f"{vm.vm_name}'s port (log: {h.rundir}/agent.log)")
            time.sleep(0.2)


def clear(mc) -> None:
    from topologies.cloud import clear_flows

    clear_flows(mc.cloud)


def setup_normal(mc) -> None:
    """Plain OVS: NORMAL, and a VXLAN port to the other host (fixed remote_ip; the
    flow-based vxlan0 cannot be flooded to without a tun_dst)."""
    from topologies.cloud import sync_datapath

    h1, h2 = mc.hosts
    for h, other in ((h1, h2), (h2, h1)):
        h.ovs_ofctl("del-flows")
        h.ovs_vsctl("add-port", "br-int", NORMAL_PORT, "--", "set", "Interface", NORMAL_PORT,
                    "type=vxlan", f"options:remote_ip={other.underlay_ip}",
                    f"options:local_ip={h.underlay_ip}", f"options:key={NORMAL_VNI}")
        h.ofport(NORMAL_PORT)
        h.ovs_ofctl("add-flow", "table=0,priority=0,actions=NORMAL")
    sync_datapath(mc.cloud)


def normal_learned_remote(host, mac: str) -> bool:
    """NORMAL learned ``mac`` (the other host's VM) on the point-to-point VXLAN port."""
    ofport = host.ofport(NORMAL_PORT)
    fdb = host.ovs_appctl("fdb/show", "br-int", check=False)
    return any(ln.split()[:1] == [str(ofport)] and mac in ln for ln in fdb.splitlines())


def teardown_normal(mc) -> None:
    for h in mc.hosts:
        h.ovs_vsctl("--if-exists", "del-port", "br-int", NORMAL_PORT)
    clear(mc)


def run() -> None:
    from topologies.cloud import install_static_l2_flows
    from topologies.midocloud import MidoCloud

    mc = MidoCloud(n_hosts=2, tunnel="vxlan", progress=log)
    results: dict[str, list[float]] = {"midoflow": [], "ovs_normal": [], "static_l2_flows": []}
    try:
        t_start = time.monotonic()
        mc.start()
        h1, h2 = mc.hosts
        bridge = mc.bridge("bench-tcp", "bench")
        a = mc.vm(h1, bridge, "tcpa", f"{IP_A}/24", MAC_A)
        b = mc.vm(h2, bridge, "tcpb", f"{IP_B}/24", MAC_B)
        log(f"VMs bound: {a.vm_name} on {h1.name}, {b.vm_name} on {h2.name}; "
            f"{ROUNDS} round(s) of {SECONDS:.0f} s iperf3 per forwarding")
        for i in range(1, ROUNDS + 1):
            if i > 1:
                log(f"round {i}/{ROUNDS}: restarting the agents")
                clear(mc)
                start_agents(mc, [a, b])
            log(f"round {i}/{ROUNDS}: midoflow flows")
            warm_up(a, b, "midoflow")
            if not used_flows(h1, r"tun_dst.*output:" + str(h1.vxlan_ofport)):
                raise BenchError(f"midoflow: {h1.name} has no used flow to vxlan0: "
                                 f"{h1.dump_flows()[:6]}")
            results["midoflow"].append(iperf(a, b, "midoflow"))

            stop_agents(mc)
            log(f"round {i}/{ROUNDS}: OVS NORMAL (agents stopped)")
            setup_normal(mc)
            try:
                warm_up(a, b, "ovs_normal")
                results["ovs_normal"].append(iperf(a, b, "ovs_normal"))
                if not normal_learned_remote(h1, MAC_B):
                    raise BenchError(f"ovs_normal: {h1.name} did not learn {MAC_B} on "
                                     f"{NORMAL_PORT}: {h1.ovs_appctl('fdb/show', 'br-int')}")
            finally:
                teardown_normal(mc)

            log(f"round {i}/{ROUNDS}: static L2 flows (agents stopped)")
            install_static_l2_flows(mc.cloud, [a, b])
            warm_up(a, b, "static_l2_flows")
            results["static_l2_flows"].append(iperf(a, b, "static_l2_flows"))
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        mc.stop()
    best = {k: max(v) for k, v in results.items()}
    report(NAME, best["midoflow"], "Gbit/s", "ovs_normal", best["ovs_normal"],
           extra={
               "method": "iperf3 TCP, one stream, VM on host 1 -> VM on host 2 over VXLAN "
                         "(userspace OVS per host); best of alternating rounds",
               "seconds_per_run": SECONDS,
               "static_l2_flows_gbps": round(best["static_l2_flows"], 4),
               "ratio_vs_static_l2_flows": round(best["midoflow"] / best["static_l2_flows"], 4),
               "rounds": {k: [round(x, 4) for x in v] for k, v in results.items()},
           })


def main() -> int:
    if os.geteuid() != 0:
        print(f"{NAME}: error: needs root (network namespaces, OVS)", file=sys.stderr)
        return 2
    try:
        run()
    except KeyboardInterrupt:
        print(f"{NAME}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line, then a non-zero exit
        hint = "" if os.environ.get("MIDOFLOW_KEEP_RUNDIR") else \
            " (rerun with MIDOFLOW_KEEP_RUNDIR=1 to keep the cloud's logs)"
        print(f"{NAME}: error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
