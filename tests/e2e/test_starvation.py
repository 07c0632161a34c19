"""A VM blasting new flows at its host's agent loses its own packet-ins, not
its neighbours' (issue 13, goal 6): the agent's per-port fair packet-in queue
(midoflow/agent/fairqueue.py), its bound and how its drops show in
``midoflow status``. The latency figures are benchmarks/bench_starvation.py's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.cloudbench import REPO, SIM_COOKIE, Tenant, quiet_vm
from tests.helpers import wait_until
from topologies.cloud import ping

pytestmark = pytest.mark.e2e_hostile

QUEUE = 8  # packet-ins waiting per port: a meter burst (200) overflows it
A_IP, A_MAC = "192.168.1.11", "02:00:00:5e:01:0b"
B_IP, B_MAC = "192.168.1.21", "02:00:00:5e:01:15"
SINK_IP, SINK_MAC = "192.168.2.31", "02:00:00:5e:02:1f"
D_IP, D_MAC = "192.168.2.40", "02:00:00:5e:02:28"


def routed(mc, ten: Tenant, host: int, net: str, name: str, ip: str, mac: str):
    vm = mc.vm(host, net, name, f"{ip}/24", mac, dhcp=False)
    quiet_vm(vm)
    gw, _ = ten.gateway(net)
    vm.cmd(f"ip route add default via {gw}")
    return vm


@pytest.fixture(scope="module")
def lab(cloud_factory):
    mc = cloud_factory(2, tunnel="vxlan", agent_options={"packet_in_queue": QUEUE})
    ten = Tenant(mc, "fq")
    a = routed(mc, ten, 1, ten.b1, "fqa", A_IP, A_MAC)
    b = routed(mc, ten, 1, ten.b1, "fqb", B_IP, B_MAC)
    sink = routed(mc, ten, 1, ten.b2, "fqsink", SINK_IP, SINK_MAC)
    sink.cmd("sysctl -qw net.ipv4.ip_forward=0")
    d = routed(mc, ten, 2, ten.b2, "fqd", D_IP, D_MAC)
    mc.route(ten.router, "10.200.0.0/17", ten.rp2, SINK_IP)
    wait_until(lambda: ping(b, D_IP, count=1, timeout=1.0)[1] == 1, 15, "B to reach D")
    wait_until(lambda: ping(a, SINK_IP, count=1, timeout=1.0)[1] == 1, 15, "A to reach the sink")
    return mc, ten, a, b, d


def protection(mc, host) -> dict:
    for h in mc.api.get("/status").get("hosts") or []:
        if h.get("id") == mc.host_ids[host.name]:
            return h.get("protection") or {}
    return {}


def test_a_blasting_vm_overflows_only_its_own_queue(lab):
    mc, ten, a, b, d = lab
    h1 = mc.hosts[0]
    # new routed flows in bursts of 600 frames, 3,000/s: each burst lets the
    # port's meter burst (200 packet-ins) through at once, under storm control
    blaster = mc.cloud.popen(a, [sys.executable, "-m", "benchmarks.bench_starvation", "blast",
                                 "eth0", A_MAC, ten.mac1, A_IP, "0", "3000", "600"],
                             cwd=REPO, text=True, stdin=subprocess.DEVNULL)
    try:
        assert blaster.stdout.readline().strip() == "ready", blaster.stderr.read()
        drops = wait_until(lambda: (protection(mc, h1).get("queue_drops") or {}).get(a.port_id),
                           20, "the agent to report A's packet-ins dropped by its queue")
        assert drops > 0
        # B's first packets still get through, each a packet-in at the same agent
        for n in range(5):
            h1.ovs_ofctl("del-flows", f"{SIM_COOKIE},in_port={b.ofport}")
            assert ping(b, D_IP, count=1, timeout=2.0)[1] == 1, \
                f"B's first packet {n} to D was lost while A blasts"
        assert b.port_id not in (protection(mc, h1).get("queue_drops") or {})
    finally:
        blaster.terminate()
        blaster.communicate(timeout=10)
    exe = os.path.join(os.path.dirname(sys.executable), "midoflow")
    out = subprocess.run([exe, "--api", mc.api_server.url, "status"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"port {a.port_id}: " in out.stdout
    assert f"dropped by the agent's queue (limit {QUEUE} waiting per port)" in out.stdout
