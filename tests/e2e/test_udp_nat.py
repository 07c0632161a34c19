"""UDP through NAT end to end (issue 12, items 5 and 6), with real OVS and
agents: a UDP request and its response through SNAT (VM -> the internet
namespace) and through a floating IP (DNAT); a datagram to a closed port
through each, whose ICMP port unreachable comes back to the sender
translated to the addresses it used (the kernel hands it to the sender's
connected socket as ECONNREFUSED only when the quoted packet is exactly
what that socket sent); both VMs sit behind security groups whose only
ingress for ICMP is the established/related rule (the error is admitted as
related). The provider router's NAT chains have the Neutron translation's
shape (midoflow.neutron.translate_l3)."""

from __future__ import annotations

import base64
import re
import subprocess

import pytest

from topologies.cloud import ping
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_services

PUBLIC = "203.0.113.10"
FIP = "203.0.113.21"
EXT = "198.51.100.254"
UDP_PORT, CLOSED = 7000, 7999

# A UDP server that answers each datagram with the address it came from.
_UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, a = s.recvfrom(2048)
    s.sendto(f"{a[0]}:{a[1]}".encode(), a)
"""
# A connected UDP client: "<the server's answer> from <ip:port>", "refused"
# (an ICMP port unreachable matched this socket) or "timeout".
_UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    s.send(b"hello")
    data, a = s.recvfrom(2048)
    print(f"{data.decode()} from {a[0]}:{a[1]}")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"""


def mac(n: int) -> str:
    return f"02:00:00:1d:00:{n:02x}"


def one_line(script: str) -> str:
    """A script as one shell word for ``node.cmd`` (its shell is interactive:
    a newline inside quotes would come back as continuation prompts)."""
    code = base64.b64encode(script.encode()).decode()
    return f"\"import base64; exec(base64.b64decode('{code}'))\""


def udp_ask(node, ip: str, port: int, timeout: float = 2.0) -> str:
    return node.cmd(f"python3 -c {one_line(_UDP_CLIENT)} {ip} {port} {timeout}").strip()


def udp_server(node, port: int):
    proc = node.popen(["python3", "-u", "-c", _UDP_SERVER, str(port)])
    wait_for(lambda: f":{port}" in node.cmd(f"ss -lunH 'sport = :{port}'"), 5,
             f"a UDP server on port {port} in {node.name}")
    return proc


@pytest.fixture(scope="module")
def udp_nat(cloud_factory):
    mc = cloud_factory(3, tunnel="vxlan")
    pr = mc.router("provider", "admin")
    net = mc.bridge("udp-net", "t")
    mc.attach(pr, net, "192.168.60.1/24", "02:aa:00:00:1d:01")
    up = mc.router_port(pr, "198.51.100.1/24", "02:aa:00:00:1d:09", interior=False,
                        name="uplink")
    mc.route(pr, "0.0.0.0/0", up, EXT)
    mc.route(pr, "203.0.113.0/24", type="blackhole")
    # u1 (host 2): SNAT only; its group admits nothing in (egress only, Neutron's
    # default rule): replies and related ICMP errors come in by conntrack alone.
    # u2 (host 3): the floating IP; its group admits UDP 7000-7999 in.
    closed = mc.api.request("POST", "/security_groups", {"name": "closed", "tenant_id": "t"})
    opened = mc.api.request("POST", "/security_groups", {"name": "udp", "tenant_id": "t"})
    mc.api.request("POST", f"/security_groups/{opened['id']}/rules", {
        "direction": "ingress", "protocol": "udp", "port_range_min": UDP_PORT,
        "port_range_max": CLOSED})
    vms = []
    for i, group in ((1, closed), (2, opened)):
        ip = f"192.168.60.{10 + i}"
        vm = mc.vm(i + 1, net, f"u{i}", f"{ip}/24", mac(i), dhcp=False)
        vm.cmd("ip route add default via 192.168.60.1")
        mc.api.request("PUT", f"/ports/{vm.port_id}", {
            "mac": mac(i), "fixed_ips": [ip], "security_group_ids": [group["id"]],
            "port_security_enabled": True})
        vms.append(vm)
    fixed = "192.168.60.12"
    pre = mc.chain("provider-in", [
        {"action": "rev_snat", "eth_type": 0x800, "nw_dst": f"{FIP}/32"},
        {"action": "dnat", "eth_type": 0x800, "nw_dst": f"{FIP}/32",
         "nat_targets": [{"addr_from": fixed, "addr_to": fixed}]},
        {"action": "rev_snat", "eth_type": 0x800, "nw_dst": f"{PUBLIC}/32"},
    ])
    post = mc.chain("provider-out", [
        {"action": "rev_dnat", "eth_type": 0x800, "nw_src": f"{fixed}/32"},
        {"action": "snat", "eth_type": 0x800, "out_ports": [up], "nw_src": f"{fixed}/32",
         "nat_targets": [{"addr_from": FIP, "addr_to": FIP}]},
        {"action": "snat", "eth_type": 0x800, "out_ports": [up],
         "nat_targets": [{"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024,
                          "port_to": 65535}]},
    ])
    mc.api.request("PUT", f"/routers/{pr}", {"inbound_filter_id": pre,
                                             "outbound_filter_id": post})
    ext = mc.external(1, up, "uext", f"{EXT}/24", "02:00:00:1d:00:fe",
                      routes=(("203.0.113.0/24", "198.51.100.1"),))
    servers = [udp_server(ext, UDP_PORT), udp_server(vms[1], UDP_PORT)]
    for vm in vms:  # the router learns the outside gateway and the VMs
        wait_for(lambda vm=vm: ping(vm, EXT, count=1)[1] == 1, 15,
                 f"{vm.vm_name} to reach the external host")
    yield mc, vms, ext
    for s in servers:
        s.kill()


def test_udp_request_and_response_through_snat(udp_nat):
    _, (u1, _), _ = udp_nat
    for _ in range(3):  # each its own source port, its own binding
        got = udp_ask(u1, EXT, UDP_PORT)
        seen, _, peer = got.partition(" from ")
        assert seen.startswith(f"{PUBLIC}:"), f"the server saw {got!r}, not the SNAT address"
        assert peer == f"{EXT}:{UDP_PORT}", got


def test_udp_request_and_response_through_the_floating_ip(udp_nat):
    _, _, ext = udp_nat
    got = udp_ask(ext, FIP, UDP_PORT)
    seen, _, peer = got.partition(" from ")
    assert seen.startswith(f"{EXT}:"), f"the VM saw {got!r}, not the external host"
    assert peer == f"{FIP}:{UDP_PORT}", f"the reply came from {peer!r}, not the floating IP"


def captured_error(node, ask) -> tuple[str, str]:
    """(what ``ask()`` returned, the ICMP error tcpdump saw arrive at
    ``node``, verbose: the quoted packet included)."""
    dump = node.popen(["tcpdump", "--immediate-mode", "-i", "eth0", "-n", "-v", "-l", "-c", "1",
                       "icmp[icmptype] == 3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    try:
        assert "listening" in dump.stderr.readline()
        got = ask()
        out, _ = dump.communicate(timeout=5)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait(timeout=5)
    return got, out


def test_port_unreachable_through_snat_reaches_the_sender_translated(udp_nat):
    """The internet host's kernel answers port unreachable to PUBLIC:port,
    quoting PUBLIC:port -> EXT:7999; the router gives it back to u1 quoting
    u1's own address and port, and u1's group admits it as related."""
    _, (u1, _), _ = udp_nat
    got, seen = captured_error(u1, lambda: udp_ask(u1, EXT, CLOSED))
    assert got == "refused", seen
    u1_ip = u1.vm_ip.split("/")[0]
    assert f"{EXT} > {u1_ip}: ICMP {EXT} udp port {CLOSED} unreachable" in seen, seen
    assert re.search(rf"{re.escape(u1_ip)}\.\d+ > {re.escape(EXT)}\.{CLOSED}: UDP", seen), seen
    assert udp_ask(u1, EXT, CLOSED) == "refused"  # a second connection: same


def test_port_unreachable_through_the_floating_ip_reaches_the_sender_translated(udp_nat):
    """u2's kernel answers port unreachable from its fixed address; the router
    sends it out from the floating IP, quoting EXT:port -> FIP:7999."""
    _, _, ext = udp_nat
    got, seen = captured_error(ext, lambda: udp_ask(ext, FIP, CLOSED))
    assert got == "refused", seen
    assert f"{FIP} > {EXT}: ICMP {FIP} udp port {CLOSED} unreachable" in seen, seen
    assert re.search(rf"{re.escape(EXT)}\.\d+ > {re.escape(FIP)}\.{CLOSED}: UDP", seen), seen


def test_time_exceeded_about_a_ping_through_snat_reaches_the_sender_as_related(udp_nat):
    """u1 (its group admits nothing in) pings past the internet host with TTL
    2: the router forwards it (SNAT'd, TTL 1), the internet host, routing,
    answers time exceeded quoting PUBLIC's echo; the router gives it back to
    u1 with u1's address and echo identifier in the quote, and u1's group
    admits it as related to the ping (the error is keyed by the echo id)."""
    _, (u1, _), ext = udp_nat
    ext.cmd("sysctl -qw net.ipv4.ip_forward=1; ip route replace 192.0.2.0/24 dev eth0")
    try:
        out = u1.cmd("ping -n -c 1 -t 2 -W 2 192.0.2.99")
    finally:
        ext.cmd("ip route del 192.0.2.0/24 dev eth0; sysctl -qw net.ipv4.ip_forward=0")
    assert f"From {EXT} icmp_seq=1 Time to live exceeded" in out, out
