"""Packet trace: StoreView over the memory store, request validation, the answer."""

from __future__ import annotations

import time
import uuid

import pytest

from midoflow.errors import Invalid
from midoflow.model import Bridge, Port, Route, Router
from midoflow.service.trace import parse_packet, result_to_dict
from midoflow.service.view import StoreView
from midoflow.sim.packet import ETH_ARP, ETH_IP
from midoflow.sim.result import Action, Generated, Result, Rewrite, Step
from midoflow.store import paths
from tests.unit.conftest import store_snapshot
from tests.unit.test_rest import _err

VM1, VM2, VM3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
KEYS = {"action", "reason", "out_ports", "steps", "match_fields", "tags", "rewrites",
        "generated", "cacheable", "wait_arp", "notes"}


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def l2(service, mem_store):
    """Bridge br with ports p1, p2, p3 (p3 down); VM2 learned on p2."""
    br = service.create_bridge({"name": "br"})
    p1 = service.create_port(br["id"], {"name": "p1"})
    p2 = service.create_port(br["id"], {"name": "p2"})
    p3 = service.create_port(br["id"], {"name": "p3", "admin_state_up": False})
    mem_store.put_state(paths.mac_entry(br["id"], VM2, p2["id"]), {})
    return dict(br=br, p1=p1, p2=p2, p3=p3)


def _pkt(l2, **kw):
    body = {"in_port": l2["p1"]["id"], "eth_src": VM1, "eth_dst": VM2}
    body.update(kw)
    return body


# ------------------------------------------------------------------ StoreView
def test_store_view_reads_models_and_tables(service, mem_store, l2):
    r = service.create_router({"name": "r"})
    rp = service.create_router_port(r["id"], {"ip_address": "10.0.0.1", "prefix_len": 24})
    route = service.create_route(r["id"], {"dst_cidr": "0.0.0.0/0", "next_hop_port": rp["id"],
                                           "next_hop_gateway": "10.0.0.254"})
    service.create_route(r["id"], {"dst_cidr": "192.0.2.0/24", "type": "blackhole"})
    now = time.time()
    mem_store.put_state(paths.arp_entry(r["id"], "10.0.0.254", VM3, now - 100), {})
    mem_store.put_state(paths.arp_entry(r["id"], "10.0.0.254", VM1, now), {})  # refreshed
    mem_store.put_state(paths.arp_table(r["id"]) + "/garbage", {})
    view = StoreView(mem_store)

    port = view.port(l2["p1"]["id"])
    assert isinstance(port, Port) and port.device_id == l2["br"]["id"]
    assert view.port(l2["p1"]["id"]) is port  # one object per id for the view's life
    assert view.port(_id()) is None
    bridge = view.bridge(l2["br"]["id"])
    assert isinstance(bridge, Bridge) and len(bridge.port_ids) == 3
    assert view.bridge(r["id"]) is None
    router = view.router(r["id"])
    assert isinstance(router, Router) and router.port_ids == (rp["id"],)
    assert view.port(rp["id"]).ip_address == "10.0.0.1"
    routes = view.routes(r["id"])
    assert all(isinstance(x, Route) for x in routes) and len(routes) == 2
    assert route["id"] in {x.id for x in routes}
    assert view.routes(r["id"]) is routes
    assert view.routes(_id()) == ()
    assert view.mac_port(l2["br"]["id"], VM2) == l2["p2"]["id"]
    assert view.mac_port(l2["br"]["id"], VM3) is None
    mac, learned = view.arp(r["id"], "10.0.0.254")
    assert mac == VM1 and learned == int(now)
    assert view.arp(r["id"], "10.0.0.9") is None
    assert view.arp(_id(), "10.0.0.254") is None


def test_store_view_prefers_the_active_port_for_a_moving_mac(service, mem_store, l2):
    br, p1, p2 = l2["br"]["id"], l2["p1"]["id"], l2["p2"]["id"]
    mem_store.put_state(paths.mac_entry(br, VM3, p1), {})
    mem_store.put_state(paths.mac_entry(br, VM3, p2), {})
    first = StoreView(mem_store).mac_port(br, VM3)
    other = p2 if first == p1 else p1
    mem_store.put_state(paths.port_active(other), {"host_id": _id()})
    assert StoreView(mem_store).mac_port(br, VM3) == other


# ---------------------------------------------------------------- L2 traces
def test_trace_forwards_to_the_learned_port(service, mem_store, l2):
    before = store_snapshot(mem_store)
    res = service.trace(_pkt(l2, ip_src="10.0.0.1", ip_dst="10.0.0.2", ip_proto=6,
                             tp_src=1234, tp_dst=80))
    assert set(res) == KEYS
    assert res["action"] == "forward" and res["reason"] == ""
    assert res["out_ports"] == [l2["p2"]["id"]]
    assert res["steps"][0] == {"device": l2["br"]["id"], "kind": "bridge",
                               "decision": f"learn {VM1} on port {l2['p1']['id']}"}
    assert "forward" in res["steps"][-1]["decision"]
    assert {"in_port", "eth_src", "eth_dst"} <= set(res["match_fields"])
    assert res["match_fields"] == sorted(res["match_fields"])
    assert f"mac:{l2['br']['id']}:{VM2}" in res["tags"]
    assert res["rewrites"] == [] and res["generated"] == []
    assert res["cacheable"] is True and res["wait_arp"] is None
    # a trace changes nothing, not even the MAC table it would learn into
    assert store_snapshot(mem_store) == before


def test_trace_says_where_a_ports_security_groups_act(service, mem_store, l2):
    """A port whose host enforces its groups in OVS conntrack (the host state
    says so): the trace still evaluates the rules (what a new connection
    gets) and notes where they act for real; not for a host that simulates."""
    sg = service.create_security_group({"name": "web"})
    service.add_security_group_rule(sg["id"], {
        "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80})
    service.update_port(l2["p2"]["id"], {"mac": VM2, "fixed_ips": ["10.0.0.2"],
                                         "security_group_ids": [sg["id"]],
                                         "port_security_enabled": True})
    mem_store.put_state(paths.port_active(l2["p2"]["id"]), {"host_id": "h2"})
    mem_store.put_state(paths.host_alive("h2"), {"host_id": "h2", "sg_conntrack": False})
    tcp = {"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_proto": 6, "tp_src": 1234}
    res = service.trace(_pkt(l2, **tcp, tp_dst=80))
    assert res["out_ports"] == [l2["p2"]["id"]] and res["notes"] == []  # h2 simulates them
    mem_store.put_state(paths.host_alive("h2"), {"host_id": "h2", "sg_conntrack": True})
    res = service.trace(_pkt(l2, **tcp, tp_dst=80))
    assert res["out_ports"] == [l2["p2"]["id"]]
    (note,) = res["notes"]
    assert l2["p2"]["id"] in note and "OVS conntrack on host h2" in note
    res = service.trace(_pkt(l2, **tcp, tp_dst=22))
    assert res["action"] == "drop" and len(res["notes"]) == 0  # dropped before p2
    assert service.trace(_pkt(l2, arp_op=1, arp_spa="10.0.0.1", arp_tpa="10.0.0.2"))[
        "notes"] == []  # ARP: the simulation is the whole story


def test_trace_floods_an_unknown_destination(service, l2):
    res = service.trace(_pkt(l2, eth_dst=VM3))
    # to every other port that is up: not back out of p1, not to p3 (down)
    assert res["action"] == "forward" and res["out_ports"] == [l2["p2"]["id"]]
    assert any("flood" in s["decision"] for s in res["steps"])
    res = service.trace(_pkt(l2, eth_dst="ff:ff:ff:ff:ff:ff", arp_op=1, arp_spa="10.0.0.1",
                             arp_tpa="10.0.0.2"))
    assert res["out_ports"] == [l2["p2"]["id"]]


def test_trace_drops(service, mem_store, l2):
    res = service.trace(_pkt(l2, in_port=l2["p3"]["id"]))
    assert res["action"] == "drop" and res["out_ports"] == [] and res["reason"]
    mem_store.put_state(paths.mac_entry(l2["br"]["id"], VM3, l2["p1"]["id"]), {})
    res = service.trace(_pkt(l2, eth_dst=VM3))  # behind the ingress port
    assert res["action"] == "drop"
    service.update_bridge(l2["br"]["id"], {"admin_state_up": False})
    res = service.trace(_pkt(l2))
    assert res["action"] == "drop"
    assert any("down" in s["decision"] for s in res["steps"]), res["steps"]


def test_trace_over_rest(api, mem_store, l2):
    resp = api.post("/v1/trace", _pkt(l2))
    assert resp.status_int == 200 and set(resp.json) == KEYS
    assert resp.json["out_ports"] == [l2["p2"]["id"]]
    before = store_snapshot(mem_store)
    _err(api.post("/v1/trace", _pkt(l2, in_port=_id())), 400, "in_port")
    _err(api.post("/v1/trace", _pkt(l2, eth_src="nope")), 400, "eth_src")
    _err(api.post("/v1/trace", raw=b'{"in_port": 1}', content_type="text/plain"), 415)
    assert store_snapshot(mem_store) == before


# -------------------------------------------------------- a routed trace
def _routed(service, mem_store, n2_mtu: int | None = None):
    """vm1 (net1) -> r1 -> vm2 (10.0.2.20, net2), vm2 in the replicated MAC
    and ARP tables: (vm1, vm2, ra, rb, r)."""
    n1, n2 = service.create_bridge({"name": "n1"}), service.create_bridge({"name": "n2"})
    if n2_mtu is not None:
        service.update_bridge(n2["id"], {"mtu": n2_mtu})
    vm1 = service.create_port(n1["id"], {})
    vm2 = service.create_port(n2["id"], {})
    l1 = service.create_port(n1["id"], {"type": "interior"})
    l2 = service.create_port(n2["id"], {"type": "interior"})
    r = service.create_router({"name": "r1"})
    ra = service.create_router_port(r["id"], {"ip_address": "10.0.1.1", "prefix_len": 24,
                                              "type": "interior"})
    rb = service.create_router_port(r["id"], {"ip_address": "10.0.2.1", "prefix_len": 24,
                                              "type": "interior"})
    service.link_port(ra["id"], l1["id"])
    service.link_port(rb["id"], l2["id"])
    mem_store.put_state(paths.mac_entry(n2["id"], VM2, vm2["id"]), {})
    mem_store.put_state(paths.arp_entry(r["id"], "10.0.2.20", VM2, time.time()), {})
    return vm1, vm2, ra, rb, r


def test_trace_through_a_router(service, mem_store):
    """vm1 (10.0.1.10, net1) -> r1 -> vm2 (10.0.2.20, net2), entries in the
    replicated MAC and ARP tables: the router rewrites the MACs and the TTL."""
    vm1, vm2, ra, rb, _ = _routed(service, mem_store)
    before = store_snapshot(mem_store)
    res = service.trace({"in_port": vm1["id"], "eth_src": VM1, "eth_dst": ra["mac"],
                         "ip_src": "10.0.1.10", "ip_dst": "10.0.2.20", "ip_proto": 17,
                         "tp_src": 5000, "tp_dst": 53, "ip_ttl": 9})
    assert res["action"] == "forward", res
    assert res["out_ports"] == [vm2["id"]]
    kinds = [s["kind"] for s in res["steps"]]
    assert "router" in kinds and kinds.index("router") < len(kinds) - 1
    assert {"field": "eth_dst", "value": VM2} in res["rewrites"]
    assert {"field": "eth_src", "value": rb["mac"]} in res["rewrites"]
    assert any(rw["field"] == "ttl" for rw in res["rewrites"])
    assert store_snapshot(mem_store) == before  # the ARP the router saw is not recorded


# ------------------------------------------------------------- validation
def test_packet_defaults(service, mem_store, l2):
    pkt = parse_packet(mem_store, _pkt(l2, eth_src=VM1.upper()))
    assert pkt.eth_src == VM1 and pkt.eth_type == ETH_IP and pkt.ip_dst is None
    pkt = parse_packet(mem_store, _pkt(l2, ip_src="10.0.0.1", ip_dst="255.255.255.255"))
    assert pkt.eth_type == ETH_IP and pkt.ip_ttl == 64 and pkt.ip_proto is None
    pkt = parse_packet(mem_store, _pkt(l2, ip_src="0.0.0.0", ip_dst="10.0.0.2", ip_proto=1,
                                       tp_src=8, tp_dst=0, ip_ttl=1))
    assert (pkt.ip_proto, pkt.tp_src, pkt.tp_dst, pkt.ip_ttl) == (1, 8, 0, 1)
    req = parse_packet(mem_store, _pkt(l2, eth_dst="ff:ff:ff:ff:ff:ff", arp_op=1,
                                       arp_spa="10.0.0.1", arp_tpa="10.0.0.2"))
    assert req.eth_type == ETH_ARP and req.is_arp
    assert (req.arp_sha, req.arp_tha) == (VM1, "00:00:00:00:00:00")
    rep = parse_packet(mem_store, _pkt(l2, arp_op=2, arp_spa="10.0.0.1", arp_tpa="10.0.0.2",
                                       arp_sha=VM3))
    assert (rep.arp_sha, rep.arp_tha) == (VM3, VM2)
    pkt = parse_packet(mem_store, _pkt(l2, eth_type=0x86DD))
    assert pkt.eth_type == 0x86DD and not pkt.is_ip


@pytest.mark.parametrize("change,field", [
    ({"in_port": None}, "in_port"),
    ({"in_port": "P1"}, "in_port"),
    ({"in_port": "MISSING"}, "in_port"),
    ({"eth_src": None}, "eth_src"),
    ({"eth_src": "01:00:5e:00:00:01"}, "eth_src"),
    ({"eth_src": "02:00:00:00:00"}, "eth_src"),
    ({"eth_dst": "02:00:00:00:00:0x"}, "eth_dst"),
    ({"eth_dst": 5}, "eth_dst"),
    ({"eth_type": "0x0800"}, "eth_type"),
    ({"eth_type": 65536}, "eth_type"),
    ({"eth_type": None}, "eth_type"),
    ({"ip_dst": "10.0.0.2"}, "ip_src"),
    ({"ip_src": "10.0.0.1"}, "ip_dst"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.256"}, "ip_dst"),
    ({"ip_src": "10.1", "ip_dst": "10.0.0.2"}, "ip_src"),
    ({"ip_src": None, "ip_dst": "10.0.0.2"}, "ip_src"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_ttl": 0}, "ip_ttl"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_ttl": 256}, "ip_ttl"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_proto": 256}, "ip_proto"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_proto": "tcp"}, "ip_proto"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "tp_dst": 80}, "tp_dst"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_proto": 47, "tp_src": 1}, "tp_src"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_proto": 6, "tp_src": 65536}, "tp_src"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_proto": 1, "tp_src": 300}, "tp_src"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "eth_type": ETH_ARP}, "eth_type"),
    ({"arp_op": 1, "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2", "eth_type": ETH_IP},
     "eth_type"),
    ({"arp_op": 1, "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2", "ip_dst": "10.0.0.2"},
     "arp_op"),
    ({"arp_op": 3, "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2"}, "arp_op"),
    ({"arp_op": True, "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2"}, "arp_op"),
    ({"arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2"}, "arp_op"),
    ({"arp_op": 1, "arp_tpa": "10.0.0.2"}, "arp_spa"),
    ({"arp_op": 1, "arp_spa": "10.0.0.1"}, "arp_tpa"),
    ({"arp_op": 1, "arp_spa": "10.0.0.1", "arp_tpa": "x"}, "arp_tpa"),
    ({"arp_op": 1, "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2", "arp_sha": "ff:ff:ff:ff:ff:ff"},
     "arp_sha"),
    ({"arp_op": 1, "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2", "arp_tha": "00-00"},
     "arp_tha"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_len": 19}, "ip_len"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_len": 65536}, "ip_len"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_len": "big"}, "ip_len"),
    ({"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_df": "yes"}, "ip_df"),
    ({"arp_op": 1, "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2", "ip_len": 100}, "arp_op"),
    ({"vlan": 5}, "vlan"),
])
def test_trace_invalid(service, mem_store, l2, change, field):
    refs = {"P1": l2["p1"]["id"].upper(), "MISSING": _id()}
    body = _pkt(l2)
    body.update({k: refs.get(val, val) if isinstance(val, str) else val
                 for k, val in change.items()})
    if change.get("in_port", "") is None:
        del body["in_port"]
    if "eth_src" in change and change["eth_src"] is None:
        del body["eth_src"]
    before = store_snapshot(mem_store)
    with pytest.raises(Invalid) as e:
        service.trace(body)
    assert e.value.field == field, e.value.message
    assert store_snapshot(mem_store) == before


def test_trace_body_must_be_an_object(service):
    for body in (None, [], "x", 3):
        with pytest.raises(Invalid):
            service.trace(body)


# --------------------------------------------------------- the answer itself
def test_result_to_dict_is_generic():
    res = Result(
        action=Action.DROP,
        out_ports=(),
        match_fields=frozenset({"ip_dst", "in_port", "eth_dst"}),
        tags=frozenset({"router:r", "arp:r:10.0.0.9"}),
        trace=(Step("r", "router", "no ARP entry for 10.0.0.9"),),
        reason="waiting for ARP",
        rewrites=(Rewrite("eth_dst", VM2), Rewrite("ttl", 1)),
        generated=(Generated("arp_request", "rp", (("ip_dst", "10.0.0.9"), ("n", 3),
                                                   ("raw", b"\x01\x02"), ("t", (1, 2)))),),
        wait_arp=("r", "10.0.0.9"),
        cacheable=False,
    )
    assert result_to_dict(res) == {
        "action": "drop",
        "reason": "waiting for ARP",
        "out_ports": [],
        "steps": [{"device": "r", "kind": "router", "decision": "no ARP entry for 10.0.0.9"}],
        "match_fields": ["eth_dst", "in_port", "ip_dst"],
        "tags": ["arp:r:10.0.0.9", "router:r"],
        "rewrites": [{"field": "eth_dst", "value": VM2}, {"field": "ttl", "value": 1}],
        "generated": [{"kind": "arp_request", "out_port": "rp",
                       "fields": {"ip_dst": "10.0.0.9", "n": 3, "raw": "0102", "t": [1, 2]}}],
        "cacheable": False,
        "wait_arp": ["r", "10.0.0.9"],
    }
    assert result_to_dict(Result(action=Action.FORWARD, out_ports=("p",)))["wait_arp"] is None


def test_trace_shows_the_routers_mtu_check(service, mem_store):
    """A packet bigger than the egress network's MTU (net2: 1400): with DF the
    router answers fragmentation needed with the next-hop MTU; without, it
    forwards it, to be fragmented by the agent."""
    vm1, vm2, ra, _, _ = _routed(service, mem_store, n2_mtu=1400)
    body = {"in_port": vm1["id"], "eth_src": VM1, "eth_dst": ra["mac"], "ip_src": "10.0.1.10",
            "ip_dst": "10.0.2.20", "ip_proto": 17, "tp_src": 5000, "tp_dst": 53}
    big_df = service.trace({**body, "ip_len": 1450, "ip_df": True})
    assert big_df["action"] == "drop", big_df
    (gen,) = big_df["generated"]
    assert gen["kind"] == "icmp_error"
    assert (gen["fields"]["icmp_type"], gen["fields"]["icmp_code"]) == (3, 4)
    assert any("MTU 1400" in s["decision"] for s in big_df["steps"]), big_df["steps"]
    big = service.trace({**body, "ip_len": 1450})
    assert big["action"] == "forward" and big["out_ports"] == [vm2["id"]]
    assert any("fragmented" in s["decision"] for s in big["steps"]), big["steps"]
    small = service.trace({**body, "ip_len": 1400, "ip_df": True})
    assert small["action"] == "forward" and not small["generated"]


def test_trace_through_a_load_balancer(service, mem_store):
    """A packet to a VIP of r1's load balancer: the trace shows the balancer's
    choice (the only member) and the destination rewritten to it."""
    vm1, vm2, ra, rb, r = _routed(service, mem_store)
    lb = service.create_load_balancer({"router_id": r["id"]})
    pool = service.create_pool({"load_balancer_id": lb["id"]})
    service.create_vip({"load_balancer_id": lb["id"], "address": "10.0.2.100",
                        "protocol_port": 80, "pool_id": pool["id"]})
    service.create_pool_member({"pool_id": pool["id"], "address": "10.0.2.20",
                                "protocol_port": 8080})
    res = service.trace({"in_port": vm1["id"], "eth_src": VM1, "eth_dst": ra["mac"],
                         "ip_src": "10.0.1.10", "ip_dst": "10.0.2.100", "ip_proto": 6,
                         "tp_src": 40000, "tp_dst": 80})
    assert res["action"] == "forward", res
    assert res["out_ports"] == [vm2["id"]]
    assert any(s["kind"] == "lb" for s in res["steps"]), res["steps"]
    assert {"field": "ip_dst", "value": "10.0.2.20"} in res["rewrites"]
    assert {"field": "tp_dst", "value": 8080} in res["rewrites"]
    # a port with no listener on the VIP address is dropped, and the trace says so
    res = service.trace({"in_port": vm1["id"], "eth_src": VM1, "eth_dst": ra["mac"],
                         "ip_src": "10.0.1.10", "ip_dst": "10.0.2.100", "ip_proto": 6,
                         "tp_src": 40000, "tp_dst": 81})
    assert res["action"] == "drop", res
