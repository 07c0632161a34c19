"""TopologyService: validation, referential integrity, atomicity."""

from __future__ import annotations

import copy
import uuid

import pytest

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound, Unavailable
from midoflow.store import paths
from midoflow.store.base import Update
from tests.unit.conftest import store_snapshot


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def topo(service):
    """A host, a tunnel zone and a bridge with two exterior and one interior port."""
    h1 = service.create_host({"name": "h1"})
    h2 = service.create_host({"name": "h2", "description": "second"})
    tz = service.create_tunnel_zone({"name": "tz"})
    br = service.create_bridge({"name": "br", "tenant_id": "t1"})
    br2 = service.create_bridge({"name": "br2", "tenant_id": "t2"})
    p1 = service.create_port(br["id"], {"name": "p1"})
    p2 = service.create_port(br["id"], {})
    i1 = service.create_port(br["id"], {"type": "interior"})
    i2 = service.create_port(br2["id"], {"type": "interior"})
    return dict(h1=h1, h2=h2, tz=tz, br=br, br2=br2, p1=p1, p2=p2, i1=i1, i2=i2)


def test_create_and_get_every_kind(service, topo):
    h = service.get_host(topo["h1"]["id"])
    assert h == {"id": topo["h1"]["id"], "name": "h1", "description": "", "version": 0,
                 "alive": False, "state": None}
    tz = service.get_tunnel_zone(topo["tz"]["id"])
    assert tz["type"] == "vxlan" and tz["members"] == [] and tz["version"] == 0
    br = service.get_bridge(topo["br"]["id"])
    assert br["port_ids"] == [topo["p1"]["id"], topo["p2"]["id"], topo["i1"]["id"]]
    assert br["admin_state_up"] is True and br["tenant_id"] == "t1"
    p = service.get_port(topo["p1"]["id"])
    assert p["device_id"] == br["id"] and p["device_type"] == "bridge"
    assert p["type"] == "exterior" and p["host_id"] is None and p["peer_id"] is None
    assert model.TUNNEL_KEY_MIN <= p["tunnel_key"] <= model.TUNNEL_KEY_MAX
    keys = {topo[k]["tunnel_key"] for k in ("p1", "p2", "i1", "i2")}
    assert len(keys) == 4
    assert [b["name"] for b in service.list_bridges(tenant_id="t2")] == ["br2"]
    assert len(service.list_bridges()) == 2
    assert len(service.list_ports()) == 4
    assert len(service.list_bridge_ports(topo["br"]["id"])) == 3
    assert {h["name"] for h in service.list_hosts()} == {"h1", "h2"}
    # the typed views read what the service writes
    raw, _ = service.store.get(model.PORTS, p["id"])
    assert model.from_dict(model.PORTS, raw).tunnel_key == p["tunnel_key"]


def test_client_given_id(service):
    hid = _id()
    assert service.create_host({"id": hid, "name": "x"})["id"] == hid
    with pytest.raises(Conflict):
        service.create_host({"id": hid, "name": "y"})
    with pytest.raises(Invalid) as e:
        service.create_host({"id": "not-a-uuid", "name": "y"})
    assert e.value.field == "id"


@pytest.mark.parametrize("body,field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"name": 5}, "name"),
    ({"name": "a", "description": None}, "description"),
    ({"name": "a", "colour": "red"}, "colour"),
    ({"name": "a", "id": 7}, "id"),
])
def test_host_invalid(service, mem_store, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_host(body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("body,field", [
    ({"name": "b", "admin_state_up": 1}, "admin_state_up"),
    ({"name": "b", "admin_state_up": "true"}, "admin_state_up"),
    ({"name": ["b"]}, "name"),
    ({"tenant_id": 3}, "tenant_id"),
    ({"port_ids": []}, "port_ids"),
    ({"version": 0}, "version"),
])
def test_bridge_invalid(service, body, field):
    with pytest.raises(Invalid) as e:
        service.create_bridge(body)
    assert e.value.field == field


@pytest.mark.parametrize("body,field", [
    ({"type": "trunk"}, "type"),
    ({"type": None}, "type"),
    ({"admin_state_up": 0}, "admin_state_up"),
    ({"tunnel_key": 5}, "tunnel_key"),
    ({"host_id": None}, "host_id"),
    ({"name": "n" * 256}, "name"),
])
def test_port_invalid(service, mem_store, topo, body, field):
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_port(topo["br"]["id"], body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("body,field", [
    ({"name": "z", "type": "geneve"}, "type"),
    ({"name": "z", "members": {}}, "members"),
    ({"name": "z", "members": [{"host_id": "nope", "ip": "1.2.3.4"}]}, "members[0].host_id"),
    ({"name": "z", "members": [{"host_id": "H"}]}, "members[0].ip"),
    ({"name": "z", "members": [{"host_id": "H", "ip": "1.2.3.4", "x": 1}]}, "members[0].x"),
    ({"name": "z", "members": [{"host_id": "H", "ip": "224.0.0.1"}]}, "members[0].ip"),
    ({"name": "z", "members": [{"host_id": _id(), "ip": "1.2.3.4"}]}, "members[0].host_id"),
])
def test_tunnel_zone_invalid(service, topo, body, field):
    hid = topo["h1"]["id"]
    body = copy.deepcopy(body)
    for m in body.get("members", []) if isinstance(body.get("members"), list) else []:
        if m.get("host_id") == "H":
            m["host_id"] = hid
    with pytest.raises(Invalid) as e:
        service.create_tunnel_zone(body)
    assert e.value.field == field


def test_tunnel_zone_with_members(service, topo):
    h1, h2 = topo["h1"]["id"], topo["h2"]["id"]
    tz = service.create_tunnel_zone({"name": "z", "type": "gre", "members": [
        {"host_id": h1, "ip": "10.0.0.1"}, {"host_id": h2, "ip": "10.0.0.2"}]})
    assert tz["type"] == "gre" and len(tz["members"]) == 2
    with pytest.raises(Invalid) as e:
        service.create_tunnel_zone({"name": "z", "members": [
            {"host_id": h1, "ip": "10.0.0.1"}, {"host_id": h1, "ip": "10.0.0.2"}]})
    assert e.value.field == "members[1].host_id"


@pytest.mark.parametrize("ip", ["1.2.3", "1.2.3.256", "::1", "0.0.0.0", "255.255.255.255",
                                "239.1.1.1", "01.2.3.4x", " 1.2.3.4", 16909060, None])
def test_member_ip_must_be_ipv4_unicast(service, topo, ip):
    with pytest.raises(Invalid) as e:
        service.add_member(topo["tz"]["id"], {"host_id": topo["h1"]["id"], "ip": ip})
    assert e.value.field == "ip"


def test_members(service, topo):
    tzid, h1 = topo["tz"]["id"], topo["h1"]["id"]
    tz = service.add_member(tzid, {"host_id": h1, "ip": "192.168.0.1"})
    assert tz["members"] == [{"host_id": h1, "ip": "192.168.0.1"}]
    assert service.list_members(tzid) == tz["members"]
    with pytest.raises(Conflict):
        service.add_member(tzid, {"host_id": h1, "ip": "192.168.0.2"})
    with pytest.raises(Invalid) as e:
        service.add_member(tzid, {"host_id": _id(), "ip": "192.168.0.2"})
    assert e.value.field == "host_id"
    with pytest.raises(Conflict):  # a member host cannot be deleted
        service.delete_host(h1)
    assert service.remove_member(tzid, h1)["members"] == []
    with pytest.raises(NotFound):
        service.remove_member(tzid, h1)
    service.delete_host(h1)
    with pytest.raises(NotFound):
        service.get_host(h1)


def test_update_partial_and_version(service, topo):
    br = service.get_bridge(topo["br"]["id"])
    new = service.update_bridge(br["id"], {"name": "renamed", "version": br["version"]})
    assert new["name"] == "renamed" and new["tenant_id"] == "t1"
    assert new["version"] > br["version"]
    with pytest.raises(Conflict) as e:
        service.update_bridge(br["id"], {"name": "again", "version": br["version"]})
    assert e.value.field == "version"
    assert service.get_bridge(br["id"])["name"] == "renamed"
    # the whole object read back may be sent as it is
    cur = service.get_bridge(br["id"])
    assert service.update_bridge(br["id"], dict(cur, admin_state_up=False))["admin_state_up"] \
        is False
    host = service.get_host(topo["h1"]["id"])
    assert service.update_host(host["id"], dict(host, description="d"))["description"] == "d"
    port = service.get_port(topo["p1"]["id"])
    assert service.update_port(port["id"], dict(port, name="eth0"))["name"] == "eth0"
    tz = service.get_tunnel_zone(topo["tz"]["id"])
    assert service.update_tunnel_zone(tz["id"], dict(tz, type="gre"))["type"] == "gre"


@pytest.mark.parametrize("kind,body,field", [
    ("br", {"port_ids": []}, "port_ids"),
    ("br", {"id": "00000000-0000-4000-8000-000000000000"}, "id"),
    ("br", {"version": -1}, "version"),
    ("br", {"version": True}, "version"),
    ("br", {"admin_state_up": None}, "admin_state_up"),
    ("p1", {"tunnel_key": 99}, "tunnel_key"),
    ("p1", {"device_id": "00000000-0000-4000-8000-000000000000"}, "device_id"),
    ("p1", {"type": "interior"}, "type"),
    ("p1", {"host_id": "00000000-0000-4000-8000-000000000000"}, "host_id"),
    ("p1", {"peer_id": "00000000-0000-4000-8000-000000000000"}, "peer_id"),
    ("p1", {"bogus": 1}, "bogus"),
    ("h1", {"name": ""}, "name"),
    ("h1", {"alive": "yes"}, "alive"),
    ("tz", {"members": [{"host_id": "00000000-0000-4000-8000-000000000000",
                         "ip": "1.1.1.1"}]}, "members"),
    ("tz", {"type": "vlan"}, "type"),
])
def test_update_invalid_changes_nothing(service, mem_store, topo, kind, body, field):
    update = {"br": service.update_bridge, "p1": service.update_port,
              "h1": service.update_host, "tz": service.update_tunnel_zone}[kind]
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        update(topo[kind]["id"], body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


def test_missing_ids(service, topo):
    missing = _id()
    for fn in (service.get_host, service.get_bridge, service.get_port, service.get_tunnel_zone,
               service.delete_host, service.delete_bridge, service.delete_port,
               service.delete_tunnel_zone, service.host_bindings, service.list_bridge_ports,
               service.unbind_port, service.unlink_port, service.list_members):
        with pytest.raises(NotFound):
            fn(missing)
        with pytest.raises(NotFound):
            fn("not-a-uuid")
    with pytest.raises(NotFound):
        service.create_port(missing, {})
    with pytest.raises(NotFound):
        service.update_host(missing, {"name": "x"})


def test_bridge_with_ports_cannot_be_deleted(service, mem_store, topo):
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.delete_bridge(topo["br"]["id"])
    assert store_snapshot(mem_store) == before
    for p in ("p1", "p2", "i1"):
        service.delete_port(topo[p]["id"])
    assert service.get_bridge(topo["br"]["id"])["port_ids"] == []
    service.delete_bridge(topo["br"]["id"])
    assert [b["name"] for b in service.list_bridges()] == ["br2"]


def test_binding(service, mem_store, topo):
    p1, p2, h1 = topo["p1"]["id"], topo["p2"]["id"], topo["h1"]["id"]
    port = service.set_binding(p1, {"host_id": h1, "interface_name": "tap0"})
    assert port["host_id"] == h1 and port["interface_name"] == "tap0"
    assert [p["id"] for p in service.host_bindings(h1)] == [p1]
    with pytest.raises(Conflict):  # bound twice
        service.bind_port(p1, topo["h2"]["id"], "tap1")
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:  # the interface is taken
        service.bind_port(p2, h1, "tap0")
    assert e.value.field == "interface_name"
    with pytest.raises(Conflict):  # a host with bound ports stays
        service.delete_host(h1)
    assert store_snapshot(mem_store) == before
    # same interface name on another host is fine
    service.bind_port(p2, topo["h2"]["id"], "tap0")
    port = service.unbind_port(p1)
    assert port["host_id"] is None and port["interface_name"] is None
    with pytest.raises(Conflict):
        service.unbind_port(p1)
    service.delete_host(h1)


@pytest.mark.parametrize("body,field", [
    ({"host_id": "H"}, "interface_name"),
    ({"interface_name": "tap0"}, "host_id"),
    ({"host_id": "H", "interface_name": ""}, "interface_name"),
    ({"host_id": "H", "interface_name": "a" * 16}, "interface_name"),
    ({"host_id": "H", "interface_name": "a b"}, "interface_name"),
    ({"host_id": "H", "interface_name": "a/b"}, "interface_name"),
    ({"host_id": "nope", "interface_name": "tap0"}, "host_id"),
    ({"host_id": "MISSING", "interface_name": "tap0"}, "host_id"),
    ({"host_id": "H", "interface_name": "tap0", "extra": 1}, "extra"),
])
def test_binding_invalid(service, mem_store, topo, body, field):
    body = dict(body)
    if body.get("host_id") == "H":
        body["host_id"] = topo["h1"]["id"]
    elif body.get("host_id") == "MISSING":
        body["host_id"] = _id()
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.set_binding(topo["p1"]["id"], body)
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


def test_interior_ports_are_not_bound_exterior_not_linked(service, topo):
    with pytest.raises(Conflict):
        service.bind_port(topo["i1"]["id"], topo["h1"]["id"], "tap0")
    with pytest.raises(Conflict):
        service.link_port(topo["p1"]["id"], topo["i2"]["id"])
    with pytest.raises(Conflict):
        service.link_port(topo["i2"]["id"], topo["p1"]["id"])


def test_link_unlink_and_delete_linked_port(service, mem_store, topo):
    i1, i2 = topo["i1"]["id"], topo["i2"]["id"]
    port = service.set_link(i1, {"peer_id": i2})
    assert port["peer_id"] == i2 and service.get_port(i2)["peer_id"] == i1
    i3 = service.create_port(topo["br2"]["id"], {"type": "interior"})["id"]
    with pytest.raises(Conflict):  # already linked
        service.link_port(i3, i1)
    port = service.unlink_port(i2)
    assert port["peer_id"] is None and service.get_port(i1)["peer_id"] is None
    with pytest.raises(Conflict):
        service.unlink_port(i2)
    service.link_port(i1, i2)
    service.delete_port(i1)  # unlinks the peer and leaves the bridge, in one commit
    assert service.get_port(i2)["peer_id"] is None
    assert i1 not in service.get_bridge(topo["br"]["id"])["port_ids"]


@pytest.mark.parametrize("peer,field", [
    ("self", "peer_id"), ("same-device", "peer_id"), ("missing", "peer_id"), (5, "peer_id"),
])
def test_link_invalid(service, mem_store, topo, peer, field):
    i1 = topo["i1"]["id"]
    if peer == "self":
        peer = i1
    elif peer == "same-device":
        peer = service.create_port(topo["br"]["id"], {"type": "interior"})["id"]
    elif peer == "missing":
        peer = _id()
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.set_link(i1, {"peer_id": peer})
    assert e.value.field == field
    assert store_snapshot(mem_store) == before


def test_port_create_conflicts_with_concurrent_bridge_change(service, flaky_store, mem_store,
                                                             topo):
    """The bridge is updated with the version read: a change meanwhile fails the commit."""
    br = topo["br"]

    def meanwhile():
        data, ver = mem_store.get(model.BRIDGES, br["id"])
        mem_store.commit([Update(model.BRIDGES, dict(data, name="meanwhile"), ver)])

    flaky_store.before_commit = meanwhile
    with pytest.raises(Conflict):
        service.create_port(br["id"], {})
    assert len(service.list_bridge_ports(br["id"])) == 3
    assert service.get_bridge(br["id"])["name"] == "meanwhile"


def test_host_delete_conflicts_with_concurrent_binding(service, flaky_store, topo):
    h2 = topo["h2"]["id"]
    flaky_store.before_commit = lambda: service.bind_port(topo["p1"]["id"], h2, "tap9")
    with pytest.raises(Conflict):
        service.delete_host(h2)
    assert service.get_port(topo["p1"]["id"])["host_id"] == h2


def test_tunnel_keys_stay_in_range(service, mem_store, topo):
    mem_store.backend.counters["tunnel_key"] = model.TUNNEL_KEY_MAX - 1
    assert service.create_port(topo["br"]["id"], {})["tunnel_key"] == model.TUNNEL_KEY_MAX
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.create_port(topo["br"]["id"], {})
    assert store_snapshot(mem_store) == before


def test_host_alive_and_status(service, mem_store, topo):
    h1 = topo["h1"]["id"]
    state = {"host_id": h1, "hostname": "node1", "tunnel_ips": {"vxlan": "10.0.0.1"},
             "ovs_connected": True, "started_at": 1.0}
    mem_store.put_state(paths.host_alive(h1), state)
    h = service.get_host(h1)
    assert h["alive"] is True and h["state"] == state
    st = service.status()
    assert st["store"]["connected"] is True
    by_id = {x["id"]: x for x in st["hosts"]}
    row = {k: val for k, val in by_id[h1].items() if k != "protection"}  # issue 9's field
    assert row == {"id": h1, "name": "h1", "alive": True, "ovs_connected": True,
                   "tunnel_ips": {"vxlan": "10.0.0.1"}}
    assert by_id[topo["h2"]["id"]]["alive"] is False
    mem_store.close()
    assert service.get_host(h1)["alive"] is False


def test_unavailable_propagates(service, flaky_store, topo):
    flaky_store.down = True
    for call in (service.list_hosts, lambda: service.get_bridge(topo["br"]["id"]),
                 lambda: service.create_bridge({"name": "x"}), service.status,
                 lambda: service.delete_port(topo["p1"]["id"])):
        with pytest.raises(Unavailable):
            call()
