"""The metadata service's pure parts: link-local addresses, the signature,
the built-in tree, and which ports the agent serves (with the ARP answer)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from netaddr import IPAddress

from midoflow.agent.decision import Frames, Output
from midoflow.agent.metadata import METADATA_MAC, MetadataPorts
from midoflow.apps import frames
from midoflow.metadata import signature, tree
from midoflow.metadata.addresses import METADATA_IP, NETWORK, LinkLocalPool, PoolExhausted
from midoflow.model import NatTarget, Port, Router, Rule

# ---- addresses ----------------------------------------------------------------


def test_address_is_stable_and_derived_from_the_tunnel_key():
    pool = LinkLocalPool()
    a = pool.assign("p1", 5)
    assert a == "169.254.0.6"
    assert pool.assign("p1", 5) == a
    assert pool.port_of(a) == "p1" and pool.address_of("p1") == a
    pool.release("p1")
    assert pool.port_of(a) is None
    assert LinkLocalPool().assign("p1", 5) == a  # another agent, the same address


def test_colliding_keys_get_distinct_addresses_never_reserved_ones():
    pool = LinkLocalPool()
    size = NETWORK.size - 2
    reserved = int(IPAddress(METADATA_IP)) - int(NETWORK.network)
    keys = [0, size, 2 * size, reserved - 1, reserved - 1 + size, size - 1]
    addrs = [pool.assign(f"p{i}", k) for i, k in enumerate(keys)]
    assert len(set(addrs)) == len(addrs)
    for a in addrs:
        assert IPAddress(a) in NETWORK
        assert a not in (METADATA_IP, str(NETWORK.network), str(NETWORK.broadcast))


def test_port_of_ignores_foreign_and_bad_text():
    pool = LinkLocalPool()
    pool.assign("p", 1)
    for text in ("", "garbage", "10.0.0.2", "169.254.0.2/16", "::1", "169.254.999.1"):
        assert pool.port_of(text) is None


def test_pool_exhausted_says_so():
    pool = LinkLocalPool()
    pool._by_offset = dict.fromkeys(range(NETWORK.size), "x")  # every offset taken
    with pytest.raises(PoolExhausted, match="every address"):
        pool.assign("new", 3)


# ---- signature -----------------------------------------------------------------


def test_signature_is_hmac_sha256_hex():
    # RFC 4231 test case 2
    assert signature.sign("Jefe", "what do ya want for nothing?") == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    sig = signature.sign("s3cret", "inst-1")
    assert signature.valid("s3cret", "inst-1", sig)
    assert not signature.valid("other", "inst-1", sig)


# ---- tree --------------------------------------------------------------------------
INST = tree.Instance(port_id="port-1", instance_id="inst-1", tenant_id="t1",
                     hostname="host-10-0-0-5", local_ipv4="10.0.0.5",
                     mac="02:00:00:00:00:05", network_id="br-1", mtu=1450)


def _get(path, inst=INST):
    a = tree.answer(inst, path)
    return a.status, a.body.decode()


def test_openstack_meta_data():
    for v in ("latest", "2018-08-27", "2012-08-10"):
        status, body = _get(f"/openstack/{v}/meta_data.json")
        doc = json.loads(body)
        assert status == 200
        assert doc["uuid"] == "inst-1" and doc["hostname"] == "host-10-0-0-5"
        assert doc["project_id"] == "t1" and doc["availability_zone"] == "nova"
        assert doc["launch_index"] == 0 and doc["public_keys"] == {}
    net = json.loads(_get("openstack/latest/network_data.json")[1])
    assert net["links"][0]["ethernet_mac_address"] == "02:00:00:00:00:05"
    assert net["links"][0]["mtu"] == 1450


def test_listings_as_nova():
    assert _get("/")[1].splitlines()[-2:] == ["latest", "openstack"]
    assert "latest" in _get("/openstack")[1].splitlines()
    assert _get("/openstack/latest/")[1].splitlines()[:2] == ["meta_data.json",
                                                              "network_data.json"]
    assert _get("/latest/") == (200, "meta-data/")
    listing = _get("/latest/meta-data/")[1].splitlines()
    assert "local-ipv4" in listing and "placement/" in listing
    assert "public-ipv4" not in listing  # no floating IP


def test_ec2_values():
    assert _get("/latest/meta-data/instance-id") == (200, "inst-1")
    assert _get("/2009-04-04/meta-data/local-ipv4") == (200, "10.0.0.5")
    assert _get("/latest/meta-data/placement/availability-zone") == (200, "nova")
    assert _get("/latest/meta-data/public-ipv4")[0] == 404
    pub = tree.Instance(**{**INST.__dict__, "public_ipv4": "203.0.113.9"})
    assert _get("/latest/meta-data/public-ipv4", pub) == (200, "203.0.113.9")


@pytest.mark.parametrize("path", ["/nope", "/openstack/1999-01-01/meta_data.json",
                                  "/openstack/latest/x.json", "/latest/user-data",
                                  "/latest/meta-data/nope", "/openstack/latest/a/b",
                                  "/latest/meta-data/placement/x"])
def test_unknown_paths_are_404(path):
    status, body = _get(path)
    assert status == 404 and "no metadata at" in body


# ---- the agent's part -------------------------------------------------------------


class _Frames(Frames):
    def build(self, gen, original):
        return frames.build(gen, original)


def _cache(**ports):
    return SimpleNamespace(ports=dict(ports), bridges={}, routers={}, chains={}, rules={},
                           default_mtu=1450)


def _vm(pid, key, ip="10.0.0.5", mac="02:00:00:00:00:05", **kw):
    return Port(id=pid, device_id="br-1", tunnel_key=key, fixed_ips=(ip,) if ip else (),
                mac=mac, **kw)


def test_served_ports_and_their_instances():
    cache = _cache(a=_vm("a", 7, instance_id="inst-a", tenant_id="ta"),
                   b=_vm("b", 8, ip=None), c=_vm("c", 9, mac=None),
                   d=_vm("d", 10), r=Port(id="r", device_id="r1", tunnel_key=11,
                                          device_type="router", mac="02:00:00:00:00:01",
                                          fixed_ips=("10.0.0.1",)))
    mp = MetadataPorts(cache)
    wanted = mp.wanted({"a": 3, "b": 4, "c": 5, "d": 6, "r": 7, "absent": 8})
    assert set(wanted) == {"a", "d"}  # b: no address, c: no MAC, r: a router's
    st = wanted["a"]
    assert (st.ofport, st.vm_ip, st.vm_mac) == (3, "10.0.0.5", "02:00:00:00:00:05")
    inst = mp.instance(st.address)
    assert (inst.instance_id, inst.tenant_id, inst.local_ipv4) == ("inst-a", "ta", "10.0.0.5")
    d = mp.instance(wanted["d"].address)
    assert d.instance_id == "d" and d.hostname == "host-10-0-0-5"  # same IP, its own port
    assert mp.instance("169.254.3.3") is None and mp.instance("bogus") is None
    # unbound: the address goes
    mp.wanted({"d": 6})
    assert mp.instance(st.address) is None


def test_public_ipv4_from_a_dnat_rule_of_a_router_on_the_bridge():
    cache = _cache(a=_vm("a", 7), bp=Port(id="bp", device_id="br-1", tunnel_key=1,
                                          type="interior", peer_id="rp"),
                   rp=Port(id="rp", device_id="r1", tunnel_key=2, device_type="router",
                           type="interior", peer_id="bp"))
    cache.routers["r1"] = Router(id="r1", inbound_filter_id="c1")
    cache.chains["c1"] = SimpleNamespace(rule_ids=("j",))
    cache.chains["c2"] = SimpleNamespace(rule_ids=("n",))
    cache.rules["j"] = Rule(id="j", chain_id="c1", action="jump", jump_chain_id="c2")
    cache.rules["n"] = Rule(id="n", chain_id="c2", action="dnat", nw_dst="203.0.113.7/32",
                            nat_targets=(NatTarget("10.0.0.5", "10.0.0.5"),))
    mp = MetadataPorts(cache)
    assert mp.instance_of(cache.ports["a"]).public_ipv4 == "203.0.113.7"
    assert mp.floating_ip("br-1", "10.0.0.6") is None


def _arp_request(tpa, op=1):
    return {"eth_type": 0x0806, "eth_src": "02:00:00:00:00:05", "eth_dst": "ff:ff:ff:ff:ff:ff",
            "arp_op": op, "arp_sha": "02:00:00:00:00:05", "arp_spa": "10.0.0.5",
            "arp_tha": "00:00:00:00:00:00", "arp_tpa": tpa}


def test_arp_for_the_metadata_address_is_answered():
    mp = MetadataPorts(_cache(a=_vm("a", 7)), _Frames())
    d = mp.answer_arp("a", 3, _arp_request(METADATA_IP))
    assert d is not None and not d.install and not d.actions
    (emit,) = d.emits
    assert emit.actions == [Output(3)]
    f = frames.parse(emit.frame)
    assert f["arp_op"] == 2 and f["arp_spa"] == METADATA_IP and f["arp_sha"] == METADATA_MAC
    assert f["arp_tpa"] == "10.0.0.5" and f["eth_dst"] == "02:00:00:00:00:05"
    assert mp.stats["arp_answered"] == 1


def test_other_arp_is_left_to_the_simulation():
    mp = MetadataPorts(_cache(a=_vm("a", 7), b=_vm("b", 8, mac=None)), _Frames())
    assert mp.answer_arp("a", 3, _arp_request("10.0.0.1")) is None
    assert mp.answer_arp("a", 3, _arp_request(METADATA_IP, op=2)) is None
    assert mp.answer_arp("b", 4, _arp_request(METADATA_IP)) is None  # not served
    assert mp.answer_arp("zz", 4, _arp_request(METADATA_IP)) is None


def test_the_core_answers_a_served_vms_arp_before_simulating(l2_world):
    from midoflow.store.base import Update
    from tests.unit.worlds import M1

    api, agents, _ = l2_world
    core = agents["h1"]
    core.metadata = MetadataPorts(core.cache, _Frames())
    req = {**_arp_request(METADATA_IP), "eth_src": M1, "arp_sha": M1}
    flooded = core.handle_miss(5, req)  # p1 has no MAC nor address: simulated (flooded)
    assert flooded.actions and not flooded.emits
    port, v = api.get("ports", "p1")
    api.commit([Update("ports", {**port, "mac": M1, "fixed_ips": ["10.0.0.5"]}, v)])
    d = core.handle_miss(5, req)
    assert d.actions == [] and d.emits[0].actions == [Output(5)]
    assert frames.parse(d.emits[0].frame)["arp_sha"] == METADATA_MAC
    assert core.handle_miss(5, {**req, "arp_tpa": "10.0.0.9"}).emits == []
