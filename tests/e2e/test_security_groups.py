"""Scenario 3: security groups with Neutron's semantics on real OVS and
agents: inbound denied by default, allowed by protocol and port, replies of
allowed connections admitted by connection tracking, rule changes acting on
live traffic, spoofing dropped. Twice: enforced by each port's own OVS
conntrack (``sg_conntrack``, the default; no agent trip per connection), and
simulated with replicated conntrack (state pushed to the other host first)."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.test_stateful import connect, serve
from tests.helpers import LivePing
from topologies.cloud import ping
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_stateful


def mac(n: int) -> str:
    return f"02:00:00:5e:00:{n:02x}"


@pytest.fixture(scope="module", params=["conntrack", "simulated"])
def sg(cloud_factory, request):
    mc = cloud_factory(2, tunnel="vxlan",
                       agent_options={"sg_conntrack": str(request.param == "conntrack").lower()})
    mc.sg_mode = request.param
    net = mc.bridge("sg-net", "t")
    a = mc.vm(1, net, "sa", "10.60.0.1/24", mac(1))
    b = mc.vm(2, net, "sb", "10.60.0.2/24", mac(2))
    group = mc.api.request("POST", "/security_groups", {"name": "web", "tenant_id": "t"})["id"]
    web = mc.api.request("POST", f"/security_groups/{group}/rules", {
        "direction": "ingress", "protocol": "tcp", "port_range_min": 8080,
        "port_range_max": 8080})["id"]
    mc.api.request("PUT", f"/ports/{b.port_id}", {
        "mac": mac(2), "fixed_ips": ["10.60.0.2"], "security_group_ids": [group],
        "port_security_enabled": True})
    servers = [serve(b, 8080), serve(b, 8081), serve(a, 9000)]
    # ARP is allowed both ways: a and b know each other
    wait_for(lambda: connect(a, "10.60.0.2", 8080).startswith("10.60.0.1:"), 15,
             "the allowed port to answer")
    yield mc, a, b, group, web
    for s in servers:
        s.kill()


def _packets(host, spec: str, priority: int | None = None) -> int:
    out = host.ovs_ofctl("dump-flows", spec).splitlines()
    if priority is not None:
        out = [ln for ln in out if f"priority={priority}," in ln]
    return sum(int(n) for ln in out for n in re.findall(r"n_packets=(\d+)", ln))


def test_connections_through_a_security_group_cost_the_agents_nothing(sg):
    """Issue 13, goal 2. In OVS (``sg_conntrack``): n connections to b's
    admitted port make no packet-in on either host once a's flow to b and
    b's flow back exist (the first connection makes them), and b's host
    commits each connection in its zone (table 5's rule flow). Simulated:
    each connection's FIN rides its close flow in the datapath (a copy to
    the agent), so a's port sends its agent one SYN a connection, not its
    FINs too."""
    mc, a, b, _, _ = sg
    h1, h2 = mc.hosts[0], mc.hosts[1]
    assert connect(a, "10.60.0.2", 8080).startswith("10.60.0.1:")  # the flows exist
    n = 5
    if mc.sg_mode == "conntrack":
        def committed() -> int:
            return _packets(h2, "table=5,tcp,tp_dst=8080", priority=200)
        before = (_packets(h1, f"table=2,in_port={a.ofport}"),
                  _packets(h2, f"table=2,in_port={b.ofport}"), committed())
        for _ in range(n):
            assert connect(a, "10.60.0.2", 8080).startswith("10.60.0.1:")
        wait_for(lambda: committed() - before[2] >= 3 * n, 5,
                 "b's host to track each connection (SYN, ACK, data, FIN...)")
        to_agents = (_packets(h1, f"table=2,in_port={a.ofport}") - before[0],
                     _packets(h2, f"table=2,in_port={b.ofport}") - before[1])
        # a re-ARP may reach an agent; no packet of the connections does
        assert sum(to_agents) <= 2, f"{to_agents} packets of {n} connections to the agents"
        return
    to_agent = f"table=2,in_port={a.ofport}"
    closes = f"table=1,in_port={a.ofport},tcp"

    def closed() -> int:
        return _packets(h1, closes, priority=150)  # pipeline.PRIO_TCP_CLOSE

    before = _packets(h1, to_agent), closed()
    for _ in range(n):
        assert connect(a, "10.60.0.2", 8080).startswith("10.60.0.1:")
    wait_for(lambda: closed() - before[1] >= n, 5, "the FINs by the close flows")
    sent = _packets(h1, to_agent) - before[0]
    # one SYN a connection (before: SYN and FIN, 2n); a re-ARP or a late ACK of slack
    assert n <= sent <= n + 2, f"{sent} packets of {n} connections through table 2"


def test_inbound_is_denied_by_default(sg):
    _, a, _, _, _ = sg
    assert ping(a, "10.60.0.2", count=2)[1] == 0
    assert not connect(a, "10.60.0.2", 8081).startswith("10.60.0.1:")


def test_allowed_port_passes(sg):
    _, a, _, _, _ = sg
    for _ in range(3):
        assert connect(a, "10.60.0.2", 8080).startswith("10.60.0.1:")


def test_replies_of_connections_the_vm_opened_are_admitted(sg):
    _, _, b, _, _ = sg
    # b opens to a (egress is allowed by default); a's reply comes back in
    assert connect(b, "10.60.0.1", 9000).startswith("10.60.0.2:")
    assert ping(b, "10.60.0.1", count=3) == (3, 3)  # echo replies are return flows


def test_rule_changes_act_on_live_traffic(sg):
    mc, a, _, group, _ = sg
    assert ping(a, "10.60.0.2", count=1)[1] == 0  # a drop flow may be installed now
    icmp = mc.api.request("POST", f"/security_groups/{group}/rules", {
        "direction": "ingress", "protocol": "icmp"})["id"]
    wait_for(lambda: ping(a, "10.60.0.2", count=1)[1] == 1, 3, "ping admitted by the new rule")
    pinger = LivePing(a, "10.60.0.2", count=80)
    t0 = time.time()
    mc.api.request("DELETE", f"/security_groups/{group}/rules/{icmp}")
    times = pinger.reply_times()
    assert any(t < t0 for t in times), "no ping passed before the rule was removed"
    late = [t - t0 for t in times if t > t0 + 1.0]
    assert not late, f"pings still passed {max(late):.2f} s after the rule was removed"


def test_spoofed_sources_are_dropped(sg):
    _, a, b, _, _ = sg
    b.cmd("ip addr add 10.60.0.99/24 dev eth0")
    try:
        assert ping(b, "10.60.0.1", count=2)[1] == 2  # its own address works
        out = b.cmd("ping -c 2 -i 0.2 -W 1 -I 10.60.0.99 10.60.0.1")
        assert " 0 received" in out, out
    finally:
        b.cmd("ip addr del 10.60.0.99/24 dev eth0")
    b.cmd("ip link set eth0 address 02:00:00:5e:00:99")
    try:
        b.cmd("ip neigh flush dev eth0")
        assert ping(b, "10.60.0.1", count=2)[1] == 0  # a MAC not its own
    finally:
        b.cmd(f"ip link set eth0 address {mac(2)}")
        b.cmd("ip neigh flush dev eth0")
    wait_for(lambda: ping(b, "10.60.0.1", count=1)[1] == 1, 5, "b to work again")


def test_hosts_that_enforce_groups_differently_leave_no_hole(cloud_factory):
    """h1 enforces its ports' groups in OVS, h2 simulates them (a cloud
    changing sg_conntrack host by host): each host publishes its choice, and
    h1's simulation filters h2's port itself, h2's leaves a's to h1's OVS.
    Before, h1 left b's groups to h2, whose OVS does not enforce them: a's
    packets reached b's closed ports, and h2 dropped the replies of
    connections it had never seen (a to b's open port failed)."""
    mc = cloud_factory(2, tunnel="vxlan", agent_options={"hosts": {"h2": {
        "sg_conntrack": "false"}}})
    net = mc.bridge("mx-net", "t")
    a = mc.vm(1, net, "ma", "10.61.0.1/24", mac(11))
    b = mc.vm(2, net, "mb", "10.61.0.2/24", mac(12))
    for vm, n, ip, port in ((a, 11, "10.61.0.1", 9000), (b, 12, "10.61.0.2", 8080)):
        group = mc.api.request("POST", "/security_groups", {"name": f"g{port}",
                                                            "tenant_id": "t"})["id"]
        mc.api.request("POST", f"/security_groups/{group}/rules", {
            "direction": "ingress", "protocol": "tcp", "port_range_min": port,
            "port_range_max": port})
        mc.api.request("PUT", f"/ports/{vm.port_id}", {
            "mac": mac(n), "fixed_ips": [ip],
            "security_group_ids": [group], "port_security_enabled": True})
    servers = [serve(b, 8080), serve(b, 8081), serve(a, 9000), serve(a, 9001)]
    try:
        states = [mc.agent_alive(h) or {} for h in mc.hosts]
        assert [s.get("sg_conntrack") for s in states] == [True, False]
        wait_for(lambda: connect(a, "10.61.0.2", 8080).startswith("10.61.0.1:"), 15,
                 "b's admitted port to answer a")
        wait_for(lambda: connect(b, "10.61.0.1", 9000).startswith("10.61.0.2:"), 15,
                 "a's admitted port to answer b")
        for _ in range(2):
            assert not connect(a, "10.61.0.2", 8081).startswith("10.61.0.1:"), \
                "b's group (simulated at h2) admitted a's connection to 8081"
            assert not connect(b, "10.61.0.1", 9001).startswith("10.61.0.2:"), \
                "a's group (in h1's OVS) admitted b's connection to 9001"
        assert connect(a, "10.61.0.2", 8080).startswith("10.61.0.1:")
        assert connect(b, "10.61.0.1", 9000).startswith("10.61.0.2:")
    finally:
        for s in servers:
            s.kill()
