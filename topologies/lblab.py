"""The load-balancer lab (issue 14) on a :class:`~topologies.midocloud.MidoCloud`
of three hosts, as MidoNet's own load-balancer test built it.

Router ``r`` with three networks and an uplink::

    members 10.80.0.0/24 (r .1)   m1 (host 1) .11, m2 (host 2) .12, m3 (host 3) .13,
                                  the hairpin client cm (host 3) .20, the VIP .100
    clients 10.81.0.0/24 (r .1)   the client c (host 2) .10
    uplink  198.51.100.1/24       the "internet" namespace inet (host 1) .254,
                                  floating IP 203.0.113.80 DNAT'd to the VIP

Every member VM runs a small HTTP/1.1 server (keep-alive capable) on port
80 that answers ``GET /`` with its own name. :meth:`LbLab.build_lb` makes,
through the native REST API, one load balancer on ``r`` with one TCP pool
(the three members, weight 1, round robin) and one VIP 10.80.0.100:80;
:meth:`LbLab.monitor` adds an HTTP health monitor. :meth:`LbLab.requests`
makes N HTTP requests from a client, each on a NEW TCP connection from a
source port never used before in the lab (so no earlier connection's NAT
binding or flow can decide where it goes), and counts who answered.

The client and server run as ``python3 -c`` scripts inside the VMs'
namespaces (see ``_SERVER`` and ``_CLIENT``): one process per batch of
requests, far faster than a curl per request. The benchmark
(``benchmarks/bench_lb.py``) uses the same client's rate modes.
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from topologies.lifecycle import wait_for

if TYPE_CHECKING:  # the harness side only: the VM-side scripts below are stdlib
    from topologies.midocloud import MidoCloud

MEMBERS_NET, CLIENTS_NET = "10.80.0", "10.81.0"
VIP, PORT = f"{MEMBERS_NET}.100", 80
# The members' servers answer here too: a port no pool uses, so a client
# reaching it directly takes the plain routed path (the benchmark's baseline).
# Replies from a member's pool port are checked for a balancer's binding, so
# they are simulated per connection once a pool holds the member.
OTHER_PORT = 8080
FIP = "203.0.113.80"
UPLINK_IP, EXT = "198.51.100.1", "198.51.100.254"
MEMBERS = ("m1", "m2", "m3")  # on hosts 1, 2, 3
CLIENTS = ("c", "cm", "inet")  # another subnet, the members' subnet (hairpin), the internet
# A lost answer is one of these outcomes in the counts (a member's name otherwise).
TIMEOUT, REFUSED = "!timeout", "!refused"

# The member's server: HTTP/1.1 with keep-alive, each response one write
# (no Nagle/delayed-ACK stall between headers and body), TCP_NODELAY.
_SERVER = r"""
import http.server, socket, sys, threading
ports, name = [int(p) for p in sys.argv[1].split(",")], sys.argv[2].encode()
ok = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
      % len(name))

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_GET(self):
        self.wfile.write(ok + name)
    def do_HEAD(self):
        self.wfile.write(ok)
    def log_message(self, *args):
        pass

class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    allow_reuse_address = True
    daemon_threads = True

servers = [S(("0.0.0.0", p), H) for p in ports]
for srv in servers[1:]:
    threading.Thread(target=srv.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""

# The client. Modes (argv[1]):
#   hits IP PORT N TIMEOUT CONCURRENCY SPORT_BASE
#       N requests, each a new connection from source port SPORT_BASE + i,
#       HTTP/1.0 (the server closes first: no TIME_WAIT on the client);
#       prints {"outcome": count} (the member's name, or !timeout, !refused...).
#   conn-rate IP PORT SECONDS WORKERS
#       WORKERS threads making new connections (one request each) for SECONDS.
#   ka-rate IP PORT SECONDS WORKERS
#       WORKERS keep-alive connections, requests back to back for SECONDS.
#   Both rate modes print {"ok": n, "err": n, "seconds": s, "hits": {...}}.
_CLIENT = r"""
import collections, errno, json, socket, sys, threading, time

def outcome(e):
    if isinstance(e, socket.timeout):
        return "!timeout"
    if isinstance(e, ConnectionRefusedError):
        return "!refused"
    return "!" + (errno.errorcode.get(e.errno or 0) or type(e).__name__)

def body_of(data):
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return "!bad:" + head[:40].decode(errors="replace")
    return body.decode(errors="replace").strip() or "!empty"

def one(ip, port, timeout, sport=0):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        if sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", sport))
        s.connect((ip, port))
        s.sendall(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return body_of(data)
    except OSError as e:
        return outcome(e)
    finally:
        s.close()

def hits(ip, port, n, timeout, conc, sbase):
    counts = collections.Counter()
    lock = threading.Lock()
    todo = iter(range(n))
    def work():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            r = one(ip, port, timeout, sbase + i)
            with lock:
                counts[r] += 1
    ts = [threading.Thread(target=work) for _ in range(max(1, min(conc, n)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps(counts))

def read_response(s, buf):
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "closed")
        rest += chunk
    return rest[:length].decode(errors="replace"), rest[length:]

def rate(mode, ip, port, seconds, workers):
    lock = threading.Lock()
    tot = {"ok": 0, "err": 0}
    counts = collections.Counter()
    start = time.monotonic()
    deadline = start + seconds
    errors = collections.Counter()
    def conn_worker():
        ok = err = 0
        mine = collections.Counter()
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            r = one(ip, port, 5)
            if r.startswith("!"):
                err += 1
                with lock:
                    errors[f"{r} at +{t0 - start:.1f}s"] += 1
            else:
                ok += 1
                mine[r] += 1
        with lock:
            tot["ok"] += ok; tot["err"] += err; counts.update(mine)
    def ka_worker():
        ok = err = 0
        mine = collections.Counter()
        req = b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n"
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection((ip, port), timeout=5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
                while time.monotonic() < deadline:
                    s.sendall(req)
                    name, buf = read_response(s, buf)
                    ok += 1
                    mine[name] += 1
                s.close()
            except OSError as e:
                err += 1
                with lock:
                    errors[f"{outcome(e)} at +{time.monotonic() - start:.1f}s"] += 1
        with lock:
            tot["ok"] += ok; tot["err"] += err; counts.update(mine)
    fn = conn_worker if mode == "conn-rate" else ka_worker
    ts = [threading.Thread(target=fn) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    tot["seconds"] = time.monotonic() - start
    tot["hits"] = counts
    tot["errors"] = errors
    print(json.dumps(tot))

mode, a = sys.argv[1], sys.argv[2:]
if mode == "hits":
    hits(a[0], int(a[1]), int(a[2]), float(a[3]), int(a[4]), int(a[5]))
else:
    rate(mode, a[0], int(a[1]), float(a[2]), int(a[3]))
"""

SPORT_FIRST, SPORT_LAST = 20000, 60999  # the client's own source ports (see requests)


def mac(n: int) -> str:
    return f"02:00:00:8b:00:{n:02x}"


class LbLab:
    """The lab's VMs and ids; ``build()`` makes the topology and starts the
    servers (nothing of the load-balancer API), ``build_lb()`` the balancer."""

    def __init__(self, mc: MidoCloud, progress: Callable[[str], None] | None = None) -> None:
        self.mc = mc
        self.progress = progress or (lambda _msg: None)
        self.vms: dict[str, object] = {}
        self.servers: dict[str, subprocess.Popen] = {}
        self.addr = {m: f"{MEMBERS_NET}.{11 + i}" for i, m in enumerate(MEMBERS)}
        self.member_ids: dict[str, str] = {}
        self.lb_id = self.pool_id = self.vip_id = self.monitor_id = None
        self._sport = SPORT_FIRST

    # ---- the topology, no load balancer ------------------------------------------
    def build(self) -> LbLab:
        mc = self.mc
        self.router = mc.router("lb-r", "t")
        self.members_net = mc.bridge("lb-members", "t")
        self.clients_net = mc.bridge("lb-clients", "t")
        mc.attach(self.router, self.members_net, f"{MEMBERS_NET}.1/24", "02:aa:00:00:8b:01")
        mc.attach(self.router, self.clients_net, f"{CLIENTS_NET}.1/24", "02:aa:00:00:8b:02")
        self.uplink = mc.router_port(self.router, f"{UPLINK_IP}/24", "02:aa:00:00:8b:09",
                                     interior=False, name="uplink")
        mc.route(self.router, "0.0.0.0/0", self.uplink, EXT)
        # The floating IP: DNAT to the VIP on the way in (the balancer then
        # picks a member), the VIP back to the floating IP on the way out.
        pre = mc.chain("lb-in", [
            {"action": "dnat", "eth_type": 0x800, "nw_dst": f"{FIP}/32",
             "nat_targets": [{"addr_from": VIP, "addr_to": VIP}]}])
        post = mc.chain("lb-out", [
            {"action": "rev_dnat", "eth_type": 0x800, "nw_src": f"{VIP}/32"}])
        mc.api.request("PUT", f"/routers/{self.router}", {"inbound_filter_id": pre,
                                                          "outbound_filter_id": post})
        self.progress("lab: member VMs m1-m3 on hosts 1-3, clients c, cm, inet")
        for i, m in enumerate(MEMBERS, start=1):
            self._vm(i, self.members_net, m, self.addr[m], 10 + i, f"{MEMBERS_NET}.1")
        self._vm(2, self.clients_net, "c", f"{CLIENTS_NET}.10", 20, f"{CLIENTS_NET}.1")
        self._vm(3, self.members_net, "cm", f"{MEMBERS_NET}.20", 21, f"{MEMBERS_NET}.1")
        self.vms["inet"] = mc.external(1, self.uplink, "inet", f"{EXT}/24", mac(0xfe),
                                       routes=(("203.0.113.0/24", UPLINK_IP),))
        for m in MEMBERS:
            self.start_server(m)
        for vm in ("c", "cm"):  # the router learns every member, the members it
            for m in MEMBERS:
                wait_for(lambda vm=vm, m=m: self.direct(vm, m) == m, 20,
                         f"{vm} to reach {m}'s server directly")
        from topologies.cloud import ping

        wait_for(lambda: ping(self.vms["inet"], UPLINK_IP, count=1)[1] == 1, 20,
                 "the internet namespace to reach the router")
        return self

    def _vm(self, host: int, bridge: str, name: str, ip: str, n: int, gw: str) -> None:
        vm = self.mc.vm(host, bridge, name, f"{ip}/24", mac(n), dhcp=False)
        vm.cmd(f"ip route add default via {gw}")
        self.vms[name] = vm

    def start_server(self, member: str) -> None:
        vm = self.vms[member]
        old = self.servers.get(member)
        if old is not None and old.poll() is None:
            return
        self.servers[member] = self.mc.cloud.popen(
            vm, ["python3", "-c", _SERVER, f"{PORT},{OTHER_PORT}", member],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: all(f":{p}" in vm.cmd(f"ss -ltnH 'sport = :{p}'")
                             for p in (PORT, OTHER_PORT)), 10,
                 f"the HTTP server of {member} to listen")

    def kill_server(self, member: str) -> None:
        p = self.servers.pop(member, None)
        if p is not None:
            p.kill()
            p.wait(timeout=5)

    # ---- the load balancer (native REST API) -------------------------------------
    def build_lb(self) -> LbLab:
        api = self.mc.api
        self.lb_id = api.request("POST", "/load_balancers", {
            "router_id": self.router, "name": "lab", "tenant_id": "t"})["id"]
        self.pool_id = api.request("POST", "/pools", {
            "load_balancer_id": self.lb_id, "name": "web", "tenant_id": "t",
            "protocol": "TCP", "lb_method": "ROUND_ROBIN"})["id"]
        for m in MEMBERS:
            self.member_ids[m] = api.request("POST", "/pool_members", {
                "pool_id": self.pool_id, "address": self.addr[m], "protocol_port": PORT,
                "name": m, "tenant_id": "t"})["id"]
        self.vip_id = api.request("POST", "/vips", {
            "load_balancer_id": self.lb_id, "address": VIP, "protocol_port": PORT,
            "protocol": "TCP", "pool_id": self.pool_id, "name": "web-80",
            "tenant_id": "t"})["id"]
        return self

    def monitor(self, type_: str = "HTTP", delay: int = 1, timeout: int = 1,
                max_retries: int = 2, max_retries_down: int = 2) -> dict:
        """An admin-up health monitor on the pool (made once; updated after)."""
        body = {"type": type_, "delay": delay, "timeout": timeout,
                "max_retries": max_retries, "max_retries_down": max_retries_down}
        if type_ != "TCP":
            body.update(http_method="GET", url_path="/", expected_codes="200")
        if self.monitor_id is None:
            hm = self.mc.api.request("POST", "/health_monitors", {
                "pool_id": self.pool_id, "name": "web-check", "tenant_id": "t", **body})
            self.monitor_id = hm["id"]
            return hm
        return self.mc.api.request("PUT", f"/health_monitors/{self.monitor_id}",
                                   {**body, "admin_state_up": True})

    def set(self, kind: str, id_: str, **fields) -> dict:
        return self.mc.api.request("PUT", f"/{kind}/{id_}", fields)

    def set_member(self, member: str, **fields) -> dict:
        return self.set("pool_members", self.member_ids[member], **fields)

    def reset(self) -> None:
        """Back to the lab's start: everything admin up, weights 1, round
        robin, no persistence, every server running (the monitor stays)."""
        self.set("load_balancers", self.lb_id, admin_state_up=True)
        self.set("pools", self.pool_id, admin_state_up=True, lb_method="ROUND_ROBIN")
        self.set("vips", self.vip_id, admin_state_up=True, session_persistence=None)
        for m in MEMBERS:
            self.set_member(m, admin_state_up=True, weight=1)
            self.start_server(m)

    def member_health(self, member: str) -> dict | None:
        """The member's health entry as the elected checker wrote it."""
        from midoflow.store import paths

        return self.mc.store.get_state(paths.member_health(self.member_ids[member]))

    def health_port_host(self) -> str | None:
        """The cloud host whose agent has the load balancer's health port
        bound: the elected health checker's."""
        lb = self.mc.api.request("GET", f"/load_balancers/{self.lb_id}")
        hid = self.mc.port_host(lb["health_port_id"]) if lb.get("health_port_id") else None
        names = {v: k for k, v in self.mc.host_ids.items()}
        return names.get(hid)

    # ---- traffic -------------------------------------------------------------------
    def target(self, client: str) -> str:
        return FIP if client == "inet" else VIP

    def requests(self, client: str, n: int, timeout: float = 5.0, concurrency: int = 4,
                 ip: str | None = None, port: int = PORT) -> collections.Counter:
        """``n`` HTTP requests from ``client`` to the VIP (the floating IP
        from inet) or ``ip``, each a new connection from a source port not
        used before in this lab; the count of each outcome: a member's name,
        TIMEOUT (no answer in ``timeout`` s), REFUSED, "!<errno>"."""
        if self._sport + n > SPORT_LAST:
            self._sport = SPORT_FIRST
        base, self._sport = self._sport, self._sport + n
        vm = self.vms[client]
        proc = vm.popen(["python3", "-c", _CLIENT, "hits", ip or self.target(client), str(port),
                         str(n), str(timeout), str(concurrency), str(base)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        budget = (n / max(1, concurrency) + 1) * (timeout + 1) + 10
        out, err = proc.communicate(timeout=budget)
        if proc.returncode != 0:
            raise RuntimeError(f"the client in {client} failed: {err.strip()[-400:]}")
        return collections.Counter(json.loads(out))

    def direct(self, client: str, member: str, ip: str | None = None) -> str | None:
        """One request from ``client`` straight to ``member`` (or ``ip``): the
        answer's name, None when it did not answer."""
        got = self.requests(client, 1, timeout=2, ip=ip or self.addr[member])
        (name,) = got
        return None if name.startswith("!") else name

    def rate(self, client: str, mode: str, ip: str, seconds: float, workers: int,
             port: int = PORT) -> dict:
        """The client's "conn-rate" or "ka-rate" mode (see ``_CLIENT``)."""
        proc = self.vms[client].popen(
            ["python3", "-c", _CLIENT, mode, ip, str(port), str(seconds), str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"the {mode} client in {client} failed: {err.strip()[-400:]}")
        return json.loads(out)

    def stop(self) -> None:
        for m in list(self.servers):
            self.kill_server(m)

    def remove_health_namespaces(self) -> None:
        """Remove the health checkers' namespaces of this lab's load balancer
        (``mfhm-<lb id[:8]>...``): an agent killed (or stopped with SIGTERM,
        which osken-manager does not handle) leaves its own. Call it once the
        cloud is stopped."""
        if self.lb_id is None:
            return
        import contextlib

        from pyroute2 import netns

        prefix = "mfhm-" + self.lb_id.replace("-", "")[:8]
        for ns in netns.listnetns():
            if ns.startswith(prefix):
                with contextlib.suppress(OSError):
                    netns.remove(ns)


def member_hits(counts: collections.Counter) -> dict[str, int]:
    """Hits per member (every member listed, 0 when none)."""
    return {m: counts.get(m, 0) for m in MEMBERS}


def answered(counts: collections.Counter) -> int:
    return sum(v for k, v in counts.items() if not k.startswith("!"))


def wait_effect(lab: LbLab, pred: Callable[[collections.Counter], bool], what: str,
                timeout: float = 10.0, n: int = 6, request_timeout: float = 2.0) -> None:
    """Until ``pred`` holds for the outcomes of ``n`` sequential requests
    from c to the VIP: a change made through the API has reached the
    agents (a ZooKeeper watch each) before a test measures its effect."""
    deadline = time.monotonic() + timeout
    while True:
        got = lab.requests("c", n, timeout=request_timeout, concurrency=1)
        if pred(got):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; "
                               f"the last {n} requests: {dict(got)}")


def wait_answers(lab: LbLab, client: str, timeout: float, what: str) -> None:
    """Until a request from ``client`` to the VIP is answered by a member."""
    deadline = time.monotonic() + timeout
    while answered(lab.requests(client, 1, timeout=1, concurrency=1)) != 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
