"""Scenarios 4 and 5: SNAT and floating IPs through the provider router, with
real OVS, real agents and an external namespace that no one configured as a
VM. SNAT is decided at each VM's own host (ports from blocks it leased), and
the binding reaches the uplink's host before the first packet does."""

from __future__ import annotations

import collections
import time

import pytest

from topologies.cloud import ping, whoami, whoami_server
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_stateful

PUBLIC = "203.0.113.10"
FIP = "203.0.113.20"
EXT = "198.51.100.254"


def mac(n: int) -> str:
    return f"02:00:00:0e:00:{n:02x}"


serve, connect = whoami_server, whoami


@pytest.fixture(scope="module")
def nat(cloud_factory):
    mc = cloud_factory(3, tunnel="vxlan")
    pr = mc.router("provider", "admin")
    net = mc.bridge("tenant-net", "t")
    mc.attach(pr, net, "192.168.50.1/24", "02:aa:00:00:0e:01")
    up = mc.router_port(pr, "198.51.100.1/24", "02:aa:00:00:0e:09", interior=False,
                        name="uplink")
    mc.route(pr, "0.0.0.0/0", up, EXT)
    mc.route(pr, "203.0.113.0/24", type="blackhole")  # public addresses without a binding
    vms = []
    for i in (1, 2, 3):
        vm = mc.vm(i, net, f"n{i}", f"192.168.50.{10 + i}/24", mac(i))
        vm.cmd("ip route add default via 192.168.50.1")
        vms.append(vm)
    v2 = vms[1].vm_ip.split("/")[0]
    pre = mc.chain("provider-in", [
        {"action": "dnat", "nw_dst": f"{FIP}/32",
         "nat_targets": [{"addr_from": v2, "addr_to": v2}]},
        {"action": "rev_snat"},
    ])
    post = mc.chain("provider-out", [
        {"action": "snat", "out_ports": [up], "nw_src": f"{v2}/32",
         "nat_targets": [{"addr_from": FIP, "addr_to": FIP}]},
        {"action": "snat", "out_ports": [up],
         "nat_targets": [{"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024,
                          "port_to": 65535}]},
    ])
    mc.api.request("PUT", f"/routers/{pr}", {"inbound_filter_id": pre,
                                             "outbound_filter_id": post})
    ext = mc.external(1, up, "ext", f"{EXT}/24", "02:00:00:0e:00:fe",
                      routes=(("203.0.113.0/24", "198.51.100.1"),))
    server = serve(ext, 8080)
    for vm in vms:  # the router learns the outside gateway and every VM
        wait_for(lambda vm=vm: ping(vm, EXT, count=1)[1] == 1, 15,
                 f"{vm.vm_name} to reach the external host")
    yield mc, vms, ext
    server.kill()


def test_snat_from_vms_on_three_hosts_shares_one_address_with_distinct_ports(nat):
    _, vms, _ = nat
    seen = collections.Counter()
    by_vm = {}
    for vm in (vms[0], vms[2]):  # vms[1] has a floating IP
        for _ in range(4):
            got = connect(vm, EXT, 8080)
            ip, _, port = got.partition(":")
            assert ip == PUBLIC, f"{vm.vm_name}: the server saw {got!r}"
            seen[int(port)] += 1
            by_vm.setdefault(vm.vm_name, set()).add(int(port))
    assert all(n == 1 for n in seen.values()), f"a port served two connections: {seen}"
    assert not by_vm["n1"] & by_vm["n3"]


def test_ping_through_snat(nat):
    _, vms, _ = nat
    assert ping(vms[2], EXT, count=3) == (3, 3)


def test_floating_ip_reaches_the_vm_and_its_traffic_leaves_with_it(nat):
    _, vms, ext = nat
    v2 = vms[1]
    assert ping(ext, FIP, count=3) == (3, 3)
    server = serve(v2, 8081)
    try:
        got = connect(ext, FIP, 8081)
        assert got.startswith(f"{EXT}:"), f"the VM saw {got!r}, not the external host"
    finally:
        server.kill()
    got = connect(v2, EXT, 8080)
    assert got.startswith(f"{FIP}:"), f"the external host saw {got!r}, not the floating IP"


def test_unsolicited_traffic_to_the_snat_address_goes_nowhere(nat):
    _, _, ext = nat
    assert ping(ext, PUBLIC, count=2)[1] == 0
    t0 = time.monotonic()
    out = connect(ext, PUBLIC, 8080)
    assert ":" not in out or "Error" in out or "timed out" in out, out
    assert time.monotonic() - t0 < 15
