"""Neutron subnets and ports as the native DHCP model (issue 12): the pure
translation, and the Neutron API keeping the native DHCP subnets and the ports'
instance fields in step in the request's commit."""

from __future__ import annotations

import uuid

import pytest

from midoflow import model
from midoflow.neutron import errors as ne
from midoflow.neutron import translate_l2 as tr
from midoflow.neutron.context import Context
from midoflow.neutron.service import NeutronService
from midoflow.store.memory import MemoryStore
from tests.unit.conftest import store_snapshot

P1 = Context(project_id="p1", user_id="u1", roles=("member",))
SUB = {"id": "44444444-4444-4444-8444-444444444444", "network_id": "n1", "ip_version": 4,
       "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "enable_dhcp": True,
       "dns_nameservers": ["192.0.2.53", "192.0.2.54"],
       "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"},
                       {"destination": "172.16.0.0/12", "nexthop": "10.9.9.9"}]}


# ------------------------------------------------------------------ pure
def test_subnet_to_dhcp():
    d = tr.subnet_to_dhcp(SUB)
    assert d["id"] == str(uuid.uuid5(uuid.UUID(SUB["id"]), "dhcp")) == tr.dhcp_subnet_id(
        SUB["id"])
    assert (d["bridge_id"], d["cidr"], d["gateway_ip"], d["enabled"]) == \
        ("n1", "10.0.0.0/24", "10.0.0.1", True)
    assert d["dns_servers"] == ["192.0.2.53", "192.0.2.54"]
    # a nexthop off the subnet cannot be reached by the VM: left out
    assert d["host_routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]
    s = model.DhcpSubnet.from_dict(d)
    assert s.host_routes == (("192.168.0.0/16", "10.0.0.254"),) and s.lease_time == 86400
    off = tr.subnet_to_dhcp(dict(SUB, enable_dhcp=False, gateway_ip=None,
                                 dns_nameservers=[f"192.0.2.{i}" for i in range(1, 9)]))
    assert off["enabled"] is False and off["gateway_ip"] is None
    assert len(off["dns_servers"]) == 5
    assert tr.subnet_to_dhcp(dict(SUB, ip_version=6, cidr="fd00::/64")) is None


def _port(**kw) -> dict:
    p = {"id": "22222222-2222-4222-8222-222222222222", "network_id": "n1",
         "mac_address": "fa:16:3e:00:00:01", "project_id": "p1", "device_id": "vm-uuid",
         "device_owner": "compute:nova", "port_security_enabled": False,
         "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"},
                       {"subnet_id": "s2", "ip_address": "10.1.0.5"}],
         "extra_dhcp_opts": [{"opt_name": "domain-search", "opt_value": "example.org",
                              "ip_version": 4},
                             {"opt_name": "dns-server", "opt_value": "[fd00::1]",
                              "ip_version": 6}]}
    p.update(kw)
    return p


def test_port_instance_fields():
    n = tr.port_to_native(_port(), 3)
    assert (n["instance_id"], n["tenant_id"], n["hostname"]) == ("vm-uuid", "p1",
                                                                "host-10-0-0-5")
    assert n["extra_dhcp_opts"] == [{"opt_name": "domain-search", "opt_value": "example.org"}]
    assert n["mtu"] is None
    p = model.Port.from_dict(n)
    assert p.extra_dhcp_opts == (("domain-search", "example.org"),)
    assert tr.port_to_native(_port(dns_name="web1"), 3)["hostname"] == "web1"
    bare = tr.port_to_native(_port(device_id="", fixed_ips=[], extra_dhcp_opts=None), 3)
    assert (bare["instance_id"], bare["hostname"], bare["extra_dhcp_opts"]) == (None, "", [])
    router = tr.port_to_native(_port(device_owner="network:router_interface"), 3)
    assert (router["instance_id"], router["tenant_id"], router["hostname"],
            router["extra_dhcp_opts"]) == (None, "", "", [])


# ------------------------------------------------------------------ the API
@pytest.fixture
def svc() -> NeutronService:
    return NeutronService(MemoryStore())


def _native(svc, kind, oid):
    try:
        return svc.store.get(kind, oid)[0]
    except Exception:
        return None


def test_subnet_lifecycle_keeps_the_dhcp_subnet_in_step(svc):
    n = svc.create(P1, "networks", {"name": "n"})
    s = svc.create(P1, "subnets", {"network_id": n["id"], "cidr": "10.0.0.0/24",
                                   "dns_nameservers": ["192.0.2.53"]})
    did = tr.dhcp_subnet_id(s["id"])
    d = _native(svc, model.DHCP_SUBNETS, did)
    assert (d["bridge_id"], d["cidr"], d["gateway_ip"], d["dns_servers"], d["enabled"]) == \
        (n["id"], "10.0.0.0/24", "10.0.0.1", ["192.0.2.53"], True)
    svc.update(P1, "subnets", s["id"], {
        "dns_nameservers": [], "gateway_ip": "10.0.0.1",
        "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.9"}]})
    d = _native(svc, model.DHCP_SUBNETS, did)
    assert (d["dns_servers"], d["gateway_ip"], d["host_routes"]) == \
        ([], "10.0.0.1", [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.9"}])
    svc.update(P1, "subnets", s["id"], {"gateway_ip": None})
    assert _native(svc, model.DHCP_SUBNETS, did)["gateway_ip"] is None
    svc.update(P1, "subnets", s["id"], {"enable_dhcp": False})
    assert _native(svc, model.DHCP_SUBNETS, did)["enabled"] is False
    svc.update(P1, "subnets", s["id"], {"enable_dhcp": True})
    assert _native(svc, model.DHCP_SUBNETS, did)["enabled"] is True
    svc.delete(P1, "subnets", s["id"])
    assert _native(svc, model.DHCP_SUBNETS, did) is None
    # a subnet created with DHCP off has its (disabled) native subnet too
    s2 = svc.create(P1, "subnets", {"network_id": n["id"], "cidr": "10.1.0.0/24",
                                    "enable_dhcp": False})
    assert _native(svc, model.DHCP_SUBNETS, tr.dhcp_subnet_id(s2["id"]))["enabled"] is False
    # deleting the network takes its DHCP subnets along
    svc.delete(P1, "networks", n["id"])
    assert svc.store.list(model.DHCP_SUBNETS) == []


def test_ports_carry_instance_and_dhcp_fields(svc):
    n = svc.create(P1, "networks", {"name": "n"})
    svc.create(P1, "subnets", {"network_id": n["id"], "cidr": "10.0.0.0/24"})
    p = svc.create(P1, "ports", {
        "network_id": n["id"], "device_id": "inst-1", "device_owner": "compute:nova",
        "extra_dhcp_opts": [{"opt_name": "domain-search", "opt_value": "example.org"},
                            {"opt_name": "26", "opt_value": "1400", "ip_version": 4},
                            {"opt_name": "dns-server", "opt_value": "fd00::1",
                             "ip_version": 6}]})
    nat = _native(svc, model.PORTS, p["id"])
    assert (nat["instance_id"], nat["tenant_id"], nat["hostname"]) == \
        ("inst-1", "p1", "host-10-0-0-2")
    assert nat["extra_dhcp_opts"] == [{"opt_name": "domain-search", "opt_value": "example.org"},
                                      {"opt_name": "26", "opt_value": "1400"}]
    # an update merges as Neutron does: same name replaced, a null value removes
    p = svc.update(P1, "ports", p["id"], {"device_id": "inst-2", "extra_dhcp_opts": [
        {"opt_name": "domain-search", "opt_value": "example.net"},
        {"opt_name": "26", "opt_value": None}]})
    assert [(o["opt_name"], o["opt_value"], o["ip_version"]) for o in p["extra_dhcp_opts"]] \
        == [("dns-server", "fd00::1", 6), ("domain-search", "example.net", 4)]
    nat = _native(svc, model.PORTS, p["id"])
    assert nat["instance_id"] == "inst-2"
    assert nat["extra_dhcp_opts"] == [{"opt_name": "domain-search", "opt_value": "example.net"}]


def test_bad_extra_dhcp_opts_are_refused_and_write_nothing(svc):
    n = svc.create(P1, "networks", {"name": "n"})
    svc.create(P1, "subnets", {"network_id": n["id"], "cidr": "10.0.0.0/24"})
    before = store_snapshot(svc.store)
    for opts in ([{"opt_name": "no-such-option", "opt_value": "x"}],
                 [{"opt_name": "53", "opt_value": "1"}],
                 [{"opt_name": "mtu", "opt_value": "1", "ip_version": 5}]):
        with pytest.raises(ne.BadRequest, match="extra_dhcp_opts"):
            svc.create(P1, "ports", {"network_id": n["id"], "extra_dhcp_opts": opts})
    assert store_snapshot(svc.store) == before
