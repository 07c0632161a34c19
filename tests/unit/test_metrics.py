"""Prometheus metrics (issue 13, goal 10): the agent's collector reads the
agent's parts at scrape time; the API's middleware counts and times requests
and answers GET /metrics, open even with Keystone on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import webob
from prometheus_client.parser import text_string_to_metric_families

from midoflow.apps.metrics import AgentMetrics
from midoflow.rest.auth import AuthConfig, make_root_app
from midoflow.rest.metrics import route_template
from midoflow.store.memory import MemoryStore
from tests.unit import worlds
from tests.unit.test_rest_auth import OPTIONS
from tests.unit.worlds import M1, M2, TUNNELS


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label pairs) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def scrape(metrics: AgentMetrics) -> dict[tuple, float]:
    from prometheus_client import generate_latest

    return samples(generate_latest(metrics.registry).decode())


@pytest.fixture
def bridged():
    """worlds.l2_bridge with p1 on h1 and p2 on h2; h1's agent and its metrics."""
    api = worlds.two_hosts(*worlds.l2_bridge())
    agents = {h: worlds.agent(api, h) for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "vm1": (5, "p1")},
                         "h2": {**TUNNELS, "vm2": (5, "p2")}})
    worlds.learn_macs(api, "b", {M2: "p2"})
    h1 = agents["h1"]
    store = SimpleNamespace(_state="CONNECTED")
    bgp = SimpleNamespace(states={"peer1": {"state": "established", "address": "10.9.0.1",
                                            "prefixes_received": 7}})
    agent = SimpleNamespace(core=h1, store=store, bgp=bgp)
    return agent, AgentMetrics(agent)


def test_agent_collector_counts_what_the_core_did(bridged):
    agent, metrics = bridged
    core = agent.core
    before = scrape(metrics)
    assert before[("midoflow_agent_table_misses_total", ())] == 0
    assert before[("midoflow_agent_bound_ports", ())] == 1
    fields = {"eth_src": M1, "eth_dst": M2, "eth_type": 0x800, "ip_src": "10.0.0.1",
              "ip_dst": "10.0.0.2", "ip_proto": 17, "tp_src": 1, "tp_dst": 2}
    assert metrics.miss(core.handle_miss, 5, fields, None).install
    assert metrics.miss(core.handle_miss, 99, fields, None) is None  # no port bound there
    core.protection.refuse("flow_limit", "p1")
    core.stats["state_saved"] = 3
    core.stats["queue_drops"] = {"p1": 2}
    after = scrape(metrics)
    assert after[("midoflow_agent_table_misses_total", ())] == 2
    assert after[("midoflow_agent_packet_ins_total", (("reason", "flow"),))] == 1
    assert after[("midoflow_agent_packet_ins_total", (("reason", "not_simulated"),))] == 1
    assert after[("midoflow_agent_flows_installed_total", ())] == 1
    assert after[("midoflow_agent_flows", ())] == 1
    assert after[("midoflow_agent_simulations_total", ())] == 1
    assert after[("midoflow_agent_simulation_seconds_count", ())] == 2
    assert after[("midoflow_agent_flow_state_writes_total", ())] == 3
    assert after[("midoflow_agent_port_refused_total",
                  (("limit", "flow_limit"), ("port", "p1")))] == 1
    assert after[("midoflow_agent_port_queue_drops_total", (("port", "p1"),))] == 2
    assert after[("midoflow_agent_events_total", (("event", "packet_in"),))] == 2
    assert after[("midoflow_agent_zookeeper_session", (("state", "connected"),))] == 1
    assert after[("midoflow_agent_zookeeper_session", (("state", "lost"),))] == 0
    assert after[("midoflow_agent_bgp_session_up", (
        ("address", "10.9.0.1"), ("peer", "peer1"), ("state", "established")))] == 1
    assert after[("midoflow_agent_bgp_prefixes_received", (("peer", "peer1"),))] == 7


def test_a_failing_simulation_is_counted_and_raised(bridged):
    _agent, metrics = bridged

    def boom(*_a):
        raise RuntimeError("bug")
    with pytest.raises(RuntimeError):
        metrics.miss(boom, 5, {})
    assert scrape(metrics)[("midoflow_agent_packet_ins_total", (("reason", "error"),))] == 1


def test_parts_an_agent_lacks_are_left_out():
    core = worlds.agent(worlds.two_hosts(), "h1")
    got = scrape(AgentMetrics(SimpleNamespace(core=core, store=MemoryStore())))
    assert not any(name.startswith(("midoflow_agent_bgp", "midoflow_agent_zookeeper"))
                   for name, _labels in got)


@pytest.mark.parametrize(("path", "status", "template"), [
    ("/v1/bridges/6f1c/ports", 200, "/v1/bridges/{id}/ports"),
    ("/v2.0/routers/abc/add_router_interface", 200, "/v2.0/routers/{id}/add_router_interface"),
    ("/v1/bridges/6f1c", 404, "unmatched"),
    ("/", 200, "/"),
    ("/v1/BRIDGES%00/x", 400, "/v1/{other}/{id}"),
])
def test_route_templates_have_no_ids(path, status, template):
    assert route_template(path, status) == template


def _req(app, path: str, method: str = "GET", body: dict | None = None) -> webob.Response:
    req = webob.Request.blank(path, method=method)
    if body is not None:
        req.json = body
        req.content_type = "application/json"
    return req.get_response(app)


def test_api_counts_and_times_requests_by_route_and_status():
    app = make_root_app(MemoryStore(), auth=AuthConfig.noauth())
    assert _req(app, "/v1/bridges", "POST", {"name": "b"}).status_int == 201
    bid = _req(app, "/v1/bridges").json[0]["id"]
    assert _req(app, f"/v1/bridges/{bid}").status_int == 200
    assert _req(app, "/v1/bridges/nope").status_int == 404
    resp = _req(app, "/metrics")
    assert resp.status_int == 200 and resp.content_type.startswith("text/plain")
    got = samples(resp.text)
    assert got[("midoflow_api_requests_total", (
        ("method", "POST"), ("route", "/v1/bridges"), ("status", "201")))] == 1
    assert got[("midoflow_api_requests_total", (
        ("method", "GET"), ("route", "/v1/bridges/{id}"), ("status", "200")))] == 1
    assert got[("midoflow_api_requests_total", (
        ("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert got[("midoflow_api_request_seconds_count", (
        ("method", "GET"), ("route", "/v1/bridges")))] == 1
    assert not any(bid in str(k) for k in got)
    assert _req(app, "/metrics", "POST", {}).status_int == 405


def test_metrics_are_open_with_keystone_but_nothing_else_is():
    app = make_root_app(MemoryStore(), auth=AuthConfig.keystone(OPTIONS))
    assert _req(app, "/v1/hosts").status_int == 401
    resp = _req(app, "/metrics")
    assert resp.status_int == 200
    assert samples(resp.text)[("midoflow_api_requests_total", (
        ("method", "GET"), ("route", "/v1/hosts"), ("status", "401")))] == 1


def test_light_histogram_counts_each_value_in_its_le_bucket():
    from midoflow.apps.metrics import LightHistogram

    h = LightHistogram("x_seconds", "x", (0.001, 0.01))
    for v in (0.0005, 0.001, 0.005, 0.2):
        h.observe(v)
    fam = h.family()
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.001": 2, "0.01": 3, "+Inf": 4}
    assert [s.value for s in fam.samples if s.name == "x_seconds_count"] == [4]
    assert abs([s.value for s in fam.samples if s.name == "x_seconds_sum"][0] - 0.2065) < 1e-9
