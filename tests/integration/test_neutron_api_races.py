"""Concurrent conflicting Neutron requests over HTTP, on a real ZooKeeper.

Two API servers (each its own ZooKeeper session, like two API processes) serve
the same store; client threads released together by a barrier send the
conflicting requests to both. Whatever the interleaving, every answer is a
success or Neutron's conflict, and nothing is left half-done or dangling.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import make_server

import netaddr
import pytest

from midoflow import model
from midoflow.neutron.api import make_neutron_app
from midoflow.neutron.translate_l3 import gen_id
from midoflow.rest.server import _QuietHandler, _ThreadingWSGIServer

pytestmark = pytest.mark.integration


class Server:
    def __init__(self, store) -> None:
        self.app = make_neutron_app(store, noauth=True)
        self.httpd = make_server("127.0.0.1", 0, self.app, server_class=_ThreadingWSGIServer,
                                 handler_class=_QuietHandler)
        host, port = self.httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def api(zk_store_factory):
    """``api(i, method, path, body)`` -> (status, json) on server ``i % 2``."""
    servers = [Server(zk_store_factory()), Server(zk_store_factory())]

    def call(i: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(servers[i % 2].url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    call.store = servers[0].app.store
    try:
        yield call
    finally:
        for s in servers:
            s.stop()


def together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """``fn(i)`` for i in range(n) in n threads released at once; the results."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            out[i] = fn(i)
        except BaseException as e:  # reported below, not lost in a thread
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request never returned"
    errors = [r for r in out if isinstance(r, BaseException)]
    assert not errors, errors
    return out


def ok(result: tuple[int, Any], status: int = 200) -> Any:
    assert result[0] == status, result
    return result[1]


def _cloud(api) -> dict[str, Any]:
    """External network behind a router with a gateway, a project network on it."""
    ext = ok(api(0, "POST", "/v2.0/networks", {"network": {
        "name": "ext", "router:external": True}}), 201)["network"]
    ok(api(0, "POST", "/v2.0/subnets", {"subnet": {
        "network_id": ext["id"], "ip_version": 4, "cidr": "203.0.113.0/24"}}), 201)
    net = ok(api(0, "POST", "/v2.0/networks", {"network": {"name": "net"}}), 201)["network"]
    sub = ok(api(0, "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}), 201)["subnet"]
    router = ok(api(0, "POST", "/v2.0/routers", {"router": {
        "name": "r", "external_gateway_info": {"network_id": ext["id"]}}}), 201)["router"]
    ok(api(0, "PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
           {"subnet_id": sub["id"]}))
    return {"ext": ext, "net": net, "sub": sub, "router": router}


def _port(api, net_id: str, ip: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"network_id": net_id}
    if ip:
        body["fixed_ips"] = [{"ip_address": ip}]
    return ok(api(0, "POST", "/v2.0/ports", {"port": body}), 201)["port"]


def _fip(api, ext_id: str) -> dict[str, Any]:
    return ok(api(0, "POST", "/v2.0/floatingips", {"floatingip": {
        "floating_network_id": ext_id}}), 201)["floatingip"]


def _dnat_target(store, fip_id: str) -> str | None:
    """The fixed IP the router's generated DNAT rule for a floating IP sends to."""
    try:
        rule, _ = store.get(model.RULES, gen_id(fip_id, "dnat"))
    except Exception:
        return None
    return rule["nat_targets"][0]["addr_from"]


def test_two_floating_ips_for_one_fixed_ip(api):
    c = _cloud(api)
    port = _port(api, c["net"]["id"], "10.0.0.10")
    for _round in range(3):
        fips = [_fip(api, c["ext"]["id"]) for _ in range(2)]
        res = together(2, lambda i, fips=fips: api(i, "PUT", f"/v2.0/floatingips/"
                                                         f"{fips[i]['id']}", {"floatingip": {
                                                             "port_id": port["id"]}}))
        assert sorted(s for s, _ in res) == [200, 409], res
        loser = next(b for s, b in res if s == 409)
        assert loser["NeutronError"]["type"] == "FloatingIPPortAlreadyAssociated"
        ok_fip = next(b for s, b in res if s == 200)["floatingip"]
        shown = [ok(api(0, "GET", f"/v2.0/floatingips/{f['id']}"))["floatingip"] for f in fips]
        assert [f["port_id"] for f in shown].count(port["id"]) == 1
        assert _dnat_target(api.store, ok_fip["id"]) == "10.0.0.10"
        other = next(f for f in fips if f["id"] != ok_fip["id"])
        assert _dnat_target(api.store, other["id"]) is None  # nothing half-written
        for f in fips:
            ok(api(0, "DELETE", f"/v2.0/floatingips/{f['id']}"), 204)


def test_one_floating_ip_for_two_ports(api):
    """Re-association is legal in Neutron (a floating IP moves to the port named
    last): both requests may succeed, but the result is exactly one association,
    translated for that port only."""
    c = _cloud(api)
    ports = [_port(api, c["net"]["id"], ip) for ip in ("10.0.0.21", "10.0.0.22")]
    fip = _fip(api, c["ext"]["id"])
    for _round in range(3):
        res = together(2, lambda i: api(i, "PUT", f"/v2.0/floatingips/{fip['id']}",
                                        {"floatingip": {"port_id": ports[i]["id"]}}))
        assert all(s in (200, 409) for s, _ in res) and any(s == 200 for s, _ in res), res
        final = ok(api(0, "GET", f"/v2.0/floatingips/{fip['id']}"))["floatingip"]
        port = next(p for p in ports if p["id"] == final["port_id"])
        assert final["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
        assert _dnat_target(api.store, fip["id"]) == final["fixed_ip_address"]
        ok(api(0, "PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}}))
        assert _dnat_target(api.store, fip["id"]) is None


def test_last_addresses_of_a_pool(api):
    net = ok(api(0, "POST", "/v2.0/networks", {"network": {"name": "small"}}), 201)["network"]
    sub = ok(api(0, "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "ip_version": 4, "cidr": "10.5.0.0/24",
        "allocation_pools": [{"start": "10.5.0.10", "end": "10.5.0.14"}]}}), 201)["subnet"]
    _port(api, net["id"])  # one of the five taken: four free
    free, n = 4, 10
    res = together(n, lambda i: api(i, "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "name": f"p{i}"}}))
    statuses = Counter(s for s, _ in res)
    assert statuses == {201: free, 409: n - free}, res
    assert {b["NeutronError"]["type"] for s, b in res if s == 409} == {
        "IpAddressGenerationFailure"}
    ips = [b["port"]["fixed_ips"][0]["ip_address"] for s, b in res if s == 201]
    assert len(set(ips)) == free
    assert all(netaddr.IPAddress(ip) in netaddr.IPRange("10.5.0.10", "10.5.0.14") for ip in ips)
    listed = ok(api(0, "GET", f"/v2.0/ports?network_id={net['id']}&fields=fixed_ips"))["ports"]
    all_ips = [f["ip_address"] for p in listed for f in p["fixed_ips"]]
    assert len(all_ips) == len(set(all_ips)) == free + 1
    assert all(f["subnet_id"] == sub["id"] for p in listed for f in p["fixed_ips"])


def test_deleting_a_network_while_ports_are_created_on_it(api):
    store = api.store
    outcomes: Counter = Counter()
    for rnd in range(8):
        net = ok(api(0, "POST", "/v2.0/networks", {"network": {"name": f"n{rnd}"}}),
                 201)["network"]
        ok(api(0, "POST", "/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "ip_version": 4, "cidr": "10.7.0.0/24"}}), 201)
        n = 5

        def fn(i: int, net=net, n=n, rnd=rnd) -> tuple[int, Any]:
            if i == n - 1:
                # a later start each round, so the rounds see different interleavings
                time.sleep(0.01 * rnd)
                return api(i, "DELETE", f"/v2.0/networks/{net['id']}")
            return api(i, "POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})

        res = together(n, fn)
        deleted, creates = res[-1], res[:-1]
        assert deleted[0] in (204, 409), deleted
        outcomes[deleted[0]] += 1
        if deleted[0] == 204:
            # ports created before the delete would have made it a 409
            assert all(s == 404 for s, _ in creates), res
        else:
            assert deleted[1]["NeutronError"]["type"] == "NetworkInUse", deleted
            assert all(s == 201 for s, _ in creates), res
        neutron_nets = {o["id"] for o, _ in store.list("neutron.networks")}
        bridges = {o["id"] for o, _ in store.list(model.BRIDGES)}
        subnets = {o["id"]: o for o, _ in store.list("neutron.subnets")}
        assert neutron_nets <= bridges
        assert all(s["network_id"] in neutron_nets for s in subnets.values())
        for p, _ in store.list("neutron.ports"):
            assert p["network_id"] in neutron_nets, f"neutron port {p['id']} dangles"
        for p, _ in store.list(model.PORTS):
            if p.get("device_type", "bridge") == "bridge":
                assert p["device_id"] in bridges, f"native port {p['id']} dangles"
    print("network delete outcomes:", dict(outcomes))


def test_last_floating_ips_of_a_pool(api):
    ext = ok(api(0, "POST", "/v2.0/networks", {"network": {
        "name": "ext", "router:external": True}}), 201)["network"]
    ok(api(0, "POST", "/v2.0/subnets", {"subnet": {
        "network_id": ext["id"], "ip_version": 4, "cidr": "198.51.100.0/24",
        "allocation_pools": [{"start": "198.51.100.10", "end": "198.51.100.13"}]}}), 201)
    free, n = 4, 8
    res = together(n, lambda i: api(i, "POST", "/v2.0/floatingips", {"floatingip": {
        "floating_network_id": ext["id"]}}))
    assert Counter(s for s, _ in res) == {201: free, 409: n - free}, res
    ips = [b["floatingip"]["floating_ip_address"] for s, b in res if s == 201]
    assert len(set(ips)) == free, ips


def test_one_mac_for_two_ports(api):
    net = ok(api(0, "POST", "/v2.0/networks", {"network": {"name": "macs"}}), 201)["network"]
    ports = [_port(api, net["id"]) for _ in range(2)]
    for rnd in range(4):
        mac = f"fa:16:3e:00:01:{rnd:02x}"
        res = together(2, lambda i, mac=mac: api(i, "PUT", f"/v2.0/ports/{ports[i]['id']}",
                                                 {"port": {"mac_address": mac}}))
        assert sorted(s for s, _ in res) == [200, 409], res
        assert next(b for s, b in res if s == 409)["NeutronError"]["type"] == "MacAddressInUse"
        macs = [p["mac_address"] for p in ok(api(0, "GET", f"/v2.0/ports?network_id="
                                                             f"{net['id']}"))["ports"]]
        assert macs.count(mac) == 1, macs
