"""Issue 12's acceptance: VMs boot as in a cloud. Three hosts; VMs with no
static configuration run ``udhcpc`` or ``dhclient``, answered by the agent of
their own host: address, default route, a host route and MTU 1450; they
ping each other and an internet namespace through SNAT; ``curl
http://169.254.169.254/openstack/latest/meta_data.json`` returns their own
instance's data, from a Nova stand-in that checks the signature (hosts 1 and
2) and from the agent's built-in tree (host 3, no upstream). A client
presenting another port's lease is refused (NAK) within a second and then
leases its own address."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.helpers import read_until, require, wait_until
from topologies import dhcp_clients
from topologies.cloud import ping, whoami, whoami_server
from topologies.metadata import NovaStandIn

pytestmark = pytest.mark.e2e_services

SECRET = "nova-shared-secret"
NET, GW, PREFIX = "192.168.60.0/24", "192.168.60.1", 24
HOST_ROUTE = ("10.99.0.0/16", "192.168.60.254")  # a host route every VM must get
DNS, DOMAIN = ("192.168.60.53",), "cloud.test"
PUBLIC, EXT = "203.0.113.60", "198.51.100.254"
MTU = 1450  # the underlay's 1500 less VXLAN's 50: the agents' default_mtu
META = "http://169.254.169.254/openstack/latest/meta_data.json"
# name -> host, address, client
VMS = {"s1": (1, "192.168.60.11", "udhcpc"), "s2": (2, "192.168.60.12", "dhclient"),
       "s3": (3, "192.168.60.13", "udhcpc"), "s4": (3, "192.168.60.14", "dhclient")}


def mac(n: int) -> str:
    return f"02:00:00:3c:00:{n:02x}"


def instance(name: str) -> str:
    return f"inst-{name}"


@pytest.fixture(scope="module")
def nova():
    with NovaStandIn(SECRET, {instance(n): f"{n}-from-nova" for n in VMS}) as n:
        yield n


@pytest.fixture(scope="module")
def svc(cloud_factory, nova):
    require(tools=("udhcpc", "dhclient", "curl"))
    upstream = {"metadata_upstream": nova.url, "metadata_secret": SECRET}
    # hosts 1 and 2 forward to Nova; host 3 has none and answers from its tree
    mc = cloud_factory(3, tunnel="vxlan", agent_options={"hosts": {"h1": upstream,
                                                                   "h2": upstream}})
    pr = mc.router("svc-provider", "admin")
    net = mc.bridge("svc-net", "tenant-a")
    mc.attach(pr, net, f"{GW}/{PREFIX}", "02:aa:00:00:3c:01")
    up = mc.router_port(pr, "198.51.100.1/24", "02:aa:00:00:3c:09", interior=False,
                        name="uplink")
    mc.route(pr, "0.0.0.0/0", up, EXT)
    post = mc.chain("svc-out", [{"action": "snat", "out_ports": [up], "nat_targets": [
        {"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024, "port_to": 65535}]}])
    pre = mc.chain("svc-in", [{"action": "rev_snat"}])
    mc.api.request("PUT", f"/routers/{pr}", {"inbound_filter_id": pre,
                                             "outbound_filter_id": post})
    mc.dhcp_subnet(net, NET, gateway=GW, dns=DNS, routes=(HOST_ROUTE,), domain_name=DOMAIN)
    ext = mc.external(1, up, "svcext", f"{EXT}/24", "02:00:00:3c:00:fe",
                      routes=(("203.0.113.0/24", "198.51.100.1"),))  # the SNAT address
    vms = {}
    for i, (name, (host, ip, client)) in enumerate(VMS.items(), 1):
        if name == "s4":
            continue  # the NAK test boots it
        t0 = time.monotonic()
        vms[name] = mc.vm(host, net, name, ip, mac(i), dhcp=client,
                          instance_id=instance(name), tenant_id="tenant-a")
        print(f"{name} on h{host}: {client} leased {vms[name].lease['ip']} in "
              f"{vms[name].lease['seconds'] * 1e3:.0f} ms ({time.monotonic() - t0:.1f} s "
              f"with the port's binding)")
    yield mc, net, vms, ext


def test_vms_boot_by_dhcp_with_address_routes_and_mtu(svc):
    _, _, vms, _ = svc
    for name, vm in vms.items():
        _, ip, client = VMS[name]
        lease = vm.lease
        assert lease["ip"] == ip and int(lease["prefix"]) == PREFIX, (name, lease)
        assert int(lease["mtu"]) == MTU, (name, lease)
        assert GW in lease["routers"] and lease["dns"] == list(DNS), (name, lease)
        # what the VM's namespace really has: nothing of it was set by the harness
        link = vm.cmd("ip -o link show dev eth0")
        assert re.search(rf"\bmtu {MTU}\b", link), f"{name} ({client}): {link}"
        addr = vm.cmd("ip -4 -o addr show dev eth0")
        assert f"inet {ip}/{PREFIX}" in addr, f"{name} ({client}): {addr}"
        routes = vm.cmd("ip -4 route show")
        assert re.search(rf"^default via {GW}\b", routes, re.M), f"{name} ({client}): {routes}"
        dst, via = HOST_ROUTE
        assert re.search(rf"^{re.escape(dst)} via {via}\b", routes, re.M), \
            f"{name} ({client}) lacks the host route: {routes}"


def test_vms_ping_each_other_and_the_internet_through_snat(svc):
    _, _, vms, ext = svc
    names = list(vms)
    for a in names:
        for b in names:
            if a != b:
                assert ping(vms[a], VMS[b][1], count=2) == (2, 2), f"{a} -> {b}"
    server = whoami_server(ext, 8090)
    try:
        for name, vm in vms.items():
            wait_until(lambda vm=vm: ping(vm, EXT, count=1)[1] == 1, 15,
                       f"{name} to ping the internet namespace")
            seen = whoami(vm, EXT, 8090)
            assert seen.startswith(f"{PUBLIC}:"), f"{name} seen as {seen!r}, not SNAT"
    finally:
        server.kill()


def _meta(vm) -> dict:
    out = vm.cmd(f"curl -sS -m 5 -w '\\n%{{http_code}}' {META}")
    body, _, code = out.strip().rpartition("\n")
    assert code.strip() == "200", f"{vm.vm_name}: curl {META} -> {code}: {body}"
    return json.loads(body)


def test_metadata_with_nova_signed_and_per_instance(svc, nova):
    _, _, vms, _ = svc
    for name in ("s1", "s2"):  # hosts 1 and 2 forward to the stand-in
        before = len(nova.seen)
        doc = _meta(vms[name])  # a 200: the stand-in checked the signature
        assert doc["uuid"] == instance(name) and doc["name"] == f"{name}-from-nova", doc
        assert doc["from"] == "nova" and doc["project_id"] == "tenant-a", doc
        asked = nova.seen[before:]
        assert len(asked) == 1, asked
        assert asked[0][1]["X-Forwarded-For"] == VMS[name][1], asked  # the VM's address


def test_metadata_without_nova_from_the_built_in_tree(svc, nova):
    _, _, vms, _ = svc
    before = len(nova.seen)
    doc = _meta(vms["s3"])  # host 3: no upstream
    assert doc["uuid"] == instance("s3") and doc["project_id"] == "tenant-a", doc
    assert "from" not in doc, doc
    assert len(nova.seen) == before, "host 3 has no upstream but Nova was asked"


STOLEN_LEASE = """\
lease {{
  interface "eth0";
  fixed-address {ip};
  option subnet-mask 255.255.255.0;
  option routers {gw};
  option dhcp-server-identifier {gw};
  renew 4 2037/01/01 00:00:00;
  rebind 4 2037/01/01 00:00:00;
  expire 4 2037/01/01 00:00:00;
}}
"""
def _dhcp_messages(text: str) -> list[tuple[float, str]]:
    """(time, type) of each DHCP message in ``tcpdump -tt -v`` output."""
    blocks = re.split(r"(?m)^(?=\d+\.\d+ IP )", text)
    out = []
    for b in blocks:
        m = re.match(r"(\d+\.\d+) IP ", b)
        t = re.search(r"DHCP-Message \(53\), length 1: (\w+)", b)
        if m and t:
            out.append((float(m.group(1)), t.group(1)))
    return out


def test_another_ports_lease_is_nakd_within_a_second_then_its_own(svc):
    mc, net, vms, _ = svc
    host, ip, _client = VMS["s4"]
    stolen = VMS["s3"][1]  # s3's address, leased on the same host
    vm = mc.vm(host, net, "s4", ip, mac(4), dhcp="dhclient", boot=False,
               instance_id=instance("s4"), tenant_id="tenant-a")
    # what the VM receives, timed where it arrives
    cap = vm.popen(["tcpdump", "--immediate-mode", "-l", "-n", "-tt", "-v", "-i", "eth0",
                    "udp port 67 or udp port 68"], text=True)
    try:
        read_until(cap, "listening on", 5, "tcpdump to listen in s4", stream=cap.stderr)
        got = dhcp_clients.dhclient(vm, timeout=10,
                                    lease_file=STOLEN_LEASE.format(ip=stolen, gw=GW))
        out = read_until(cap, r"length 1: ACK", 5, "tcpdump to show the DHCPACK")
    finally:
        cap.terminate()
        cap.communicate(timeout=5)
    msgs = _dhcp_messages(out)
    kinds = [k for _, k in msgs]
    assert "Request" in kinds and "NACK" in kinds, f"no REQUEST/NAK exchange: {out[-2000:]}"
    asked = next(t for t, k in msgs if k == "Request")
    nak = next(t for t, k in msgs if k == "NACK")
    print(f"DHCPREQUEST for {stolen} -> NAK in {(nak - asked) * 1e3:.1f} ms; then "
          f"{got['ip']} after {got['seconds']:.2f} s from the client's start")
    assert 0 <= nak - asked < 1.0, f"the NAK took {nak - asked:.2f} s"
    assert got["ip"] == ip and int(got["mtu"]) == MTU, got
    assert kinds.index("NACK") < kinds.index("ACK"), kinds
    assert ping(vm, VMS["s1"][1], count=2) == (2, 2)
    dhcp_clients.release(vm)
