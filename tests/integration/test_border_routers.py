"""Real border routers (topologies/border.py) without midoflow agents.

::

    internet (FRR, AS 65100) 198.51.100.100 ── LAN bridge ──┬── border1 FRR   .1 (AS 65000)
                                                            └── border2 GoBGP .2 (AS 65000)
    border1 eth0 192.0.2.2/30 ── up1 192.0.2.1/30 ┐
    border2 eth0 192.0.2.6/30 ── up2 192.0.2.5/30 ┴ gateway (FRR, AS 64512), lo 203.0.113.1

The gateway stand-in advertises 203.0.113.0/24; both border routers send it a
default route (and nothing else does); the border routers talk iBGP with
next-hop-self over the LAN, like the gateway lab; the internet host learns the
range from both by BGP (ECMP). Timers: keepalive 1 s, hold 3 s. The tests of
the ``lab`` fixture run in order (they share its state).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time

import pytest

from tests.helpers import require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _needs_root_frr_gobgp_mininet():
    require(root=True, tools=("gobgpd", "mnexec"), files=("/usr/lib/frr/bgpd",))

CLOUD = "203.0.113.0/24"
CLOUD_ADDR = "203.0.113.1"
DEFAULT = "0.0.0.0/0"
GW_AS, BORDER_AS, INTERNET_AS = 64512, 65000, 65100
KEEPALIVE, HOLD = 1, 3
B1_UP, B2_UP = "192.0.2.2", "192.0.2.6"  # border routers' uplink addresses
GW1, GW2 = "192.0.2.1", "192.0.2.5"  # the gateway's addresses facing them
B1_LAN, B2_LAN, INTERNET = "198.51.100.1", "198.51.100.2", "198.51.100.100"

TIMINGS: dict[str, float] = {}


class _Nodes:
    """Mininet hosts made by a fixture, removed (with every process inside)
    even when the fixture failed half way."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes = []

    def host(self, name: str):
        from mininet.node import Host

        h = Host(f"{self.prefix}{name}", inNamespace=True)
        self.nodes.append(h)
        return h

    def link(self, a, ia: str, ip_a: str, b, ib: str, ip_b: str) -> None:
        from mininet.link import Link

        from topologies.border import ns_run

        Link(a, b, intfName1=ia, intfName2=ib)
        for node, intf, ip in ((a, ia, ip_a), (b, ib, ip_b)):
            ns_run(node, "ip", "addr", "add", ip, "dev", intf)
            ns_run(node, "ip", "link", "set", intf, "up")
            ns_run(node, "ip", "link", "set", "lo", "up")

    def stop(self) -> None:
        from topologies.cloud import _kill_netns_processes, _netns_inode

        inodes = {_netns_inode(n.pid) for n in self.nodes
                  if n.shell is not None and n.shell.poll() is None}
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.terminate()
        _kill_netns_processes(inodes)


def _prefix(tag: str) -> str:
    return f"mfl{tag}{os.urandom(2).hex()}"  # mfl*: scripts/cleanup.sh finds leftovers


@pytest.fixture(scope="module")
def lab():
    from topologies.border import FrrRouter, GobgpRouter, Upstream, ns_run

    prefix = _prefix("b")
    workdir = tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp")
    nodes = _Nodes(prefix)
    up = Upstream(prefix)
    routers = []
    lab = type("Lab", (), {})()
    try:
        up.start()
        gw, b1, b2 = nodes.host("gw"), nodes.host("b1"), nodes.host("b2")
        nodes.link(gw, "up1", f"{GW1}/30", b1, "eth0", f"{B1_UP}/30")
        nodes.link(gw, "up2", f"{GW2}/30", b2, "eth0", f"{B2_UP}/30")
        ns_run(gw, "ip", "addr", "add", f"{CLOUD_ADDR}/32", "dev", "lo")
        up.connect(b1, f"{B1_LAN}/24")
        up.connect(b2, f"{B2_LAN}/24")

        g = FrrRouter(gw, f"{prefix}gw", GW_AS, GW1, os.path.join(workdir, "gw"))
        g.add_neighbor(B1_UP, BORDER_AS, KEEPALIVE, HOLD)
        g.add_neighbor(B2_UP, BORDER_AS, KEEPALIVE, HOLD)
        g.add_network(CLOUD)
        r1 = FrrRouter(b1, f"{prefix}b1", BORDER_AS, B1_LAN, os.path.join(workdir, "b1"))
        r2 = GobgpRouter(b2, f"{prefix}b2", BORDER_AS, B2_LAN, os.path.join(workdir, "b2"))
        for r, gw_ip, other in ((r1, GW1, B2_LAN), (r2, GW2, B1_LAN)):
            r.add_neighbor(gw_ip, GW_AS, KEEPALIVE, HOLD, default_originate=True)
            r.add_neighbor(other, BORDER_AS, KEEPALIVE, HOLD, next_hop_self=True)
            r.add_neighbor(INTERNET, INTERNET_AS, KEEPALIVE, HOLD)
        routers += [r1, r2, g]
        t0 = time.monotonic()
        for r in routers:
            r.start()
        TIMINGS["start 3 routers (s)"] = time.monotonic() - t0
        ir = up.start_bgp({B1_LAN: BORDER_AS, B2_LAN: BORDER_AS}, asn=INTERNET_AS)
        lab.t0, lab.up, lab.gw, lab.g, lab.r1, lab.r2, lab.ir = t0, up, gw, g, r1, r2, ir
        yield lab
    finally:
        for r in routers:
            with contextlib.suppress(Exception):
                r.stop()
        up.stop()
        nodes.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if TIMINGS:
            print("\nborder router timings:")
            for k, v in TIMINGS.items():
                print(f"  {k}: {v:.2f}")


def _fail_with_logs(e: Exception, *routers):
    logs = "\n".join(f"--- {r.name} ---\n{r.log_tail(20)}" for r in routers)
    pytest.fail(f"{e}\n{logs}", pytrace=False)


def test_sessions_established_on_both_sides(lab):
    pairs = [(lab.r1, GW1), (lab.r2, GW2), (lab.g, B1_UP), (lab.g, B2_UP),
             (lab.r1, B2_LAN), (lab.r2, B1_LAN), (lab.r1, INTERNET), (lab.r2, INTERNET),
             (lab.ir, B1_LAN), (lab.ir, B2_LAN)]
    try:
        for r, ip in pairs:
            r.wait_established(ip, timeout=15)
    except TimeoutError as e:
        _fail_with_logs(e, lab.r1, lab.r2, lab.g)
    TIMINGS["all 10 sessions established after the first start (s)"] = \
        time.monotonic() - lab.t0
    assert lab.g.neighbors() == {B1_UP: "established", B2_UP: "established"}
    assert set(lab.r2.neighbors().values()) == {"established"}


def test_border_ribs_and_fibs_hold_the_cloud_prefix(lab):
    # RIB: every path (eBGP from the gateway, iBGP next-hop-self from the other
    # border router); FIB: the best one, via the gateway
    lab.r1.wait_rib(CLOUD, {GW1, B2_LAN}, timeout=10)
    lab.r2.wait_rib(CLOUD, {GW2, B1_LAN}, timeout=10)
    lab.r1.wait_fib(CLOUD, {GW1}, timeout=10)
    lab.r2.wait_fib(CLOUD, {GW2}, timeout=10)


def test_default_route_originated_to_the_gateway_only(lab):
    lab.g.wait_rib(DEFAULT, {B1_UP, B2_UP}, timeout=10)
    lab.g.wait_fib(DEFAULT, {B1_UP, B2_UP}, timeout=10)  # ECMP in the gateway's kernel
    assert DEFAULT not in lab.ir.rib()  # not to the internet host...
    assert DEFAULT not in lab.r1.rib()  # ...nor over iBGP (GoBGP's export policy)
    assert lab.r2.rib()[DEFAULT] == ["0.0.0.0"]  # GoBGP's own, not installed in its FIB
    assert DEFAULT not in lab.r2.fib()


def test_internet_learns_the_cloud_prefix_by_bgp_with_ecmp(lab):
    from topologies.border import ns_run

    lab.ir.wait_rib(CLOUD, {B1_LAN, B2_LAN}, timeout=10)
    lab.ir.wait_fib(CLOUD, {B1_LAN, B2_LAN}, timeout=10)
    used = set()
    for sport in range(40000, 40032):
        out = ns_run(lab.up.internet, "ip", "-j", "route", "get", CLOUD_ADDR, "ipproto", "udp",
                     "sport", str(sport), "dport", "53")
        used.add(json.loads(out)[0]["gateway"])
    assert used == {B1_LAN, B2_LAN}, "the L4 hash should spread flows over both"


def test_internet_pings_the_cloud(lab):
    lab.up.ping(CLOUD_ADDR, count=1)  # ARP on the way
    assert lab.up.ping(CLOUD_ADDR, count=3) == (3, 3)


def test_static_route_via(lab):
    from topologies.border import kernel_routes

    lab.up.route_via("100.64.0.0/24", [B1_LAN, B2_LAN])
    assert kernel_routes(lab.up.internet)["100.64.0.0/24"] == [B1_LAN, B2_LAN]
    lab.up.route_via(f"{GW1}/32", [B1_LAN])
    assert lab.up.ping(GW1, count=2) == (2, 2)


def test_withdrawn_network_leaves_ribs_and_fibs(lab):
    t0 = time.monotonic()
    lab.g.remove_network(CLOUD)
    try:
        for r in (lab.r1, lab.r2, lab.ir):
            r.wait_rib(CLOUD, None, timeout=5)
            r.wait_fib(CLOUD, None, timeout=5)
    except TimeoutError as e:
        _fail_with_logs(e, lab.r1, lab.r2)
    TIMINGS["withdrawal gone from both borders + internet RIB/FIB (s)"] = \
        time.monotonic() - t0
    lab.g.add_network(CLOUD)  # back for the next tests
    lab.r1.wait_fib(CLOUD, {GW1}, timeout=5)
    lab.r2.wait_fib(CLOUD, {GW2}, timeout=5)
    lab.ir.wait_fib(CLOUD, {B1_LAN, B2_LAN}, timeout=5)


def _drop_times(lab, timeout: float = HOLD + 5) -> dict[str, float]:
    """Seconds until the cloud prefix left each border router's RIB and FIB
    (polled together, so neither waits for the other)."""
    t0 = time.monotonic()
    tables = {"FRR RIB": lab.r1.rib, "FRR FIB": lab.r1.fib,
              "GoBGP RIB": lab.r2.rib, "GoBGP FIB": lab.r2.fib}
    gone: dict[str, float] = {}
    last = {}
    while len(gone) < len(tables):
        for k, table in tables.items():
            if k not in gone:
                last[k] = table().get(CLOUD)
                if last[k] is None:
                    gone[k] = time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{CLOUD} still present after {timeout} s: {last}")
        time.sleep(0.02)
    return gone


def test_hung_gateway_dropped_at_hold_time(lab):
    """SIGSTOP: no FIN, no keepalives -- only the hold timer can notice."""
    lab.g.kill(signal.SIGSTOP)
    try:
        times = _drop_times(lab)
    except TimeoutError as e:
        _fail_with_logs(e, lab.r1, lab.r2)
    finally:
        lab.g.kill(signal.SIGCONT)
    for k, t in times.items():
        TIMINGS[f"hung gateway (SIGSTOP): gone from {k} (s, hold {HOLD})"] = t
    # the last keepalive came at most KEEPALIVE s before the freeze
    assert all(HOLD - KEEPALIVE - 0.5 < t < HOLD + 2 for t in times.values()), times
    TIMINGS["FRR re-established after the gateway resumed (s)"] = \
        lab.r1.wait_established(GW1, timeout=20)
    TIMINGS["GoBGP re-established after the gateway resumed (s)"] = \
        lab.r2.wait_established(GW2, timeout=20)
    lab.r1.wait_fib(CLOUD, {GW1}, timeout=5)
    lab.r2.wait_fib(CLOUD, {GW2}, timeout=5)


def test_killed_gateway_dropped_within_hold_time(lab):
    """kill -9: the kernel closes the TCP sessions, the borders drop at once."""
    lab.g.kill(signal.SIGKILL)
    try:
        times = _drop_times(lab)
    except TimeoutError as e:
        _fail_with_logs(e, lab.r1, lab.r2)
    for k, t in times.items():
        TIMINGS[f"killed gateway (SIGKILL): gone from {k} (s, hold {HOLD})"] = t
    assert all(t < HOLD + 2 for t in times.values()), times
    lab.ir.wait_rib(CLOUD, None, timeout=5)
    assert lab.r1.neighbors()[GW1] != "established"
    assert lab.r2.neighbors()[GW2] != "established"


# -- several FRR instances on one machine -----------------------------------------

def test_two_frr_instances_run_at_once(tmp_path):
    from topologies.border import FrrRouter
    from topologies.cloud import _netns_inode

    prefix = _prefix("p")
    nodes = _Nodes(prefix)
    routers = []
    try:
        a, b = nodes.host("a"), nodes.host("b")
        nodes.link(a, "eth0", "10.99.0.1/30", b, "eth0", "10.99.0.2/30")
        # the same router name in both: only the workdir tells them apart
        ra = FrrRouter(a, "border", 65201, "10.99.0.1", str(tmp_path / "a"))
        rb = FrrRouter(b, "border", 65202, "10.99.0.2", str(tmp_path / "b"))
        ra.add_neighbor("10.99.0.2", 65202)
        rb.add_neighbor("10.99.0.1", 65201)
        ra.add_network("10.201.0.0/16")
        rb.add_network("10.202.0.0/16")
        routers += [ra, rb]
        ra.start()
        rb.start()
        ra.wait_established("10.99.0.2", timeout=15)
        rb.wait_established("10.99.0.1", timeout=15)
        assert ra.pid != rb.pid
        assert _netns_inode(ra.pid) == _netns_inode(a.pid) != _netns_inode(rb.pid)
        assert '"routerId":"10.99.0.1"' in ra.vtysh("show bgp summary json").replace(" ", "")
        assert '"routerId":"10.99.0.2"' in rb.vtysh("show bgp summary json").replace(" ", "")
        ra.wait_fib("10.202.0.0/16", {"10.99.0.2"}, timeout=10)
        rb.wait_fib("10.201.0.0/16", {"10.99.0.1"}, timeout=10)
        ra.stop()
        assert ra.pid is None and rb.pid is not None
        rb.wait_rib("10.201.0.0/16", None, timeout=HOLD + 2)
        assert rb.neighbors()["10.99.0.1"] != "established"
        assert not os.path.exists(tmp_path / "a" / "bgpd.pid") or ra.pid is None
    finally:
        for r in routers:
            r.stop()
        nodes.stop()


def test_gobgp_fib_sync_ecmp_and_flush_when_gobgpd_dies(tmp_path):
    """Two FRR peers advertise one prefix to GoBGP: an ECMP kernel route; when
    gobgpd dies its routes leave the kernel (as zebra's do when bgpd dies)."""
    from topologies.border import FrrRouter, GobgpRouter

    prefix = _prefix("g")
    nodes = _Nodes(prefix)
    routers = []
    try:
        a1, a2, b = nodes.host("a1"), nodes.host("a2"), nodes.host("b")
        nodes.link(a1, "eth0", "10.98.0.1/30", b, "eth1", "10.98.0.2/30")
        nodes.link(a2, "eth0", "10.98.0.5/30", b, "eth2", "10.98.0.6/30")
        rb = GobgpRouter(b, f"{prefix}b", 65300, "10.98.0.2", str(tmp_path / "b"))
        for i, (node, ip, peer) in enumerate(((a1, "10.98.0.1", "10.98.0.2"),
                                              (a2, "10.98.0.5", "10.98.0.6")), 1):
            r = FrrRouter(node, f"{prefix}a{i}", 65300 + i, ip, str(tmp_path / f"a{i}"))
            r.add_neighbor(peer, 65300)
            r.add_network("10.203.0.0/16")
            rb.add_neighbor(ip, 65300 + i)
            routers.append(r)
        routers.append(rb)
        for r in routers:
            r.start()
        rb.wait_rib("10.203.0.0/16", {"10.98.0.1", "10.98.0.5"}, timeout=15)
        rb.wait_fib("10.203.0.0/16", {"10.98.0.1", "10.98.0.5"}, timeout=5)
        rb.kill(signal.SIGKILL)
        t = rb.wait_fib("10.203.0.0/16", None, timeout=5)
        TIMINGS["GoBGP killed: its FIB flushed by the sync after (s)"] = t
        assert t < 3
    finally:
        for r in routers:
            r.stop()
        nodes.stop()


def test_bad_timers_are_refused(tmp_path):
    from topologies.border import BorderError, FrrRouter, GobgpRouter

    for cls in (FrrRouter, GobgpRouter):
        r = cls(type("N", (), {"pid": 1})(), "x", 65000, "10.0.0.1", str(tmp_path / "x"))
        with pytest.raises(BorderError, match="hold"):
            r.add_neighbor("10.0.0.2", 65001, keepalive=1, hold=2)
        r.stop()
