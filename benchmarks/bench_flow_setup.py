"""New-flow setup rate (flows/s) through a real midoflow agent and a real OVS,
against the minimal os-ken app (benchmarks/baseline_app.py) on the same host in
the same run.

One cloud host (its own userspace OVS) and one virtual bridge with two VMs on
it. In ``src`` the blaster sends valid IPv4/UDP frames to many distinct unknown
destination MACs at a fixed pace, each frame a new flow (midoflow floods
unknown unicast, here to ``sink``, and installs one flow per destination). We
poll OVS for the number of flows matching those destinations in table 1:
rate = flows installed / seconds until the count stopped growing. The same
load then runs with the agent stopped and the baseline app controlling the same
OVS (flows wiped, output to the same sink port). Rounds alternate (midoflow,
baseline, midoflow, ...) and each side reports its best round: other work on
this 2-core machine only ever slows a round down.

Run: ``.venv/bin/python -m benchmarks.bench_flow_setup`` (root). Knobs (env): BENCH_QUICK=1,
FLOW_SETUP_ROUNDS, FLOW_SETUP_SECONDS, FLOW_SETUP_BLAST_RATE,
FLOW_SETUP_DESTINATIONS.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time

from benchmarks.common import report

# This measures the agent's own ceiling: the per-port bounds against hostile
# VMs (packet-in meter, flow and MAC limits; benchmarks/bench_hostile.py) are lifted.
# Each round starts from an empty pipeline after the other controller had
# the switch: the agent wipes on connecting (a fast restart would keep the
# flows the baseline app left in table 1, outside the agent's cookies).
UNBOUNDED = {"packet_in_rate": 10_000_000, "packet_in_burst": 1_000_000,
             "max_flows_per_port": 10_000_000, "max_macs_per_port": 1_000_000,
             "fast_restart": False}

NAME = "flow_setup_rate"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_QUICK=1: two rounds of 3 s per controller (well under 2 minutes in all).
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = int(os.environ.get("FLOW_SETUP_ROUNDS", "2" if QUICK else "3"))
BLAST_SECONDS = float(os.environ.get("FLOW_SETUP_SECONDS", "3" if QUICK else "4"))
# Frames/s offered by the blaster: above what either controller installs here,
# yet cheap. Unpaced, the blaster takes a whole core and OVS another one on
# upcalls of frames whose packet-ins it then drops (queue full): the machine
# would measure the blaster, not the controller.
BLAST_RATE = float(os.environ.get("FLOW_SETUP_BLAST_RATE", "8000"))
# Distinct destinations, cycled: more than a round can install, so the count
# never saturates and a frame whose packet-in was dropped comes back later.
DESTINATIONS = int(os.environ.get("FLOW_SETUP_DESTINATIONS", "40000"))
POLL_INTERVAL = 0.25
SRC_MAC, SINK_MAC = "02:00:00:66:00:01", "02:00:00:66:00:02"
# The blaster's destinations are 06:aa:<32-bit counter>.
BLAST_MATCH = "table=1,dl_dst=06:aa:00:00:00:00/ff:ff:00:00:00:00"


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{NAME}] {msg}", flush=True)


def blast_flows(host) -> int:
    out = host.ovs_ofctl("dump-aggregate", BLAST_MATCH)
    m = re.search(r"flow_count=(\d+)", out)
    if not m:
        raise BenchError(f"cannot read the flow count of {host.name}: {out.strip()[:200]}")
    return int(m.group(1))


def measure(cloud, host, vm, label: str, logfile: str) -> dict:
    """Blast from ``vm`` for BLAST_SECONDS; flows/s installed in ``host``'s table 1."""
    if blast_flows(host):
        raise BenchError(f"{label}: table 1 is not empty before the blast")
    cmd = [sys.executable, "-m", "benchmarks.blaster", "eth0", vm.vm_mac,
           str(DESTINATIONS), str(BLAST_SECONDS), str(BLAST_RATE)]
    proc = cloud.popen(vm, cmd, cwd=REPO, text=True)
    t0 = time.monotonic()
    samples = [(0.0, 0)]
    while proc.poll() is None:
        time.sleep(POLL_INTERVAL)
        samples.append((time.monotonic() - t0, blast_flows(host)))
        if samples[-1][0] > BLAST_SECONDS + 20:
            proc.kill()
            raise BenchError(f"{label}: the blaster did not finish")
    out, err = proc.communicate(timeout=10)
    if proc.returncode != 0:
        raise BenchError(f"{label}: the blaster failed ({proc.returncode}): "
                         f"{(err or out).strip()[-300:]}")
    sent = int(out.strip().splitlines()[-1])
    # Packet-ins already queued when the blaster stopped still become flows.
    time.sleep(0.5)
    samples.append((time.monotonic() - t0, blast_flows(host)))
    final = samples[-1][1]
    if final == 0:
        raise BenchError(f"{label}: no flow was installed ({sent} frames sent); see {logfile}")
    # Until the count first reached its final value: no credit for the settle time.
    elapsed = next(t for t, n in samples if n >= final)
    rate = final / elapsed
    log(f"  {label}: {final} flows in {elapsed:.2f} s = {rate:.0f} flows/s "
        f"({sent} frames sent)")
    return {"flows": final, "seconds": round(elapsed, 3), "frames_sent": sent,
            "flows_per_s": round(rate, 1)}


def wait_pipeline(host, ready, what: str, logfile: str, timeout: float = 30) -> None:
    """Until ``ready(table 0 dump)`` and table 1 holds none of the blaster's flows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table0 = host.ovs_ofctl("dump-flows", "table=0", check=False)
        if ready(table0) and blast_flows(host) == 0:
            return
        time.sleep(0.2)
    raise BenchError(f"{what} did not take over {host.name}'s OVS in {timeout:.0f} s "
                     f"(log: {logfile})")


def run() -> None:
    from topologies.midocloud import MidoCloud

    manager = os.path.join(os.path.dirname(sys.executable), "osken-manager")
    if not os.path.exists(manager):
        raise BenchError(f"{manager} not found: run 'make setup'")
    mc = MidoCloud(n_hosts=1, tunnel="vxlan", progress=log, agent_options=UNBOUNDED)
    rounds: dict[str, list[dict]] = {"midoflow": [], "baseline": []}
    try:
        t_start = time.monotonic()
        mc.start()
        h = mc.hosts[0]
        agent_log = os.path.join(h.rundir, "agent.log")
        base_log = os.path.join(h.rundir, "baseline.log")
        bridge = mc.bridge("bench-flows", "bench")
        src = mc.vm(h, bridge, "fsrc", "192.168.66.1/24", SRC_MAC)
        sink = mc.vm(h, bridge, "fsink", "192.168.66.2/24", SINK_MAC)
        log(f"VMs bound (src ofport {src.ofport}, sink ofport {sink.ofport}); "
            f"{ROUNDS} round(s) per controller, {BLAST_SECONDS:.0f} s each, "
            f"{BLAST_RATE:.0f} frames/s to {DESTINATIONS} destinations")
        classify = re.compile(rf"\bin_port={src.ofport}\b.*goto_table:1")
        for i in range(1, ROUNDS + 1):
            if i > 1:
                mc.cloud.kill_agent(h, sig=signal.SIGTERM)
                mc.start_agent(h)
                wait_pipeline(h, lambda t: classify.search(t) is not None,
                              "the midoflow agent", agent_log)
            log(f"round {i}/{ROUNDS}: midoflow agent")
            rounds["midoflow"].append(measure(mc.cloud, h, src, "midoflow", agent_log))

            mc.cloud.kill_agent(h, sig=signal.SIGTERM)
            mc.cloud.start_agent(
                h, [manager, "--ofp-listen-host", h.of_sock, "--ofp-tcp-listen-port", "6653",
                    "midoflow.apps.ofp_unix", "benchmarks.baseline_app"],
                env={"PYTHONPATH": REPO, "BASELINE_OUT_PORT": str(sink.ofport)}, log=base_log)
            # The baseline sends everything from table 0 to table 1, by no port.
            wait_pipeline(h, lambda t: "goto_table:1" in t and "in_port" not in t,
                          "the baseline app", base_log)
            log(f"round {i}/{ROUNDS}: minimal os-ken app")
            rounds["baseline"].append(measure(mc.cloud, h, src, "baseline", base_log))
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        mc.stop()
    mido = max(rounds["midoflow"], key=lambda r: r["flows_per_s"])
    base = max(rounds["baseline"], key=lambda r: r["flows_per_s"])
    report(NAME, mido["flows_per_s"], "flows/s", "minimal_osken_app", base["flows_per_s"],
           extra={
               "method": "one host, one OVS (userspace datapath); a paced blaster in a VM "
                         "sends frames to distinct unknown MACs; flows for them counted in "
                         "table 1; best of alternating rounds per controller",
               "frames_per_s_offered": BLAST_RATE,
               "destinations": DESTINATIONS,
               "blast_seconds": BLAST_SECONDS,
               "flows": {"midoflow": mido["flows"], "baseline": base["flows"]},
               "frames_sent": {"midoflow": mido["frames_sent"], "baseline": base["frames_sent"]},
               "seconds": {"midoflow": mido["seconds"], "baseline": base["seconds"]},
               "rounds": rounds,
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
