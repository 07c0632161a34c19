"""Real traffic through what the Neutron service made, with no client in
between: an external network and a project network joined by a distributed
router with a gateway, three VMs on three hosts (bound by their Neutron port
ids), an "internet" namespace on the external network and a floating IP.
East-west and to the router, SNAT to the gateway address, the floating IP
both ways (the gateway port answers ARP for it), and its disassociation; an
address given to a new port (new MAC) reached through the router at once."""

from __future__ import annotations

import contextlib

import pytest

from midoflow.neutron.context import Context
from midoflow.neutron.service import NeutronService
from tests.helpers import wait_until
from topologies.cloud import ping, whoami, whoami_server

pytestmark = pytest.mark.e2e_neutron

ADMIN = Context.admin()
P1 = Context(project_id="p1", user_id="u1", roles=("member",))

NOVA = Context(project_id="service", user_id="nova", roles=("service",))


def bound_port(svc, body: dict, host_id: str) -> dict:
    """A port the project creates, bound to a host by Nova (binding:host_id is
    admin's or the service role's in Neutron's policy)."""
    port = svc.create(P1, "ports", body)
    return svc.update(NOVA, "ports", port["id"], {"binding:host_id": host_id})

INTERNET = "172.24.4.1"  # the external subnet's gateway: the router's next hop


@pytest.fixture(scope="module")
def world(cloud_factory):
    mc = cloud_factory(3)
    svc = NeutronService(mc.store)
    hid = [mc.host_ids[h.name] for h in mc.hosts]
    ext = svc.create(ADMIN, "networks", {"name": "public", "router:external": True})
    ext_sub = svc.create(ADMIN, "subnets", {"network_id": ext["id"], "ip_version": 4,
                                            "cidr": "172.24.4.0/24", "gateway_ip": INTERNET})
    # the ports code keeps a subnet's gateway address for routers: the internet
    # namespace's port has .254 and the namespace also holds .1 (no port security)
    inet_port = svc.create(ADMIN, "ports", {
        "network_id": ext["id"], "name": "internet", "port_security_enabled": False,
        "fixed_ips": [{"subnet_id": ext_sub["id"], "ip_address": "172.24.4.254"}],
        "binding:host_id": hid[0]})
    net = svc.create(P1, "networks", {"name": "private"})
    sub = svc.create(P1, "subnets", {"network_id": net["id"], "ip_version": 4,
                                     "cidr": "10.0.0.0/24"})
    router = svc.create(P1, "routers", {"name": "r1", "external_gateway_info": {
        "network_id": ext["id"]}})
    svc.action(P1, "routers", router["id"], "add_router_interface", {"subnet_id": sub["id"]})
    default = next(g for g in svc.list(P1, "security-groups") if g["name"] == "default")
    for proto in ("icmp", "tcp"):
        svc.create(P1, "security-group-rules", {
            "security_group_id": default["id"], "direction": "ingress", "ethertype": "IPv4",
            "protocol": proto, "remote_ip_prefix": "0.0.0.0/0"})
    ports, vms = [], []
    for i, h in enumerate(mc.hosts):
        p = bound_port(svc, {"network_id": net["id"], "name": f"vm{i + 1}"}, hid[i])
        vm = mc.cloud.add_vm(h, f"vm{i + 1}", f"{p['fixed_ips'][0]['ip_address']}/24",
                             p["mac_address"], iface_id=p["id"])
        vm.cmd("ip route add default via 10.0.0.1")
        ports.append(p)
        vms.append(vm)
    inet = mc.cloud.add_vm(mc.hosts[0], "internet", "172.24.4.254/24",
                           inet_port["mac_address"], iface_id=inet_port["id"])
    inet.cmd(f"ip addr add {INTERNET}/24 dev {inet.defaultIntf()}")
    fip = svc.create(P1, "floatingips", {"floating_network_id": ext["id"],
                                         "port_id": ports[1]["id"]})
    for p, h in zip([*ports, inet_port], [*mc.hosts, mc.hosts[0]], strict=True):
        mc.wait_port(p["id"], h)
    gw_ip = svc.get(P1, "routers", router["id"])["external_gateway_info"][
        "external_fixed_ips"][0]["ip_address"]
    return {"svc": svc, "vms": vms, "ports": ports, "inet": inet, "fip": fip,
            "gw_ip": gw_ip, "mc": mc, "hid": hid, "net_id": net["id"],
            "router_id": router["id"]}


def _ip(port) -> str:
    return port["fixed_ips"][0]["ip_address"]


def test_east_west_across_hosts_and_to_the_router(world):
    vms, ports = world["vms"], world["ports"]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert ping(vms[i], _ip(ports[j]), count=3)[1] >= 2, f"vm{i + 1} -> vm{j + 1}"
    assert ping(vms[2], "10.0.0.1", count=3)[1] >= 2


def test_snat_to_the_gateway_address_and_the_floating_ip_outbound(world):
    vms, gw_ip, fip = world["vms"], world["gw_ip"], world["fip"]["floating_ip_address"]
    srv = whoami_server(world["inet"], 8080)
    try:
        seen = [whoami(vms[i], INTERNET, 8080) for i in (0, 2)]
        assert all(s.startswith(gw_ip + ":") for s in seen), seen
        assert len(set(seen)) == 2  # one address, distinct ports
        own = whoami(vms[1], INTERNET, 8080)
        assert own.startswith(fip + ":"), own
    finally:
        with contextlib.suppress(Exception):
            srv.kill()


def test_floating_ip_inbound_then_disassociated(world):
    inet, vms, fip = world["inet"], world["vms"], world["fip"]
    addr = fip["floating_ip_address"]
    inet.cmd(f"ip neigh flush dev {inet.defaultIntf()}")
    assert ping(inet, addr, count=3)[1] >= 2  # ARP for it answered by the gateway port
    srv = whoami_server(vms[1], 8081)
    try:
        seen = whoami(inet, addr, 8081)
        assert seen.startswith("172.24.4.254:"), seen  # DNAT only: the source is kept
    finally:
        with contextlib.suppress(Exception):
            srv.kill()
    world["svc"].update(P1, "floatingips", fip["id"], {"port_id": None})
    wait_until(lambda: ping(inet, addr, count=1, timeout=0.5)[1] == 0, 5,
               "the floating IP to stop answering once disassociated")
    assert ping(inet, addr, count=3)[1] == 0


def test_an_address_reused_by_a_new_port_is_reached_at_once(world):
    """Nova's everyday case: a VM's port is deleted and the next port created
    on the network gets the same address (Neutron hands out the lowest free
    one) with a new MAC. The router must not keep sending to the old MAC:
    pinged from another subnet through the router, the new VM answers within
    2 s (the ARP entry the router had learned is gone)."""
    svc, mc = world["svc"], world["mc"]
    net_id, router_id = world["net_id"], world["router_id"]
    net2 = svc.create(P1, "networks", {"name": "private2"})
    sub2 = svc.create(P1, "subnets", {"network_id": net2["id"], "ip_version": 4,
                                      "cidr": "10.0.1.0/24"})
    svc.action(P1, "routers", router_id, "add_router_interface", {"subnet_id": sub2["id"]})
    h0, h2 = mc.hosts[0], mc.hosts[2]
    src_port = bound_port(svc, {"network_id": net2["id"], "name": "vm4"}, world["hid"][0])
    src = mc.cloud.add_vm(h0, "vm4", f"{_ip(src_port)}/24", src_port["mac_address"],
                          iface_id=src_port["id"])
    src.cmd("ip route add default via 10.0.1.1")
    mc.wait_port(src_port["id"], h0)
    old_vm, old = world["vms"][2], world["ports"][2]
    addr = _ip(old)
    # the router learns the address's MAC from the traffic
    wait_until(lambda: ping(src, addr, count=1, timeout=0.5)[1] == 1, 10,
               f"vm4 to reach vm3 ({addr}) through the router")
    mc.cloud.remove_vm(old_vm)
    svc.delete(P1, "ports", old["id"])
    new = bound_port(svc, {"network_id": net_id, "name": "vm3b",
                                   "fixed_ips": [{"ip_address": addr}]}, world["hid"][2])
    assert _ip(new) == addr and new["mac_address"] != old["mac_address"]
    vm = mc.cloud.add_vm(h2, "vm3b", f"{addr}/24", new["mac_address"], iface_id=new["id"])
    vm.cmd("ip route add default via 10.0.0.1")
    world["vms"][2], world["ports"][2] = vm, new
    mc.wait_port(new["id"], h2)
    wait_until(lambda: ping(src, addr, count=1, timeout=0.5)[1] == 1, 2,
               f"vm4 to reach the new port's VM at the reused address {addr}")
