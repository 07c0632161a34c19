"""Issue 12's native model: DHCP subnets of bridges (REST, validation, cascade),
the MTU of bridges and router ports, the DHCP and instance fields of bridge
ports, the agent's MTU options and the topology cache's view of it all."""

from __future__ import annotations

import pytest

from midoflow import model
from midoflow.agent.cache import TopologyCache
from midoflow.agent.config import AgentConfig, ConfigError
from midoflow.rest.app import make_app
from midoflow.store.memory import MemoryBackend, MemoryStore
from tests.unit.conftest import ApiClient, store_snapshot
from tests.unit.test_rest import _err

SUBNET = {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "dns_servers": ["192.0.2.53"],
          "domain_name": "example.org", "lease_time": 3600,
          "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]}


@pytest.fixture
def api():
    store = MemoryStore()
    return ApiClient(make_app(store)), store


def _bridge(api: ApiClient, **kw) -> dict:
    return api.ok("POST", "/v1/bridges", {"name": "b", **kw})


# ------------------------------------------------------------------ model
def test_model_reads_stored_objects():
    s = model.DhcpSubnet.from_dict({"id": "s", "bridge_id": "b", "cidr": "10.0.0.0/24",
                                    "dns_servers": ["192.0.2.53"],
                                    "host_routes": [{"destination": "192.168.0.0/16",
                                                     "nexthop": "10.0.0.254"}]})
    assert s.host_routes == (("192.168.0.0/16", "10.0.0.254"),)
    assert s.dns_servers == ("192.0.2.53",) and s.enabled and s.lease_time == 86400
    assert s.gateway_ip is None and s.server_ip is None
    p = model.Port.from_dict({"id": "p", "device_id": "b", "tunnel_key": 1,
                              "extra_dhcp_opts": [{"opt_name": "mtu", "opt_value": "9000"}],
                              "instance_id": "i-1", "hostname": "vm1"})
    assert p.extra_dhcp_opts == (("mtu", "9000"),) and p.instance_id == "i-1"
    assert p.mtu is None and p.tenant_id == ""
    assert model.Bridge.from_dict({"id": "b", "mtu": 1400}).mtu == 1400
    assert model.from_dict(model.DHCP_SUBNETS, s.to_dict()) == s
    assert model.DHCP_SUBNETS in model.KINDS


# ------------------------------------------------------------------ REST CRUD
def test_dhcp_subnet_crud(api):
    api, _ = api
    b = _bridge(api)
    s = api.ok("POST", f"/v1/bridges/{b['id']}/dhcp_subnets", SUBNET)
    assert s["bridge_id"] == b["id"] and s["cidr"] == "10.0.0.0/24"
    assert s["host_routes"] == SUBNET["host_routes"] and s["server_ip"] is None
    assert s["enabled"] is True and s["version"] >= 0
    assert api.ok("GET", f"/v1/dhcp_subnets/{s['id']}") == s
    assert api.ok("GET", "/v1/dhcp_subnets") == [s]
    assert api.ok("GET", f"/v1/bridges/{b['id']}/dhcp_subnets") == [s]
    # the answer echoed back with changes is a valid update
    up = api.ok("PUT", f"/v1/dhcp_subnets/{s['id']}",
                dict(s, enabled=False, dns_servers=[], lease_time=-1, gateway_ip=None,
                     server_ip="10.0.0.2", host_routes=[]))
    assert (up["enabled"], up["dns_servers"], up["lease_time"], up["gateway_ip"],
            up["server_ip"], up["host_routes"]) == (False, [], -1, None, "10.0.0.2", [])
    api.ok("DELETE", f"/v1/dhcp_subnets/{s['id']}")
    _err(api.get(f"/v1/dhcp_subnets/{s['id']}"), 404)


@pytest.mark.parametrize(("body", "field"), [
    ({}, "cidr"),
    ({"cidr": "10.0.0.1/24"}, "cidr"),
    ({"cidr": "10.0.0.0/31"}, "cidr"),
    ({"cidr": "banana"}, "cidr"),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.1.1"}, "gateway_ip"),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.0"}, "gateway_ip"),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.255"}, "gateway_ip"),
    ({"cidr": "10.0.0.0/24", "server_ip": "10.0.0.255"}, "server_ip"),
    ({"cidr": "10.0.0.0/24", "server_ip": 5}, "server_ip"),
    ({"cidr": "10.0.0.0/24", "dns_servers": ["224.0.0.1"]}, "dns_servers"),
    ({"cidr": "10.0.0.0/24", "dns_servers": "192.0.2.1"}, "dns_servers"),
    ({"cidr": "10.0.0.0/24", "dns_servers": [f"192.0.2.{i}" for i in range(1, 7)]},
     "dns_servers"),
    ({"cidr": "10.0.0.0/24", "domain_name": "bad_name.org"}, "domain_name"),
    ({"cidr": "10.0.0.0/24", "domain_name": "a" * 64 + ".org"}, "domain_name"),
    ({"cidr": "10.0.0.0/24", "domain_name": ("a" * 60 + ".") * 5}, "domain_name"),
    ({"cidr": "10.0.0.0/24", "lease_time": 59}, "lease_time"),
    ({"cidr": "10.0.0.0/24", "lease_time": 31536001}, "lease_time"),
    ({"cidr": "10.0.0.0/24", "lease_time": True}, "lease_time"),
    ({"cidr": "10.0.0.0/24", "host_routes": {}}, "host_routes"),
    ({"cidr": "10.0.0.0/24", "host_routes": ["x"]}, "host_routes"),
    ({"cidr": "10.0.0.0/24", "host_routes": [{"destination": "10.9.0.0/16"}]},
     "host_routes[0].nexthop"),
    ({"cidr": "10.0.0.0/24", "host_routes": [{"destination": "10.9.0.1/16",
                                              "nexthop": "10.0.0.9"}]},
     "host_routes[0].destination"),
    ({"cidr": "10.0.0.0/24", "host_routes": [{"destination": "10.9.0.0/16",
                                              "nexthop": "10.7.0.9"}]},
     "host_routes[0].nexthop"),
    ({"cidr": "10.0.0.0/24", "host_routes": [{"destination": "10.9.0.0/16",
                                              "nexthop": "10.0.0.9", "x": 1}]},
     "host_routes[0].x"),
    ({"cidr": "10.0.0.0/24", "enabled": "yes"}, "enabled"),
    ({"cidr": "10.0.0.0/24", "bridge_id": "x"}, "bridge_id"),
    ({"cidr": "10.0.0.0/24", "colour": "red"}, "colour"),
])
def test_bad_dhcp_subnets_are_400_naming_the_field(api, body, field):
    api, store = api
    b = _bridge(api)
    before = store_snapshot(store)
    _err(api.post(f"/v1/bridges/{b['id']}/dhcp_subnets", body), 400, field)
    assert store_snapshot(store) == before


def test_unknown_bridge_is_404_and_overlap_409(api):
    api, _ = api
    _err(api.post("/v1/bridges/7d8f6a43-4a9c-4a38-9d07-9d6f2b1c1b1c/dhcp_subnets",
                  {"cidr": "10.0.0.0/24"}), 404)
    b, b2 = _bridge(api), _bridge(api)
    api.ok("POST", f"/v1/bridges/{b['id']}/dhcp_subnets", {"cidr": "10.0.0.0/24"})
    _err(api.post(f"/v1/bridges/{b['id']}/dhcp_subnets", {"cidr": "10.0.0.128/25"}), 409,
         "cidr")
    # another bridge may reuse the network; a disjoint one is fine on the same bridge
    api.ok("POST", f"/v1/bridges/{b2['id']}/dhcp_subnets", {"cidr": "10.0.0.0/24"})
    api.ok("POST", f"/v1/bridges/{b['id']}/dhcp_subnets", {"cidr": "10.0.1.0/24"})


def test_update_checks_as_on_creation(api):
    api, _ = api
    b = _bridge(api)
    s = api.ok("POST", f"/v1/bridges/{b['id']}/dhcp_subnets", SUBNET)
    path = f"/v1/dhcp_subnets/{s['id']}"
    _err(api.put(path, {"cidr": "10.1.0.0/24"}), 400, "cidr")  # read-only
    _err(api.put(path, {"gateway_ip": "10.1.0.1"}), 400, "gateway_ip")
    _err(api.put(path, {"lease_time": 10}), 400, "lease_time")
    _err(api.put(path, {"version": s["version"] + 5, "enabled": False}), 409, "version")
    assert api.ok("PUT", path, {"domain_name": "example.net."})["domain_name"] == \
        "example.net"


def test_deleting_a_bridge_deletes_its_dhcp_subnets(api):
    api, store = api
    b = _bridge(api)
    s = api.ok("POST", f"/v1/bridges/{b['id']}/dhcp_subnets", {"cidr": "10.0.0.0/24"})
    other = _bridge(api)
    keep = api.ok("POST", f"/v1/bridges/{other['id']}/dhcp_subnets", {"cidr": "10.0.0.0/24"})
    api.ok("DELETE", f"/v1/bridges/{b['id']}")
    _err(api.get(f"/v1/dhcp_subnets/{s['id']}"), 404)
    assert [d["id"] for d, _ in store.list(model.DHCP_SUBNETS)] == [keep["id"]]


# ------------------------------------------------------------------ MTU and port fields
def test_bridge_mtu(api):
    api, _ = api
    b = _bridge(api, mtu=1400)
    assert b["mtu"] == 1400
    assert _bridge(api)["mtu"] is None
    assert api.ok("PUT", f"/v1/bridges/{b['id']}", {"mtu": None})["mtu"] is None
    for bad in (67, 9001, "1500", 1.5):
        _err(api.put(f"/v1/bridges/{b['id']}", {"mtu": bad}), 400, "mtu")


def test_bridge_port_dhcp_and_instance_fields(api):
    api, _ = api
    b = _bridge(api)
    p = api.ok("POST", f"/v1/bridges/{b['id']}/ports", {
        "fixed_ips": ["10.0.0.5"], "instance_id": "i-1", "tenant_id": "t1",
        "hostname": "vm-1",
        "extra_dhcp_opts": [{"opt_name": "Domain-Search", "opt_value": "example.org"},
                            {"opt_name": "26", "opt_value": "1400"},
                            {"opt_name": 42, "opt_value": "192.0.2.123"},
                            {"opt_name": "server-ip-address", "opt_value": "10.0.0.3"}]})
    assert p["extra_dhcp_opts"] == [{"opt_name": "domain-search", "opt_value": "example.org"},
                                    {"opt_name": "26", "opt_value": "1400"},
                                    {"opt_name": "42", "opt_value": "192.0.2.123"},
                                    {"opt_name": "server-ip-address",
                                     "opt_value": "10.0.0.3"}]
    assert (p["instance_id"], p["tenant_id"], p["hostname"], p["mtu"]) == \
        ("i-1", "t1", "vm-1", None)
    path = f"/v1/ports/{p['id']}"
    assert api.ok("PUT", path, dict(p, instance_id=None, extra_dhcp_opts=[])) \
        ["extra_dhcp_opts"] == []
    for body, field in (
            ({"hostname": "-vm"}, "hostname"),
            ({"hostname": "a.b"}, "hostname"),
            ({"hostname": "x" * 64}, "hostname"),
            ({"instance_id": ""}, "instance_id"),
            ({"tenant_id": 5}, "tenant_id"),
            ({"mtu": 1400}, "mtu"),  # bridge ports take their bridge's
            ({"extra_dhcp_opts": {}}, "extra_dhcp_opts"),
            ({"extra_dhcp_opts": [{"opt_name": "no-such-option", "opt_value": "1"}]},
             "extra_dhcp_opts[0].opt_name"),
            ({"extra_dhcp_opts": [{"opt_name": "255", "opt_value": "1"}]},
             "extra_dhcp_opts[0].opt_name"),
            ({"extra_dhcp_opts": [{"opt_name": "53", "opt_value": "1"}]},
             "extra_dhcp_opts[0].opt_name"),
            ({"extra_dhcp_opts": [{"opt_name": "mtu"}]}, "extra_dhcp_opts[0].opt_value"),
            ({"extra_dhcp_opts": [{"opt_name": "mtu", "opt_value": 5}]},
             "extra_dhcp_opts[0].opt_value"),
            ({"extra_dhcp_opts": [{"opt_name": "mtu", "opt_value": "1"},
                                  {"opt_name": "26", "opt_value": "2"}]}, "extra_dhcp_opts"),
            ({"extra_dhcp_opts": [{"opt_name": "mtu", "opt_value": "1", "x": 1}]},
             "extra_dhcp_opts[0].x")):
        _err(api.put(path, body), 400, field)


def test_router_port_mtu(api):
    api, _ = api
    r = api.ok("POST", "/v1/routers", {"name": "r"})
    up = api.ok("POST", f"/v1/routers/{r['id']}/ports",
                {"ip_address": "192.0.2.2", "prefix_len": 24, "mtu": 9000})
    assert up["mtu"] == 9000 and up["extra_dhcp_opts"] == [] and up["instance_id"] is None
    _err(api.post(f"/v1/routers/{r['id']}/ports",
                  {"ip_address": "198.51.100.2", "prefix_len": 24, "mtu": 50}), 400, "mtu")
    assert api.ok("PUT", f"/v1/ports/{up['id']}", {"mtu": None})["mtu"] is None
    _err(api.put(f"/v1/ports/{up['id']}", {"hostname": "gw"}), 400, "hostname")
    _err(api.put(f"/v1/ports/{up['id']}", {"mtu": 10000}), 400, "mtu")
    cur = api.ok("GET", f"/v1/ports/{up['id']}")  # the answer echoed back, changed
    assert api.ok("PUT", f"/v1/ports/{up['id']}", cur | {"mtu": 1500})["mtu"] == 1500


# ------------------------------------------------------------------ agent side
def _config(tmp_path, **opts) -> str:
    path = tmp_path / "agent.ini"
    lines = ["[agent]", "host_id = h1", "zookeeper = memory", "ovsdb = unix:/x",
             "tunnel_ip = 192.0.2.1", *(f"{k} = {v}" for k, v in opts.items())]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_agent_mtu_options(tmp_path):
    cfg = AgentConfig.load(_config(tmp_path))
    assert (cfg.underlay_mtu, cfg.tunnel_overhead, cfg.default_mtu) == (1500, 50, 1450)
    cfg = AgentConfig.load(_config(tmp_path, underlay_mtu=9000, tunnel_overhead=42))
    assert cfg.default_mtu == 8958
    for opts, name in (({"underlay_mtu": 575}, "underlay_mtu"),
                       ({"underlay_mtu": "big"}, "underlay_mtu"),
                       ({"tunnel_overhead": 201}, "tunnel_overhead"),
                       ({"underlay_mtu": 600, "tunnel_overhead": 50}, "tunnel_overhead")):
        with pytest.raises(ConfigError, match=name):
            AgentConfig.load(_config(tmp_path, **opts))


def test_cache_follows_dhcp_subnets_and_mtus():
    backend = MemoryBackend()
    api = ApiClient(make_app(MemoryStore(backend)))
    tags: list = []
    cache = TopologyCache(MemoryStore(backend), tags.append)
    cache.start()
    assert (cache.default_mtu, cache.underlay_mtu) == (1450, 1500)
    b = _bridge(api)
    assert cache.dhcp_subnets(b["id"]) == ()
    s2 = api.ok("POST", f"/v1/bridges/{b['id']}/dhcp_subnets", {"cidr": "10.0.1.0/24"})
    s1 = api.ok("POST", f"/v1/bridges/{b['id']}/dhcp_subnets", SUBNET)
    got = cache.dhcp_subnets(b["id"])
    assert sorted(s.id for s in got) == sorted((s1["id"], s2["id"]))
    one = next(s for s in got if s.id == s1["id"])
    assert one.gateway_ip == "10.0.0.1" and one.host_routes == (("192.168.0.0/16",
                                                                  "10.0.0.254"),)
    api.ok("PUT", f"/v1/dhcp_subnets/{s1['id']}", {"enabled": False})
    assert not next(s for s in cache.dhcp_subnets(b["id"]) if s.id == s1["id"]).enabled
    api.ok("DELETE", f"/v1/dhcp_subnets/{s2['id']}")
    assert [s.id for s in cache.dhcp_subnets(b["id"])] == [s1["id"]]
    # a bridge's MTU change invalidates its flows (routers fragment to it)
    tags.clear()
    api.ok("PUT", f"/v1/bridges/{b['id']}", {"mtu": 1400})
    assert cache.bridge(b["id"]).mtu == 1400
    assert any(f"bridge:{b['id']}" in t for t in tags), tags
    api.ok("DELETE", f"/v1/bridges/{b['id']}")
    assert cache.dhcp_subnets(b["id"]) == ()
