"""A synthetic cloud for the scale benchmark (issue 13, goal 8), and the
simulated agents of its other hosts.

:func:`build` makes the topology as the store holds it (kind -> id -> dict):
hosts in one VXLAN tunnel zone; routers, each with two tenant networks
(bridges) linked to it by interior ports, a static route; VM ports spread over
the networks, bound to the hosts round robin (``local_share`` of them, 1%, to
the real agent's host), each with port security and one security group;
security groups with rules (one allows its own group, so every group has an
IP address group that counts); and what the service derives from them
(:mod:`midoflow.service.security`: the groups' chains, rules and address
groups, three filter chains per port), exactly as the API would write them.
:func:`write` commits it through the store in transactions of about half a
megabyte, several in flight (the API's own path, without its per-request
reads and checks, which would only make the generator slower).

:class:`SimulatedAgents` opens one kazoo session per other host and writes
what its agent writes (:mod:`midoflow.store.paths`): the host's liveness
node, an active-port node per bound port, a MAC-table entry per port, an ARP
entry per port on its router; then refreshes ARP entries as
:mod:`midoflow.agent.learning` does (a new name, then the old one removed,
every ``ARP_REWRITE_SECONDS``), spread over the period.

    python -m benchmarks.scale_topology --zk 127.0.0.1:2181 [--small]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kazoo.client import KazooClient

from midoflow import model
from midoflow.agent.learning import ARP_REWRITE_SECONDS
from midoflow.service import security as sec
from midoflow.store import paths
from midoflow.store.base import MAX_TXN_BYTES, Create, Store, encode, txn_size

Models = dict[str, dict[str, dict]]
NS = uuid.UUID("6f1d2c3b-0a9e-4f5d-8c7b-13579bdf2468")


@dataclass(frozen=True)
class Scale:
    hosts: int
    ports: int  # VM ports (router and interior ports come on top)
    routers: int
    security_groups: int
    local_share: float = 0.01  # of the VM ports, bound to the real agent's host

    def smaller(self, factor: int) -> Scale:
        return Scale(max(2, self.hosts // factor), self.ports // factor,
                     max(1, self.routers // factor), max(1, self.security_groups // factor),
                     self.local_share)


FULL = Scale(hosts=100, ports=10_000, routers=1_000, security_groups=2_000)


def oid(*parts: object) -> str:
    return str(uuid.uuid5(NS, ":".join(map(str, parts))))


def host_id(i: int) -> str:
    return oid("host", i)


def _mac(n: int) -> str:
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in n.to_bytes(3, "big"))


def build(scale: Scale, local_host: str | None = None) -> Models:
    """The topology; host 0 is ``local_host`` (the real agent's) if given."""
    m: Models = {k: {} for k in model.KINDS}
    hosts = [local_host or host_id(0)] + [host_id(i) for i in range(1, scale.hosts)]
    for i, h in enumerate(hosts):
        m[model.HOSTS][h] = {"id": h, "name": f"scale-h{i}", "description": ""}
    tz = oid("tz")
    m[model.TUNNEL_ZONES][tz] = {
        "id": tz, "name": "scale", "type": model.TUNNEL_VXLAN,
        "members": [{"host_id": h, "ip": f"10.{100 + i // 250}.{i % 250}.1"}
                    for i, h in enumerate(hosts)]}
    key = iter(range(1, model.TUNNEL_KEY_MAX))
    sgs = []
    for g in range(scale.security_groups):
        sid = oid("sg", g)
        tenant = f"tenant-{g % max(1, scale.routers)}"
        rules = [
            {"id": oid("sgr", g, 0), "direction": "ingress", "ethertype": "IPv4",
             "protocol": 6, "port_range_min": 22, "port_range_max": 22,
             "remote_ip_prefix": "0.0.0.0/0", "remote_group_id": None},
            {"id": oid("sgr", g, 1), "direction": "ingress", "ethertype": "IPv4",
             "protocol": None, "port_range_min": None, "port_range_max": None,
             "remote_ip_prefix": None, "remote_group_id": sid},
            {"id": oid("sgr", g, 2), "direction": "egress", "ethertype": "IPv4",
             "protocol": None, "port_range_min": None, "port_range_max": None,
             "remote_ip_prefix": None, "remote_group_id": None},
        ]
        sg = {"id": sid, "name": f"sg{g}", "tenant_id": tenant, "description": "",
              "rules": rules}
        m[model.SECURITY_GROUPS][sid] = sg
        sgs.append(sg)
    bridges: list[tuple[str, ipaddress.IPv4Network]] = []
    for r in range(scale.routers):
        rid = oid("router", r)
        tenant = f"tenant-{r}"
        router = {"id": rid, "name": f"r{r}", "tenant_id": tenant, "admin_state_up": True,
                  "port_ids": [], "inbound_filter_id": None, "outbound_filter_id": None}
        m[model.ROUTERS][rid] = router
        for n in range(2):
            b = len(bridges)
            net = ipaddress.ip_network(f"10.{b // 256}.{b % 256}.0/24")
            bid = oid("bridge", b)
            rp, bp = oid("rport", b), oid("bport", b)
            m[model.BRIDGES][bid] = {"id": bid, "name": f"net{b}", "tenant_id": tenant,
                                     "admin_state_up": True, "port_ids": [bp],
                                     "inbound_filter_id": None, "outbound_filter_id": None,
                                     "mtu": None}
            m[model.PORTS][rp] = {
                "id": rp, "device_id": rid, "device_type": model.DEVICE_ROUTER,
                "type": model.PORT_INTERIOR, "tunnel_key": next(key), "peer_id": bp,
                "mac": _mac(0x800000 + b), "ip_address": str(net[1]), "prefix_len": 24,
                "admin_state_up": True, "name": f"r{r}-net{n}"}
            m[model.PORTS][bp] = {
                "id": bp, "device_id": bid, "device_type": model.DEVICE_BRIDGE,
                "type": model.PORT_INTERIOR, "tunnel_key": next(key), "peer_id": rp,
                "admin_state_up": True, "name": f"net{b}-router"}
            router["port_ids"].append(rp)
            bridges.append((bid, net))
        route = oid("route", r)
        m[model.ROUTES][route] = {
            "id": route, "router_id": rid, "dst_cidr": f"172.{16 + r // 256}.{r % 256}.0/24",
            "src_cidr": "0.0.0.0/0", "next_hop_port": router["port_ids"][0],
            "next_hop_gateway": None, "weight": model.ROUTE_DEFAULT_WEIGHT,
            "type": model.ROUTE_REJECT}
    local_every = max(1, round(1 / scale.local_share)) if scale.local_share else 0
    members: dict[str, list[dict]] = {sg["id"]: [] for sg in sgs}
    for i in range(scale.ports):
        b = i % len(bridges)
        bid, net = bridges[b]
        # (i + i // networks): a network's ports are not all local, nor all remote
        local = local_every and (i + i // len(bridges)) % local_every == 0
        h = 0 if local else 1 + i % (len(hosts) - 1)
        pid = oid("vm", i)
        sg = sgs[i % len(sgs)]
        p = {"id": pid, "device_id": bid, "device_type": model.DEVICE_BRIDGE,
             "type": model.PORT_EXTERIOR, "tunnel_key": next(key), "admin_state_up": True,
             "host_id": hosts[h], "interface_name": f"tap{i}", "name": f"vm{i}",
             "mac": _mac(i + 1), "fixed_ips": [str(net[10 + i // len(bridges)])],
             "security_group_ids": [sg["id"]], "port_security_enabled": True,
             "allowed_address_pairs": [], "tenant_id": m[model.BRIDGES][bid]["tenant_id"]}
        p["inbound_filter_id"], p["outbound_filter_id"] = sec.port_filters(p)
        m[model.PORTS][pid] = p
        m[model.BRIDGES][bid]["port_ids"].append(pid)
        members[sg["id"]].append(p)
        for chain, rules in sec.port_objects(p, p["tenant_id"]):
            m[model.CHAINS][chain["id"]] = chain
            m[model.RULES].update((r["id"], r) for r in rules)
    for sg in sgs:
        ipag, chains = sec.sg_objects(sg, members[sg["id"]])
        m[model.IP_ADDR_GROUPS][ipag["id"]] = ipag
        for chain, rules in chains:
            m[model.CHAINS][chain["id"]] = chain
            m[model.RULES].update((r["id"], r) for r in rules)
    return m


def count(m: Models) -> dict[str, int]:
    return {k: len(v) for k, v in m.items() if v}


def _batches(m: Models, limit: int) -> Iterator[list[Create]]:
    batch: list[Create] = []
    size = 0
    for kind, objs in m.items():
        for data in objs.values():
            op = Create(kind, data)
            n = txn_size([op])
            if batch and size + n > limit:
                yield batch
                batch, size = [], 0
            batch.append(op)
            size += n
    if batch:
        yield batch


def write(store: Store, m: Models, progress: Callable[[str], None] = print,
          parallel: int = 4) -> dict:
    """Commit every object; {"objects", "seconds", "bytes"}."""
    t0 = time.monotonic()
    total = sum(len(v) for v in m.values())
    done = 0
    nbytes = sum(len(encode(d)) for v in m.values() for d in v.values())
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(store.commit, b) for b in _batches(m, MAX_TXN_BYTES // 2)]
        for i, f in enumerate(futures):
            f.result()
            done += 1
            if i % 20 == 19:
                progress(f"  written {i + 1}/{len(futures)} transactions")
    seconds = time.monotonic() - t0
    progress(f"topology written: {total:,} objects, {nbytes / 1e6:.1f} MB in {seconds:.1f} s")
    return {"objects": total, "seconds": round(seconds, 2), "bytes": nbytes,
            "transactions": done}


class SimulatedAgents:
    """One kazoo session per host (but the real agent's), writing that host's
    agent state (module doc). ``writes`` counts the requests that changed the
    store; :meth:`start` writes the initial state, :meth:`refresh` runs the
    ARP refreshes for a while."""

    def __init__(self, zk_hosts: str, m: Models, local_host: str,
                 root: str = "/midoflow") -> None:
        self.zk_hosts, self.root = zk_hosts, root
        self.writes = 0
        self._lock = threading.Lock()
        ports = [p for p in m[model.PORTS].values()
                 if p["type"] == model.PORT_EXTERIOR and p.get("host_id") != local_host]
        router_of = {p["peer_id"]: p["device_id"] for p in m[model.PORTS].values()
                     if p["device_type"] == model.DEVICE_ROUTER and p.get("peer_id")}
        bridge_router = {b["id"]: router_of.get(b["port_ids"][0]) for b in
                         m[model.BRIDGES].values()}
        self.by_host: dict[str, list[dict]] = {}
        for p in ports:
            self.by_host.setdefault(p["host_id"], []).append(p)
        self.bridge_router = bridge_router
        self.clients: dict[str, KazooClient] = {}
        self.arp_names: dict[tuple[str, str], str] = {}  # (router, ip) -> znode path

    def _z(self, path: str) -> str:
        return f"{self.root}/{path}"

    def start(self) -> dict:
        t0 = time.monotonic()
        for h in self.by_host:
            c = KazooClient(hosts=self.zk_hosts, timeout=30)
            c.start(timeout=30)
            self.clients[h] = c
        for z in (paths.HOSTS_ALIVE, paths.PORTS_ACTIVE):
            self.clients[next(iter(self.clients))].ensure_path(self._z(z))
        pending = []
        now = self.started = int(time.time())
        tables = set()
        for ports in self.by_host.values():
            for p in ports:
                tables.add(paths.mac_table(p["device_id"]))
                r = self.bridge_router.get(p["device_id"])
                if r:
                    tables.add(paths.arp_table(r))
        c0 = next(iter(self.clients.values()))
        for t in sorted(tables):  # as the real agent's cache would have made them
            pending.append(c0.create_async(self._z(t), b"", makepath=True))
        self._wait(pending, count=False)
        pending = []
        for h, ports in self.by_host.items():
            c = self.clients[h]
            state = {"host_id": h, "hostname": h[:8], "tunnel_ips": {"underlay": "10.0.0.1"},
                     "ovs_connected": True, "started_at": now,
                     "bound_ports": sorted(p["id"] for p in ports), "protection": {}}
            pending.append(c.create_async(self._z(paths.host_alive(h)), encode(state),
                                          ephemeral=True))
            for p in ports:
                data = encode({"host_id": h})
                pending.append(c.create_async(self._z(paths.port_active(p["id"])), data,
                                              ephemeral=True))
                pending.append(c.create_async(
                    self._z(paths.mac_entry(p["device_id"], p["mac"], p["id"])), b"{}",
                    ephemeral=True))
                r = self.bridge_router.get(p["device_id"])
                if r:
                    ip = p["fixed_ips"][0]
                    z = self._z(paths.arp_entry(r, ip, p["mac"], now))
                    self.arp_names[(r, ip)] = z
                    pending.append(c.create_async(z, b"{}", ephemeral=True))
        self._wait(pending)
        seconds = time.monotonic() - t0
        return {"sessions": len(self.clients), "writes": self.writes,
                "seconds": round(seconds, 2)}

    def _wait(self, pending: list, count: bool = True) -> None:
        for a in pending:
            try:
                a.get(timeout=60)
            except Exception as e:  # an existing table node
                if type(e).__name__ != "NodeExistsError":
                    raise
                continue
            if count:
                self.writes += 1

    def refresh(self, seconds: float, speedup: float = 1.0) -> dict:
        """ARP refreshes for ``seconds``, at ``speedup`` times the real rate
        (each entry every ARP_REWRITE_SECONDS / speedup): {"writes",
        "writes_per_s"}."""
        entries = sorted(self.arp_names)
        if not entries:
            return {"writes": 0, "writes_per_s": 0.0}
        period = ARP_REWRITE_SECONDS / speedup
        rate = len(entries) / period  # refreshes per second
        host_of = {}
        for h, ports in self.by_host.items():
            for p in ports:
                r = self.bridge_router.get(p["device_id"])
                if r:
                    host_of[(r, p["fixed_ips"][0])] = (h, p["mac"])
        t0 = time.monotonic()
        writes = 0
        i = 0
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= seconds:
                break
            due = min(int(elapsed * rate) + 1, len(entries) * 1000)
            pending = []
            while i < due:
                key = entries[i % len(entries)]
                h, mac = host_of[key]
                c = self.clients[h]
                # a later second than the entry it replaces (names hold whole seconds)
                at = self.started + 1 + i // len(entries)
                new = self._z(paths.arp_entry(key[0], key[1], mac, at))
                pending.append(c.create_async(new, b"{}", ephemeral=True))
                pending.append(c.delete_async(self.arp_names[key]))
                self.arp_names[key] = new
                i += 1
            for a in pending:
                a.get(timeout=30)
                writes += 1
            time.sleep(0.01)
        dt = time.monotonic() - t0
        self.writes += writes
        return {"writes": writes, "writes_per_s": round(writes / dt, 1),
                "modelled_rate_per_s": round(2 * rate, 1)}

    def stop(self) -> None:
        for c in self.clients.values():
            try:
                c.stop()
                c.close()
            except Exception:  # noqa: S110 - best effort at teardown
                pass
        self.clients.clear()


def mntr(port: int) -> dict[str, float]:
    """ZooKeeper's ``mntr`` figures (numbers only)."""
    from midoflow.devenv.zookeeper import four_letter

    out = {}
    for line in four_letter(port, "mntr", timeout=5).splitlines():
        k, _, v = line.partition("\t")
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zk", required=True, help="ZooKeeper host:port[/chroot]")
    ap.add_argument("--small", type=int, default=1, help="divide the scale by this")
    ap.add_argument("--local-host", default=None, help="the real agent's host id")
    args = ap.parse_args(argv)
    from midoflow.store.zookeeper import ZkStore

    scale = FULL.smaller(args.small) if args.small > 1 else FULL
    m = build(scale, args.local_host)
    print(json.dumps(count(m)))
    store = ZkStore(args.zk)
    try:
        write(store, m)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
