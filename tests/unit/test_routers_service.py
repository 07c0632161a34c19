"""TopologyService: routers, router ports and routes (validation, integrity, atomicity)."""

from __future__ import annotations

import uuid

import pytest

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound, Unavailable
from midoflow.store.base import Update
from tests.unit.conftest import store_snapshot


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def topo(service):
    """Router r1 (10.0.1.1/24 interior, 10.0.2.1/24 interior, 203.0.113.2/24 uplink),
    router r2 (empty), bridge br with an exterior and an interior port, a host."""
    h1 = service.create_host({"name": "h1"})
    br = service.create_bridge({"name": "br", "tenant_id": "t1"})
    bp = service.create_port(br["id"], {"name": "vm1"})
    bi = service.create_port(br["id"], {"type": "interior", "name": "to-r1"})
    r1 = service.create_router({"name": "r1", "tenant_id": "t1"})
    r2 = service.create_router({"name": "r2", "tenant_id": "t2"})
    ra = service.create_router_port(r1["id"], {"ip_address": "10.0.1.1", "prefix_len": 24,
                                               "type": "interior", "name": "ra"})
    rb = service.create_router_port(r1["id"], {"ip_address": "10.0.2.1", "prefix_len": 24,
                                               "type": "interior", "name": "rb",
                                               "mac": "02:AA:00:00:00:02"})
    up = service.create_router_port(r1["id"], {"ip_address": "203.0.113.2", "prefix_len": 24,
                                               "name": "uplink"})
    return dict(h1=h1, br=br, bp=bp, bi=bi, r1=r1, r2=r2, ra=ra, rb=rb, up=up)


def _route(service, topo, **kw):
    body = {"dst_cidr": "0.0.0.0/0", "next_hop_port": topo["up"]["id"],
            "next_hop_gateway": "203.0.113.1"}
    body.update(kw)
    return service.create_route(topo["r1"]["id"], body)


# -------------------------------------------------------------------- routers
def test_router_crud(service, topo):
    r1 = service.get_router(topo["r1"]["id"])
    assert r1["name"] == "r1" and r1["tenant_id"] == "t1" and r1["admin_state_up"] is True
    assert r1["port_ids"] == [topo["ra"]["id"], topo["rb"]["id"], topo["up"]["id"]]
    assert set(r1) == {"id", "name", "tenant_id", "admin_state_up", "port_ids", "inbound_filter_id",
                        "outbound_filter_id", "version"}
    assert [r["name"] for r in service.list_routers()] == ["r1", "r2"]
    assert [r["name"] for r in service.list_routers(tenant_id="t2")] == ["r2"]
    assert service.list_routers(tenant_id="nobody") == []
    new = service.update_router(r1["id"], {"name": "edge", "version": r1["version"]})
    assert new["name"] == "edge" and new["tenant_id"] == "t1" and new["version"] > r1["version"]
    # the whole object read back is a valid PUT body
    new = service.update_router(r1["id"], dict(new, admin_state_up=False))
    assert new["admin_state_up"] is False
    with pytest.raises(Conflict) as e:
        service.update_router(r1["id"], {"name": "x", "version": r1["version"]})
    assert e.value.field == "version"
    service.delete_router(topo["r2"]["id"])
    with pytest.raises(NotFound):
        service.get_router(topo["r2"]["id"])


def test_router_with_own_id(service):
    rid = _id()
    assert service.create_router({"id": rid})["id"] == rid
    with pytest.raises(Conflict):
        service.create_router({"id": rid})


@pytest.mark.parametrize("body,field", [
    ({"admin_state_up": 1}, "admin_state_up"),
    ({"admin_state_up": "true"}, "admin_state_up"),
    ({"name": ["r"]}, "name"),
    ({"name": "r" * 256}, "name"),
    ({"tenant_id": None}, "tenant_id"),
    ({"port_ids": []}, "port_ids"),
    ({"version": 0}, "version"),
    ({"id": "R1"}, "id"),
    ({"routes": []}, "routes"),
])
def test_router_invalid(service, mem_store, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_router(body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("body,field", [
    ({"port_ids": []}, "port_ids"),
    ({"id": "00000000-0000-4000-8000-000000000000"}, "id"),
    ({"admin_state_up": None}, "admin_state_up"),
    ({"version": -1}, "version"),
    ({"name": 3}, "name"),
    ({"colour": "red"}, "colour"),
])
def test_router_update_invalid_changes_nothing(service, mem_store, topo, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.update_router(topo["r1"]["id"], body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


def test_router_with_ports_cannot_be_deleted_and_takes_its_routes(service, mem_store, topo):
    r1 = topo["r1"]["id"]
    _route(service, topo)
    bh = service.create_route(r1, {"dst_cidr": "192.0.2.0/24", "type": "blackhole"})
    other = service.create_route(topo["r2"]["id"], {"dst_cidr": "10.0.0.0/8",
                                                    "type": "reject"})
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.delete_router(r1)
    assert store_snapshot(mem_store) == before
    for p in ("ra", "rb", "up"):
        service.delete_port(topo[p]["id"])
    # the route through the uplink went with it; the blackhole stays until the router goes
    assert [r["id"] for r in service.list_router_routes(r1)] == [bh["id"]]
    service.delete_router(r1)
    assert [r["id"] for r in service.list_routes()] == [other["id"]]
    with pytest.raises(NotFound):
        service.get_route(bh["id"])


def test_router_delete_conflicts_with_concurrent_route(service, flaky_store, topo):
    r2 = topo["r2"]["id"]
    flaky_store.before_commit = lambda: service.create_route(
        r2, {"dst_cidr": "10.0.0.0/8", "type": "blackhole"})
    with pytest.raises(Conflict):
        service.delete_router(r2)
    assert service.get_router(r2)["name"] == "r2"
    assert len(service.list_router_routes(r2)) == 1


# --------------------------------------------------------------- router ports
def test_router_port_fields(service, topo):
    ra = service.get_port(topo["ra"]["id"])
    assert ra["device_type"] == "router" and ra["device_id"] == topo["r1"]["id"]
    assert ra["type"] == "interior" and ra["ip_address"] == "10.0.1.1"
    assert ra["prefix_len"] == 24 and ra["name"] == "ra"
    assert ra["host_id"] is None and ra["peer_id"] is None
    # a generated MAC: canonical, unicast, locally administered
    mac = ra["mac"]
    assert mac == mac.lower() and len(mac.split(":")) == 6
    first = int(mac[:2], 16)
    assert first & 1 == 0 and first & 2 == 2
    assert topo["rb"]["mac"] == "02:aa:00:00:00:02"  # given MACs are made canonical
    assert topo["up"]["type"] == "exterior"
    # bridge ports show the router-port fields as null
    bp = service.get_port(topo["bp"]["id"])
    assert (bp["mac"], bp["ip_address"], bp["prefix_len"]) == (None, None, None)
    # one tunnel key counter for every port
    keys = [topo[k]["tunnel_key"] for k in ("bp", "bi", "ra", "rb", "up")]
    assert len(set(keys)) == 5 and keys == sorted(keys)
    assert [p["name"] for p in service.list_router_ports(topo["r1"]["id"])] == \
        ["ra", "rb", "uplink"]
    assert service.list_router_ports(topo["r2"]["id"]) == []
    assert len(service.list_ports()) == 5
    # the typed view reads it
    raw, _ = service.store.get(model.PORTS, ra["id"])
    port = model.from_dict(model.PORTS, raw)
    assert (port.mac, port.ip_address, port.prefix_len) == (mac, "10.0.1.1", 24)


@pytest.mark.parametrize("ip,plen", [("10.9.0.0", 31), ("10.9.0.1", 31), ("10.9.0.7", 32),
                                     ("10.9.0.5", 30), ("10.9.255.254", 16)])
def test_router_port_edge_addresses(service, topo, ip, plen):
    p = service.create_router_port(topo["r2"]["id"], {"ip_address": ip, "prefix_len": plen})
    assert (p["ip_address"], p["prefix_len"]) == (ip, plen)


@pytest.mark.parametrize("body,field", [
    ({"prefix_len": 24}, "ip_address"),
    ({"ip_address": "10.5.0.1"}, "prefix_len"),
    ({"ip_address": "10.5.0", "prefix_len": 24}, "ip_address"),
    ({"ip_address": "10.5.0.256", "prefix_len": 24}, "ip_address"),
    ({"ip_address": "224.0.0.5", "prefix_len": 24}, "ip_address"),
    ({"ip_address": "0.0.0.0", "prefix_len": 24}, "ip_address"),
    ({"ip_address": 167772161, "prefix_len": 24}, "ip_address"),
    ({"ip_address": "10.5.0.0", "prefix_len": 24}, "ip_address"),  # network address
    ({"ip_address": "10.5.0.255", "prefix_len": 24}, "ip_address"),  # broadcast
    ({"ip_address": "10.5.0.1", "prefix_len": 0}, "prefix_len"),
    ({"ip_address": "10.5.0.1", "prefix_len": 33}, "prefix_len"),
    ({"ip_address": "10.5.0.1", "prefix_len": "24"}, "prefix_len"),
    ({"ip_address": "10.5.0.1", "prefix_len": True}, "prefix_len"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24.0}, "prefix_len"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "mac": "01:00:5e:00:00:01"}, "mac"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "mac": "ff:ff:ff:ff:ff:ff"}, "mac"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "mac": "00:00:00:00:00:00"}, "mac"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "mac": "02-00-00-00-00-01"}, "mac"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "mac": "02:00:00:00:00"}, "mac"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "mac": "02:00:00:00:00:0g"}, "mac"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "mac": None}, "mac"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "type": "uplink"}, "type"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "admin_state_up": "up"}, "admin_state_up"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "name": 1}, "name"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "tunnel_key": 9}, "tunnel_key"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "device_id": _id()}, "device_id"),
    ({"ip_address": "10.5.0.1", "prefix_len": 24, "id": "x"}, "id"),
])
def test_router_port_invalid(service, mem_store, topo, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_router_port(topo["r1"]["id"], body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("body,field", [
    ({"ip_address": "10.0.1.2", "prefix_len": 24}, "ip_address"),  # the same network
    ({"ip_address": "10.0.0.1", "prefix_len": 16}, "ip_address"),  # contains 10.0.1.0/24
    ({"ip_address": "10.0.2.129", "prefix_len": 25}, "ip_address"),  # inside 10.0.2.0/24
    ({"ip_address": "10.7.0.1", "prefix_len": 24, "mac": "02:AA:00:00:00:02"}, "mac"),
])
def test_router_port_conflicts(service, mem_store, topo, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        service.create_router_port(topo["r1"]["id"], body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before
    if field == "mac":  # no two routers' ports share a MAC (issue 9)
        with pytest.raises(Conflict, match="already used by port .* of router") as e:
            service.create_router_port(topo["r2"]["id"], body)
        assert e.value.field == "mac"
        body = {k: val for k, val in body.items() if k != "mac"}
    # on another router the same network is fine
    service.create_router_port(topo["r2"]["id"], body)


def test_router_port_create_conflicts_with_concurrent_port(service, flaky_store, topo):
    """Two ports with overlapping networks created at once: the second commit fails
    because the router changed since its overlap check."""
    r2 = topo["r2"]["id"]
    flaky_store.before_commit = lambda: service.create_router_port(
        r2, {"ip_address": "10.0.0.1", "prefix_len": 24})
    with pytest.raises(Conflict):
        service.create_router_port(r2, {"ip_address": "10.0.0.2", "prefix_len": 24})
    assert [p["ip_address"] for p in service.list_router_ports(r2)] == ["10.0.0.1"]


def test_router_port_update(service, mem_store, topo):
    ra = service.get_port(topo["ra"]["id"])
    new = service.update_port(ra["id"], dict(ra, name="lan", admin_state_up=False))
    assert (new["name"], new["admin_state_up"]) == ("lan", False)
    assert (new["mac"], new["ip_address"], new["prefix_len"]) == \
        (ra["mac"], ra["ip_address"], ra["prefix_len"])
    before = store_snapshot(mem_store)
    for body, field in (({"mac": "02:00:00:00:00:99"}, "mac"),
                        ({"ip_address": "10.0.1.2"}, "ip_address"),
                        ({"prefix_len": 16}, "prefix_len"),
                        ({"device_type": "bridge"}, "device_type")):
        with pytest.raises(Invalid) as e:
            service.update_port(ra["id"], body)
        assert e.value.field == field
    with pytest.raises(Invalid) as e:  # a bridge port has no address to set
        service.update_port(topo["bp"]["id"], {"ip_address": "10.0.1.5"})
    assert e.value.field == "ip_address"
    assert store_snapshot(mem_store) == before


def test_router_port_delete(service, topo):
    r1, up, ra = topo["r1"]["id"], topo["up"]["id"], topo["ra"]["id"]
    via_up = _route(service, topo)
    via_up2 = _route(service, topo, dst_cidr="198.51.100.0/24", weight=5)
    via_ra = service.create_route(r1, {"dst_cidr": "10.1.0.0/16", "next_hop_port": ra,
                                       "next_hop_gateway": "10.0.1.254"})
    bh = service.create_route(r1, {"dst_cidr": "192.0.2.0/24", "type": "blackhole",
                                   "next_hop_port": up})
    service.link_port(ra, topo["bi"]["id"])
    service.delete_port(up)
    assert up not in service.get_router(r1)["port_ids"]
    left = {r["id"] for r in service.list_routes()}
    assert left == {via_ra["id"]}
    for gone in (via_up, via_up2, bh):
        with pytest.raises(NotFound):
            service.get_route(gone["id"])
    service.delete_port(ra)  # linked: the bridge port is unlinked in the same commit
    assert service.get_port(topo["bi"]["id"])["peer_id"] is None
    assert service.list_routes() == []
    assert service.get_router(r1)["port_ids"] == [topo["rb"]["id"]]


def test_links_and_bindings_of_router_ports(service, topo):
    ra, rb, up, bi = (topo[k]["id"] for k in ("ra", "rb", "up", "bi"))
    # bridge port <-> router port
    assert service.link_port(bi, ra)["peer_id"] == ra
    assert service.get_port(ra)["peer_id"] == bi
    # router port <-> router port (a tenant router under a provider router)
    down = service.create_router_port(topo["r2"]["id"], {"ip_address": "169.254.0.1",
                                                         "prefix_len": 30,
                                                         "type": "interior"})
    assert service.set_link(down["id"], {"peer_id": rb})["peer_id"] == rb
    with pytest.raises(Invalid) as e:  # two ports of the same router
        service.link_port(service.create_router_port(
            topo["r1"]["id"], {"ip_address": "10.3.0.1", "prefix_len": 24,
                               "type": "interior"})["id"], ra)
    assert e.value.field == "peer_id"
    with pytest.raises(Conflict):  # exterior ports are not linked
        service.link_port(up, bi)
    assert service.unlink_port(rb)["peer_id"] is None
    assert service.get_port(down["id"])["peer_id"] is None
    # an exterior router port (an uplink) is bound to a host interface
    h1 = topo["h1"]["id"]
    port = service.set_binding(up, {"host_id": h1, "interface_name": "eth1"})
    assert (port["host_id"], port["interface_name"]) == (h1, "eth1")
    assert [p["id"] for p in service.host_bindings(h1)] == [up]
    with pytest.raises(Conflict):
        service.bind_port(ra, h1, "eth2")
    with pytest.raises(Conflict):
        service.delete_host(h1)
    service.unbind_port(up)


# --------------------------------------------------------------------- routes
def test_route_create_and_list(service, topo):
    r1, ra = topo["r1"]["id"], topo["ra"]["id"]
    default = _route(service, topo)
    assert default == {"id": default["id"], "router_id": r1, "dst_cidr": "0.0.0.0/0",
                       "src_cidr": "0.0.0.0/0", "next_hop_port": topo["up"]["id"],
                       "next_hop_gateway": "203.0.113.1", "weight": 100, "type": "normal",
                       "version": 0}
    onlink = service.create_route(r1, {"dst_cidr": "10.0.1.128/25", "next_hop_port": ra})
    assert onlink["next_hop_gateway"] is None
    nulls = service.create_route(r1, {"dst_cidr": "10.0.1.0/26", "next_hop_port": ra,
                                      "next_hop_gateway": None})
    assert nulls["next_hop_gateway"] is None
    bh = service.create_route(r1, {"dst_cidr": "192.0.2.0/24", "type": "blackhole",
                                   "next_hop_port": None})
    rej = service.create_route(r1, {"dst_cidr": "198.51.100.0/24", "type": "reject",
                                    "src_cidr": "10.0.1.0/24", "weight": 0})
    host = service.create_route(r1, {"dst_cidr": "10.9.9.9/32", "next_hop_port": ra,
                                     "next_hop_gateway": "10.0.1.254", "weight": 65535})
    ecmp = _route(service, topo, next_hop_gateway="203.0.113.254")
    rid = _id()
    assert _route(service, topo, id=rid, dst_cidr="0.0.0.0/1")["id"] == rid
    got = [r["id"] for r in service.list_router_routes(r1)]
    # longest prefix first
    assert got[:2] == [host["id"], nulls["id"]]
    assert got.index(onlink["id"]) < got.index(bh["id"])
    assert got[-2:] == sorted([default["id"], ecmp["id"]], key=lambda i: (100, i))
    assert {rej["id"], rid} <= set(got) and len(got) == 8
    assert service.list_router_routes(topo["r2"]["id"]) == []
    assert len(service.list_routes()) == 8
    assert service.get_route(bh["id"])["type"] == "blackhole"
    # routers are touched by route writes (serialises them), not changed
    r = service.get_router(r1)
    assert r["name"] == "r1" and r["version"] > topo["r1"]["version"]
    raw, _ = service.store.get(model.ROUTES, default["id"])
    assert model.from_dict(model.ROUTES, raw).next_hop_gateway == "203.0.113.1"


@pytest.mark.parametrize("body,field", [
    ({}, "dst_cidr"),
    ({"dst_cidr": "10.0.0.1/8"}, "dst_cidr"),  # host bits
    ({"dst_cidr": "10.0.0.0/33"}, "dst_cidr"),
    ({"dst_cidr": "10.0.0.0/08"}, "dst_cidr"),
    ({"dst_cidr": "10.0.0/8"}, "dst_cidr"),
    ({"dst_cidr": "10.0.0.0"}, "dst_cidr"),
    ({"dst_cidr": "10.0.0.0/"}, "dst_cidr"),
    ({"dst_cidr": "010.0.0.0/8"}, "dst_cidr"),
    ({"dst_cidr": "10.0.0.0/8 "}, "dst_cidr"),
    ({"dst_cidr": None}, "dst_cidr"),
    ({"dst_cidr": 10}, "dst_cidr"),
    ({"dst_cidr": "10.0.0.0/8", "src_cidr": "10.0.1.1/24"}, "src_cidr"),
    ({"dst_cidr": "10.0.0.0/8", "src_cidr": None}, "src_cidr"),
    ({"dst_cidr": "10.0.0.0/8", "type": "drop"}, "type"),
    ({"dst_cidr": "10.0.0.0/8", "type": None}, "type"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "weight": -1}, "weight"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "weight": 65536}, "weight"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "weight": "1"}, "weight"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "weight": True}, "weight"),
    ({"dst_cidr": "10.0.0.0/8"}, "next_hop_port"),  # normal needs a port
    ({"dst_cidr": "10.0.0.0/8", "next_hop_port": None}, "next_hop_port"),
    ({"dst_cidr": "10.0.0.0/8", "next_hop_port": "up"}, "next_hop_port"),
    ({"dst_cidr": "10.0.0.0/8", "next_hop_port": "MISSING"}, "next_hop_port"),
    ({"dst_cidr": "10.0.0.0/8", "next_hop_port": "R2PORT"}, "next_hop_port"),
    ({"dst_cidr": "10.0.0.0/8", "next_hop_port": "BRIDGEPORT"}, "next_hop_port"),
    ({"dst_cidr": "10.0.0.0/8", "type": "blackhole", "next_hop_port": "BRIDGEPORT"},
     "next_hop_port"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "next_hop_gateway": "10.0.1.5"},
     "next_hop_gateway"),  # not on the uplink's network
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "next_hop_gateway": "203.0.113.2"},
     "next_hop_gateway"),  # the port's own address
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "next_hop_gateway": "203.0.113.255"},
     "next_hop_gateway"),  # broadcast
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "next_hop_gateway": "203.0.113.0"},
     "next_hop_gateway"),  # network
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "next_hop_gateway": "224.0.0.1"},
     "next_hop_gateway"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "next_hop_gateway": "203.0.113"},
     "next_hop_gateway"),
    ({"dst_cidr": "10.0.0.0/8", "type": "blackhole", "next_hop_gateway": "203.0.113.1"},
     "next_hop_gateway"),  # a gateway needs a port
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "router_id": "R1"}, "router_id"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "version": 0}, "version"),
    ({"dst_cidr": "10.0.0.0/8", "PORT": "UP", "id": "nope"}, "id"),
])
def test_route_invalid(service, mem_store, topo, body, field):
    refs = {"UP": topo["up"]["id"], "MISSING": _id(), "R1": topo["r1"]["id"],
            "BRIDGEPORT": topo["bp"]["id"],
            "R2PORT": service.create_router_port(topo["r2"]["id"], {
                "ip_address": "203.0.113.9", "prefix_len": 24})["id"]}
    body = dict(body)
    if body.pop("PORT", None):
        body["next_hop_port"] = topo["up"]["id"]
    body = {k: refs.get(val, val) if isinstance(val, str) else val for k, val in body.items()}
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_route(topo["r1"]["id"], body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_route_duplicates(service, mem_store, topo):
    _route(service, topo)
    before = store_snapshot(mem_store)
    for dup in ({}, {"weight": 7}, {"dst_cidr": "0.0.0.0/0", "src_cidr": "0.0.0.0/0"}):
        with pytest.raises(Conflict):
            _route(service, topo, **dup)
    assert store_snapshot(mem_store) == before
    # anything else in the identity makes another route
    _route(service, topo, next_hop_gateway="203.0.113.254")
    _route(service, topo, src_cidr="10.0.1.0/24")
    _route(service, topo, type="reject")
    _route(service, topo, next_hop_gateway=None)
    service.create_route(topo["r1"]["id"], {"dst_cidr": "0.0.0.0/0", "type": "blackhole"})
    with pytest.raises(Conflict):
        service.create_route(topo["r1"]["id"], {"dst_cidr": "0.0.0.0/0", "type": "blackhole"})
    assert len(service.list_router_routes(topo["r1"]["id"])) == 6


def test_route_update(service, mem_store, topo):
    ra, up = topo["ra"]["id"], topo["up"]["id"]
    route = _route(service, topo)
    new = service.update_route(route["id"], {"weight": 10, "version": route["version"]})
    assert new["weight"] == 10 and new["next_hop_gateway"] == "203.0.113.1"
    with pytest.raises(Conflict) as e:
        service.update_route(route["id"], {"weight": 11, "version": route["version"]})
    assert e.value.field == "version"
    # the whole object read back is a valid PUT body
    assert service.update_route(route["id"], dict(new, weight=20))["weight"] == 20
    # move it to another port and gateway together
    moved = service.update_route(route["id"], {"next_hop_port": ra,
                                               "next_hop_gateway": "10.0.1.254"})
    assert (moved["next_hop_port"], moved["next_hop_gateway"]) == (ra, "10.0.1.254")
    # make it a blackhole without a next hop, then on-link
    bh = service.update_route(route["id"], {"type": "blackhole", "next_hop_port": None,
                                            "next_hop_gateway": None})
    assert (bh["type"], bh["next_hop_port"], bh["next_hop_gateway"]) == \
        ("blackhole", None, None)
    back = service.update_route(route["id"], {"type": "normal", "next_hop_port": up})
    assert back["next_hop_gateway"] is None
    before = store_snapshot(mem_store)
    for body, field in (
        ({"type": "normal", "next_hop_port": None}, "next_hop_port"),
        ({"next_hop_gateway": "10.0.1.254"}, "next_hop_gateway"),  # not on the uplink
        ({"next_hop_port": topo["bp"]["id"]}, "next_hop_port"),
        ({"weight": 70000}, "weight"),
        ({"type": "anycast"}, "type"),
        ({"dst_cidr": "10.0.0.0/8"}, "dst_cidr"),
        ({"src_cidr": "10.0.0.0/8"}, "src_cidr"),
        ({"router_id": topo["r2"]["id"]}, "router_id"),
        ({"id": _id()}, "id"),
        ({"metric": 1}, "metric"),
    ):
        with pytest.raises(Invalid) as e:
            service.update_route(route["id"], body)
        assert e.value.field == field
    assert store_snapshot(mem_store) == before
    # an update that would duplicate another route
    other = _route(service, topo, next_hop_gateway="203.0.113.254")
    service.update_route(route["id"], {"next_hop_gateway": "203.0.113.1"})
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.update_route(other["id"], {"next_hop_gateway": "203.0.113.1"})
    assert store_snapshot(mem_store) == before
    service.delete_route(route["id"])
    with pytest.raises(NotFound):
        service.delete_route(route["id"])


def test_route_create_conflicts_with_concurrent_port_delete(service, flaky_store, topo):
    """The route's commit carries the router's version: deleting its next-hop port
    meanwhile (which updates the router) makes it fail, leaving no dangling route."""
    flaky_store.before_commit = lambda: service.delete_port(topo["up"]["id"])
    with pytest.raises(Conflict):
        _route(service, topo)
    assert service.list_routes() == []


def test_route_create_conflicts_with_concurrent_router_change(service, flaky_store,
                                                              mem_store, topo):
    r1 = topo["r1"]["id"]

    def meanwhile():
        data, ver = mem_store.get(model.ROUTERS, r1)
        mem_store.commit([Update(model.ROUTERS, dict(data, name="meanwhile"), ver)])

    flaky_store.before_commit = meanwhile
    with pytest.raises(Conflict):
        _route(service, topo)
    assert service.list_routes() == []
    assert service.get_router(r1)["name"] == "meanwhile"


# ---------------------------------------------------------------- missing ids
def test_missing_ids(service, topo):
    for fn in (service.get_router, service.delete_router, service.list_router_ports,
               service.list_router_routes, service.get_route, service.delete_route):
        for bad in (_id(), "not-a-uuid"):
            with pytest.raises(NotFound):
                fn(bad)
    for fn, body in ((service.update_router, {"name": "x"}),
                     (service.create_router_port, {"ip_address": "10.0.0.1", "prefix_len": 8}),
                     (service.create_route, {"dst_cidr": "0.0.0.0/0", "type": "blackhole"}),
                     (service.update_route, {"weight": 1})):
        with pytest.raises(NotFound):
            fn(_id(), body)
    # a bridge id is not a router id, and the other way round
    with pytest.raises(NotFound):
        service.get_router(topo["br"]["id"])
    with pytest.raises(NotFound):
        service.create_port(topo["r1"]["id"], {})


def test_unavailable_propagates(service, flaky_store, topo):
    flaky_store.down = True
    for call in (service.list_routers, service.list_routes,
                 lambda: service.get_router(topo["r1"]["id"]),
                 lambda: service.create_router({"name": "x"}),
                 lambda: service.create_router_port(topo["r1"]["id"], {
                     "ip_address": "10.5.0.1", "prefix_len": 24}),
                 lambda: service.delete_router(topo["r2"]["id"])):
        with pytest.raises(Unavailable):
            call()
