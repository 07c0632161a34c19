"""Convergence of a routing change: from the REST call to the change being in
effect in every host's OVS, against the time ZooKeeper takes to tell a
watcher about the same change, same run.

Three cloud hosts, one tenant router with 192.168.1.0/24 and 192.168.2.0/24.
The destination VM ``b`` (192.168.2.20) is on host 2; three senders on
192.168.1.0/24, one per host (``a`` on host 1, ``d`` on host 2, ``c`` on host
3), each ping ``b`` every 10 ms, so every host's table 1 holds a live routed
flow toward 192.168.2.20. Then, ``CHANGES`` times each way, alternately:

* add a blackhole route 192.168.2.20/32 (POST /routers/{id}/routes);
* delete it again (DELETE /routes/{id}).

How it is observed: one ``ovs-ofctl monitor`` per host (an OpenFlow flow
monitor on table 1, flows toward 192.168.2.20) streams every flow added and
deleted as it happens; each event is timestamped when it arrives. No polling
loop (three pollers spawning ovs-ofctl back to back would take a core of this
2-core machine away from the agents being measured). After each change a
``dump-flows`` on every host double-checks what the monitors concluded.

What is timed, from just before the REST call is sent:

* ``in_effect`` (the headline, both directions): until no host's table 1
  holds any of the flows toward 192.168.2.20 that existed before the change
  (forwarding flows after an add, drop flows after a delete). From then on
  the next packet on every host is simulated under the new routing table:
  the change is enforced everywhere.
* ``new_flows_in_place`` (extra): until, in addition, every host holds a flow
  computed after the change (a drop flow after the add; a forwarding flow,
  i.e. traffic back, after the delete). This includes waiting for the next
  ping (up to 10 ms) and its simulation.

Baseline, ``zk_watch_notification``: for the same changes, the time from
the REST call being sent until a ZooKeeper watcher in its own session (one
more, like each agent's, in this process) is notified that the route
appeared or disappeared. No agent can learn of a change earlier: it is the
store's floor, and the ratio says what the agents add on top (fetching the
new route, invalidating by tag, OpenFlow deletes, OVS). A no-op REST round
trip (GET /routers/{id}) is reported in extra for scale.

Run: ``.venv/bin/python -m benchmarks.bench_l3_convergence`` (root). Knobs
(env): L3_CONV_CHANGES (route adds, each followed by its delete; >= 30).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time

from benchmarks.cloudbench import (
    BenchError,
    Tenant,
    logger,
    parallel,
    routed_vm,
    run_main,
    summary,
    wait_ping,
)
from benchmarks.common import report

NAME = "l3_convergence"
CHANGES = max(int(os.environ.get("L3_CONV_CHANGES", "30")), 1)
DST = "192.168.2.20"
WATCH = f"ip,nw_dst={DST}"
PING_INTERVAL = 0.01
TIMEOUT = 10.0  # seconds a change may take before the run fails
AGENT_COOKIE_TOP = 0x4D  # the agent's simulated flows (FlowIndex.COOKIE_BASE)
_EVENT = re.compile(r"\bevent=(ADDED|DELETED|MODIFIED)\b.*?\bcookie=(0x[0-9a-f]+|0)\s+(\S+)")

log = logger(NAME)


class FlowWatch:
    """``ovs-ofctl monitor`` of one host's table-1 flows toward ``dst`` (DST
    unless told: ``FlowWatch(host, "198.51.100.100")``).

    ``flows``: match -> (cookie, "forward" | "drop"), kept from the monitor's
    initial dump and its events (ovs-ofctl prints the initial reply on stdout
    and later updates on stderr: both are read from one pipe). Predicates
    armed with :meth:`arm` are evaluated after every event; the arrival time
    of the event that first made one true is recorded."""

    def __init__(self, host, dst: str = DST) -> None:
        self.host = host
        self.dst = dst
        self.match = f"ip,nw_dst={dst}"
        self.flows: dict[str, tuple[int, str]] = {}
        self.cond = threading.Condition()
        self.preds: dict[str, object] = {}
        self.hits: dict[str, float] = {}
        self.ready = False
        self.tail: list[str] = []  # the monitor's last lines, for errors
        self.proc = subprocess.Popen(
            ["ovs-ofctl", "-O", "OpenFlow13", "monitor", host.mgmt_sock,
             f"watch:table=1,{self.match}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, bufsize=1,
            # its control socket goes to OVS_RUNDIR: the host's, not the system's
            env={**os.environ, "OVS_RUNDIR": host.rundir})
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            with self.cond:
                self.tail = [*self.tail[-9:], line.rstrip()]
                if "_FLOW_MONITOR reply" in line:
                    self.ready = True
                m = _EVENT.search(line)
                if m:
                    ev, cookie, match = m.group(1), int(m.group(2), 16), m.group(3)
                    if cookie >> 56 == AGENT_COOKIE_TOP:
                        if ev == "DELETED":
                            self.flows.pop(match, None)
                        else:
                            kind = "forward" if re.search(r"\boutput:", line) else "drop"
                            self.flows[match] = (cookie, kind)
                self._check(now)
                self.cond.notify_all()

    def _check(self, now: float) -> None:
        for name, pred in self.preds.items():
            if name not in self.hits and pred(self.flows):
                self.hits[name] = now

    def snapshot(self) -> set[tuple[str, int]]:
        with self.cond:
            return {(m, c) for m, (c, _k) in self.flows.items()}

    def kinds(self) -> list[str]:
        with self.cond:
            return [k for _c, k in self.flows.values()]

    def arm(self, preds: dict) -> None:
        with self.cond:
            self.preds, self.hits = dict(preds), {}
            self._check(time.monotonic())

    def wait(self, names, deadline: float) -> bool:
        with self.cond:
            while not all(n in self.hits for n in names):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self.cond.wait(min(left, 0.5))
            return True

    def wait_until(self, pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.flows):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise BenchError(f"{self.host.name}: {what} (flows toward {self.dst}: "
                                     f"{sorted(k for _c, k in self.flows.values())})")
                self.cond.wait(min(left, 0.5))

    def dead(self) -> str:
        """Why the monitor is gone ("" while it runs)."""
        if self.proc.poll() is None:
            return ""
        return (f"ovs-ofctl monitor on {self.host.name} exited ({self.proc.returncode}): "
                f"{' | '.join(self.tail[-3:])}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


def dumped_cookies(host, match: str = WATCH) -> set[int]:
    """Cookies of the agent's flows toward DST (or ``match``) in the host's table 1,
    by dump-flows."""
    out = host.ovs_ofctl("dump-flows", f"table=1,{match}")
    cookies = {int(c, 16) for c in re.findall(r"\bcookie=(0x[0-9a-f]+|0),", out)}
    return {c for c in cookies if c >> 56 == AGENT_COOKIE_TOP}


def timed_change(watches, change, new_kind: str, label: str) -> dict:
    """Make ``change()`` (a REST call, or any change) and time it on every host's
    monitor (each watching its own ``dst``)."""
    old = {w: w.snapshot() for w in watches}
    for w in watches:
        if not old[w]:
            raise BenchError(f"{label}: {w.host.name} holds no flow toward {w.dst} before the "
                             "change (is the traffic running?)")

    def stale_gone(w):
        return lambda flows: not ({(m, c) for m, (c, _k) in flows.items()} & old[w])

    def in_place(w):
        gone = stale_gone(w)
        return lambda flows: gone(flows) and any(k == new_kind for _c, k in flows.values())

    for w in watches:
        w.arm({"in_effect": stale_gone(w), "in_place": in_place(w)})
    t0 = time.monotonic()
    result = change()
    t_rest = time.monotonic()
    deadline = t_rest + TIMEOUT
    for w in watches:
        if not w.wait(("in_effect", "in_place"), deadline):
            if w.dead():
                raise BenchError(f"{label}: {w.dead()}")
            left = sorted(m for m, _c in w.snapshot() & old[w])
            raise BenchError(f"{label}: not in effect on {w.host.name} after {TIMEOUT:.0f} s "
                             f"(stale flows left: {left[:3]}, flow kinds now: {w.kinds()}); "
                             f"see {w.host.rundir}/agent.log")
    # Double-check the monitors against the tables themselves.
    for w, cookies in zip(watches,
                          parallel(lambda w: dumped_cookies(w.host, w.match), watches),
                          strict=True):
        stale = cookies & {c for _m, c in old[w]}
        if stale:
            raise BenchError(f"{label}: dump-flows on {w.host.name} still shows flow(s) the "
                             f"flow monitor saw deleted (cookies {sorted(map(hex, stale))})")
    return {"result": result, "t0": t0,
            "rest_ms": (t_rest - t0) * 1e3,
            "in_effect_ms": max(w.hits["in_effect"] for w in watches) * 1e3 - t0 * 1e3,
            "in_place_ms": max(w.hits["in_place"] for w in watches) * 1e3 - t0 * 1e3}


class ZkWatch:
    """A ZooKeeper session of its own watching the routes (as an agent does):
    the arrival time of every change of the set of route ids."""

    def __init__(self, zk_spec: str, auth=None) -> None:
        from midoflow.model import ROUTES
        from midoflow.store.zookeeper import ZkStore

        self.events: list[tuple[float, frozenset[str]]] = []
        self.lock = threading.Lock()
        self.store = ZkStore(zk_spec, auth=auth)
        self.store.watch_kind(ROUTES, self._cb)

    def _cb(self, ids) -> None:
        now = time.monotonic()
        with self.lock:
            self.events.append((now, frozenset(ids)))

    def first(self, t0: float, pred, timeout: float = TIMEOUT) -> float:
        """ms from t0 to the first notification after t0 whose ids satisfy pred."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for t, ids in self.events:
                    if t >= t0 and pred(ids):
                        return (t - t0) * 1e3
            time.sleep(0.005)
        raise BenchError(f"no ZooKeeper watch notification of the route change in {timeout:.0f} s")

    def close(self) -> None:
        self.store.close()


def run() -> None:
    from topologies.midocloud import MidoCloud

    mc = MidoCloud(n_hosts=3, tunnel="vxlan", progress=log)
    watches: list[FlowWatch] = []
    zkw: ZkWatch | None = None
    res: dict[str, list[float]] = {k: [] for k in (
        "add_in_effect", "del_in_effect", "add_in_place", "del_in_place", "add_rest",
        "del_rest", "add_zk", "del_zk", "rest_noop")}
    try:
        t_start = time.monotonic()
        mc.start()
        h1, h2, h3 = mc.hosts
        ten = Tenant(mc, "conv")
        routed_vm(mc, ten, h2, ten.b2, "cvb", f"{DST}/24", "02:00:00:02:00:14")
        senders = [routed_vm(mc, ten, h, ten.b1, name, f"192.168.1.{n}/24",
                             f"02:00:00:01:00:{n:02x}")
                   for h, name, n in ((h1, "cva", 10), (h2, "cvd", 40), (h3, "cvc", 30))]
        for vm in senders:
            wait_ping(vm, DST, "before the pings")
        for vm in senders:
            mc.cloud.popen(vm, ["ping", "-q", "-n", "-i", str(PING_INTERVAL), DST],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watches = [FlowWatch(h) for h in mc.hosts]
        zkw = ZkWatch(mc.zk_spec, auth=mc.zk_auth)
        for w in watches:
            w.wait_until(lambda flows: any(k == "forward" for _c, k in flows.values()), 15,
                         "no forwarding flow toward the destination while pinging it")
        log(f"3 senders (one per host) ping {DST} every {PING_INTERVAL * 1e3:.0f} ms; every "
            f"host has its routed flow; {CHANGES} blackhole route add/delete pairs")
        get_router = f"/routers/{ten.router}"
        t0 = time.monotonic()
        for i in range(1, CHANGES + 1):
            r = timed_change(watches, lambda: mc.route(ten.router, f"{DST}/32",
                                                       type="blackhole"), "drop", "add")
            rid = r["result"]
            res["add_in_effect"].append(r["in_effect_ms"])
            res["add_in_place"].append(r["in_place_ms"])
            res["add_rest"].append(r["rest_ms"])
            res["add_zk"].append(zkw.first(r["t0"], lambda ids, rid=rid: rid in ids))
            time.sleep(random.uniform(0.02, 0.1))
            r = timed_change(watches, lambda rid=rid: mc.api.request("DELETE", f"/routes/{rid}"),
                             "forward", "delete")
            res["del_in_effect"].append(r["in_effect_ms"])
            res["del_in_place"].append(r["in_place_ms"])
            res["del_rest"].append(r["rest_ms"])
            res["del_zk"].append(zkw.first(r["t0"], lambda ids, rid=rid: rid not in ids))
            t = time.monotonic()
            mc.api.request("GET", get_router)
            res["rest_noop"].append((time.monotonic() - t) * 1e3)
            time.sleep(random.uniform(0.02, 0.1))
            if i % 10 == 0 or i == CHANGES:
                eff = summary(res["add_in_effect"] + res["del_in_effect"])
                zk = summary(res["add_zk"] + res["del_zk"])
                log(f"  {i}/{CHANGES} add/delete pairs: in effect on every host, median "
                    f"{eff['median']:.1f} ms (ZooKeeper watch notified: {zk['median']:.1f} ms), "
                    f"{time.monotonic() - t0:.0f} s")
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        if zkw is not None:
            try:
                zkw.close()
            except Exception:  # noqa: BLE001 - the cloud still has to go
                pass
        for w in watches:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - the cloud still has to go
                pass
        mc.stop()

    s = {k: summary(v, digits=2) for k, v in res.items()}
    eff = summary(res["add_in_effect"] + res["del_in_effect"], digits=2)
    base = summary(res["add_zk"] + res["del_zk"], digits=2)
    place = summary(res["add_in_place"] + res["del_in_place"], digits=2)
    report(NAME, eff["median"], "ms", "zk_watch_notification", base["median"],
           higher_is_better=False, extra={
               "method": "3 hosts, a virtual router, one sender VM per host pinging a VM on "
                         "host 2 every 10 ms; a blackhole route for it added then deleted "
                         f"{CHANGES} times each via REST; time from the REST call being sent "
                         "until no host's table 1 holds a flow toward it from before the "
                         "change, seen by an OpenFlow flow monitor (ovs-ofctl monitor) per "
                         "host; baseline: the time until a ZooKeeper watcher in its own "
                         "session (like each agent's) is notified of the same change",
               "p99_ms": eff["p99"],
               "p90_ms": eff["p90"],
               "baseline_p99_ms": base["p99"],
               "changes": {"adds": CHANGES, "deletes": CHANGES},
               "in_effect_ms": eff,
               "add_in_effect_ms": s["add_in_effect"],
               "delete_in_effect_ms": s["del_in_effect"],
               "new_flows_in_place_ms": place,
               "add_drop_flows_in_place_ms": s["add_in_place"],
               "delete_traffic_back_ms": s["del_in_place"],
               "rest_call_ms": {"add": s["add_rest"], "delete": s["del_rest"]},
               "rest_noop_get_router_ms": s["rest_noop"],
               "zk_watch_notification_ms": {"all": base, "add": s["add_zk"],
                                            "delete": s["del_zk"]},
               "ping_interval_ms": PING_INTERVAL * 1e3,
           })


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
