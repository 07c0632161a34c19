"""Issue 13, goals 4 and 10, end to end: a port bound after the router has
asked for its address is asked for again as soon as its binding is seen
(not a retry interval later); the agents and the API serve Prometheus
metrics that move with the traffic."""

from __future__ import annotations

import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cloudbench import Tenant, quiet_vm
from tests.helpers import wait_until
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
