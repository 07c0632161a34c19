"""Binding latency (ms, lower is better): from ``ovs-vsctl add-port BR IF --
set Interface IF external_ids:iface-id=X`` to the moment the agent's side
knows the binding (the interface with its ofport and iface-id), through the
OVSDB monitor (midoflow.apps.ovsdb, notifications) against the agent's old
way, ``list_interfaces`` (two ovs-vsctl runs) every second, kept below as
it was. Both watch the same ports being added, in the same run, on a private
OVS (midoflow.devenv.ovs) with a userspace bridge of its own.

    python -m benchmarks.bench_binding [--trials N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args(argv)
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
