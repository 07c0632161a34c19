"""The OVN lab (topologies/ovncloud.py) the side-by-side benchmark compares
midoflow with: OVN 23.03 from Debian on three cloud hosts (own userspace OVS
each), two logical switches on one distributed router. It must route across
hosts, bind a new port, and leave nothing behind."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.helpers import wait_until
from topologies.cloud import ping, whoami, whoami_server

pytestmark = pytest.mark.ovn_lab


@pytest.fixture(scope="module")
def lab():
    from topologies.ovncloud import OvnCloud

    with OvnCloud(n_hosts=3) as oc:
        oc.router("r0", {"ls1": "10.0.1.1/24", "ls2": "10.0.2.1/24"})
        yield oc


def test_routed_ping_and_tcp_between_hosts(lab):
    a = lab.vm(1, "ls1", "a", "10.0.1.10/24", "02:00:00:00:01:0a", "10.0.1.1")
    b = lab.vm(2, "ls2", "b", "10.0.2.20/24", "02:00:00:00:02:14", "10.0.2.1")
    assert ping(a, "10.0.2.20", count=3) == (3, 3)
    out = a.cmd("ping -c 1 -W 1 10.0.2.20")
    assert re.search(r"ttl=63\b", out), f"not routed once (TTL 64 - 1): {out}"
    srv = whoami_server(b, 7001)
    try:
        assert whoami(a, "10.0.2.20", 7001).startswith("10.0.1.10:")
    finally:
        srv.kill()
    # the packets went over the geneve tunnel between host 1 and host 2
    flows = lab.hosts[0].ovs_ofctl("dump-flows", check=False)
    assert re.search(r"n_packets=[1-9].*output:\d+", flows)


def test_new_port_bound_by_iface_id_becomes_reachable(lab):
    c = lab.plug(3, "c", "10.0.1.30/24", "02:00:00:00:01:1e", "10.0.1.1")
    assert ping(c, "10.0.1.1", count=1, timeout=0.5) == (1, 0), "reachable before binding"
    lsp = f"{lab.prefix}-c"
    lab.lsp_add("ls1", lsp, "02:00:00:00:01:1e", "10.0.1.30")
    lab.bind(c, lsp)
    wait_until(lambda: lab.port_up(lsp), 20, f"OVN to report {lsp} up")
    wait_until(lambda: ping(c, "10.0.2.20", count=1, timeout=0.5)[1] == 1, 10,
               "the new VM on host 3 to reach 10.0.2.20 on host 2")


def _connect(vm, ip: str, port: int) -> str:
    """"open", "refused" or "timeout" (1 s) for a TCP connection from ``vm``."""
    code = ("import socket,sys\ns=socket.socket(); s.settimeout(1)\n"
            "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('open')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except OSError: print('timeout')\n")
    out, _ = vm.popen(["python3", "-c", code, ip, str(port)], stdout=subprocess.PIPE,
                      text=True).communicate(timeout=10)
    return out.strip()


def test_security_group_admits_only_its_port_and_replies(lab):
    a, b = lab.vms["a"], lab.vms["b"]
    servers = [whoami_server(b, 7002), whoami_server(b, 7003)]
    try:
        assert _connect(a, "10.0.2.20", 7003) == "open"
        lab.security_group("web", [a.iface_id, b.iface_id], (7002,))
        assert _connect(a, "10.0.2.20", 7002) == "open"
        assert _connect(a, "10.0.2.20", 7003) == "timeout"  # dropped, not refused
        assert ping(a, "10.0.2.20", count=1) == (1, 0)  # no ICMP rule
    finally:
        for s in servers:
            s.kill()


def test_stop_leaves_no_daemon_and_no_directory():
    from topologies.ovncloud import OvnCloud

    oc = OvnCloud(n_hosts=1)
    oc.start()
    basedir = oc.cloud.basedir
    pids = []
    for p in oc._pidfiles:
        with open(p) as f:
            pids.append(int(f.read()))
    assert len(pids) == 4  # NB, SB, northd, one ovn-controller
    oc.stop()

    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] in ("Z", "X")  # reaped later
        except OSError:
            return True
    wait_until(lambda: all(gone(p) for p in pids), 5, "the OVN daemons to exit")
    assert not os.path.exists(basedir)
