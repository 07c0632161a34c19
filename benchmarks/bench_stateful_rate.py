"""New STATEFUL connections per second (conntrack + SNAT, state pushed to the
uplink's host and filed in a real Cassandra 5.0 node) against the stateless
routed path (the same topology and the same frames, the NAT chains detached
from the router), measured in the same run.

Two cloud hosts (each its own userspace OVS, VXLAN between them) and one
Cassandra node (127.0.0.1, a free port; the agents run with
``flow_state=cassandra:127.0.0.1:PORT/bench_stateful``). A provider router
with a tenant network 192.168.50.0/24 and an exterior uplink 198.51.100.1/24
bound on host 1 to an external namespace (198.51.100.254, the default
route's gateway; it also owns 10.200.0.0/15 as local addresses, so every
frame of the load is delivered to a UDP sink there, which counts them).
The VM 192.168.50.11 sits on host 2.

Stateful mode: the router's inbound filter is ``[rev_snat, accept if
return flow (nw_src 192.168.50.8/29)]`` (the second rule tracks every new
connection from the VM: one conntrack entry) and its outbound filter
``[snat to 203.0.113.10:1024-65535 out of the uplink (nw_src
192.168.50.8/29)]`` (one NAT binding, a port from a block leased in
ZooKeeper). Each new connection is thus one simulation, one conntrack entry,
one NAT binding, one flow-state push over the tunnel to host 1 (sent before
the packet), one exact 5-tuple flow on host 2, and two rows (conntrack, NAT)
in each of two Cassandra partitions (the VM's port, the uplink), filed behind
the packet: the agent buffers flow state per port and writes it (QUORUM)
every 0.5 s or 2048 entries. Security-group mode (issue 13: a VM port
behind a security group): the router's filters null, the VM's port in a
security group (port security on; egress allowed). The group is enforced by
host 2's OVS conntrack (``sg_conntrack``, the default): each new connection
is one OVS conntrack entry in the port's zone (counted), no agent state, no
push, no Cassandra row, and the agent simulates only what the stateless
path does (a routed flow per destination). Stateless
mode: both filters null and no security group (``PUT /routers/{id}``,
``PUT /ports/{id}``): plain routing, one flow per destination IP (routed
flows match in_port, MACs and the destination IP).

Load (same in both modes): the VM sends paced IPv4/UDP frames (raw socket) to
the router's MAC, each with its own source port AND its own destination IP
in 10.200.0.0/16 (a new 5-tuple: a new connection; a distinct destination: a
new routed flow; routed flows ignore the source port, so source ports alone
would make one routed flow). Rounds use disjoint source-port ranges, so no
round meets the conntrack or NAT state of an earlier one. We poll host 2's
OVS for table-1 flows to 10.200.0.0/16: rate = flows / seconds until the
count stopped growing (as bench_l3_flow_setup). Rounds cycle SNAT /
security group / stateless, each mode reports its best round; two results:
``stateful_connection_rate`` (SNAT) and ``stateful_sg_connection_rate``,
each against the stateless rate of the same run.

Per round we also count, without touching the agent: state pushes (packets
of host 1's table-0 flow for the reserved state tunnel key), connections
filed in Cassandra (the VM port's partition: rows of kind ``nat`` and ``ct``
whose WRITETIME is after the round's start, read with CQL until the count
stops changing; the write time is the agent's client-side timestamp, so their
spread is the rate at which the agent filed them), writes the agent reported
as failed ("cannot file flow state" in its log) and datagrams the external
host received.

Run: ``.venv/bin/python -m benchmarks.bench_stateful_rate`` (root). Knobs
(env): STATEFUL_RATE_ROUNDS, STATEFUL_RATE_SECONDS, STATEFUL_RATE_BLAST_RATE,
STATEFUL_RATE_MODES (default ``snat,sg,stateless``; stateless is always
measured: it is the baseline), STATEFUL_RATE_TCP_SECONDS (4; 0: no TCP
rounds). With SNAT measured, TCP rounds follow (``stateful_snat_tcp_connection_rate``):
sequential short TCP connections (connect, a byte each way, the server's
FIN first) from the VM to a server on the external host, SNAT vs stateless,
with table misses, agents' CPU and their counters per connection (packet-ins,
simulations, and what installed flows answered without one). Each round also reports the agents' CPU
time per installed connection (``agent_cpu_us_per_flow``; packet-ins
dropped in the queues included), far less noisy than the rates here.
The VM and external-host side of this module (``blast``, ``sink``) are run
as ``python -m benchmarks.bench_stateful_rate CMD ...`` inside namespaces.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

from benchmarks.cloudbench import (
    REPO,
    BenchError,
    del_sim_flows,
    flow_count,
    logger,
    quiet_vm,
    run_main,
    wait_ping,
)
from benchmarks.common import report
from midoflow.agent.flowstate import STATE_FLUSH_SECONDS
from midoflow.dhcp.frames import checksum

# This measures the agent's own ceiling: the per-port bounds against hostile
# VMs (packet-in meter, flow and MAC limits; benchmarks/bench_hostile.py) are lifted.
UNBOUNDED = {"packet_in_rate": 10_000_000, "packet_in_burst": 1_000_000,
             "max_flows_per_port": 10_000_000, "max_macs_per_port": 1_000_000}

NAME = "stateful_connection_rate"
SG_NAME = "stateful_sg_connection_rate"
SNAT, SG, STATELESS = "snat", "sg", "stateless"
_WANTED = os.environ.get("STATEFUL_RATE_MODES", "snat,sg,stateless").split(",")
MODES = (*(m for m in (SNAT, SG) if m in _WANTED), STATELESS)
BASELINE = "stateless_routed_rate"
ROUNDS = int(os.environ.get("STATEFUL_RATE_ROUNDS", "2"))
BLAST_SECONDS = float(os.environ.get("STATEFUL_RATE_SECONDS", "4"))
BLAST_RATE = float(os.environ.get("STATEFUL_RATE_BLAST_RATE", "4000"))
# Distinct 5-tuples per round (each its own destination IP in 10.200.0.0/16).
PER_ROUND = max(1, min(int(BLAST_RATE * BLAST_SECONDS), 65536))
POLL_INTERVAL = 0.25
# Short TCP connections through SNAT (each: SYN at the VM's host, SYN/ACK at
# the uplink's, FINs copied to both agents) vs the stateless path, per round.
TCP_SECONDS = float(os.environ.get("STATEFUL_RATE_TCP_SECONDS", "4"))
TCP_NAME = "stateful_snat_tcp_connection_rate"
TCP_TARGET, TCP_PORT = "10.201.255.1", 7100  # in the external host's EXT_LOCAL
SETTLE = 1.0  # the flow count has stopped growing when it has not moved for this long

# ---- the topology (shared with bench_stateful_latency) ------------------------
KEYSPACE = "bench_stateful"
NET = "192.168.50"
ROUTER_IP, ROUTER_MAC = f"{NET}.1", "02:aa:00:00:5f:01"
UPLINK_IP, UPLINK_MAC = "198.51.100.1", "02:aa:00:00:5f:09"
EXT, EXT_MAC = "198.51.100.254", "02:00:00:5f:00:fe"
PUBLIC = "203.0.113.10"
SNAT_SOURCES = f"{NET}.8/29"  # .8-.15: the VMs whose connections are NATed
EXT_LOCAL = "10.200.0.0/15"  # owned by the external host: 10.200/16 load, 10.201/16 probes
BLAST_MATCH = "table=1,ip,nw_dst=10.200.0.0/16"
SINK_PORT = 9
VM_IP, VM_MAC = f"{NET}.11", "02:00:00:5f:00:0b"
# The flow-state push from another host arrives on this tunnel key (model.STATE_TUNNEL_KEY).
STATE_KEY = (1 << 24) - 1
SAVE_FAILED = "cannot file flow state"

log = logger(NAME)


class NatTopo:
    """Ids of the provider router, its ports and the two NAT chains."""

    def __init__(self, mc) -> None:
        self.mc = mc
        self.router = mc.router("sf-provider", "admin")
        self.net = mc.bridge("sf-net", "t")
        self.rp = mc.attach(self.router, self.net, f"{ROUTER_IP}/24", ROUTER_MAC)
        self.uplink = mc.router_port(self.router, f"{UPLINK_IP}/24", UPLINK_MAC,
                                     interior=False, name="uplink")
        mc.route(self.router, "0.0.0.0/0", self.uplink, EXT)
        mc.route(self.router, "203.0.113.0/24", type="blackhole")
        self.inbound = mc.chain("sf-in", [
            {"action": "rev_snat"},
            # Tracks every new connection of the NATed VMs (a conntrack entry);
            # accepts their replies (rev_snat already accepts NATed ones).
            {"action": "accept", "match_return_flow": True, "nw_src": SNAT_SOURCES},
        ])
        self.outbound = mc.chain("sf-out", [
            {"action": "snat", "out_ports": [self.uplink], "nw_src": SNAT_SOURCES,
             "nat_targets": [{"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024,
                              "port_to": 65535}]},
        ])
        self.mode = STATELESS
        self.group = mc.api.request("POST", "/security_groups",
                                    {"name": "sf-web", "tenant_id": "t"})["id"]
        # Egress is allowed (and tracked); this ingress rule stands for a web server's.
        mc.api.request("POST", f"/security_groups/{self.group}/rules", {
            "direction": "ingress", "protocol": "tcp", "port_range_min": 80,
            "port_range_max": 80})

    @property
    def stateful(self) -> bool:
        return self.mode == SNAT

    def set_stateful(self, on: bool) -> None:
        self.set_mode(SNAT if on else STATELESS)

    def set_mode(self, mode: str, vm=None) -> None:
        """SNAT: the router's NAT chains; SG: the VM's port in the security
        group (``vm``: the VM); STATELESS: neither."""
        on = mode == SNAT
        self.mc.api.request("PUT", f"/routers/{self.router}", {
            "inbound_filter_id": self.inbound if on else None,
            "outbound_filter_id": self.outbound if on else None})
        if vm is not None:
            grouped = mode == SG
            self.mc.api.request("PUT", f"/ports/{vm.port_id}", {
                "mac": VM_MAC, "fixed_ips": [VM_IP],
                "security_group_ids": [self.group] if grouped else [],
                "port_security_enabled": grouped})
        self.mode = mode

    def external(self, host):
        """The external host on ``host``, bound to the uplink; it owns EXT_LOCAL."""
        ext = self.mc.external(host, self.uplink, "sfext", f"{EXT}/24", EXT_MAC,
                               routes=(("203.0.113.0/24", UPLINK_IP),
                                       (f"{NET}.0/24", UPLINK_IP)))
        quiet_vm(ext)
        ext.cmd(f"ip route add local {EXT_LOCAL} dev lo")
        return ext

    def vm(self, host, name: str, ip: str, mac: str):
        """A VM on the tenant network: default route via the router, a permanent
        neighbour entry for it."""
        vm = self.mc.vm(host, self.net, name, f"{ip}/24", mac)
        quiet_vm(vm)
        vm.cmd(f"ip route add default via {ROUTER_IP}")
        vm.cmd(f"ip neigh replace {ROUTER_IP} lladdr {ROUTER_MAC} dev eth0 nud permanent")
        return vm


def start_cassandra(log=log):
    """A Cassandra node, launched (not yet serving: ``wait_cassandra``). Launch it
    from the main thread: it dies with the thread that started it."""
    from midoflow.devenv.cassandra import CassandraNode

    node = CassandraNode(quiet=True)
    node.launch()
    log(f"Cassandra starting on {node.hosts} (log {node.log_path})")
    return node


def wait_cassandra(node, log=log) -> None:
    from midoflow.devenv.cassandra import CassandraError

    t0 = time.monotonic()
    try:
        version = node.wait_ready(timeout=150)
    except CassandraError as e:
        raise BenchError(str(e)) from None
    log(f"Cassandra {version} serving CQL on {node.hosts} "
        f"(+{time.monotonic() - t0:.1f} s after the cloud was up)")


def flow_state_spec(node) -> str:
    return f"cassandra:{node.address}:{node.native_port}/{KEYSPACE}"


def cassandra_rows(node, port_id: str, since: float = 0.0, sports=None) -> dict:
    """Rows of the port's flow-state partition written (agent's timestamp) at or
    after ``since`` (time.time()): count per kind, first and last write time.
    ``sports``: only the connections of the VM from these source ports (the
    agents file live state again every 30 s: rows of earlier rounds)."""
    from midoflow.devenv.cassandra import CqlError, cql_query

    try:
        rows = cql_query(node.address, node.native_port,
                         f"SELECT kind, key, WRITETIME(value) FROM {KEYSPACE}.flow_state "
                         f"WHERE port_id = '{port_id}'", timeout=15,
                         auth=node.admin_credentials)
    except CqlError as e:
        if "unconfigured table" in e.message or "does not exist" in e.message \
                or "Keyspace" in e.message:
            return {"rows": 0, "kinds": {}, "first": None, "last": None}
        raise BenchError(f"cannot read the flow-state table: {e}") from None
    except OSError as e:
        raise BenchError(f"cannot reach Cassandra at {node.hosts}: {e}") from None
    kinds: dict[str, int] = {}
    times = []
    since_us = int(since * 1e6)
    for kind, key, wt in rows:
        t = wt or 0  # WRITETIME: microseconds (cql_query decodes cells)
        if t < since_us:
            continue
        if sports is not None:
            m = re.search(rf"{re.escape(VM_IP)}\|(\d+)", key or "")
            # the load's (to 10.200.0.0/16), not the probes' (10.201.0.0/16)
            if m is None or int(m.group(1)) not in sports or "|10.200." not in key:
                continue
        k = kind or "?"
        kinds[k] = kinds.get(k, 0) + 1
        times.append(t / 1e6)
    return {"rows": sum(kinds.values()), "kinds": kinds,
            "first": min(times) if times else None, "last": max(times) if times else None}


def wait_rows_settled(node, port_id: str, since: float, quiet_s: float = 1.5,
                      timeout: float = 20.0, sports=None) -> tuple[dict, float]:
    """Poll the partition until its count (since ``since``) stops changing for
    ``quiet_s``; (the rows, seconds waited)."""
    t0 = time.monotonic()
    last = cassandra_rows(node, port_id, since, sports)
    changed = time.monotonic()
    while time.monotonic() - changed < quiet_s and time.monotonic() - t0 < timeout:
        time.sleep(0.3)
        cur = cassandra_rows(node, port_id, since, sports)
        if cur["rows"] != last["rows"]:
            last, changed = cur, time.monotonic()
    return last, changed - t0


def state_pushes_received(host) -> int:
    """Packets that matched ``host``'s table-0 flow for the state tunnel key:
    flow-state pushes it received from other hosts' agents."""
    out = host.ovs_ofctl("dump-flows", f"table=0,tun_id={STATE_KEY:#x}")
    counts = [int(m) for m in re.findall(r"n_packets=(\d+)", out)]
    if not counts:
        raise BenchError(f"{host.name} has no table-0 flow for the state tunnel key "
                         f"({out.strip()[:200]})")
    return sum(counts)


def agent_cpu(mc, host) -> float:
    """CPU seconds (user + system) the host's agent process has used so far:
    per connection, a figure far less noisy than a rate on a shared machine."""
    proc = mc.cloud.agents.get(host.name)
    if proc is None:
        return 0.0
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_count(host, text: str, name: str = "agent.log") -> int:
    try:
        with open(os.path.join(host.rundir, name), errors="replace") as f:
            return sum(text in line for line in f)
    except OSError:
        return 0


def agent_problems(host) -> int:
    """Tracebacks and OpenFlow errors in the agent's log so far."""
    return log_count(host, "Traceback") + log_count(host, "OpenFlow error")


class Sink:
    """The UDP sink in the external host, driven line by line."""

    def __init__(self, cloud, node) -> None:
        self.proc = cloud.popen(node, [sys.executable, "-u", "-m", "benchmarks.bench_stateful_rate",
                                       "sink", str(SINK_PORT), PUBLIC], cwd=REPO, text=True,
                                stdin=subprocess.PIPE, bufsize=1)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise BenchError(f"the UDP sink in the external host did not start: {line!r} "
                             f"{self.proc.stderr.read().strip()[-300:] if not line else ''}")

    def take(self) -> dict:
        """What it received since the last call (then it starts counting afresh)."""
        if self.proc.poll() is not None:
            raise BenchError(f"the UDP sink exited: {self.proc.stderr.read().strip()[-300:]}")
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


# ---- the benchmark ----------------------------------------------------------------

def send_probe(vm, seq: list[int]) -> str:
    """One UDP datagram from the VM's own stack to a fresh 10.201.x.y (a new
    connection: SNAT, push and a Cassandra row in the stateful mode)."""
    seq[0] += 1
    dst = f"10.201.{seq[0] // 250}.{seq[0] % 250 + 1}"
    vm.cmd(f"python3 -c 'import socket; socket.socket(2, 2).sendto(b\"p\", "
           f"(\"{dst}\", {SINK_PORT}))'")
    return dst


def _shape(flow: str) -> str:
    """The mode a routed flow was simulated in: SNAT (rewrites the source to
    PUBLIC), SG (exact 5-tuple, no NAT) or STATELESS (by destination)."""
    if f"set_field:{PUBLIC}->ip_src" in flow:
        return SNAT
    return SG if ("tp_src=" in flow or "udp_src" in flow) else STATELESS


def sg_in_ovs(h2, vm) -> bool:
    """Whether host 2's OVS enforces the VM port's security group (table 4)."""
    return "actions=" in h2.ovs_ofctl("dump-flows", f"table=4,in_port={vm.ofport}")


def zone_connections(h2, vm) -> int:
    """Connections OVS's conntrack holds in the VM port's zone (its ofport)."""
    out = h2.ovs_appctl("dpctl/dump-conntrack", f"zone={vm.ofport}", check=False)
    return sum(1 for ln in out.splitlines() if ln.strip())


def probe_mode(h2, vm, stateful: bool | str, seq: list[int], timeout: float = 15) -> None:
    """Until a fresh UDP probe from the VM (to 10.201.0.x) is simulated the way
    the mode wants (True: SNAT, False: stateless, or a mode's name); in the
    SG mode, routed as stateless flows with the group in host 2's OVS."""
    mode = stateful if isinstance(stateful, str) else (SNAT if stateful else STATELESS)
    if mode == SG:
        deadline = time.monotonic() + timeout
        while not sg_in_ovs(h2, vm):
            if time.monotonic() > deadline:
                raise BenchError(f"the security group is not in {h2.name}'s OVS (table 4)")
            time.sleep(0.1)
        mode = STATELESS  # what the agent simulates: no state
    deadline = time.monotonic() + timeout
    while True:
        dst = send_probe(vm, seq)
        flows: list[str] = []
        t_wait = time.monotonic() + 2
        while not flows and time.monotonic() < t_wait:
            time.sleep(0.05)
            flows = [f for f in h2.ovs_ofctl("dump-flows", f"table=1,ip,nw_dst={dst}")
                     .splitlines() if "actions=" in f]
        if flows and _shape(flows[0]) == mode and "dec_ttl" in flows[0]:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"the {mode} mode did not "
                             f"take effect on {h2.name}: probe flow "
                             f"{flows[0].strip()[:300] if flows else 'missing'}")
        time.sleep(0.3)


def check_flow_shape(h2, mode: str) -> None:
    mode = STATELESS if mode == SG else mode  # the group is in OVS, not in the flow
    out = h2.ovs_ofctl("dump-flows", BLAST_MATCH)
    f = next((ln for ln in out.splitlines() if "actions=" in ln), None)
    if f is None:
        raise BenchError("no flow for 10.200.0.0/16 in table 1")
    if _shape(f) != mode or "dec_ttl" not in f:
        raise BenchError(f"unexpected flow in the {mode} mode: {f.strip()[:300]}")


def measure(mc, topo, vm, sink, cass, rnd: int, mode: str) -> dict:
    h1, h2 = mc.hosts
    label = mode
    stateful = mode == SNAT  # state pushed and filed (an SG's is in OVS's conntrack)
    zone0 = zone_connections(h2, vm) if mode == SG else 0
    del_sim_flows(h2, "ip,nw_dst=10.200.0.0/16")
    if flow_count(h2, BLAST_MATCH):
        raise BenchError(f"{label}: table 1 still holds flows for 10.200.0.0/16")
    # what the probes of the mode switch made reaches the store before the round
    time.sleep(2 * STATE_FLUSH_SECONDS)
    sink.take()
    pushes0 = state_pushes_received(h1)
    failed0 = log_count(h2, SAVE_FAILED)
    problems0 = agent_problems(h1) + agent_problems(h2)
    cpu0 = [agent_cpu(mc, h) for h in (h1, h2)]
    t_wall = time.time()
    first = rnd * PER_ROUND  # disjoint source ports per round
    cmd = [sys.executable, "-m", "benchmarks.bench_stateful_rate", "blast", "eth0", VM_MAC,
           ROUTER_MAC, VM_IP, str(first), str(PER_ROUND), str(BLAST_SECONDS), str(BLAST_RATE)]
    proc = mc.cloud.popen(vm, cmd, cwd=REPO, text=True)
    t0 = time.monotonic()
    samples = [(0.0, 0)]
    while proc.poll() is None:
        time.sleep(POLL_INTERVAL)
        samples.append((time.monotonic() - t0, flow_count(h2, BLAST_MATCH)))
        if samples[-1][0] > BLAST_SECONDS + 20:
            proc.kill()
            raise BenchError(f"{label}: the blaster did not finish")
    out, err = proc.communicate(timeout=10)
    if proc.returncode != 0:
        raise BenchError(f"{label}: the blaster failed ({proc.returncode}): "
                         f"{(err or out).strip()[-300:]}")
    sent = int(out.strip().splitlines()[-1])
    # Packet-ins already queued (OVS, the socket, os-ken) still become flows: poll
    # until the count has not moved for SETTLE seconds.
    while True:
        time.sleep(POLL_INTERVAL)
        samples.append((time.monotonic() - t0, flow_count(h2, BLAST_MATCH)))
        grew = next(t for t, n in samples if n >= samples[-1][1])
        if samples[-1][0] - grew >= SETTLE:
            break
        if samples[-1][0] > BLAST_SECONDS + 30:
            raise BenchError(f"{label}: the flow count still grows 30 s after the blast")
    final = samples[-1][1]
    if final == 0:
        raise BenchError(f"{label}: no flow was installed ({sent} frames sent); see "
                         f"{h2.rundir}/agent.log")
    elapsed = next(t for t, n in samples if n >= final)
    rate = final / elapsed
    cpu = [agent_cpu(mc, h) - c0 for h, c0 in zip((h1, h2), cpu0, strict=True)]
    check_flow_shape(h2, mode)
    res = {"mode": label, "flows": final, "seconds": round(elapsed, 3), "frames_sent": sent,
           "flows_per_s": round(rate, 1),
           "flows_installed_after_blast_end_s": round(max(0.0, elapsed - BLAST_SECONDS), 2),
           # agent CPU per installed connection (frames dropped in queues included)
           "agent_cpu_us_per_flow": {"vm_host": round(cpu[1] / final * 1e6, 1),
                                     "uplink_host": round(cpu[0] / final * 1e6, 1)}}
    sports = {1024 + (first + i) % 64000 for i in range(PER_ROUND)}
    rows, waited = wait_rows_settled(cass, vm.port_id, t_wall, sports=sports)
    if not stateful and rows["rows"]:
        raise BenchError(f"{label}: {rows['rows']} flow-state rows filed in the stateless mode")
    if stateful:
        # SNAT: one row a connection, its binding's (it says the connection
        # is tracked too: midoflow.agent.flowstate.NAT_TRACKED)
        saves = rows["kinds"].get("nat" if mode == SNAT else "ct", 0)
        span = (rows["last"] - rows["first"]) if saves > 1 else 0.0
        res.update({
            "cassandra_connections_filed": saves,
            "cassandra_ct_rows": rows["kinds"].get("ct", 0),
            "cassandra_filed_per_s": round(saves / span, 1) if span else None,
            # 0: every row was readable when the flow count stopped growing
            "cassandra_rows_still_arriving_after_flows_s": round(waited, 2),
        })
    time.sleep(0.3)
    if mode == SG:
        res["ovs_zone_connections_new"] = zone_connections(h2, vm) - zone0
    res["state_pushes_received"] = state_pushes_received(h1) - pushes0
    res["saves_failed_logged"] = log_count(h2, SAVE_FAILED) - failed0
    res["agent_errors_logged"] = agent_problems(h1) + agent_problems(h2) - problems0
    got = sink.take()
    res["delivered_datagrams"] = got["datagrams"]
    res["delivered_from_public_ip"] = got["from_public"]
    extra = ""
    if mode == SG:
        extra = f", {res['ovs_zone_connections_new']} new connections in the port's OVS zone"
    if stateful:
        extra = (f", {res['state_pushes_received']} state pushes received by {h1.name}, "
                 f"{res['cassandra_connections_filed']} filed in Cassandra "
                 f"({res['saves_failed_logged']} writes failed)")
    log(f"  {label}: {final} flows in {elapsed:.2f} s = {rate:.0f} connections/s "
        f"({sent} frames sent, {got['datagrams']} delivered{extra}); agent CPU per flow "
        f"{res['agent_cpu_us_per_flow']['vm_host']:.0f} us (VM's host), "
        f"{res['agent_cpu_us_per_flow']['uplink_host']:.0f} us (uplink's host)")
    if mode == SNAT and res["delivered_from_public_ip"] < min(final, got["datagrams"]) * 0.9:
        raise BenchError(f"{label}: only {res['delivered_from_public_ip']} of "
                         f"{got['datagrams']} datagrams reached the external host from "
                         f"{PUBLIC}: SNAT did not apply")
    if stateful and abs(res["state_pushes_received"] - final) > 0.02 * final + 5:
        log(f"  note: {res['state_pushes_received']} state pushes for {final} connection "
            f"flows (expected one each)")
    if mode == SG and res["ovs_zone_connections_new"] < 0.9 * min(final, got["datagrams"]):
        raise BenchError(f"{label}: only {res['ovs_zone_connections_new']} connections in "
                         f"the port's conntrack zone for {final} flows: the group did not "
                         f"track them")
    if not stateful and res["state_pushes_received"]:
        raise BenchError(f"{label}: {res['state_pushes_received']} state pushes in the "
                         f"stateless mode")
    return res


def table2_misses(host) -> int:
    """Packets that reached ``host``'s table 2 (a table-1 miss: to the agent)."""
    out = host.ovs_ofctl("dump-flows", "table=2")
    return sum(int(m.group(1)) for ln in out.splitlines() if "CONTROLLER" in ln
               for m in [re.search(r"n_packets=(\d+)", ln)] if m)


EVENTS = ("packet_in", "simulated", "installed_answers", "close_copies", "close_copies_known")


def agent_events(mc, host) -> dict[str, float]:
    """The agent's counters (AgentCore.stats) from its metrics endpoint."""
    import urllib.request

    try:
        with urllib.request.urlopen(mc.metrics_url(host), timeout=5) as r:
            text = r.read().decode()
    except OSError as e:
        raise BenchError(f"cannot read {host.name}'s agent metrics: {e}") from None
    got = dict.fromkeys(EVENTS, 0.0)
    for m in re.finditer(r'^midoflow_agent_events(?:_total)?\{event="(\w+)"\} ([0-9.e+]+)$',
                         text, re.M):
        if m.group(1) in got:
            got[m.group(1)] = float(m.group(2))
    return got


def tcp_round(mc, vm, mode: str, sport: int) -> tuple[dict, int]:
    """Sequential short TCP connections from the VM to the external host's
    server for TCP_SECONDS (connect, one byte each way, the server's FIN
    first: bench_vs_ovn's loop); (figures, the next source port)."""
    h1, h2 = mc.hosts
    cpu0 = [agent_cpu(mc, h) for h in (h1, h2)]
    miss0 = table2_misses(h1) + table2_misses(h2)
    ev0 = [agent_events(mc, h) for h in (h1, h2)]
    p = subprocess.run(
        ["mnexec", "-a", str(vm.pid), sys.executable, "-m", "benchmarks.bench_vs_ovn",
         "connect-loop", TCP_TARGET, str(TCP_PORT), str(TCP_SECONDS), str(sport)],
        cwd=REPO, capture_output=True, text=True, timeout=TCP_SECONDS + 60)
    parts = p.stdout.split()
    if p.returncode != 0 or len(parts) != 4:
        raise BenchError(f"tcp {mode}: the connection loop failed: "
                         f"{(p.stderr or p.stdout).strip()[-300:]}")
    n, err, elapsed, nxt = int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])
    if not n:
        raise BenchError(f"tcp {mode}: no connection completed ({err} failed)")
    cpu = [agent_cpu(mc, h) - c0 for h, c0 in zip((h1, h2), cpu0, strict=True)]
    ev1 = [agent_events(mc, h) for h in (h1, h2)]
    # both agents' counters, per connection: what they simulated, what
    # installed flows answered without a simulation (later packets, close copies)
    per = {k: round(sum(b[k] - a[k] for a, b in zip(ev0, ev1, strict=True)) / n, 2)
           for k in EVENTS}
    res = {"mode": mode, "connections": n, "failed": err, "seconds": round(elapsed, 3),
           "connections_per_s": round(n / elapsed, 1),
           "table_misses_per_connection": round(
               (table2_misses(h1) + table2_misses(h2) - miss0) / n, 2),
           "agent_cpu_us_per_connection": {"vm_host": round(cpu[1] / n * 1e6, 1),
                                           "uplink_host": round(cpu[0] / n * 1e6, 1)},
           "agent_events_per_connection": per}
    log(f"  tcp {mode}: {n} connections in {elapsed:.2f} s = {n / elapsed:.0f}/s ({err} "
        f"failed), {res['table_misses_per_connection']} table misses per connection, agent "
        f"CPU per connection {res['agent_cpu_us_per_connection']['vm_host']:.0f} us (VM's "
        f"host) + {res['agent_cpu_us_per_connection']['uplink_host']:.0f} us (uplink's); "
        f"per connection: {per}")
    return res, nxt


def wait_saved(cass, vm, seq: list[int], what: str, timeout: float = 60) -> None:
    """Until the agent's lazy Cassandra connection is up and flow state lands
    there: a fresh connection every half second (the agent connects to Cassandra
    on first use and, after a failure, drops what it had to file for 5 s)."""
    deadline = time.monotonic() + timeout
    while not cassandra_rows(cass, vm.port_id)["rows"]:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: no flow state reached Cassandra in {timeout:.0f} s "
                             f"(see the agents' logs)")
        send_probe(vm, seq)
        time.sleep(0.5)


def run() -> None:
    from topologies.midocloud import MidoCloud

    cass = None
    mc = None
    rounds: list[dict] = []
    tcp_rounds: list[dict] = []
    try:
        t_start = time.monotonic()
        cass = start_cassandra()
        mc = MidoCloud(n_hosts=2, tunnel="vxlan", progress=log, flow_state=flow_state_spec(cass),
                       agent_options=UNBOUNDED, cassandra_credentials=cass.credentials)
        mc.start()
        h1, h2 = mc.hosts
        topo = NatTopo(mc)
        ext = topo.external(h1)
        vm = topo.vm(h2, "sfvm", VM_IP, VM_MAC)
        sink = Sink(mc.cloud, ext)
        wait_cassandra(cass)
        topo.set_stateful(True)
        wait_ping(vm, EXT, "stateful (SNAT)", timeout=20)
        seq = [0]
        probe_mode(h2, vm, True, seq)
        wait_saved(cass, vm, seq, "warm-up")
        log(f"cloud, Cassandra and SNAT up in {time.monotonic() - t_start:.0f} s: {vm.vm_name} "
            f"({VM_IP}) on {h2.name} -> external host on {h1.name}, SNAT to {PUBLIC}; "
            f"{ROUNDS} round(s) per mode, {BLAST_SECONDS:.0f} s each, {BLAST_RATE:.0f} "
            f"frames/s, {PER_ROUND} distinct 5-tuples per round")
        # TCP first: the UDP rounds leave tens of thousands of flows and
        # connections behind, whose removal and expiry the agents then work on
        if TCP_SECONDS > 0 and SNAT in MODES:
            mc.cloud.popen(ext, [sys.executable, "-m", "benchmarks.bench_vs_ovn", "serve",
                                 str(TCP_PORT)], cwd=REPO, text=True)
            deadline = time.monotonic() + 10
            while f":{TCP_PORT}" not in ext.cmd(f"ss -ltnH 'sport = :{TCP_PORT}'"):
                if time.monotonic() > deadline:
                    raise BenchError(f"the TCP server does not listen on {TCP_PORT}")
                time.sleep(0.05)
            sport = 20000
            for i in range(1, ROUNDS + 1):
                for mode in (SNAT, STATELESS):
                    if topo.mode != mode:
                        topo.set_mode(mode, vm)
                    probe_mode(h2, vm, mode, seq)
                    log(f"TCP round {i}/{ROUNDS}: {mode}")
                    res, sport = tcp_round(mc, vm, mode, sport)
                    tcp_rounds.append(res)
        rnd = 0
        whats = {SNAT: "stateful (conntrack + SNAT + push + Cassandra)",
                 SG: "security group (OVS conntrack at the port's host)",
                 STATELESS: "stateless (routed, chains detached)"}
        for i in range(1, ROUNDS + 1):
            for mode in MODES:
                if topo.mode != mode:
                    topo.set_mode(mode, vm)
                probe_mode(h2, vm, mode, seq)
                log(f"round {i}/{ROUNDS}: {whats[mode]}")
                rounds.append(measure(mc, topo, vm, sink, cass, rnd, mode))
                rnd += 1
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        try:
            if mc is not None:
                mc.stop()
        finally:
            if cass is not None:
                cass.cleanup()
    best = {m: max((r for r in rounds if r["mode"] == m), key=lambda r: r["flows_per_s"])
            for m in MODES}
    sl = best[STATELESS]
    if SNAT in best:
        _report_snat(best[SNAT], sl, rounds)
    if SG in best:
        _report_sg(best[SG], sl, rounds)
    if tcp_rounds:
        _report_tcp(tcp_rounds)


def _report_tcp(rounds: list[dict]) -> None:
    def best(m):
        return max((r for r in rounds if r["mode"] == m), key=lambda r: r["connections_per_s"])

    st, sl = best(SNAT), best(STATELESS)
    report(TCP_NAME, st["connections_per_s"], "connections/s", "stateless_routed_tcp_rate",
           sl["connections_per_s"], extra={
               "method": "sequential short TCP connections (connect, one byte each way, the "
                         "server closes first; bench_vs_ovn's connect-loop, fresh source "
                         "ports) from the VM on host 2 to a server on the external host, "
                         "through the router's SNAT and tracking chains vs with them "
                         "detached; best round of each, rounds alternate; table misses "
                         "(table 2 packets on both hosts) and agents' CPU per connection",
               "rounds": rounds})


def _report_snat(sf: dict, sl: dict, rounds: list[dict]) -> None:
    report(NAME, sf["flows_per_s"], "connections/s", BASELINE, sl["flows_per_s"], extra={
        "method": "two hosts, userspace OVS, VXLAN; a VM on host 2 sends paced IPv4/UDP "
                  "frames, each a new 5-tuple (own source port, own destination in "
                  "10.200.0.0/16 owned by the external host on host 1, reached through "
                  "the provider router's uplink); stateful: router chains track the "
                  "connection (conntrack) and SNAT it (port from a ZooKeeper-leased block), "
                  "the agent pushes the state to host 1 before the packet and files it "
                  "in one Cassandra 5.0 node behind it (buffered per port, written every "
                  "0.5 s or 2048 entries); stateless: the same frames "
                  "with the chains detached (one routed flow per destination). Exact "
                  "flows counted in host 2's table 1; rate = flows / seconds until the "
                  "count stopped growing; best of alternating rounds per mode",
        "frames_per_s_offered": BLAST_RATE,
        "blast_seconds": BLAST_SECONDS,
        "tuples_per_round": PER_ROUND,
        "state_pushes_received": sf["state_pushes_received"],
        "cassandra_connections_filed": sf.get("cassandra_connections_filed"),
        "cassandra_writes_failed_logged": sf["saves_failed_logged"],
        "cassandra_filed_per_s": sf.get("cassandra_filed_per_s"),
        "flows": {"stateful": sf["flows"], "stateless": sl["flows"]},
        "seconds": {"stateful": sf["seconds"], "stateless": sl["seconds"]},
        "rounds": rounds,
    })


def _report_sg(sg: dict, sl: dict, rounds: list[dict]) -> None:
    report(SG_NAME, sg["flows_per_s"], "connections/s", BASELINE, sl["flows_per_s"], extra={
        "method": "as stateful_connection_rate, but the router's chains detached and the "
                  "VM's port in a security group (port security on, egress allowed), "
                  "enforced by host 2's OVS conntrack (sg_conntrack): each new connection "
                  "is one connection in the port's zone (counted), no agent state, push "
                  "or Cassandra row; each frame's own destination still makes a routed "
                  "flow (an agent trip) as in the stateless mode; best round",
        "ovs_zone_connections_new": sg.get("ovs_zone_connections_new"),
        "state_pushes_received": sg["state_pushes_received"],
        "rounds": [r for r in rounds if r["mode"] in (SG, STATELESS)],
    })


# ---- VM and external-host side (stdlib only) -------------------------------------

def _udp_frame(dst_mac: bytes, src_mac: bytes, src_ip: bytes, dst_ip: bytes,
               sport: int) -> bytes:
    udp = struct.pack("!HHHH", sport, SINK_PORT, 8 + 18, 0) + bytes(18)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      src_ip, dst_ip)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return dst_mac + src_mac + b"\x08\x00" + hdr + udp


def _blast(iface: str, src_mac: str, dst_mac: str, src_ip: str, first: int, count: int,
           seconds: float, rate: float) -> int:
    """Frames i = 0..count-1: source port 1024 + (first + i) mod 64000, destination
    10.200.(i >> 8).(i & 255); cycled until ``seconds`` pass, paced at ``rate``."""
    from benchmarks.blaster import BURST

    s_mac = bytes.fromhex(src_mac.replace(":", ""))
    d_mac = bytes.fromhex(dst_mac.replace(":", ""))
    s_ip = socket.inet_aton(src_ip)
    frames = [_udp_frame(d_mac, s_mac, s_ip, bytes([10, 200, (i >> 8) & 0xFF, i & 0xFF]),
                         1024 + (first + i) % 64000) for i in range(count)]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sent = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        for i, f in enumerate(frames):
            try:
                sock.send(f)
                sent += 1
            except OSError:
                time.sleep(0.001)
            if rate and i % BURST == BURST - 1:
                now = time.monotonic()
                if now >= deadline:
                    break
                ahead = start + sent / rate - now
                if ahead > 0:
                    time.sleep(ahead)
    print(sent)
    return 0


def _sink(port: int, public: str) -> int:
    """Count UDP datagrams to ``port``; on each stdin line print (JSON) what came
    since the last one: datagrams, distinct sources, distinct sources at ``public``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    lock = threading.Lock()
    state = {"n": 0, "src": set()}

    def rx() -> None:
        while True:
            _, addr = s.recvfrom(2048)
            with lock:
                state["n"] += 1
                state["src"].add(addr)

    threading.Thread(target=rx, daemon=True).start()
    print("ready", flush=True)
    for _line in sys.stdin:
        time.sleep(0.2)  # what is in flight
        with lock:
            n, src = state["n"], state["src"]
            state["n"], state["src"] = 0, set()
        print(json.dumps({"datagrams": n, "sources": len(src),
                          "from_public": sum(1 for a in src if a[0] == public)}), flush=True)
    return 0


def _vm_main(argv: list[str]) -> int:
    if argv and argv[0] == "blast" and len(argv) == 9:
        a = argv[1:]
        return _blast(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]), float(a[6]), float(a[7]))
    if argv and argv[0] == "sink" and len(argv) == 3:
        return _sink(int(argv[1]), argv[2])
    if not argv:
        return run_main(NAME, run)
    print("usage: python -m benchmarks.bench_stateful_rate [blast IFACE SRC_MAC DST_MAC SRC_IP "
          "FIRST COUNT SECONDS RATE | sink PORT PUBLIC_IP]", file=sys.stderr)
    return 2


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(_vm_main(sys.argv[1:]))
