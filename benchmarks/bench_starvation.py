"""No starvation (issue 13, goal 6): a quiet VM's first packet and ARP
re-resolution while a VM on the SAME host blasts new flows, against the same
with the blaster idle, same run.

Three cloud hosts (each its own userspace OVS, VXLAN), one tenant router
with networks 192.168.1.0/24 and 192.168.2.0/24. On each test host (h1: the
agent's fair packet-in queue, the default; h2: ``packet_in_fair = false``,
os-ken's one FIFO, as before; STARVE_SWAP=1 swaps them): the blaster ``A``
and the prober ``B`` on net 1, the neighbour ``C`` on net 2, which also
sinks the blast (a route 10.200.0.0/17, resp. 10.200.128.0/17, via it). On
h3, ``D`` on net 2 runs a silent TCP server.

* first packet: ``B`` times ``connect()`` (SYN -> SYN/ACK) of a NEW routed
  connection to ``D``; before each sample the simulated flows of the pair
  are deleted on both hosts and both datapath caches purged, so the SYN is a
  packet-in at the loaded agent.
* ARP re-resolution: ``B`` connects to an address of ``C``'s it never had
  before (a fresh alias each sample): the router holds the SYN, asks by ARP,
  and the reply (a packet-in at the loaded agent) releases it.

Variants, in turn in each block: ``idle`` (A silent); ``blast`` (A sends
STARVE_RATE new routed flows per second, default 20,000: the goal's figure,
one blaster on the machine at a time; far past its meter, so storm control
cuts its port off for 2 s in turns);
``metered`` (STARVE_METERED_RATE, default 3,000/s, in bursts of
STARVE_METERED_BURST = 600 frames: past its 1,000/s meter but under storm
control's 5x, and each burst lets the meter's burst of 200 packet-ins reach
the agent at once: a backlog in the agent, the fair queue's case). In
``idle`` and ``metered`` both test hosts are measured in the same seconds
(their samples alternate, both blasters run): the machine's load, shared
with whatever else runs on it, weighs on both alike. A connection that
fails counts as CONNECT_TIMEOUT.

Results (``benchmarks/results/``): ``starvation_first_packet`` (median ms,
A blasting, fair host) vs ``idle_first`` (A idle, same host);
``starvation_arp`` the same for ARP re-resolution;
``starvation_burst_first_packet`` (metered variant) vs idle; and
``fair_vs_fifo_burst_first_packet``: the fair host's metered median vs the
FIFO host's (what the queue changes, same run). Extras: p90/p99 of every
variant and host, agent CPU, the blast rate sent and read by OVS, and what
the agents reported dropping (meter, storm control, queue). Run:
``.venv/bin/python -m benchmarks.bench_starvation`` (root). Knobs (env):
STARVE_QUICK=1 (10 samples per variant, 1 block: about a minute),
STARVE_SAMPLES (per variant, default 30), STARVE_BLOCKS (default 3),
STARVE_RATE, STARVE_METERED_RATE, STARVE_METERED_BURST, STARVE_FIFO=0 (no
FIFO host), STARVE_SWAP=1, STARVE_VARIANTS (default idle,blast,metered),
STARVE_LOGS=DIR (copy the agents' logs there).
"""

from __future__ import annotations

import os
import re
import sys
import time

NAME = "bench_starvation"
QUICK = os.environ.get("STARVE_QUICK", "") not in ("", "0")
SAMPLES = int(os.environ.get("STARVE_SAMPLES", "10" if QUICK else "30"))
BLOCKS = int(os.environ.get("STARVE_BLOCKS", "1" if QUICK else "3"))
RATE = float(os.environ.get("STARVE_RATE", "20000"))
METERED_RATE = float(os.environ.get("STARVE_METERED_RATE", "3000"))
# the metered variant's frames come in bursts: each lets the meter's burst
# (200 packet-ins) through at once, a backlog in the agent
METERED_BURST = int(os.environ.get("STARVE_METERED_BURST", "600"))
FIFO = os.environ.get("STARVE_FIFO", "1") not in ("", "0")
PORT = 5556
CONNECT_TIMEOUT = 5.0
DESTINATIONS = 32768  # distinct blast destinations per host (a /17 of 10.200.0.0/16)
VARIANTS = tuple(os.environ.get("STARVE_VARIANTS", "idle,blast,metered").split(","))
# which test host runs the FIFO agent (h2, or h1 with STARVE_SWAP=1: a host's
# own noise is then told from the mode's effect)
SWAP = os.environ.get("STARVE_SWAP", "") not in ("", "0")
D_IP, D_MAC = "192.168.2.200", "02:00:00:5f:03:c8"


# ---- VM side: the blaster ---------------------------------------------------------

def _blast(iface: str, src_mac: str, dst_mac: str, src_ip: str, base: int, rate: float,
           burst: int) -> int:
    """IPv4/UDP frames to 32,768 distinct destinations 10.200.(base+x).y (one
    new routed flow each), cycled, paced at ``rate`` frames/s in bursts of
    ``burst`` frames sent back to back, until SIGTERM;
    then prints "sent FRAMES SECONDS"."""
    import signal
    import socket

    from benchmarks.blaster import ipv4_udp

    head = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) \
        + b"\x08\x00"
    frames = [head + ipv4_udp(src_ip, f"10.200.{base + (i >> 8)}.{i & 0xFF}", bytes(18))
              for i in range(DESTINATIONS)]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sent, start = 0, time.monotonic()

    def done(*_):
        print(f"sent {sent} {time.monotonic() - start:.3f}", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, done)
    print("ready", flush=True)
    while True:
        for f in frames:
            try:
                sock.send(f)
                sent += 1
            except OSError:
                time.sleep(0.001)
            if sent % burst == 0:
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)


# ---- harness side ---------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ovs_rx(host, ofport: int) -> int:
    out = host.ovs_ofctl("dump-ports", str(ofport))
    m = re.search(r"rx pkts=(\d+)", out)
    if not m:
        from benchmarks.cloudbench import BenchError

        raise BenchError(f"cannot read port {ofport}'s counters on {host.name}: {out[:200]}")
    return int(m.group(1))


def run() -> None:
    from benchmarks.cloudbench import (
        REPO,
        SIM_COOKIE,
        BenchError,
        ConnectClient,
        Tenant,
        flow_count,
        logger,
        parallel,
        routed_vm,
        start_server,
        summary,
        wait_ping,
    )
    from benchmarks.common import report
    from topologies.midocloud import MidoCloud

    log = logger(NAME)
    kinds = ["fair", "fifo"] if FIFO else ["fair"]
    log(f"{SAMPLES} samples per variant in {BLOCKS} block(s); blast {RATE:.0f}/s, metered "
        f"{METERED_RATE:.0f}/s; hosts: {', '.join(kinds)}{' (quick)' if QUICK else ''}")
    opts = {"hosts": {"h1" if SWAP else "h2": {"packet_in_fair": "false"}}}
    with MidoCloud(n_hosts=3, tunnel="vxlan", agent_options=opts,
                   progress=lambda m: log(m)) as mc:
        ten = Tenant(mc, "starve")
        d = routed_vm(mc, ten, 3, ten.b2, "sd", f"{D_IP}/24", D_MAC)
        start_server(mc.cloud, d, PORT)
        labs = {}
        for kind in kinds:
            i = (2 if kind == "fair" else 1) if SWAP else (1 if kind == "fair" else 2)
            host = mc.hosts[i - 1]
            a_ip, a_mac = f"192.168.1.{10 + i}", f"02:00:00:5f:01:{10 + i:02x}"
            a = routed_vm(mc, ten, i, ten.b1, f"sa{i}", f"{a_ip}/24", a_mac)
            b = routed_vm(mc, ten, i, ten.b1, f"sb{i}", f"192.168.1.{20 + i}/24",
                          f"02:00:00:5f:01:{20 + i:02x}")
            sink = f"192.168.2.{30 + i}"
            c = routed_vm(mc, ten, i, ten.b2, f"sc{i}", f"{sink}/24",
                          f"02:00:00:5f:02:{30 + i:02x}")
            c.cmd("sysctl -qw net.ipv4.ip_forward=0")
            start_server(mc.cloud, c, PORT)
            wait_ping(b, D_IP, f"{kind}: B -> D")
            wait_ping(a, sink, f"{kind}: A -> C")
            labs[kind] = {"kind": kind, "host": host, "a": a, "a_ip": a_ip, "a_mac": a_mac,
                          "b": b, "c": c, "sink": sink,
                          "client": ConnectClient(mc.cloud, b),
                          "agent": mc.cloud.agents[host.name]}
        # each test host's blast goes to its own sink (a /17 each): no tunnel
        mc.route(ten.router, "10.200.0.0/17", ten.rp2, labs["fair"]["sink"])
        if FIFO:
            mc.route(ten.router, "10.200.128.0/17", ten.rp2, labs["fifo"]["sink"])
        h3 = mc.hosts[2]
        alias = iter(range(50, 190))  # fresh neighbour addresses 192.168.2.x, on C
        res = {k: {v: {"first": [], "arp": []} for v in VARIANTS} for k in kinds}
        fails = {k: {v: 0 for v in VARIANTS} for k in kinds}
        cpu = {k: {v: [0.0, 0.0] for v in VARIANTS} for k in kinds}  # agent s, wall s
        # OVS rx, seconds; frames the VM sent, its seconds
        attack = {k: {v: [0, 0.0, 0, 0.0] for v in VARIANTS} for k in kinds}
        a_flows = {k: dict.fromkeys(VARIANTS, 0) for k in kinds}  # A's flows after each

        def first_packet(lab) -> float | None:
            host, b = lab["host"], lab["b"]
            checks = [(host, f"{SIM_COOKIE},in_port={b.ofport}"),
                      (h3, f"{SIM_COOKIE},in_port={d.ofport}")]
            parallel(lambda hm: hm[0].ovs_ofctl("del-flows", hm[1]), checks)
            parallel(lambda h: h.ovs_appctl("revalidator/purge"), [host, h3])
            return lab["client"].connect(D_IP, PORT)

        def arp(lab) -> float | None:
            n = next(alias, None)
            if n is None:
                raise BenchError("out of fresh neighbour addresses: lower STARVE_SAMPLES")
            ip = f"192.168.2.{n}"  # C answers ARP for it from now on
            lab["c"].cmd(f"ip addr add {ip}/32 dev eth0")
            return lab["client"].connect(ip, PORT)

        def start_blast(lab, rate: float, base: int, burst: int):
            return mc.cloud.popen(lab["a"], [
                sys.executable, "-m", "benchmarks.bench_starvation", "blast", "eth0",
                lab["a_mac"], ten.mac1, lab["a_ip"], str(base), str(rate), str(burst)],
                cwd=REPO, text=True)

        per_block = max(1, -(-SAMPLES // BLOCKS))
        for kind in kinds:
            lab = labs[kind]
            for _ in range(3):  # warm-up: ARP entries for B, D, C; not recorded
                first_packet(lab)
        def stop_blast(kind: str, variant: str, proc, rx0: int, t0: float) -> None:
            lab = labs[kind]
            attack[kind][variant][0] += _ovs_rx(lab["host"], lab["a"].ofport) - rx0
            attack[kind][variant][1] += time.monotonic() - t0
            proc.terminate()
            out, err = proc.communicate(timeout=10)
            line = [ln for ln in out.splitlines() if ln.startswith("sent")]
            if not line:
                raise BenchError(f"the blaster gave no summary: {err.strip()[-300:]}")
            _, n, secs = line[-1].split()
            attack[kind][variant][2] += int(n)
            attack[kind][variant][3] += float(secs)

        def run_variant(variant: str, blk: int, group: list[str]) -> None:
            """Blast (unless idle) from the A of each host in ``group`` and
            sample their Bs in turn, in the same seconds."""
            procs = {}
            if variant != "idle":
                rate, burst = (RATE, 50) if variant == "blast" else (METERED_RATE, METERED_BURST)
                for kind in group:
                    lab = labs[kind]
                    proc = start_blast(lab, rate, 0 if kind == "fair" else 128, burst)
                    if proc.stdout.readline().strip() != "ready":
                        raise BenchError(f"the blaster in {lab['a'].vm_name} did not start: "
                                         f"{proc.stderr.read().strip()[-300:]}")
                    procs[kind] = (proc, _ovs_rx(lab["host"], lab["a"].ofport),
                                   time.monotonic())
                time.sleep(1.0)  # the flood reaches its rate before sampling
                for kind, (proc, _rx, _t) in procs.items():
                    if proc.poll() is not None:
                        raise BenchError(f"the blaster in {labs[kind]['a'].vm_name} exited: "
                                         f"{proc.stderr.read().strip()[-300:]}")
            c0 = {k: _cpu_seconds(labs[k]["agent"].pid) for k in group}
            w0 = time.monotonic()
            for j in range(per_block):
                for kind in group if j % 2 == 0 else group[::-1]:
                    lab, r = labs[kind], res[kind][variant]
                    if len(r["first"]) >= SAMPLES:
                        continue
                    t = first_packet(lab)
                    fails[kind][variant] += t is None
                    r["first"].append(CONNECT_TIMEOUT if t is None else t)
                    if j % 2 == 0:  # half as many ARP samples (addresses are few)
                        t = arp(lab)
                        fails[kind][variant] += t is None
                        r["arp"].append(CONNECT_TIMEOUT if t is None else t)
            for kind in group:
                lab = labs[kind]
                cpu[kind][variant][0] += _cpu_seconds(lab["agent"].pid) - c0[kind]
                cpu[kind][variant][1] += time.monotonic() - w0
                a_flows[kind][variant] = flow_count(
                    lab["host"], f"{SIM_COOKIE},in_port={lab['a'].ofport}")
                if kind in procs:
                    stop_blast(kind, variant, *procs[kind])
                if lab["agent"].poll() is not None:
                    raise BenchError(f"{kind} host's agent died (log: "
                                     f"{lab['host'].rundir}/agent.log)")
                s, sa = summary(res[kind][variant]["first"], 1e3), \
                    summary(res[kind][variant]["arp"], 1e3)
                log(f"  block {blk + 1}/{BLOCKS} {kind} {variant}: first packet median "
                    f"{s.get('median', 0):.2f} ms (n {s.get('n', 0)}), ARP median "
                    f"{sa.get('median', 0):.2f} ms (n {sa.get('n', 0)}), failures "
                    f"{fails[kind][variant]}")

        for blk in range(BLOCKS):
            order = kinds if blk % 2 == 0 else kinds[::-1]
            for variant in VARIANTS:
                if variant == "blast":  # the goal's case: one blaster on the machine
                    for kind in order:
                        run_variant(variant, blk, [kind])
                else:  # both hosts in the same seconds: a fair comparison of the two
                    run_variant(variant, blk, order)
        for lab in labs.values():
            lab["client"].close()
            if os.environ.get("STARVE_LOGS"):  # keep the agents' logs for a look
                import shutil

                shutil.copy(os.path.join(lab["host"].rundir, "agent.log"),
                            os.path.join(os.environ["STARVE_LOGS"], f"agent-{lab['kind']}.log"))
        protection = {}
        for h in mc.api.get("/status").get("hosts") or []:
            for kind, lab in labs.items():
                if h.get("id") == mc.host_ids[lab["host"].name]:
                    p = h.get("protection") or {}
                    protection[kind] = {k: p.get(k) for k in
                                        ("metered_drops", "storm_blocked", "queue_drops",
                                         "flow_limit")}

    fig = {k: {v: {m: summary(res[k][v][m], 1e3) for m in ("first", "arp")}
               for v in VARIANTS} for k in kinds}
    extra = {
        "figures_ms": fig,
        "failures": fails,
        "failed_connection_counts_as_ms": CONNECT_TIMEOUT * 1e3,
        "agent_cpu_percent": {k: {v: round(100 * c[0] / c[1], 1) if c[1] else 0.0
                                  for v, c in cpu[k].items()} for k in kinds},
        "blast_frames_read_by_ovs_per_s": {k: {v: round(a[0] / a[1]) if a[1] else 0
                                               for v, a in attack[k].items()} for k in kinds},
        "blast_frames_sent_per_s": {k: {v: round(a[2] / a[3]) if a[3] else 0
                                        for v, a in attack[k].items()} for k in kinds},
        "blast_rate_target": RATE, "metered_rate_target": METERED_RATE,
        "metered_burst_frames": METERED_BURST,
        "agent_reported": protection,
        "blaster_flows_after_variant": a_flows,
        "hosts": {"fair": f"h{2 if SWAP else 1}: fair packet-in queue (default)",
                  "fifo": f"h{1 if SWAP else 2}: packet_in_fair = false (os-ken's FIFO)"},
        "quick": QUICK, "machine_cpus": os.cpu_count(),
    }
    for k in kinds:
        for v in VARIANTS:
            f, a = fig[k][v]["first"], fig[k][v]["arp"]
            log(f"{k} {v}: first packet median {f.get('median', 0):.2f} p99 "
                f"{f.get('p99', 0):.2f} ms; ARP median {a.get('median', 0):.2f} p99 "
                f"{a.get('p99', 0):.2f} ms")
    figures = [(name, fig["fair"][v][m], f"idle_{m}", fig["fair"]["idle"][m])
               for v, m, name in (("blast", "first", "starvation_first_packet"),
                                  ("blast", "arp", "starvation_arp"),
                                  ("metered", "first", "starvation_burst_first_packet"))
               if v in VARIANTS and "idle" in VARIANTS]
    if FIFO and "metered" in VARIANTS:
        figures.append(("fair_vs_fifo_burst_first_packet", fig["fair"]["metered"]["first"],
                        "fifo_burst_first_packet", fig["fifo"]["metered"]["first"]))
    for name, loaded, base_name, base in figures:
        if not loaded.get("n") or not base.get("n"):
            raise BenchError(f"{name}: no sample in a variant")
        report(name, loaded["median"], "ms", base_name, base["median"],
               higher_is_better=False, extra=extra)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "blast":
        a = argv[1:]
        return _blast(a[0], a[1], a[2], a[3], int(a[4]), float(a[5]), int(a[6]))
    from benchmarks.cloudbench import run_main

    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
