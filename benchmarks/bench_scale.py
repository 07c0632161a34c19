"""Scale (issue 13, goal 8): one real agent (midoflow-agent under osken-manager,
its own OVS) on a synthetic cloud of 100 hosts, 10,000 VM ports, 1,000 routers
and 2,000 security groups in ZooKeeper (benchmarks.scale_topology), with the
other 99 hosts' agents simulated (a kazoo session each, writing their state).

Measured, for the full topology and, as the baseline in the same run, for the
same agent on one ten times smaller (the scaling ratio):

* topology load: the agent cache's own figure (``topology loaded in X s``,
  from the first read to every kind, table and activation in) and the time
  from starting the process to that line (Python start, OVS and ZooKeeper
  connection included); goal <= 5 s;
* RSS of the agent process after the load (/proc/PID/status VmRSS); goal
  <= 200 MB;
* a port change reaching the agent's flows: a flow of a local VM port is
  installed (a packet-out through table 0, as the VM's packet), the port is
  changed through the store (its name), and the time to OVS reporting the
  flow deleted (``ovs-ofctl monitor``) is taken; median of N; goal <= 50 ms;
* ZooKeeper's write load from the 99 simulated agents: their start (writes,
  writes/s), ARP refreshes at the agents' rate, and ``mntr`` (znodes, data
  size, ephemerals, watches).

    python -m benchmarks.bench_scale            # full scale (several minutes)
    MIDOFLOW_BENCH_QUICK=1 python -m benchmarks.bench_scale   # 1/5 scale, < 2 min
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import scale_topology as st
from benchmarks.common import report
from midoflow import model
from midoflow.devenv.ovs import PrivateOvs
from midoflow.devenv.zookeeper import ZooKeeperServer
from midoflow.store import paths
from midoflow.store.base import Update
from midoflow.store.zookeeper import ZkStore
from topologies.lifecycle import wait_for

QUICK = bool(os.environ.get("MIDOFLOW_BENCH_QUICK"))
LOCAL = "scale-local-host"
GOALS = {"rss_mb": 200, "load_s": 5.0, "port_change_ms": 50}


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0



class FlowMonitor:
    """``ovs-ofctl monitor BR watch:`` in the background: each flow event with
    the time it was read."""

    def __init__(self, ovs: PrivateOvs, bridge: str) -> None:
        self.events: queue.Queue[tuple[float, str]] = queue.Queue()
        mgmt = f"unix:{ovs.rundir}/{bridge}.mgmt"
        self.proc = subprocess.Popen(
            ["ovs-ofctl", "-O", "OpenFlow13", "monitor", mgmt, "watch:!initial"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ovs._env())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put((time.monotonic(), line.strip()))

    def wait(self, what: str, pattern: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        seen: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no flow event matching {pattern!r} ({what}) in {timeout} s;"
                                   f" the last events: {seen[-6:]}")
            try:
                at, line = self.events.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(line)
            if rx.search(line):
                return at

    def drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int) -> str:
    """A UDP/IPv4 frame as hex (checksum-less UDP)."""
    import struct

    def ip4(a: str) -> bytes:
        return bytes(int(x) for x in a.split("."))

    payload = b"scale"
    udp = struct.pack("!HHHH", sport, 9999, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      ip4(src_ip), ip4(dst_ip))
    s = sum(struct.unpack("!10H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) \
        + b"\x08\x00"
    return (eth + hdr + udp).hex()


def run_one(zk: ZooKeeperServer, scale: st.Scale, label: str, trials: int,
            refresh_s: float) -> dict:
    chroot = f"/{label}"
    hosts = zk.hosts + chroot
    progress(f"[{label}] building {scale}")
    m = st.build(scale, LOCAL)
    counts = st.count(m)
    store = ZkStore(hosts)
    agents: st.SimulatedAgents | None = None
    agent: subprocess.Popen | None = None
    monitor: FlowMonitor | None = None
    workdir = tempfile.mkdtemp(prefix=f"mfl-scale-{label}-")
    ovs = PrivateOvs(os.path.join(workdir, "ovs"))
    os.makedirs(ovs.rundir)
    out: dict = {"objects": counts}
    try:
        out["write"] = st.write(store, m, progress)
        before = st.mntr(zk.client_port)
        agents = st.SimulatedAgents(hosts, m, LOCAL)
        out["sim_agents_start"] = agents.start()
        progress(f"[{label}] simulated agents: {out['sim_agents_start']}")
        out["sim_agents_refresh"] = agents.refresh(refresh_s)
        after = st.mntr(zk.client_port)
        out["zk_packets_received_by_agents"] = \
            after.get("zk_packets_received", 0) - before.get("zk_packets_received", 0)

        ovs.start()
        of_sock = os.path.join(ovs.rundir, "of.sock")  # OVS connects only in its rundir
        ovs.vsctl("--", "add-br", "br-int", "--", "set", "Bridge", "br-int",
                  "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
                  "other_config:disable-in-band=true",
                  "--", "add-port", "br-int", "vxlan0", "--", "set", "Interface", "vxlan0",
                  "type=vxlan", "options:remote_ip=flow", "options:key=flow",
                  "--", "--id=@c", "create", "Controller", f'target="unix:{of_sock}"',
                  "max_backoff=1000", "--", "set", "Bridge", "br-int", "controller=@c")
        cfg = os.path.join(workdir, "agent.ini")
        Path(cfg).write_text(
            "[agent]\n" + "".join(f"{k} = {v}\n" for k, v in {
                "host_id": LOCAL, "host_name": "scale-local", "zookeeper": hosts,
                "ovsdb": ovs.remote, "tunnel_ip": "10.100.0.1", "bridge": "br-int",
                "of_listen": of_sock}.items()))
        log = os.path.join(workdir, "agent.log")
        exe = os.path.join(os.path.dirname(sys.executable), "midoflow-agent")
        t_start = time.monotonic()
        with open(log, "ab") as f:
            agent = subprocess.Popen([exe, "--config", cfg], stdout=f, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        line = wait_for(lambda: re.search(r"topology loaded in ([\d.]+) s.*",
                                          Path(log).read_text(errors="replace")),
                        300, f"the agent to load the topology (log: {log})", 0.01)
        out["start_to_loaded_s"] = round(time.monotonic() - t_start, 3)
        out["load_s"] = float(line.group(1))
        out["load_line"] = line.group(0)
        progress(f"[{label}] {line.group(0)}; {out['start_to_loaded_s']} s from start")
        # The local VM port: bound by host + interface name, as Nova plugs it.
        local = next(p for p in m[model.PORTS].values()
                     if p.get("host_id") == LOCAL and p["type"] == model.PORT_EXTERIOR)
        peer = next(p for p in m[model.PORTS].values() if p["device_id"] == local["device_id"]
                    and p["type"] == model.PORT_EXTERIOR and p.get("host_id") != LOCAL)
        monitor = FlowMonitor(ovs, "br-int")
        time.sleep(0.3)  # the monitor's connection (it only reports what follows)
        ovs.vsctl("add-port", "br-int", local["interface_name"], "--", "set", "Interface",
                  local["interface_name"], "type=internal",
                  f"external_ids:iface-id={local['id']}")
        ofport = int(ovs.vsctl("get", "Interface", local["interface_name"], "ofport").strip())
        wait_for(lambda: (store.get_state(paths.port_active(local["id"])) or {}).get("host_id")
                 == LOCAL, 30, "the local port to be active")
        monitor.wait("the port's packets to reach the agent",
                     rf"event=ADDED.*in_port={ofport}\b.*CONTROLLER", timeout=60)
        out["rss_mb"] = round(rss_kb(agent.pid) / 1024, 1)
        mgmt = f"unix:{ovs.rundir}/br-int.mgmt"
        pkt = frame(local["mac"], peer["mac"], local["fixed_ips"][0], peer["fixed_ips"][0],
                    40000)
        lat = []
        for i in range(trials):
            monitor.drain()
            subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "packet-out", mgmt,
                            f"in_port={ofport} packet={pkt} actions=table"],
                           check=True, env=ovs._env(), capture_output=True)
            try:
                monitor.wait("the VM's flow installed", r"event=ADDED.*table=\d+.*dl_dst="
                             f"{peer['mac']}|event=ADDED.*nw_dst={peer['fixed_ips'][0]}")
            except TimeoutError:
                progress(ovs._run("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", mgmt))
                raise
            data, version = store.get(model.PORTS, local["id"])
            data = dict(data, name=f"vm-renamed-{i}")
            monitor.drain()
            t0 = time.monotonic()
            store.commit([Update(model.PORTS, data, version)])
            # its own flow: not a security-group flow of the port (tables 4/5)
            t1 = monitor.wait("the VM's flow removed", r"event=DELETED.*(dl_dst="
                              f"{peer['mac']}|nw_dst={peer['fixed_ips'][0]})")
            lat.append((t1 - t0) * 1000)
        out["port_change_ms"] = [round(x, 2) for x in lat]
        out["port_change_median_ms"] = round(statistics.median(lat), 2)
        out["rss_after_trials_mb"] = round(rss_kb(agent.pid) / 1024, 1)
        z = st.mntr(zk.client_port)
        out["zk"] = {k: z.get(f"zk_{k}") for k in (
            "znode_count", "approximate_data_size", "ephemerals_count", "watch_count",
            "num_alive_connections", "avg_latency", "max_latency")}
        progress(f"[{label}] rss {out['rss_mb']} MB, port change median "
                 f"{out['port_change_median_ms']} ms, zk {out['zk']}")
        return out
    finally:
        if monitor is not None:
            monitor.stop()
        if agent is not None:
            with contextlib.suppress(OSError):
                os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        if agents is not None:
            agents.stop()
        ovs.stop()
        store.close()
        if not os.environ.get("MIDOFLOW_KEEP_RUNDIR"):
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    full = st.FULL.smaller(5) if QUICK else st.FULL
    small = full.smaller(10)
    trials = 5 if QUICK else 20
    refresh_s = 3.0 if QUICK else 10.0
    with ZooKeeperServer(heap="1g") as zk:
        zk.start()
        base = run_one(zk, small, "small", trials, refresh_s)
        big = run_one(zk, full, "full", trials, refresh_s)
    extra = {"quick": QUICK, "goals": GOALS, "full_scale": vars(full) | {},
             "baseline_scale": vars(small) | {}, "full": big, "baseline": base}
    report("scale_topology_load", big["load_s"], "s", "same agent, 10x smaller topology",
           base["load_s"], higher_is_better=False, extra=extra)
    report("scale_agent_rss", big["rss_mb"], "MB", "same agent, 10x smaller topology",
           base["rss_mb"], higher_is_better=False, extra={"quick": QUICK, "goal": 200})
    report("scale_port_change", big["port_change_median_ms"], "ms",
           "same agent, 10x smaller topology", base["port_change_median_ms"],
           higher_is_better=False, extra={"quick": QUICK, "goal": 50,
                                          "samples": big["port_change_ms"]})
    w = big["sim_agents_refresh"]
    for what, key, unit in (("topology load", "load_s", "s"), ("agent RSS", "rss_mb", "MB"),
                            ("port change -> flow", "port_change_median_ms", "ms")):
        goal = GOALS[key.replace("_median", "")]
        print(f"goal 8, {what}: {big[key]} {unit} (goal <= {goal} {unit}: "
              f"{'met' if big[key] <= goal else 'MISSED'}); 10x smaller topology, same run: "
              f"{base[key]} {unit}", flush=True)
    report("scale_zk_agent_writes", w["writes_per_s"], "writes/s",
           "10x fewer simulated agents and ports", base["sim_agents_refresh"]["writes_per_s"],
           higher_is_better=False, extra={"quick": QUICK, "start": big["sim_agents_start"],
                                          "zk": big["zk"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
