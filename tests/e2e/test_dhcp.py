"""Issue 12, item 1: DHCP answered by the agent of the VM's host. VMs with
no address run real clients (ISC dhclient, busybox udhcpc) in their
namespaces and get their port's address, prefix, default route, host
routes and MTU; a client asking for another port's address gets DHCPNAK at
once and then its own address."""

from __future__ import annotations

import json
import os
import sys
import tempfile

import pytest

from topologies import dhcp_clients
from topologies.cloud import ping
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_services

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RMAC1, RMAC2 = "02:aa:00:00:12:01", "02:aa:00:00:12:02"
HOST_ROUTE = ("172.16.0.0/16", "10.0.0.254")


class Lab:
    """Router r: 10.0.0.1 on bridge b (MTU unset: 1450), 10.0.1.1 on b1400
    (MTU 1400); a DHCP subnet on each; VMs with no address."""

    def __init__(self, mc) -> None:
        self.mc = mc
        self.vms: list = []
        api = mc.api
        self.r = mc.router("dhcp-r")
        self.b = mc.bridge("dhcp-net")
        self.b1400 = api.request("POST", "/bridges", {"name": "dhcp-1400", "mtu": 1400})["id"]
        mc.attach(self.r, self.b, "10.0.0.1/24", RMAC1)
        mc.attach(self.r, self.b1400, "10.0.1.1/24", RMAC2)
        api.request("POST", f"/bridges/{self.b}/dhcp_subnets", {
            "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "dns_servers": ["10.0.0.2"],
            "domain_name": "dhcp.test", "lease_time": 600,
            "host_routes": [{"destination": HOST_ROUTE[0], "nexthop": HOST_ROUTE[1]}]})
        api.request("POST", f"/bridges/{self.b1400}/dhcp_subnets", {
            "cidr": "10.0.1.0/24", "gateway_ip": "10.0.1.1"})

    def vm(self, host: int, bridge: str, name: str, ip: str, mac: str):
        """A VM whose port has fixed IP ``ip``; its eth0 has no address."""
        mc = self.mc
        pid = mc.api.request("POST", f"/bridges/{bridge}/ports",
                             {"name": name, "mac": mac, "fixed_ips": [ip]})["id"]
        h = mc.cloud.host(host)
        vm = mc.cloud.add_vm(h, name, None, mac, iface_id=pid)
        vm.port_id = pid
        self.vms.append(vm)
        vm.cmd("ip addr flush dev eth0; ip link set eth0 mtu 1500 up")  # as booted
        mc.wait_port(pid, h)
        return vm

    def close(self) -> None:
        for vm in self.vms:
            dhcp_clients.release(vm)


@pytest.fixture(scope="module")
def lab(cloud_factory):
    lab = Lab(cloud_factory(2))
    yield lab
    lab.close()


def configured(vm) -> dict:
    """What the VM's namespace holds now: eth0's address and MTU, routes."""
    addr = vm.cmd("ip -4 -o addr show dev eth0").split()
    mtu = vm.cmd("cat /sys/class/net/eth0/mtu").strip()
    return {"addr": addr[3] if len(addr) > 3 else None, "mtu": int(mtu),
            "routes": vm.cmd("ip -4 route show").splitlines()}


def check_lease(vm, got: dict, ip: str, mtu: int, host_route: bool = True) -> None:
    now = configured(vm)
    assert (got["ip"], got["prefix"], got["mtu"]) == (ip, 24, mtu)
    assert now["addr"] == f"{ip}/24" and now["mtu"] == mtu
    gw = ip.rsplit(".", 1)[0] + ".1"
    assert any(r.startswith(f"default via {gw} ") for r in now["routes"]), now["routes"]
    if host_route:
        assert [HOST_ROUTE[0], HOST_ROUTE[1]] in got["routes"]
        assert any(r.startswith(f"{HOST_ROUTE[0]} via {HOST_ROUTE[1]} ")
                   for r in now["routes"]), now["routes"]
        assert got["dns"] == ["10.0.0.2"] and got["domain"] == "dhcp.test"


def test_dhclient_and_udhcpc_on_two_hosts_get_address_routes_mtu_and_talk(lab):
    v1 = lab.vm(1, lab.b, "dh1", "10.0.0.5", "02:00:00:12:00:05")
    v2 = lab.vm(2, lab.b, "dh2", "10.0.0.6", "02:00:00:12:00:06")
    a = dhcp_clients.dhclient(v1)
    b = dhcp_clients.udhcpc(v2)
    print(f"\ndhclient: configured in {a['seconds']:.3f} s; udhcpc: {b['seconds']:.3f} s")
    check_lease(v1, a, "10.0.0.5", 1450)
    check_lease(v2, b, "10.0.0.6", 1450)
    assert a["lease"] == 600 and b["lease"] == 600
    wait_for(lambda: ping(v1, "10.0.0.6", count=1)[1] == 1, 10, "dh1 -> dh2 ping")
    assert ping(v2, "10.0.0.5", count=3)[1] == 3
    assert ping(v1, "10.0.0.1", count=3)[1] == 3 and ping(v2, "10.0.0.1", count=3)[1] == 3


def test_a_bridge_mtu_is_what_dhcp_gives_and_routing_works_from_it(lab):
    v3 = lab.vm(2, lab.b1400, "dh3", "10.0.1.7", "02:00:00:12:01:07")
    got = dhcp_clients.udhcpc(v3)
    print(f"\nudhcpc on the MTU-1400 network: {got['seconds']:.3f} s")
    check_lease(v3, got, "10.0.1.7", 1400, host_route=False)
    assert got["routes"] == [] and got["routers"] == ["10.0.1.1"]
    wait_for(lambda: ping(v3, "10.0.1.1", count=1)[1] == 1, 10, "dh3 -> its router")


_NAK_PROBE = r'''
import json, socket, struct, sys, time
sys.path.insert(0, {root!r})
from midoflow.dhcp import codec, frames
mac = bytes.fromhex({mac!r}.replace(":", ""))
msg = codec.DhcpMessage(op=1, xid=0x1200aa, chaddr=mac, options=(
    (53, bytes([codec.REQUEST])), (50, socket.inet_aton({ask!r}))))
payload = codec.build(msg)
udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 bytes(4), b"\xff" * 4)
ip = ip[:10] + struct.pack("!H", frames.checksum(ip)) + ip[12:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("eth0", 0))
s.settimeout(0.1)
t0 = time.monotonic()
s.send(b"\xff" * 6 + mac + b"\x08\x00" + ip + udp)
out = {{"type": None}}
while time.monotonic() - t0 < 3:
    try:
        data = s.recv(2048)
    except socket.timeout:
        continue
    try:
        r = codec.parse(frames.request_payload(data))
    except codec.DhcpError:
        continue
    if r.op == 2 and r.xid == msg.xid:
        out = {{"type": r.message_type, "seconds": time.monotonic() - t0,
                "yiaddr": r.yiaddr, "broadcast": data[:6] == b"\xff" * 6}}
        break
print(json.dumps(out))
'''

_FOREIGN_LEASE = """lease {{
  interface "eth0";
  fixed-address {ip};
  option subnet-mask 255.255.255.0;
  option dhcp-server-identifier 10.0.0.1;
  option dhcp-lease-time 600;
  renew 4 2037/01/01 00:00:00;
  rebind 4 2037/01/01 00:00:00;
  expire 4 2037/01/01 00:00:00;
}}
"""


def test_asking_for_another_ports_address_is_naked_at_once_then_own_address(lab):
    v4 = lab.vm(1, lab.b, "dh4", "10.0.0.8", "02:00:00:12:00:08")
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="mfl-nak-", delete=False) as f:
        f.write(_NAK_PROBE.format(root=ROOT, mac=v4.vm_mac, ask="10.0.0.6"))
    try:
        got = json.loads(v4.cmd(f"{sys.executable} {f.name}").strip().splitlines()[-1])
    finally:
        os.unlink(f.name)
    print(f"\nDHCPNAK for another port's address after {got.get('seconds', 0) * 1000:.1f} ms")
    assert got["type"] == 6 and got["broadcast"] and got["yiaddr"] == "0.0.0.0"  # DHCPNAK
    assert got["seconds"] < 1.0
    # A real client presenting that lease (INIT-REBOOT): NAK, then its own.
    lease = dhcp_clients.dhclient(v4, lease_file=_FOREIGN_LEASE.format(ip="10.0.0.6"))
    print(f"dhclient with another port's lease: own address after {lease['seconds']:.3f} s")
    assert "DHCPREQUEST for 10.0.0.6" in lease["output"] and "DHCPNAK" in lease["output"]
    check_lease(v4, lease, "10.0.0.8", 1450)
    assert "10.0.0.6" not in " ".join(configured(v4)["routes"]) + str(configured(v4)["addr"])
