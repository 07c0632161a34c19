"""The Octavia v2 API subset in process (no Keystone: no-auth, a project chosen
with ``X-Project-Id``): the mapping onto native objects and Neutron's VIP
port, persistence copied from pools to listeners, project scoping, and a
failed request changing nothing. The real CLI and Keystone:
tests/integration/test_octavia_api.py."""

from __future__ import annotations

import json

import pytest
import webob

from midoflow import model
from midoflow.rest.auth import AuthConfig, make_root_app
from midoflow.store.memory import MemoryStore

L = "/load-balancer/v2/lbaas"


class Api:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.app = make_root_app(self.store, auth=AuthConfig.noauth())

    def __call__(self, method: str, path: str, body=None, project: str = "p1",
                 status: int | None = None) -> dict:
        req = webob.Request.blank(path, method=method)
        req.headers["X-Project-Id"] = project
        req.headers["X-Roles"] = "member"
        if body is not None:
            req.body = json.dumps(body).encode()
            req.content_type = "application/json"
        resp = req.get_response(self.app)
        if status is not None:
            assert resp.status_int == status, (method, path, resp.status_int, resp.text)
        return resp.json if resp.body else {}

    def snapshot(self) -> dict:
        kinds = [*model.LB_KINDS, model.PORTS, model.ROUTERS, "neutron.ports",
                 *(f"octavia.{c}" for c in ("loadbalancers", "listeners", "pools", "members",
                                            "healthmonitors"))]
        return {k: sorted((d["id"], v) for d, v in self.store.list(k)) for k in kinds}


@pytest.fixture
def api():
    a = Api()
    net = a("POST", "/v2.0/networks", {"network": {"name": "n"}}, status=201)["network"]
    a.subnet = a("POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4}}, status=201)["subnet"]
    a.router = a("POST", "/v2.0/routers", {"router": {"name": "r"}}, status=201)["router"]
    a("PUT", f"/v2.0/routers/{a.router['id']}/add_router_interface",
      {"subnet_id": a.subnet["id"]}, status=200)
    return a


def _lb(api, **extra) -> dict:
    return api("POST", f"{L}/loadbalancers", {"loadbalancer": {
        "name": "lb", "vip_subnet_id": api.subnet["id"], **extra}}, status=201)["loadbalancer"]


def test_a_load_balancer_is_a_vip_port_and_a_native_lb_on_the_subnets_router(api):
    lb = _lb(api, vip_address="10.0.0.50")
    assert (lb["vip_address"], lb["provisioning_status"], lb["operating_status"]) == (
        "10.0.0.50", "ACTIVE", "ONLINE")
    port = api("GET", f"/v2.0/ports/{lb['vip_port_id']}", status=200)["port"]
    assert (port["device_owner"], port["fixed_ips"][0]["ip_address"]) == ("Octavia",
                                                                          "10.0.0.50")
    assert api.store.get("neutron.ports", port["id"])[0]["binding:host_id"] == ""  # never bound
    native = api.store.get(model.LOAD_BALANCERS, lb["id"])[0]
    assert native["router_id"] == api.router["id"] and native["tenant_id"] == "p1"
    # a later change of the Neutron router keeps the native health port
    api("PUT", f"/v2.0/routers/{api.router['id']}", {"router": {"name": "r2"}}, status=200)
    router = api.store.get(model.ROUTERS, api.router["id"])[0]
    assert native["health_port_id"] in router["port_ids"]
    api("DELETE", f"{L}/loadbalancers/{lb['id']}", status=204)
    assert api.store.list(model.LOAD_BALANCERS) == []
    api("GET", f"/v2.0/ports/{lb['vip_port_id']}", status=404)
    router = api.store.get(model.ROUTERS, api.router["id"])[0]
    assert native["health_port_id"] not in router["port_ids"]


def test_listener_pool_member_monitor_map_onto_native_objects(api):
    lb = _lb(api)
    lst = api("POST", f"{L}/listeners", {"listener": {
        "loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}},
        status=201)["listener"]
    pool = api("POST", f"{L}/pools", {"pool": {
        "listener_id": lst["id"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN",
        "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 60}}},
        status=201)["pool"]
    assert pool["listeners"] == [{"id": lst["id"]}] and pool["lb_algorithm"] == "ROUND_ROBIN"
    vip = api.store.get(model.VIPS, lst["id"])[0]
    assert (vip["address"], vip["pool_id"], vip["session_persistence"],
            vip["persistence_timeout"]) == (lb["vip_address"], pool["id"], "SOURCE_IP", 60)
    # Octavia's ROUND_ROBIN honours weights: the native weighted method
    assert api.store.get(model.POOLS, pool["id"])[0]["lb_method"] == \
        model.LB_WEIGHTED_ROUND_ROBIN
    m = api("POST", f"{L}/pools/{pool['id']}/members", {"member": {
        "address": "10.0.0.7", "protocol_port": 8080, "weight": 5}}, status=201)["member"]
    assert (m["operating_status"], m["weight"]) == ("NO_MONITOR", 5)
    hm = api("POST", f"{L}/healthmonitors", {"healthmonitor": {
        "pool_id": pool["id"], "type": "HTTP", "delay": 3, "timeout": 2, "max_retries": 2,
        "url_path": "/ok"}}, status=201)["healthmonitor"]
    assert (hm["http_method"], hm["url_path"], hm["expected_codes"]) == ("GET", "/ok", "200")
    assert api.store.get(model.HEALTH_MONITORS, hm["id"])[0]["max_retries"] == 2
    api("PUT", f"{L}/pools/{pool['id']}", {"pool": {"session_persistence": None}},
        status=200)
    assert api.store.get(model.VIPS, lst["id"])[0]["session_persistence"] is None
    api("PUT", f"{L}/pools/{pool['id']}/members/{m['id']}", {"member": {
        "admin_state_up": False}}, status=200)
    got = api("GET", f"{L}/pools/{pool['id']}/members?admin_state_up=false", status=200)
    assert [x["operating_status"] for x in got["members"]] == ["OFFLINE"]
    api("DELETE", f"{L}/pools/{pool['id']}", status=204)
    assert api.store.get(model.VIPS, lst["id"])[0]["pool_id"] is None
    assert api.store.list("octavia.members") == [] and api.store.list("octavia.healthmonitors") \
        == []


def test_another_project_sees_nothing(api):
    lb = _lb(api)
    assert api("GET", f"{L}/loadbalancers", project="p2", status=200) == {"loadbalancers": []}
    api("GET", f"{L}/loadbalancers/{lb['id']}", project="p2", status=404)
    api("PUT", f"{L}/loadbalancers/{lb['id']}", {"loadbalancer": {"name": "x"}}, project="p2",
        status=404)
    api("DELETE", f"{L}/loadbalancers/{lb['id']}", project="p2", status=404)
    # nor may it use p1's subnet for its own
    api("POST", f"{L}/loadbalancers", {"loadbalancer": {"vip_subnet_id": api.subnet["id"]}},
        project="p2", status=400)
    assert [x["id"] for x in api("GET", f"{L}/loadbalancers?name=lb")["loadbalancers"]] == \
        [lb["id"]]


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/listeners", {"listener": {"protocol": "HTTP", "protocol_port": 80}}, 400, "layer 4"),
    ("/listeners", {"listener": {"protocol": "TCP", "protocol_port": 0}}, 400, "protocol_port"),
    ("/listeners", {"listener": {"protocol": "TCP", "protocol_port": 22}}, 409, "already has"),
    ("/pools", {"pool": {"protocol": "TCP", "lb_algorithm": "SOURCE_IP"}}, 400, "SOURCE_IP"),
    ("/pools", {"pool": {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN",
                         "tls_enabled": True}}, 400, "tls_enabled"),
    ("/loadbalancers", {"loadbalancer": {"vip_subnet_id": "SUBNET",
                                         "vip_address": "10.0.0.1"}}, 409, "in use"),
])
def test_bad_requests_change_nothing(api, path, body, status, words):
    lb = _lb(api)
    api("POST", f"{L}/listeners", {"listener": {
        "loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 22}}, status=201)
    inner = next(iter(body.values()))
    if "vip_subnet_id" in inner:
        inner["vip_subnet_id"] = api.subnet["id"]
    else:
        inner["loadbalancer_id"] = lb["id"]
    before = api.snapshot()
    got = api("POST", L + path, body, status=status)
    assert words in got["faultstring"] and got["faultcode"] == "Client", got
    assert api.snapshot() == before


def test_a_subnet_on_no_router_is_refused(api):
    net = api("POST", "/v2.0/networks", {"network": {"name": "lone"}}, status=201)["network"]
    sub = api("POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.5.0.0/24", "ip_version": 4}}, status=201)["subnet"]
    got = api("POST", f"{L}/loadbalancers", {"loadbalancer": {"vip_subnet_id": sub["id"]}},
              status=400)
    assert "router" in got["faultstring"]
    assert api.store.list("neutron.ports") == [p for p in api.store.list("neutron.ports")
                                               if p[0]["network_id"] != net["id"]]


def test_pagination_and_versions(api):
    ids = sorted(_lb(api, name=f"lb{i}")["id"] for i in range(3))
    page = api("GET", f"{L}/loadbalancers?limit=2", status=200)
    assert len(page["loadbalancers"]) == 2 and page["loadbalancers_links"][0]["rel"] == "next"
    marker = page["loadbalancers"][-1]["id"]
    rest = api("GET", f"{L}/loadbalancers?limit=2&marker={marker}", status=200)
    assert len(rest["loadbalancers"]) == 1 and "loadbalancers_links" not in rest
    assert sorted(x["id"] for x in page["loadbalancers"] + rest["loadbalancers"]) == ids
    versions = api("GET", "/load-balancer/", status=200)["versions"]
    assert {v["id"] for v in versions} == {"v2", "v2.0"}
    api("GET", "/load-balancer/v3/lbaas/loadbalancers", status=404)


def test_unset_monitor_fields_take_octavias_defaults_and_stats_are_not_gathered(api):
    lb = _lb(api)
    pool = api("POST", f"{L}/pools", {"pool": {
        "loadbalancer_id": lb["id"], "protocol": "TCP", "lb_algorithm": "LEAST_CONNECTIONS"}},
        status=201)["pool"]
    hm = api("POST", f"{L}/healthmonitors", {"healthmonitor": {
        "pool_id": pool["id"], "type": "HTTPS", "delay": 3, "timeout": 2, "max_retries": 2,
        "max_retries_down": 5, "url_path": "/x", "expected_codes": "202"}},
        status=201)["healthmonitor"]
    got = api("PUT", f"{L}/healthmonitors/{hm['id']}", {"healthmonitor": {
        "url_path": None, "expected_codes": None, "max_retries_down": None}},
        status=200)["healthmonitor"]
    assert (got["url_path"], got["expected_codes"], got["max_retries_down"]) == ("/", "200", 3)
    got = api("GET", f"{L}/loadbalancers/{lb['id']}/stats", status=501)
    assert "not gathered" in got["faultstring"]
    api("GET", f"{L}/loadbalancers/{lb['id']}/stats", project="p2", status=404)


def test_the_vip_port_goes_only_with_its_load_balancer(api):
    lb = _lb(api)
    got = api("DELETE", f"/v2.0/ports/{lb['vip_port_id']}", status=409)
    assert "delete the load balancer" in got["NeutronError"]["message"]
    api("GET", f"{L}/loadbalancers/{lb['id']}", status=200)
    api("DELETE", f"{L}/loadbalancers/{lb['id']}", status=204)
    api("GET", f"/v2.0/ports/{lb['vip_port_id']}", status=404)
