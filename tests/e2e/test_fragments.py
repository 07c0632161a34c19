"""Issue 12, item 4: IPv4 fragments through every device, both ways, on
three hosts with real OVS and agents: a bridge across hosts, a router,
security groups on every VM port, SNAT and a floating IP to an "internet"
namespace. ``ping -s 4000`` and a 30,000-byte UDP datagram (checked byte
for byte by the receiver, echoed back to the sender) arrive intact, and
tcpdump at the receiver counts the fragments that carried them. A packet
with DF set bigger than the VM network's MTU (1450; the uplink's is 1500)
gets ICMP fragmentation needed with next-hop MTU 1450 from the router, also
once the connection's flow is installed. A chain rule on fragments works
end to end."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

from tests.helpers import wait_until
from topologies.cloud import ping

pytestmark = pytest.mark.e2e_services

PUBLIC = "203.0.113.10"
FIP = "203.0.113.30"
EXT = "198.51.100.254"
UPLINK = "198.51.100.1"
BIG = 30_000
VM_MTU = 1450

# A UDP receiver: one datagram of the expected length and content, echoed
# back to its sender; prints what it got.
_RECV = r"""
import socket, sys
port, n, echo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "echo"
want = bytes(i % 251 for i in range(n))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", port))
s.settimeout(float(sys.argv[4]))
print("ready", flush=True)
try:
    data, peer = s.recvfrom(65535)
except socket.timeout:
    print("nothing", flush=True)
    sys.exit(0)
print("got", len(data), "intact" if data == want else "corrupt", peer[0], flush=True)
if echo:
    s.sendto(data, peer)
"""

# A UDP sender: one datagram of n bytes, then waits for its echo; prints
# what came back. "probe": DF set, the kernel's path MTU ignored; "omit": no
# DF, and the kernel fragments only for its own link (1,500 here); "plain":
# the kernel's default (DF when it fits the path MTU it knows, else fragments).
_SEND = r"""
import socket, sys
ip, port, n, mode, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], \
    float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[6])))
if mode in ("probe", "omit"):  # IP_MTU_DISCOVER: IP_PMTUDISC_PROBE, IP_PMTUDISC_OMIT
    s.setsockopt(socket.IPPROTO_IP, 10, 3 if mode == "probe" else 5)
data = bytes(i % 251 for i in range(n))
s.sendto(data, (ip, port))
s.settimeout(wait)
try:
    back, _ = s.recvfrom(65535)
    print("echo", len(back), "intact" if back == data else "corrupt", flush=True)
except socket.timeout:
    print("no echo", flush=True)
"""


def mac(n: int) -> str:
    return f"02:00:00:f7:00:{n:02x}"


class Capture:
    """tcpdump in a namespace while a block runs; ``lines`` after it."""

    def __init__(self, node, bpf: str, verbose: bool = False) -> None:
        self.node, self.bpf, self.verbose, self.lines = node, bpf, verbose, []

    def __enter__(self) -> Capture:
        args = ["tcpdump", "--immediate-mode", "-i", "eth0", "-n", "-l", "-U",
                *(["-v"] if self.verbose else [])]
        self.proc = self.node.popen([*args, self.bpf], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on" once the capture is open (after a
        # line or two of notes)
        said = []
        while len(said) < 5 and not any("listening" in ln for ln in said):
            said.append(self.proc.stderr.readline())
            if not said[-1]:
                break
        if not any("listening" in ln for ln in said):
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"tcpdump did not start in {self.node.name}: {said!r}")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip():
                self.lines.append(line.strip())

    def expect(self, n: int, timeout: float = 3.0) -> list[str]:
        """Wait until ``n`` packets were seen (tcpdump prints as it reads;
        stopping it at once may lose what the kernel still holds for it)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.lines

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.reader.join(timeout=5)


def udp_transfer(sender, receiver, dst_ip: str, port: int, n: int = BIG,
                 echo: bool = True, timeout: float = 4.0, mode: str = "plain",
                 sport: int = 0) -> tuple[str, str]:
    """One datagram of ``n`` bytes from ``sender`` to ``dst_ip``:``port``
    (``receiver`` listens there); (what the receiver printed, what the sender
    printed: its echo)."""
    rx = receiver.popen(["python3", "-u", SCRIPTS["recv"], str(port), str(n),
                         "echo" if echo else "-", str(timeout)],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert rx.stdout.readline().strip() == "ready"
        sent = sender.cmd(f"python3 {SCRIPTS['send']} {dst_ip} {port} {n} {mode} "
                          f"{timeout if echo else 0.1} {sport}").strip()
        got, _ = rx.communicate(timeout=timeout + 5)
    finally:
        if rx.poll() is None:
            rx.kill()
    return got.strip(), sent


def fragments_to(src: str | None = None) -> str:
    """tcpdump filter: IPv4 fragments (MF set or an offset) [from ``src``]."""
    return "ip[6:2] & 0x3fff != 0" + (f" and src {src}" if src else "")


SCRIPTS: dict[str, str] = {}  # the sender's and receiver's files (the lab writes them)


@pytest.fixture(scope="module")
def lab(cloud_factory, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("udp")
    for name, text in (("recv", _RECV), ("send", _SEND)):
        (tmp / f"{name}.py").write_text(text)
        SCRIPTS[name] = str(tmp / f"{name}.py")
    mc = cloud_factory(3, tunnel="vxlan")
    r = mc.router("r", "t")
    net_a, net_b = mc.bridge("frag-a", "t"), mc.bridge("frag-b", "t")
    mc.attach(r, net_a, "10.71.1.1/24", "02:aa:00:f7:00:01")
    mc.attach(r, net_b, "10.71.2.1/24", "02:aa:00:f7:00:02")
    up = mc.router_port(r, f"{UPLINK}/24", "02:aa:00:f7:00:09", interior=False, name="uplink")
    mc.route(r, "0.0.0.0/0", up, EXT)
    a1 = mc.vm(2, net_a, "fa1", "10.71.1.11/24", mac(1), dhcp=False)
    a2 = mc.vm(3, net_a, "fa2", "10.71.1.12/24", mac(2), dhcp=False)
    b1 = mc.vm(3, net_b, "fb1", "10.71.2.11/24", mac(3), dhcp=False)
    vms = {"a1": a1, "a2": a2, "b1": b1}
    for vm in vms.values():
        gw = "10.71.1.1" if vm in (a1, a2) else "10.71.2.1"
        vm.cmd(f"ip link set eth0 mtu {VM_MTU}; ip route replace default via {gw}")
    # security groups on every VM port: UDP and ICMP in, everything out
    group = mc.api.request("POST", "/security_groups", {"name": "frag", "tenant_id": "t"})["id"]
    for proto in ("udp", "icmp"):
        mc.api.request("POST", f"/security_groups/{group}/rules",
                       {"direction": "ingress", "protocol": proto})
    for n, vm in enumerate(vms.values(), 1):
        mc.api.request("PUT", f"/ports/{vm.port_id}", {
            "mac": mac(n), "fixed_ips": [vm.vm_ip.split("/")[0]],
            "security_group_ids": [group], "port_security_enabled": True})
    b_ip = b1.vm_ip.split("/")[0]
    pre = mc.chain("frag-in", [
        {"action": "dnat", "nw_dst": f"{FIP}/32",
         "nat_targets": [{"addr_from": b_ip, "addr_to": b_ip}]},
        {"action": "rev_snat"},
    ])
    post = mc.chain("frag-out", [
        {"action": "snat", "out_ports": [up], "nw_src": f"{b_ip}/32",
         "nat_targets": [{"addr_from": FIP, "addr_to": FIP}]},
        {"action": "snat", "out_ports": [up],
         "nat_targets": [{"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024,
                          "port_to": 65535}]},
    ])
    mc.api.request("PUT", f"/routers/{r}", {"inbound_filter_id": pre,
                                            "outbound_filter_id": post})
    ext = mc.external(1, up, "fext", f"{EXT}/24", "02:00:00:f7:00:fe",
                      routes=(("203.0.113.0/24", UPLINK),))
    ext.cmd("ip link set eth0 mtu 1500")
    for vm in vms.values():  # every VM reaches the internet (and the router learns them)
        wait_until(lambda vm=vm: ping(vm, EXT, count=1)[1] == 1, 20,
                   f"{vm.vm_name} to reach the internet namespace")
    wait_until(lambda: ping(a1, "10.71.1.12", count=1)[1] == 1, 10, "a1 to reach a2")
    wait_until(lambda: ping(a1, b_ip, count=1)[1] == 1, 10, "a1 to reach b1")
    yield mc, vms, ext, net_a


def addr(vm) -> str:
    return vm.vm_ip.split("/")[0]


PATHS = {  # name: (sender, receiver, address the sender uses, source the receiver sees)
    "bridge": ("a1", "a2", None, None),
    "router": ("a1", "b1", None, None),
    "snat": ("a1", "ext", EXT, PUBLIC),
    "floating_ip_in": ("ext", "b1", FIP, EXT),
    "floating_ip_out": ("b1", "ext", EXT, FIP),
}


def _ends(lab, path: str):
    _, vms, ext, _ = lab
    s, r, dst, seen = PATHS[path]
    sender = ext if s == "ext" else vms[s]
    receiver = ext if r == "ext" else vms[r]
    return sender, receiver, dst or addr(receiver), seen or addr(sender)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_ping_of_4000_bytes_arrives_in_fragments_and_returns(lab, path):
    sender, receiver, dst, seen = _ends(lab, path)
    with Capture(receiver, fragments_to(seen)) as cap:
        out = sender.cmd(f"ping -c 2 -i 0.3 -W 2 -s 4000 {dst}")
        # 2 requests of 4,008 bytes of IP payload, in at least 3 fragments each
        cap.expect(6)
    assert re.search(r"2 packets transmitted, 2 received", out), out
    assert len(cap.lines) >= 6, cap.lines


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_30kb_udp_datagram_arrives_intact_and_its_echo_returns(lab, path):
    sender, receiver, dst, seen = _ends(lab, path)
    with Capture(receiver, fragments_to(seen)) as cap:
        got, sent = udp_transfer(sender, receiver, dst, 9100)
        cap.expect(21)
    assert got == f"got {BIG} intact {seen}", got
    assert sent == f"echo {BIG} intact", sent
    # 30,008 bytes of UDP: at least 21 fragments on a 1,500-byte link, 22 on 1,450
    assert len(cap.lines) >= 21, cap.lines


def _route_mtu(ext, ip: str) -> int | None:
    m = re.search(r"\bmtu (\d+)", ext.cmd(f"ip route get {ip}"))
    return int(m.group(1)) if m else None


def test_df_set_and_too_big_for_the_vm_network_gets_fragmentation_needed(lab):
    _, vms, ext, _ = lab
    ext.cmd("ip route flush cache")
    with Capture(ext, "icmp and icmp[0] == 3 and icmp[1] == 4", verbose=True) as cap:
        out = ext.cmd(f"ping -c 2 -i 0.3 -W 1 -M do -s 1472 {FIP}")
        cap.expect(1)
    text = "\n".join(cap.lines)
    assert re.search(r"mtu\s*=?\s*1450", out) or "need to frag (mtu 1450)" in text, (out, text)
    assert "need to frag (mtu 1450)" in text, text
    assert f"{UPLINK} > {EXT}" in text, text  # from the router's uplink address
    assert _route_mtu(ext, FIP) == 1450
    # the kernel now sends 1,450-byte fragments: the same ping gets through
    assert "2 received" in ext.cmd(f"ping -c 2 -i 0.3 -W 2 -M want -s 1472 {FIP}")


def test_an_installed_flow_does_not_pass_a_bigger_packet_silently(lab):
    mc, vms, ext, _ = lab
    b1 = vms["b1"]
    port, sport = 9200, 40123
    # small first: the connection (DNAT, conntrack) gets its exact flow
    got, sent = udp_transfer(ext, b1, FIP, port, n=200, sport=sport)
    assert got == f"got 200 intact {EXT}" and sent == "echo 200 intact", (got, sent)
    # its flow at the uplink's host sends what is bigger than 1,450 bytes to the agent
    uplink_host = mc.cloud.host(1)
    flows = [f for f in uplink_host.dump_flows() if f"tp_dst={port}" in f
             or f"udp_dst={port}" in f]
    assert flows and all("check_pkt_larger(1464)" in f for f in flows), flows
    # then 1,472 bytes with DF set, same 5-tuple: 1,500 bytes > 1,450
    with Capture(ext, "icmp and icmp[0] == 3 and icmp[1] == 4", verbose=True) as cap:
        got, sent = udp_transfer(ext, b1, FIP, port, n=1472, mode="probe", sport=sport,
                                 timeout=2)
        cap.expect(1)
    assert got == "nothing", f"the VM got a packet bigger than its MTU: {got}"
    assert "need to frag (mtu 1450)" in "\n".join(cap.lines), cap.lines
    # and without DF the same connection's 1,500-byte packet (one piece on the
    # internet side) arrives, split in two by the agent of the uplink's host
    with Capture(ext, f"udp and dst {FIP}") as sent_out, \
            Capture(b1, fragments_to(EXT)) as frags:
        got, sent = udp_transfer(ext, b1, FIP, port, n=1472, mode="omit", sport=sport)
        frags.expect(2)
        sent_out.expect(1)
    assert got == f"got 1472 intact {EXT}" and sent == "echo 1472 intact", (got, sent)
    assert len(sent_out.lines) == 1 and "length 1472" in sent_out.lines[0], sent_out.lines
    assert len(frags.lines) == 2, frags.lines


def test_a_rule_on_fragments_drops_fragmented_udp_and_passes_small(lab):
    mc, vms, _, net_a = lab
    a1, a2 = vms["a1"], vms["a2"]
    chain = mc.chain("unfragmented-udp-only", [
        {"action": "accept", "nw_proto": 17, "fragment_policy": "unfragmented"},
        {"action": "drop", "nw_proto": 17},
    ])
    mc.api.request("PUT", f"/bridges/{net_a}", {"inbound_filter_id": chain})
    try:
        wait_until(lambda: udp_transfer(a1, a2, addr(a2), 9300, n=100, timeout=1)[0]
                   == f"got 100 intact {addr(a1)}", 10, "small UDP through the chain")
        got, _ = udp_transfer(a1, a2, addr(a2), 9301, echo=False, timeout=2)
        assert got == "nothing", f"a fragmented datagram passed the rule: {got}"
        got, _ = udp_transfer(a1, a2, addr(a2), 9302, n=1000, echo=False, timeout=2)
        assert got == f"got 1000 intact {addr(a1)}", got
    finally:
        mc.api.request("PUT", f"/bridges/{net_a}", {"inbound_filter_id": None})
    wait_until(lambda: udp_transfer(a1, a2, addr(a2), 9303, echo=False, timeout=1)[0]
               == f"got {BIG} intact {addr(a1)}", 10, "the 30 KB datagram once the rule is gone")
