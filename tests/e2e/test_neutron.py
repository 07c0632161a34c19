"""Acceptance of issue 11: the UNMODIFIED ``openstack`` CLI logs in to a real
Keystone, finds midoflow in the catalog and builds the seed's Neutron DVR
walk-through (external network, two project networks, a distributed router
with a gateway and two interfaces, a security group, three ports bound to
three hosts, a floating IP); VMs plugged by ``iface-id`` carry real traffic
through it (east-west, SNAT, floating IP, security-group rule changes live);
a second project with the same CIDRs sees and reaches nothing of the first;
then everything is deleted in reverse and the native store holds nothing.

The tests share one cloud and run in order: a failure names the step."""

from __future__ import annotations

import re
import time

import pytest

from midoflow.service.security import sg_ids
from tests.helpers import LivePing, wait_until
from topologies.cloud import ping, whoami, whoami_server
from topologies.openstack import OpenStackLab, SeedWalkthrough, fixed_ip

pytestmark = pytest.mark.e2e_neutron

NOT_FOUND = re.compile(r"not found|No \w+ found|404", re.I)
FORBIDDEN = re.compile(r"403|forbidden|not authorized|policy", re.I)
IN_USE = re.compile(r"409|in use|conflict", re.I)


@pytest.fixture(scope="module")
def lab(cloud_factory, keystone_server):
    mc = cloud_factory(3)
    with OpenStackLab(mc, keystone_server) as lab:
        yield lab


@pytest.fixture(scope="module")
def seed(lab):
    return SeedWalkthrough(lab)


@pytest.fixture(scope="module")
def p2(lab):
    return {}  # the second project's objects, filled by the isolation test


def _tcp_ok(vm, ip: str, port: int, timeout: float = 0.3) -> bool:
    """One TCP connection from ``vm`` succeeds (a short timeout: a dropped SYN
    costs 0.3 s, not whoami's 5)."""
    code = (f"import socket; s=socket.create_connection(('{ip}', {port}), timeout={timeout});"
            "print('ok', s.recv(64).decode().strip())")
    return vm.cmd(f'python3 -c "{code}" 2>/dev/null').startswith("ok")


def test_external_network_by_admin(seed):
    seed.external_network()
    net, sub = seed.out["ext-net"], seed.out["ext-subnet"]
    assert net["name"] == "ext-net" and net["router:external"] is True, net
    assert net["provider:network_type"] == "vxlan" and net["mtu"] == 1450, net
    assert net["status"] == "ACTIVE" and net["admin_state_up"] is True, net
    assert sub["network_id"] == net["id"] and sub["cidr"] == "172.24.4.0/24", sub
    assert sub["gateway_ip"] == "172.24.4.1" and sub["enable_dhcp"] is False, sub
    assert sub["allocation_pools"] == [{"start": "172.24.4.100", "end": "172.24.4.200"}], sub


def test_project_networks_and_subnets(seed):
    seed.project_networks()
    projects = set()
    for net, sub, cidr, gw in seed.NETS:
        n, s = seed.out[net], seed.out[sub]
        assert n["name"] == net and n["mtu"] == 1450 and n["status"] == "ACTIVE", n
        assert n["router:external"] is False and n["shared"] is False, n
        assert s["network_id"] == n["id"] and s["cidr"] == cidr and s["gateway_ip"] == gw, s
        assert s["enable_dhcp"] is True and s["ip_version"] == 4, s
        base = cidr.rsplit(".", 1)[0]
        assert s["allocation_pools"] == [{"start": f"{base}.2", "end": f"{base}.254"}], s
        projects |= {n["project_id"], s["project_id"]}
    assert len(projects) == 1 and seed.out["ext-net"]["project_id"] not in projects


def test_router_with_gateway_and_interfaces(seed, lab):
    seed.router()
    r = seed.out["demo-router"]
    assert r["name"] == "demo-router" and r["status"] == "ACTIVE", r
    # the seed's `router-create --distributed`, by admin for the project (the
    # attribute is admin-only, as in Neutron's policy): the project owns it
    assert r["distributed"] is True, r
    assert r["project_id"] == seed.out["demo-net"]["project_id"], r
    gw = r["external_gateway_info"]
    assert gw["network_id"] == seed.out["ext-net"]["id"] and gw["enable_snat"] is True, gw
    (ext_ip,) = gw["external_fixed_ips"]
    assert ext_ip["subnet_id"] == seed.out["ext-subnet"]["id"], gw
    last = int(ext_ip["ip_address"].rsplit(".", 1)[1])
    assert ext_ip["ip_address"].startswith("172.24.4.") and 100 <= last <= 200, gw
    # the interfaces (router show lists the router's ports): each subnet's gateway
    subnets = {seed.out[sub]["id"]: gw for _, sub, _, gw in seed.NETS}
    assert {i["subnet_id"]: i["ip_address"] for i in r["interfaces_info"]} == subnets, r


def test_security_group_and_rules(seed):
    seed.security_group()
    sg = seed.out["demo-sg"]
    assert sg["name"] == "demo-sg", sg
    # Neutron gives a new group its egress rules (IPv4 and IPv6), nothing inbound
    assert sorted((r["direction"], r["ethertype"]) for r in sg["rules"]) == [
        ("egress", "IPv4"), ("egress", "IPv6")], sg["rules"]
    ssh, icmp = seed.out["rule-ssh"], seed.out["rule-icmp"]
    assert ssh["security_group_id"] == sg["id"] == icmp["security_group_id"]
    assert (ssh["direction"], ssh["protocol"], ssh["port_range_min"], ssh["port_range_max"]) \
        == ("ingress", "tcp", 22, 22), ssh
    assert (icmp["direction"], icmp["protocol"], icmp["ether_type"]) == \
        ("ingress", "icmp", "IPv4"), icmp


def test_ports_bound_to_three_hosts(seed, lab):
    seed.ports()
    # binding is admin's (or Nova's): the project's user neither sets nor sees it
    own = lab.os("p1user", "port", "show", "vm1-port")
    assert own["id"] == seed.out["vm1-port"]["id"] and not own.get("binding_host_id"), own
    (refused,) = lab.refusals([("p1user", ("port", "set", "--host", seed.hostname(2),
                                            "vm1-port"))])
    assert "disallowed by policy" in refused.stderr, refused.stderr
    sg = seed.out["demo-sg"]["id"]
    macs = set()
    for name, net, ip, host in seed.PORTS:
        p = seed.out[name]
        assert p["name"] == name and p["network_id"] == seed.out[seed.NETS[net][0]]["id"], p
        assert p["fixed_ips"] == [{"subnet_id": seed.out[seed.NETS[net][1]]["id"],
                                   "ip_address": ip}], p
        assert p["security_group_ids"] == [sg], p
        assert p["binding_host_id"] == seed.hostname(host), p
        assert p["binding_vif_type"] == "ovs" and p["binding_vnic_type"] == "normal", p
        assert p["port_security_enabled"] is True, p
        assert re.fullmatch(r"fa:16:3e(:[0-9a-f]{2}){3}", p["mac_address"]), p
        macs.add(p["mac_address"])
    assert len(macs) == 3


def test_floating_ip(seed):
    seed.floating_ip()
    fip = seed.out["fip"]
    last = int(fip["floating_ip_address"].rsplit(".", 1)[1])
    assert fip["floating_ip_address"].startswith("172.24.4.") and 100 <= last <= 200, fip
    assert fip["floating_network_id"] == seed.out["ext-net"]["id"], fip
    assert fip["port_id"] == seed.out["vm1-port"]["id"], fip
    assert fip["fixed_ip_address"] == "10.0.0.11", fip
    assert fip["router_id"] == seed.out["demo-router"]["id"], fip
    assert fip["status"] == "ACTIVE", fip
    gw = seed.out["demo-router"]["external_gateway_info"]["external_fixed_ips"][0]
    assert fip["floating_ip_address"] != gw["ip_address"]


def test_vms_plugged_by_iface_id_reach_each_other(seed, lab):
    seed.internet_port()
    assert fixed_ip(seed.out["internet-port"]) == seed.INTERNET_IP
    seed.plug_vms()
    # the ports are ACTIVE once their host's agent bound them
    ports = lab.os("p1user", "port", "list", "--network", "demo-net")
    status = {p["Name"]: p["Status"] for p in ports if p["Name"]}  # + the router's port
    assert status == {"vm1-port": "ACTIVE", "vm2-port": "ACTIVE"}, ports
    vm1 = seed.vms["vm1"]
    assert ping(vm1, "10.0.0.12", count=3) == (3, 3), "vm1 (h1) -> vm2 (h2), same subnet"
    ping(vm1, "10.0.1.13", count=1)  # the router resolves vm3 on the way
    out = vm1.cmd("ping -c 3 -i 0.2 -W 1 10.0.1.13")
    assert " 3 received" in out and "ttl=63" in out, f"vm1 -> vm3 through the router: {out}"


def test_snat_and_floating_ip(seed):
    inet, vm1, vm2, vm3 = (seed.vms[n] for n in ("internet", "vm1", "vm2", "vm3"))
    gw_ip = seed.out["demo-router"]["external_gateway_info"]["external_fixed_ips"][0][
        "ip_address"]
    fip = seed.out["fip"]["floating_ip_address"]
    server = whoami_server(inet, 8080)
    try:
        for vm in (vm2, vm3):  # a server beyond the external gateway: routed, SNAT
            seen = wait_until(lambda vm=vm: (w := whoami(vm, seed.SERVER_IP, 8080)).startswith(
                "172.24.4.") and w, 10, f"{vm.vm_name} to reach the internet")
            assert seen.startswith(gw_ip + ":"), f"{vm.vm_name} seen as {seen}, not SNAT"
        seen = whoami(vm1, seed.SERVER_IP, 8080)
        assert seen.startswith(fip + ":"), f"vm1's own traffic must leave as {fip}: {seen}"
    finally:
        server.kill()
    server = whoami_server(vm1, 22)  # demo-sg admits tcp 22
    try:
        seen = wait_until(lambda: (w := whoami(inet, fip, 22)).startswith("172.24.4.") and w,
                          10, "the internet to reach vm1 at its floating IP")
        assert seen.startswith(seed.INTERNET_IP + ":"), seen
    finally:
        server.kill()


def test_security_group_rule_changes_act_within_a_second(seed, lab):
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    server = whoami_server(vm1, 8000)
    try:
        assert not _tcp_ok(vm2, "10.0.0.11", 8000), "tcp 8000 passed before any rule"
        rule = lab.os("p1user", "security", "group", "rule", "create", "--protocol", "tcp",
                      "--dst-port", "8000", "demo-sg")
        done = time.monotonic()
        wait_until(lambda: _tcp_ok(vm2, "10.0.0.11", 8000), 5, "tcp 8000 to be admitted")
        admitted = time.monotonic() - done
        print(f"tcp 8000 admitted {admitted:.2f} s after `rule create` returned")
        assert admitted <= 1.0, f"the new rule took {admitted:.2f} s to admit traffic"
    finally:
        server.kill()
    assert rule["port_range_min"] == 8000
    pinger = LivePing(vm2, "10.0.0.11", count=160, interval=0.05)
    lab.os("p1user", "security", "group", "rule", "delete", seed.out["rule-icmp"]["id"])
    deleted = time.time()
    times = pinger.reply_times()
    print(f"last ping reply {max(times) - deleted:+.2f} s after `rule delete` returned")
    late = [t - deleted for t in times if t > deleted + 1.0]
    assert not late, f"pings still passed {max(late):.2f} s after the rule was deleted"
    assert ping(vm2, "10.0.0.11", count=2)[1] == 0
    # put ICMP back for the isolation checks
    seed.out["rule-icmp"] = lab.os("p1user", "security", "group", "rule", "create",
                                   "--protocol", "icmp", "demo-sg")
    wait_until(lambda: ping(vm2, "10.0.0.11", count=1)[1] == 1, 5, "ping admitted again")


def test_second_project_is_isolated(seed, lab, p2):
    p1net, p1router = seed.out["demo-net"]["id"], seed.out["demo-router"]["id"]
    net, router = lab.parallel([("p2user", ("network", "create", "p2-net")),
                                ("p2user", ("router", "create", "p2-router"))])
    p2.update(net=net, router=router)
    sub = lab.os("p2user", "subnet", "create", "--network", "p2-net", "--subnet-range",
                 "10.0.0.0/24", "p2-subnet")
    assert sub["cidr"] == "10.0.0.0/24" and sub["project_id"] != \
        seed.out["demo-subnet"]["project_id"], sub
    p2["subnet"] = sub
    lab.os("p2user", "router", "add", "subnet", "p2-router", "p2-subnet")
    p2["interface"] = True
    made = (("p2vm1-port", "10.0.0.11", 3), ("p2vm2-port", "10.0.0.12", 1))
    ports = lab.parallel([("p2user", ("port", "create", "--network", "p2-net", "--fixed-ip",
                                      f"ip-address={ip}", name)) for name, ip, _ in made])
    lab.parallel([("admin", ("port", "set", "--host", seed.hostname(h), name))
                  for name, _, h in made])
    p2["ports"] = ports
    nets, routers, plist = lab.parallel([("p2user", ("network", "list")),
                                         ("p2user", ("router", "list")),
                                         ("p2user", ("port", "list"))])
    assert {n["Name"] for n in nets} == {"p2-net", "ext-net"}, nets
    assert {r["Name"] for r in routers} == {"p2-router"}, routers
    p1_ports = {seed.out[name]["id"] for name, _, _, _ in seed.PORTS}
    assert not p1_ports & {p["ID"] for p in plist}, plist
    show, steal, ext, spy, fip = lab.refusals([
        ("p2user", ("network", "show", p1net)),
        ("p2user", ("router", "set", "--name", "stolen", p1router)),
        ("p2user", ("network", "create", "--external", "p2-ext")),
        ("p2user", ("port", "create", "--network", p1net, "spy-port")),
        ("p2user", ("floating", "ip", "show", seed.out["fip"]["id"]))])
    for err in (show, steal, spy, fip):
        assert NOT_FOUND.search(err.stderr), err
    assert FORBIDDEN.search(ext.stderr), ext
    # same addresses, other project: p2's VMs reach only each other
    a = lab.plug(3, "p2vm1", ports[0], "10.0.0.0/24", "10.0.0.1")
    b = lab.plug(1, "p2vm2", ports[1], "10.0.0.0/24", "10.0.0.1")
    assert ping(a, "10.0.0.12", count=3) == (3, 3), "p2vm1 -> p2vm2 (default group)"
    neigh = a.cmd("ip neigh show 10.0.0.12")
    assert b.vm_mac in neigh and seed.vms["vm2"].vm_mac not in neigh, neigh
    assert ping(a, "10.0.1.13", count=2)[1] == 0, "p2 reached p1's vm3 behind p1's router"
    neigh = seed.vms["vm1"].cmd("ping -c 1 -W 1 10.0.0.12 >/dev/null; ip neigh show 10.0.0.12")
    assert seed.vms["vm2"].vm_mac in neigh and b.vm_mac not in neigh, neigh


def test_out_of_order_deletes_conflict(seed, lab):
    net, router, subnet = lab.refusals([
        ("p1user", ("network", "delete", "demo-net")),
        ("p1user", ("router", "delete", "demo-router")),
        ("p1user", ("subnet", "delete", "demo-subnet"))])
    for err in (net, router, subnet):
        assert IN_USE.search(err.stderr), err
    assert "port" in net.stderr.lower(), net.stderr  # NetworkInUse names the ports
    # all three are still there
    lab.parallel([("p1user", ("network", "show", "demo-net")),
                  ("p1user", ("router", "show", "demo-router")),
                  ("p1user", ("subnet", "show", "demo-subnet"))])


def test_teardown_in_reverse_leaves_nothing(seed, lab, p2):
    fip = seed.out["fip"]["id"]
    lab.os("p1user", "floating", "ip", "unset", "--port", fip)
    shown = lab.os("p1user", "floating", "ip", "show", fip)
    assert shown["port_id"] is None and shown["fixed_ip_address"] is None, shown
    assert shown["status"] == "DOWN", shown
    lab.os("p1user", "floating", "ip", "delete", fip)
    for vm in list(lab.mc.cloud.vms):
        lab.mc.cloud.remove_vm(vm)
    # p2's objects: those the isolation test got to make
    p2_ports = [p["id"] for p in p2.get("ports", [])]
    p2_if = [("p2user", ("router", "remove", "subnet", "p2-router", "p2-subnet"))] \
        if p2.get("interface") else []
    p2_router = [("p2user", ("router", "delete", "p2-router"))] if p2.get("router") else []
    p2_sub = [("p2user", ("subnet", "delete", "p2-subnet"))] if p2.get("subnet") else []
    p2_net = [("p2user", ("network", "delete", "p2-net"))] if p2.get("net") else []
    lab.parallel([
        ("p1user", ("port", "delete", "vm1-port", "vm2-port", "vm3-port")),
        ("admin", ("port", "delete", "internet-port")),
        *([("p2user", ("port", "delete", *p2_ports))] if p2_ports else [])])
    lab.parallel([("p1user", ("router", "remove", "subnet", "demo-router", "demo-subnet")),
                  *p2_if])
    lab.os("p1user", "router", "remove", "subnet", "demo-router", "demo-subnet2")
    lab.os("p1user", "router", "unset", "--external-gateway", "demo-router")
    r = lab.os("p1user", "router", "show", "demo-router")
    assert not r["external_gateway_info"] and not r["interfaces_info"], r
    lab.parallel([("p1user", ("router", "delete", "demo-router")),
                  ("p1user", ("security", "group", "delete", "demo-sg")), *p2_router])
    lab.parallel([("p1user", ("subnet", "delete", "demo-subnet", "demo-subnet2")),
                  ("admin", ("subnet", "delete", "ext-subnet")), *p2_sub])
    lab.parallel([("p1user", ("network", "delete", "demo-net", "demo-net2")),
                  ("admin", ("network", "delete", "ext-net")), *p2_net])
    nets, groups = lab.parallel([("admin", ("network", "list")),
                                 ("admin", ("security", "group", "list"))])
    assert nets == [], nets
    assert {g["Name"] for g in groups} <= {"default"}, groups
    store = lab.mc.store
    left = {k: [o for o, _version in store.list(k)] for k in (
        "ports", "bridges", "routers", "routes", "chains", "rules")}
    for c in ("networks", "subnets", "ports", "routers", "floatingips"):
        assert store.list(f"neutron.{c}") == [], c
    # what remains: the projects' default groups (Neutron keeps them), each with
    # its two generated chains and their rules; nothing else
    native_groups = [g for g, _version in store.list("security_groups")]
    assert {g["id"] for g in native_groups} == {g["ID"] for g in groups}
    derived = [sg_ids(g["id"]) for g in native_groups]
    group_chains = {d[k] for d in derived for k in ("ingress_chain_id", "egress_chain_id")}
    left["chains"] = [c for c in left["chains"] if c["id"] not in group_chains]
    left["rules"] = [r for r in left["rules"] if r["chain_id"] not in group_chains]
    left["ip_addr_groups"] = [a for a, _version in store.list("ip_addr_groups")
                              if a["id"] not in {d["ip_addr_group_id"] for d in derived}]
    assert not any(left.values()), {k: [o.get("name") or o["id"] for o in v]
                                    for k, v in left.items() if v}
