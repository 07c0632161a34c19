"""BGP under a real table: how fast a border router's full table reaches the
store, and what a short session reset costs the store.

One ZooKeeper server (``midoflow.devenv.zookeeper``), the gateway's
:class:`~midoflow.bgp.speaker.BgpManager` writing through a
:class:`~midoflow.store.zookeeper.ZkStore` session, fed os-ken's own path
events (``EventPrefix`` of ``Ipv4Path``, as its ``adj_rib_in_change_handler``
delivers them), and a second ZkStore session watching the router's learned
routes as an agent does. The speaker and the BGP link are stand-ins (no
namespace, no border router): what is measured is the table and the store.

* ``bgp_table_store_time``: ``PREFIXES`` announcements arrive at once (a
  border router's table on session up); seconds from the first event until
  the watcher sees every route (median of ``ROUNDS``). Baseline, same run:
  the pre-batching path (``BgpManager(batch=False)``: one store call per
  route, each a watch event for every agent).
* ``bgp_table_reset_writes``: store writes (learned-route nodes created or
  deleted) caused by a 1 s session reset, the same table announced again
  after it, counted over the 20 s that follow (a simulated clock: no
  waiting). Baseline: the same reset with no stale timer (``stale_time=0``,
  the old behaviour: every route deleted, then written again).

``BGP_TABLE_LAB=1`` adds the same on the real thing (root; about a minute
more with QUICK, three with 1,000): the gateway lab (``topologies.gateways``,
FRR border routers, real agents and os-ken speakers). ``bgp_table_lab_store_time``: border 1
originates ``PREFIXES`` networks in one vtysh call; seconds from just before
the call until a ZooKeeper watcher sees every one learned through uplink 1
(median of ``ROUNDS``; each round withdraws them again). Baseline, same run,
same watcher, once (1,000 take about two minutes): the same number of static
routes created through the REST API (``POST /routers/{id}/routes``), until
the watcher sees them all. Then
``clear bgp`` of the session (FRR is back in about a second): the learned
route changes the watcher sees in the 12 s after it are reported (extra).

``BGP_TABLE_QUICK=1``: 300 prefixes, 3 rounds (well under 2 minutes).
``BGP_TABLE_PREFIXES`` / ``BGP_TABLE_ROUNDS`` override.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import uuid
from types import SimpleNamespace

from benchmarks.common import report
from midoflow.bgp import speaker as sp
from midoflow.devenv.zookeeper import ZooKeeperServer
from midoflow.model import BgpPeer, Port
from midoflow.store import paths
from midoflow.store.zookeeper import ZkStore

QUICK = os.environ.get("BGP_TABLE_QUICK", "") not in ("", "0")
LAB = os.environ.get("BGP_TABLE_LAB", "") not in ("", "0")
PREFIXES = int(os.environ.get("BGP_TABLE_PREFIXES", "300" if QUICK else "1000"))
ROUNDS = int(os.environ.get("BGP_TABLE_ROUNDS", "3" if QUICK else "5"))
PEER = "192.0.2.2"


class _Speaker:
    """Stands for os-ken's speaker: every neighbour established."""

    def __init__(self, *_a) -> None:
        self.fsm = "established"

    def add_neighbour(self, pc) -> None: ...

    def del_neighbour(self, addr) -> None: ...

    def prefix_add(self, p) -> None: ...

    def prefix_del(self, p) -> None: ...

    def set_filters(self, *a) -> None: ...

    def set_retry(self, s) -> None: ...

    def set_keepalive(self, *a) -> None: ...

    def states(self, addrs):
        return {a: self.fsm for a in addrs}


class _Switch:
    def add_port(self, name, external_ids) -> None: ...

    def del_port(self, name) -> None: ...

    def ofport(self, name) -> int:
        return 43


def _no_link(*_a, **_k) -> None:
    return None


def _events(n: int) -> list:
    from os_ken.lib.packet import bgp
    from os_ken.services.protocols.bgp.bgpspeaker import EventPrefix
    from os_ken.services.protocols.bgp.info_base.ipv4 import Ipv4Path

    out = []
    for i in range(n):
        attrs = {bgp.BGP_ATTR_TYPE_ORIGIN: bgp.BGPPathAttributeOrigin(bgp.BGP_ATTR_ORIGIN_IGP),
                 bgp.BGP_ATTR_TYPE_AS_PATH: bgp.BGPPathAttributeAsPath([[65000, 65100]])}
        path = Ipv4Path(SimpleNamespace(remote_as=65000, version_num=4),
                        bgp.IPAddrPrefix(24, f"10.{i // 250}.{i % 250}.0"), 1, pattrs=attrs,
                        nexthop=PEER)
        out.append(EventPrefix(path, False))
    return out


def _manager(store: ZkStore, router: str, **kw) -> tuple[sp.BgpManager, list[float]]:
    port = Port(id="up1", device_id=router, tunnel_key=7, device_type="router",
                type="exterior", mac="02:00:00:00:01:01", ip_address="192.0.2.1",
                prefix_len=30)
    cache = SimpleNamespace(ports={"up1": port}, bgp_networks={}, bgp_peers={
        "p1": BgpPeer("p1", "up1", 64512, PEER, 65000, keepalive=1, hold_time=3,
                      connect_retry=1)})
    clock = [time.time()]
    mgr = sp.BgpManager(cache, store, "gw-bench", _Switch(), None, bindings=lambda: {"up1": 5},
                        on_links=lambda _d: None, max_prefixes=100_000,
                        clock=lambda: clock[0], **kw)
    mgr.make_speaker = _Speaker
    mgr.reconcile()
    return mgr, clock


class _Watcher:
    """An agent's view: the router's learned routes, by children watch."""

    def __init__(self, store: ZkStore, router: str) -> None:
        self.count = 0
        self.changes = 0
        self.cond = threading.Condition()
        store.watch_state_children(paths.learned_routes(router), self._on)

    def _on(self, names) -> None:
        with self.cond:
            self.count = len(names)
            self.changes += 1
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 120) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: self.count == n, timeout):
                raise TimeoutError(f"the watcher saw {self.count} routes, not {n}")
        return time.perf_counter()


def _fill(writer: ZkStore, watcher_store: ZkStore, batch: bool, events: list) -> dict:
    router = str(uuid.uuid4())
    mgr, _ = _manager(writer, router, batch=batch)
    watch = _Watcher(watcher_store, router)
    t0 = time.perf_counter()
    for ev in events:  # the agent's loop: the handler runs, then a reconcile
        mgr._on_path(ev, PEER, 65000)
    mgr.reconcile()
    done = watch.wait(len(events))
    res = {"seconds": done - t0, "watch_events": watch.changes}
    mgr.speaker.fsm = "idle"
    mgr.cache.bgp_peers.clear()
    mgr.reconcile()  # the peer goes: its routes with it
    return res


def _reset(writer: ZkStore, stale_time: float, events: list) -> dict:
    """Writes caused by a 1 s reset and the 20 s after it (simulated clock)."""
    mgr, clock = _manager(writer, str(uuid.uuid4()), stale_time=stale_time)
    for ev in events:
        mgr._on_path(ev, PEER, 65000)
    mgr.reconcile()
    before = mgr.route_writes
    t0 = time.perf_counter()
    mgr.speaker.fsm = "idle"
    mgr._on_down(PEER, 65000)
    mgr.reconcile()
    clock[0] += 1.0  # the session is back after 1 s, the same table sent again
    mgr.speaker.fsm = "established"
    for ev in events:
        mgr._on_path(ev, PEER, 65000)
    mgr.reconcile()
    for _ in range(20):
        clock[0] += 1.0
        mgr.reconcile()
    res = {"writes": mgr.route_writes - before, "seconds": time.perf_counter() - t0}
    mgr.cache.bgp_peers.clear()
    mgr.reconcile()
    return res


def main() -> None:
    sp.bgplink.create = _no_link  # no namespaces or veths: the table and the store only
    sp.bgplink.remove = _no_link
    events = _events(PREFIXES)
    with tempfile.TemporaryDirectory(prefix="bench-bgp-zk-") as tmp, \
            ZooKeeperServer(tmp) as zk:
        root = f"/bench-bgp-{uuid.uuid4().hex[:8]}"
        writer = ZkStore(zk.hosts, root=root, timeout=10)
        watcher = ZkStore(zk.hosts, root=root, timeout=10)
        try:
            batched, single = [], []
            for r in range(ROUNDS):  # interleaved: both see the same machine load
                single.append(_fill(writer, watcher, False, events))
                batched.append(_fill(writer, watcher, True, events))
                print(f"round {r + 1}: batched {batched[-1]['seconds']:.3f} s "
                      f"({batched[-1]['watch_events']} watch events), route by route "
                      f"{single[-1]['seconds']:.3f} s ({single[-1]['watch_events']})",
                      flush=True)
            grace = _reset(writer, sp.STALE_TIME, events)
            nograce = _reset(writer, 0.0, events)
        finally:
            writer.close()
            watcher.close()
    med = statistics.median(x["seconds"] for x in batched)
    base = statistics.median(x["seconds"] for x in single)
    report("bgp_table_store_time", med, "s", "one store call per route (pre-batching path)",
           base, higher_is_better=False, extra={
               "prefixes": PREFIXES, "rounds": ROUNDS,
               "batched_s": [round(x["seconds"], 4) for x in batched],
               "route_by_route_s": [round(x["seconds"], 4) for x in single],
               "batched_watch_events": [x["watch_events"] for x in batched],
               "route_by_route_watch_events": [x["watch_events"] for x in single]})
    report("bgp_table_reset_writes", grace["writes"], "writes",
           "no stale timer (routes deleted at the reset, written again)", nograce["writes"],
           higher_is_better=False, extra={
               "prefixes": PREFIXES, "stale_time_s": sp.STALE_TIME,
               "reset_s": 1.0, "observed_s": 21.0,
               "seconds_to_reconcile": round(grace["seconds"], 4),
               "seconds_to_reconcile_without_stale_timer": round(nograce["seconds"], 4)})


class _LabWatch:
    """A ZooKeeper session of its own on the provider router: learned routes
    through one uplink, and configured routes, each change timestamped."""

    def __init__(self, mc, router: str, port: str) -> None:
        from midoflow.model import ROUTES

        self.lock = threading.Lock()
        self.learned: list[tuple[float, frozenset[str]]] = []
        self.routes: list[tuple[float, int]] = []
        self.store = ZkStore(mc.zk_spec, auth=mc.zk_auth)
        self.store.watch_state_children(paths.learned_routes(router), lambda names: self._add(
            self.learned, frozenset(n for n in names if f",{port}," in n)))
        self.store.watch_kind(ROUTES, lambda ids: self._add(self.routes, len(ids)))

    def _add(self, log: list, value) -> None:
        with self.lock:
            log.append((time.time(), value))

    def until(self, which: str, pred, since: float, timeout: float = 60) -> float:
        """Epoch time of the first change from ``since`` on satisfying ``pred``."""
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                for t, v in getattr(self, which):
                    if t >= since and pred(v):
                        return t
            time.sleep(0.005)
        raise TimeoutError(f"the watcher's {which} never matched")



def _lab() -> dict:
    from topologies.gateways import UPLINKS, GatewayLab
    from topologies.midocloud import MidoCloud

    gw_opts = {"bgp_max_prefixes": PREFIXES + 100}
    mc = MidoCloud(n_hosts=3, agent_options={"hosts": {"h2": gw_opts, "h3": gw_opts}})
    lab = watch = None
    nets = [f"100.{64 + i // 250}.{i % 250}.0/24" for i in range(PREFIXES)]
    mine = {n.replace("/", "_") for n in nets}
    bgp, api, api_ids = [], [], []
    split: list[tuple[float, float, float]] = []  # (vtysh, first in store, first to last)
    try:
        mc.start()
        lab = GatewayLab(mc, border="frr")
        lab.start()
        lab.wait_sessions(timeout=60)
        lab.wait_learned_default(2)
        border, port = lab.borders[0], lab.uplink_ports[0]
        watch = _LabWatch(mc, lab.router, port)

        def ours(names) -> int:
            return sum(1 for n in names if n.split(",")[0] in mine)

        for r in range(ROUNDS):
            t0 = time.time()
            border.configure(*(f"network {n}" for n in nets))
            tc = time.time()
            t_all = watch.until("learned", lambda v: ours(v) == PREFIXES, t0)
            t_first = watch.until("learned", lambda v: ours(v) > 0, t0)
            bgp.append(t_all - t0)
            split.append((tc - t0, t_first - t0, t_all - t_first))
            t1 = time.time()
            border.configure(*(f"no network {n}" for n in nets))
            watch.until("learned", lambda v: ours(v) == 0, t1)
            print(f"lab round {r + 1}: BGP {bgp[-1]:.3f} s (vtysh {split[-1][0]:.3f} s, "
                  f"first route in the store {split[-1][1]:.3f} s, first to last "
                  f"{split[-1][2]:.3f} s)", flush=True)
        # the baseline once: N creates through the API take minutes at 1,000
        with watch.lock:
            base = watch.routes[-1][1] if watch.routes else 0
        t0 = time.time()
        for n in nets:
            api_ids.append(mc.route(lab.router, n, port, gateway=UPLINKS[0].peer_ip))
        api.append(watch.until("routes", lambda v, b=base: v >= b + PREFIXES, t0,
                               timeout=600) - t0)
        for rid in api_ids:
            mc.api.request("DELETE", f"/routes/{rid}")
        print(f"lab baseline: API {api[-1]:.3f} s", flush=True)
        # a session reset under the table: clear bgp (FRR is back in about 1 s)
        t1 = time.time()
        border.configure(*(f"network {n}" for n in nets))
        watch.until("learned", lambda v: ours(v) == PREFIXES, t1)
        time.sleep(1)  # let the last batch settle
        with watch.lock:
            before = watch.learned[-1][1]
        t2 = time.time()
        border.vtysh(f"clear bgp {UPLINKS[0].ip}")
        time.sleep(12)  # observing a fixed window: what changes in it is the figure
        with watch.lock:
            changes = [v for t, v in watch.learned if t >= t2 and v != before]
        return {"bgp": bgp, "api": api, "split": split, "reset_changes": len(changes),
                "reset_routes_missing_max": max((len(before - v) for v in changes), default=0),
                "reset_routes_new": len({n for v in changes for n in v - before})}
    finally:
        if watch is not None:
            watch.store.close()
        if lab is not None:
            lab.stop()
        mc.stop()


def lab_main() -> None:
    res = _lab()
    report("bgp_table_lab_store_time", statistics.median(res["bgp"]), "s",
           "the same number of static routes through the REST API",
           statistics.median(res["api"]), higher_is_better=False, extra={
               "prefixes": PREFIXES, "rounds": ROUNDS, "border": "FRR (one vtysh call)",
               "bgp_s": [round(x, 4) for x in res["bgp"]],
               "api_s": [round(x, 4) for x in res["api"]],
               "vtysh_returned_s": [round(x[0], 4) for x in res["split"]],
               "first_route_in_store_s": [round(x[1], 4) for x in res["split"]],
               "first_to_last_route_s": [round(x[2], 4) for x in res["split"]],
               "clear_bgp_learned_route_changes_in_12_s": res["reset_changes"],
               "clear_bgp_routes_missing_max": res["reset_routes_missing_max"],
               "clear_bgp_routes_new": res["reset_routes_new"]})


if __name__ == "__main__":
    main()
    if LAB:
        from benchmarks.cloudbench import run_main

        raise SystemExit(run_main("bench_bgp_table", lab_main))
