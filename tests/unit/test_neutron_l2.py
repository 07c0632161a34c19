"""The Neutron L2 core over a memory store: networks, subnets and IPAM, ports,
security groups and rules; visibility between projects; one commit per request
(a failure writes nothing); the native topology kept in step."""

from __future__ import annotations

import uuid

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midoflow import model
from midoflow.neutron import allocations as alloc
from midoflow.neutron import errors as ne
from midoflow.neutron.context import Context
from midoflow.neutron.service import NeutronService
from midoflow.service import security as sec
from midoflow.store import paths
from midoflow.store.base import Create, Delete
from midoflow.store.memory import MemoryStore
from tests.unit.conftest import store_snapshot

P1 = Context(project_id="p1", user_id="u1", roles=("member",))
P2 = Context(project_id="p2", user_id="u2", roles=("member",))
ADMIN = Context.admin()


@pytest.fixture
def svc() -> NeutronService:
    return NeutronService(MemoryStore())


def native(svc, kind, oid):
    try:
        return svc.store.get(kind, oid)[0]
    except Exception:
        return None


def assert_consistent(svc) -> None:
    """The generated chains and address groups are exactly what the native
    groups and ports say, and every native port is a Neutron port's."""
    m = {k: {d["id"]: d for d, _ in svc.store.list(k)} for k in model.KINDS}
    have = {(k, oid): d for k in (model.CHAINS, model.RULES, model.IP_ADDR_GROUPS)
            for oid, d in m[k].items() if sec.is_generated(oid)}
    assert have == sec.expected(m)
    assert sec.port_filter_errors(m) == []
    nports = {p["id"] for p, _ in svc.store.list("neutron.ports")}
    assert set(m[model.PORTS]) <= nports
    for b in m[model.BRIDGES].values():
        assert set(b["port_ids"]) == {p["id"] for p in m[model.PORTS].values()
                                      if p["device_id"] == b["id"]}


def net_sub(svc, ctx=P1, cidr="10.0.0.0/24", **kw):
    n = svc.create(ctx, "networks", {"name": "n", **kw})
    s = svc.create(ctx, "subnets", {"network_id": n["id"], "cidr": cidr, "ip_version": 4})
    return n, s


# ------------------------------------------------------------------- networks
def test_network_defaults_and_its_bridge(svc):
    n = svc.create(P1, "networks", {"network": {"name": "net1"}})
    assert n["mtu"] == 1450 and "provider:network_type" not in n  # admin's to see
    assert svc.get(ADMIN, "networks", n["id"])["provider:network_type"] == "vxlan"
    assert n["status"] == "ACTIVE" and n["port_security_enabled"] is True
    assert n["shared"] is False and n["router:external"] is False
    assert n["subnets"] == [] and n["availability_zones"] == ["nova"]
    assert n["project_id"] == n["tenant_id"] == "p1" and n["tags"] == []
    assert n["created_at"].endswith("Z") and n["revision_number"] == 0
    n2 = svc.create(P1, "networks", {})
    seg = [svc.get(ADMIN, "networks", x["id"])["provider:segmentation_id"] for x in (n, n2)]
    assert seg[1] > seg[0]
    b = native(svc, model.BRIDGES, n["id"])
    assert (b["name"], b["tenant_id"], b["admin_state_up"]) == ("net1", "p1", True)
    u = svc.update(P1, "networks", n["id"], {"name": "x", "admin_state_up": False})
    assert u["revision_number"] == 1
    b = native(svc, model.BRIDGES, n["id"])
    assert (b["name"], b["admin_state_up"]) == ("x", False)


def test_gre_mtu():
    svc = NeutronService(MemoryStore(), tunnel_type="gre")
    n = svc.create(ADMIN, "networks", {"provider:network_type": "gre"})
    assert (n["mtu"], n["provider:network_type"]) == (1458, "gre")


@pytest.mark.parametrize("body", [{"router:external": True}, {"shared": True},
                                  {"provider:network_type": "vxlan"},
                                  {"project_id": "p2"}, {"tenant_id": "p2"}])
def test_admin_only_network_attributes(svc, body):
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.create(P1, "networks", body)
    assert svc.store.list(model.BRIDGES) == []
    svc.create(ADMIN, "networks", body)


@pytest.mark.parametrize("body,what", [
    ({"provider:network_type": "gre"}, "provider:network_type"),
    ({"provider:segmentation_id": 5}, "provider:segmentation_id"),
    ({"provider:physical_network": "physnet1"}, "provider:physical_network"),
    ({"mtu": 9000}, "mtu"), ({"admin_state_up": "maybe"}, "admin_state_up"),
    ({"bogus": 1}, "bogus"), ({"status": "DOWN"}, "status"),
])
def test_bad_network_bodies(svc, body, what):
    with pytest.raises(ne.BadRequest, match=what):
        svc.create(ADMIN, "networks", body)


def test_visibility_of_networks(svc):
    n1 = svc.create(P1, "networks", {"name": "private"})
    shared = svc.create(ADMIN, "networks", {"shared": True, "project_id": "p1"})
    ext = svc.create(ADMIN, "networks", {"router:external": True})
    seen = {n["id"] for n in svc.list(P2, "networks")}
    assert seen == {shared["id"], ext["id"]}
    with pytest.raises(ne.NetworkNotFound):
        svc.get(P2, "networks", n1["id"])
    with pytest.raises(ne.NetworkNotFound):
        svc.delete(P2, "networks", n1["id"])
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.update(P2, "networks", shared["id"], {"name": "mine"})
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.delete(P2, "networks", ext["id"])
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.update(P1, "networks", n1["id"], {"shared": True})
    assert {n["id"] for n in svc.list(ADMIN, "networks")} == {n1["id"], shared["id"], ext["id"]}


def test_network_delete_in_use_then_with_its_subnets(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    with pytest.raises(ne.NetworkInUse, match="ports still in use"):
        svc.delete(P1, "networks", n["id"])
    svc.delete(P1, "ports", p["id"])
    svc.delete(P1, "networks", n["id"])
    assert svc.store.list("neutron.subnets") == [] and svc.store.list(model.BRIDGES) == []
    assert_consistent(svc)


def test_router_interface_port_blocks_network_delete(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"], "device_owner":
                                 "network:router_interface", "device_id": str(uuid.uuid4()),
                                 "fixed_ips": [{"subnet_id": s["id"], "ip_address": "10.0.0.1"}]})
    assert native(svc, model.PORTS, p["id"])["type"] == model.PORT_INTERIOR
    assert p["security_groups"] == []
    with pytest.raises(ne.NetworkInUse):
        svc.delete(P1, "networks", n["id"])
    with pytest.raises(ne.PortInUse, match="remove_router_interface"):
        svc.delete(P1, "ports", p["id"])
    with pytest.raises(ne.SubnetInUse):
        svc.delete(P1, "subnets", s["id"])


# -------------------------------------------------------------------- subnets
def test_subnet_defaults(svc):
    n, s = net_sub(svc)
    assert (s["cidr"], s["gateway_ip"], s["ip_version"]) == ("10.0.0.0/24", "10.0.0.1", 4)
    assert s["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert s["enable_dhcp"] is True and s["dns_nameservers"] == [] and s["host_routes"] == []
    assert s["subnetpool_id"] is None and s["service_types"] == []
    assert svc.get(P1, "networks", n["id"])["subnets"] == [s["id"]]
    s2 = svc.create(P1, "subnets", {
        "network_id": n["id"], "cidr": "10.1.0.0/24", "gateway_ip": None,
        "allocation_pools": [{"start": "10.1.0.10", "end": "10.1.0.20"}],
        "dns_nameservers": ["8.8.8.8"],
        "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.1.0.1"}]})
    assert s2["gateway_ip"] is None and s2["dns_nameservers"] == ["8.8.8.8"]
    assert s2["allocation_pools"] == [{"start": "10.1.0.10", "end": "10.1.0.20"}]
    s3 = svc.create(P1, "subnets", {"network_id": n["id"], "cidr": "10.2.0.0/24",
                                    "gateway_ip": None})
    assert s3["allocation_pools"] == [{"start": "10.2.0.1", "end": "10.2.0.254"}]


@pytest.mark.parametrize("body,match", [
    ({"cidr": "10.0.0.5/24"}, "use '10.0.0.0/24' instead"),
    ({"cidr": "fd00::/64", "ip_version": 6}, "IPv6 subnets are not supported yet"),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.1.1"}, "gateway_ip"),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.5",
      "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.9"}]}, "conflicts with"),
    ({"cidr": "10.0.0.0/24",
      "allocation_pools": [{"start": "10.0.0.200", "end": "10.0.1.9"}]}, "spans beyond"),
    ({"cidr": "nonsense"}, "cidr"), ({}, "cidr"),
    ({"cidr": "10.0.0.0/24", "dns_nameservers": ["x"]}, "dns_nameservers"),
])
def test_bad_subnets(svc, body, match):
    n = svc.create(P1, "networks", {})
    with pytest.raises(ne.NeutronError, match=match) as e:
        svc.create(P1, "subnets", {"network_id": n["id"], **body})
    assert e.value.status in (400, 409)
    assert svc.store.list("neutron.subnets") == []


def test_overlapping_cidrs_only_within_one_network(svc):
    n, s = net_sub(svc)
    with pytest.raises(ne.BadRequest, match="overlaps with another subnet"):
        svc.create(P1, "subnets", {"network_id": n["id"], "cidr": "10.0.0.128/25"})
    net_sub(svc, P1)  # another network of the same project
    net_sub(svc, P2)  # another project


def test_subnet_permissions(svc):
    n = svc.create(P1, "networks", {})
    shared = svc.create(ADMIN, "networks", {"shared": True, "project_id": "p1"})
    with pytest.raises(ne.NetworkNotFound):
        svc.create(P2, "subnets", {"network_id": n["id"], "cidr": "10.0.0.0/24"})
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.create(P2, "subnets", {"network_id": shared["id"], "cidr": "10.0.0.0/24"})
    s = svc.create(P1, "subnets", {"network_id": shared["id"], "cidr": "10.0.0.0/24"})
    assert svc.get(P2, "subnets", s["id"])["id"] == s["id"]  # of a shared network
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.delete(P2, "subnets", s["id"])
    s1 = svc.create(P1, "subnets", {"network_id": n["id"], "cidr": "10.0.0.0/24"})
    with pytest.raises(ne.SubnetNotFound):
        svc.get(P2, "subnets", s1["id"])


def test_subnet_update_and_delete_in_use(svc):
    n, s = net_sub(svc)
    u = svc.update(P1, "subnets", s["id"], {"name": "x", "dns_nameservers": ["1.1.1.1"],
                                            "allocation_pools": [{"start": "10.0.0.100",
                                                                  "end": "10.0.0.110"}]})
    assert u["allocation_pools"] == [{"start": "10.0.0.100", "end": "10.0.0.110"}]
    with pytest.raises(ne.BadRequest, match="cidr"):
        svc.update(P1, "subnets", s["id"], {"cidr": "10.5.0.0/24"})
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    assert p["fixed_ips"][0]["ip_address"] == "10.0.0.100"
    with pytest.raises(ne.SubnetInUse):
        svc.delete(P1, "subnets", s["id"])
    svc.delete(P1, "ports", p["id"])
    svc.delete(P1, "subnets", s["id"])


# ---------------------------------------------------------------------- ports
def test_port_defaults_and_its_native_port(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"], "name": "vm1"})
    assert p["fixed_ips"] == [{"subnet_id": s["id"], "ip_address": "10.0.0.2"}]
    assert p["mac_address"].startswith("fa:16:3e:")
    assert p["status"] == "DOWN" and "binding:vif_type" not in p  # admin's and Nova's
    assert svc.get(ADMIN, "ports", p["id"])["binding:vif_type"] == "unbound"
    assert p["binding:vnic_type"] == "normal" and p["port_security_enabled"] is True
    sgs = svc.list(P1, "security-groups")
    assert [g["name"] for g in sgs] == ["default"] and p["security_groups"] == [sgs[0]["id"]]
    nat = native(svc, model.PORTS, p["id"])
    assert (nat["device_id"], nat["type"], nat["mac"]) == (n["id"], "exterior", p["mac_address"])
    assert nat["fixed_ips"] == ["10.0.0.2"] and nat["security_group_ids"] == p["security_groups"]
    assert nat["inbound_filter_id"] == sec.port_chain_id(p["id"], "inbound")
    assert p["id"] in native(svc, model.BRIDGES, n["id"])["port_ids"]
    ipag = native(svc, model.IP_ADDR_GROUPS, sec.sg_ipag_id(sgs[0]["id"]))
    assert ipag["addresses"] == ["10.0.0.2"]
    # a second port takes the next address; the default group is not made twice
    p2 = svc.create(P1, "ports", {"network_id": n["id"]})
    assert p2["fixed_ips"][0]["ip_address"] == "10.0.0.3"
    assert len(svc.list(P1, "security-groups")) == 1
    assert_consistent(svc)


def test_port_status_follows_the_agent(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    svc.store.put_state(paths.port_active(p["id"]), {"host_id": "h"})
    assert svc.get(P1, "ports", p["id"])["status"] == "ACTIVE"
    assert [x["status"] for x in svc.list(P1, "ports")] == ["ACTIVE"]


def test_requested_addresses_and_their_errors(svc):
    n, s = net_sub(svc, cidr="10.0.0.0/29")  # pool .2-.6
    a = svc.create(P1, "ports", {"network_id": n["id"],
                                 "fixed_ips": [{"ip_address": "10.0.0.5"}]})
    assert a["fixed_ips"] == [{"subnet_id": s["id"], "ip_address": "10.0.0.5"}]
    with pytest.raises(ne.IpAddressInUse):
        svc.create(P1, "ports", {"network_id": n["id"],
                                 "fixed_ips": [{"subnet_id": s["id"], "ip_address": "10.0.0.5"}]})
    with pytest.raises(ne.IpAddressInUse, match="gateway"):
        svc.create(P1, "ports", {"network_id": n["id"], "fixed_ips": [{"ip_address": "10.0.0.1"}]})
    with pytest.raises(ne.BadRequest, match="not a valid IP for any subnet"):
        svc.create(P1, "ports", {"network_id": n["id"], "fixed_ips": [{"ip_address": "10.9.0.1"}]})
    with pytest.raises(ne.BadRequest, match="invalid subnet"):
        svc.create(P1, "ports", {"network_id": n["id"],
                                 "fixed_ips": [{"subnet_id": str(uuid.uuid4())}]})
    got = [svc.create(P1, "ports", {"network_id": n["id"]})["fixed_ips"][0]["ip_address"]
           for _ in range(4)]
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6"]
    before = store_snapshot(svc.store)
    with pytest.raises(ne.IpAddressGenerationFailure):
        svc.create(P1, "ports", {"network_id": n["id"]})
    assert store_snapshot(svc.store) == before
    none = svc.create(P1, "ports", {"network_id": n["id"], "fixed_ips": []})
    assert none["fixed_ips"] == []


def test_port_update_keeps_or_moves_addresses(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    same = svc.update(P1, "ports", p["id"], {"fixed_ips": [{"subnet_id": s["id"]}]})
    assert same["fixed_ips"] == p["fixed_ips"]
    moved = svc.update(P1, "ports", p["id"], {"fixed_ips": [{"ip_address": "10.0.0.50"}]})
    assert moved["fixed_ips"] == [{"subnet_id": s["id"], "ip_address": "10.0.0.50"}]
    assert moved["revision_number"] == 1
    assert native(svc, model.PORTS, p["id"])["fixed_ips"] == ["10.0.0.50"]
    q = svc.create(P1, "ports", {"network_id": n["id"]})
    assert q["fixed_ips"][0]["ip_address"] == "10.0.0.2"  # freed
    assert_consistent(svc)


def test_mac_addresses(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"], "mac_address": "FA:16:3E:AA:BB:CC"})
    assert p["mac_address"] == "fa:16:3e:aa:bb:cc"
    with pytest.raises(ne.MacAddressInUse):
        svc.create(P1, "ports", {"network_id": n["id"], "mac_address": "fa:16:3e:aa:bb:cc"})
    with pytest.raises(ne.BadRequest, match="mac_address"):
        svc.create(P1, "ports", {"network_id": n["id"], "mac_address": "01:00:5e:00:00:01"})
    n2, _ = net_sub(svc)
    svc.create(P1, "ports", {"network_id": n2["id"], "mac_address": "fa:16:3e:aa:bb:cc"})


def test_port_security_and_address_pairs(svc):
    n, s = net_sub(svc)
    open_ = svc.create(P1, "ports", {"network_id": n["id"], "port_security_enabled": False})
    assert open_["security_groups"] == []
    assert not sec.port_managed(native(svc, model.PORTS, open_["id"]))
    insecure = svc.create(P1, "networks", {"port_security_enabled": False})
    svc.create(P1, "subnets", {"network_id": insecure["id"], "cidr": "10.7.0.0/24"})
    assert svc.create(P1, "ports", {"network_id": insecure["id"]})["security_groups"] == []
    with pytest.raises(ne.Conflict):
        svc.update(P1, "ports", open_["id"], {"allowed_address_pairs":
                                              [{"ip_address": "10.0.0.99"}]})
    p = svc.create(P1, "ports", {"network_id": n["id"], "allowed_address_pairs": [
        {"ip_address": "10.0.0.96/28"}, {"ip_address": "10.0.0.99",
                                         "mac_address": "fa:16:3e:00:00:09"}]})
    assert p["allowed_address_pairs"][0] == {"ip_address": "10.0.0.96/28",
                                             "mac_address": p["mac_address"]}
    nat = native(svc, model.PORTS, p["id"])
    assert len(nat["allowed_address_pairs"]) == 2 and nat["port_security_enabled"]
    with pytest.raises(ne.Conflict, match="security group"):
        svc.update(P1, "ports", p["id"], {"port_security_enabled": False})
    off = svc.update(P1, "ports", p["id"], {"port_security_enabled": False,
                                            "security_groups": [],
                                            "allowed_address_pairs": []})
    assert not sec.port_managed(native(svc, model.PORTS, off["id"]))
    assert_consistent(svc)


def test_port_binding(svc):
    n, s = net_sub(svc)
    host = {"id": str(uuid.uuid4()), "name": "compute-1"}
    svc.store.commit([Create(model.HOSTS, host)])
    # Neutron's policy: binding a port is admin's or Nova's (the service role)
    with pytest.raises(ne.PolicyNotAuthorized, match="binding:host_id"):
        svc.create(P1, "ports", {"network_id": n["id"], "binding:host_id": "compute-1"})
    nova = Context(project_id="service", user_id="nova", roles=("service",))
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    p = svc.update(nova, "ports", p["id"], {"binding:host_id": "compute-1"})
    assert p["binding:host_id"] == "compute-1" and p["binding:vif_type"] == "ovs"
    assert p["binding:vif_details"] == {"port_filter": True, "ovs_hybrid_plug": False}
    assert native(svc, model.PORTS, p["id"])["host_id"] == host["id"]
    own = svc.get(P1, "ports", p["id"])  # the owner sees no binding details
    assert "binding:host_id" not in own and own["binding:vnic_type"] == "normal"
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.update(P1, "ports", p["id"], {"binding:host_id": ""})
    q = svc.create(ADMIN, "ports", {"network_id": n["id"], "binding:host_id": "not-yet",
                                    "project_id": "p1"})
    assert q["binding:vif_type"] == "ovs" and native(svc, model.PORTS, q["id"])["host_id"] is None
    u = svc.update(ADMIN, "ports", q["id"], {"binding:host_id": host["id"]})
    assert native(svc, model.PORTS, u["id"])["host_id"] == host["id"]
    u = svc.update(ADMIN, "ports", q["id"], {"binding:host_id": ""})
    assert u["binding:vif_type"] == "unbound" and native(svc, model.PORTS, q["id"])["host_id"] \
        is None
    with pytest.raises(ne.BadRequest, match="binding:vnic_type"):
        svc.create(P1, "ports", {"network_id": n["id"], "binding:vnic_type": "direct"})


def test_port_visibility_and_shared_networks(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    with pytest.raises(ne.PortNotFound):
        svc.get(P2, "ports", p["id"])
    with pytest.raises(ne.NetworkNotFound):
        svc.create(P2, "ports", {"network_id": n["id"]})
    assert svc.list(P2, "ports") == []
    shared, ss = net_sub(svc, ADMIN, shared=True)
    q = svc.create(P2, "ports", {"network_id": shared["id"]})
    assert q["project_id"] == "p2"
    ext = svc.create(ADMIN, "networks", {"router:external": True})
    with pytest.raises(ne.PolicyNotAuthorized):
        svc.create(P2, "ports", {"network_id": ext["id"]})
    # the network's owner sees the ports on it
    assert svc.get(ADMIN, "ports", q["id"])["id"] == q["id"]


def test_failed_port_create_writes_nothing(svc):
    n, s = net_sub(svc)
    svc.list(P1, "security-groups")
    before = store_snapshot(svc.store)
    for body in ({"security_groups": [str(uuid.uuid4())]},
                 {"fixed_ips": [{"ip_address": "10.0.0.9"}, {"ip_address": "10.0.0.9"}]},
                 {"allowed_address_pairs": [{"ip_address": "bad"}]}):
        with pytest.raises(ne.NeutronError):
            svc.create(P1, "ports", {"network_id": n["id"], **body})
        assert store_snapshot(svc.store) == before
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    assert p["fixed_ips"][0]["ip_address"] == "10.0.0.2"


def test_other_projects_security_group_is_not_found(svc):
    n, s = net_sub(svc)
    g2 = svc.create(P2, "security-groups", {"name": "theirs"})
    with pytest.raises(ne.SecurityGroupNotFound):
        svc.create(P1, "ports", {"network_id": n["id"], "security_groups": [g2["id"]]})


def test_port_delete_removes_native_port_and_chains(svc):
    n, s = net_sub(svc)
    p = svc.create(P1, "ports", {"network_id": n["id"]})
    svc.delete(P1, "ports", p["id"])
    assert native(svc, model.PORTS, p["id"]) is None
    assert native(svc, model.CHAINS, sec.port_chain_id(p["id"], "inbound")) is None
    assert native(svc, model.BRIDGES, n["id"])["port_ids"] == []
    assert_consistent(svc)


# ------------------------------------------------------------ security groups
def test_security_group_defaults_and_rules(svc):
    g = svc.create(P1, "security-groups", {"security_group": {"name": "web"}})
    rules = g["security_group_rules"]
    assert sorted((r["direction"], r["ethertype"]) for r in rules) == [
        ("egress", "IPv4"), ("egress", "IPv6")]
    assert g["stateful"] is True
    nat = native(svc, model.SECURITY_GROUPS, g["id"])
    assert [r["ethertype"] for r in nat["rules"]] == ["IPv4"]  # IPv6 is kept, not translated
    ssh = svc.create(P1, "security-group-rules", {
        "security_group_id": g["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "192.168.1.7/24"})
    assert ssh["remote_ip_prefix"] == "192.168.1.0/24" and ssh["protocol"] == "tcp"
    with pytest.raises(ne.SecurityGroupRuleExists):
        svc.create(P1, "security-group-rules", {
            "security_group_id": g["id"], "direction": "ingress", "protocol": "6",
            "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "192.168.1.0/24"})
    icmp = svc.create(P1, "security-group-rules", {
        "security_group_id": g["id"], "direction": "ingress", "protocol": "icmp"})
    with pytest.raises(ne.SecurityGroupRuleExists):  # any address is no prefix
        svc.create(P1, "security-group-rules", {
            "security_group_id": g["id"], "direction": "ingress", "protocol": "1",
            "remote_ip_prefix": "0.0.0.0/0"})
    v6 = svc.create(P1, "security-group-rules", {
        "security_group_id": g["id"], "direction": "ingress", "ethertype": "IPv6",
        "remote_ip_prefix": "fd00::/64"})
    nat = native(svc, model.SECURITY_GROUPS, g["id"])
    assert {r["id"] for r in nat["rules"]} >= {ssh["id"], icmp["id"]}
    assert v6["id"] not in {r["id"] for r in nat["rules"]}
    ingress = native(svc, model.CHAINS, sec.sg_chain_id(g["id"], "ingress"))
    assert len(ingress["rule_ids"]) == 2
    svc.delete(P1, "security-group-rules", ssh["id"])
    ingress = native(svc, model.CHAINS, sec.sg_chain_id(g["id"], "ingress"))
    assert len(ingress["rule_ids"]) == 1
    assert len(svc.get(P1, "security-groups", g["id"])["security_group_rules"]) == 4
    assert_consistent(svc)


@pytest.mark.parametrize("body,match", [
    ({"direction": "sideways"}, "direction"),
    ({"direction": "ingress", "port_range_min": 22, "port_range_max": 22}, "protocol"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 22},
     "port_range_min must be <="),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 0, "port_range_max": 22},
     "port 0"),
    ({"direction": "ingress", "protocol": "gre", "port_range_min": 1, "port_range_max": 2},
     "Invalid protocol gre for port range"),
    ({"direction": "ingress", "protocol": "icmp", "port_range_max": 0}, "ICMP type"),
    ({"direction": "ingress", "protocol": "icmp", "port_range_min": 300}, "ICMP"),
    ({"direction": "ingress", "protocol": "bogus"}, "protocol bogus not supported"),
    ({"direction": "ingress", "protocol": "256"}, "not supported"),
    ({"direction": "ingress", "remote_ip_prefix": "fd00::/64"}, "Conflicting value ethertype"),
    ({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8",
      "remote_group_id": "SELF"}, "Only remote_ip_prefix or remote_group_id"),
    ({"direction": "ingress", "remote_group_id": str(uuid.uuid4())}, "does not exist"),
])
def test_bad_rules(svc, body, match):
    g = svc.create(P1, "security-groups", {"name": "g"})
    body = {k: (g["id"] if v == "SELF" else v) for k, v in body.items()}
    before = store_snapshot(svc.store)
    with pytest.raises(ne.NeutronError, match=match) as e:
        svc.create(P1, "security-group-rules", {"security_group_id": g["id"], **body})
    assert e.value.status in (400, 404)
    assert store_snapshot(svc.store) == before


def test_default_group_rules_and_protection(svc):
    [d] = svc.list(P1, "security-groups")
    assert d["name"] == "default"
    rules = {(r["direction"], r["ethertype"], r["remote_group_id"])
             for r in d["security_group_rules"]}
    assert rules == {("egress", "IPv4", None), ("egress", "IPv6", None),
                     ("ingress", "IPv4", d["id"]), ("ingress", "IPv6", d["id"])}
    with pytest.raises(ne.Conflict):
        svc.delete(P1, "security-groups", d["id"])
    with pytest.raises(ne.Conflict):
        svc.update(P1, "security-groups", d["id"], {"name": "renamed"})
    with pytest.raises(ne.Conflict):
        svc.create(P1, "security-groups", {"name": "default"})
    svc.update(P1, "security-groups", d["id"], {"description": "mine"})
    assert svc.list(P2, "security-groups")[0]["project_id"] == "p2"
    with pytest.raises(ne.SecurityGroupNotFound):
        svc.get(P2, "security-groups", d["id"])
    svc.delete(ADMIN, "security-groups", d["id"])
    assert_consistent(svc)


def test_group_in_use_and_remote_group_cascade(svc):
    n, s = net_sub(svc)
    a = svc.create(P1, "security-groups", {"name": "a"})
    b = svc.create(P1, "security-groups", {"name": "b"})
    r = svc.create(P1, "security-group-rules", {"security_group_id": b["id"],
                                                "direction": "ingress",
                                                "remote_group_id": a["id"]})
    p = svc.create(P1, "ports", {"network_id": n["id"], "security_groups": [a["id"]]})
    with pytest.raises(ne.SecurityGroupInUse):
        svc.delete(P1, "security-groups", a["id"])
    svc.update(P1, "ports", p["id"], {"security_groups": [b["id"]]})
    assert native(svc, model.PORTS, p["id"])["security_group_ids"] == [b["id"]]
    svc.delete(P1, "security-groups", a["id"])
    with pytest.raises(ne.SecurityGroupRuleNotFound):
        svc.get(P1, "security-group-rules", r["id"])
    assert r["id"] not in {x["id"] for x in native(svc, model.SECURITY_GROUPS, b["id"])["rules"]}
    assert native(svc, model.SECURITY_GROUPS, a["id"]) is None
    assert_consistent(svc)


def test_security_groups_need_port_security(svc):
    n, s = net_sub(svc)
    g = svc.create(P1, "security-groups", {"name": "g"})
    with pytest.raises(ne.BadRequest, match="Port security must be enabled"):
        svc.create(P1, "ports", {"network_id": n["id"], "port_security_enabled": False,
                                 "security_groups": [g["id"]]})


def test_floating_ip_addresses_are_used_addresses(svc):
    """IPAM skips an address a floating IP holds on the network's subnet."""
    ext, s = net_sub(svc, ADMIN, cidr="172.24.4.0/29", **{"router:external": True})
    svc.create(ADMIN, "floatingips", {"floating_network_id": ext["id"],
                                      "floating_ip_address": "172.24.4.2"})
    p = svc.create(ADMIN, "ports", {"network_id": ext["id"]})
    assert p["fixed_ips"][0]["ip_address"] == "172.24.4.3"
    with pytest.raises(ne.IpAddressInUse):
        svc.create(ADMIN, "ports", {"network_id": ext["id"],
                                    "fixed_ips": [{"ip_address": "172.24.4.2"}]})
    svc.delete(ADMIN, "ports", p["id"])
    with pytest.raises(ne.SubnetInUse):  # the floating IP's address is still from it
        svc.delete(ADMIN, "subnets", s["id"])


# ------------------------------------------------------- any body: no 500
_IDS = [str(uuid.UUID(int=1)), str(uuid.uuid4())]
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=6),
                    st.sampled_from(["10.0.0.5", "10.0.0.0/24", "1.2.3.4/40", "::/0",
                                     "fa:16:3e:00:00:01", "tcp", "icmp", "ingress", "IPv6",
                                     "0.0.0.0/0", *_IDS]))
_VALUE = st.recursive(_SCALAR, lambda c: st.one_of(
    st.lists(c, max_size=3),
    st.dictionaries(st.sampled_from(["subnet_id", "ip_address", "mac_address", "start", "end",
                                     "destination", "nexthop", "opt_name", "opt_value", "x"]),
                    c, max_size=3)), max_leaves=6)
_KEYS = {
    "networks": ["name", "admin_state_up", "shared", "router:external", "mtu", "is_default",
                 "provider:network_type", "provider:segmentation_id", "project_id",
                 "availability_zone_hints"],
    "subnets": ["cidr", "ip_version", "gateway_ip", "allocation_pools", "dns_nameservers",
                "host_routes", "enable_dhcp", "subnetpool_id", "name"],
    "ports": ["fixed_ips", "mac_address", "security_groups", "port_security_enabled",
              "allowed_address_pairs", "binding:host_id", "binding:vnic_type",
              "binding:profile", "extra_dhcp_opts", "device_owner", "name"],
    "security-groups": ["name", "description", "stateful", "project_id"],
    "security-group-rules": ["direction", "ethertype", "protocol", "port_range_min",
                             "port_range_max", "remote_ip_prefix", "remote_group_id"],
}


@pytest.mark.parametrize("collection", sorted(_KEYS))
def test_any_body_is_answered_with_a_neutron_error_or_done(collection):
    """Random bodies, created and updated as a member and as admin: a
    NeutronError or success, never another exception; the native topology
    stays consistent."""
    svc = NeutronService(MemoryStore())
    n, s = net_sub(svc)
    objs = {"networks": n, "subnets": s,
            "ports": svc.create(P1, "ports", {"network_id": n["id"]}),
            "security-groups": svc.create(P1, "security-groups", {"name": "g"})}
    parent = {"subnets": ("network_id", n["id"]), "ports": ("network_id", n["id"]),
              "security-group-rules": ("security_group_id", objs["security-groups"]["id"])}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(_KEYS[collection]), _VALUE, max_size=5),
           st.booleans(), st.sampled_from([P1, ADMIN]))
    def check(body, update, ctx):
        try:
            if update and collection in objs:
                svc.update(ctx, collection, objs[collection]["id"], body)
            else:
                if collection in parent:
                    body.setdefault(*parent[collection])
                svc.create(ctx, collection, body)
        except ne.NeutronError:
            pass

    check()
    assert_consistent(svc)


def test_a_network_without_allocation_index_gets_one_from_a_scan(svc):
    """A network created before the index existed: its index is built from its
    ports and floating IPs on first use, so IPAM and MACs still see them."""
    ext, s = net_sub(svc, ADMIN, cidr="172.24.4.0/29", **{"router:external": True})
    old = svc.create(ADMIN, "ports", {"network_id": ext["id"]})
    svc.store.commit([Create("neutron.floatingips", {
        "id": str(uuid.uuid4()), "floating_network_id": ext["id"],
        "floating_ip_address": "172.24.4.3", "project_id": "p1"})])
    svc.store.commit([Delete(alloc.KIND, ext["id"], svc.store.get(alloc.KIND, ext["id"])[1])])
    p = svc.create(ADMIN, "ports", {"network_id": ext["id"]})
    assert p["fixed_ips"][0]["ip_address"] == "172.24.4.4"
    with pytest.raises(ne.MacAddressInUse):
        svc.create(ADMIN, "ports", {"network_id": ext["id"], "mac_address": old["mac_address"]})
    idx = svc.store.get(alloc.KIND, ext["id"])[0]
    assert idx["ips"][s["id"]] == {"172.24.4.2": old["id"], "172.24.4.4": p["id"],
                                   "172.24.4.3": idx["ips"][s["id"]]["172.24.4.3"]}


def _index_errors(svc) -> list[str]:
    """Where a network's stored allocation index differs from a full scan."""
    scan = {k: [d for d, _ in svc.store.list(f"neutron.{k}")]
            for k in ("networks", "ports", "floatingips", "subnets")}
    stored = {d["id"]: d for d, _ in svc.store.list(alloc.KIND)}
    errors = [f"index of deleted network {i}" for i in stored
              if i not in {n["id"] for n in scan["networks"]}]
    for n in scan["networks"]:
        want = alloc.build(n["id"], scan["ports"], scan["floatingips"], scan["subnets"])
        if stored.get(n["id"]) != want:
            errors.append(f"network {n['id']}: {stored.get(n['id'])} != {want}")
    return errors


_OPS = st.lists(st.tuples(
    st.sampled_from(["net", "subnet", "port", "port_ip", "port_mac", "port_ips", "del_port",
                     "fip", "del_fip", "del_subnet", "del_net"]),
    st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_allocation_index_is_what_a_full_scan_gives(ops):
    """After any sequence of creates, updates and deletes of networks, subnets,
    ports and floating IPs (some failing, e.g. an address in use), every
    network's index equals the one a scan of all its objects builds."""
    svc = NeutronService(MemoryStore())
    ext, _ = net_sub(svc, ADMIN, cidr="172.24.4.0/28", **{"router:external": True})
    nets, subs, ports, fips = [ext["id"]], [], [], []

    def pick(xs, i):
        return xs[i % len(xs)] if xs else None
    for what, i, j in ops:
        try:
            if what == "net":
                nets.append(svc.create(ADMIN, "networks", {"name": "n"})["id"])
            elif what == "subnet":
                subs.append(svc.create(ADMIN, "subnets", {
                    "network_id": pick(nets, i), "cidr": f"10.{j}.0.0/28",
                    "ip_version": 4})["id"])
            elif what in ("port", "port_ip"):
                body = {"network_id": pick(nets, i)}
                if what == "port_ip" and subs:
                    sub = svc.get(ADMIN, "subnets", pick(subs, i))
                    body = {"network_id": sub["network_id"], "fixed_ips": [{
                        "ip_address": str(netaddr.IPNetwork(sub["cidr"])[2 + j])}]}
                ports.append(svc.create(ADMIN, "ports", body)["id"])
            elif what == "port_mac" and ports:
                other = svc.get(ADMIN, "ports", pick(ports, j))["mac_address"]
                svc.update(ADMIN, "ports", pick(ports, i), {
                    "mac_address": other if i % 2 else f"fa:16:3e:00:00:0{j}"})
            elif what == "port_ips" and ports:
                p = svc.get(ADMIN, "ports", pick(ports, i))
                svc.update(ADMIN, "ports", p["id"], {"fixed_ips": [] if j % 3 == 0 else [
                    {"subnet_id": s} for s in subs[: j % 3]]})
            elif what == "del_port" and ports:
                svc.delete(ADMIN, "ports", ports.pop(i % len(ports)))
            elif what == "fip":
                fips.append(svc.create(ADMIN, "floatingips", {
                    "floating_network_id": ext["id"]})["id"])
            elif what == "del_fip" and fips:
                svc.delete(ADMIN, "floatingips", fips.pop(i % len(fips)))
            elif what == "del_subnet" and subs:
                svc.delete(ADMIN, "subnets", pick(subs, i))
                subs.remove(pick(subs, i))
            elif what == "del_net" and len(nets) > 1:
                svc.delete(ADMIN, "networks", nets[1 + i % (len(nets) - 1)])
                nets.remove(nets[1 + i % (len(nets) - 1)])
        except ne.NeutronError:
            pass  # refused (in use, not found, exhausted...): must have written nothing
        assert _index_errors(svc) == [], (what, i, j)
