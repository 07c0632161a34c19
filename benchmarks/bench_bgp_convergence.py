"""Convergence of a learned route change: from the command on the border
routers to the change being in effect in every host's OVS, against the same
route change made through the REST API (a static route), same run, same
observers.

One gateway lab (``topologies.gateways.GatewayLab``: 3 hosts, two FRR
border routers, keepalive 1 / hold 3), plus a VM on h2 and one on h3 next to
vm1 on h1 (10.0.0.0/24, default route via the provider router 10.0.0.254).
Each VM sends a UDP datagram to the internet host 198.51.100.100 every
10 ms (SNAT, one connection each; a sink counts them there), so every host's
table 1 holds a routed flow toward 198.51.100.100, through the learned
default routes. (Pings would not do: an ICMP echo through NAT never gets a
flow, the agent rewrites its identifier itself, packet by packet.)

The change, ``CHANGES`` times each way, alternating between the two paths:

* BGP: both border routers originate 198.51.100.0/25 (``FrrRouter.
  add_network``: ``network 198.51.100.0/25`` in ``router bgp``; their config
  has ``no bgp network import-check``, so no RIB entry is needed), both
  gateways' speakers learn it and write it to the store (ephemeral learned
  routes): the provider router gets a more specific route via both uplinks.
  Then both stop originating it (``remove_network``): withdrawn. The two
  vtysh commands run in parallel, like one upstream change.
* API (baseline): ``POST /routers/{id}/routes`` {198.51.100.0/25 via uplink1,
  gateway 192.0.2.2}, then ``DELETE /routes/{id}``.

Each change invalidates the routed flows on every host. Observed as in
``bench_l3_convergence`` (its ``FlowWatch`` and ``timed_change``): one
``ovs-ofctl monitor`` per host on its table-1 flows toward 198.51.100.100,
every event timestamped on arrival. Timed from just before the command:

* ``in_effect`` (the figure): until no host holds any of the flows toward
  198.51.100.100 that existed before the change;
* ``new_flows_in_place``: until, in addition, every host holds a flow
  computed after it (the next datagram, up to 10 ms later, simulated);
* the split, from a ZooKeeper watcher in a session of its own (like an
  agent's): command -> the change in the store (BGP: the first and the last
  of the learned /25 entries written or removed, ``learned_routes`` of the
  provider router; API: the route appearing or disappearing), and store
  (first entry) -> flows gone.

Where the BGP path's time goes (one look with tcpdump on a border router's
uplink and the learned entry's ZooKeeper ctime): the vtysh command itself
(a process started in the border router's namespace) takes 45 to 80 ms; the
UPDATE leaves about 50 ms after it returns (bgpd's route-processing work
queue holds for 50 ms); the gateway's entry is in ZooKeeper about 5 ms after
the UPDATE is on the wire.

Figure: median ``in_effect`` of the BGP changes (announce and withdraw);
baseline: median ``in_effect`` of the API changes; ratio = what the BGP path
(vtysh and bgpd, the session, the os-ken speaker, the ephemeral write) adds
to a change made in the store directly (lower is better).

Run: ``.venv/bin/python -m benchmarks.bench_bgp_convergence`` (root). Knobs
(env): BGP_CONV_CHANGES (announce/withdraw pairs per path, 10 by default).
The VM side of this module (``send IP PORT INTERVAL``) runs as ``python -m
benchmarks.bench_bgp_convergence send ...`` inside the VMs.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

from benchmarks.cloudbench import (
    REPO,
    BenchError,
    logger,
    parallel,
    percentile,
    quiet_vm,
    run_main,
    summary,
)
from benchmarks.common import report

NAME = "bgp_convergence"
CHANGES = max(int(os.environ.get("BGP_CONV_CHANGES", "10")), 1)
PREFIX = "198.51.100.0/25"
DST = "198.51.100.100"  # topologies.gateways.INTERNET_IP
UDP_PORT = 5001
INTERVAL = 0.01
KEEPALIVE, HOLD = 1, 3
TIMEOUT = 10.0

log = logger(NAME)


class StoreWatch:
    """A ZooKeeper session of its own watching the provider router's learned
    routes and the configured routes: the arrival time of every change."""

    def __init__(self, zk_spec: str, router_id: str, auth=None) -> None:
        from midoflow.model import ROUTES
        from midoflow.store import paths
        from midoflow.store.zookeeper import ZkStore

        self.learned: list[tuple[float, int]] = []  # (t, learned /25 entries)
        self.routes: list[tuple[float, frozenset[str]]] = []  # (t, route ids)
        self.lock = threading.Lock()
        self.store = ZkStore(zk_spec, auth=auth)

        def on_learned(children) -> None:
            now = time.monotonic()
            n = sum(1 for c in children
                    if (paths.parse_learned_route(c) or {}).get("dst_cidr") == PREFIX)
            with self.lock:
                self.learned.append((now, n))

        def on_routes(ids) -> None:
            now = time.monotonic()
            with self.lock:
                self.routes.append((now, frozenset(ids)))

        self.store.watch_state_children(paths.learned_routes(router_id), on_learned)
        self.store.watch_kind(ROUTES, on_routes)

    def first(self, which: str, t0: float, pred, what: str) -> float:
        """ms from t0 to the first notification after t0 satisfying pred."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with self.lock:
                for t, v in getattr(self, which):
                    if t >= t0 and pred(v):
                        return (t - t0) * 1e3
            time.sleep(0.005)
        with self.lock:
            last = getattr(self, which)[-1:] if getattr(self, which) else None
        raise BenchError(f"no ZooKeeper notification of {what} in {TIMEOUT:.0f} s "
                         f"(last seen: {last})")

    def close(self) -> None:
        self.store.close()


def settle(watches, extra_wait: float) -> None:
    """Let the change finish (a second learned entry invalidates again), then
    until every host forwards toward DST again."""
    time.sleep(extra_wait)
    for w in watches:
        w.wait_until(lambda flows: any(k == "forward" for _c, k in flows.values()), TIMEOUT,
                     "no forwarding flow toward the internet host after the change")


def run() -> None:
    from benchmarks.bench_l3_convergence import FlowWatch, timed_change
    from topologies.gateways import SNAT_IP, UPLINKS, GatewayLab
    from topologies.midocloud import MidoCloud

    gw_opts = {"zk_session_timeout": HOLD}
    mc = MidoCloud(n_hosts=3, progress=log, agent_options={"hosts": {"h2": gw_opts,
                                                                       "h3": gw_opts}})
    lab: GatewayLab | None = None
    watches: list = []
    sw: StoreWatch | None = None
    sink = None
    res: dict[str, list[float]] = {f"{p}_{d}_{m}": [] for p in ("bgp", "api")
                                   for d in ("add", "del")
                                   for m in ("in_effect", "in_place", "cmd", "store_first",
                                             "store_all")}
    received = 0
    try:
        t_start = time.monotonic()
        mc.start()
        lab = GatewayLab(mc, border="frr", keepalive=KEEPALIVE, hold=HOLD, progress=log)
        lab.start()
        try:
            lab.wait_sessions(timeout=60)
            lab.wait_learned_default(2, timeout=30)
        except TimeoutError as e:
            raise BenchError(f"the lab's BGP sessions: {e} (gateway agents: "
                             f"{', '.join(f'{g.rundir}/agent.log' for g in lab.gateways)})"
                             ) from None
        h1, h2, h3 = mc.hosts
        vms = [lab.vm1]
        for h, name, n in ((h2, "vm3", 3), (h3, "vm4", 4)):
            vm = mc.vm(h, lab.bridge, name, f"10.0.0.{n}/24", f"02:00:00:00:00:{n:02x}")
            vm.cmd("ip route add default via 10.0.0.254")
            vms.append(vm)
        for vm in vms:
            quiet_vm(vm)
        inet = lab.upstream.internet
        sink = mc.cloud.popen(inet, [sys.executable, "-u", "-m", "benchmarks.bench_stateful_rate",
                                     "sink", str(UDP_PORT), SNAT_IP], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
        line = sink.stdout.readline().strip()
        if line != "ready":
            raise BenchError(f"the UDP sink in the internet host did not start: {line!r}")
        for vm in vms:
            mc.cloud.popen(vm, [sys.executable, "-m", "benchmarks.bench_bgp_convergence", "send",
                                DST, str(UDP_PORT), str(INTERVAL)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watches = [FlowWatch(h, DST) for h in mc.hosts]
        sw = StoreWatch(mc.zk_spec, lab.router, auth=mc.zk_auth)
        for w in watches:
            w.wait_until(lambda flows: any(k == "forward" for _c, k in flows.values()), 20,
                         "no forwarding flow toward the internet host while sending to it "
                         "(see the agent's log)")
        sink.stdin.write("report\n")
        first = json.loads(sink.stdout.readline())
        if first["datagrams"] == 0:
            raise BenchError("the internet host receives nothing from the VMs")
        log(f"3 senders (one VM per host) send to {DST} every {INTERVAL * 1e3:.0f} ms; every "
            f"host has its routed flow; {CHANGES} announce/withdraw pairs of {PREFIX} by BGP "
            "(both border routers) and by the API, alternating")

        uplink, gw = lab.uplink_ports[0], UPLINKS[0].peer_ip
        borders = lab.borders

        def announce() -> None:
            parallel(lambda r: r.add_network(PREFIX), borders)

        def withdraw() -> None:
            parallel(lambda r: r.remove_network(PREFIX), borders)

        t0 = time.monotonic()
        for i in range(1, CHANGES + 1):
            # BGP: announce on both border routers, then withdraw
            r = timed_change(watches, announce, "forward", "bgp announce")
            res["bgp_add_store_first"].append(sw.first(
                "learned", r["t0"], lambda n: n >= 1, f"the learned {PREFIX}"))
            res["bgp_add_store_all"].append(sw.first(
                "learned", r["t0"], lambda n: n >= 2, f"{PREFIX} learned from both gateways"))
            for k, v in (("in_effect", r["in_effect_ms"]), ("in_place", r["in_place_ms"]),
                         ("cmd", r["rest_ms"])):
                res[f"bgp_add_{k}"].append(v)
            settle(watches, random.uniform(0.15, 0.3))
            r = timed_change(watches, withdraw, "forward", "bgp withdraw")
            res["bgp_del_store_first"].append(sw.first(
                "learned", r["t0"], lambda n: n <= 1, f"the withdrawn {PREFIX}"))
            res["bgp_del_store_all"].append(sw.first(
                "learned", r["t0"], lambda n: n == 0, f"{PREFIX} gone from both gateways"))
            for k, v in (("in_effect", r["in_effect_ms"]), ("in_place", r["in_place_ms"]),
                         ("cmd", r["rest_ms"])):
                res[f"bgp_del_{k}"].append(v)
            settle(watches, random.uniform(0.15, 0.3))
            # API: the same route as a static route, then deleted
            r = timed_change(watches, lambda: mc.route(lab.router, PREFIX, port=uplink,
                                                       gateway=gw), "forward", "api add")
            rid = r["result"]
            ms = sw.first("routes", r["t0"], lambda ids, rid=rid: rid in ids,
                          f"the static route {rid}")
            res["api_add_store_first"].append(ms)
            res["api_add_store_all"].append(ms)
            for k, v in (("in_effect", r["in_effect_ms"]), ("in_place", r["in_place_ms"]),
                         ("cmd", r["rest_ms"])):
                res[f"api_add_{k}"].append(v)
            settle(watches, random.uniform(0.15, 0.3))
            r = timed_change(watches, lambda rid=rid: mc.api.request("DELETE", f"/routes/{rid}"),
                             "forward", "api delete")
            ms = sw.first("routes", r["t0"], lambda ids, rid=rid: rid not in ids,
                          f"the deleted route {rid}")
            res["api_del_store_first"].append(ms)
            res["api_del_store_all"].append(ms)
            for k, v in (("in_effect", r["in_effect_ms"]), ("in_place", r["in_place_ms"]),
                         ("cmd", r["rest_ms"])):
                res[f"api_del_{k}"].append(v)
            settle(watches, random.uniform(0.15, 0.3))
            if i % 5 == 0 or i == CHANGES:
                mb = percentile(res["bgp_add_in_effect"] + res["bgp_del_in_effect"], 50)
                ma = percentile(res["api_add_in_effect"] + res["api_del_in_effect"], 50)
                log(f"  {i}/{CHANGES} pairs each: in effect on every host, median BGP "
                    f"{mb:.1f} ms, API {ma:.1f} ms, {time.monotonic() - t0:.0f} s")
        sink.stdin.write("report\n")
        received = first["datagrams"] + json.loads(sink.stdout.readline())["datagrams"]
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        if sw is not None:
            try:
                sw.close()
            except Exception:  # noqa: BLE001 - the cloud still has to go
                pass
        for w in watches:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - the cloud still has to go
                pass
        if lab is not None:
            lab.stop()
        mc.stop()

    def both(path: str, m: str) -> list[float]:
        return res[f"{path}_add_{m}"] + res[f"{path}_del_{m}"]

    def split(path: str) -> list[float]:
        return [e - s for e, s in zip(both(path, "in_effect"), both(path, "store_first"),
                                      strict=True)]

    s = {k: summary(v, digits=2) for k, v in res.items()}
    bgp, api = summary(both("bgp", "in_effect"), digits=2), summary(both("api", "in_effect"),
                                                                    digits=2)
    report(NAME, bgp["median"], "ms", "api_static_route_in_effect", api["median"],
           higher_is_better=False, extra={
               "method": "GatewayLab (3 hosts, 2 FRR border routers, keepalive 1 hold 3), one "
                         "VM per host sending UDP to the internet host every 10 ms (a routed, "
                         f"SNAT flow on every host); {PREFIX} announced by both border routers "
                         "(vtysh network, in parallel) then withdrawn, alternating with the "
                         "same route as a static route via the API (POST then DELETE), "
                         f"{CHANGES} times each; time from just before the command until no "
                         "host's table 1 holds a flow toward 198.51.100.100 from before the "
                         "change (ovs-ofctl monitor per host); figure: BGP median, baseline: "
                         "API median",
               "p90_ms": bgp["p90"],
               "baseline_p90_ms": api["p90"],
               "changes": {"bgp": {"announce": CHANGES, "withdraw": CHANGES},
                           "api": {"add": CHANGES, "delete": CHANGES}},
               "bgp": {
                   "in_effect_ms": bgp,
                   "announce_in_effect_ms": s["bgp_add_in_effect"],
                   "withdraw_in_effect_ms": s["bgp_del_in_effect"],
                   "new_flows_in_place_ms": summary(both("bgp", "in_place"), digits=2),
                   "border_command_ms": summary(both("bgp", "cmd"), digits=2),
                   "command_to_store_first_ms": summary(both("bgp", "store_first"), digits=2),
                   "command_returned_to_store_first_ms": summary(
                       [f - c for f, c in zip(both("bgp", "store_first"), both("bgp", "cmd"),
                                              strict=True)], digits=2),
                   "command_to_store_both_gateways_ms": summary(both("bgp", "store_all"),
                                                                digits=2),
                   "announce_to_store_first_ms": s["bgp_add_store_first"],
                   "withdraw_to_store_first_ms": s["bgp_del_store_first"],
                   "store_first_to_flows_gone_ms": summary(split("bgp"), digits=2),
               },
               "api": {
                   "in_effect_ms": api,
                   "add_in_effect_ms": s["api_add_in_effect"],
                   "delete_in_effect_ms": s["api_del_in_effect"],
                   "new_flows_in_place_ms": summary(both("api", "in_place"), digits=2),
                   "rest_call_ms": summary(both("api", "cmd"), digits=2),
                   "rest_to_store_ms": summary(both("api", "store_first"), digits=2),
                   "store_to_flows_gone_ms": summary(split("api"), digits=2),
               },
               "datagrams_received_by_the_internet_host": received,
               "send_interval_ms": INTERVAL * 1e3,
           })


# ---- VM side ------------------------------------------------------------------

def _send(ip: str, port: int, interval: float) -> int:
    """One UDP datagram to ip:port every ``interval`` s, from one socket (one
    source port: one connection, one flow), until killed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((ip, port))
    payload = b"x" * 64
    nxt = time.monotonic()
    while True:
        try:
            s.send(payload)
        except OSError:
            pass  # no route yet, an ICMP error queued: keep going
        nxt += interval
        time.sleep(max(0.0, nxt - time.monotonic()))


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "send" and len(argv) == 4:
        return _send(argv[1], int(argv[2]), float(argv[3]))
    if not argv:
        return run_main(NAME, run)
    print("usage: python -m benchmarks.bench_bgp_convergence [send IP PORT INTERVAL]",
          file=sys.stderr)
    return 2


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
