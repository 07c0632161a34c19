"""The health checker's namespace and link (midoflow.apps.healthcheck over
midoflow.bgp.link): made in a namespace of the test standing for OVS's, its
default route via the health port's address, probes made from inside it,
and everything removed again (leftovers of an earlier run included)."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from midoflow.agent.healthcheck import LinkPlan, link_mac, link_name, namespace_name
from midoflow.apps.healthcheck import HealthCheckRunner
from midoflow.bgp import link as bgplink
from midoflow.lb.health import Monitor, Target
from midoflow.lb.probes import http_probe, tcp_probe
from midoflow.store.memory import MemoryStore
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


class FakeSwitch:
    """Records the OVS ports the runner asks for (OVS itself is not needed here)."""

    def __init__(self) -> None:
        self.ports: dict[str, dict] = {}
        self.interfaces: dict[str, tuple[int, str | None]] = {}

    def add_port(self, name, external_ids):
        self.ports[name] = dict(external_ids)

    def del_port(self, name):
        self.ports.pop(name, None)
        self.interfaces.pop(name, None)

    def ofport(self, name):
        return 1 if name in self.ports else -1


def sh(*cmd: str, netns: str | None = None, check: bool = True):
    if netns:
        cmd = ("ip", "netns", "exec", netns, *cmd)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


@pytest.fixture
def ovs_ns():
    """A namespace standing for the host's OVS one: the OVS end of the link
    lands there and gets the health port's address (the router's side)."""
    name = f"mfl-hmt-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    sh("ip", "link", "set", "lo", "up", netns=name)
    yield name
    sh("ip", "netns", "del", name, check=False)


def test_namespace_link_probe_and_cleanup(ovs_ns):
    host = f"h{uuid.uuid4().hex[:7]}"
    lb = f"lb{uuid.uuid4().hex[:8]}"
    port_id = uuid.uuid4().hex
    plan = LinkPlan(lb, namespace_name(lb, host), port_id, link_mac(lb), "169.254.252.6", 30,
                    "169.254.252.5")
    switch = FakeSwitch()
    runner = HealthCheckRunner(MemoryStore(), host, switch, ovs_ns, bound=lambda _p: True)
    server = None
    try:
        runner._make(plan)
        ovs_end = link_name(port_id) + "p"
        assert switch.ports[ovs_end] == {"iface-id": port_id, "midoflow-health-lb": lb}
        # the agent binds its own link, never one a killed run left in OVS
        seen = {ovs_end: (3, port_id), "mh0123456789p": (4, port_id), "tap1": (5, "vm")}
        assert runner.visible(seen) == {ovs_end: (3, port_id), "tap1": (5, "vm")}
        # the "router" side: the gateway address on the OVS end, a server behind it
        sh("ip", "addr", "add", "169.254.252.5/30", "dev", ovs_end, netns=ovs_ns)
        sh("ip", "addr", "add", "10.77.0.5/32", "dev", "lo", netns=ovs_ns)
        routes = sh("ip", "route", netns=plan.namespace).stdout
        assert "default via 169.254.252.5" in routes, routes
        link = sh("ip", "-o", "link", "show", link_name(port_id), netns=plan.namespace).stdout
        assert plan.mac in link
        server = subprocess.Popen(["ip", "netns", "exec", ovs_ns, "python3", "-m", "http.server",
                                   "--bind", "10.77.0.5", "8080"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = Target("m1", "p1", lb, "10.77.0.5", 8080, Monitor(type="HTTP", timeout=2))
        wait_until(lambda: _ok(target, plan), timeout=10,
                   what="an HTTP probe from the namespace to succeed")
        # a closed port: refused, from inside the namespace too
        r = tcp_probe(lambda: bgplink.socket_in(plan.namespace), "10.77.0.5", 8081, 2)
        assert r.reason == "connection refused"
        runner.made[lb] = plan
        runner._resign()
        assert not os.path.exists(f"/var/run/netns/{plan.namespace}")
        assert switch.ports == {}
        assert runner.visible(seen) == {"tap1": (5, "vm")}
        # leftovers of an earlier run of this host's agent go at start; others' stay
        other = namespace_name(lb, "another-host")
        bgplink.ensure_namespace(plan.namespace)
        bgplink.ensure_namespace(other)
        switch.interfaces["mh0123456789p"] = (5, "x")
        runner._remove_leftovers()
        assert not os.path.exists(f"/var/run/netns/{plan.namespace}")
        assert os.path.exists(f"/var/run/netns/{other}")
        assert switch.interfaces == {}
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        runner._unmake(plan)
        bgplink.remove_namespace(namespace_name(lb, "another-host"))


def _ok(target: Target, plan: LinkPlan) -> bool:
    r = http_probe(lambda: bgplink.socket_in(plan.namespace), target.address, target.port, 2)
    return r.ok


RUNNER = """
    import eventlet
    eventlet.monkey_patch(thread=False)  # as osken-manager does
    import json, subprocess, sys
    from midoflow.apps.healthcheck import HealthCheckRunner
    from midoflow.store import paths
    from midoflow.store.base import Create
    from midoflow.store.memory import MemoryStore
    from tests.integration.test_lb_health_link import FakeSwitch
    ovs_ns, lb, port_id = sys.argv[1:4]
    store = MemoryStore()
    store.commit([
        Create("load_balancers", {"id": lb, "router_id": "r1", "health_port_id": port_id,
                                  "health_cidr": "169.254.252.4/30"}),
        Create("pools", {"id": "p1", "load_balancer_id": lb}),
        Create("pool_members", {"id": "m1", "pool_id": "p1", "address": "10.77.0.5",
                                "protocol_port": 8080}),
        Create("health_monitors", {"id": "hm1", "pool_id": "p1", "type": "TCP", "delay": 1,
                                   "timeout": 1, "max_retries": 1, "max_retries_down": 2}),
    ])
    switch = FakeSwitch()
    runner = HealthCheckRunner(store, "hostx", switch, ovs_ns, bound=lambda _p: True)
    def status():
        e = store.get_state(paths.member_health("m1"))
        return e and e["status"]
    def until(cond, what, n=300):
        for _ in range(n):
            if cond():
                return
            eventlet.sleep(0.05)
        raise SystemExit("timed out waiting for " + what)
    runner.start()
    until(lambda: switch.ports, "the link")
    end = next(iter(switch.ports))
    try:
        for addr in ("169.254.252.5/30 dev " + end, "10.77.0.5/32 dev lo"):
            subprocess.run(["ip", "netns", "exec", ovs_ns, "ip", "addr", "add", *addr.split()],
                           check=True)
        until(lambda: status() == "ERROR", "ERROR with no server")
        server = subprocess.Popen(["ip", "netns", "exec", ovs_ns, "python3", "-m",
                                   "http.server", "--bind", "10.77.0.5", "8080"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            until(lambda: status() == "ONLINE", "ONLINE once the server listens")
        finally:
            server.kill()
        until(lambda: status() == "ERROR", "ERROR once it is killed")
        ns = runner.made[lb].namespace
    finally:
        runner.stop()
    print(json.dumps({"namespace": ns, "ports": switch.ports,
                      "entry": store.get_state(paths.member_health("m1"))}), flush=True)
"""


def test_runner_leads_checks_and_cleans_up(ovs_ns):
    """The runner's loop under eventlet: leads (in-memory election), makes the
    namespace, probes the member through it, writes ERROR / ONLINE / ERROR as
    the server is absent, started, killed; on stop the namespace goes."""
    import json
    import sys
    import textwrap
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    lb, port_id = f"lb{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(RUNNER), ovs_ns, lb, port_id],
                          capture_output=True, text=True, timeout=120, cwd=repo,
                          env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["entry"]["status"] == "ERROR" and out["entry"]["host_id"] == "hostx"
    assert out["ports"] == {}
    assert not os.path.exists(f"/var/run/netns/{out['namespace']}")
