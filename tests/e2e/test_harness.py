"""The cloud-on-one-machine harness itself (topologies/cloud.py), not midoflow.

Two cloud hosts, each its own OVS in its own namespace, VMs on them, static
hand-written flows (no controller): ping and TCP over VXLAN and over GRE,
isolation, VM migration, a dead host, an OpenFlow controller listening on the
host's unix socket, and a clean teardown.

Run: sudo .venv/bin/python -m pytest -m e2e_l2 tests/e2e/test_harness.py -v -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.helpers import require, wait_until
from topologies.cloud import (
    Cloud,
    clear_flows,
    install_static_l2_flows,
    iperf_tcp,
    ping,
)

pytestmark = pytest.mark.e2e_l2


@pytest.fixture(scope="module", autouse=True)
def _needs_ovs_and_mininet():
    require(root=True, tools=("ovs-vswitchd", "mnexec"))

SUBNET = "10.231.0.0/24"


def _links(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(prefix)]


def _procs(needle: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if needle in ln and "ps -eo" not in ln]


def _rx_packets(vm) -> int:
    return int(vm.cmd("cat /sys/class/net/eth0/statistics/rx_packets").strip() or 0)


@pytest.fixture(scope="module")
def cloud():
    c = Cloud(n_hosts=2, subnet=SUBNET)
    try:
        c.start()
        print(f"\n[harness] 2-host cloud {c.prefix} built in {c.build_seconds:.2f} s")
        h1, h2 = c.hosts
        c.add_vm(h1, "vm1", "192.168.10.1/24", "02:00:00:0a:00:01", iface_id="port-vm1")
        c.add_vm(h2, "vm2", "192.168.10.2/24", "02:00:00:0a:00:02", iface_id="port-vm2")
        # Same subnet, no flows: must stay unreachable.
        c.add_vm(h2, "vm3", "192.168.10.3/24", "02:00:00:0a:00:03", iface_id="port-vm3")
        yield c
    finally:
        c.stop()
    assert _links(c.prefix) == [], "stop() left interfaces behind"


def test_hosts_and_underlay(cloud):
    h1, h2 = cloud.hosts
    info = cloud.host_info(h1)
    assert info["vxlan_ofport"] == 1 and info["gre_ofport"] == 2
    assert info["underlay_ip"] == "10.231.0.1"
    assert cloud.host_info(h2)["underlay_ip"] == "10.231.0.2"
    assert os.path.exists(info["db_sock"]) and os.path.exists(info["mgmt_sock"])
    assert len(info["of_sock"]) < 100  # unix socket path limit
    out = h1.ns_run("ping", "-c", "2", "-i", "0.2", "-W", "1", "10.231.0.2", check=False)
    assert " 0% packet loss" in out, out
    # Each host has its own OVS: its ovsdb knows only its own bridges.
    assert sorted(h2.ovs_vsctl("list-br").split()) == ["br-int", "br-phy"]
    assert cloud.vms["vm1"].ofport >= 3 and "port-vm1" in h1.ovs_vsctl(
        "get", "Interface", cloud.vms["vm1"].tap, "external_ids")


def test_no_flows_no_traffic(cloud):
    clear_flows(cloud)
    vm1 = cloud.vms["vm1"]
    assert ping(vm1, "192.168.10.2", count=2, timeout=0.5)[1] == 0


@pytest.mark.parametrize("encap", ["vxlan", "gre"])
def test_static_l2_ping_tcp_isolation(cloud, encap):
    vm1, vm2, vm3 = (cloud.vms[n] for n in ("vm1", "vm2", "vm3"))
    clear_flows(cloud)
    install_static_l2_flows(cloud, [vm1, vm2], encap=encap)
    sent, recv = ping(vm1, "192.168.10.2", count=3)
    assert recv == sent, f"{encap}: VM ping lost {sent - recv}/{sent}"
    gbps = iperf_tcp(vm1, vm2, seconds=2)
    print(f"\n[harness] iperf3 vm1->vm2 over {encap} (static flows): {gbps:.2f} Gbit/s")
    assert gbps > 0.01, f"TCP over {encap} does not flow (tx offload on?)"
    # The tunnel port of this encapsulation carried it.
    tun = cloud.hosts[0].vxlan_ofport if encap == "vxlan" else cloud.hosts[0].gre_ofport
    used = [f for f in cloud.hosts[0].dump_flows()
            if f"output:{tun}" in f and "n_packets=0," not in f]
    assert used, cloud.hosts[0].dump_flows()
    # Isolation: vm3 (no flows) sees nothing and cannot be reached.
    before = _rx_packets(vm3)
    assert ping(vm1, "192.168.10.3", count=2, timeout=0.5)[1] == 0
    assert ping(vm3, "192.168.10.1", count=2, timeout=0.5)[1] == 0
    assert _rx_packets(vm3) == before


def test_move_vm(cloud):
    vm1, vm2 = cloud.vms["vm1"], cloud.vms["vm2"]
    pid = vm2.pid
    h1, h2 = cloud.hosts
    cloud.move_vm(vm2, h1)
    assert vm2.pid == pid and vm2.cloud_host is h1
    assert "02:00:00:0a:00:02" in vm2.cmd("cat /sys/class/net/eth0/address")
    assert "192.168.10.2/24" in vm2.cmd("ip -br addr show eth0")
    assert vm2.tap not in h2.ovs_vsctl("list-ports", "br-int").split()
    assert "port-vm2" in h1.ovs_vsctl("get", "Interface", vm2.tap, "external_ids")
    clear_flows(cloud)
    install_static_l2_flows(cloud, [vm1, vm2])  # now both local to h1
    sent, recv = ping(vm1, "192.168.10.2", count=3)
    assert recv == sent
    cloud.move_vm(vm2, h2)
    clear_flows(cloud)
    install_static_l2_flows(cloud, [vm1, vm2])
    sent, recv = ping(vm1, "192.168.10.2", count=3)
    assert recv == sent


def test_controller_on_unix_socket(cloud):
    """An os-ken process in the ROOT namespace listening on of.sock gets the
    connection from the OVS inside the host namespace (the agent's setup)."""
    manager = os.path.join(os.path.dirname(sys.executable), "osken-manager")
    require(files=(manager,))
    h1 = cloud.hosts[0]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # midoflow.apps.ofp_unix: os-ken 3.1 otherwise drops unix-socket connections
    # (setsockopt TCP_NODELAY -> EOPNOTSUPP).
    cloud.start_agent(h1, [manager, "--ofp-listen-host", h1.of_sock,
                           "--ofp-tcp-listen-port", "6653", "midoflow.apps.ofp_unix",
                           "os_ken.controller.ofp_handler"], env={"PYTHONPATH": repo})
    try:
        cloud.wait_controller_connected(h1, timeout=20)
    finally:
        cloud.kill_agent(h1)
    assert not os.path.exists(h1.of_sock)


def test_agent_config_file(cloud):
    from midoflow.agent import config
    path = cloud.write_agent_config(cloud.hosts[1], zookeeper="127.0.0.1:2181")
    cfg = config.AgentConfig.load(path)
    assert cfg.tunnel_ip == "10.231.0.2" and cfg.of_listen == cloud.hosts[1].of_sock
    assert cfg.ovsdb == f"unix:{cloud.hosts[1].db_sock}"


def test_kill_ovs_is_a_dead_host(cloud):
    vm1, vm2 = cloud.vms["vm1"], cloud.vms["vm2"]
    h2 = cloud.hosts[1]
    clear_flows(cloud)
    install_static_l2_flows(cloud, [vm1, vm2])
    assert ping(vm1, "192.168.10.2", count=2)[1] == 2
    h2.kill_ovs()
    wait_until(lambda: not _procs(f"{h2.rundir}/ovs-vswitchd.pid"), 5, "ovs-vswitchd to die")
    assert ping(vm1, "192.168.10.2", count=2, timeout=0.5)[1] == 0


def test_build_times_and_teardown():
    """Build (and tear down) a 3-host cloud; nothing is left behind."""
    c = Cloud(n_hosts=3, subnet="10.232.0.0/24")
    basedir = c.basedir
    try:
        c.start()
        print(f"\n[harness] 3-host cloud built in {c.build_seconds:.2f} s")
        h3 = c.hosts[2]
        assert c.host_info(h3)["underlay_ip"] == "10.232.0.3"
        out = h3.ns_run("ping", "-c", "1", "-W", "1", "10.232.0.1", check=False)
        assert " 0% packet loss" in out
        c.add_vm(h3, "vmx", "192.168.20.1/24", "02:00:00:14:00:01")
    finally:
        t = time.monotonic()
        c.stop()
        print(f"[harness] 3-host cloud torn down in {time.monotonic() - t:.2f} s")
    assert _links(c.prefix) == []
    assert not _procs(basedir)
    assert not os.path.exists(basedir)
    c.stop()  # idempotent
