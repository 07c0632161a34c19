"""The native API of layer-4 load balancing (issue 14): load balancers (and their
health ports), pools, VIPs, members, health monitors; their checks, cascades,
operating status, the staged entry points the Octavia layer uses, and the CLI."""

from __future__ import annotations

import json
import time

import pytest

from midoflow import model
from midoflow.rest.app import make_app
from midoflow.service import lb
from midoflow.service.txn import Txn
from midoflow.store import paths
from midoflow.store.memory import MemoryStore
from tests.unit.conftest import ApiClient, store_snapshot
from tests.unit.test_rest import _err


@pytest.fixture
def world():
    """A router with two tenant networks (10.0.0.1/24, 10.1.0.1/24) and an uplink."""
    store = MemoryStore()
    api = ApiClient(make_app(store))
    router = api.ok("POST", "/v1/routers", {"name": "r"})
    for ip in ("10.0.0.1", "10.1.0.1"):
        api.ok("POST", f"/v1/routers/{router['id']}/ports", {"ip_address": ip,
                                                            "prefix_len": 24})
    api.ok("POST", f"/v1/routers/{router['id']}/ports", {"ip_address": "203.0.113.2",
                                                        "prefix_len": 24})
    return api, store, router


def _lb(api, router, **kw):
    return api.ok("POST", "/v1/load_balancers", {"router_id": router["id"], **kw})


def _full(api, router):
    """A load balancer with a pool of two members, a monitor and a VIP."""
    b = _lb(api, router, name="web")
    pool = api.ok("POST", "/v1/pools", {"load_balancer_id": b["id"], "name": "p"})
    members = [api.ok("POST", "/v1/pool_members", {"pool_id": pool["id"], "address": ip,
                                                   "protocol_port": 80})
               for ip in ("10.1.0.11", "10.1.0.12")]
    hm = api.ok("POST", "/v1/health_monitors", {"pool_id": pool["id"], "type": "HTTP"})
    vip = api.ok("POST", "/v1/vips", {"load_balancer_id": b["id"], "address": "10.0.0.100",
                                      "protocol_port": 80, "pool_id": pool["id"]})
    return b, pool, members, hm, vip


# ----------------------------------------------------------- load balancers
def test_a_load_balancer_gets_its_health_port(world):
    api, _, router = world
    b = _lb(api, router, name="web")
    assert b["health_cidr"] == "169.254.252.0/30"
    assert b["operating_status"] == model.OP_ONLINE
    port = api.ok("GET", f"/v1/ports/{b['health_port_id']}")
    assert (port["device_id"], port["type"], port["ip_address"], port["prefix_len"]) == (
        router["id"], model.PORT_EXTERIOR, "169.254.252.1", 30)
    assert port["name"] == f"lb-health-{b['id'][:8]}"
    assert port["id"] in api.ok("GET", f"/v1/routers/{router['id']}")["port_ids"]
    # the next one of the router takes the next /30
    assert _lb(api, router)["health_cidr"] == "169.254.252.4/30"


def test_health_port_skips_a_network_the_router_uses(world):
    api, _, router = world
    api.ok("POST", f"/v1/routers/{router['id']}/ports", {"ip_address": "169.254.252.1",
                                                        "prefix_len": 29})
    assert _lb(api, router)["health_cidr"] == "169.254.252.8/30"


def _other(oid: str) -> str:
    """An id that differs from ``oid`` (its last digit changed)."""
    return oid[:-1] + ("1" if oid.endswith("0") else "0")


def test_load_balancer_crud(world):
    api, store, router = world
    b = _lb(api, router, name="a", tenant_id="t1")
    assert api.ok("GET", "/v1/load_balancers?tenant_id=t1") == [b]
    assert api.ok("GET", "/v1/load_balancers?tenant_id=t2") == []
    got = api.ok("PUT", f"/v1/load_balancers/{b['id']}", {"admin_state_up": False,
                                                          "name": "b"})
    assert (got["name"], got["admin_state_up"], got["operating_status"]) == (
        "b", False, model.OP_OFFLINE)
    before = store_snapshot(store)
    msg = _err(api.put(f"/v1/load_balancers/{b['id']}", {"router_id": _other(router["id"])}),
               400, "router_id")
    assert "cannot be changed" in msg["message"]
    assert store_snapshot(store) == before
    api.ok("DELETE", f"/v1/load_balancers/{b['id']}")
    _err(api.get(f"/v1/load_balancers/{b['id']}"), 404)
    _err(api.get(f"/v1/ports/{b['health_port_id']}"), 404)
    assert b["health_port_id"] not in api.ok("GET", f"/v1/routers/{router['id']}")["port_ids"]


def test_load_balancer_needs_an_existing_router(world):
    api, store, _ = world
    before = store_snapshot(store)
    _err(api.post("/v1/load_balancers", {}), 400, "router_id")
    msg = _err(api.post("/v1/load_balancers", {"router_id": "6c1e9a3c-2d7b-4b8e-9c1a-"
                                                            "0e5f3a2b1c4d"}), 400, "router_id")
    assert "does not exist" in msg["message"]
    _err(api.post("/v1/load_balancers", {"router_id": "x"}), 400, "router_id")
    assert store_snapshot(store) == before


def test_router_and_health_port_with_a_load_balancer_cannot_be_deleted(world):
    api, store, router = world
    b = _lb(api, router)
    before = store_snapshot(store)
    _err(api.delete(f"/v1/routers/{router['id']}"), 409)
    msg = _err(api.delete(f"/v1/ports/{b['health_port_id']}"), 409)["message"]
    assert b["id"] in msg
    assert store_snapshot(store) == before


def test_load_balancer_delete_refused_while_in_use_unless_cascade(world):
    api, store, router = world
    b, pool, members, hm, vip = _full(api, router)
    before = store_snapshot(store)
    msg = _err(api.delete(f"/v1/load_balancers/{b['id']}"), 409)["message"]
    assert "1 VIP(s) and 1 pool(s)" in msg and "cascade=true" in msg
    _err(api.delete(f"/v1/load_balancers/{b['id']}?cascade=maybe"), 400, "cascade")
    assert store_snapshot(store) == before
    api.ok("DELETE", f"/v1/load_balancers/{b['id']}?cascade=true")
    for kind, obj in ((model.VIPS, vip), (model.POOLS, pool), (model.HEALTH_MONITORS, hm),
                      (model.POOL_MEMBERS, members[0]), (model.PORTS,
                                                         {"id": b["health_port_id"]})):
        _err(api.get(f"/v1/{kind}/{obj['id']}"), 404)
    assert len(api.ok("GET", f"/v1/routers/{router['id']}")["port_ids"]) == 3


# ----------------------------------------------------------------- pools
def test_pool_checks(world):
    api, store, router = world
    b = _lb(api, router)
    before = store_snapshot(store)
    _err(api.post("/v1/pools", {}), 400, "load_balancer_id")
    _err(api.post("/v1/pools", {"load_balancer_id": b["id"], "lb_method": "RANDOM"}), 400,
         "lb_method")
    _err(api.post("/v1/pools", {"load_balancer_id": b["id"], "protocol": "HTTP"}), 400,
         "protocol")
    assert store_snapshot(store) == before
    pool = api.ok("POST", "/v1/pools", {"load_balancer_id": b["id"],
                                        "lb_method": model.LB_LEAST_CONNECTIONS})
    assert (pool["protocol"], pool["operating_status"]) == (model.LB_TCP, model.OP_ONLINE)
    _err(api.put(f"/v1/pools/{pool['id']}", {"protocol": "UDP"}), 400, "protocol")
    got = api.ok("PUT", f"/v1/pools/{pool['id']}", {"lb_method": model.LB_ROUND_ROBIN})
    assert got["lb_method"] == model.LB_ROUND_ROBIN


def test_deleting_a_pool_takes_members_and_monitor_and_clears_vips(world):
    api, store, router = world
    b, pool, members, hm, vip = _full(api, router)
    for m in members:
        store.put_state(paths.member_health(m["id"]), {"status": "ONLINE"}, ephemeral=False)
    api.ok("DELETE", f"/v1/pools/{pool['id']}")
    assert api.ok("GET", "/v1/pool_members") == []
    assert api.ok("GET", "/v1/health_monitors") == []
    assert api.ok("GET", f"/v1/vips/{vip['id']}")["pool_id"] is None
    assert all(store.get_state(paths.member_health(m["id"])) is None for m in members)


# ------------------------------------------------------------------ VIPs
def test_vip_address_checks(world):
    api, store, router = world
    b = _lb(api, router)
    body = {"load_balancer_id": b["id"], "protocol_port": 80}
    before = store_snapshot(store)
    for address, why in (("10.0.0.1", "address of port"), ("10.9.0.5", "on no network"),
                         ("169.254.252.2", "on no network"), ("10.0.0.255", "broadcast"),
                         ("10.0.0.0", "network address"), ("224.0.0.1", "unicast")):
        msg = _err(api.post("/v1/vips", dict(body, address=address)), 400, "address")
        assert why in msg["message"], (address, msg)
    _err(api.post("/v1/vips", dict(body, address="10.0.0.9", protocol_port=0)), 400,
         "protocol_port")
    _err(api.post("/v1/vips", dict(body, address="10.0.0.9", session_persistence="COOKIE")),
         400, "session_persistence")
    assert store_snapshot(store) == before


def test_vip_unique_per_router_and_pool_rules(world):
    api, store, router = world
    b1, b2 = _lb(api, router), _lb(api, router)
    p1 = api.ok("POST", "/v1/pools", {"load_balancer_id": b1["id"]})
    udp = api.ok("POST", "/v1/pools", {"load_balancer_id": b1["id"], "protocol": "UDP"})
    vip = api.ok("POST", "/v1/vips", {"load_balancer_id": b1["id"], "address": "10.0.0.9",
                                      "protocol_port": 53, "pool_id": p1["id"]})
    assert vip["operating_status"] == model.OP_ONLINE
    before = store_snapshot(store)
    same = {"address": "10.0.0.9", "protocol_port": 53}
    _err(api.post("/v1/vips", {"load_balancer_id": b2["id"], **same}), 409, "protocol_port")
    _err(api.post("/v1/vips", {"load_balancer_id": b2["id"], **same, "pool_id": p1["id"],
                               "protocol": "UDP"}), 400, "pool_id")
    msg = _err(api.post("/v1/vips", {"load_balancer_id": b1["id"], **same,
                                     "pool_id": p1["id"], "protocol": "UDP"}), 400,
               "pool_id")["message"]
    assert "protocol" in msg
    _err(api.put(f"/v1/vips/{vip['id']}", {"pool_id": udp["id"]}), 400, "pool_id")
    _err(api.put(f"/v1/vips/{vip['id']}", {"address": "10.0.0.10"}), 400, "address")
    assert store_snapshot(store) == before
    # UDP on the same address and port is another VIP
    api.ok("POST", "/v1/vips", {"load_balancer_id": b2["id"], **same, "protocol": "UDP"})
    got = api.ok("PUT", f"/v1/vips/{vip['id']}", {"pool_id": None,
                                                  "session_persistence": "SOURCE_IP",
                                                  "persistence_timeout": 60})
    assert (got["pool_id"], got["session_persistence"]) == (None, "SOURCE_IP")


# --------------------------------------------------------------- members
def test_member_checks_and_pool_listing(world):
    api, store, router = world
    b, pool, members, hm, vip = _full(api, router)
    before = store_snapshot(store)
    body = {"pool_id": pool["id"], "address": "10.1.0.11", "protocol_port": 80}
    _err(api.post("/v1/pool_members", body), 409, "address")
    _err(api.post("/v1/pool_members", dict(body, protocol_port=81, weight=257)), 400,
         "weight")
    _err(api.post("/v1/pool_members", dict(body, protocol_port=81, weight=-1)), 400,
         "weight")
    _err(api.put(f"/v1/pool_members/{members[0]['id']}", {"protocol_port": 81}), 400,
         "protocol_port")
    assert store_snapshot(store) == before
    other = api.ok("POST", "/v1/pool_members", dict(body, protocol_port=81, weight=0))
    assert other["weight"] == 0
    listed = api.ok("GET", f"/v1/pools/{pool['id']}/members")
    assert sorted(m["id"] for m in listed) == sorted([other["id"]] +
                                                    [m["id"] for m in members])
    _err(api.get("/v1/pools/6c1e9a3c-2d7b-4b8e-9c1a-0e5f3a2b1c4d/members"), 404)
    got = api.ok("PUT", f"/v1/pool_members/{other['id']}", {"weight": 256})
    assert got["weight"] == 256


# ------------------------------------------------------- health monitors
def test_health_monitor_checks(world):
    api, store, router = world
    b = _lb(api, router)
    pool = api.ok("POST", "/v1/pools", {"load_balancer_id": b["id"]})
    body = {"pool_id": pool["id"]}
    before = store_snapshot(store)
    for extra, field in (({"delay": 2, "timeout": 3}, "delay"),
                         ({"max_retries": 0}, "max_retries"),
                         ({"max_retries_down": 11}, "max_retries_down"),
                         ({"type": "PING"}, "type"),
                         ({"url_path": "/x"}, "url_path"),
                         ({"type": "HTTP", "url_path": "x"}, "url_path"),
                         ({"type": "HTTP", "http_method": "FETCH"}, "http_method"),
                         ({"type": "HTTP", "expected_codes": "2xx"}, "expected_codes"),
                         ({"type": "HTTP", "expected_codes": "204-200"}, "expected_codes"),
                         ({"type": "HTTP", "expected_codes": "200,700"}, "expected_codes")):
        _err(api.post("/v1/health_monitors", dict(body, **extra)), 400, field)
    assert store_snapshot(store) == before
    hm = api.ok("POST", "/v1/health_monitors", dict(body, type="HTTPS", delay=3, timeout=3,
                                                    expected_codes="200-204,301"))
    _err(api.post("/v1/health_monitors", body), 409, "pool_id")
    _err(api.put(f"/v1/health_monitors/{hm['id']}", {"timeout": 4}), 400, "timeout")
    _err(api.put(f"/v1/health_monitors/{hm['id']}", {"type": "TCP"}), 400, "type")
    got = api.ok("PUT", f"/v1/health_monitors/{hm['id']}", {"url_path": "/health",
                                                            "delay": 10})
    assert (got["url_path"], got["delay"]) == ("/health", 10)


# ------------------------------------------------------ operating status
def test_operating_status_follows_admin_state_and_health(world):
    api, store, router = world
    b, pool, (m1, m2), hm, vip = _full(api, router)

    def status(kind, obj):
        return api.ok("GET", f"/v1/{kind}/{obj['id']}")["operating_status"]

    assert status("pool_members", m1) == model.OP_NO_MONITOR  # not checked yet
    assert api.ok("GET", f"/v1/pool_members/{m1['id']}")["health"] is None
    entry = {"status": "ERROR", "since": time.time(), "host_id": "h", "reason": "refused"}
    store.put_state(paths.member_health(m1["id"]), entry, ephemeral=False)
    store.put_state(paths.member_health(m2["id"]), dict(entry, status="ONLINE"),
                    ephemeral=False)
    got = api.ok("GET", f"/v1/pool_members/{m1['id']}")
    assert (got["operating_status"], got["health"]) == (model.OP_ERROR, entry)
    assert status("pool_members", m2) == model.OP_ONLINE
    assert [status(k, o) for k, o in (("pools", pool), ("vips", vip),
                                      ("load_balancers", b))] == [model.OP_DEGRADED] * 3
    store.put_state(paths.member_health(m2["id"]), entry, ephemeral=False)
    assert status("pools", pool) == status("load_balancers", b) == model.OP_ERROR
    api.ok("PUT", f"/v1/health_monitors/{hm['id']}", {"admin_state_up": False})
    assert status("pool_members", m1) == model.OP_NO_MONITOR
    assert status("pools", pool) == model.OP_ONLINE
    api.ok("PUT", f"/v1/pool_members/{m1['id']}", {"admin_state_up": False})
    assert status("pool_members", m1) == model.OP_OFFLINE
    api.ok("PUT", f"/v1/pools/{pool['id']}", {"admin_state_up": False})
    assert status("pools", pool) == status("vips", vip) == model.OP_OFFLINE
    api.ok("PUT", f"/v1/pools/{pool['id']}", {"admin_state_up": True})
    api.ok("PUT", f"/v1/load_balancers/{b['id']}", {"admin_state_up": False})
    assert status("vips", vip) == status("load_balancers", b) == model.OP_OFFLINE
    # deleting the monitor drops its members' health entries
    api.ok("DELETE", f"/v1/health_monitors/{hm['id']}")
    assert store.get_state(paths.member_health(m1["id"])) is None
    api.ok("DELETE", f"/v1/pool_members/{m2['id']}")
    assert store.get_state(paths.member_health(m2["id"])) is None


# ----------------------------------------------- the staged entry points
def test_staged_functions_write_nothing_until_the_commit(world):
    api, store, router = world
    txn = Txn(store)
    b = lb.create_load_balancer(txn, {"router_id": router["id"], "name": "x"})
    pool = lb.create_pool(txn, {"load_balancer_id": b["id"], "protocol": "UDP"})
    vip = lb.create_vip(txn, {"load_balancer_id": b["id"], "address": "10.0.0.50",
                              "protocol": "UDP", "protocol_port": 53, "pool_id": pool["id"]})
    m = lb.create_member(txn, {"pool_id": pool["id"], "address": "10.1.0.5",
                               "protocol_port": 53})
    lb.create_health_monitor(txn, {"pool_id": pool["id"]})
    assert api.ok("GET", "/v1/load_balancers") == []
    lb.commit(txn)
    data, ver = store.get(model.VIPS, vip["id"])
    out = lb.output(store, model.VIPS, data, ver)
    assert out["pool_id"] == pool["id"] and out["operating_status"] == model.OP_ONLINE
    assert api.ok("GET", f"/v1/pool_members/{m['id']}")["address"] == "10.1.0.5"
    txn = Txn(store)
    lb.delete(txn, model.LOAD_BALANCERS, b["id"], cascade=True)
    lb.commit(txn)
    assert all(api.ok("GET", f"/v1/{k}") == [] for k in model.LB_KINDS)


def test_every_answer_is_valid_json_with_the_declared_fields(world):
    api, _, router = world
    _full(api, router)
    from midoflow.kinds import KINDS
    for kind in model.LB_KINDS:
        rows = api.ok("GET", f"/v1/{kind}")
        assert rows and all(list(r) == [*KINDS[kind].stored, "version",
                                        *(f.name for f in KINDS[kind].fields if f.computed)]
                            for r in rows)
        json.dumps(rows)


