"""New-flow setup rate (flows/s) through the virtual ROUTER path with a real
midoflow agent and a real OVS, against a minimal os-ken app doing the same
per-packet job on the same OVS, same load, same run.

One cloud host (its own userspace OVS), one tenant router with
192.168.1.0/24 and 192.168.2.0/24: VM ``src`` (192.168.1.10) and VM ``sink``
(192.168.2.20), and a route 10.200.0.0/16 via gateway 192.168.2.20 (the
sink). ``src`` sends IPv4/UDP frames to the router's MAC for many distinct
destination IPs in 10.200.0.0/16, paced, cycled. Every destination is a new
routed flow: simulated bridge -> router (longest-prefix match, next hop
192.168.2.20 whose ARP entry is already learned: no packet waits for ARP) ->
bridge, installed as one flow matching in_port, MACs and the destination IP,
rewriting both MACs, decrementing the TTL and output to the sink's port.

Baseline: ``L3BaselineApp`` (below, a subclass of benchmarks/baseline_app.py's
minimal app, loaded by osken-manager from this module) answers every
packet-in with one flow-mod matching the same fields, the same actions (MAC
rewrite, dec_ttl, output to the sink) computed from nothing, and one
packet-out: the ceiling of a naive reactive controller for this load. The
unmodified minimal app matches only in_port and MACs, which are the same for
every frame here: it would install one flow, not one per destination.
Both controllers run side by side for the whole run; between rounds br-int's
controller target is switched from one to the other (each wipes the tables
when OVS connects to it), so no process restarts between rounds and the agent
keeps its ZooKeeper session and what it learned (the sink's ARP entry).

We poll OVS for the number of table-1 flows matching 10.200.0.0/16: rate =
flows installed / seconds until the count stopped growing (as
bench_flow_setup). Rounds alternate midoflow / baseline; each side reports
its best round (other work on this 2-core machine only ever slows a round
down). Run: ``.venv/bin/python -m benchmarks.bench_l3_flow_setup`` (root).
Knobs (env): BENCH_QUICK=1, L3_FLOW_ROUNDS, L3_FLOW_SECONDS, L3_FLOW_BLAST_RATE,
L3_FLOW_DESTINATIONS.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from benchmarks.cloudbench import (
    REPO,
    BenchError,
    Tenant,
    logger,
    routed_vm,
    run_main,
    wait_ping,
)
from benchmarks.common import report

# This measures the agent's own ceiling: the per-port bounds against hostile
# VMs (packet-in meter, flow and MAC limits; benchmarks/bench_hostile.py) are lifted.
# Each round starts from an empty pipeline after the other controller had
# the switch: the agent wipes on connecting (a fast restart would keep the
# flows the baseline app left in table 1, outside the agent's cookies).
UNBOUNDED = {"packet_in_rate": 10_000_000, "packet_in_burst": 1_000_000,
             "max_flows_per_port": 10_000_000, "max_macs_per_port": 1_000_000,
             "fast_restart": False}

NAME = "l3_flow_setup_rate"
# BENCH_QUICK=1: two rounds of 3 s per controller (well under 2 minutes in all).
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = int(os.environ.get("L3_FLOW_ROUNDS", "2" if QUICK else "3"))
BLAST_SECONDS = float(os.environ.get("L3_FLOW_SECONDS", "3" if QUICK else "4"))
BLAST_RATE = float(os.environ.get("L3_FLOW_BLAST_RATE", "8000"))
# Distinct destination IPs, cycled (at most 65536: 10.200.0.0/16).
DESTINATIONS = min(int(os.environ.get("L3_FLOW_DESTINATIONS", "40000")), 65536)
POLL_INTERVAL = 0.25
SRC_IP, SINK_IP = "192.168.1.10", "192.168.2.20"
SRC_MAC, SINK_MAC = "02:00:00:01:00:0a", "02:00:00:02:00:14"
BLAST_MATCH = "table=1,ip,nw_dst=10.200.0.0/16"

log = logger(NAME)


# ---- the baseline controller (only defined inside osken-manager) --------------

def _baseline_app():
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
    from os_ken.lib.packet import ethernet, ipv4, packet

    from benchmarks.baseline_app import BaselineApp

    class L3BaselineApp(BaselineApp):
        """Per packet-in: one exact flow (in_port, MACs, IPv4 destination) that
        rewrites the MACs (env L3_BASELINE_ETH_SRC / L3_BASELINE_ETH_DST),
        decrements the TTL and outputs to BASELINE_OUT_PORT; one packet-out."""

        @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
        def _packet_in(self, ev):
            msg = ev.msg
            dp = msg.datapath
            ofp, p = dp.ofproto, dp.ofproto_parser
            pkt = packet.Packet(msg.data)
            eth = pkt.get_protocol(ethernet.ethernet)
            ip = pkt.get_protocol(ipv4.ipv4)
            if eth is None or ip is None:
                return
            in_port = msg.match["in_port"]
            actions = [p.OFPActionSetField(eth_src=os.environ["L3_BASELINE_ETH_SRC"]),
                       p.OFPActionSetField(eth_dst=os.environ["L3_BASELINE_ETH_DST"]),
                       p.OFPActionDecNwTtl(),
                       p.OFPActionOutput(int(os.environ["BASELINE_OUT_PORT"]))]
            dp.send_msg(p.OFPFlowMod(
                datapath=dp, table_id=1, priority=100, idle_timeout=60,
                match=p.OFPMatch(in_port=in_port, eth_src=eth.src, eth_dst=eth.dst,
                                 eth_type=0x0800, ipv4_dst=ip.dst),
                instructions=[p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]))
            dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                       in_port=in_port, actions=actions, data=msg.data))

    return L3BaselineApp


if "os_ken.base.app_manager" in sys.modules:  # imported by osken-manager as its app
    L3BaselineApp = _baseline_app()


# ---- the benchmark --------------------------------------------------------------

def blast_flows(host) -> int:
    out = host.ovs_ofctl("dump-aggregate", BLAST_MATCH)
    m = re.search(r"flow_count=(\d+)", out)
    if not m:
        raise BenchError(f"cannot read the flow count of {host.name}: {out.strip()[:200]}")
    return int(m.group(1))


def check_flow_shape(host, sink, label: str) -> None:
    """A blast flow rewrites the MACs, decrements the TTL and outputs to the sink."""
    flows = [f for f in host.ovs_ofctl("dump-flows", BLAST_MATCH).splitlines() if "actions=" in f]
    if not flows:
        raise BenchError(f"{label}: no flow for 10.200.0.0/16 in table 1")
    f = flows[0]
    if f"{SINK_MAC}->eth_dst" not in f or "dec_ttl" not in f or \
            not re.search(rf"output:{sink.ofport}\b", f):
        raise BenchError(f"{label}: unexpected routed flow: {f.strip()[:300]}")


def measure(cloud, host, src, router_mac: str, label: str, logfile: str) -> dict:
    """Blast from ``src`` for BLAST_SECONDS; flows/s installed in table 1."""
    if blast_flows(host):
        raise BenchError(f"{label}: table 1 already holds flows for 10.200.0.0/16")
    cmd = [sys.executable, "-m", "benchmarks.cloudbench", "blast-ip", "eth0", SRC_MAC,
           router_mac, SRC_IP, str(DESTINATIONS), str(BLAST_SECONDS), str(BLAST_RATE)]
    proc = cloud.popen(src, cmd, cwd=REPO, text=True)
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
    time.sleep(0.5)  # packet-ins already queued still become flows
    samples.append((time.monotonic() - t0, blast_flows(host)))
    final = samples[-1][1]
    if final == 0:
        raise BenchError(f"{label}: no routed flow was installed ({sent} frames sent); "
                         f"see {logfile}")
    elapsed = next(t for t, n in samples if n >= final)
    rate = final / elapsed
    log(f"  {label}: {final} flows in {elapsed:.2f} s = {rate:.0f} flows/s "
        f"({sent} frames sent)")
    return {"flows": final, "seconds": round(elapsed, 3), "frames_sent": sent,
            "flows_per_s": round(rate, 1)}


def wait_pipeline(host, ready, what: str, logfile: str, timeout: float = 30) -> None:
    """Until ``ready(table 0 dump)`` and table 1 holds none of the blast's flows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table0 = host.ovs_ofctl("dump-flows", "table=0", check=False)
        if ready(table0) and blast_flows(host) == 0:
            return
        time.sleep(0.2)
    raise BenchError(f"{what} did not take over {host.name}'s OVS in {timeout:.0f} s "
                     f"(log: {logfile})")


def controller_uuid(host) -> str:
    out = host.ovs_vsctl("get", "Bridge", "br-int", "controller").strip().strip("[]")
    if not re.fullmatch(r"[0-9a-f-]{36}", out):
        raise BenchError(f"{host.name}: br-int has not exactly one controller: {out!r}")
    return out


def point_controller(host, uuid: str, sock: str) -> None:
    """Make br-int's controller the one listening on ``sock`` (OVS drops the
    current connection and connects there at once)."""
    host.ovs_vsctl("set", "Controller", uuid, f'target="unix:{sock}"')


def start_baseline(h, manager: str, sock: str, log_path: str, env: dict) -> subprocess.Popen:
    """The baseline osken-manager, listening on ``sock`` (root namespace, like the agent)."""
    with open(log_path, "ab") as f:
        proc = subprocess.Popen(
            [manager, "--ofp-listen-host", sock, "--ofp-tcp-listen-port", "6653",
             "midoflow.apps.ofp_unix", "benchmarks.bench_l3_flow_setup"],
            stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": REPO, **env})
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if proc.poll() is not None:
            raise BenchError(f"the baseline app exited ({proc.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            raise BenchError(f"the baseline app does not listen on {sock}; see {log_path}")
        time.sleep(0.1)
    return proc


def stop_baseline(proc: subprocess.Popen | None, sock: str) -> None:
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if os.path.exists(sock):
        os.unlink(sock)


def run() -> None:
    from topologies.midocloud import MidoCloud

    manager = os.path.join(os.path.dirname(sys.executable), "osken-manager")
    if not os.path.exists(manager):
        raise BenchError(f"{manager} not found: run 'make setup'")
    mc = MidoCloud(n_hosts=1, tunnel="vxlan", progress=log, agent_options=UNBOUNDED)
    rounds: dict[str, list[dict]] = {"midoflow": [], "baseline": []}
    base_proc = None
    base_sock = ""
    try:
        t_start = time.monotonic()
        mc.start()
        h = mc.hosts[0]
        agent_log = os.path.join(h.rundir, "agent.log")
        base_log = os.path.join(h.rundir, "baseline.log")
        base_sock = os.path.join(h.rundir, "base.sock")
        ten = Tenant(mc, "l3fs")
        src = routed_vm(mc, ten, h, ten.b1, "l3src", f"{SRC_IP}/24", SRC_MAC)
        sink = routed_vm(mc, ten, h, ten.b2, "l3sink", f"{SINK_IP}/24", SINK_MAC)
        sink.cmd("sysctl -qw net.ipv4.ip_forward=0")
        mc.route(ten.router, "10.200.0.0/16", ten.rp2, SINK_IP)
        base_proc = start_baseline(h, manager, base_sock, base_log, {
            "BASELINE_OUT_PORT": str(sink.ofport), "L3_BASELINE_ETH_SRC": ten.mac2,
            "L3_BASELINE_ETH_DST": SINK_MAC})
        ctl = controller_uuid(h)
        log(f"router up, route 10.200.0.0/16 via {SINK_IP} (src ofport {src.ofport}, sink "
            f"ofport {sink.ofport}); {ROUNDS} round(s) per controller, {BLAST_SECONDS:.0f} s "
            f"each, {BLAST_RATE:.0f} frames/s to {DESTINATIONS} destination IPs")
        classify = re.compile(rf"\bin_port={src.ofport}\b.*goto_table:1")
        for i in range(1, ROUNDS + 1):
            # Both controllers keep running; OVS is pointed at one or the other (the
            # agent keeps its ZooKeeper session, hence its learned ARP and MAC entries).
            if i > 1:
                point_controller(h, ctl, h.of_sock)
                wait_pipeline(h, lambda t: classify.search(t) is not None,
                              "the midoflow agent", agent_log)
            # The router resolves the sink (next hop), the bridges learn the VMs' MACs.
            wait_ping(src, SINK_IP, "midoflow")
            log(f"round {i}/{ROUNDS}: midoflow agent")
            rounds["midoflow"].append(measure(mc.cloud, h, src, ten.mac1, "midoflow",
                                              agent_log))
            check_flow_shape(h, sink, "midoflow")

            point_controller(h, ctl, base_sock)
            wait_pipeline(h, lambda t: "goto_table:1" in t and "in_port" not in t,
                          "the baseline app", base_log)
            log(f"round {i}/{ROUNDS}: minimal os-ken app (exact IPv4 flows)")
            rounds["baseline"].append(measure(mc.cloud, h, src, ten.mac1, "baseline",
                                              base_log))
            check_flow_shape(h, sink, "baseline")
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        try:
            stop_baseline(base_proc, base_sock)
        finally:
            mc.stop()
    mido = max(rounds["midoflow"], key=lambda r: r["flows_per_s"])
    base = max(rounds["baseline"], key=lambda r: r["flows_per_s"])
    report(NAME, mido["flows_per_s"], "flows/s", "minimal_osken_app", base["flows_per_s"],
           extra={
               "method": "one host, one OVS (userspace datapath); a paced blaster in a VM "
                         "sends IPv4/UDP to the router's MAC for distinct destination IPs "
                         "in 10.200.0.0/16, routed via a gateway VM whose ARP entry is "
                         "known; routed flows (in_port, MACs, IPv4 dst; MAC rewrite, "
                         "dec_ttl, output) counted in table 1; baseline: a minimal os-ken "
                         "app installing the same flow per packet-in; best of alternating "
                         "rounds per controller",
               "frames_per_s_offered": BLAST_RATE,
               "destinations": DESTINATIONS,
               "blast_seconds": BLAST_SECONDS,
               "flows": {"midoflow": mido["flows"], "baseline": base["flows"]},
               "frames_sent": {"midoflow": mido["frames_sent"], "baseline": base["frames_sent"]},
               "seconds": {"midoflow": mido["seconds"], "baseline": base["seconds"]},
               "rounds": rounds,
           })


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
