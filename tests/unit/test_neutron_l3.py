"""Neutron routers and floating IPs through NeutronService over a MemoryStore:
the Neutron answers, the native objects written in the same commit, and the
packets the simulation makes of them."""

from __future__ import annotations

import pytest

from midoflow import model
from midoflow.nat.allocator import MemoryLeaser, NatAllocator
from midoflow.nat.tables import FlowTables
from midoflow.neutron import errors as ne
from midoflow.neutron import translate_l3 as t3
from midoflow.neutron.context import Context
from midoflow.neutron.service import NeutronService
from midoflow.sim.packet import ETH_ARP, PROTO_TCP, Packet
from midoflow.sim.simulator import simulate
from midoflow.sim.view import DictView
from midoflow.store.memory import MemoryStore

ADMIN = Context.admin()
P1 = Context(project_id="p1", user_id="u1", roles=("member",))
P2 = Context(project_id="p2", user_id="u2", roles=("member",))
NOW = 10_000.0
OUTSIDE_MAC = "02:ee:00:00:00:01"


class World:
    """An external network 172.24.4.0/24 (admin) and project p1's networks
    10.0.0.0/24 and 10.0.1.0/24, each with one VM port."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.svc = NeutronService(self.store)
        s = self.svc
        self.ext = s.create(ADMIN, "networks", {"name": "public", "router:external": True})
        self.ext_sub = s.create(ADMIN, "subnets", {
            "network_id": self.ext["id"], "cidr": "172.24.4.0/24", "ip_version": 4,
            "gateway_ip": "172.24.4.1"})
        self.net = s.create(P1, "networks", {"name": "n1"})
        self.sub = s.create(P1, "subnets", {"network_id": self.net["id"],
                                            "cidr": "10.0.0.0/24", "ip_version": 4})
        self.net2 = s.create(P1, "networks", {"name": "n2"})
        self.sub2 = s.create(P1, "subnets", {"network_id": self.net2["id"],
                                             "cidr": "10.0.1.0/24", "ip_version": 4})
        self.vm = self.port(self.net)
        self.vm2 = self.port(self.net2)

    def port(self, net, ctx=P1, **kw):
        return self.svc.create(ctx, "ports", {
            "network_id": net["id"], "port_security_enabled": False, **kw})

    def router(self, ctx=P1, gateway=True, **kw):
        body = {"name": "r1", **kw}
        if gateway:
            body["external_gateway_info"] = {"network_id": self.ext["id"]}
        return self.svc.create(ctx, "routers", body)

    def add(self, router, ctx=P1, **body):
        return self.svc.action(ctx, "routers", router["id"], "add_router_interface", body)

    def remove(self, router, ctx=P1, **body):
        return self.svc.action(ctx, "routers", router["id"], "remove_router_interface", body)

    def native(self, kind, oid):
        try:
            return self.store.get(kind, oid)[0]
        except Exception:
            return None

    def natives(self, kind):
        return [d for d, _ in self.store.list(kind)]

    def snapshot(self):
        return {k: sorted((d["id"], v) for d, v in self.store.list(k))
                for k in (*model.KINDS, *(f"neutron.{c}" for c in (
                    "networks", "subnets", "ports", "routers", "floatingips")))}

    def view(self) -> DictView:
        objs = {k: {d["id"]: model.from_dict(k, d) for d in self.natives(k)}
                for k in (model.PORTS, model.BRIDGES, model.ROUTERS, model.CHAINS,
                          model.RULES, model.IP_ADDR_GROUPS, model.PORT_GROUPS)}
        routes: dict[str, list] = {}
        for d in self.natives(model.ROUTES):
            routes.setdefault(d["router_id"], []).append(model.Route.from_dict(d))
        return DictView(ports=objs[model.PORTS], bridges=objs[model.BRIDGES],
                        routers=objs[model.ROUTERS], chains=objs[model.CHAINS],
                        rules=objs[model.RULES], ip_addr_groups=objs[model.IP_ADDR_GROUPS],
                        port_groups=objs[model.PORT_GROUPS], routes_by_router=routes)

    def check_integrity(self) -> None:
        """Every native reference resolves; links are symmetric."""
        ports = {d["id"]: d for d in self.natives(model.PORTS)}
        for r in self.natives(model.ROUTERS):
            assert all(p in ports and ports[p]["device_id"] == r["id"] for p in r["port_ids"])
            for f in ("inbound_filter_id", "outbound_filter_id"):
                assert r[f] is None or self.native(model.CHAINS, r[f]) is not None
        for p in ports.values():
            if p.get("peer_id"):
                assert ports[p["peer_id"]]["peer_id"] == p["id"]
            dev = self.native(model.ROUTERS if p["device_type"] == "router" else model.BRIDGES,
                              p["device_id"])
            assert dev is not None and p["id"] in dev["port_ids"]
        for c in self.natives(model.CHAINS):
            for rid in c["rule_ids"]:
                rule = self.native(model.RULES, rid)
                assert rule is not None and rule["chain_id"] == c["id"]
                assert all(x in ports for x in rule["out_ports"] + rule["in_ports"])
        for rt in self.natives(model.ROUTES):
            assert self.native(model.ROUTERS, rt["router_id"]) is not None
            assert rt["next_hop_port"] in ports


@pytest.fixture
def w() -> World:
    return World()


def gw_port(w: World, router) -> dict:
    (p,) = [p for p in w.svc.list(ADMIN, "ports") if p["device_id"] == router["id"]
            and p["device_owner"] == "network:router_gateway"]
    return p


def nat_rules(w: World, router_id: str) -> tuple[list[dict], list[dict]]:
    r = w.native(model.ROUTERS, router_id)
    return tuple([w.native(model.RULES, rid) for rid in
                  w.native(model.CHAINS, r[f])["rule_ids"]] if r[f] else []
                 for f in ("inbound_filter_id", "outbound_filter_id"))


# ------------------------------------------------------------------- routers
def test_router_without_gateway_is_one_native_router(w):
    r = w.router(gateway=False, description="d")
    assert r["status"] == "ACTIVE" and r["distributed"] is True and r["ha"] is False
    assert r["external_gateway_info"] is None and r["routes"] == []
    assert r["project_id"] == r["tenant_id"] == "p1" and r["tags"] == []
    assert r["availability_zone_hints"] == [] and r["flavor_id"] is None
    n = w.native(model.ROUTERS, r["id"])
    assert n["tenant_id"] == "p1" and n["name"] == "r1" and n["port_ids"] == []
    assert n["inbound_filter_id"] is None
    assert w.svc.update(P1, "routers", r["id"], {"name": "r2", "admin_state_up": False})[
        "revision_number"] == 1
    n = w.native(model.ROUTERS, r["id"])
    assert n["name"] == "r2" and n["admin_state_up"] is False


def test_distributed_is_admin_only_and_always_true(w):
    """Neutron's policy: create_router:distributed and update_router:distributed
    are admin-only; midoflow's routers are all distributed, so false is refused
    as Neutron refuses to centralize a distributed router."""
    before = w.snapshot()
    for value in (True, False):
        with pytest.raises(ne.PolicyNotAuthorized, match="create_router:distributed"):
            w.router(gateway=False, distributed=value)
    assert w.snapshot() == before
    r = w.router(gateway=False)
    for value in (True, False):
        with pytest.raises(ne.PolicyNotAuthorized, match="update_router:distributed"):
            w.svc.update(P1, "routers", r["id"], {"distributed": value})
    with pytest.raises(ne.BadRequest, match="always distributed"):
        w.router(ctx=ADMIN, gateway=False, distributed=False)
    with pytest.raises(ne.BadRequest, match="always distributed"):
        w.svc.update(ADMIN, "routers", r["id"], {"distributed": False})
    mine = w.router(ctx=ADMIN, gateway=False, distributed=True, project_id="p1")
    assert mine["distributed"] is True and mine["project_id"] == "p1"
    assert w.svc.get(P1, "routers", mine["id"])["distributed"] is True
    assert w.svc.update(ADMIN, "routers", r["id"], {"distributed": True})["distributed"]


def test_router_ports_are_active_while_up(w):
    """As Neutron shows DVR interface ports: ACTIVE (no host binds them), DOWN
    when the port is administratively down."""
    r = w.router()
    port_id = w.add(r, subnet_id=w.sub["id"])["port_id"]
    assert w.svc.get(P1, "ports", port_id)["status"] == "ACTIVE"
    assert gw_port(w, r)["status"] == "ACTIVE"
    assert w.svc.get(P1, "ports", w.vm["id"])["status"] == "DOWN"  # a VM's: not bound
    assert w.svc.update(P1, "ports", port_id, {"admin_state_up": False})["status"] == "DOWN"


def test_router_is_invisible_to_another_project(w):
    r = w.router(gateway=False)
    with pytest.raises(ne.RouterNotFound):
        w.svc.get(P2, "routers", r["id"])
    with pytest.raises(ne.RouterNotFound):
        w.add(r, ctx=P2, subnet_id=w.sub["id"])
    assert [x["id"] for x in w.svc.list(P2, "routers")] == []


def test_gateway_makes_port_route_and_snat(w):
    r = w.router()
    info = r["external_gateway_info"]
    assert info["network_id"] == w.ext["id"] and info["enable_snat"] is True
    (fixed,) = info["external_fixed_ips"]
    assert fixed["subnet_id"] == w.ext_sub["id"] and fixed["ip_address"] == "172.24.4.2"
    gw = gw_port(w, r)
    assert gw["project_id"] == "" and gw["device_id"] == r["id"]
    with pytest.raises(ne.PortNotFound):  # a gateway port is the admin's to see
        w.svc.get(P1, "ports", gw["id"])
    rp = w.native(model.PORTS, t3.router_port_id(gw["id"]))
    bp = w.native(model.PORTS, gw["id"])
    assert rp["peer_id"] == bp["id"] and bp["peer_id"] == rp["id"]
    assert bp["type"] == "interior" and rp["ip_address"] == "172.24.4.2"
    assert rp["mac"] == gw["mac_address"] and rp["prefix_len"] == 24
    (route,) = [x for x in w.natives(model.ROUTES) if x["router_id"] == r["id"]]
    assert (route["dst_cidr"], route["next_hop_port"], route["next_hop_gateway"]) == (
        "0.0.0.0/0", rp["id"], "172.24.4.1")
    inbound, outbound = nat_rules(w, r["id"])
    assert [x["action"] for x in inbound] == ["rev_snat"]
    assert [(x["action"], x["out_ports"]) for x in outbound] == [("snat", [rp["id"]])]
    assert outbound[0]["nat_targets"][0]["addr_from"] == "172.24.4.2"
    w.check_integrity()


def test_gateway_policy_and_validation(w):
    with pytest.raises(ne.BadRequest) as e:
        w.svc.create(P1, "routers", {"external_gateway_info": {"network_id": w.net["id"]}})
    assert "not an external network" in e.value.message and e.value.status == 400
    with pytest.raises(ne.PolicyNotAuthorized):
        w.svc.create(P1, "routers", {"external_gateway_info": {
            "network_id": w.ext["id"],
            "external_fixed_ips": [{"ip_address": "172.24.4.50"}]}})
    with pytest.raises(ne.PolicyNotAuthorized):
        w.svc.create(P1, "routers", {"external_gateway_info": {
            "network_id": w.ext["id"], "enable_snat": False}})
    with pytest.raises(ne.BadRequest):
        w.svc.create(P1, "routers", {"routes": []})  # not allowed in POST
    r = w.svc.create(ADMIN, "routers", {"project_id": "p1", "external_gateway_info": {
        "network_id": w.ext["id"], "enable_snat": False,
        "external_fixed_ips": [{"ip_address": "172.24.4.50"}]}})
    assert r["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == "172.24.4.50"
    assert r["external_gateway_info"]["enable_snat"] is False
    assert nat_rules(w, r["id"]) == ([], [])  # no floating IPs, no SNAT: empty chains
    with pytest.raises(ne.IpAddressInUse):
        w.svc.create(ADMIN, "routers", {"external_gateway_info": {
            "network_id": w.ext["id"], "external_fixed_ips": [{"ip_address": "172.24.4.50"}]}})
    # the owner may echo what the admin set
    w.svc.update(P1, "routers", r["id"], {"external_gateway_info": r["external_gateway_info"]})


def test_gateway_cleared_and_changed_in_one_commit(w):
    r = w.router()
    gw = gw_port(w, r)
    r = w.svc.update(P1, "routers", r["id"], {"external_gateway_info": {}})
    assert r["external_gateway_info"] is None
    assert w.native(model.PORTS, gw["id"]) is None
    assert w.native(model.PORTS, t3.router_port_id(gw["id"])) is None
    assert [x for x in w.natives(model.ROUTES) if x["router_id"] == r["id"]] == []
    assert w.natives(model.CHAINS) == [] and w.natives(model.RULES) == []
    assert w.native(model.ROUTERS, r["id"])["inbound_filter_id"] is None
    r = w.svc.update(P1, "routers", r["id"], {"external_gateway_info": {
        "network_id": w.ext["id"]}})
    assert len(nat_rules(w, r["id"])[1]) == 1
    # enable_snat flips in place (same gateway port) - admin only
    gw = gw_port(w, r)
    w.svc.update(ADMIN, "routers", r["id"], {"external_gateway_info": {
        "network_id": w.ext["id"], "enable_snat": False}})
    assert gw_port(w, r)["id"] == gw["id"] and nat_rules(w, r["id"]) == ([], [])
    w.check_integrity()


# ---------------------------------------------------------------- interfaces
def test_interface_by_subnet(w):
    r = w.router()
    info = w.add(r, subnet_id=w.sub["id"])
    assert info["id"] == r["id"] and info["subnet_id"] == w.sub["id"]
    assert info["subnet_ids"] == [w.sub["id"]] and info["network_id"] == w.net["id"]
    assert info["project_id"] == info["tenant_id"] == "p1"
    port = w.svc.get(P1, "ports", info["port_id"])
    assert port["device_owner"] == "network:router_interface_distributed"
    assert port["device_id"] == r["id"]
    assert port["fixed_ips"] == [{"subnet_id": w.sub["id"], "ip_address": "10.0.0.1"}]
    rp = w.native(model.PORTS, t3.router_port_id(port["id"]))
    assert (rp["ip_address"], rp["prefix_len"], rp["mac"]) == ("10.0.0.1", 24,
                                                                port["mac_address"])
    assert w.native(model.PORTS, port["id"])["peer_id"] == rp["id"]
    assert rp["id"] in w.native(model.ROUTERS, r["id"])["port_ids"]
    with pytest.raises(ne.BadRequest, match="already has a port"):
        w.add(r, subnet_id=w.sub["id"])
    w.check_integrity()


def test_interface_errors_write_nothing(w):
    r = w.router()
    w.add(r, subnet_id=w.sub["id"])
    over = w.svc.create(P1, "networks", {"name": "n3"})
    sub3 = w.svc.create(P1, "subnets", {"network_id": over["id"], "cidr": "10.0.0.0/16",
                                        "ip_version": 4})
    nogw = w.svc.create(P1, "subnets", {"network_id": over["id"], "cidr": "10.9.0.0/24",
                                        "ip_version": 4, "gateway_ip": None})
    before = w.snapshot()
    with pytest.raises(ne.BadRequest, match="overlaps"):
        w.add(r, subnet_id=sub3["id"])
    with pytest.raises(ne.BadRequest, match="gateway"):
        w.add(r, subnet_id=nogw["id"])
    with pytest.raises(ne.BadRequest):
        w.add(r)
    with pytest.raises(ne.BadRequest):
        w.add(r, subnet_id=w.sub2["id"], port_id=w.vm["id"])
    with pytest.raises(ne.SubnetNotFound):
        w.add(r, subnet_id="00000000-0000-4000-8000-000000000000")
    assert w.snapshot() == before


def test_interface_by_port_and_removal_by_port(w):
    r = w.router()
    p = w.port(w.net2, fixed_ips=[{"subnet_id": w.sub2["id"], "ip_address": "10.0.1.254"}])
    info = w.add(r, port_id=p["id"])
    assert info["port_id"] == p["id"] and info["subnet_id"] == w.sub2["id"]
    port = w.svc.get(P1, "ports", p["id"])
    assert port["device_id"] == r["id"] and port["device_owner"].startswith(
        "network:router_interface")
    bp = w.native(model.PORTS, p["id"])
    assert bp["type"] == "interior" and bp["peer_id"] == t3.router_port_id(p["id"])
    assert w.native(model.PORTS, bp["peer_id"])["ip_address"] == "10.0.1.254"
    with pytest.raises(ne.PortInUse):  # already a router's
        w.add(w.router(gateway=False), port_id=p["id"])
    w.remove(r, port_id=p["id"])
    assert w.native(model.PORTS, t3.router_port_id(p["id"])) is None
    with pytest.raises(ne.PortNotFound):
        w.svc.get(P1, "ports", p["id"])
    w.check_integrity()


def test_remove_interface_not_found(w):
    r = w.router()
    with pytest.raises(ne.RouterInterfaceNotFoundForSubnet):
        w.remove(r, subnet_id=w.sub["id"])
    with pytest.raises(ne.RouterInterfaceNotFound):
        w.remove(r, port_id=w.vm["id"])


def test_router_delete_in_use_then_everything_goes(w):
    r = w.router()
    info = w.add(r, subnet_id=w.sub["id"])
    with pytest.raises(ne.RouterInUse):
        w.svc.delete(P1, "routers", r["id"])
    w.remove(r, subnet_id=w.sub["id"])
    with pytest.raises(ne.PortNotFound):
        w.svc.get(ADMIN, "ports", info["port_id"])
    w.svc.delete(P1, "routers", r["id"])
    assert w.native(model.ROUTERS, r["id"]) is None
    assert [p for p in w.natives(model.PORTS) if p["device_type"] == "router"] == []
    assert w.natives(model.ROUTES) == [] and w.natives(model.CHAINS) == []
    assert w.natives(model.RULES) == []
    assert [p for p in w.svc.list(ADMIN, "ports") if p["device_owner"].startswith(
        "network:router")] == []
    w.check_integrity()


# -------------------------------------------------------------- extra routes
def test_extra_routes(w):
    r = w.router()
    w.add(r, subnet_id=w.sub["id"])
    with pytest.raises(ne.BadRequest) as e:
        w.svc.update(P1, "routers", r["id"], {"routes": [
            {"destination": "192.168.0.0/16", "nexthop": "10.5.0.1"}]})
    assert e.value.type == "InvalidRoutes"
    r = w.svc.update(P1, "routers", r["id"], {"routes": [
        {"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]})
    assert r["routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]
    (route,) = [x for x in w.natives(model.ROUTES) if x["dst_cidr"] == "192.168.0.0/16"]
    assert route["next_hop_gateway"] == "10.0.0.254"
    assert w.native(model.PORTS, route["next_hop_port"])["ip_address"] == "10.0.0.1"
    with pytest.raises(ne.Conflict):
        w.remove(r, subnet_id=w.sub["id"])
    r = w.svc.action(P1, "routers", r["id"], "remove_extraroutes", {"router": {"routes": [
        {"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]}})["router"]
    assert r["routes"] == []
    assert [x for x in w.natives(model.ROUTES) if x["dst_cidr"] != "0.0.0.0/0"] == []
    w.remove(r, subnet_id=w.sub["id"])


# -------------------------------------------------------------- floating IPs
def fip_world(w: World):
    r = w.router()
    w.add(r, subnet_id=w.sub["id"])
    w.add(r, subnet_id=w.sub2["id"])
    return r


def test_floating_ip_allocation_association_and_rules(w):
    r = fip_world(w)
    f = w.svc.create(P1, "floatingips", {"floating_network_id": w.ext["id"]})
    assert f["floating_ip_address"] == "172.24.4.3"  # .1 gateway, .2 the router's
    assert f["status"] == "DOWN" and f["router_id"] is None and f["port_id"] is None
    f = w.svc.update(P1, "floatingips", f["id"], {"port_id": w.vm["id"]})
    assert f["router_id"] == r["id"] and f["status"] == "ACTIVE"
    assert f["fixed_ip_address"] == w.vm["fixed_ips"][0]["ip_address"]
    inbound, outbound = nat_rules(w, r["id"])
    assert [x["action"] for x in inbound] == ["rev_snat", "dnat", "rev_snat"]
    assert [(x["action"], x["nw_src"]) for x in outbound] == [
        ("rev_dnat", f"{f['fixed_ip_address']}/32"), ("snat", f"{f['fixed_ip_address']}/32"),
        ("snat", None)]
    gw = gw_port(w, r)
    assert w.native(model.PORTS, t3.router_port_id(gw["id"]))["proxy_arp"] == ["172.24.4.3"]
    # disassociate: the rules and the proxy ARP go, in the same commit
    f = w.svc.update(P1, "floatingips", f["id"], {"port_id": None})
    assert f["status"] == "DOWN" and f["router_id"] is None and f["fixed_ip_address"] is None
    assert [x["action"] for x in nat_rules(w, r["id"])[1]] == ["snat"]
    assert w.native(model.PORTS, t3.router_port_id(gw["id"]))["proxy_arp"] == []
    w.svc.update(P1, "floatingips", f["id"], {"port_id": w.vm["id"]})
    w.svc.delete(P1, "floatingips", f["id"])
    assert len(nat_rules(w, r["id"])[0]) == 1 and len(w.natives(model.RULES)) == 2
    w.check_integrity()


def test_floating_ip_errors(w):
    r = fip_world(w)
    with pytest.raises(ne.BadRequest, match="external"):
        w.svc.create(P1, "floatingips", {"floating_network_id": w.net["id"]})
    f = w.svc.create(P1, "floatingips", {"floating_network_id": w.ext["id"],
                                         "port_id": w.vm["id"]})
    with pytest.raises(ne.FloatingIPPortAlreadyAssociated):
        w.svc.create(P1, "floatingips", {"floating_network_id": w.ext["id"],
                                         "port_id": w.vm["id"]})
    with pytest.raises(ne.IpAddressInUse):
        w.svc.create(ADMIN, "floatingips", {"floating_network_id": w.ext["id"],
                                            "floating_ip_address": f["floating_ip_address"]})
    lone = w.svc.create(P1, "networks", {"name": "lone"})
    w.svc.create(P1, "subnets", {"network_id": lone["id"], "cidr": "10.7.0.0/24",
                                 "ip_version": 4})
    p = w.port(lone)
    g = w.svc.create(P1, "floatingips", {"floating_network_id": w.ext["id"]})
    with pytest.raises(ne.ExternalGatewayForFloatingIPNotFound):
        w.svc.update(P1, "floatingips", g["id"], {"port_id": p["id"]})
    with pytest.raises(ne.BadRequest):
        w.svc.update(P1, "floatingips", g["id"], {"port_id": w.vm2["id"],
                                                  "fixed_ip_address": "10.0.1.200"})
    with pytest.raises(ne.FloatingIPNotFound):
        w.svc.get(P2, "floatingips", f["id"])
    with pytest.raises(ne.PortNotFound):  # another project's port
        w.svc.create(P2, "floatingips", {"floating_network_id": w.ext["id"],
                                         "port_id": w.vm2["id"]})
    # the router's interface and gateway are needed by the floating IP
    with pytest.raises(ne.RouterInterfaceInUseByFloatingIP):
        w.remove(r, subnet_id=w.sub["id"])
    with pytest.raises(ne.Conflict):
        w.svc.update(P1, "routers", r["id"], {"external_gateway_info": None})
    w.check_integrity()


def test_deleting_a_port_disassociates_its_floating_ip(w):
    r = fip_world(w)
    p = w.port(w.net)
    f = w.svc.create(P1, "floatingips", {"floating_network_id": w.ext["id"],
                                         "port_id": p["id"]})
    assert len(nat_rules(w, r["id"])[0]) == 3
    w.svc.delete(P1, "ports", p["id"])
    f = w.svc.get(P1, "floatingips", f["id"])
    assert f["port_id"] is None and f["status"] == "DOWN" and f["router_id"] is None
    assert len(nat_rules(w, r["id"])[0]) == 1
    w.check_integrity()


# ------------------------------------------------- packets through the result
def _vm_packet(w, port, dst, sport=40000, eth_dst=None):
    return Packet(in_port=port["id"], eth_src=port["mac_address"], eth_dst=eth_dst,
                  ip_src=port["fixed_ips"][0]["ip_address"], ip_dst=dst,
                  ip_proto=PROTO_TCP, ip_ttl=64, tp_src=sport, tp_dst=80)


def test_the_simulation_snats_what_leaves_and_floats_what_has_a_floating_ip(w):
    r = fip_world(w)
    gwp = gw_port(w, r)
    gw_rp = t3.router_port_id(gwp["id"])
    ifaces = {p["fixed_ips"][0]["subnet_id"]: p for p in w.svc.list(P1, "ports")
              if p["device_owner"].startswith("network:router_interface")}
    f = w.svc.create(P1, "floatingips", {"floating_network_id": w.ext["id"],
                                         "port_id": w.vm2["id"]})
    # the outside host: the external subnet's gateway 172.24.4.1 (the router's ARP
    # entry), behind a port of the external network
    outside = w.port(w.ext, ctx=ADMIN, mac_address=OUTSIDE_MAC)
    view = w.view()
    view.macs[(w.ext["id"], OUTSIDE_MAC)] = outside["id"]
    view.arps[(r["id"], "172.24.4.1")] = (OUTSIDE_MAC, NOW)
    vm_ip = w.vm["fixed_ips"][0]["ip_address"]
    view.arps[(r["id"], vm_ip)] = (w.vm["mac_address"], NOW)
    state = FlowTables(NatAllocator(MemoryLeaser().for_host("h1")))

    def run(pkt):
        res = simulate(view, pkt, NOW, state.view(NOW))
        if res.nat_wants and state.lease(res.nat_wants):
            res = simulate(view, pkt, NOW, state.view(NOW))
        assert state.commit_nat(res.nat_allocs, res.nat, NOW)
        return res, {x.field: x.value for x in res.rewrites}

    # vm (no floating IP) -> the outside: SNAT to the gateway address
    res, rw = run(_vm_packet(w, w.vm, "8.8.8.8", eth_dst=ifaces[w.sub["id"]]["mac_address"]))
    assert res.out_ports == (outside["id"],)
    assert rw["ip_src"] == "172.24.4.2" and 1024 <= rw["tp_src"] <= 65535
    # vm2 (floating IP) -> the outside: leaves as its floating IP
    res, rw = run(_vm_packet(w, w.vm2, "8.8.8.8",
                             eth_dst=ifaces[w.sub2["id"]]["mac_address"]))
    assert res.out_ports == (outside["id"],) and rw["ip_src"] == f["floating_ip_address"]
    # east-west between the router's subnets: routed, never translated
    view.arps[(r["id"], w.vm2["fixed_ips"][0]["ip_address"])] = (w.vm2["mac_address"], NOW)
    res, rw = run(_vm_packet(w, w.vm, w.vm2["fixed_ips"][0]["ip_address"], sport=40001,
                             eth_dst=ifaces[w.sub["id"]]["mac_address"]))
    assert res.out_ports == (w.vm2["id"],) and "ip_src" not in rw and "ip_dst" not in rw
    # the outside ARPs for the floating IP: the gateway port answers with its MAC
    res = simulate(view, Packet(in_port=outside["id"], eth_src=OUTSIDE_MAC,
                                eth_dst="ff:ff:ff:ff:ff:ff", eth_type=ETH_ARP, arp_op=1,
                                arp_sha=OUTSIDE_MAC, arp_spa="172.24.4.1",
                                arp_tpa=f["floating_ip_address"]), NOW)
    (reply,) = [g for g in res.generated if g.kind == "arp_reply"]
    assert reply.out_port == gw_rp and reply.get("eth_src") == gwp["mac_address"]
    assert reply.get("ip_src") == f["floating_ip_address"]
    # the outside connects to the floating IP: DNAT to vm2
    view.arps[(r["id"], w.vm2["fixed_ips"][0]["ip_address"])] = (w.vm2["mac_address"], NOW)
    pkt = Packet(in_port=outside["id"], eth_src=OUTSIDE_MAC, eth_dst=gwp["mac_address"],
                 ip_src="172.24.4.1", ip_dst=f["floating_ip_address"], ip_proto=PROTO_TCP,
                 ip_ttl=64, tp_src=5555, tp_dst=22)
    res, rw = run(pkt)
    assert res.out_ports == (w.vm2["id"],)
    assert rw["ip_dst"] == w.vm2["fixed_ips"][0]["ip_address"]
