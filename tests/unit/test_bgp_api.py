"""BGP peers and networks of uplink ports, and learned routes: the service and the
REST API over the memory store (validation, integrity, atomicity, status)."""

from __future__ import annotations

import uuid

import pytest

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound, Unavailable
from midoflow.rest.app import PREFIX, ROUTES
from midoflow.store import paths
from midoflow.store.base import Update
from tests.unit.conftest import store_snapshot
from tests.unit.test_rest import _err, _fill


def _id() -> str:
    return str(uuid.uuid4())


PEER = {"local_as": 64512, "peer_address": "203.0.113.1", "peer_as": 65000}


@pytest.fixture
def topo(service):
    """Router r1: uplink 203.0.113.2/24 (exterior), p2p 198.51.100.0/31 (exterior),
    lan 10.0.1.1/24 (interior); router r2: uplink2 192.0.2.2/24; a bridge port."""
    br = service.create_bridge({"name": "br"})
    bp = service.create_port(br["id"], {"name": "vm1"})
    r1 = service.create_router({"name": "r1"})
    r2 = service.create_router({"name": "r2"})
    up = service.create_router_port(r1["id"], {"ip_address": "203.0.113.2", "prefix_len": 24,
                                               "name": "uplink"})
    p2p = service.create_router_port(r1["id"], {"ip_address": "198.51.100.0",
                                                "prefix_len": 31, "name": "p2p"})
    lan = service.create_router_port(r1["id"], {"ip_address": "10.0.1.1", "prefix_len": 24,
                                                "type": "interior", "name": "lan"})
    up2 = service.create_router_port(r2["id"], {"ip_address": "192.0.2.2", "prefix_len": 24,
                                                "name": "uplink2"})
    return dict(br=br, bp=bp, r1=r1, r2=r2, up=up, p2p=p2p, lan=lan, up2=up2)


def _peer(service, topo, port="up", **kw):
    return service.create_bgp_peer(topo[port]["id"], dict(PEER, **kw))


# ----------------------------------------------------------------------- model
def test_model_kinds_and_from_dict():
    assert model.BGP_PEERS in model.KINDS and model.BGP_NETWORKS in model.KINDS
    p = model.from_dict(model.BGP_PEERS, {"id": "a", "port_id": "b", "local_as": 1,
                                          "peer_address": "10.0.0.1", "peer_as": 2,
                                          "status": {"state": "down"}, "version": 3})
    assert p == model.BgpPeer("a", "b", 1, "10.0.0.1", 2)
    assert (p.keepalive, p.hold_time, p.connect_retry, p.name) == (10, 30, 5, "")
    n = model.from_dict(model.BGP_NETWORKS, {"id": "n", "port_id": "b", "prefix": "10.0.0.0/8"})
    assert n == model.BgpNetwork("n", "b", "10.0.0.0/8")
    assert n.to_dict() == {"id": "n", "port_id": "b", "prefix": "10.0.0.0/8"}


# ------------------------------------------------------------------ BGP peers
def test_peer_create_defaults_and_lists(service, mem_store, topo):
    up = topo["up"]["id"]
    port_ver = mem_store.get(model.PORTS, up)[1]
    a = _peer(service, topo, peer_address="203.0.113.9")
    b = _peer(service, topo, name="border-1", peer_as=65001, keepalive=20, hold_time=60,
              connect_retry=30)
    c = _peer(service, topo, port="up2", peer_address="192.0.2.1")
    assert a == {"id": a["id"], "port_id": up, "name": "", "local_as": 64512,
                 "peer_address": "203.0.113.9", "peer_as": 65000, "keepalive": 10,
                 "hold_time": 30, "connect_retry": 5, "status": {"state": "down"},
                 "version": 0}
    assert (b["name"], b["peer_as"], b["keepalive"], b["hold_time"], b["connect_retry"]) == \
        ("border-1", 65001, 20, 60, 30)
    # stored as the model's fields, nothing more
    stored, _ = mem_store.get(model.BGP_PEERS, b["id"])
    assert model.BgpPeer.from_dict(stored).to_dict() == stored
    # each create touches the port (serialises the duplicate check, guards its delete)
    assert mem_store.get(model.PORTS, up)[1] == port_ver + 2
    assert service.get_bgp_peer(b["id"]) == b
    # by port, then by peer address (numerically)
    ids = [p["id"] for p in service.list_bgp_peers()]
    assert set(ids) == {a["id"], b["id"], c["id"]}
    assert [p["id"] for p in service.list_port_bgp_peers(up)] == [b["id"], a["id"]]
    assert [p["id"] for p in service.list_port_bgp_peers(topo["up2"]["id"])] == [c["id"]]
    assert service.list_port_bgp_peers(topo["bp"]["id"]) == []
    # the same peer address on another port, and an own id
    oid = _id()
    d = _peer(service, topo, port="p2p", peer_address="198.51.100.1", id=oid)
    assert d["id"] == oid


def test_peer_as_limits_and_ibgp(service, topo):
    p = _peer(service, topo, local_as=4294967295, peer_as=4294967295)
    assert (p["local_as"], p["peer_as"]) == (4294967295, 4294967295)
    p = _peer(service, topo, peer_address="203.0.113.3", local_as=1, peer_as=1)
    assert (p["local_as"], p["peer_as"]) == (1, 1)


@pytest.mark.parametrize("port,addr", [
    ("p2p", "198.51.100.1"),  # /31: both addresses are hosts
    ("up", "203.0.113.254"),
    ("up", "203.0.113.1"),
])
def test_peer_address_edges_accepted(service, topo, port, addr):
    assert _peer(service, topo, port=port, peer_address=addr)["peer_address"] == addr


def test_peer_timers_accepted(service, topo):
    for i, (ka, hold) in enumerate([(1, 3), (10, 30), (100, 0), (21845, 65535), (1, 0),
                                    (21845, 0)]):
        p = _peer(service, topo, peer_address=f"203.0.113.{10 + i}", keepalive=ka,
                  hold_time=hold, connect_retry=3600 if i % 2 else 1)
        assert (p["keepalive"], p["hold_time"]) == (ka, hold)


BAD_PEER = [
    ({"peer_address": "203.0.113.1", "peer_as": 65000}, "local_as"),
    ({"local_as": 64512, "peer_as": 65000}, "peer_address"),
    ({"local_as": 64512, "peer_address": "203.0.113.1"}, "peer_as"),
    (dict(PEER, local_as=0), "local_as"),
    (dict(PEER, local_as=4294967296), "local_as"),
    (dict(PEER, local_as=-1), "local_as"),
    (dict(PEER, local_as=True), "local_as"),
    (dict(PEER, local_as="64512"), "local_as"),
    (dict(PEER, local_as=64512.0), "local_as"),
    (dict(PEER, peer_as=0), "peer_as"),
    (dict(PEER, peer_as=None), "peer_as"),
    (dict(PEER, peer_as=False), "peer_as"),
    (dict(PEER, peer_as=2 ** 40), "peer_as"),
    (dict(PEER, peer_address="10.0.0.1"), "peer_address"),  # not on the port's network
    (dict(PEER, peer_address="203.0.113.2"), "peer_address"),  # the port's own
    (dict(PEER, peer_address="203.0.113.0"), "peer_address"),  # network address
    (dict(PEER, peer_address="203.0.113.255"), "peer_address"),  # broadcast
    (dict(PEER, peer_address="224.0.0.5"), "peer_address"),
    (dict(PEER, peer_address="203.0.113"), "peer_address"),
    (dict(PEER, peer_address="203.0.113.1/24"), "peer_address"),
    (dict(PEER, peer_address="::1"), "peer_address"),
    (dict(PEER, peer_address=None), "peer_address"),
    (dict(PEER, peer_address=3405803777), "peer_address"),
    (dict(PEER, hold_time=1), "hold_time"),
    (dict(PEER, hold_time=2), "hold_time"),
    (dict(PEER, hold_time=-1), "hold_time"),
    (dict(PEER, hold_time=65536), "hold_time"),
    (dict(PEER, hold_time="30"), "hold_time"),
    (dict(PEER, hold_time=29), "hold_time"),  # keepalive 10 (default) * 3 > 29
    (dict(PEER, keepalive=0), "keepalive"),
    (dict(PEER, keepalive=21846, hold_time=0), "keepalive"),
    (dict(PEER, keepalive=11), "keepalive"),  # 11 * 3 > 30 (default hold_time)
    (dict(PEER, keepalive=20, hold_time=30), "keepalive"),
    (dict(PEER, keepalive=1.5), "keepalive"),
    (dict(PEER, keepalive=True), "keepalive"),
    (dict(PEER, connect_retry=0), "connect_retry"),
    (dict(PEER, connect_retry=3601), "connect_retry"),
    (dict(PEER, connect_retry=None), "connect_retry"),
    (dict(PEER, name="x" * 256), "name"),
    (dict(PEER, name=5), "name"),
    (dict(PEER, name=None), "name"),
    (dict(PEER, id="not-a-uuid"), "id"),
    (dict(PEER, port_id="{up2}"), "port_id"),  # the port is in the URL
    (dict(PEER, status={"state": "established"}), "status"),
    (dict(PEER, version=0), "version"),
    (dict(PEER, bfd=True), "bfd"),
]


@pytest.mark.parametrize("body,field", BAD_PEER)
def test_peer_invalid_is_400_naming_the_field(service, mem_store, topo, body, field):
    body = _fill(body, topo, _id())
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_bgp_peer(topo["up"]["id"], body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_peer_messages_say_what_to_do(service, topo):
    def msg(port="up", **kw):
        with pytest.raises(Invalid) as e:
            service.create_bgp_peer(topo[port]["id"], dict(PEER, **kw))
        return e.value.message

    assert "keepalive * 3 must not exceed hold_time" in msg(keepalive=20, hold_time=30)
    assert "10 or less" in msg(keepalive=20, hold_time=30)
    assert "not on the network 203.0.113.0/24" in msg(peer_address="10.0.0.1")
    assert "itself" in msg(peer_address="203.0.113.2")
    assert "broadcast address of 203.0.113.0/24" in msg(peer_address="203.0.113.255")
    assert "network address" in msg(peer_address="203.0.113.0")
    assert "1 to 4294967295" in msg(local_as=0)
    assert "0 (no keepalives)" in msg(hold_time=2)
    assert "unknown field 'bfd'" in msg(bfd=1)
    with pytest.raises(Invalid):
        service.create_bgp_peer(topo["up"]["id"], ["not", "an", "object"])


@pytest.mark.parametrize("port,needle", [
    ("bp", "bridge port"), ("lan", "interior router port"),
])
def test_peer_on_a_port_that_cannot_speak_bgp(service, mem_store, topo, port, needle):
    before = store_snapshot(mem_store)
    for create, body in ((service.create_bgp_peer, dict(PEER)),
                         (service.create_bgp_network, {"prefix": "198.51.100.0/24"})):
        with pytest.raises(Invalid) as e:
            create(topo[port]["id"], body)
        assert e.value.field == "port_id" and needle in e.value.message
        assert "exterior router port" in e.value.message
    assert store_snapshot(mem_store) == before


def test_port_without_address(service, mem_store, topo):
    """A router port always has an address through the API; a stored one without
    (an older or hand-made object) is refused, saying what is missing."""
    data, ver = mem_store.get(model.PORTS, topo["up"]["id"])
    mem_store.commit([Update(model.PORTS, dict(data, ip_address=None, prefix_len=None), ver)])
    with pytest.raises(Invalid) as e:
        _peer(service, topo)
    assert e.value.field == "port_id" and "no address" in e.value.message
    assert "ip_address" in e.value.message


def test_missing_port_is_404(service, mem_store, topo):
    before = store_snapshot(mem_store)
    for bad in (_id(), "not-a-uuid"):
        for create, body in ((service.create_bgp_peer, dict(PEER)),
                             (service.create_bgp_network, {"prefix": "198.51.100.0/24"})):
            with pytest.raises(NotFound) as e:
                create(bad, body)
            assert "port" in e.value.message
        for lister in (service.list_port_bgp_peers, service.list_port_bgp_networks):
            with pytest.raises(NotFound):
                lister(bad)
    assert store_snapshot(mem_store) == before


def test_peer_conflicts(service, mem_store, topo):
    a = _peer(service, topo)
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        _peer(service, topo, peer_as=65001, name="again")
    assert e.value.field == "peer_address" and a["id"] in e.value.message
    with pytest.raises(Conflict) as e:
        _peer(service, topo, peer_address="203.0.113.7", id=a["id"])
    assert e.value.field == "id"
    assert store_snapshot(mem_store) == before


def test_peer_create_conflicts_with_concurrent_duplicate(service, flaky_store, topo):
    """Two creations of the same session race: the port's version makes one fail."""
    flaky_store.before_commit = lambda: _peer(service, topo, name="first")
    with pytest.raises(Conflict):
        _peer(service, topo, name="second")
    assert [p["name"] for p in service.list_bgp_peers()] == ["first"]


def test_create_fails_when_the_port_is_deleted_meanwhile(service, flaky_store, topo):
    """The create touches the port: deleted meanwhile, the commit fails (the port is
    not found any more) and leaves no peer or network behind."""
    flaky_store.before_commit = lambda: service.delete_port(topo["up"]["id"])
    with pytest.raises(NotFound):
        _peer(service, topo)
    flaky_store.before_commit = lambda: service.delete_port(topo["up2"]["id"])
    with pytest.raises(NotFound):
        service.create_bgp_network(topo["up2"]["id"], {"prefix": "198.51.100.0/24"})
    assert service.list_bgp_peers() == [] and service.list_bgp_networks() == []


# -------------------------------------------------------------------- updates
def test_peer_update(service, mem_store, topo):
    p = _peer(service, topo)
    new = service.update_bgp_peer(p["id"], {"name": "edge", "local_as": 64513,
                                            "peer_as": 65002, "connect_retry": 60})
    assert (new["name"], new["local_as"], new["peer_as"], new["connect_retry"]) == \
        ("edge", 64513, 65002, 60)
    assert new["version"] == p["version"] + 1
    # timers are checked together, with the values already there
    new = service.update_bgp_peer(p["id"], {"hold_time": 90})
    new = service.update_bgp_peer(p["id"], {"keepalive": 30})
    assert (new["keepalive"], new["hold_time"]) == (30, 90)
    new = service.update_bgp_peer(p["id"], {"hold_time": 0, "keepalive": 1000})
    assert (new["keepalive"], new["hold_time"]) == (1000, 0)
    # a GET echoed back whole (status and all) is accepted
    got = service.get_bgp_peer(p["id"])
    again = service.update_bgp_peer(p["id"], dict(got, name="edge2"))
    assert again["name"] == "edge2" and again["version"] == got["version"] + 1
    # conditional on the version
    new = service.update_bgp_peer(p["id"], {"name": "x", "version": again["version"]})
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        service.update_bgp_peer(p["id"], {"name": "y", "version": again["version"]})
    assert e.value.field == "version"
    assert store_snapshot(mem_store) == before
    assert service.get_bgp_peer(p["id"])["name"] == new["name"] == "x"


BAD_UPDATE = [
    ({"port_id": "{up2}"}, "port_id"),
    ({"peer_address": "203.0.113.7"}, "peer_address"),
    ({"id": "{missing}"}, "id"),
    ({"local_as": 0}, "local_as"),
    ({"peer_as": "65000"}, "peer_as"),
    ({"keepalive": 11}, "keepalive"),  # 11 * 3 > 30
    ({"hold_time": 29}, "hold_time"),  # 10 * 3 > 29
    ({"hold_time": 1}, "hold_time"),
    ({"connect_retry": 0}, "connect_retry"),
    ({"name": ["x"]}, "name"),
    ({"status": "up"}, "status"),
    ({"version": -1}, "version"),
    ({"prefix": "10.0.0.0/8"}, "prefix"),
]


@pytest.mark.parametrize("body,field", BAD_UPDATE)
def test_peer_update_invalid_changes_nothing(service, mem_store, topo, body, field):
    p = _peer(service, topo)
    body = _fill(body, topo, _id())
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.update_bgp_peer(p["id"], body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_peer_update_of_the_session_says_delete_and_recreate(service, topo):
    p = _peer(service, topo)
    for f, val in (("peer_address", "203.0.113.7"), ("port_id", topo["up2"]["id"])):
        with pytest.raises(Invalid) as e:
            service.update_bgp_peer(p["id"], {f: val})
        assert "delete the peer and create it again" in e.value.message
    # echoes are fine
    same = service.update_bgp_peer(p["id"], {"port_id": p["port_id"],
                                             "peer_address": p["peer_address"],
                                             "id": p["id"]})
    assert same["peer_address"] == p["peer_address"]


def test_peer_delete(service, mem_store, topo):
    a = _peer(service, topo)
    b = _peer(service, topo, peer_address="203.0.113.3")
    service.delete_bgp_peer(a["id"])
    assert [p["id"] for p in service.list_bgp_peers()] == [b["id"]]
    with pytest.raises(NotFound):
        service.get_bgp_peer(a["id"])
    with pytest.raises(NotFound):
        service.delete_bgp_peer(a["id"])
    # deleting a peer leaves its port as it was
    assert service.get_port(topo["up"]["id"])["name"] == "uplink"


# ---------------------------------------------------------------- BGP networks
def test_network_create_list_delete(service, mem_store, topo):
    up, up2 = topo["up"]["id"], topo["up2"]["id"]
    a = service.create_bgp_network(up, {"prefix": "198.51.100.0/24"})
    b = service.create_bgp_network(up, {"prefix": "192.0.2.0/25"})
    c = service.create_bgp_network(up2, {"prefix": "198.51.100.0/24"})  # other port: fine
    d = service.create_bgp_network(up, {"prefix": "198.51.100.7/32"})
    assert a == {"id": a["id"], "port_id": up, "prefix": "198.51.100.0/24", "version": 0}
    stored, _ = mem_store.get(model.BGP_NETWORKS, a["id"])
    assert model.BgpNetwork.from_dict(stored).to_dict() == stored
    assert [n["id"] for n in service.list_port_bgp_networks(up)] == [b["id"], a["id"], d["id"]]
    assert [n["id"] for n in service.list_port_bgp_networks(up2)] == [c["id"]]
    assert {n["id"] for n in service.list_bgp_networks()} == {a["id"], b["id"], c["id"],
                                                               d["id"]}
    assert service.get_bgp_network(a["id"]) == a
    service.delete_bgp_network(a["id"])
    with pytest.raises(NotFound):
        service.get_bgp_network(a["id"])
    with pytest.raises(NotFound):
        service.delete_bgp_network(a["id"])
    assert len(service.list_bgp_networks()) == 3


BAD_NETWORK = [
    ({}, "prefix"),
    ({"prefix": "198.51.100.1/24"}, "prefix"),
    ({"prefix": "0.0.0.0/0"}, "prefix"),
    ({"prefix": "198.51.100.0"}, "prefix"),
    ({"prefix": "198.51.100.0/33"}, "prefix"),
    ({"prefix": "198.51.100.0/024"}, "prefix"),
    ({"prefix": "198.51.100/24"}, "prefix"),
    ({"prefix": "2001:db8::/32"}, "prefix"),
    ({"prefix": None}, "prefix"),
    ({"prefix": 24}, "prefix"),
    ({"prefix": "198.51.100.0/24", "port_id": "{up}"}, "port_id"),
    ({"prefix": "198.51.100.0/24", "next_hop": "x"}, "next_hop"),
    ({"prefix": "198.51.100.0/24", "id": "1"}, "id"),
]


@pytest.mark.parametrize("body,field", BAD_NETWORK)
def test_network_invalid_changes_nothing(service, mem_store, topo, body, field):
    body = _fill(body, topo, _id())
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.create_bgp_network(topo["up"]["id"], body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_network_messages(service, topo):
    def msg(prefix):
        with pytest.raises(Invalid) as e:
            service.create_bgp_network(topo["up"]["id"], {"prefix": prefix})
        return e.value.message

    assert "did you mean 198.51.100.0/24?" in msg("198.51.100.1/24")
    m = msg("0.0.0.0/0")
    assert "0.0.0.0/0" in m and "default route" in m
    assert "did you mean 0.0.0.0/0?" in msg("10.0.0.0/0")


def test_network_conflicts(service, mem_store, topo):
    a = service.create_bgp_network(topo["up"]["id"], {"prefix": "198.51.100.0/24"})
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict) as e:
        service.create_bgp_network(topo["up"]["id"], {"prefix": "198.51.100.0/24"})
    assert e.value.field == "prefix" and a["id"] in e.value.message
    with pytest.raises(Conflict):
        service.create_bgp_network(topo["up"]["id"], {"prefix": "10.0.0.0/8", "id": a["id"]})
    assert store_snapshot(mem_store) == before


# -------------------------------------------------------------------- cascade
def test_port_delete_takes_its_bgp_config(service, mem_store, topo):
    up, up2 = topo["up"]["id"], topo["up2"]["id"]
    _peer(service, topo)
    _peer(service, topo, peer_address="203.0.113.3")
    service.create_bgp_network(up, {"prefix": "198.51.100.0/24"})
    kept_peer = _peer(service, topo, port="up2", peer_address="192.0.2.1")
    kept_net = service.create_bgp_network(up2, {"prefix": "198.51.100.0/24"})
    service.delete_port(up)
    assert [p["id"] for p in service.list_bgp_peers()] == [kept_peer["id"]]
    assert [n["id"] for n in service.list_bgp_networks()] == [kept_net["id"]]
    assert [oid for oid in mem_store.backend.models[model.BGP_PEERS]] == [kept_peer["id"]]
    # and the router's last ports: the router can go, nothing BGP is left
    for p in ("up2",):
        service.delete_port(topo[p]["id"])
    assert service.list_bgp_peers() == [] and service.list_bgp_networks() == []
    service.delete_router(topo["r2"]["id"])


def test_port_delete_conflicts_with_concurrent_peer(service, flaky_store, mem_store, topo):
    """A peer created while the port is being deleted: the delete fails as a whole."""
    up = topo["up"]["id"]
    flaky_store.before_commit = lambda: _peer(service, topo)
    with pytest.raises(Conflict):
        service.delete_port(up)
    assert service.get_port(up)["name"] == "uplink"
    assert len(service.list_port_bgp_peers(up)) == 1
    service.delete_port(up)
    assert service.list_bgp_peers() == []


def test_port_delete_refused_changes_no_bgp(service, mem_store, topo):
    """A port delete refused (a rule matches on it) leaves its BGP config alone."""
    up = topo["up"]["id"]
    _peer(service, topo)
    chain = service.create_chain({"name": "c"})
    service.create_rule(chain["id"], {"action": "drop", "in_ports": [up]})
    before = store_snapshot(mem_store)
    with pytest.raises(Conflict):
        service.delete_port(up)
    assert store_snapshot(mem_store) == before


# --------------------------------------------------------------------- status
def test_peer_status_from_state(service, mem_store, topo):
    p = _peer(service, topo)
    assert p["status"] == {"state": "down"}
    mem_store.put_state(paths.bgp_peer_state(p["id"]), {
        "host_id": "h1", "state": "established", "since": 1700000000.5,
        "prefixes_received": 3, "prefixes_advertised": 1, "extra": "ignored"})
    want = {"state": "established", "host_id": "h1", "since": 1700000000.5,
            "prefixes_received": 3, "prefixes_advertised": 1}
    assert service.get_bgp_peer(p["id"])["status"] == want
    assert service.list_bgp_peers()[0]["status"] == want
    assert service.list_port_bgp_peers(topo["up"]["id"])[0]["status"] == want
    # a record of the wrong shape cannot break the answer
    mem_store.put_state(paths.bgp_peer_state(p["id"]), {
        "state": 7, "host_id": 5, "since": "now", "prefixes_received": True,
        "prefixes_advertised": 1.5})
    assert service.get_bgp_peer(p["id"])["status"] == {
        "state": "unknown", "host_id": None, "since": None, "prefixes_received": None,
        "prefixes_advertised": None}
    mem_store.put_state(paths.bgp_peer_state(p["id"]), {"state": "idle"})
    assert service.get_bgp_peer(p["id"])["status"]["state"] == "idle"
    # the session's state goes with the agent
    mem_store.delete_state(paths.bgp_peer_state(p["id"]))
    assert service.get_bgp_peer(p["id"])["status"] == {"state": "down"}


# ------------------------------------------------------------- learned routes
def test_learned_routes(service, mem_store, topo):
    r1, up, p2p = topo["r1"]["id"], topo["up"]["id"], topo["p2p"]["id"]
    assert service.list_learned_routes(r1) == []
    for dst, gw, port, w in (("0.0.0.0/0", "203.0.113.1", up, 100),
                             ("0.0.0.0/0", "198.51.100.1", p2p, 100),
                             ("10.20.0.0/16", "203.0.113.1", up, 50),
                             ("10.20.30.0/24", "203.0.113.1", up, 100),
                             ("8.0.0.0/8", "203.0.113.1", up, 100)):
        mem_store.put_state(paths.learned_route_entry(r1, dst, gw, port, w), {})
    for foreign in ("junk", "a,b,c", "10.0.0.0_8,1.2.3.4,port,x", "10.0.0.0_33,1.2.3.4,"
                    + up + ",1", "10.0.0.0_8,not-an-ip," + up + ",1",
                    "10.0.0.0_8,1.2.3.4,not-a-port,1", "nine_8,1.2.3.4," + up + ",1"):
        mem_store.put_state(f"{paths.learned_routes(r1)}/{foreign}", {})
    # another router's table is not this one's
    mem_store.put_state(paths.learned_route_entry(topo["r2"]["id"], "1.0.0.0/8",
                                                  "192.0.2.1", topo["up2"]["id"], 1), {})
    got = service.list_learned_routes(r1)
    assert got == [
        {"dst_cidr": "10.20.30.0/24", "next_hop_gateway": "203.0.113.1", "next_hop_port": up,
         "weight": 100, "learned": True},
        {"dst_cidr": "10.20.0.0/16", "next_hop_gateway": "203.0.113.1", "next_hop_port": up,
         "weight": 50, "learned": True},
        {"dst_cidr": "8.0.0.0/8", "next_hop_gateway": "203.0.113.1", "next_hop_port": up,
         "weight": 100, "learned": True},
        {"dst_cidr": "0.0.0.0/0", "next_hop_gateway": "198.51.100.1", "next_hop_port": p2p,
         "weight": 100, "learned": True},
        {"dst_cidr": "0.0.0.0/0", "next_hop_gateway": "203.0.113.1", "next_hop_port": up,
         "weight": 100, "learned": True},
    ]
    assert len(service.list_learned_routes(topo["r2"]["id"])) == 1
    for bad in (_id(), "not-a-uuid", topo["up"]["id"]):
        with pytest.raises(NotFound):
            service.list_learned_routes(bad)


# ------------------------------------------------------------------ missing ids
def test_missing_ids(service, topo):
    for fn in (service.get_bgp_peer, service.delete_bgp_peer, service.get_bgp_network,
               service.delete_bgp_network, service.list_learned_routes):
        for bad in (_id(), "not-a-uuid", topo["up"]["id"]):
            with pytest.raises(NotFound):
                fn(bad)
    with pytest.raises(NotFound):
        service.update_bgp_peer(_id(), {"name": "x"})


def test_unavailable_propagates(service, flaky_store, topo):
    p = _peer(service, topo)
    flaky_store.down = True
    for call in (service.list_bgp_peers, service.list_bgp_networks,
                 lambda: service.get_bgp_peer(p["id"]),
                 lambda: _peer(service, topo, peer_address="203.0.113.3"),
                 lambda: service.list_learned_routes(topo["r1"]["id"]),
                 lambda: service.delete_bgp_peer(p["id"])):
        with pytest.raises(Unavailable):
            call()


# ------------------------------------------------------------------------ REST
@pytest.fixture
def rtopo(api):
    r1 = api.ok("POST", "/v1/routers", {"name": "r1"})
    up = api.ok("POST", f"/v1/routers/{r1['id']}/ports",
                {"ip_address": "203.0.113.2", "prefix_len": 24, "name": "uplink"})
    lan = api.ok("POST", f"/v1/routers/{r1['id']}/ports",
                 {"ip_address": "10.0.1.1", "prefix_len": 24, "type": "interior"})
    br = api.ok("POST", "/v1/bridges", {"name": "br"})
    bp = api.ok("POST", f"/v1/bridges/{br['id']}/ports", {})
    peer = api.ok("POST", f"/v1/ports/{up['id']}/bgp_peers", dict(PEER, name="border"))
    net = api.ok("POST", f"/v1/ports/{up['id']}/bgp_networks", {"prefix": "198.51.100.0/24"})
    return dict(r1=r1, up=up, lan=lan, br=br, bp=bp, peer=peer, net=net)


def test_rest_routes_are_documented(api):
    doc = api.ok("GET", "/v1/openapi.json")
    bgp = [(PREFIX + path, methods) for _, path, methods in ROUTES
           if "bgp" in path or "learned" in path]
    assert len(bgp) == 7
    for templ, methods in bgp:
        for method in methods:
            assert doc["paths"][templ][method.lower()]["responses"], (templ, method)
    schemas = doc["components"]["schemas"]
    assert set(schemas["BgpPeer"]["required"]) == {
        "id", "port_id", "name", "local_as", "peer_address", "peer_as", "keepalive",
        "hold_time", "connect_retry", "status", "version"}
    assert schemas["BgpPeerCreate"]["properties"]["keepalive"]["default"] == 10
    assert schemas["BgpPeerCreate"]["properties"]["hold_time"]["default"] == 30
    assert schemas["BgpPeerCreate"]["properties"]["connect_retry"]["default"] == 5
    idx = api.ok("GET", "/v1")
    assert idx["resources"]["bgp_peers"] == "/v1/bgp_peers"
    assert idx["resources"]["bgp_networks"] == "/v1/bgp_networks"


def test_rest_crud(api, mem_store, rtopo):
    up, peer, net = rtopo["up"]["id"], rtopo["peer"], rtopo["net"]
    assert peer["status"] == {"state": "down"} and peer["keepalive"] == 10
    assert api.ok("GET", f"/v1/bgp_peers/{peer['id']}") == peer
    assert api.ok("GET", "/v1/bgp_peers") == [peer]
    assert api.ok("GET", f"/v1/ports/{up}/bgp_peers") == [peer]
    assert api.ok("GET", f"/v1/ports/{rtopo['bp']['id']}/bgp_peers") == []
    assert api.ok("GET", f"/v1/bgp_networks/{net['id']}") == net
    assert api.ok("GET", "/v1/bgp_networks") == [net]
    assert api.ok("GET", f"/v1/ports/{up}/bgp_networks") == [net]
    mem_store.put_state(paths.bgp_peer_state(peer["id"]), {
        "host_id": "h", "state": "established", "since": 1.0, "prefixes_received": 2,
        "prefixes_advertised": 1})
    got = api.ok("GET", f"/v1/bgp_peers/{peer['id']}")
    assert got["status"]["state"] == "established"
    new = api.ok("PUT", f"/v1/bgp_peers/{peer['id']}", dict(got, hold_time=90, keepalive=30))
    assert (new["hold_time"], new["keepalive"], new["version"]) == (90, 30, 1)
    _err(api.put(f"/v1/bgp_peers/{peer['id']}", {"name": "x", "version": 0}), 409, "version")
    _err(api.put(f"/v1/bgp_peers/{peer['id']}", {"peer_address": "203.0.113.9"}), 400,
         "peer_address")
    api.ok("DELETE", f"/v1/bgp_networks/{net['id']}")
    _err(api.get(f"/v1/bgp_networks/{net['id']}"), 404)
    api.ok("DELETE", f"/v1/bgp_peers/{peer['id']}")
    _err(api.get(f"/v1/bgp_peers/{peer['id']}"), 404)
    assert api.ok("GET", "/v1/bgp_peers") == []


def test_rest_port_delete_cascades(api, rtopo):
    api.ok("DELETE", f"/v1/ports/{rtopo['up']['id']}")
    assert api.ok("GET", "/v1/bgp_peers") == [] and api.ok("GET", "/v1/bgp_networks") == []


def test_rest_learned_routes(api, mem_store, rtopo):
    r1, up = rtopo["r1"]["id"], rtopo["up"]["id"]
    assert api.ok("GET", f"/v1/routers/{r1}/learned_routes") == []
    mem_store.put_state(paths.learned_route_entry(r1, "10.0.0.0/8", "203.0.113.1", up, 100), {})
    mem_store.put_state(f"{paths.learned_routes(r1)}/foreign", {})
    assert api.ok("GET", f"/v1/routers/{r1}/learned_routes") == [
        {"dst_cidr": "10.0.0.0/8", "next_hop_gateway": "203.0.113.1", "next_hop_port": up,
         "weight": 100, "learned": True}]


REST_BAD = [
    ("POST", "/v1/ports/{up}/bgp_peers", dict(PEER, local_as=0), "local_as"),
    ("POST", "/v1/ports/{up}/bgp_peers", dict(PEER, peer_address="10.0.0.1"),
     "peer_address"),
    ("POST", "/v1/ports/{up}/bgp_peers", dict(PEER, keepalive=20), "keepalive"),
    ("POST", "/v1/ports/{up}/bgp_peers", dict(PEER, peer_address="203.0.113.5",
                                              hold_time=2), "hold_time"),
    ("POST", "/v1/ports/{up}/bgp_peers", dict(PEER, color="red"), "color"),
    ("POST", "/v1/ports/{lan}/bgp_peers", dict(PEER, peer_address="10.0.1.2"), "port_id"),
    ("POST", "/v1/ports/{bp}/bgp_peers", PEER, "port_id"),
    ("POST", "/v1/ports/{up}/bgp_networks", {"prefix": "0.0.0.0/0"}, "prefix"),
    ("POST", "/v1/ports/{up}/bgp_networks", {"prefix": "10.1.2.3/8"}, "prefix"),
    ("POST", "/v1/ports/{bp}/bgp_networks", {"prefix": "10.0.0.0/8"}, "port_id"),
    ("PUT", "/v1/bgp_peers/{peer}", {"port_id": "{lan}"}, "port_id"),
    ("PUT", "/v1/bgp_peers/{peer}", {"connect_retry": 3601}, "connect_retry"),
    ("PUT", "/v1/bgp_peers/{peer}", {"peer_as": True}, "peer_as"),
    # echoes of what cannot change are fine
    ("PUT", "/v1/bgp_peers/{peer}", {"port_id": "{up}", "peer_address": "203.0.113.1",
                                     "status": {"state": "whatever"}}, None),
]


@pytest.mark.parametrize("method,path,body,field", REST_BAD)
def test_rest_bad_field_is_400_and_changes_nothing(api, mem_store, rtopo, method, path, body,
                                                   field):
    missing = _id()
    path, body = _fill(path, rtopo, missing), _fill(body, rtopo, missing)
    before = store_snapshot(mem_store)
    resp = api.call(method, path, body)
    if field is None:
        assert resp.status_int == 200, resp.text
        return
    _err(resp, 400, field)
    assert store_snapshot(mem_store) == before


def test_rest_conflicts(api, mem_store, rtopo):
    up = rtopo["up"]["id"]
    before = store_snapshot(mem_store)
    _err(api.post(f"/v1/ports/{up}/bgp_peers", PEER), 409, "peer_address")
    _err(api.post(f"/v1/ports/{up}/bgp_networks", {"prefix": "198.51.100.0/24"}), 409,
         "prefix")
    assert store_snapshot(mem_store) == before


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/ports/{x}/bgp_peers"), ("POST", "/v1/ports/{x}/bgp_peers"),
    ("GET", "/v1/ports/{x}/bgp_networks"), ("POST", "/v1/ports/{x}/bgp_networks"),
    ("GET", "/v1/bgp_peers/{x}"), ("PUT", "/v1/bgp_peers/{x}"),
    ("DELETE", "/v1/bgp_peers/{x}"), ("GET", "/v1/bgp_networks/{x}"),
    ("DELETE", "/v1/bgp_networks/{x}"), ("GET", "/v1/routers/{x}/learned_routes"),
])
@pytest.mark.parametrize("x", ["missing", "not-a-uuid", "%2e%2e"])
def test_rest_missing_or_malformed_id_is_404(api, mem_store, rtopo, method, path, x):
    x = _id() if x == "missing" else x
    before = store_snapshot(mem_store)
    path = path.replace("{x}", x)
    body = {"prefix": "10.0.0.0/8"} if method in ("PUT", "POST") else None
    resp = api.call(method, path, body) if body else api.call(method, path)
    _err(resp, 404)
    assert store_snapshot(mem_store) == before


def test_rest_404_before_400_and_415(api, rtopo):
    _err(api.post(f"/v1/ports/{_id()}/bgp_peers", raw=b"{", content_type="text/plain"), 404)
    _err(api.put(f"/v1/bgp_peers/{_id()}", raw=b"nope"), 404)
    _err(api.post(f"/v1/ports/{rtopo['up']['id']}/bgp_networks", raw=b"{"), 400)
    _err(api.post(f"/v1/ports/{rtopo['up']['id']}/bgp_networks", raw=b"{}",
                  content_type="text/plain"), 415)


def test_rest_method_not_allowed(api, rtopo):
    resp = api.call("PUT", f"/v1/bgp_networks/{rtopo['net']['id']}", {"prefix": "10.0.0.0/8"})
    _err(resp, 405)
    assert resp.headers["Allow"] == "DELETE, GET, HEAD"
    _err(api.call("POST", "/v1/bgp_peers", PEER), 405)
    _err(api.call("DELETE", f"/v1/routers/{rtopo['r1']['id']}/learned_routes"), 405)


def test_rest_store_unavailable_is_503(api, flaky_store, rtopo):
    flaky_store.down = True
    for method, path, body in (("GET", "/v1/bgp_peers", None),
                               ("GET", "/v1/bgp_networks", None),
                               ("POST", f"/v1/ports/{rtopo['up']['id']}/bgp_networks",
                                {"prefix": "10.0.0.0/8"}),
                               ("GET", f"/v1/routers/{rtopo['r1']['id']}/learned_routes",
                                None)):
        resp = api.call(method, path, body) if body else api.call(method, path)
        assert _err(resp, 503)["error"] == "Unavailable"
