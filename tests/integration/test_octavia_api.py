"""The Octavia v2 API subset against the REAL Keystone (``keystone_server``)
and the UNMODIFIED ``openstack loadbalancer`` CLI (python-octaviaclient),
finding the ``load-balancer`` service in Keystone's catalog: create, list,
show, set and delete of load balancers, listeners, pools, members and health
monitors; another project sees none of them (404); bad input is 400, 404 or
409 as Octavia answers it, never a 500; a failed request changes nothing.

The API runs in a thread over an in-memory store (no agents: this is the API,
the data path is tests/e2e/test_lb_octavia.py)."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest
import requests

from midoflow import model
from midoflow.store.memory import MemoryStore
from topologies.openstack import OpenStackLab, openstack_bin

pytestmark = [pytest.mark.keystone, pytest.mark.integration, pytest.mark.timeout(600)]

LBAAS = "/load-balancer/v2/lbaas"


@pytest.fixture(scope="module")
def lab(keystone_server):
    store = MemoryStore()
    with OpenStackLab(SimpleNamespace(store=store), keystone_server) as lab:
        lab.store = store
        lab.tokens = {}

        def token(user: str) -> str:
            if user not in lab.tokens:
                p, pw = lab.users[user]
                lab.tokens[user] = keystone_server.token(user, pw, p)
            return lab.tokens[user]
        lab.token = token
        yield lab
    store.close()


@pytest.fixture(scope="module")
def net(lab):
    """p1's network, subnet 10.20.0.0/24 and a router with an interface on it,
    built with the openstack CLI; and a subnet on no router."""
    lab.os("p1user", "network", "create", "lbnet")
    sub = lab.os("p1user", "subnet", "create", "lbsub", "--network", "lbnet",
                 "--subnet-range", "10.20.0.0/24")
    lab.os("p1user", "router", "create", "lbrouter")
    lab.os("p1user", "router", "add", "subnet", "lbrouter", "lbsub")
    lab.os("p1user", "network", "create", "lonenet")
    lone = lab.os("p1user", "subnet", "create", "lonesub", "--network", "lonenet",
                  "--subnet-range", "10.21.0.0/24")
    return SimpleNamespace(subnet=sub, lone=lone)


def _api(lab, user: str, method: str, path: str, body=None) -> requests.Response:
    """As ``user``, with a token made again when Keystone refuses it (a token
    issued in the second of a role change counts as revoked)."""
    for _ in range(2):
        r = requests.request(method, lab.url + path, json=body, timeout=30,
                             headers={"X-Auth-Token": lab.token(user)})
        if r.status_code != 401:
            break
        lab.tokens.pop(user)
    return r


def _snapshot(store) -> dict:
    kinds = [*model.LB_KINDS, model.PORTS, model.ROUTERS, "neutron.ports"] + \
        [f"octavia.{c}" for c in ("loadbalancers", "listeners", "pools", "members",
                                  "healthmonitors")]
    return {k: sorted((d["id"], ver) for d, ver in store.list(k)) for k in kinds}


def test_the_catalog_names_the_load_balancer_service(lab, keystone_server):
    r = requests.get(lab.url + "/load-balancer/", timeout=10)
    assert r.status_code == 200
    assert {v["id"] for v in r.json()["versions"]} == {"v2", "v2.0"}
    eps = lab.os("admin", "endpoint", "list", "--service", "load-balancer")
    assert {e["URL"] for e in eps} == {lab.url + "/load-balancer"}
    r = _api(lab, "p1user", "GET", LBAAS + "/loadbalancers")
    assert r.status_code == 200, r.text
    r = requests.get(lab.url + LBAAS + "/loadbalancers", timeout=10)
    assert r.status_code == 401 and "faultstring" in r.json()


def test_every_resource_through_the_cli(lab, net):
    os_ = lab.os
    lb = os_("p1user", "loadbalancer", "create", "--name", "lb1", "--vip-subnet-id", "lbsub",
             "--description", "web")
    assert lb["provisioning_status"] == "ACTIVE" and lb["provider"] == "midoflow"
    assert lb["vip_subnet_id"] == net.subnet["id"] and lb["vip_address"].startswith("10.20.0.")
    vip_port = os_("p1user", "port", "show", lb["vip_port_id"])
    assert vip_port["device_owner"] == "Octavia"
    assert vip_port["fixed_ips"][0]["ip_address"] == lb["vip_address"]

    listener = os_("p1user", "loadbalancer", "listener", "create", "--name", "l80",
                   "--protocol", "TCP", "--protocol-port", "80", "lb1")
    assert (listener["protocol"], listener["protocol_port"]) == ("TCP", 80)
    pool = os_("p1user", "loadbalancer", "pool", "create", "--name", "p80", "--protocol", "TCP",
               "--lb-algorithm", "ROUND_ROBIN", "--listener", "l80",
               "--session-persistence", "type=SOURCE_IP")
    assert pool["lb_algorithm"] == "ROUND_ROBIN"
    assert "SOURCE_IP" in json.dumps(pool["session_persistence"])
    shown = os_("p1user", "loadbalancer", "listener", "show", "l80")
    assert shown["default_pool_id"] == pool["id"]
    vip = lab.store.get(model.VIPS, listener["id"])[0]
    assert (vip["address"], vip["pool_id"], vip["session_persistence"]) == (
        lb["vip_address"], pool["id"], "SOURCE_IP")

    members = [os_("p1user", "loadbalancer", "member", "create", "--name", f"m{i}",
                   "--address", f"10.20.0.{10 + i}", "--protocol-port", "8080",
                   "--weight", str(w), "--subnet-id", "lbsub", "p80")
               for i, w in enumerate((1, 3, 9))]
    assert [m["weight"] for m in members] == [1, 3, 9]
    assert {m["operating_status"] for m in members} == {"NO_MONITOR"}
    listed = os_("p1user", "loadbalancer", "member", "list", "p80")
    assert sorted(m["name"] for m in listed) == ["m0", "m1", "m2"]
    os_("p1user", "loadbalancer", "member", "set", "--weight", "0", "--disable", "p80", "m0")
    m0 = os_("p1user", "loadbalancer", "member", "show", "p80", "m0")
    assert (m0["weight"], m0["admin_state_up"], m0["operating_status"]) == (0, False, "OFFLINE")

    hm = os_("p1user", "loadbalancer", "healthmonitor", "create", "--name", "hm", "--delay", "5",
             "--timeout", "3", "--max-retries", "2", "--type", "HTTP", "--url-path", "/health",
             "--expected-codes", "200-204", "p80")
    assert (hm["type"], hm["url_path"], hm["expected_codes"]) == ("HTTP", "/health", "200-204")
    os_("p1user", "loadbalancer", "healthmonitor", "set", "--delay", "6", "hm")
    assert os_("p1user", "loadbalancer", "healthmonitor", "show", "hm")["delay"] == 6
    os_("p1user", "loadbalancer", "healthmonitor", "unset", "--url-path", "hm")
    assert lab.store.get(model.HEALTH_MONITORS, hm["id"])[0]["url_path"] == "/"
    assert lab.store.get(model.HEALTH_MONITORS, hm["id"])[0]["delay"] == 6
    assert os_("p1user", "loadbalancer", "pool", "show", "p80")["healthmonitor_id"] == hm["id"]

    os_("p1user", "loadbalancer", "set", "--name", "lb1b", "--disable", "lb1")
    shown = os_("p1user", "loadbalancer", "show", "lb1b")
    assert (shown["admin_state_up"], shown["operating_status"]) == (False, "OFFLINE")
    assert [x["id"] for x in shown["listeners"]] == [listener["id"]]
    os_("p1user", "loadbalancer", "set", "--enable", "lb1b")
    os_("p1user", "loadbalancer", "listener", "set", "--disable", "l80")
    assert lab.store.get(model.VIPS, listener["id"])[0]["admin_state_up"] is False
    os_("p1user", "loadbalancer", "pool", "set", "--lb-algorithm", "LEAST_CONNECTIONS", "p80")
    os_("p1user", "loadbalancer", "pool", "unset", "--session-persistence", "p80")
    assert lab.store.get(model.POOLS, pool["id"])[0]["lb_method"] == "LEAST_CONNECTIONS"
    assert lab.store.get(model.VIPS, listener["id"])[0]["session_persistence"] is None
    # a plain command (no -f): it prints the status tree as JSON itself
    done = subprocess.run([openstack_bin(), "loadbalancer", "status", "show", "lb1b"],
                          env=lab.env("p1user"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tree = json.loads(done.stdout)["loadbalancer"]
    assert [x["id"] for x in tree["listeners"]] == [listener["id"]]
    assert {m["address"] for m in tree["listeners"][0]["pools"][0]["members"]} == \
        {"10.20.0.10", "10.20.0.11", "10.20.0.12"}

    assert [x["id"] for x in os_("p1user", "loadbalancer", "list")] == [lb["id"]]
    assert [x["id"] for x in os_("p1user", "loadbalancer", "listener", "list")] == \
        [listener["id"]]
    assert [x["id"] for x in os_("p1user", "loadbalancer", "pool", "list")] == [pool["id"]]
    assert [x["id"] for x in os_("p1user", "loadbalancer", "healthmonitor", "list")] == \
        [hm["id"]]

    # deletes, children first; then the VIP port goes with the load balancer
    os_("p1user", "loadbalancer", "healthmonitor", "delete", "hm")
    os_("p1user", "loadbalancer", "member", "delete", "p80", "m2")
    assert len(os_("p1user", "loadbalancer", "member", "list", "p80")) == 2
    os_("p1user", "loadbalancer", "pool", "delete", "p80")
    assert lab.store.get(model.VIPS, listener["id"])[0]["pool_id"] is None
    assert lab.store.list(model.POOL_MEMBERS) == []
    os_("p1user", "loadbalancer", "listener", "delete", "l80")
    os_("p1user", "loadbalancer", "delete", "lb1b")
    assert os_("p1user", "loadbalancer", "list") == []
    assert all(lab.store.list(k) == [] for k in model.LB_KINDS)
    assert not [p for p, _ in lab.store.list("neutron.ports") if p["id"] == lb["vip_port_id"]]


def test_cascade_delete_and_another_project(lab, net):
    os_ = lab.os
    lb = os_("p1user", "loadbalancer", "create", "--name", "lb2", "--vip-subnet-id", "lbsub",
             "--vip-address", "10.20.0.200")
    assert lb["vip_address"] == "10.20.0.200"
    lst = os_("p1user", "loadbalancer", "listener", "create", "--name", "l2", "--protocol",
              "UDP", "--protocol-port", "53", "lb2")
    pool = os_("p1user", "loadbalancer", "pool", "create", "--name", "p2", "--protocol", "UDP",
               "--lb-algorithm", "ROUND_ROBIN", "--loadbalancer", "lb2")
    os_("p1user", "loadbalancer", "member", "create", "--address", "10.20.0.30",
        "--protocol-port", "53", "p2")

    # p2 sees nothing of p1's, by name or by id
    assert os_("p2user", "loadbalancer", "list") == []
    assert os_("p2user", "loadbalancer", "listener", "list") == []
    assert os_("p2user", "loadbalancer", "pool", "list") == []
    e = lab.os_fails("p2user", "loadbalancer", "show", lb["id"])
    assert "Unable to locate" in e.stderr or "not found" in e.stderr.lower()
    for coll, oid in (("loadbalancers", lb["id"]), ("listeners", lst["id"]),
                      ("pools", pool["id"]), (f"pools/{pool['id']}/members", "")):
        r = _api(lab, "p2user", "GET", f"{LBAAS}/{coll}/{oid}".rstrip("/"))
        assert r.status_code == 404, (coll, r.status_code, r.text)
        assert "faultstring" in r.json()
    r = _api(lab, "p2user", "DELETE", f"{LBAAS}/loadbalancers/{lb['id']}?cascade=true")
    assert r.status_code == 404
    r = _api(lab, "p2user", "POST", f"{LBAAS}/listeners", {"listener": {
        "loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 81}})
    assert r.status_code == 400 and "could not be found" in r.json()["faultstring"]
    # the admin sees every project's
    assert lb["id"] in [x["id"] for x in os_("admin", "loadbalancer", "list")]

    e = lab.os_fails("p1user", "loadbalancer", "delete", "lb2")
    assert "it has children" in e.stderr
    os_("p1user", "loadbalancer", "delete", "--cascade", "lb2")
    assert os_("p1user", "loadbalancer", "list") == []
    assert all(lab.store.list(k) == [] for k in model.LB_KINDS)


def test_bad_input_is_answered_as_octavia_does(lab, net):
    """400, 404, 409 with Octavia's faultstring; never a 500; nothing changed."""
    os_ = lab.os
    lb = os_("p1user", "loadbalancer", "create", "--name", "lb3", "--vip-subnet-id", "lbsub")
    lst = os_("p1user", "loadbalancer", "listener", "create", "--name", "l3", "--protocol", "TCP",
              "--protocol-port", "80", "lb3")
    pool = os_("p1user", "loadbalancer", "pool", "create", "--name", "p3", "--protocol", "TCP",
               "--lb-algorithm", "ROUND_ROBIN", "--loadbalancer", "lb3")
    os_("p1user", "loadbalancer", "member", "create", "--address", "10.20.0.40",
        "--protocol-port", "80", "p3")
    os_("p1user", "loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3",
        "--max-retries", "3", "--type", "TCP", "p3")
    before = _snapshot(lab.store)

    # through the CLI: its error names what is wrong
    for args, words in (
            (("loadbalancer", "create", "--vip-subnet-id", "lonesub"), "on no router"),
            (("loadbalancer", "listener", "create", "--protocol", "HTTP", "--protocol-port",
              "8080", "lb3"), "layer 4"),
            (("loadbalancer", "listener", "create", "--protocol", "TCP", "--protocol-port",
              "80", "lb3"), "already has a TCP VIP"),
            (("loadbalancer", "member", "create", "--address", "10.20.0.40",
              "--protocol-port", "80", "p3"), "already has a member"),
            (("loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3",
              "--max-retries", "3", "--type", "TCP", "p3"), "already has a health monitor"),
            (("loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3",
              "--max-retries", "3", "--type", "PING", "p3"), "PING"),
            (("loadbalancer", "pool", "create", "--protocol", "TCP", "--lb-algorithm",
              "SOURCE_IP_PORT", "--loadbalancer", "lb3"), "SOURCE_IP_PORT"),
            (("loadbalancer", "delete", "lb3"), "it has children")):
        e = lab.os_fails("p1user", *args)
        assert words in e.stderr, (args, e.stderr)

    # through the API: status codes
    p = pool["id"]
    cases = [
        ("POST", "/loadbalancers", {"loadbalancer": {"name": "x"}}, 400),
        ("POST", "/loadbalancers", {"loadbalancer": {"vip_subnet_id": "nope"}}, 400),
        ("POST", "/loadbalancers", {"loadbalancer": {"vip_subnet_id": net.subnet["id"],
                                                     "vip_address": "10.99.0.5"}}, 400),
        ("POST", "/loadbalancers", {"loadbalancer": {"vip_subnet_id": net.subnet["id"],
                                                     "provider": "amphora"}}, 400),
        ("POST", "/loadbalancers", {"lb": {}}, 400),
        ("POST", "/loadbalancers", "not json", 400),
        ("GET", "/loadbalancers/0b8e0d0e-7a2b-4bfb-8e39-000000000000", None, 404),
        ("GET", "/loadbalancers/not-a-uuid", None, 404),
        ("PUT", f"/loadbalancers/{lb['id']}", {"loadbalancer": {"vip_address": "1.2.3.4"}},
         400),
        ("PUT", f"/listeners/{lst['id']}", {"listener": {"connection_limit": 5}}, 400),
        ("PUT", f"/listeners/{lst['id']}", {"listener": {"default_pool_id": "x"}}, 400),
        ("POST", "/listeners", {"listener": {"loadbalancer_id": lb["id"], "protocol": "TCP",
                                             "protocol_port": 70000}}, 400),
        ("POST", "/pools", {"pool": {"loadbalancer_id": lb["id"], "protocol": "UDP",
                                     "lb_algorithm": "ROUND_ROBIN", "listener_id": lst["id"]}},
         400),
        ("POST", "/pools", {"pool": {"loadbalancer_id": lb["id"], "protocol": "TCP",
                                     "lb_algorithm": "ROUND_ROBIN",
                                     "session_persistence": {"type": "HTTP_COOKIE"}}}, 400),
        ("POST", f"/pools/{p}/members", {"member": {"address": "10.20.0.41",
                                                    "protocol_port": 80, "weight": 257}}, 400),
        ("POST", f"/pools/{p}/members", {"member": {"address": "fe80::1",
                                                    "protocol_port": 80}}, 400),
        ("POST", f"/pools/{p}/members", {"member": {"address": "10.20.0.41",
                                                    "protocol_port": 80, "backup": True}}, 400),
        ("GET", f"/pools/{p}/members/0b8e0d0e-7a2b-4bfb-8e39-000000000000", None, 404),
        ("POST", "/healthmonitors", {"healthmonitor": {"pool_id": p, "type": "TCP", "delay": 1,
                                                       "timeout": 3, "max_retries": 3}}, 409),
        ("DELETE", "/healthmonitors/0b8e0d0e-7a2b-4bfb-8e39-000000000000", None, 404),
        ("PATCH", "/loadbalancers", None, 405),
        ("GET", "/nothing", None, 404),
    ]
    for method, path, body, status in cases:
        if isinstance(body, str):
            r = requests.request(method, lab.url + LBAAS + path, data=body, timeout=30,
                                 headers={"X-Auth-Token": lab.token("p1user"),
                                          "Content-Type": "application/json"})
        else:
            r = _api(lab, "p1user", method, LBAAS + path, body)
        assert r.status_code == status, (method, path, body, r.status_code, r.text)
        assert r.json()["faultstring"], r.text
    assert _snapshot(lab.store) == before
    os_("p1user", "loadbalancer", "delete", "--cascade", "lb3")


def test_a_floating_ip_on_the_vip_port_keeps_the_health_port(lab, net):
    """``openstack floating ip set --port <vip port>``: the router's sync keeps
    the load balancer's health port (the native API's, not Neutron's)."""
    os_ = lab.os
    os_("admin", "network", "create", "--external", "lbext")
    os_("admin", "subnet", "create", "lbextsub", "--network", "lbext", "--subnet-range",
        "172.30.0.0/24", "--no-dhcp")
    os_("admin", "router", "set", "--external-gateway", "lbext",
        os_("p1user", "router", "show", "lbrouter")["id"])
    lb = os_("p1user", "loadbalancer", "create", "--name", "lb4", "--vip-subnet-id", "lbsub")
    native = lab.store.get(model.LOAD_BALANCERS, lb["id"])[0]
    fip = os_("p1user", "floating", "ip", "create", "lbext")
    os_("p1user", "floating", "ip", "set", "--port", lb["vip_port_id"],
        fip["floating_ip_address"])
    shown = os_("p1user", "floating", "ip", "show", fip["floating_ip_address"])
    assert shown["fixed_ip_address"] == lb["vip_address"]
    router = lab.store.get(model.ROUTERS, native["router_id"])[0]
    assert native["health_port_id"] in router["port_ids"]
    assert lab.store.get(model.PORTS, native["health_port_id"])[0]["ip_address"]
    e = lab.os_fails("p1user", "router", "delete", "lbrouter")
    assert e.rc != 0
    os_("p1user", "loadbalancer", "delete", "lb4")
    assert [f["Port"] for f in os_("p1user", "floating", "ip", "list")] == [None]
    router = lab.store.get(model.ROUTERS, native["router_id"])[0]
    assert native["health_port_id"] not in router["port_ids"]


def test_errors_are_never_500(lab, net):
    """Odd but well-formed requests: each a 4xx."""
    for method, path, body in (
            ("GET", "/loadbalancers?limit=x", None),
            ("GET", "/loadbalancers?marker=nope", None),
            ("POST", "/loadbalancers", {"loadbalancer": []}),
            ("POST", "/loadbalancers", {"loadbalancer": {"vip_subnet_id": None}}),
            ("POST", "/listeners", {"listener": {"loadbalancer_id": 5, "protocol": "TCP",
                                                 "protocol_port": 1}}),
            ("POST", "/pools", {"pool": {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}),
            ("POST", "/healthmonitors", {"healthmonitor": {"pool_id": [], "type": "TCP"}}),
            ("PUT", "/pools/x/members/y", {"member": {}}),
            ("DELETE", "/loadbalancers/x?cascade=maybe", None)):
        r = _api(lab, "p1user", method, LBAAS + path, body)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)

