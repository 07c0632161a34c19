"""Health monitors end to end (issue 14): the elected agent's checks cross
midoflow's own data path from a namespace of its host to member VMs on the
other hosts, and their verdicts reach the API and every host's simulation.

Three hosts; the agent leading the health-check election is found first and
given no VM (its death must cost nothing but the checks, so every member's
status has to survive the handover: no status may be written by it). One
load balancer with three pools over the same three members, each pool with
its own monitor: HTTP (``GET /`` expecting 200, on the members' port 8080),
TCP (8080) and HTTPS (8443, a self-signed certificate made by ``openssl``,
not verified). delay 1 s, timeout 1 s, max_retries 2, max_retries_down 2.
The HTTP pool is behind the VIP the client fetches. (tests/e2e/test_lb.py
holds the issue's acceptance; this file is about the checker: statuses,
timings, the handover.)"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import time

import pytest

from midoflow.agent.healthcheck import namespace_name
from midoflow.model import HEALTH_ERROR, HEALTH_NET, HEALTH_ONLINE
from midoflow.store import paths
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e_lb

ZK_SESSION = 3.0  # the agents' zk_session_timeout: the bound of the handover
DELAY, HM_TIMEOUT, RETRIES, RETRIES_DOWN = 1, 1, 2, 2
SLACK = 3.0  # a store write and the poll that sees it, on a busy 2-core machine
DOWN_BOUND = DELAY * RETRIES_DOWN + HM_TIMEOUT + SLACK
UP_BOUND = DELAY * RETRIES + HM_TIMEOUT + SLACK
VIP, HTTP, HTTPS = "192.168.62.100", 8080, 8443
MEMBERS = ("m1", "m2", "m3")

# A member's server: answers every GET with its name (HTTPS with a cert file).
_SERVER = r"""
import http.server, ssl, sys
port, name, cert = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3:]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
srv = S(("0.0.0.0", port), H)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert[0], cert[1])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""

# N requests to IP:PORT, each a new connection; prints {"answer": count}.
_CLIENT = r"""
import collections, json, socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
counts = collections.Counter()
for _ in range(n):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((ip, port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        counts[data.partition(b"\r\n\r\n")[2].decode() or "!empty"] += 1
    except OSError as e:
        counts["!" + type(e).__name__] += 1
    finally:
        s.close()
print(json.dumps(counts))
"""


class Lab:
    def __init__(self, mc, certdir: str) -> None:
        self.mc, self.certdir = mc, certdir
        self.vms: dict[str, object] = {}
        self.servers: dict[tuple[str, int], subprocess.Popen] = {}
        self.members: dict[str, dict[str, str]] = {}  # monitor type -> member name -> id
        self.names = {hid: name for name, hid in mc.host_ids.items()}

    def leader(self) -> str | None:
        """The cloud host whose agent leads the health-check election."""
        hid = self.mc.store.election_leader(paths.HEALTH_ELECTION)
        return self.names.get(hid, hid)

    def health_port_host(self) -> str | None:
        """The cloud host where the load balancer's health port is bound."""
        lb = self.mc.api.request("GET", f"/load_balancers/{self.lb_id}")
        hid = self.mc.port_host(lb["health_port_id"])
        return self.names.get(hid, hid)

    def health(self, kind: str, member: str) -> dict | None:
        return self.mc.store.get_state(paths.member_health(self.members[kind][member]))

    def status(self, kind: str, member: str) -> str | None:
        return (self.health(kind, member) or {}).get("status")

    def start_server(self, member: str, port: int) -> None:
        vm = self.vms[member]
        cert = ([f"{self.certdir}/cert.pem", f"{self.certdir}/key.pem"]
                if port == HTTPS else [])
        self.servers[member, port] = self.mc.cloud.popen(
            vm, ["python3", "-c", _SERVER, str(port), member, *cert],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: f":{port}" in vm.cmd(f"ss -ltnH 'sport = :{port}'"), 10,
                   f"{member}'s server on {port} to listen", interval=0.1)

    def kill_server(self, member: str, port: int) -> None:
        p = self.servers.pop((member, port))
        p.kill()
        p.wait(timeout=5)

    def hits(self, n: int) -> collections.Counter:
        out = self.vms["client"].popen(
            ["python3", "-c", _CLIENT, VIP, "80", str(n)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True).communicate(timeout=3 * n + 20)[0]
        return collections.Counter(json.loads(out))


@pytest.fixture(scope="module")
def lab(cloud_factory, tmp_path_factory):
    certdir = tmp_path_factory.mktemp("hm-cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=member", "-keyout", str(certdir / "key.pem"),
                    "-out", str(certdir / "cert.pem")], check=True, capture_output=True,
                   timeout=60)
    mc = cloud_factory(3, agent_options={"zk_session_timeout": ZK_SESSION})
    lab = Lab(mc, str(certdir))
    lb_id = None
    try:
        leader = wait_until(lab.leader, 20, "an agent to lead the health-check election")
        spare = [h.name for h in mc.hosts if h.name != leader]  # the leader has no VM
        r = mc.router("hm-r", "t")
        clients, members = mc.bridge("hm-clients", "t"), mc.bridge("hm-members", "t")
        mc.attach(r, clients, "192.168.61.1/24", "02:aa:00:00:3d:01")
        mc.attach(r, members, "192.168.62.1/24", "02:aa:00:00:3e:01")
        vm = mc.vm(spare[1], clients, "hmc", "192.168.61.10/24", "02:00:00:3d:00:10",
                   dhcp=False)
        vm.cmd("ip route add default via 192.168.61.1")
        lab.vms["client"] = vm
        addr = {}
        for i, m in enumerate(MEMBERS, start=1):
            vm = mc.vm(spare[i % 2], members, f"hm{m}", f"192.168.62.1{i}/24",
                       f"02:00:00:3e:00:1{i}", dhcp=False)
            vm.cmd("ip route add default via 192.168.62.1")
            lab.vms[m], addr[m] = vm, f"192.168.62.1{i}"
            lab.start_server(m, HTTP)
            lab.start_server(m, HTTPS)
        api = mc.api
        lb_id = lab.lb_id = api.request("POST", "/load_balancers",
                                        {"router_id": r, "name": "hm"})["id"]
        for kind, port in (("HTTP", HTTP), ("TCP", HTTP), ("HTTPS", HTTPS)):
            pool = api.request("POST", "/pools", {"load_balancer_id": lb_id, "name": kind,
                                                  "protocol": "TCP"})["id"]
            lab.members[kind] = {m: api.request("POST", "/pool_members", {
                "pool_id": pool, "address": addr[m], "protocol_port": port,
                "name": m})["id"] for m in MEMBERS}
            body = {"pool_id": pool, "type": kind, "delay": DELAY, "timeout": HM_TIMEOUT,
                    "max_retries": RETRIES, "max_retries_down": RETRIES_DOWN}
            if kind != "TCP":
                body.update(http_method="GET", url_path="/", expected_codes="200")
            api.request("POST", "/health_monitors", body)
            if kind == "HTTP":
                lab.http_pool = pool
                api.request("POST", "/vips", {"load_balancer_id": lb_id, "address": VIP,
                                              "protocol_port": 80, "pool_id": pool,
                                              "protocol": "TCP"})
        yield lab
    finally:
        for key in list(lab.servers):
            with contextlib.suppress(Exception):
                lab.kill_server(*key)
        mc.stop()  # before the namespaces: no agent may make them again
        if lb_id is not None:
            from pyroute2 import netns

            prefix = "mfhm-" + lb_id.replace("-", "")[:8]
            for ns in netns.listnetns():
                if ns.startswith(prefix):
                    with contextlib.suppress(OSError):
                        netns.remove(ns)


def test_every_member_online_in_the_store_and_the_api(lab):
    t0 = time.monotonic()
    for kind in lab.members:
        for m in MEMBERS:
            wait_until(lambda k=kind, m=m: lab.status(k, m) == HEALTH_ONLINE, 60,
                       f"{m} ONLINE for the {kind} monitor "
                       f"(now {lab.health(kind, m)})", interval=0.2)
    print(f"all 9 checks ONLINE {time.monotonic() - t0:.1f} s after the first wait")
    leader = lab.mc.host_ids[lab.leader()]
    for kind, ids in lab.members.items():
        for m, mid in ids.items():
            got = lab.mc.api.request("GET", f"/pool_members/{mid}")
            assert got["operating_status"] == "ONLINE", (kind, m, got)
            assert got["health"]["status"] == HEALTH_ONLINE, (kind, m, got)
            assert got["health"]["host_id"] == leader, (kind, m, got, leader)
    pool = lab.mc.api.request("GET", f"/pools/{lab.http_pool}")
    assert pool["operating_status"] == "ONLINE", pool
    hits = wait_until(lambda: (h := lab.hits(30)) and set(h) == set(MEMBERS) and h, 30,
                      "30 requests to the VIP reaching all three members")
    print(f"30 requests to the VIP: {dict(hits)}")


def test_a_dead_server_is_error_in_time_and_gets_nothing_then_comes_back(lab):
    https_since = lab.health("HTTPS", "m2")["since"]
    t0 = time.monotonic()
    lab.kill_server("m2", HTTP)
    for kind in ("HTTP", "TCP"):
        wait_until(lambda k=kind: lab.status(k, "m2") == HEALTH_ERROR, 30,
                   f"m2 ERROR for the {kind} monitor", interval=0.05)
        down = time.monotonic() - t0
        print(f"m2's HTTP server killed: {kind} monitor says ERROR after {down:.2f} s "
              f"(bound delay x max_retries_down + timeout + slack = {DOWN_BOUND:g} s)")
        assert down <= DOWN_BOUND, f"{kind}: ERROR after {down:.2f} s, over {DOWN_BOUND:g} s"
    entry = lab.health("HTTP", "m2")
    assert "refused" in entry["reason"] or "timed out" in entry["reason"], entry
    got = lab.mc.api.request("GET", f"/pool_members/{lab.members['HTTP']['m2']}")
    assert got["operating_status"] == "ERROR", got
    pool = lab.mc.api.request("GET", f"/pools/{lab.http_pool}")
    assert pool["operating_status"] == "DEGRADED", pool
    hits = lab.hits(60)
    print(f"60 requests to the VIP with m2 in ERROR: {dict(hits)}")
    assert hits["m1"] + hits["m3"] == 60 and hits["m1"] and hits["m3"], hits
    # the HTTPS server of m2 still runs: that check did not move
    assert lab.status("HTTPS", "m2") == HEALTH_ONLINE
    assert lab.health("HTTPS", "m2")["since"] == https_since

    t0 = time.monotonic()
    lab.start_server("m2", HTTP)
    for kind in ("HTTP", "TCP"):
        wait_until(lambda k=kind: lab.status(k, "m2") == HEALTH_ONLINE, 30,
                   f"m2 ONLINE again for the {kind} monitor", interval=0.05)
        up = time.monotonic() - t0
        print(f"m2's HTTP server back: {kind} monitor says ONLINE after {up:.2f} s "
              f"(bound {UP_BOUND:g} s)")
        assert up <= UP_BOUND, f"{kind}: ONLINE after {up:.2f} s, over {UP_BOUND:g} s"
    hits = lab.hits(60)
    print(f"60 requests to the VIP with m2 back: {dict(hits)}")
    assert hits["m2"] > 0 and sum(hits[m] for m in MEMBERS) == 60, hits


def test_https_check_fails_on_a_dead_tls_server(lab):
    t0 = time.monotonic()
    lab.kill_server("m3", HTTPS)
    wait_until(lambda: lab.status("HTTPS", "m3") == HEALTH_ERROR, 30,
               "m3 ERROR for the HTTPS monitor", interval=0.05)
    print(f"m3's HTTPS server killed: ERROR after {time.monotonic() - t0:.2f} s")
    assert lab.status("HTTP", "m3") == HEALTH_ONLINE
    lab.start_server("m3", HTTPS)
    wait_until(lambda: lab.status("HTTPS", "m3") == HEALTH_ONLINE, 30,
               "m3 ONLINE again for the HTTPS monitor", interval=0.05)


def test_a_member_security_group_must_admit_the_health_network(lab):
    """A group admitting only the clients' network hides m3 from the checker
    (ERROR for all three monitors); a rule for 169.254.252.0/22 brings it back."""
    api, vm = lab.mc.api, lab.vms["m3"]
    group = api.request("POST", "/security_groups", {"name": "hm-web", "tenant_id": "t"})["id"]
    api.request("POST", f"/security_groups/{group}/rules", {
        "direction": "ingress", "protocol": "tcp", "port_range_min": HTTP,
        "port_range_max": HTTPS, "remote_ip_prefix": "192.168.61.0/24"})
    port = {"mac": "02:00:00:3e:00:13", "fixed_ips": ["192.168.62.13"]}
    api.request("PUT", f"/ports/{vm.port_id}", {**port, "security_group_ids": [group],
                                                 "port_security_enabled": True})
    try:
        for kind in lab.members:
            wait_until(lambda k=kind: lab.status(k, "m3") == HEALTH_ERROR, 30,
                       f"m3 ERROR for the {kind} monitor behind a group that does not "
                       "admit the health network", interval=0.1)
        print(f"m3 behind hm-web: {lab.health('HTTP', 'm3')['reason']}")
        hits = lab.hits(30)
        assert hits["m3"] == 0 and hits["m1"] + hits["m2"] == 30, hits
        api.request("POST", f"/security_groups/{group}/rules", {
            "direction": "ingress", "protocol": "tcp", "remote_ip_prefix": HEALTH_NET})
        for kind in lab.members:
            wait_until(lambda k=kind: lab.status(k, "m3") == HEALTH_ONLINE, 30,
                       f"m3 ONLINE for the {kind} monitor once {HEALTH_NET} is admitted",
                       interval=0.1)
    finally:
        api.request("PUT", f"/ports/{vm.port_id}", {**port, "security_group_ids": [],
                                                     "port_security_enabled": False})


def test_killing_the_leader_hands_the_checks_over_and_keeps_every_status(lab):
    mc = lab.mc
    old = lab.leader()
    before = {(k, m): lab.health(k, m) for k in lab.members for m in MEMBERS}
    assert all(e and e["status"] == HEALTH_ONLINE for e in before.values()), before
    host = mc.cloud.host(old)
    t0 = time.monotonic()
    mc.kill_agent(host, sig=9)
    try:
        new = wait_until(lambda: (x := lab.leader()) and x != old and x, ZK_SESSION + 20,
                         "another agent to win the health-check election", interval=0.05)
        elected = time.monotonic() - t0
        print(f"{old}'s agent killed (kill -9): {new} leads the checks after "
              f"{elected:.2f} s (ZooKeeper session timeout {ZK_SESSION:g} s)")
        assert elected <= ZK_SESSION + SLACK, \
            f"the checks moved after {elected:.2f} s, over {ZK_SESSION:g} s + {SLACK:g} s"
        # the new leader's first probes: m1's entry keeps its `since` (no write)
        # while a server killed now turns ERROR by the new leader's hand
        t1 = time.monotonic()
        lab.kill_server("m1", HTTP)
        wait_until(lambda: lab.status("HTTP", "m1") == HEALTH_ERROR, ZK_SESSION + 30,
                   "m1 (killed after the handover) ERROR", interval=0.05)
        print(f"m1's server killed after the handover: ERROR after "
              f"{time.monotonic() - t1:.2f} s; health port at {lab.health_port_host()}")
        entry = lab.health("HTTP", "m1")
        assert entry["host_id"] == mc.host_ids[new], (entry, new)
        after = {(k, m): lab.health(k, m) for k in lab.members for m in MEMBERS}
        kept = {key: e for key, e in after.items() if key[1] != "m1" or key[0] == "HTTPS"}
        flapped = {key: (before[key], e) for key, e in kept.items() if e != before[key]}
        assert not flapped, f"entries rewritten across the handover: {flapped}"
    finally:
        if ("m1", HTTP) not in lab.servers:
            lab.start_server("m1", HTTP)
        mc.start_agent(host)
        mc.wait_agents([host])
    deadline = time.monotonic() + 30
    while lab.status("HTTP", "m1") != HEALTH_ONLINE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab.status("HTTP", "m1") == HEALTH_ONLINE, \
        f"m1 not ONLINE again 30 s after its server and {old}'s agent came back: entry " \
        f"{lab.health('HTTP', 'm1')}, leader {lab.leader()}, health port at " \
        f"{lab.health_port_host()}"
    left = namespace_name(lab.lb_id, mc.host_ids[old])
    assert not os.path.exists(f"/var/run/netns/{left}"), \
        f"the restarted agent of {old} left its killed run's namespace {left}"
    assert lab.leader() == new and lab.health_port_host() == new, \
        f"the checks left {new}: leader {lab.leader()}, health port {lab.health_port_host()}"
