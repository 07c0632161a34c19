"""Agent restart: packets a 10 ms ping loses and how long a TCP stream stalls
across a restart of one host's agent, with fast restart (the agent keeps the
flows OVS holds and judges them) against the old wipe-everything restart
(``fast_restart = false``), in the same run.

Two cloud hosts, a tenant router between two networks, VM ``a`` on h1 and
``b`` on h2. ``a`` is busy: besides the measured traffic it keeps
RESTART_FLOWS other routed flows alive (UDP to as many addresses of a /16
routed to ``b``, RESTART_BLAST_RATE frames/s), as a VM serving many clients
would. For each way of stopping h1's agent, ``sigterm`` (systemd's stop, then
start) and ``kill9`` (a crash, then start), and each mode: the agent is first
restarted into that mode (not measured) and left to settle, the flows are
installed, then ``a`` pings ``b`` every 10 ms and streams TCP to it (iperf3,
20 Mbit/s, 0.1 s intervals read at the receiver) while the agent is stopped
and started again. A control measurement, the same traffic without a
restart, shows what the machine loses anyway. A wipe sends every one of those flows back through the
agent, under ``a``'s packet-in meter, together with the ping's and the
stream's next packets.

Figures: pings lost, packets that found no flow in the measurement (table
1 misses: the packet-in storm), the longest stall of the stream (0.1 s intervals in a
row below half its median interval) and the bytes stalled (what those
intervals fell short of the median). The headline is pings lost with fast restart against
the wipe (ratio; the goal is zero loss). Run (root):
``.venv/bin/python -m benchmarks.bench_restart``; knobs (env):
RESTART_ROUNDS (default 1), RESTART_SECONDS (each measurement, default 8),
RESTART_FLOWS (default 2000), RESTART_BLAST_RATE (default 3000).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

from benchmarks.cloudbench import (
    REPO,
    BenchError,
    Tenant,
    flow_count,
    logger,
    routed_vm,
    run_main,
    wait_ping,
)
from benchmarks.common import report

NAME = "agent_restart"
ROUNDS = int(os.environ.get("RESTART_ROUNDS", "1"))
SECONDS = float(os.environ.get("RESTART_SECONDS", "8"))
FLOWS = int(os.environ.get("RESTART_FLOWS", "2000"))
BLAST_RATE = float(os.environ.get("RESTART_BLAST_RATE", "3000"))
RESTART_AT = 1.5  # seconds into a measurement
IP_A, IP_B = "192.168.1.10", "192.168.2.10"
MAC_A, MAC_B = "02:00:00:78:00:01", "02:00:00:78:00:02"
BLAST_MATCH = "table=1,ip,nw_dst=10.200.0.0/16"
PORT = 5278
STOPS = {"sigterm": signal.SIGTERM, "kill9": signal.SIGKILL}
MODES = {"fast": True, "wipe": False}
log = logger(NAME)


def restart(mc, h, sig: int, timeout: float = 30) -> float:
    """Stop h's agent with ``sig``, start it again, wait until the new one is
    connected to OVS (its own host state, not its predecessor's); seconds taken."""
    t0 = time.time()
    mc.kill_agent(h, sig=sig)
    mc.start_agent(h)
    deadline = time.monotonic() + timeout
    while True:
        st = mc.agent_alive(h) or {}
        if st.get("ovs_connected") and st.get("started_at", 0) > t0:
            return time.time() - t0
        if time.monotonic() > deadline:
            raise BenchError(f"the restarted agent of {h.name} did not connect to OVS in "
                             f"{timeout:.0f} s (log: {h.rundir}/agent.log)")
        time.sleep(0.02)


def wait_judged(h, since: int, timeout: float = 30) -> str:
    """The agent log's line saying the kept flows were judged (fast restart)."""
    path = os.path.join(h.rundir, "agent.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            f.seek(since)
            for line in f:
                if "kept flows judged" in line:
                    return line.strip()
        time.sleep(0.05)
    raise BenchError(f"{h.name}'s agent never judged the flows OVS kept (see {path})")


def table_misses(h) -> int:
    """Packets that found no simulated flow (the miss flow of table 1: on to
    the agent) since that flow was added. A fast restart's identical add
    keeps its counter; a wipe deletes it, and the counter with it."""
    for f in h.dump_flows():
        if "table=1," in f and "priority=0 " in f:
            return int(re.search(r"n_packets=(\d+)", f).group(1))
    raise BenchError(f"no miss flow in table 1 of {h.name}")


def stalls(intervals: list[int], seconds: float) -> tuple[float, int]:
    """(longest stall in seconds, bytes stalled) of a stream's per-interval
    bytes: a stalled interval carried less than half the median; the bytes
    stalled are what those intervals fell short of the median."""
    if not intervals:
        return float("nan"), 0
    med = sorted(intervals)[len(intervals) // 2]
    run = longest = short = 0
    for b in intervals:
        stalled = b < med / 2
        run = run + 1 if stalled else 0
        longest = max(longest, run)
        short += med - b if stalled else 0
    return longest * seconds, short


def blast(mc, a, seconds: float):
    """``a``'s other flows: UDP to FLOWS addresses of 10.200.0.0/16 (routed to b)."""
    return mc.cloud.popen(a, [sys.executable, "-m", "benchmarks.bench_restart", "udp",
                              str(FLOWS), str(seconds), str(BLAST_RATE)], cwd=REPO, text=True)


def _udp(count: int, seconds: float, rate: float) -> int:
    """VM side: one datagram to each of ``count`` addresses 10.200.x.y in turn,
    ``rate`` a second, for ``seconds``; prints how many were sent."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dsts = [(f"10.200.{i >> 8 & 0xFF}.{i & 0xFF}", 9) for i in range(count)]
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for d in dsts:
            try:
                s.sendto(b"x" * 18, d)
                sent += 1
            except OSError:
                pass
            if sent % 50 == 0:
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    print(sent)
    return 0


def measure(mc, a, b, h, stop: str, wiped: bool = False) -> dict:
    """One restart of h's agent under a ping, a TCP stream and a's other flows."""
    blaster = blast(mc, a, SECONDS + 30)
    deadline = time.monotonic() + 30
    while flow_count(h, BLAST_MATCH) < FLOWS * 0.98:
        if time.monotonic() > deadline or blaster.poll() is not None:
            raise BenchError(f"{flow_count(h, BLAST_MATCH)} of a's {FLOWS} other flows "
                             f"installed after 30 s")
        time.sleep(0.2)
    server = mc.cloud.popen(b, ["iperf3", "-s", "-1", "-J", "-i", "0.1", "-p", str(PORT),
                                "-B", IP_B], text=True)
    deadline = time.monotonic() + 5
    while f":{PORT}" not in b.cmd(f"ss -ltnH 'sport = :{PORT}'"):
        if time.monotonic() > deadline:
            raise BenchError("the iperf3 server did not start")
        time.sleep(0.05)
    count = int(SECONDS / 0.01)
    pinger = mc.cloud.popen(a, ["ping", "-i", "0.01", "-c", str(count), "-W", "1", IP_B],
                            text=True)
    client = mc.cloud.popen(a, ["iperf3", "-c", IP_B, "-p", str(PORT), "-t", str(SECONDS),
                                "-b", "20M", "--connect-timeout", "3000"], text=True)
    time.sleep(RESTART_AT)  # the traffic runs steadily before the restart (that is the test)
    log_at = os.path.getsize(os.path.join(h.rundir, "agent.log"))
    missed = table_misses(h)
    took = restart(mc, h, STOPS[stop]) if stop in STOPS else 0.0  # else: the control
    out, _ = pinger.communicate(timeout=SECONDS + 30)
    client.communicate(timeout=SECONDS + 30)
    srv_out, _ = server.communicate(timeout=30)
    blaster.kill()
    blaster.wait()
    misses = table_misses(h) - (0 if wiped else missed)
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
    if not m:
        raise BenchError(f"ping gave no summary: {out[-300:]}")
    sent, got = int(m.group(1)), int(m.group(2))
    res = json.loads(srv_out[srv_out.index("{"):])
    if "error" in res:
        raise BenchError(f"iperf3: {res['error']}")
    intervals = [int(i["sum"]["bytes"]) for i in res["intervals"]]
    stall, short = stalls(intervals, 0.1)
    return {"pings_sent": sent, "pings_lost": sent - got, "stall_s": round(stall, 2),
            "bytes_stalled": short, "bytes": sum(intervals), "restart_s": round(took, 2),
            "table_misses": misses, "log_at": log_at}


def run() -> None:
    from topologies.midocloud import MidoCloud

    with MidoCloud(2, tunnel="vxlan", progress=log,
                   agent_options={"fast_restart": True}) as mc:
        ten = Tenant(mc, "rst")
        a = routed_vm(mc, ten, 1, ten.b1, "a", f"{IP_A}/24", MAC_A)
        b = routed_vm(mc, ten, 2, ten.b2, "b", f"{IP_B}/24", MAC_B)
        b.cmd("sysctl -qw net.ipv4.ip_forward=0")  # a's other traffic ends in b
        mc.route(ten.router, "10.200.0.0/16", ten.rp2, IP_B)
        wait_ping(a, IP_B, "warm-up")
        h = mc.hosts[0]
        figures: dict[str, list[dict]] = {}
        for rnd in range(ROUNDS):
            # the control: the same traffic and no restart (what this machine
            # loses anyway)
            fig = measure(mc, a, b, h, "none")
            del fig["log_at"], fig["restart_s"]
            figures.setdefault("control", []).append(fig)
            log(f"round {rnd + 1} control (no restart): {fig}")
            for stop in STOPS:
                for mode, fast in MODES.items():
                    mc.agent_options["fast_restart"] = fast
                    at = os.path.getsize(os.path.join(h.rundir, "agent.log"))
                    restart(mc, h, signal.SIGINT)  # into this mode, not measured
                    if fast:
                        wait_judged(h, at)
                    wait_ping(a, IP_B, f"{mode} settle")
                    fig = measure(mc, a, b, h, stop, wiped=not fast)
                    if fast:
                        fig["judged"] = wait_judged(h, fig["log_at"]).split("judged", 1)[1]
                    del fig["log_at"]
                    figures.setdefault(f"{stop}/{mode}", []).append(fig)
                    log(f"round {rnd + 1} {stop:7s} {mode}: {fig}")
    extra: dict = {"rounds": ROUNDS, "seconds": SECONDS, "ping_interval_s": 0.01,
                   "tcp_rate": "20M", "other_flows": FLOWS, "other_flows_rate": BLAST_RATE,
                   "figures": figures}
    totals = {k: {f: sum(r.get(f) or 0 for r in v) for f in (
        "pings_sent", "pings_lost", "bytes_stalled", "table_misses")}
              | {"longest_stall_s": max(r["stall_s"] for r in v)}
              for k, v in figures.items()}
    extra["totals"] = totals
    for stop in STOPS:
        fast, wipe = totals[f"{stop}/fast"], totals[f"{stop}/wipe"]
        extra[f"{stop}_bytes_stalled_ratio"] = round(
            fast["bytes_stalled"] / wipe["bytes_stalled"], 4) if wipe["bytes_stalled"] \
            else None
        extra[f"{stop}_table_misses_ratio"] = round(
            fast["table_misses"] / wipe["table_misses"], 4) if wipe["table_misses"] else None
    lost_fast = sum(totals[f"{s}/fast"]["pings_lost"] for s in STOPS)
    lost_wipe = sum(totals[f"{s}/wipe"]["pings_lost"] for s in STOPS)
    report(NAME, lost_fast, "pings lost", "wipe_restart", lost_wipe, higher_is_better=False,
           extra=extra)


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    if sys.argv[1:2] == ["udp"]:  # inside VM a (see blast)
        raise SystemExit(_udp(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
    raise SystemExit(main())
