"""Metadata from the agent of the VM's host (issue 12, item 2): two hosts,
two tenants with the same 10.0.0.0/24, VMs with static addresses and a
default route via their router; the agents forward to a Nova stand-in in the
root namespace (it checks the signature), or answer from the built-in tree
when no upstream is configured."""

from __future__ import annotations

import json
import os
import sys

import pytest

from midoflow.metadata import signature
from tests.helpers import wait_until
from topologies.metadata import NovaStandIn, measure_requests

pytestmark = pytest.mark.e2e_services

SECRET = "shared-s3cret"
URL = "http://169.254.169.254/openstack/latest/meta_data.json"
# name: (host index, tenant, ip, mac)
VMS = {
    "a1": (1, "ta", "10.0.0.5", "02:00:00:0a:00:05"),
    "b1": (1, "tb", "10.0.0.5", "02:00:00:0b:00:05"),  # a1's IP, a1's host
    "a2": (2, "ta", "10.0.0.6", "02:00:00:0a:00:06"),
    "b2": (1, "tb", "10.0.0.6", "02:00:00:0b:00:06"),  # a2's IP, the other host
}


def instance(name: str) -> str:
    return f"inst-{name}"


def curl(vm, url: str = URL, timeout: int = 5) -> tuple[int, str]:
    """(HTTP status, body) from ``vm``; status 0 when nothing answered."""
    out = vm.cmd(f"curl -s -m {timeout} -w '\\n%{{http_code}}' {url}").replace("\r", "")
    body, _, code = out.rstrip().rpartition("\n")
    return (int(code) if code.strip().isdigit() else 0), body


@pytest.fixture(scope="module")
def nova():
    with NovaStandIn(SECRET, {instance(n): n for n in VMS}) as s:
        yield s


@pytest.fixture(scope="module")
def cloud(cloud_factory, nova):
    mc = cloud_factory(2, agent_options={"metadata_upstream": nova.url,
                                         "metadata_secret": SECRET})
    vms = {}
    for tenant in ("ta", "tb"):
        r = mc.router(f"{tenant}-r", tenant)
        b = mc.bridge(f"{tenant}-net", tenant)
        mc.attach(r, b, "10.0.0.1/24", f"02:aa:00:00:00:{1 if tenant == 'ta' else 2:02x}")
        for name, (hi, t, ip, vmac) in VMS.items():
            if t != tenant:
                continue
            pid = mc.api.request("POST", f"/bridges/{b}/ports", {
                "name": name, "mac": vmac, "fixed_ips": [ip], "instance_id": instance(name),
                "tenant_id": t})["id"]
            h = mc.cloud.host(hi)
            vm = mc.cloud.add_vm(h, name, f"{ip}/24", vmac, iface_id=pid)
            vm.port_id = pid
            mc.wait_port(pid, h)
            vm.cmd("ip route add default via 10.0.0.1")
            vms[name] = vm
    mc.vms = vms
    return mc


def test_each_vm_gets_its_own_instance(cloud, nova):
    for name, vm in cloud.vms.items():
        status, body = wait_until(lambda vm=vm: (r := curl(vm))[0] == 200 and r, 20,
                                  f"{name}'s metadata through its agent")
        doc = json.loads(body)
        assert doc["uuid"] == instance(name) and doc["name"] == name
        assert doc["project_id"] == VMS[name][1] and doc["from"] == "nova"


def test_nova_saw_neutron_headers(cloud, nova):
    vm = cloud.vms["b2"]
    before = len(nova.seen)
    assert curl(vm)[0] == 200
    path, h = nova.seen[before]
    assert path == "/openstack/latest/meta_data.json"
    assert h["X-Instance-ID"] == instance("b2") and h["X-Tenant-ID"] == "tb"
    assert h["X-Forwarded-For"] == "10.0.0.6"
    assert signature.valid(SECRET, instance("b2"), h["X-Instance-ID-Signature"])


def test_on_link_route_uses_the_agents_arp_answer(cloud):
    vm = cloud.vms["a2"]
    vm.cmd("ip neigh flush all; ip route add 169.254.169.254 dev eth0")
    try:
        status, body = curl(vm)
        assert status == 200 and json.loads(body)["uuid"] == instance("a2")
        assert "0a:a9:fe:a9:fe:fe" in vm.cmd("ip neigh show 169.254.169.254")
    finally:
        vm.cmd("ip route del 169.254.169.254 dev eth0")


def test_wrong_secret_is_an_error_not_a_hang(cloud, nova):
    nova.set_secret("not-the-agents")
    try:
        status, body = curl(cloud.vms["a1"])
        assert status == 403 and "signature" in body
    finally:
        nova.set_secret(SECRET)
    assert curl(cloud.vms["a1"])[0] == 200


def test_requests_per_second_through_the_agent(cloud, nova):
    """200 sequential requests (new connection each) from a1: through the
    agent to the stand-in, against the same stand-in code run in a VM on
    a1's network that a1 reaches directly (one hop through OVS)."""
    mc = cloud
    h1 = mc.cloud.host(1)
    vm = mc.vms["a1"]
    bid = mc.api.request("GET", f"/ports/{vm.port_id}")["device_id"]
    pid = mc.api.request("POST", f"/bridges/{bid}/ports", {"name": "nova"})["id"]
    direct = mc.cloud.add_vm(h1, "nova", "10.0.0.50/24", "02:00:00:0a:00:50", iface_id=pid)
    mc.wait_port(pid, h1)
    server = mc.cloud.popen(direct, [sys.executable, "-m", "topologies.metadata",
                                     "--port", "8775"],
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        wait_until(lambda: ":8775" in direct.cmd("ss -ltnH 'sport = :8775'"), 10,
                   "the direct stand-in to listen")
        wait_until(lambda: curl(vm, "http://10.0.0.50:8775/")[0] == 200, 10,
                   "a1 to reach the direct stand-in")
        agent = measure_requests(vm, URL, 200)
        base = measure_requests(vm, "http://10.0.0.50:8775/openstack/latest/meta_data.json",
                                200)
    finally:
        server.kill()
    print(f"\nmetadata: through the agent {agent['rps']:.0f} req/s, median "
          f"{agent['median_ms']:.2f} ms; direct {base['rps']:.0f} req/s, median "
          f"{base['median_ms']:.2f} ms; ratio {agent['rps'] / base['rps']:.2f}")
    assert agent["errors"] == 0 and agent["codes"] == {"200": 200}, agent
    assert base["errors"] == 0, base


def test_agents_sent_only_flows_ovs_took(cloud):
    for h in cloud.hosts:
        with open(os.path.join(h.rundir, "agent.log")) as f:
            log = f.read()
        assert "metadata port mfl-meta at ofport" in log
        for bad in ("OVS answered OpenFlow error", "flow-mod not sent",
                    "metadata service not ready"):
            assert bad not in log, f"{h.name}: {bad}"


def test_builtin_tree_without_upstream(cloud):
    """h2's agent restarted with no upstream: its VM gets the built-in tree."""
    mc = cloud
    h2 = mc.cloud.host(2)
    mc.agent_options["hosts"] = {h2.name: {"metadata_upstream": ""}}
    mc.kill_agent(h2, sig=15)
    mc.start_agent(h2)
    mc.wait_agents([h2])
    vm = mc.vms["a2"]
    status, body = wait_until(
        lambda: (r := curl(vm))[0] == 200 and "from" not in json.loads(r[1]) and r, 30,
        "the built-in answer from h2's restarted agent")
    doc = json.loads(body)
    assert doc["uuid"] == instance("a2") and doc["hostname"] == "host-10-0-0-6"
    assert doc["project_id"] == "ta"
    assert curl(vm, "http://169.254.169.254/latest/meta-data/local-ipv4") == (200, "10.0.0.6")
    assert curl(vm, "http://169.254.169.254/latest/meta-data/instance-id") == \
        (200, instance("a2"))
    # h1's agent still forwards to Nova
    assert json.loads(curl(mc.vms["b2"])[1])["from"] == "nova"
