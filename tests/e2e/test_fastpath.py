"""Issue 13, goals 1 and 3, end to end (real OVS and agents, two hosts, a
tenant router between them, agents with ``proactive_flows`` on).

Goal 1: a TCP connection over a stateless routed path makes no controller
trip, not even for its FIN and RST (only tracked connections send those to
the agent). Goal 3: with the reactive flows deleted, a new connection's
first packets ride the flows computed before it (midoflow.agent.proactive):
no packet reaches either agent.

What reaches an agent is read from OVS: the packets counted by each VM
port's to-controller flow (table 2)."""

from __future__ import annotations

import re

import pytest

from benchmarks.cloudbench import Tenant, routed_vm
from topologies.cloud import ping, whoami, whoami_server
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_l3

PORT = 7007
IP_A, IP_B = "192.168.1.10", "192.168.2.20"
REACTIVE = "cookie=0x4d00000000000000/0xff80000000000000"
PROACTIVE = "cookie=0x4d80000000000000/0xff80000000000000"


@pytest.fixture(scope="module")
def lab(cloud_factory):
    mc = cloud_factory(2, tunnel="vxlan", agent_options={"proactive_flows": 64})
    ten = Tenant(mc, "fp")
    a = routed_vm(mc, ten, 1, ten.b1, "fpa", f"{IP_A}/24", "02:00:00:0f:01:0a")
    b = routed_vm(mc, ten, 2, ten.b2, "fpb", f"{IP_B}/24", "02:00:00:0f:02:14")
    wait_for(lambda: ping(a, IP_B, count=1)[1] == 1, 15, "the first routed ping")
    wait_for(lambda: ping(b, IP_A, count=1)[1] == 1, 15, "the first routed ping back")
    server = whoami_server(b, PORT)
    try:
        wait_for(lambda: whoami(a, IP_B, PORT).startswith(IP_A), 10, "a first connection")
        yield mc, a, b
    finally:
        server.kill()
        server.wait()


def to_agent(mc, host: int, vm) -> int:
    """Packets the VM's port sent to its agent so far (table 2's flow for it)."""
    out = mc.hosts[host - 1].ovs_ofctl("dump-flows", f"table=2,in_port={vm.ofport}")
    counts = [int(n) for n in re.findall(r"n_packets=(\d+)", out)]
    assert counts, out
    return sum(counts)


def flows(mc, host: int, spec: str) -> int:
    out = mc.hosts[host - 1].ovs_ofctl("dump-flows", f"table=1,{spec}")
    return len([ln for ln in out.splitlines() if "cookie=" in ln])


def test_short_connections_on_a_stateless_path_reach_no_agent(lab):
    mc, a, b = lab
    before = to_agent(mc, 1, a), to_agent(mc, 2, b)
    for _ in range(5):  # each: SYN, SYN/ACK, data, FIN both ways
        assert whoami(a, IP_B, PORT).startswith(IP_A)
    assert (to_agent(mc, 1, a), to_agent(mc, 2, b)) == before


def test_a_new_connection_rides_the_proactive_flows(lab):
    mc, a, b = lab
    wait_for(lambda: flows(mc, 1, f"{PROACTIVE},ip,nw_dst={IP_B}") and
             flows(mc, 2, f"{PROACTIVE},ip,nw_dst={IP_A}"), 10,
             "the proactive flows of both directions")
    for host in (1, 2):
        mc.hosts[host - 1].ovs_ofctl("del-flows", f"table=1,{REACTIVE}")
    before = to_agent(mc, 1, a), to_agent(mc, 2, b)
    assert whoami(a, IP_B, PORT).startswith(IP_A)
    assert (to_agent(mc, 1, a), to_agent(mc, 2, b)) == before
    assert flows(mc, 1, f"{REACTIVE},ip,nw_dst={IP_B}") == 0
