"""Scenario 1: virtual bridges spanning hosts over VXLAN and GRE, with real
OVS instances, real agents and real packets."""

from __future__ import annotations

import time

import pytest

from tests.helpers import LivePing, read_until
from topologies.cloud import iperf_tcp, ping
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_l2


class Capture:
    """tcpdump on a VM's eth0: the frames from the given source MACs."""

    def __init__(self, vm, macs):
        flt = " or ".join(f"ether src {m}" for m in macs)
        self.proc = vm.popen(["tcpdump", "--immediate-mode", "-l", "-n", "-e", "-i", "eth0", flt],
                             text=True)
        read_until(self.proc, "^listening on", 10, "tcpdump to start capturing",
                   stream=self.proc.stderr)

    def stop(self) -> list[str]:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        return [line for line in out.splitlines() if line.strip()]


def mac(tenant: int, n: int) -> str:
    return f"02:00:00:{tenant:02x}:00:{n:02x}"


@pytest.fixture(scope="module")
def vx(cloud_factory):
    return cloud_factory(3, tunnel="vxlan")


def test_ping_and_tcp_across_hosts_over_vxlan(vx):
    b = vx.bridge("vx-net", "tenant-a")
    a = vx.vm(1, b, "va1", "192.168.5.1/24", mac(5, 1))
    c = vx.vm(2, b, "va2", "192.168.5.2/24", mac(5, 2))
    assert ping(a, "192.168.5.2", count=3) == (3, 3)
    assert ping(c, "192.168.5.1", count=3) == (3, 3)
    gbps = iperf_tcp(a, c, seconds=2)
    assert gbps > 0.05, f"TCP across hosts carried only {gbps:.3f} Gbit/s"
    # The flows the agents installed tunnel by port key: one VXLAN hop.
    flows = "\n".join(vx.hosts[0].dump_flows())
    assert "set_field:" in flows and "->tun_dst" in flows


def test_tenants_with_the_same_addresses_are_isolated(vx):
    ba = vx.bridge("iso-a", "tenant-a")
    bb = vx.bridge("iso-b", "tenant-b")
    a1 = vx.vm(1, ba, "ia1", "192.168.10.1/24", mac(10, 1))
    vx.vm(2, ba, "ia2", "192.168.10.2/24", mac(10, 2))
    b1 = vx.vm(3, bb, "ib1", "192.168.10.2/24", mac(11, 1))
    b2 = vx.vm(1, bb, "ib2", "192.168.10.1/24", mac(11, 2))
    caps = [Capture(vm, [mac(10, 1), mac(10, 2)]) for vm in (b1, b2)]
    assert ping(a1, "192.168.10.2", count=3) == (3, 3)
    # The answer came from tenant A's VM, not from B's VM with the same IP.
    neigh = a1.cmd("ip neigh show 192.168.10.2")
    assert mac(10, 2) in neigh and mac(11, 1) not in neigh
    # Tenant B's VMs saw nothing of it: not even the ARP broadcast.
    leaked = [line for c in caps for line in c.stop()]
    assert not leaked, f"tenant A's frames reached tenant B: {leaked[:3]}"
    # Tenant B works on its own with the same addresses.
    assert ping(b2, "192.168.10.2", count=3) == (3, 3)
    assert mac(11, 1) in b2.cmd("ip neigh show 192.168.10.2")


def test_vm_moved_to_another_host_keeps_working(vx):
    b = vx.bridge("mv-net", "tenant-m")
    a = vx.vm(1, b, "mv1", "192.168.20.1/24", mac(20, 1))
    m = vx.vm(2, b, "mv2", "192.168.20.2/24", mac(20, 2))
    assert ping(a, "192.168.20.2", count=2) == (2, 2)
    vx.cloud.move_vm(m, vx.hosts[2])
    vx.wait_port(m.port_id, vx.hosts[2])
    # The old host no longer delivers it; the new one does.
    wait_for(lambda: ping(a, "192.168.20.2", count=1)[1] == 1, 10, "ping after the move")
    assert ping(a, "192.168.20.2", count=3) == (3, 3)
    # Its old host holds no delivery flow for it any more.
    key = vx.api.request("GET", f"/ports/{m.port_id}")["tunnel_key"]
    assert not any(f"tun_id={key:#x}," in f for f in vx.hosts[1].dump_flows())


def test_deleted_port_stops_passing_traffic_within_one_second(vx):
    b = vx.bridge("del-net", "tenant-d")
    a = vx.vm(1, b, "dl1", "192.168.30.1/24", mac(30, 1))
    d = vx.vm(2, b, "dl2", "192.168.30.2/24", mac(30, 2))
    assert ping(a, "192.168.30.2", count=2) == (2, 2)
    pinger = LivePing(a, "192.168.30.2", count=60)
    t_delete = time.time()
    vx.api.request("DELETE", f"/ports/{d.port_id}")
    times = pinger.reply_times()
    assert any(t < t_delete for t in times), "no traffic passed before the delete"
    late = [t - t_delete for t in times if t > t_delete + 1.0]
    assert not late, f"replies still arrived {max(late):.2f} s after the port was deleted"
    # And it stays dead.
    assert ping(a, "192.168.30.2", count=2)[1] == 0


def test_port_down_stops_traffic_and_up_restores_it(vx):
    b = vx.bridge("adm-net", "tenant-s")
    a = vx.vm(1, b, "ad1", "192.168.40.1/24", mac(40, 1))
    s = vx.vm(3, b, "ad2", "192.168.40.2/24", mac(40, 2))
    assert ping(a, "192.168.40.2", count=2) == (2, 2)
    vx.api.request("PUT", f"/ports/{s.port_id}", {"admin_state_up": False})
    wait_for(lambda: ping(a, "192.168.40.2", count=1, timeout=0.5)[1] == 0, 5,
             "ping to stop after port down")
    assert ping(a, "192.168.40.2", count=3)[1] == 0  # and it stays stopped
    vx.api.request("PUT", f"/ports/{s.port_id}", {"admin_state_up": True})
    wait_for(lambda: ping(a, "192.168.40.2", count=1)[1] == 1, 5, "ping after port up")


def test_agent_restart_restores_forwarding(vx):
    b = vx.bridge("rs-net", "tenant-r")
    a = vx.vm(1, b, "rs1", "192.168.50.1/24", mac(50, 1))
    r = vx.vm(2, b, "rs2", "192.168.50.2/24", mac(50, 2))
    assert ping(a, "192.168.50.2", count=2) == (2, 2)
    h1 = vx.hosts[0]
    vx.kill_agent(h1)  # SIGKILL: a crash
    # With its agent gone, the flows already in OVS keep forwarding.
    assert ping(a, "192.168.50.2", count=3) == (3, 3)
    vx.start_agent(h1)
    vx.wait_agents([h1])
    # The restarted agent wipes and rebuilds its flows; new flows are simulated.
    wait_for(lambda: ping(a, "192.168.50.2", count=1)[1] == 1, 15, "ping after the restart")
    assert ping(a, "192.168.50.2", count=3) == (3, 3)
    assert ping(r, "192.168.50.1", count=3) == (3, 3)


def test_ping_and_tcp_over_gre(cloud_factory):
    gre = cloud_factory(2, tunnel="gre")
    b = gre.bridge("gre-net", "tenant-g")
    a = gre.vm(1, b, "g1", "192.168.60.1/24", mac(60, 1))
    c = gre.vm(2, b, "g2", "192.168.60.2/24", mac(60, 2))
    assert ping(a, "192.168.60.2", count=3) == (3, 3)
    gbps = iperf_tcp(c, a, seconds=2)
    assert gbps > 0.05
    flows = "\n".join(gre.hosts[0].dump_flows())
    assert "output:2" in flows  # gre0
    assert all("output:1" not in f for f in gre.hosts[0].dump_flows() if "tun_dst" in f)
