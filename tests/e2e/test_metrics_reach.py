"""Issue 13, goals 4 and 10, end to end: a port bound after the router has
asked for its address is asked for again as soon as its binding is seen
(not a retry interval later); a new VM's port is announced to the other
hosts by its own and its address needs no ARP; the agents and the API serve
Prometheus metrics that move with the traffic."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cloudbench import Tenant, quiet_vm
from tests.helpers import read_until, wait_until
from topologies.cloud import ping

pytestmark = pytest.mark.e2e_l3


def scrape(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def event(metrics: dict, name: str) -> float:
    return metrics.get(("midoflow_agent_events_total", (("event", name),)), 0)


@pytest.fixture(scope="module")
def lab(cloud_factory):
    mc = cloud_factory(n_hosts=2)
    t = Tenant(mc, "mr")
    a = mc.vm(mc.hosts[0], t.b1, "mra", "192.168.1.10/24", "02:00:00:99:00:10", dhcp=False)
    quiet_vm(a)
    a.cmd("ip route add default via 192.168.1.1")
    return mc, t, a


def test_a_port_bound_after_the_router_asked_is_asked_for_again(lab):
    mc, t, a = lab
    h1, h2 = mc.hosts
    new = mc.cloud.add_vm(h2, "mrnew", "192.168.2.20/24", "02:00:00:99:00:20")  # not bound
    quiet_vm(new)
    new.cmd("ip route add default via 192.168.2.1")
    pinger = mc.cloud.popen(a, ["ping", "-n", "-i", "0.05", "-c", "1", "-w", "20",
                                "192.168.2.20"], text=True)
    # the router on h1 asks for 192.168.2.20: no port has it yet
    wait_until(lambda: event(scrape(mc.metrics_url(h1)), "arp_held") > 0, 10,
               "h1's agent to hold a packet for the unresolved next hop")
    before = event(scrape(mc.metrics_url(h1)), "arp_retried")
    pid = mc.port(t.b2, "mrnew")
    h2.ovs_vsctl("set", "Interface", new.tap, f"external_ids:iface-id={pid}")
    out, _ = pinger.communicate(timeout=25)
    # ping -c 1 stops at the first reply; a second echo may already be out
    m = re.search(r"(\d+) received", out)
    assert m and int(m.group(1)) >= 1, out
    # h1 saw the binding and simulated the held packets again (asking again)
    assert event(scrape(mc.metrics_url(h1)), "arp_retried") > before


def test_agents_and_api_serve_metrics_that_move_with_traffic(lab):
    mc, t, a = lab
    h1 = mc.hosts[0]
    before = scrape(mc.metrics_url(h1))
    b = mc.vm(mc.hosts[1], t.b2, "mrb", "192.168.2.30/24", "02:00:00:99:00:30", dhcp=False)
    quiet_vm(b)
    b.cmd("ip route add default via 192.168.2.1")
    assert ping(a, "192.168.2.30", count=3)[1] >= 1
    after = scrape(mc.metrics_url(h1))
    for name in ("midoflow_agent_table_misses_total", "midoflow_agent_flows_installed_total",
                 "midoflow_agent_simulation_seconds_count"):
        assert after[(name, ())] > before.get((name, ()), 0), name
    assert after[("midoflow_agent_packet_ins_total", (("reason", "flow"),))] > 0
    assert after[("midoflow_agent_zookeeper_session", (("state", "connected"),))] == 1
    assert after[("midoflow_agent_bound_ports", ())] >= 1
    api = scrape(mc.api_server.url + "/metrics")
    assert api[("midoflow_api_requests_total", (
        ("method", "POST"), ("route", "/v1/bridges/{id}/ports"), ("status", "201")))] >= 1
    assert api[("midoflow_api_request_seconds_count", (
        ("method", "POST"), ("route", "/v1/bridges/{id}/ports")))] >= 1


def test_a_new_vms_first_packet_is_answered_without_asking_where_or_who_it_is(lab):
    """The new VM's host announces its port to h1 over the tunnel (h1 counts
    it: the store may still win the race, the count is of what it heard),
    and h1's router takes the VM's MAC from its port's fixed address:
    the VM, which never ARPs itself (a permanent entry for its gateway, so the
    router cannot learn it from an ARP request either), gets no ARP request
    from its gateway, and its very first echo is answered."""
    mc, t, a = lab
    h1, h2 = mc.hosts
    ip, mac = "192.168.2.40", "02:00:00:99:00:40"
    new = mc.cloud.add_vm(h2, "mrfast", f"{ip}/24", mac)  # not bound yet
    quiet_vm(new)
    new.cmd("ip route add default via 192.168.2.1")
    gw_mac = t.mac2
    new.cmd(f"ip neigh replace 192.168.2.1 lladdr {gw_mac} dev eth0 nud permanent")
    heard = event(scrape(mc.metrics_url(h1)), "bound_heard")
    cap = new.popen(["tcpdump", "-l", "-n", "-e", "--immediate-mode", "-i", "eth0",
                     f"ether src {gw_mac}"], text=True)
    read_until(cap, "^listening on", 10, "tcpdump to start capturing", stream=cap.stderr)
    try:
        pid = mc.api.request("POST", f"/bridges/{t.b2}/ports",
                             {"name": "mrfast", "mac": mac, "fixed_ips": [ip]})["id"]
        h2.ovs_vsctl("set", "Interface", new.tap, f"external_ids:iface-id={pid}")
        wait_until(lambda: mc.port_host(pid) is not None, 10, "the new port to be bound")
        out = new.cmd("ping -n -c 1 -W 3 192.168.1.10")
    finally:
        time.sleep(0.2)  # what tcpdump received, printed
        cap.terminate()
        frames = cap.communicate(timeout=5)[0].splitlines()
    assert "1 received" in out, out
    asked = [f for f in frames if "ARP" in f and f"who-has {ip}" in f]
    assert not asked, f"the router asked for the new VM's address: {asked}"
    assert any("ICMP echo reply" in f for f in frames), frames
    assert event(scrape(mc.metrics_url(h1)), "bound_heard") > heard
