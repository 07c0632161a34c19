"""Binding latency, two figures (ms, lower is better).

``binding_latency``: from ``ovs-vsctl add-port BR IF -- set Interface IF
external_ids:iface-id=X`` to the moment the agent's side knows the binding
(the interface with its ofport and iface-id), through the OVSDB monitor
(midoflow.apps.ovsdb, notifications) against the agent's old way,
``list_interfaces`` (two ovs-vsctl runs) every second, kept below as it was.
Both watch the same ports being added, in the same run, on a private OVS
(midoflow.devenv.ovs) with a userspace bridge of its own.

``port_reach`` (``--reach``, root: a 3-host MidoCloud): a new port reachable
at once (issue 13, goal 4). A tenant router with two networks; a pinger VM
on host 1 (net 1). Each trial: a VM on host 2 (net 2) is plugged into OVS
*unbound* (no iface-id) and configured; a pinger in the host-1 VM pings its
address every 10 ms; then the clock starts: ``POST /bridges/B/ports`` and
``ovs-vsctl set Interface TAP external_ids:iface-id=PORT`` (create a port on
a routed bridge and bind it). The figure is the time to the pinger's first
reply (a routed reply from the new VM: the router resolves it by ARP on host
1, the binding reaches host 1 by ZooKeeper); the baseline, same trials, is
the time until the port shows active in the store (what the API shows as
bound). A fresh address and MAC per trial, as for a new VM.

    python -m benchmarks.bench_binding [--trials N] [--reach [--reach-trials N]]

``BENCH_QUICK=1``: 8 monitor trials and 5 reach trials (under 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time

import eventlet
from eventlet.green import subprocess

from benchmarks.common import report
from midoflow.apps.ovsdb import OvsdbMonitor
from midoflow.devenv.ovs import PrivateOvs

BR = "br-bench"
POLL_INTERVAL = 1.0  # the old _ovsdb_loop's


# ---- the old way (midoflow.apps.ovsdb before issue 10), kept as the baseline ----
class OvsError(RuntimeError):
    pass


def vsctl(db: str, *args: str, timeout: int = 10) -> str:
    cmd = ["ovs-vsctl", f"--db={db}", f"--timeout={timeout}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OvsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def _cell(v):
    """Decode one OVSDB JSON cell: ["map", [[k, v], ...]] / ["set", [...]] / scalar."""
    if isinstance(v, list) and len(v) == 2 and v[0] == "map":
        return {k: val for k, val in v[1]}
    if isinstance(v, list) and len(v) == 2 and v[0] == "set":
        return [_cell(x) for x in v[1]]
    return v


def list_interfaces(db: str, bridge: str) -> dict[str, tuple[int, str | None]]:
    """The bridge's interfaces: name -> (ofport, external_ids:iface-id)."""
    names = set(vsctl(db, "list-ifaces", bridge).split())
    out = json.loads(vsctl(db, "--format=json", "--columns=name,ofport,external_ids",
                           "list", "Interface"))
    result: dict[str, tuple[int, str | None]] = {}
    for row in out.get("data", []):
        name, ofport, ext = _cell(row[0]), _cell(row[1]), _cell(row[2])
        if name not in names:
            continue
        ofport = ofport if isinstance(ofport, int) else -1
        ext = ext if isinstance(ext, dict) else {}
        result[name] = (ofport, ext.get("iface-id"))
    return result


# ---- the measurement -----------------------------------------------------------------
class Seen:
    """When each binding (iface-id) was first seen with an ofport, by one watcher."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.event = eventlet.Event()

    def saw(self, ifaces: dict) -> None:
        now = time.monotonic()
        for ofport, iface_id in ifaces.values():
            if iface_id and ofport > 0 and iface_id not in self.at:
                self.at[iface_id] = now
                self.event.send(iface_id)
                self.event = eventlet.Event()

    def wait_for(self, iface_id: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while iface_id not in self.at:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"binding {iface_id} not seen within {timeout} s")
            self.event.wait(timeout=left)
        return self.at[iface_id]


def poller(db: str, seen: Seen) -> None:
    while True:
        try:
            seen.saw(list_interfaces(db, BR))
        except OvsError as e:
            print(f"poll: {e}", file=sys.stderr)
        eventlet.sleep(POLL_INTERVAL)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run(trials: int) -> dict:
    with PrivateOvs() as ovs:
        ovs.vsctl("add-br", BR, "--", "set", "Bridge", BR, "datapath_type=netdev")
        monitored, polled = Seen(), Seen()
        mon = OvsdbMonitor(ovs.remote, BR, on_change=monitored.saw)
        threads = [eventlet.spawn(mon.run), eventlet.spawn(poller, ovs.remote, polled)]
        lat_mon: list[float] = []
        lat_poll: list[float] = []
        try:
            for i in range(trials):
                eventlet.sleep(random.uniform(0, POLL_INTERVAL))  # any phase of the poll
                name, vport = f"bp{i}", f"vport-{i}"
                t0 = time.monotonic()
                vsctl(ovs.remote, "add-port", BR, name, "--", "set", "Interface", name,
                      "type=internal", f"external_ids:iface-id={vport}")
                lat_mon.append((monitored.wait_for(vport, 10) - t0) * 1000)
                lat_poll.append((polled.wait_for(vport, 10) - t0) * 1000)
                print(f"  {i + 1}/{trials}: monitor {lat_mon[-1]:.1f} ms, "
                      f"poll {lat_poll[-1]:.1f} ms", file=sys.stderr, flush=True)
                vsctl(ovs.remote, "del-port", BR, name)
        finally:
            mon.stop()
            for t in threads[1:]:
                t.kill()
            threads[0].wait()
    return {"monitor_ms": lat_mon, "poll_ms": lat_poll}


# ---- a new port reachable (--reach) ---------------------------------------------------
def _first_reply_at(out: str) -> float | None:
    """The wall-clock time of the first reply in ``ping -D`` output."""
    for line in out.splitlines():
        if "bytes from" in line and line.startswith("["):
            return float(line[1:line.index("]")])
    return None


def run_reach(trials: int) -> dict:
    from benchmarks.cloudbench import Tenant, quiet_vm, wait_ping
    from topologies.midocloud import MidoCloud

    times: dict[str, list[float]] = {"reply": [], "bound": []}
    with MidoCloud(n_hosts=3, progress=lambda m: print(f"  {m}", file=sys.stderr,
                                                       flush=True)) as mc:
        t = Tenant(mc, "reach")
        h1, h2 = mc.hosts[0], mc.hosts[1]
        pinger = mc.vm(h1, t.b1, "pinger", "192.168.1.10/24", "02:00:00:88:00:10", dhcp=False)
        quiet_vm(pinger)
        pinger.cmd("ip route add default via 192.168.1.1")
        warm = mc.vm(h2, t.b2, "warm", "192.168.2.9/24", "02:00:00:88:00:09", dhcp=False)
        quiet_vm(warm)
        warm.cmd("ip route add default via 192.168.2.1")
        wait_ping(pinger, "192.168.2.9", "warm-up")  # the router, tunnels, ARP all warm
        hid2 = mc.host_ids[h2.name]
        for i in range(trials):
            ip, mac = f"192.168.2.{20 + i}", f"02:00:00:88:01:{i:02x}"
            vm = mc.cloud.add_vm(h2, f"new{i}", f"{ip}/24", mac)  # plugged, not bound
            quiet_vm(vm)
            vm.cmd("ip route add default via 192.168.2.1")
            proc = mc.cloud.popen(pinger, ["ping", "-n", "-D", "-i", "0.01", "-c", "1",
                                           "-w", "10", ip], text=True)
            time.sleep(0.05)  # the pinger runs (its first requests go nowhere yet)
            bound: list[float] = []

            def watch_bound(pid_box: list[str], bound: list[float]) -> None:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if pid_box and mc.port_host(pid_box[0]) == hid2:
                        bound.append(time.time())
                        return
                    time.sleep(0.005)
            box: list[str] = []
            watcher = threading.Thread(target=watch_bound, args=(box, bound))
            watcher.start()
            t0 = time.time()
            box.append(mc.port(t.b2, f"new{i}"))
            h2.ovs_vsctl("set", "Interface", vm.tap, f"external_ids:iface-id={box[0]}")
            out, _err = proc.communicate(timeout=15)
            watcher.join()
            at = _first_reply_at(out)
            if at is None or not bound:
                raise RuntimeError(f"trial {i + 1}: no reply from {ip} within 10 s"
                                   if at is None else f"trial {i + 1}: port never active")
            times["reply"].append((at - t0) * 1000)
            times["bound"].append((bound[0] - t0) * 1000)
            print(f"  {i + 1}/{trials}: first routed reply {times['reply'][-1]:.1f} ms, "
                  f"port active {times['bound'][-1]:.1f} ms", file=sys.stderr, flush=True)
            mc.cloud.remove_vm(vm)
    return times


def main_reach(trials: int) -> dict:
    r = run_reach(trials)
    reply, bound = r["reply"], r["bound"]
    extra = {"trials": trials,
             "first_reply_ms": [round(x, 1) for x in reply],
             "active_ms": [round(x, 1) for x in bound],
             "first_reply_p95_ms": round(pct(reply, 0.95), 1),
             "goal_ms": 70,
             "path": "POST /bridges/B/ports + ovs-vsctl set Interface external_ids:iface-id "
                     "on host 2 -> first reply to a 10 ms pinger on host 1 through the router"}
    return report("port_reach", statistics.median(reply), "ms",
                  "port active in the store (API shows it bound)", statistics.median(bound),
                  higher_is_better=False, extra=extra)


def main(argv: list[str] | None = None) -> dict:
    quick = bool(os.environ.get("BENCH_QUICK"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8 if quick else 20)
    ap.add_argument("--reach", action="store_true",
                    help="measure a new port's reachability on a 3-host cloud (root)")
    ap.add_argument("--reach-trials", type=int, default=5 if quick else 9)
    args = ap.parse_args(argv)
    if args.reach:
        return main_reach(args.reach_trials)
    print(f"bench_binding: {args.trials} ports, each watched by the OVSDB monitor and "
          f"by 1 s polling", file=sys.stderr)
    r = run(args.trials)
    mon, poll = r["monitor_ms"], r["poll_ms"]
    extra = {
        "trials": args.trials,
        "monitor": {"median_ms": round(statistics.median(mon), 2),
                    "p95_ms": round(pct(mon, 0.95), 2), "max_ms": round(max(mon), 2)},
        "poll_1s": {"median_ms": round(statistics.median(poll), 2),
                    "p95_ms": round(pct(poll, 0.95), 2), "max_ms": round(max(poll), 2)},
        "speedup_median": round(statistics.median(poll) / statistics.median(mon), 1),
        "speedup_p95": round(pct(poll, 0.95) / pct(mon, 0.95), 1),
    }
    return report("binding_latency", statistics.median(mon), "ms",
                  "ovs-vsctl polling every 1 s (the old agent)", statistics.median(poll),
                  higher_is_better=False, extra=extra)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
