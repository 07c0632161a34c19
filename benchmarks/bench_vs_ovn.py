"""midoflow against OVN 23.03 (and OVS NORMAL) on the same 3-host cloud, in one run.

Three labs are built side by side, each of cloud hosts with their own
userspace OVS (topologies/cloud.py):

* midoflow: ``MidoCloud`` (ZooKeeper, REST API, one agent per host), one
  router with networks 10.0.1.0/24 and 10.0.2.0/24;
* OVN: ``topologies.ovncloud.OvnCloud`` (Debian's ovn-central/ovn-host,
  geneve), one distributed logical router with the same two networks;
* OVS NORMAL: two cloud hosts, ``actions=NORMAL`` and a point-to-point VXLAN
  port (as in bench_tcp_throughput), the two VMs on one L2 segment: the
  issue's baseline for the first packet (and for connections per second).

In the midoflow and OVN labs VM ``a`` (10.0.1.10) is on host 1 and VM ``b``
(10.0.2.20) on host 2, each with a default route via the router and a
permanent neighbour entry for it. The figures, measured by turns (OVN,
midoflow, NORMAL) so all see the same noise:

a. **new port reachable**: a fresh VM on host 3 (its veth exists); t0; the
   API call (midoflow: ``POST /bridges/{id}/ports`` with mac and fixed_ips;
   OVN: ``ovn-nbctl lsp-add`` + ``lsp-set-addresses``), then the binding as
   Nova's VIF plugging does it, the same for both (``ovs-vsctl add-port
   br-int TAP -- set Interface TAP external_ids:iface-id=PORT``); then the
   time of the first routed reply from ``b`` (host 2) to a ping sent every
   10 ms (ping's own receive timestamp). Variants: ``arp`` (headline, as a
   VM that boots once plugged): the VM starts pinging when the calls return
   and resolves its gateway by ARP (kernel defaults: an unanswered ARP is
   retried after 1 s, so a lost first ARP costs a second); ``static_gw``:
   the VM pings from before t0, with a permanent neighbour entry for its
   gateway (no ARP of its own: the datapath's readiness alone);
   ``iface_id``: as ``static_gw``, but the veth is in br-int before t0 and
   only gets its iface-id. Median of N each.
b. **short TCP connections per second**, routed across hosts, no security
   group: ``a`` opens a connection to a server in ``b``, sends one byte, the
   server answers one byte and closes (a FIN, as an HTTP/1.0 server), ``a``
   reads to EOF and closes (its FIN): one exchange after another for S
   seconds, in short rounds taken by turns (median of the rounds). Both
   FINs are on the path of every connection, the server's on the client's
   critical path.
c. **ping**, routed across hosts, 21 at 50 ms: the first separately, then the
   average and maximum of the other 20. midoflow's simulated flows are
   deleted first (the first ping is a new flow); datapath caches are left
   alone (a purge alone cost OVN spikes of several ms here).
d. **first packet of a new routed TCP connection**: ``connect()`` time (SYN
   -> SYN/ACK) to a silent server, closed with a reset. Before each: every
   datapath cache purged; for midoflow also its simulated flows of both
   directions deleted on both hosts (so the SYN and the SYN/ACK are each
   simulated; a sample the agents did not simulate is discarded). OVN has no
   per-connection state: just new connections. NORMAL: the same on its L2
   segment.
e. **short TCP connections per second through a security group**: as b,
   with a Neutron-style security group on a's and b's ports (ingress TCP to
   the server's port, all egress; OVN: a port group with networking-ovn's
   ``allow-related`` ACLs). Checked first: the allowed port answers, another
   port times out. midoflow's flow state is the agents' local store here (no
   Cassandra: bench_stateful_rate measures that).

One ``BENCH`` line per figure, ratio midoflow / OVN (and / NORMAL for d); all
of it in ``benchmarks/results/vs_ovn.json``. Run (root):
``.venv/bin/python -m benchmarks.bench_vs_ovn``; ``VS_OVN_QUICK=1`` for a
short run (fewer samples, well under 2 minutes); ``VS_OVN_ENCAP=vxlan`` gives
OVN midoflow's encapsulation instead of its own default, geneve.

VM side (stdlib only): ``python -m benchmarks.bench_vs_ovn serve PORT`` and
``python -m benchmarks.bench_vs_ovn connect-loop IP PORT SECONDS SPORT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

from benchmarks.cloudbench import (
    REPO,
    SIM_COOKIE,
    BenchError,
    ConnectClient,
    del_sim_flows,
    flow_count,
    logger,
    parallel,
    percentile,
    purge_datapath,
    quiet_vm,
    run_main,
    start_server,
    summary,
    wait_ping,
)
from benchmarks.common import RESULTS, machine

NAME = "vs_ovn"
QUICK = os.environ.get("VS_OVN_QUICK", "") not in ("", "0")
N_REACH = 3 if QUICK else 8            # new ports per variant per system
TCP_SECONDS = 1.0 if QUICK else 1.5    # per round: short rounds, interleaved, many
TCP_ROUNDS = 2 if QUICK else 6
PING_ROUNDS = 2 if QUICK else 5
FIRST_SAMPLES = 12 if QUICK else 40    # first-packet connections per system
OVN_ENCAP = os.environ.get("VS_OVN_ENCAP", "geneve")  # or vxlan, as midoflow's lab

IP_A, IP_B = "10.0.1.10", "10.0.2.20"
MAC_A, MAC_B = "02:00:00:01:00:0a", "02:00:00:02:00:14"
GW1, GW2 = "10.0.1.1", "10.0.2.1"
MIDO_GW1_MAC, MIDO_GW2_MAC = "02:aa:00:00:01:01", "02:aa:00:00:01:02"
L2_B = "10.0.1.20"  # b's address on the NORMAL lab's one L2 segment
CONN_PORT, TCP_PORT = 5555, 7100
MAX_BAD = 0.2

log = logger(NAME)


# ---- the three labs ----------------------------------------------------------------

class Lab:
    """What every measurement needs of a lab: two VMs, the peer's address,
    how to purge, how to make a port reachable."""

    name = ""
    hosts: list = []
    cloud = None
    a = b = None
    b_ip = IP_B
    sport = 10000  # the next source port of the connection loop

    def before_new_flow(self, purge: bool = True) -> None:
        """Make the next connection between a and b a new one for this lab."""
        if purge:
            parallel(purge_datapath, self.hosts)

    def stop(self) -> None:
        raise NotImplementedError


class MidoLab(Lab):
    name = "midoflow"

    def __init__(self) -> None:
        from topologies.midocloud import MidoCloud

        self.mc = MidoCloud(n_hosts=3, tunnel="vxlan", progress=lambda m: log(f"midoflow: {m}"))

    def start(self) -> None:
        mc = self.mc
        mc.start()
        self.cloud, self.hosts = mc.cloud, mc.hosts
        r = mc.router("vs-r", "vs")
        self.nets = {1: mc.bridge("vs-net1", "vs"), 2: mc.bridge("vs-net2", "vs")}
        mc.attach(r, self.nets[1], f"{GW1}/24", MIDO_GW1_MAC)
        mc.attach(r, self.nets[2], f"{GW2}/24", MIDO_GW2_MAC)
        self.a = self._vm(mc.hosts[0], 1, "vsa", IP_A, MAC_A)
        self.b = self._vm(mc.hosts[1], 2, "vsb", IP_B, MAC_B)

    def _vm(self, host, net: int, name: str, ip: str, mac: str):
        vm = self.mc.vm(host, self.nets[net], name, f"{ip}/24", mac, dhcp=False)
        quiet_vm(vm)
        gw, gw_mac = (GW1, MIDO_GW1_MAC) if net == 1 else (GW2, MIDO_GW2_MAC)
        vm.cmd(f"ip route add default via {gw}")
        vm.cmd(f"ip neigh replace {gw} lladdr {gw_mac} dev eth0 nud permanent")
        return vm

    def gateway(self) -> tuple[str, str]:
        return GW1, MIDO_GW1_MAC

    def create_port(self, name: str, ip: str, mac: str) -> str:
        return self.mc.api.request("POST", f"/bridges/{self.nets[1]}/ports",
                                   {"name": name, "mac": mac, "fixed_ips": [ip]})["id"]

    def delete_port(self, pid) -> None:
        self.mc.api.request("DELETE", f"/ports/{pid}")

    def add_security_group(self) -> None:
        api = self.mc.api
        group = api.request("POST", "/security_groups", {"name": "web", "tenant_id": "vs"})["id"]
        api.request("POST", f"/security_groups/{group}/rules", {
            "direction": "ingress", "protocol": "tcp", "port_range_min": TCP_PORT,
            "port_range_max": TCP_PORT})
        for vm, ip, mac in ((self.a, IP_A, MAC_A), (self.b, IP_B, MAC_B)):
            api.request("PUT", f"/ports/{vm.port_id}", {
                "mac": mac, "fixed_ips": [ip], "security_group_ids": [group],
                "port_security_enabled": True})

    def before_new_flow(self, purge: bool = True) -> None:
        """The simulated flows of a <-> b deleted on both hosts (checked), and
        every datapath cache purged when ``purge``."""
        checks = [(self.hosts[0], f"{SIM_COOKIE},ip,nw_dst={IP_B}"),
                  (self.hosts[1], f"{SIM_COOKIE},ip,nw_dst={IP_A}")]
        for _ in range(3):
            parallel(lambda h: del_sim_flows(h, "ip"), self.hosts[:2])
            if purge:
                parallel(purge_datapath, self.hosts)
            if not any(parallel(lambda hm: flow_count(*hm), checks)):
                return
        raise BenchError("midoflow: the simulated flows of a and b keep coming back after "
                         "deletion (stray traffic between the VMs?)")

    def simulated(self) -> bool:
        checks = [(self.hosts[0], f"{SIM_COOKIE},ip,nw_dst={IP_B}"),
                  (self.hosts[1], f"{SIM_COOKIE},ip,nw_dst={IP_A}")]
        return all(parallel(lambda hm: flow_count(*hm), checks))

    def stop(self) -> None:
        self.mc.stop()


class OvnLab(Lab):
    name = "ovn"

    def __init__(self) -> None:
        from topologies.ovncloud import OvnCloud

        self.oc = OvnCloud(n_hosts=3, encap=OVN_ENCAP, progress=lambda m: log(f"ovn: {m}"))

    def start(self) -> None:
        oc = self.oc
        oc.start()
        self.cloud, self.hosts = oc.cloud, oc.hosts
        self.gw_macs = oc.router("vsr", {"ls1": f"{GW1}/24", "ls2": f"{GW2}/24"})
        self.a = oc.vm(1, "ls1", "vsa", f"{IP_A}/24", MAC_A, GW1, self.gw_macs["ls1"])
        self.b = oc.vm(2, "ls2", "vsb", f"{IP_B}/24", MAC_B, GW2, self.gw_macs["ls2"])

    def gateway(self) -> tuple[str, str]:
        return GW1, self.gw_macs["ls1"]

    def create_port(self, name: str, ip: str, mac: str) -> str:
        lsp = f"{self.oc.prefix}-{name}"
        self.oc.lsp_add("ls1", lsp, mac, ip)
        return lsp

    def delete_port(self, lsp) -> None:
        self.oc.nbctl("lsp-del", lsp)

    def add_security_group(self) -> None:
        self.oc.security_group("web", [self.a.iface_id, self.b.iface_id], (TCP_PORT,))

    def stop(self) -> None:
        self.oc.stop()


class NormalLab(Lab):
    """Two hosts, OVS NORMAL and a point-to-point VXLAN port, a and b on one
    L2 segment (10.0.1.10, 10.0.1.20), static neighbour entries."""

    name = "ovs_normal"
    b_ip = L2_B

    def __init__(self) -> None:
        from topologies.cloud import Cloud

        self.cloud = Cloud(n_hosts=2)

    def start(self) -> None:
        from benchmarks.bench_tcp_throughput import setup_normal

        log("ovs_normal: building 2 cloud hosts, NORMAL, point-to-point VXLAN")
        self.cloud.start()
        self.hosts = self.cloud.hosts
        for h in self.hosts:  # nothing listens there: no controller to retry
            h.ovs_vsctl("del-controller", "br-int")
        setup_normal(SimpleNamespace(hosts=self.hosts, cloud=self.cloud))
        self.a = self.cloud.add_vm(self.hosts[0], "vsa", f"{IP_A}/24", MAC_A)
        self.b = self.cloud.add_vm(self.hosts[1], "vsb", f"{L2_B}/24", MAC_B)
        for vm, peer, mac in ((self.a, L2_B, MAC_B), (self.b, IP_A, MAC_A)):
            quiet_vm(vm)
            vm.cmd(f"ip neigh replace {peer} lladdr {mac} dev eth0 nud permanent")

    def stop(self) -> None:
        self.cloud.stop()


# ---- measurements ---------------------------------------------------------------------

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+) .*time=([\d.]+) ms",
                    re.M)


# variant -> (the VM's veth already in br-int before t0, permanent gateway
# neighbour and pinging from before t0)
REACH_VARIANTS = {"arp": (False, False), "static_gw": (False, True), "iface_id": (True, True)}


def vif(vm, iface_id: str, plugged: bool) -> None:
    """Bind the VM's veth to ``iface_id`` as Nova's VIF plugging does: set
    ``external_ids:iface-id`` on it, adding it to br-int unless ``plugged``."""
    h = vm.cloud_host
    if plugged:
        h.ovs_vsctl("set", "Interface", vm.tap, f"external_ids:iface-id={iface_id}")
    else:
        h.ovs_vsctl("add-port", "br-int", vm.tap, "--", "set", "Interface", vm.tap,
                    f"external_ids:attached-mac={vm.vm_mac}",
                    f"external_ids:iface-id={iface_id}")


def reach_sample(lab, i: int, variant: str) -> dict:
    """One new port on host 3 (a fresh VM): seconds from t0 to the first
    routed reply from b; the API calls' own duration."""
    plugged, static = REACH_VARIANTS[variant]
    ip, mac = f"10.0.1.{100 + i}", f"02:00:00:01:01:{i:02x}"
    name = f"n{i}"
    gw, gw_mac = lab.gateway()
    vm = lab.cloud.add_vm(lab.hosts[2], name, f"{ip}/24", mac, iface_id=None)
    if not plugged:  # the VM's veth exists; OVS does not have it yet
        lab.hosts[2].ovs_vsctl("del-port", "br-int", vm.tap)
    quiet_vm(vm)
    vm.cmd(f"ip route add default via {gw}")
    ping_cmd = ["ping", "-D", "-n", "-i", "0.01", "-c", "1", "-w", "10", IP_B]
    proc = None
    try:
        if static:
            vm.cmd(f"ip neigh replace {gw} lladdr {gw_mac} dev eth0 nud permanent")
            proc = vm.popen(ping_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
            # pinging before the port exists (each probe lost until it is reachable)
            wait_for_icmp_sent(vm)
        t0 = time.time()
        port = lab.create_port(name, ip, mac)
        vif(vm, port, plugged)
        t_api = time.time() - t0
        if proc is None:  # the VM "boots" now: ARP for its gateway, then ping
            proc = vm.popen(ping_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
        out, _ = proc.communicate(timeout=15)
        m = _REPLY.search(out)
        if not m:
            raise BenchError(f"{lab.name}: the new port {ip} on {lab.hosts[2].name} got no "
                             f"reply from {IP_B} in 10 s ({variant}): {out.strip()[-300:]}")
        return {"reach_s": float(m.group(1)) - t0, "api_s": t_api, "port": port}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        lab.cloud.remove_vm(vm)


def wait_for_icmp_sent(vm, timeout: float = 3) -> None:
    """Until the VM's ping has sent at least one echo request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        icmp = [ln.split() for ln in vm.cmd("cat /proc/net/snmp").splitlines()
                if ln.startswith("Icmp:")]
        if len(icmp) == 2:
            fields = dict(zip(icmp[0][1:], icmp[1][1:], strict=False))
            if int(fields.get("OutEchos", "0")) > 0:
                return
        time.sleep(0.01)
    raise BenchError(f"ping in {vm.name} sent nothing in {timeout:.0f} s")


def measure_reach(labs, res: dict) -> None:
    n = 0
    for variant in REACH_VARIANTS:
        for _ in range(N_REACH):
            n += 1
            for lab in labs:
                s = reach_sample(lab, n, variant)
                res[f"reach_{variant}"][lab.name].append(s["reach_s"])
                res[f"api_{variant}"][lab.name].append(s["api_s"])
                lab.delete_port(s["port"])
        log(f"  a. new port reachable ({variant}): " + ", ".join(
            f"{lab.name} median {summary(res[f'reach_{variant}'][lab.name], 1e3)['median']:.0f}"
            f" ms" for lab in labs))


def connect_rate(lab, seconds: float) -> tuple[float, int, int]:
    """Connections per second from a to b (normal close), errors, count. The
    client's source ports go up one by one from ``lab.sport`` (see
    ``_connect_loop``), continued from one call to the next."""
    p = subprocess.run(
        ["mnexec", "-a", str(lab.a.pid), sys.executable, "-m", "benchmarks.bench_vs_ovn",
         "connect-loop", lab.b_ip, str(TCP_PORT), str(seconds), str(lab.sport)],
        cwd=REPO, capture_output=True, text=True, timeout=seconds + 30)
    parts = p.stdout.split()
    if p.returncode != 0 or len(parts) != 4:
        raise BenchError(f"{lab.name}: the connection loop in {lab.a.name} failed: "
                         f"{(p.stderr or p.stdout).strip()[-300:]}")
    n, err, elapsed, lab.sport = int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])
    check_datapaths(lab)
    return n / elapsed, err, n


def check_datapaths(lab) -> None:
    """Every ovs-vswitchd of the lab still runs; else the error names the
    host and quotes its log's last emergency or error line."""
    for h in lab.hosts:
        try:
            with open(os.path.join(h.rundir, "ovs-vswitchd.pid")) as f:
                pid = int(f.read())
            with open(f"/proc/{pid}/stat") as f:
                alive = f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, ValueError):
            alive = False
        if alive:
            continue
        why = ""
        with contextlib.suppress(OSError):
            with open(os.path.join(h.rundir, "ovs-vswitchd.log")) as f:
                bad = [ln for ln in f.read().splitlines() if "|EMER|" in ln or "|ERR|" in ln]
            why = bad[-1] if bad else ""
        raise BenchError(f"{lab.name}: ovs-vswitchd of {h.name} died ({why or 'no log line'})")


def measure_tcp(labs, res: dict) -> None:
    for lab in labs:
        lab.a.cmd("sysctl -qw net.ipv4.ip_local_port_range='1024 65535' "
                  "net.ipv4.tcp_tw_reuse=1")
        proc = lab.cloud.popen(lab.b, [sys.executable, "-m", "benchmarks.bench_vs_ovn",
                                       "serve", str(TCP_PORT)], cwd=REPO, text=True)
        deadline = time.monotonic() + 10
        while f":{TCP_PORT}" not in lab.b.cmd(f"ss -ltnH 'sport = :{TCP_PORT}'"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{lab.name}: the TCP server in {lab.b.name} does not listen")
            time.sleep(0.05)
        connect_rate(lab, 0.5)  # warm-up: ARP, flows
    tcp_rounds(labs, res, "tcp_cps", "b")


def tcp_rounds(labs, res: dict, key: str, tag: str) -> None:
    for rnd in range(TCP_ROUNDS):
        for lab in labs:
            r, err, n = connect_rate(lab, TCP_SECONDS)
            res[key][lab.name].append(r)
            res["tcp_errors"][lab.name] += err
            log(f"  {tag}. round {rnd + 1}: {lab.name} {r:.0f} connections/s ({n}, "
                f"{err} failed)")


def probe(lab, port: int) -> str:
    """From a to b:``port``: "open", "refused" or "timeout" (0.5 s)."""
    p = subprocess.run(
        ["mnexec", "-a", str(lab.a.pid), sys.executable, "-m", "benchmarks.bench_vs_ovn",
         "probe", lab.b_ip, str(port)], cwd=REPO, capture_output=True, text=True, timeout=30)
    return p.stdout.strip() or f"error: {p.stderr.strip()[-200:]}"


def measure_tcp_sg(labs, res: dict) -> None:
    """The same connections with a security group on a's and b's ports
    (ingress TCP to the server's port, egress all): stateful."""
    for lab in labs:
        lab.add_security_group()
        deadline = time.monotonic() + 20
        while (probe(lab, TCP_PORT), probe(lab, TCP_PORT + 1)) != ("open", "timeout"):
            if time.monotonic() > deadline:
                raise BenchError(f"{lab.name}: the security group does not act (b:{TCP_PORT} "
                                 f"{probe(lab, TCP_PORT)}, b:{TCP_PORT + 1} "
                                 f"{probe(lab, TCP_PORT + 1)}; want open and timeout)")
        connect_rate(lab, 0.5)  # warm-up
    tcp_rounds(labs, res, "tcp_cps_sg", "e")


def measure_ping(labs, res: dict) -> None:
    for rnd in range(PING_ROUNDS):
        for lab in labs:
            lab.before_new_flow(purge=False)
            out = lab.a.cmd(f"ping -D -n -c 21 -i 0.05 -W 1 {lab.b_ip}")
            rtts = {int(m.group(2)): float(m.group(3)) for m in _REPLY.finditer(out)}
            rest = [rtts[s] for s in range(2, 22) if s in rtts]
            if len(rest) < 18:
                raise BenchError(f"{lab.name}: ping {lab.a.name} -> {lab.b_ip} lost "
                                 f"{20 - len(rest)} of 20 after the first: {out[-300:]}")
            res["ping_first"][lab.name].append(rtts.get(1))
            res["ping_rest"][lab.name].extend(rest)
            res["ping_round_avg"][lab.name].append(sum(rest) / len(rest))
            res["ping_round_max"][lab.name].append(max(rest))
            res["ping_lost"][lab.name] += 21 - len(rtts)
        log(f"  c. round {rnd + 1}: " + ", ".join(
            f"{lab.name} avg {res['ping_round_avg'][lab.name][-1]:.2f} / max "
            f"{res['ping_round_max'][lab.name][-1]:.2f} ms" for lab in labs))


def measure_first(labs, res: dict) -> None:
    clients = {}
    for lab in labs:
        start_server(lab.cloud, lab.b, CONN_PORT)
        clients[lab.name] = c = ConnectClient(lab.cloud, lab.a)
        for _ in range(3):
            if c.connect(lab.b_ip, CONN_PORT) is None:
                raise BenchError(f"{lab.name}: {lab.a.name} cannot connect to "
                                 f"{lab.b_ip}:{CONN_PORT}")
    for i in range(FIRST_SAMPLES):
        for lab in labs:
            lab.before_new_flow()
            t = clients[lab.name].connect(lab.b_ip, CONN_PORT)
            if t is None:
                res["first_failed"][lab.name] += 1
                continue
            if isinstance(lab, MidoLab) and not lab.simulated():
                res["first_not_simulated"][lab.name] += 1
                continue
            res["first"][lab.name].append(t)
        if (i + 1) % 10 == 0 or i + 1 == FIRST_SAMPLES:
            log(f"  d. {i + 1}/{FIRST_SAMPLES}: " + ", ".join(
                f"{lab.name} median {summary(res['first'][lab.name], 1e3)['median']:.2f} ms"
                for lab in labs))
    for lab in labs:
        bad = res["first_failed"][lab.name] + res["first_not_simulated"][lab.name]
        if bad > MAX_BAD * FIRST_SAMPLES or not res["first"][lab.name]:
            raise BenchError(f"{lab.name}: {bad} of {FIRST_SAMPLES} first-packet connections "
                             f"failed or were not simulated")
        clients[lab.name].close()


# ---- the run ---------------------------------------------------------------------------

def _bench_line(name: str, value: float, unit: str, base_name: str, base: float) -> float:
    ratio = value / base if base else float("nan")
    print(f"BENCH {name}: {value:.4g} {unit} vs {base_name} {base:.4g} {unit} "
          f"(ratio {ratio:.3f})", flush=True)
    return round(ratio, 4)


def run() -> None:
    mido, ovn, normal = MidoLab(), OvnLab(), NormalLab()
    labs3 = [ovn, mido, normal]
    lists = (*(f"reach_{v}" for v in REACH_VARIANTS), *(f"api_{v}" for v in REACH_VARIANTS),
             "tcp_cps", "tcp_cps_sg", "ping_first", "ping_rest", "ping_round_avg",
             "ping_round_max", "first")
    counts = ("tcp_errors", "ping_lost", "first_failed", "first_not_simulated")
    res: dict = {k: {lab.name: [] for lab in labs3} for k in lists}
    res.update({k: {lab.name: 0 for lab in labs3} for k in counts})
    times = {}
    t_start = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        for lab in labs3:
            t0 = time.monotonic()
            lab.start()
            times[f"{lab.name}_build_s"] = round(time.monotonic() - t0, 1)
        for lab in (ovn, mido):
            wait_ping(lab.a, IP_B, lab.name)
            wait_ping(lab.b, IP_A, lab.name)
        wait_ping(normal.a, L2_B, "ovs_normal")
        log(f"labs up ({times}); quick={QUICK}")
        log("a. new port reachable (API call -> first routed reply)")
        measure_reach([ovn, mido], res)
        log("b. short TCP connections per second (normal close)")
        measure_tcp(labs3, res)
        log("c. ping, routed across hosts, 21 at 50 ms")
        measure_ping([ovn, mido], res)
        log("d. first packet of a new routed TCP connection")
        measure_first(labs3, res)
        log("e. short TCP connections per second through a security group (stateful)")
        measure_tcp_sg([ovn, mido], res)
        times["measured_s"] = round(time.monotonic() - t_start, 1)
    finally:
        for lab in labs3:
            try:
                lab.stop()
            except Exception as e:  # noqa: BLE001 - stop the others anyway
                log(f"stopping {lab.name}: {e}")

    ms = {k: {n: summary(v, 1e3) for n, v in res[k].items() if v}
          for k in (*(f"reach_{v}" for v in REACH_VARIANTS),
                    *(f"api_{v}" for v in REACH_VARIANTS), "first")}
    pings = {n: {"first_ms": [round(x, 3) if x is not None else None for x in
                              res["ping_first"][n]],
                 "avg_ms": round(sum(res["ping_rest"][n]) / len(res["ping_rest"][n]), 3),
                 "max_ms": round(max(res["ping_rest"][n]), 3),
                 "round_avg_ms": [round(x, 3) for x in res["ping_round_avg"][n]],
                 "round_max_ms": [round(x, 3) for x in res["ping_round_max"][n]],
                 "lost": res["ping_lost"][n]}
             for n in ("ovn", "midoflow")}
    cps = {n: {"median": round(percentile(v, 50), 1), "rounds": [round(x, 1) for x in v],
               "failed": res["tcp_errors"][n]} for n, v in res["tcp_cps"].items()}
    sgc = {n: {"median": round(percentile(v, 50), 1), "rounds": [round(x, 1) for x in v]}
           for n, v in res["tcp_cps_sg"].items() if v}
    figures = {}
    m, o, nl = "midoflow", "ovn", "ovs_normal"
    for v in REACH_VARIANTS:
        r = ms[f"reach_{v}"]
        suffix = "" if v == "arp" else f"_{v}"
        figures[f"new_port_reachable{suffix}_ms"] = {
            "midoflow": r[m]["median"], "ovn": r[o]["median"],
            "midoflow_max": r[m]["max"], "ovn_max": r[o]["max"],
            "ratio_vs_ovn": _bench_line(f"vs_ovn_new_port_reachable{suffix}", r[m]["median"],
                                        "ms", "ovn", r[o]["median"])}
    figures["tcp_connections_per_s"] = {
        "midoflow": cps[m]["median"], "ovn": cps[o]["median"], "ovs_normal": cps[nl]["median"],
        "ratio_vs_ovn": _bench_line("vs_ovn_tcp_connections", cps[m]["median"], "conn/s",
                                    "ovn", cps[o]["median"]),
        "ratio_vs_ovs_normal": round(cps[m]["median"] / cps[nl]["median"], 4)}
    figures["tcp_connections_per_s_security_group"] = {
        "midoflow": sgc[m]["median"], "ovn": sgc[o]["median"],
        "ratio_vs_ovn": _bench_line("vs_ovn_tcp_connections_sg", sgc[m]["median"], "conn/s",
                                    "ovn", sgc[o]["median"]),
        "midoflow_vs_own_stateless": round(sgc[m]["median"] / cps[m]["median"], 4),
        "ovn_vs_own_stateless": round(sgc[o]["median"] / cps[o]["median"], 4)}
    figures["ping_avg_ms"] = {
        "midoflow": pings[m]["avg_ms"], "ovn": pings[o]["avg_ms"],
        "ratio_vs_ovn": _bench_line("vs_ovn_ping_avg", pings[m]["avg_ms"], "ms", "ovn",
                                    pings[o]["avg_ms"])}
    figures["ping_max_ms"] = {
        "midoflow": pings[m]["max_ms"], "ovn": pings[o]["max_ms"],
        "ratio_vs_ovn": _bench_line("vs_ovn_ping_max", pings[m]["max_ms"], "ms", "ovn",
                                    pings[o]["max_ms"])}
    f = ms["first"]
    figures["first_packet_ms"] = {
        "midoflow": f[m]["median"], "ovn": f[o]["median"], "ovs_normal": f[nl]["median"],
        "midoflow_p99": f[m]["p99"], "ovs_normal_p99": f[nl]["p99"],
        "extra_over_normal_median": round(f[m]["median"] - f[nl]["median"], 3),
        "extra_over_normal_p99": round(f[m]["p99"] - f[nl]["p99"], 3),
        "ratio_vs_ovs_normal": _bench_line("vs_ovn_first_packet_vs_normal", f[m]["median"],
                                           "ms", "ovs_normal", f[nl]["median"]),
        "ratio_vs_ovn": _bench_line("vs_ovn_first_packet", f[m]["median"], "ms", "ovn",
                                    f[o]["median"])}
    result = {
        "name": NAME,
        "timestamp": started_at,
        "quick": QUICK,
        "machine": machine(),
        "figures": figures,
        "samples": {
            **{f"new_port_reachable_{v}_ms": ms[f"reach_{v}"] for v in REACH_VARIANTS},
            **{f"api_call_and_binding_{v}_ms": ms[f"api_{v}"] for v in REACH_VARIANTS},
            "new_port_reachable_raw_ms": {
                v: {n: [round(x * 1e3, 1) for x in xs] for n, xs in res[f"reach_{v}"].items()
                    if xs} for v in REACH_VARIANTS},
            "tcp_connections_per_s": cps,
            "tcp_connections_per_s_security_group": sgc,
            "ping": pings,
            "first_packet_ms": f,
            "first_packet_failed": res["first_failed"],
            "first_packet_not_simulated_discarded": res["first_not_simulated"],
        },
        "timings_s": times,
        "method": {
            "labs": "3 cloud hosts, own userspace OVS each; midoflow: MidoCloud, VXLAN; "
                    "OVN 23.03 (Debian): topologies/ovncloud.py, geneve, distributed "
                    "router; OVS NORMAL: 2 hosts, point-to-point VXLAN, one L2 segment",
            "a": "API call (midoflow POST port with mac+fixed_ips / ovn-nbctl lsp-add + "
                 "lsp-set-addresses) then the VIF plugged with its iface-id (add-port; "
                 "iface_id variant: only the iface-id set on a veth already in br-int); "
                 "time to the first routed reply from a VM on host 2 to a ping every 10 ms "
                 "from the new VM on host 3; arp (headline): the VM starts pinging (ARP "
                 "for its gateway) when the calls return; static_gw, iface_id: permanent "
                 "gateway neighbour, pinging before t0",
            "b": "sequential connections a -> b: connect, 1-byte request, 1-byte answer, the "
                 "server closes first (FIN), the client reads EOF and closes (FIN); NORMAL: "
                 "same two hosts on one L2 segment",
            "e": "as b, with a security group on a's and b's ports (midoflow: a security "
                 "group allowing ingress TCP to the server's port, default egress, port "
                 "security on, flow state local to the agents (no Cassandra); OVN: a port "
                 "group with networking-ovn's allow-related ACLs, conntrack in the "
                 "datapath); checked first: the allowed port answers, another times out",
            "c": "21 pings at 50 ms a -> b; first separate, avg and max over the other 20, "
                 "all rounds; midoflow's simulated flows deleted before each round (no "
                 "datapath purge)",
            "d": "connect() SYN -> SYN/ACK to a silent server, reset close; before each: "
                 "datapath caches purged, and midoflow's simulated flows of both "
                 "directions deleted on both hosts (samples not simulated discarded)",
        },
        "knobs": {"VS_OVN_QUICK": QUICK, "new_ports_per_variant": N_REACH,
                  "ovn_encap": OVN_ENCAP, "tcp_seconds": TCP_SECONDS, "tcp_rounds": TCP_ROUNDS,
                  "ping_rounds": PING_ROUNDS, "first_packet_samples": FIRST_SAMPLES},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"written {RESULTS / (NAME + '.json')} ({time.monotonic() - t_start:.0f} s in all)")


# ---- VM side (stdlib only) ----------------------------------------------------------------

def _serve(port: int) -> int:
    """Accept; answer a connection's first bytes with one byte and close it
    (the server's FIN first); drop one that closes without asking."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1024)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is ls:
                try:
                    c, _a = ls.accept()
                except OSError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                with contextlib.suppress(OSError):
                    s.send(b"y")
            sel.unregister(s)
            s.close()


def _connect_loop(ip: str, port: int, seconds: float, sport: int) -> int:
    """Sequential request/response connections for ``seconds`` (connect, send
    one byte, read to EOF, close): prints "OK FAILED ELAPSED NEXT_SPORT".

    Source ports are bound explicitly, ``sport``, ``sport + 1``, ... (10000
    after 65000): no 5-tuple is reused within a run. The kernel's own choice
    reuses one within seconds, and OVS 3.1.0's userspace conntrack then
    aborts ovs-vswitchd (``conntrack.c:1063: assertion conn->conn_type ==
    CT_CONN_TYPE_DEFAULT failed in conn_update_state()``, seen here under
    OVN's stateful ACLs after 3,000 to 7,000 connections)."""
    n = err = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        s = socket.socket()
        s.settimeout(2)
        try:
            s.bind(("0.0.0.0", sport))
        except OSError:  # still in use here: the next one
            s.close()
            sport = sport + 1 if sport < 65000 else 10000
            continue
        sport = sport + 1 if sport < 65000 else 10000
        try:
            s.connect((ip, port))
            s.sendall(b"x")
            while s.recv(64):
                pass
            n += 1
        except OSError:
            err += 1
        finally:
            s.close()  # a normal close: FIN
    print(n, err, f"{time.monotonic() - start:.6f}", sport)
    return 0


def _probe(ip: str, port: int) -> int:
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect((ip, port))
        print("open")
    except ConnectionRefusedError:
        print("refused")
    except OSError:
        print("timeout")
    finally:
        s.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        return _probe(argv[1], int(argv[2]))
    if argv[:1] == ["serve"]:
        return _serve(int(argv[1]))
    if argv[:1] == ["connect-loop"]:
        return _connect_loop(argv[1], int(argv[2]), float(argv[3]), int(argv[4]))
    if argv:
        print("usage: python -m benchmarks.bench_vs_ovn [serve PORT | connect-loop IP PORT "
              "SECONDS SPORT]", file=sys.stderr)
        return 2
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
