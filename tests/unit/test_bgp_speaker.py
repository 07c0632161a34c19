"""The gateway's BGP manager (midoflow.bgp.speaker) driven by real os-ken BGP
events (os-ken's own path objects), with a fake speaker and link."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from os_ken.lib.packet import bgp
from os_ken.services.protocols.bgp.bgpspeaker import EventPrefix
from os_ken.services.protocols.bgp.info_base.ipv4 import Ipv4Path

from midoflow.bgp import speaker as sp
from midoflow.model import BgpNetwork, BgpPeer, Port, Route
from midoflow.store import paths
from midoflow.store.memory import MemoryStore

R = "router-1"


def uplink(pid: str, ip: str, mac: str) -> Port:
    return Port(id=pid, device_id=R, tunnel_key=7, device_type="router", type="exterior",
                mac=mac, ip_address=ip, prefix_len=30)


class FakeSpeaker:
    def __init__(self, local_as, router_id, mgr):
        self.local_as, self.router_id, self.mgr = local_as, router_id, mgr
        self.neighbours: dict[str, sp.PeerConf] = {}
        self.prefixes: set[str] = set()
        self.filters: dict[str, tuple] = {}
        self.fsm: dict[str, str] = {}
        self.keepalives: dict[str, int] = {}
        self.retry = None

    def add_neighbour(self, pc):
        self.neighbours[pc.peer_address] = pc

    def del_neighbour(self, addr):
        del self.neighbours[addr]

    def prefix_add(self, p):
        self.prefixes.add(p)

    def prefix_del(self, p):
        self.prefixes.discard(p)

    def set_filters(self, addr, deny_in, permit_out):
        self.filters[addr] = (tuple(deny_in), tuple(permit_out))

    def set_retry(self, s):
        self.retry = s

    def states(self, addrs):
        return {a: self.fsm.get(a, "active") for a in addrs}

    def set_keepalive(self, addr, s):
        self.keepalives[addr] = s


class FakeSwitch:
    """The OVS bridge as the manager sees it: the links' ports and their ofports."""

    def __init__(self):
        self.ofports: dict[str, int] = {}

    def add_port(self, name, external_ids):
        self.ofports[name] = 40 + len(external_ids["midoflow-bgp-link"])

    def del_port(self, name):
        self.ofports.pop(name, None)

    def ofport(self, name):
        return self.ofports.get(name, -1)


@pytest.fixture
def gw(monkeypatch):
    links = []

    def create(spec, switch, ns, ovs):  # no namespaces or veths in unit tests
        links.append(spec)
        switch.add_port(spec.ovs_name, {"midoflow-bgp-link": spec.port_id})

    def remove(spec, switch, ns):
        switch.del_port(spec.ovs_name)
        if spec in links:
            links.remove(spec)

    monkeypatch.setattr(sp.bgplink, "create", create)
    monkeypatch.setattr(sp.bgplink, "remove", remove)
    cache = SimpleNamespace(ports={"up1": uplink("up1", "192.0.2.1", "02:00:00:00:01:01"),
                                   "up2": uplink("up2", "192.0.2.5", "02:00:00:00:01:02")},
                            bgp_peers={}, bgp_networks={})
    store = MemoryStore()
    flows = {}
    bound = {"up1": 5}
    mgr = sp.BgpManager(cache, store, "host-gw1", FakeSwitch(), "1234",
                        bindings=lambda: dict(bound), on_links=lambda d: flows.update(
                            {"now": dict(d)}))
    mgr.make_speaker = FakeSpeaker
    mgr.settle = 0  # no waiting for more paths: the tests feed them synchronously
    cache.bgp_peers["p1"] = BgpPeer("p1", "up1", 64512, "192.0.2.2", 65000, keepalive=1,
                                    hold_time=3, connect_retry=2)
    cache.bgp_networks["n1"] = BgpNetwork("n1", "up1", "203.0.113.0/24")
    return SimpleNamespace(mgr=mgr, cache=cache, store=store, flows=flows, bound=bound,
                           links=links)


def event(prefix: str, nexthop: str, as_path=(65000,), withdraw=False, med=None):
    addr, plen = prefix.split("/")
    attrs = {bgp.BGP_ATTR_TYPE_ORIGIN: bgp.BGPPathAttributeOrigin(bgp.BGP_ATTR_ORIGIN_IGP),
             bgp.BGP_ATTR_TYPE_AS_PATH: bgp.BGPPathAttributeAsPath([list(as_path)])}
    if med is not None:
        attrs[bgp.BGP_ATTR_TYPE_MULTI_EXIT_DISC] = bgp.BGPPathAttributeMultiExitDisc(med)
    path = Ipv4Path(SimpleNamespace(remote_as=as_path[0] if as_path else 0, version_num=4),
                    bgp.IPAddrPrefix(int(plen), addr), 1, pattrs=attrs, nexthop=nexthop,
                    is_withdraw=withdraw)
    return EventPrefix(path, withdraw)


def learned(store) -> set[str]:
    return set(store.list_state(paths.learned_routes(R)))


def test_speaker_link_neighbour_and_advertisement(gw):
    gw.mgr.reconcile()
    spk = gw.mgr.speaker
    assert (spk.local_as, spk.router_id) == (64512, "192.0.2.1")
    assert [s.ip for s in gw.links] == ["192.0.2.1"]
    assert gw.flows["now"] == {"up1": (43, 5, "192.0.2.1")}
    pc = spk.neighbours["192.0.2.2"]
    assert (pc.peer_as, pc.hold_time, pc.local_as) == (65000, 3, 64512)
    assert spk.prefixes == {"203.0.113.0/24"}
    assert spk.filters["192.0.2.2"] == (("203.0.113.0/24",), ())
    assert spk.retry == 2
    # a second range through the API is advertised at the next reconcile
    gw.cache.bgp_networks["n2"] = BgpNetwork("n2", "up1", "198.18.0.0/24")
    gw.mgr.reconcile()
    assert spk.prefixes == {"203.0.113.0/24", "198.18.0.0/24"}
    del gw.cache.bgp_networks["n1"]
    gw.mgr.reconcile()
    assert spk.prefixes == {"198.18.0.0/24"}


def test_learned_routes_are_written_ephemeral_and_removed(gw):
    gw.mgr.reconcile()
    gw.mgr._on_path(event("0.0.0.0/0", "192.0.2.2"), "192.0.2.2", 65000)
    gw.mgr._on_path(event("10.20.0.0/16", "192.0.2.2", as_path=(65000, 65100)),
                    "192.0.2.2", 65000)
    gw.mgr.reconcile()
    names = learned(gw.store)
    assert names == {"0.0.0.0_0,192.0.2.2,up1,101", "10.20.0.0_16,192.0.2.2,up1,102"}
    assert all(paths.parse_learned_route(n) for n in names)
    gw.mgr._on_path(event("10.20.0.0/16", "192.0.2.2", withdraw=True), "192.0.2.2", 65000)
    gw.mgr.reconcile()
    assert learned(gw.store) == {"0.0.0.0_0,192.0.2.2,up1,101"}
    now = [1000.0]
    gw.mgr.clock = lambda: now[0]
    gw.mgr._on_down("192.0.2.2", 65000)
    gw.mgr.reconcile()
    assert learned(gw.store) == {"0.0.0.0_0,192.0.2.2,up1,101"}  # stale for a while
    now[0] += sp.STALE_TIME
    gw.mgr.reconcile()
    assert learned(gw.store) == set()


def test_own_range_learned_back_is_never_installed(gw):
    gw.mgr.reconcile()
    gw.mgr._on_path(event("203.0.113.0/24", "192.0.2.2", as_path=(65000, 64512)),
                    "192.0.2.2", 65000)
    gw.mgr.reconcile()
    assert learned(gw.store) == set()


def test_malformed_event_does_not_raise(gw):
    gw.mgr.reconcile()
    gw.mgr._on_path(SimpleNamespace(prefix="x", is_withdraw=False, nexthop=None, path=None),
                    "192.0.2.2", 65000)
    gw.mgr._on_path(SimpleNamespace(prefix=None, is_withdraw=False), "192.0.2.2", 65000)
    gw.mgr.reconcile()
    assert learned(gw.store) == set()


def test_session_state_is_published_and_keepalive_set_once_up(gw):
    gw.mgr.reconcile()
    st = gw.store.get_state(paths.bgp_peer_state("p1"))
    assert st["state"] == "active" and st["host_id"] == "host-gw1"
    gw.mgr.speaker.fsm["192.0.2.2"] = "established"
    gw.mgr._on_path(event("0.0.0.0/0", "192.0.2.2"), "192.0.2.2", 65000)
    gw.mgr.reconcile()
    st = gw.store.get_state(paths.bgp_peer_state("p1"))
    assert st["state"] == "established" and st["prefixes_received"] == 1
    assert st["prefixes_advertised"] == 1
    assert gw.mgr.speaker.keepalives == {"192.0.2.2": 1}


def test_unbinding_the_uplink_closes_the_session_and_forgets_its_routes(gw):
    gw.mgr.reconcile()
    gw.mgr._on_path(event("0.0.0.0/0", "192.0.2.2"), "192.0.2.2", 65000)
    gw.mgr.reconcile()
    assert learned(gw.store)
    gw.bound.clear()
    gw.mgr.reconcile()
    assert gw.mgr.speaker.neighbours == {} and gw.links == []
    assert gw.flows["now"] == {}
    assert learned(gw.store) == set()
    assert gw.store.get_state(paths.bgp_peer_state("p1")) is None


def test_timer_change_re_adds_the_neighbour(gw):
    gw.mgr.reconcile()
    gw.cache.bgp_peers["p1"] = BgpPeer("p1", "up1", 64512, "192.0.2.2", 65000, keepalive=3,
                                       hold_time=9)
    gw.mgr.reconcile()
    assert gw.mgr.speaker.neighbours["192.0.2.2"].hold_time == 9


def test_two_uplinks_two_peers_ecmp(gw):
    gw.bound["up2"] = 6
    gw.cache.bgp_peers["p2"] = BgpPeer("p2", "up2", 64512, "192.0.2.6", 65000)
    gw.cache.bgp_networks["n3"] = BgpNetwork("n3", "up2", "198.18.1.0/24")
    gw.mgr.reconcile()
    spk = gw.mgr.speaker
    assert set(spk.neighbours) == {"192.0.2.2", "192.0.2.6"}
    # each peer hears only its own uplink's networks; both refuse every own range
    assert spk.filters["192.0.2.6"] == (("198.18.1.0/24", "203.0.113.0/24"), ("203.0.113.0/24",))
    assert spk.filters["192.0.2.2"] == (("198.18.1.0/24", "203.0.113.0/24"), ("198.18.1.0/24",))
    for peer in ("192.0.2.2", "192.0.2.6"):
        gw.mgr._on_path(event("0.0.0.0/0", peer), peer, 65000)
    gw.mgr.reconcile()
    assert learned(gw.store) == {"0.0.0.0_0,192.0.2.2,up1,101", "0.0.0.0_0,192.0.2.6,up2,101"}


def test_cache_merges_learned_routes_into_the_router(gw):
    """The agent's topology cache turns the entries into routes of the router."""
    from midoflow.agent.cache import TopologyCache
    from midoflow.service.topology import TopologyService

    store = gw.store
    svc = TopologyService(store)
    r = svc.create_router({"name": "provider"})
    tags = []
    cache = TopologyCache(store, tags.append)
    cache.start()
    store.put_state(paths.learned_route_entry(r["id"], "0.0.0.0/0", "192.0.2.2", "up1", 101),
                    {}, ephemeral=True)
    routes = cache.routes(r["id"])
    assert [(x.dst_cidr, x.next_hop_gateway, x.next_hop_port, x.weight) for x in routes] == \
        [("0.0.0.0/0", "192.0.2.2", "up1", 101)]
    assert isinstance(routes[0], Route)
    assert any(f"routes:{r['id']}" in t or any(r["id"] in s for s in t) for t in tags)
    store.delete_state(paths.learned_route_entry(r["id"], "0.0.0.0/0", "192.0.2.2", "up1", 101))
    assert cache.routes(r["id"]) == ()


def test_trace_view_includes_learned_routes():
    """`midoflow trace` routes with what the gateways learned, as the agents do."""
    from midoflow.service.topology import TopologyService
    from midoflow.service.view import StoreView

    store = MemoryStore()
    r = TopologyService(store).create_router({"name": "provider"})
    store.put_state(paths.learned_route_entry(r["id"], "0.0.0.0/0", "192.0.2.6", "up2", 101),
                    {}, ephemeral=True)
    view = StoreView(store)
    routes = view.routes(r["id"])
    assert [(x.dst_cidr, x.next_hop_gateway, x.weight) for x in routes] == \
        [("0.0.0.0/0", "192.0.2.6", 101)]
    assert view.routes(r["id"]) is routes  # stable: the simulation memoises by identity


def test_bgp_link_flows():
    """BGP and ARP for the uplink's address go to the link; all the link sends
    goes out of the uplink; ARP is also simulated (the router answers too)."""
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

    from midoflow.apps import pipeline

    dp = SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser)
    msgs = pipeline.bgp_link_flows(dp, 40, 5, "192.0.2.1")
    assert all(m.cookie == pipeline.BGP_COOKIE | 40 and m.table_id == 0 for m in msgs)
    matches = [dict(m.match.items()) for m in msgs]
    assert matches[0] == {"in_port": 40}
    assert msgs[0].instructions[0].actions[0].port == 5
    assert {"in_port": 5, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "192.0.2.1",
            "tcp_dst": 179} in matches
    assert {"in_port": 5, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "192.0.2.1",
            "tcp_src": 179} in matches
    arp = msgs[matches.index({"in_port": 5, "eth_type": 0x0806, "arp_tpa": "192.0.2.1"})]
    kinds = [type(i).__name__ for i in arp.instructions]
    assert kinds == ["OFPInstructionActions", "OFPInstructionGotoTable"]
    assert pipeline.BGP_COOKIE >> 56 != 0x4D  # never a simulated flow's cookie
    d = pipeline.delete_bgp_link_flows(dp, 40)
    assert d.cookie == pipeline.BGP_COOKIE | 40 and d.cookie_mask == (1 << 64) - 1


class CountingStore(MemoryStore):
    """Counts the store calls that write learned routes."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def put_states(self, items, ephemeral=True):
        self.calls.append(("put_states", len(items)))
        for path, data in items:
            MemoryStore.put_state(self, path, data, ephemeral)

    def delete_states(self, ps):
        self.calls.append(("delete_states", len(ps)))
        super().delete_states(ps)

    def put_state(self, path, data, ephemeral=True):
        if "learned_routes" in path:
            self.calls.append(("put_state", 1))
        super().put_state(path, data, ephemeral)


def announce(gw, prefixes, withdraw=False):
    for p in prefixes:
        gw.mgr._on_path(event(p, "192.0.2.2", withdraw=withdraw), "192.0.2.2", 65000)


def state(gw) -> dict:
    return gw.store.get_state(paths.bgp_peer_state("p1"))


def test_prefix_limit_refused_learned_when_room_frees_and_counted(gw):
    gw.mgr.max_prefixes = 3
    gw.mgr.reconcile()
    gw.mgr.speaker.fsm["192.0.2.2"] = "established"
    announce(gw, [f"10.{i}.0.0/16" for i in range(5)])
    gw.mgr.reconcile()
    assert len(learned(gw.store)) == 3
    st = state(gw)
    assert (st["prefixes_received"], st["prefixes_accepted"], st["prefixes_refused"],
            st["prefix_limit"]) == (5, 3, 2, 3)
    announce(gw, ["10.0.0.0/16", "10.1.0.0/16"], withdraw=True)
    gw.mgr.reconcile()
    assert {n.split(",")[0] for n in learned(gw.store)} == {
        "10.2.0.0_16", "10.3.0.0_16", "10.4.0.0_16"}
    assert (state(gw)["prefixes_accepted"], state(gw)["prefixes_refused"]) == (3, 0)


@pytest.fixture
def cgw(gw):
    gw.store = gw.mgr.store = CountingStore()
    return gw


def test_routes_are_written_in_batches_and_a_reset_rewrites_nothing(cgw):
    gw = cgw
    now = [1000.0]
    gw.mgr.clock = lambda: now[0]
    gw.mgr.reconcile()
    gw.mgr.speaker.fsm["192.0.2.2"] = "established"
    prefixes = [f"10.{i // 250}.{i % 250}.0/24" for i in range(600)]
    announce(gw, prefixes)
    gw.mgr.reconcile()
    assert len(learned(gw.store)) == 600
    assert gw.store.calls == [("put_states", 600)] and gw.mgr.route_writes == 600
    # a 1 s reset: down, the same table announced again
    gw.store.calls.clear()
    gw.mgr.speaker.fsm["192.0.2.2"] = "idle"
    gw.mgr._on_down("192.0.2.2", 65000)
    now[0] += 0.5
    gw.mgr.reconcile()
    st = state(gw)
    assert (st["state"], st["flaps"], st["since"], st["prefixes_stale"]) == \
        ("idle", 1, 1000.5, 600)
    now[0] += 0.5
    gw.mgr.speaker.fsm["192.0.2.2"] = "established"
    announce(gw, prefixes[:599])  # one prefix is gone after the reset
    gw.mgr.reconcile()
    assert gw.store.calls == [] and len(learned(gw.store)) == 600
    assert state(gw)["since"] == 1001.0
    now[0] += sp.STALE_TIME  # the stale timer: only what really changed goes
    gw.mgr.reconcile()
    assert gw.store.calls == [("delete_states", 1)] and len(learned(gw.store)) == 599


def test_the_old_path_writes_route_by_route(cgw):
    gw = cgw
    gw.mgr.batch = False
    gw.mgr.reconcile()
    announce(gw, ["10.0.0.0/16", "10.1.0.0/16"])
    gw.mgr.reconcile()
    assert gw.store.calls == [("put_state", 1), ("put_state", 1)]


def test_last_error_in_the_status_and_not_hidden_by_the_lost_connection(gw):
    now = [50.0]
    gw.mgr.clock = lambda: now[0]
    gw.mgr.reconcile()
    assert state(gw)["last_error"] is None
    gw.mgr._on_error("192.0.2.2", "notification received: Open Message Error: bad peer AS")
    gw.mgr._on_error("192.0.2.2", "connection lost: Peer closed connection", weak=True)
    gw.mgr.reconcile()
    st = state(gw)
    assert (st["last_error"], st["last_error_at"]) == (
        "notification received: Open Message Error: bad peer AS", 50.0)
    now[0] += sp.ERROR_SHADOW
    gw.mgr._on_error("192.0.2.2", "connection lost: Peer closed connection", weak=True)
    gw.mgr.reconcile()
    assert state(gw)["last_error"] == "connection lost: Peer closed connection"
    gw.mgr._on_error("198.51.100.9", "not a peer of ours")  # ignored


def test_notification_text():
    assert sp.notification_text(4, 0, None) == "hold timer expired"
    assert sp.notification_text(6, 2, None) == "cease (subcode 2)"
    assert sp.notification_text(2, 2, "Open Message Error: bad peer AS") == \
        "Open Message Error: bad peer AS"


def test_routes_wait_for_a_table_still_arriving(gw):
    gw.mgr.settle = 0.05
    gw.mgr.reconcile()
    announce(gw, ["10.0.0.0/16"])
    t0 = time.monotonic()
    gw.mgr.reconcile()  # the last path just now: a short wait, then written
    assert 0.04 <= time.monotonic() - t0 < sp.SETTLE_MAX + 0.1
    assert len(learned(gw.store)) == 1
    t0 = time.monotonic()
    gw.mgr.reconcile()  # nothing new: no wait
    assert time.monotonic() - t0 < 0.04
