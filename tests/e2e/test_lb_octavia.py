"""Issue 14's last acceptance bullet: the same load balancing driven by the
UNMODIFIED ``openstack`` CLI (``openstack loadbalancer``, python-octaviaclient)
through a real Keystone. A project builds its network, subnet, router,
security-group rule and four ports with ``openstack``; the admin binds the
ports to three hosts (as Nova would); member VMs run HTTP servers; then
``openstack loadbalancer`` makes the load balancer (its VIP a Neutron port),
a TCP listener, a pool, three members and, last, an HTTP health monitor.

Traffic is real: a client VM on another subnet makes each request on a NEW
TCP connection (the lab's client, ``topologies/lblab.py``). Round robin
reaches all three members; weights 1/3/9 rank the hits like the weights;
source-IP persistence keeps every request on one member; the monitor marks
a stopped server ERROR within delay x max retries down + timeout (the
operating status ``openstack loadbalancer member list`` shows) and no request
reaches it, and a restarted one comes back; the internet reaches the VIP
through a floating IP set on the VIP port. The tests share one cloud and
run in order."""

from __future__ import annotations

import time

import pytest

from midoflow import model
from tests.helpers import wait_until
from topologies.lblab import MEMBERS, LbLab, answered, member_hits
from topologies.openstack import OpenStackLab

pytestmark = [pytest.mark.e2e_lb, pytest.mark.timeout(1200)]

ZK_SESSION = 4.0
PORT = 80
MEMBERS_CIDR, CLIENTS_CIDR, EXT_CIDR = "10.90.0.0/24", "10.91.0.0/24", "198.51.100.0/24"
ADDR = {"m1": "10.90.0.11", "m2": "10.90.0.12", "m3": "10.90.0.13"}
CLIENT_IP, EXT_IP, EXT_GW = "10.91.0.10", "198.51.100.254", "198.51.100.1"
HOSTS = {"m1": 1, "m2": 2, "m3": 3, "c": 2}
DELAY, HM_TIMEOUT, RETRIES, RETRIES_DOWN = 1, 1, 2, 2
SLACK = 4.0  # the store write, the CLI's start-up and its poll, on a busy 2-core machine


@pytest.fixture(scope="module")
def world(cloud_factory, keystone_server):
    mc = cloud_factory(3, agent_options={"zk_session_timeout": ZK_SESSION})
    traffic = LbLab(mc, progress=print)  # its VMs, servers and client; no native objects
    with OpenStackLab(mc, keystone_server, show=print) as os_lab:
        try:
            _build(os_lab, traffic)
            yield os_lab, traffic
        finally:
            traffic.stop()
            mc.stop()  # before the namespaces: no agent may make them again
            traffic.remove_health_namespaces()


def _build(lab: OpenStackLab, traffic: LbLab) -> None:
    u = "p1user"
    lab.parallel([(u, ("network", "create", "lbo-members")),
                  (u, ("network", "create", "lbo-clients")),
                  (u, ("router", "create", "lbo-router"))])
    lab.parallel([(u, ("subnet", "create", "--network", "lbo-members", "--subnet-range",
                       MEMBERS_CIDR, "lbo-members-sub")),
                  (u, ("subnet", "create", "--network", "lbo-clients", "--subnet-range",
                       CLIENTS_CIDR, "lbo-clients-sub"))])
    for sub in ("lbo-members-sub", "lbo-clients-sub"):
        lab.os(u, "router", "add", "subnet", "lbo-router", sub)
    # the members admit HTTP from anywhere: the clients and the health checks
    # (from 169.254.252.0/22, as Octavia's amphorae need their own rule too)
    lab.os(u, "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port",
           str(PORT), "--remote-ip", "0.0.0.0/0", "default")
    made = [(m, "lbo-members", ADDR[m]) for m in MEMBERS] + [("c", "lbo-clients", CLIENT_IP)]
    ports = lab.parallel([(u, ("port", "create", "--network", net, "--fixed-ip",
                               f"ip-address={ip}", f"lbo-{name}")) for name, net, ip in made])
    lab.parallel([("admin", ("port", "set", "--host", lab.mc.hosts[HOSTS[name] - 1].name,
                             f"lbo-{name}")) for name, _, _ in made])
    for (name, _net, _ip), port in zip(made, ports, strict=True):
        cidr, gw = (CLIENTS_CIDR, "10.91.0.1") if name == "c" else (MEMBERS_CIDR, "10.90.0.1")
        traffic.vms[name] = lab.plug(HOSTS[name], f"lbo{name}", port, cidr, gw, dhcp=None)
    traffic.addr.update(ADDR)
    for m in MEMBERS:
        traffic.start_server(m)
    for m in MEMBERS:
        wait_until(lambda m=m: traffic.direct("c", m) == m, 30, f"c to reach {m} directly")


def _hits(traffic: LbLab, vip: str, n: int, client: str = "c") -> dict[str, int]:
    got = traffic.requests(client, n, ip=vip)
    assert answered(got) == n, f"{n} requests from {client} to {vip}: {dict(got)}"
    return member_hits(got)


@pytest.fixture(scope="module")
def lb(world):
    """``openstack loadbalancer`` create: the load balancer, a listener, a pool
    and three members."""
    lab, traffic = world
    u = "p1user"
    lb = lab.os(u, "loadbalancer", "create", "--name", "web", "--vip-subnet-id",
                "lbo-members-sub", "--wait")
    assert lb["provisioning_status"] == "ACTIVE", lb
    traffic.lb_id = lb["id"]  # its health namespaces are removed at the end
    lab.os(u, "loadbalancer", "listener", "create", "--name", "web-80", "--protocol", "TCP",
           "--protocol-port", str(PORT), "web")
    lab.os(u, "loadbalancer", "pool", "create", "--name", "web-pool", "--protocol", "TCP",
           "--lb-algorithm", "ROUND_ROBIN", "--listener", "web-80")
    members = lab.parallel([(u, ("loadbalancer", "member", "create", "--name", m,
                                 "--address", ADDR[m], "--protocol-port", str(PORT),
                                 "--subnet-id", "lbo-members-sub", "web-pool"))
                            for m in MEMBERS])
    traffic.member_ids.update({m["name"]: m["id"] for m in members})
    wait_until(lambda: answered(traffic.requests("c", 1, timeout=1, concurrency=1,
                                                 ip=lb["vip_address"])) == 1, 30,
               "the VIP to answer the client on the other subnet")
    return lb


def test_round_robin_reaches_all_three_members(world, lb):
    _lab, traffic = world
    hits = _hits(traffic, lb["vip_address"], 60)
    assert all(hits[m] > 0 for m in MEMBERS), hits


def test_weights_rank_the_hits(world, lb):
    lab, traffic = world
    for m, w in zip(MEMBERS, (1, 3, 9), strict=True):
        lab.os("p1user", "loadbalancer", "member", "set", "--weight", str(w), "web-pool", m)
    listed = lab.os("p1user", "loadbalancer", "member", "list", "web-pool")
    assert {x["name"]: x["weight"] for x in listed} == {"m1": 1, "m2": 3, "m3": 9}, listed
    hits = _hits(traffic, lb["vip_address"], 130)
    assert hits["m1"] < hits["m2"] < hits["m3"], hits
    for m in MEMBERS:
        lab.os("p1user", "loadbalancer", "member", "set", "--weight", "1", "web-pool", m)


def test_source_ip_persistence_keeps_one_member(world, lb):
    lab, traffic = world
    lab.os("p1user", "loadbalancer", "pool", "set", "--session-persistence", "type=SOURCE_IP",
           "web-pool")
    pool = lab.os("p1user", "loadbalancer", "pool", "show", "web-pool")
    assert "SOURCE_IP" in str(pool["session_persistence"]), pool
    hits = _hits(traffic, lb["vip_address"], 60)
    assert sorted(hits.values()) == [0, 0, 60], hits
    lab.os("p1user", "loadbalancer", "pool", "unset", "--session-persistence", "web-pool")
    hits = _hits(traffic, lb["vip_address"], 60)
    assert all(hits[m] > 0 for m in MEMBERS), hits


def _statuses(lab: OpenStackLab) -> dict[str, str]:
    return {x["name"]: x["operating_status"]
            for x in lab.os("p1user", "loadbalancer", "member", "list", "web-pool")}


def test_health_monitor_marks_a_stopped_server_down_and_back(world, lb):
    lab, traffic = world
    hm = lab.os("p1user", "loadbalancer", "healthmonitor", "create", "--name", "web-check",
                "--type", "HTTP", "--url-path", "/", "--expected-codes", "200",
                "--delay", str(DELAY), "--timeout", str(HM_TIMEOUT), "--max-retries",
                str(RETRIES), "--max-retries-down", str(RETRIES_DOWN), "web-pool")
    assert hm["operating_status"] == "ONLINE", hm
    wait_until(lambda: set(_statuses(lab).values()) == {"ONLINE"}, 60,
               "the health checker to find the three members ONLINE")

    traffic.kill_server("m2")
    t0 = time.monotonic()
    wait_until(lambda: _statuses(lab)["m2"] == "ERROR",
               DELAY * RETRIES_DOWN + HM_TIMEOUT + SLACK + 10, "m2 to be marked ERROR")
    took = time.monotonic() - t0
    # the store knew before the CLI's poll saw it: bounded by the figure
    entry = lab.mc.store.get_state(f"state/lb/members/{traffic.member_ids['m2']}")
    assert entry and entry["status"] == model.HEALTH_ERROR, entry
    print(f"m2 marked ERROR {took:.1f} s after its server died (bound "
          f"{DELAY * RETRIES_DOWN + HM_TIMEOUT} s + the CLI's poll)")
    pool = lab.os("p1user", "loadbalancer", "pool", "show", "web-pool")
    assert pool["operating_status"] == "DEGRADED", pool
    hits = _hits(traffic, lb["vip_address"], 60)
    assert hits["m2"] == 0 and hits["m1"] > 0 and hits["m3"] > 0, hits

    traffic.start_server("m2")
    wait_until(lambda: _statuses(lab)["m2"] == "ONLINE",
               DELAY * RETRIES + HM_TIMEOUT + SLACK + 10, "m2 to be ONLINE again")
    wait_until(lambda: _hits(traffic, lb["vip_address"], 30)["m2"] > 0, 20,
               "requests to reach m2 again")


def test_the_internet_through_a_floating_ip_on_the_vip_port(world, lb):
    lab, traffic = world
    lab.os("admin", "network", "create", "--external", "lbo-ext")
    lab.os("admin", "subnet", "create", "--network", "lbo-ext", "--subnet-range", EXT_CIDR,
           "--gateway", EXT_GW, "--no-dhcp", "lbo-ext-sub")
    lab.os("admin", "router", "set", "--external-gateway", "lbo-ext",
           lab.os("p1user", "router", "show", "lbo-router")["id"])
    inet_port = lab.os("admin", "port", "create", "--network", "lbo-ext", "--fixed-ip",
                       f"ip-address={EXT_IP}", "--no-security-group", "--disable-port-security",
                       "--host", lab.mc.hosts[0].name, "lbo-internet")
    inet = lab.plug(1, "lboinet", inet_port, EXT_CIDR, dhcp=None)
    inet.cmd(f"ip addr add {EXT_GW}/24 dev eth0")  # the router's next hop, as in the seed lab
    traffic.vms["inet"] = inet
    fip = lab.os("p1user", "floating", "ip", "create", "lbo-ext")
    lab.os("p1user", "floating", "ip", "set", "--port", lb["vip_port_id"],
           fip["floating_ip_address"])
    addr = fip["floating_ip_address"]
    wait_until(lambda: answered(traffic.requests("inet", 1, timeout=1, concurrency=1,
                                                 ip=addr)) == 1, 30,
               "the floating IP to answer the internet")
    hits = _hits(traffic, addr, 60, client="inet")
    assert all(hits[m] > 0 for m in MEMBERS), hits


def test_cascade_delete_leaves_nothing(world, lb):
    lab, _traffic = world
    lab.os("p1user", "loadbalancer", "delete", "--cascade", "web")
    assert lab.os("p1user", "loadbalancer", "list") == []
    assert all(lab.mc.store.list(k) == [] for k in model.LB_KINDS)
    assert lab.os("p1user", "port", "list", "--device-owner", "Octavia") == []
