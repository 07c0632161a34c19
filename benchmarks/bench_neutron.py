"""The Neutron layer's cost, against midoflow's native API in the same run.

(a) ``port create`` and ``port list`` with 1,000 ports: requests per second
    and median latency through the Neutron v2.0 API with a project user's
    Keystone token (keystonemiddleware validating it, IPAM, the translation
    into a native port, one ZooKeeper commit per request), against the native
    ``/v1`` API on the same server and store with an admin token creating and
    listing 1,000 plain bridge ports. Several client threads.
(b) From a port creation to the first routed reply: ``POST /v2.0/ports`` with
    ``binding:host_id`` (and, reported beside it, the unmodified ``openstack
    port create --host``), plugging a VM with that ``iface-id`` on another
    host, pinging it from a VM on another subnet through the router until it
    answers; against the native path (``POST /v1/bridges/{id}/ports``, the
    same plug and ping through a native router). Ports without port security
    on both sides: this measures binding and routing, not security chains.

    python -m benchmarks.bench_neutron [--ports N] [--threads T] [--trials K] [--only api|bind]

Defaults: --ports 1000 --threads 4 --list-rounds 20 --trials 3 (what ``make bench``
runs). The clients resend a create answered 409 after a lost race (the native
API's "changed meanwhile"); how many they resent is reported beside the rates.

Needs root (the cloud of part b), ZooKeeper and the Keystone venv (``make setup``).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks.cloudbench import BenchError, logger, run_main, summary
from benchmarks.common import report

log = logger("bench_neutron")
# auth_token's start-up warnings (options it does not know, its in-process
# token cache) say nothing here; each logger by name (Mininet's logger class
# gives every new logger a level of its own)
for name in ("keystonemiddleware._common.config", "keystonemiddleware.auth_token"):
    logging.getLogger(name).setLevel(logging.ERROR)


def token_for(env: dict[str, str]) -> str:
    """A project-scoped Keystone token for an OS_* environment (password login)."""
    dom = env.get("OS_USER_DOMAIN_NAME", "Default")
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": env["OS_USERNAME"], "domain": {"name": dom},
            "password": env["OS_PASSWORD"]}}},
        "scope": {"project": {"name": env["OS_PROJECT_NAME"], "domain": {
            "name": env.get("OS_PROJECT_DOMAIN_NAME", "Default")}}}}}
    r = requests.post(env["OS_AUTH_URL"].rstrip("/") + "/auth/tokens", json=body, timeout=15)
    if r.status_code != 201:
        raise BenchError(f"Keystone refused {env['OS_USERNAME']}'s login: {r.status_code} "
                         f"{r.text[:200]}")
    return r.headers["X-Subject-Token"]


class Api:
    """JSON over HTTP with a token; one requests.Session per thread."""

    def __init__(self, url: str, token: str, *, retry_stale: bool = False) -> None:
        self.url, self.token = url.rstrip("/"), token
        self._local = threading.local()
        # the native API answers 409 "changed meanwhile" when a concurrent request
        # won the race (Neutron's layer retries itself): a client sends it again
        self.retry_stale = retry_stale
        self.retries = 0

    def call(self, method: str, path: str, body: dict | None = None, expect: int = 200):
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        while True:
            r = s.request(method, self.url + path, json=body, timeout=60,
                          headers={"X-Auth-Token": self.token, "Accept": "application/json"})
            if not (self.retry_stale and r.status_code == 409 and (
                    "meanwhile" in r.text or "losing races" in r.text)):
                break
            self.retries += 1
        if r.status_code != expect:
            raise BenchError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None


def hammer(n: int, threads: int, fn: Callable[[int], object]) -> tuple[float, list[float]]:
    """``fn(i)`` for i in range(n) from ``threads`` threads: wall seconds and
    each call's latency."""
    lat: list[float] = []

    def one(i: int) -> None:
        t = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(one, i) for i in range(n)]:
            f.result()
    return time.perf_counter() - t0, lat


def bench_api(n: int, threads: int, rounds: int, workdir: str) -> None:
    from midoflow.devenv.keystone import KeystoneServer
    from midoflow.devenv.zookeeper import ZooKeeperServer
    from midoflow.store.zookeeper import ZkStore
    from topologies.openstack import OpenStackLab

    log("starting ZooKeeper and Keystone")
    zk = ZooKeeperServer(os.path.join(workdir, "zk")).start()
    ks = store = lab = None
    try:
        ks = KeystoneServer(os.path.join(workdir, "ks")).start()
        store = ZkStore(zk.hosts)
        lab = OpenStackLab(types.SimpleNamespace(store=store), ks).start()
        neutron = Api(lab.url, token_for(lab.envs["p1user"]), retry_stale=True)
        native = Api(lab.url, token_for(lab.envs["admin"]), retry_stale=True)
        net = neutron.call("POST", "/v2.0/networks", {"network": {"name": "bench"}}, 201)
        neutron.call("POST", "/v2.0/subnets", {"subnet": {
            "network_id": net["network"]["id"], "cidr": "10.0.0.0/21", "ip_version": 4}}, 201)
        net_id = net["network"]["id"]
        bridge = native.call("POST", "/v1/bridges", {"name": "bench"}, 201)["id"]
        log(f"{n} port creates each, {threads} threads; native first")
        nat_s, nat_lat = hammer(n, threads, lambda i: native.call(
            "POST", f"/v1/bridges/{bridge}/ports", {"name": f"p{i}"}, 201))
        log(f"native: {n / nat_s:.0f} creates/s ({native.retries} retried after a 409)")
        neu_s, neu_lat = hammer(n, threads, lambda i: neutron.call(
            "POST", "/v2.0/ports", {"port": {"network_id": net_id, "name": f"p{i}"}}, 201))
        log(f"Neutron: {n / neu_s:.0f} creates/s ({neutron.retries} retried after a 409 "
            "'kept losing races')")

        def check_len(got: int, what: str) -> None:
            if got != n:
                raise BenchError(f"{what} listed {got} ports, not {n}")
        check_len(len(native.call("GET", f"/v1/bridges/{bridge}/ports")), "the native API")
        check_len(len(neutron.call("GET", f"/v2.0/ports?network_id={net_id}")["ports"]),
                  "the Neutron API")
        log(f"{rounds} lists of {n} ports each")
        nl_s, nl_lat = hammer(rounds, threads, lambda _i: native.call(
            "GET", f"/v1/bridges/{bridge}/ports"))
        ul_s, ul_lat = hammer(rounds, threads, lambda _i: neutron.call(
            "GET", f"/v2.0/ports?network_id={net_id}"))
        for name, (s, lat), (bs, blat), k in (
                ("create", (neu_s, neu_lat), (nat_s, nat_lat), n),
                ("list", (ul_s, ul_lat), (nl_s, nl_lat), rounds)):
            report(f"neutron_port_{name}_rate", k / s, "requests/s",
                   f"native_port_{name}_rate", k / bs, extra={
                       "ports": n, "threads": threads, "auth": "Keystone token "
                       "(keystonemiddleware) on both APIs",
                       "neutron_latency_ms": summary(lat, 1000),
                       "native_latency_ms": summary(blat, 1000),
                       "native_409_retries": native.retries if name == "create" else 0,
                       "neutron_409_retries": neutron.retries if name == "create" else 0})
            print(f"  median latency of {name}: Neutron "
                  f"{statistics.median(lat) * 1000:.1f} ms, native "
                  f"{statistics.median(blat) * 1000:.1f} ms", flush=True)
    finally:
        if lab is not None:
            lab.stop()
        if store is not None:
            store.close()
        if ks is not None:
            ks.stop()
        zk.stop()


def first_reply(vm, ip: str, timeout: float = 20) -> None:
    """Ping ``ip`` from ``vm`` until one reply (100 ms per try)."""
    out = vm.cmd(f"for i in $(seq {int(timeout * 10)}); do ping -n -c 1 -W 0.1 {ip} "
                 ">/dev/null 2>&1 && echo REPLIED && break; done")
    if "REPLIED" not in out:
        raise BenchError(f"{vm.name} got no reply from {ip} in {timeout:.0f} s")


def bench_binding(trials: int, workdir: str) -> None:
    from midoflow.devenv.keystone import KeystoneServer
    from topologies.midocloud import MidoCloud
    from topologies.openstack import OpenStackLab, fixed_ip

    log("starting Keystone and a 3-host cloud")
    ks = KeystoneServer(os.path.join(workdir, "ks2")).start()
    mc = lab = None
    try:
        mc = MidoCloud(n_hosts=3, progress=log).start()
        lab = OpenStackLab(mc, ks).start()
        api = Api(lab.url, token_for(lab.envs["p1user"]))
        admin = Api(lab.url, token_for(lab.envs["admin"]))
        h1, h2 = mc.hosts[0].name, mc.hosts[1].name
        # Neutron: two networks on a router, a pinger on h1
        nets = {}
        for name, cidr in (("a", "10.0.0.0/24"), ("b", "10.0.1.0/24")):
            net = api.call("POST", "/v2.0/networks", {"network": {"name": f"bench-{name}"}}, 201)
            sub = api.call("POST", "/v2.0/subnets", {"subnet": {
                "network_id": net["network"]["id"], "cidr": cidr, "ip_version": 4}}, 201)
            nets[name] = (net["network"]["id"], sub["subnet"]["id"])
        router = api.call("POST", "/v2.0/routers", {"router": {"name": "bench-r"}}, 201)
        for _, sub in nets.values():
            api.call("PUT", f"/v2.0/routers/{router['router']['id']}/add_router_interface",
                     {"subnet_id": sub})

        def port_body(net: str, ip: str, host: str) -> dict:
            return {"port": {"network_id": nets[net][0], "port_security_enabled": False,
                             "fixed_ips": [{"ip_address": ip}], "binding:host_id": host}}
        # binding:host_id is admin's (or Nova's) in Neutron's policy: admin makes the
        # ports on the project's networks, as Nova does for a server
        pinger = admin.call("POST", "/v2.0/ports", port_body("a", "10.0.0.5", h1), 201)["port"]
        npinger = lab.plug(1, "npinger", pinger, "10.0.0.0/24", "10.0.0.1")
        first_reply(npinger, "10.0.0.1")
        # native: the same shape through /v1
        ba, bb = mc.bridge("native-a"), mc.bridge("native-b")
        r = mc.router("native-r")
        mc.attach(r, ba, "10.2.0.1/24")
        mc.attach(r, bb, "10.2.1.1/24")
        vpinger = mc.vm(1, ba, "vpinger", "10.2.0.5/24", "02:00:00:77:00:05")
        vpinger.cmd("ip route add default via 10.2.0.1")
        first_reply(vpinger, "10.2.0.1")
        times: dict[str, list[float]] = {"api": [], "cli": [], "native": []}
        for i in range(trials):
            for path in ("native", "api", "cli"):
                # a fresh address each time: a deleted port's address given to a
                # new port (new MAC) is not reached through the router for over
                # a minute (the router's ARP entry for it is stale)
                name = f"t{path[0]}{i}"
                ip = {"native": f"10.2.1.{20 + i}", "api": f"10.0.1.{20 + i}",
                      "cli": f"10.0.1.{120 + i}"}[path]
                t0 = time.monotonic()
                if path == "native":
                    pid = mc.port(bb, name)
                    vm = mc.cloud.add_vm(mc.hosts[1], name, f"{ip}/24",
                                         f"02:00:00:77:01:{i:02x}", iface_id=pid)
                    vm.cmd("ip route add default via 10.2.1.1")
                    first_reply(vpinger, ip)
                else:
                    if path == "api":
                        port = admin.call("POST", "/v2.0/ports", port_body("b", ip, h2),
                                          201)["port"]
                    else:
                        port = lab.os("admin", "port", "create", "--network", "bench-b",
                                      "--fixed-ip", f"ip-address={ip}", "--disable-port-security",
                                      "--no-security-group", "--host", h2, name)
                    assert fixed_ip(port) == ip
                    vm = lab.plug(2, name, port, "10.0.1.0/24", "10.0.1.1", wait=False)
                    first_reply(npinger, ip)
                    pid = port["id"]
                times[path].append(time.monotonic() - t0)
                mc.cloud.remove_vm(vm)
                if path == "native":
                    admin.call("DELETE", f"/v1/ports/{pid}", expect=204)
                else:
                    api.call("DELETE", f"/v2.0/ports/{pid}", expect=204)
            log(f"trial {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
        med = {k: statistics.median(v) for k, v in times.items()}
        report("neutron_port_to_first_reply", med["api"], "s", "native_port_to_first_reply",
               med["native"], higher_is_better=False, extra={
                   "trials": trials, "openstack_cli_median_s": round(med["cli"], 3),
                   "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                   "path": "POST /v2.0/ports with binding:host_id (or `openstack port create "
                           "--host`), plug the VM with its iface-id on h2, ping from h1 "
                           "through the router until the first reply"})
        print(f"  openstack port create --host ... to first reply: median {med['cli']:.2f} s "
              "(CLI start-up included)", flush=True)
    finally:
        if lab is not None:
            lab.stop()
        if mc is not None:
            mc.stop()
        ks.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_neutron", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=1000,
                    help="ports created through each API (default 1000)")
    ap.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--list-rounds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--only", choices=("api", "bind"))
    args = ap.parse_args(argv)

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="mflbench-neutron-") as d:
            if args.only != "bind":
                bench_api(args.ports, args.threads, args.list_rounds, d)
            if args.only != "api":
                bench_binding(args.trials, d)
    return run_main("bench_neutron", run)


if __name__ == "__main__":
    raise SystemExit(main())
