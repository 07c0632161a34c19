"""ZooKeeper as a three-server cluster under a whole cloud (real agents, the
real REST API, real packets):

* one server down: VMs keep talking, the API keeps accepting writes (a new
  bridge and VMs on it work), nothing acknowledged is lost;
* quorum lost: established traffic keeps flowing, and so does traffic whose
  flows must be simulated again (from the topology the agents last saw); the
  API answers every call at once with 503 and a JSON body saying why; the CLI
  prints one line and exits non-zero;
* quorum back: the API answers again, the agents are alive again, and a
  change made now reaches the data path.

The tests run in order on one ensemble and one cloud; each needs the ones
before it (a later one is skipped when an earlier one failed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from midoflow.cli.client import ApiError, Unreachable
from midoflow.devenv.zookeeper import ZooKeeperEnsemble, ZooKeeperServer
from midoflow.store import paths
from topologies.cloud import ping, unused_prefix
from topologies.midocloud import MidoCloud, wait_for

pytestmark = pytest.mark.e2e_l2

MIDOFLOW_CLI = os.path.join(os.path.dirname(sys.executable), "midoflow")
SIMULATED_COOKIES = "cookie=0x4d00000000000000/0xff00000000000000"


def mac(net: int, n: int) -> str:
    return f"02:00:00:{net:02x}:00:{n:02x}"


# --------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mc(ensemble):
    # "mflq....": this test's namespaces, links and rundirs are easy to tell apart.
    cloud = MidoCloud(n_hosts=2, zk_hosts=ensemble.hosts, prefix=unused_prefix("mflq"))
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.stop()


class World:
    """What the ordered tests hand on to each other."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.vms: dict = {}
        self.bridges: dict[str, str] = {}  # id -> name, every bridge acknowledged
        self.ports: set[str] = set()  # every port acknowledged
        self.killed: list[ZooKeeperServer] = []
        self.spare_port: str | None = None  # made with quorum, plugged without

    def need(self, *stages: str) -> None:
        missing = [s for s in stages if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier stage(s) {', '.join(missing)} to have passed")


@pytest.fixture(scope="module")
def world() -> World:
    return World()


# ---------------------------------------------------------------------- helpers


def server_of(ensemble: ZooKeeperEnsemble, mc: MidoCloud) -> ZooKeeperServer | None:
    """The server the API's store session is connected to (None: not connected)."""
    server = mc.store.health().get("server")
    if not server:
        return None
    port = int(server.rsplit(":", 1)[1])
    return next((s for s in ensemble.servers if s.client_port == port), None)


def raw_request(mc: MidoCloud, method: str, path: str, body=None, timeout: float = 10.0):
    """(status, content type, decoded JSON body, seconds) of one API call."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(mc.api.base_url + "/v1" + path, data=data, method=method,
                                 headers={"Accept": "application/json",
                                          **({"Content-Type": "application/json"}
                                             if data else {})})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, ctype, raw = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers.get("Content-Type", ""), e.read()
    took = time.monotonic() - t0
    return status, ctype, (json.loads(raw) if raw.strip() else None), took


def api_answers(mc: MidoCloud) -> bool:
    try:
        mc.api.request("GET", "/bridges")
        return True
    except (ApiError, Unreachable):
        return False


def cli(mc: MidoCloud, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([MIDOFLOW_CLI, "--api", mc.api.base_url, *args], capture_output=True,
                          text=True, timeout=timeout)


def hosts_alive(mc: MidoCloud) -> dict[str, tuple[bool, bool]]:
    """host name -> (alive, ovs connected), as `midoflow status --json` shows it."""
    r = cli(mc, "--json", "status")
    if r.returncode != 0:
        return {}
    st = json.loads(r.stdout)
    return {h["name"]: (h["alive"], h["ovs_connected"]) for h in st["hosts"]}


def new_bridge(mc: MidoCloud, world: World, name: str) -> str:
    bid = mc.bridge(name, "tenant-q")
    world.bridges[bid] = name
    return bid


def new_vm(mc: MidoCloud, world: World, host: int, bid: str, name: str, net: int, n: int):
    vm = mc.vm(host, bid, name, f"192.168.{net}.{n}/24", mac(net, n))
    world.ports.add(vm.port_id)
    world.vms[name] = vm
    return vm


def assert_acknowledged_writes_kept(mc: MidoCloud, world: World) -> None:
    bridges = {b["id"]: b["name"] for b in mc.api.request("GET", "/bridges")}
    lost = {b: n for b, n in world.bridges.items() if bridges.get(b) != n}
    assert not lost, f"acknowledged bridges lost or changed: {lost}"
    ports = {p["id"] for p in mc.api.request("GET", "/ports")}
    assert world.ports <= ports, f"acknowledged ports lost: {sorted(world.ports - ports)}"


def agents_running(mc: MidoCloud) -> None:
    dead = {n: p.returncode for n, p in mc.cloud.agents.items() if p.poll() is not None}
    assert not dead, f"agents exited: {dead} (see agent.log in each host's rundir)"


def resimulate_everything(mc: MidoCloud) -> None:
    """Delete every simulated flow behind the agents' backs: the next packet
    of each flow misses and must be simulated again."""
    for h in mc.hosts:
        t0 = time.monotonic()
        h.ovs_ofctl("del-flows", "table=1," + SIMULATED_COOKIES)
        flows = [f for f in h.dump_flows() if "cookie=0x4d" in f]
        since = time.monotonic() - t0
        # a packet in flight (or the agent's proactive flows) may make one at
        # once; none may be older than the deletion
        survived = [f for f in flows
                    if float(re.search(r"duration=([\d.]+)s", f).group(1)) > since]
        assert not survived, (h.name, survived)


def simulated_flows(mc: MidoCloud) -> int:
    return sum(1 for h in mc.hosts for f in h.dump_flows() if "cookie=0x4d" in f)


# ------------------------------------------------------------------------ tests


def test_baseline(mc, world):
    b = new_bridge(mc, world, "q-net")
    a = new_vm(mc, world, 1, b, "qa1", 70, 1)
    new_vm(mc, world, 2, b, "qa2", 70, 2)
    for i in range(8):  # acknowledged writes that must survive everything below
        bid = new_bridge(mc, world, f"q-keep-{i}")
        world.ports.add(mc.port(bid, f"keep-{i}"))
    assert ping(a, "192.168.70.2", count=3) == (3, 3)
    assert sorted(hosts_alive(mc).values()) == [(True, True), (True, True)]
    world.done.add("baseline")


def test_one_server_down_keeps_writes_and_traffic(mc, ensemble, world):
    world.need("baseline")
    victim = server_of(ensemble, mc) or ensemble.leader()
    assert victim is not None
    victim.kill()
    world.killed.append(victim)
    a, c = world.vms["qa1"], world.vms["qa2"]
    # The data path does not depend on ZooKeeper at all.
    assert ping(a, "192.168.70.2", count=3) == (3, 3)
    # The API's store moves to another server within a few seconds.
    t0 = time.monotonic()
    wait_for(lambda: api_answers(mc), 10, "the API to answer with one server down")
    failover = time.monotonic() - t0
    assert_acknowledged_writes_kept(mc, world)
    # Writes are accepted, and the agents (reconnected) act on them.
    b = new_bridge(mc, world, "q-net2")
    x = new_vm(mc, world, 1, b, "qb1", 71, 1)
    new_vm(mc, world, 2, b, "qb2", 71, 2)
    assert ping(x, "192.168.71.2", count=3) == (3, 3)
    mc.api.request("PUT", f"/bridges/{b}", {"name": "q-net2-renamed"})
    world.bridges[b] = "q-net2-renamed"
    # A port for a VM that will be plugged in while quorum is lost.
    q_net = next(i for i, n in world.bridges.items() if n == "q-net")
    world.spare_port = mc.port(q_net, "qa3")
    world.ports.add(world.spare_port)
    assert_acknowledged_writes_kept(mc, world)
    assert ping(c, "192.168.70.1", count=3) == (3, 3)
    assert sorted(hosts_alive(mc).values()) == [(True, True), (True, True)]
    agents_running(mc)
    print(f"one server down: API answered again after {failover:.2f} s")
    world.done.add("one-down")


def test_quorum_lost_keeps_forwarding_and_api_says_503(mc, ensemble, world):
    world.need("baseline", "one-down")
    second = server_of(ensemble, mc) or next(s for s in ensemble.servers if s.running())
    second.kill()
    world.killed.append(second)
    assert sum(s.running() for s in ensemble.servers) == 1
    t_lost = time.monotonic()
    a, c = world.vms["qa1"], world.vms["qa2"]
    x, y = world.vms["qb1"], world.vms["qb2"]
    pid = world.vms["qa2"].port_id

    (survivor,) = [s for s in ensemble.servers if s.running()]

    # A leader left alone keeps serving reads for up to syncLimit ticks (2 s
    # here) before it notices; then the last server stops serving. During that
    # time and after, no API call hangs.
    def unavailable():
        statuses = []
        for method, path, body in (("GET", "/bridges", None),
                                   ("POST", "/bridges", {"name": "q-maybe"})):
            status, _, doc, took = raw_request(mc, method, path, body)
            assert took < mc.store.op_timeout + 1, f"{method} {path} took {took:.1f} s"
            if status == 201:  # acknowledged before the leader stepped down: it must stay
                world.bridges[doc["id"]] = doc["name"]
            statuses.append(status)
        return statuses == [503, 503] and survivor.mode() is None

    wait_for(unavailable, 10, "the API to answer 503 after quorum loss")
    noticed = time.monotonic() - t_lost
    calls = [("GET", "/bridges", None), ("GET", f"/ports/{pid}", None), ("GET", "/status", None),
             ("GET", "/hosts", None), ("POST", "/bridges", {"name": "q-never"}),
             ("PUT", f"/ports/{pid}", {"admin_state_up": False}),
             ("DELETE", f"/ports/{pid}", None)]
    for method, path, body in calls:
        status, ctype, doc, took = raw_request(mc, method, path, body)
        what = f"{method} {path}"
        assert status == 503, f"{what}: {status} {doc}"
        assert ctype.startswith("application/json"), f"{what}: {ctype}"
        assert doc["error"] == "Unavailable", f"{what}: {doc}"
        msg = doc["message"].lower()
        assert "zookeeper" in msg and ("quorum" in msg or "unreachable" in msg), f"{what}: {doc}"
        assert took < 2.0, f"{what} took {took:.1f} s without quorum"

    # The CLI: one clear line on stderr, a non-zero exit, quickly.
    t0 = time.monotonic()
    r = cli(mc, "bridge", "list")
    assert time.monotonic() - t0 < 10
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "503" in lines[0] and "quorum" in lines[0].lower(), lines[0]

    # Established traffic keeps flowing.
    assert ping(a, "192.168.70.2", count=3) == (3, 3)
    assert ping(y, "192.168.71.1", count=3) == (3, 3)
    # Flows that must be simulated again are, from the topology last seen.
    resimulate_everything(mc)
    assert ping(a, "192.168.70.2", count=3) == (3, 3)
    assert ping(c, "192.168.70.1", count=3) == (3, 3)
    assert ping(x, "192.168.71.2", count=3) == (3, 3)
    assert simulated_flows(mc) > 0
    # A VM plugged in now (its port was made before) talks to its neighbour on
    # the same host: the binding and the simulation need no ZooKeeper. It
    # cannot be announced to the other host until quorum is back.
    h2 = mc.hosts[1]
    late = mc.cloud.add_vm(h2, "qa3", "192.168.70.3/24", mac(70, 3), iface_id=world.spare_port)
    late.port_id = world.spare_port
    world.vms["qa3"] = late
    wait_for(lambda: ping(late, "192.168.70.2", count=1)[1] == 1, 10,
             "a VM plugged in without quorum to reach its neighbour on the same host")
    # A VM unplugged now: its port must not stay active once quorum is back.
    mc.cloud.remove_vm(y)
    agents_running(mc)
    # Quorum stays lost for a while (longer than a session timeout) with
    # traffic still passing; then the next test brings it back.
    deadline = t_lost + mc.store.timeout + 1
    while time.monotonic() < deadline:
        assert ping(a, "192.168.70.2", count=1, timeout=1.0) == (1, 1)
        time.sleep(0.5)  # the test: traffic keeps passing through this whole window
    assert raw_request(mc, "GET", "/bridges")[0] == 503
    print(f"quorum lost: API answered 503 after {noticed:.2f} s")
    world.done.add("no-quorum")


def test_quorum_back_resynchronises(mc, ensemble, world):
    world.need("baseline", "one-down", "no-quorum")
    t0 = time.monotonic()
    for s in world.killed:
        s.launch()
    ensemble.wait_quorum(30)
    world.killed.clear()
    wait_for(lambda: api_answers(mc), 20, "the API to answer after quorum is back")
    back = time.monotonic() - t0
    assert_acknowledged_writes_kept(mc, world)
    # Both agents are registered again (their ephemeral nodes), OVS connected.
    wait_for(lambda: sorted(hosts_alive(mc).values()) == [(True, True), (True, True)], 20,
             "`midoflow status` to show both hosts alive")
    for h in mc.hosts:
        assert mc.store.get_state(paths.host_alive(mc.host_ids[h.name])) is not None
    a = world.vms["qa1"]
    c = world.vms["qa2"]
    assert ping(a, "192.168.70.2", count=3) == (3, 3)
    # A change made now reaches live traffic: port down stops it, up restores it.
    mc.api.request("PUT", f"/ports/{c.port_id}", {"admin_state_up": False})
    wait_for(lambda: ping(a, "192.168.70.2", count=1)[1] == 0, 5, "ping to stop (port down)")
    assert ping(a, "192.168.70.2", count=3)[1] == 0
    mc.api.request("PUT", f"/ports/{c.port_id}", {"admin_state_up": True})
    wait_for(lambda: ping(a, "192.168.70.2", count=1)[1] == 1, 5, "ping to resume (port up)")
    # New objects reach the agents too.
    b = new_bridge(mc, world, "q-net3")
    z = new_vm(mc, world, 2, b, "qc1", 72, 1)
    new_vm(mc, world, 1, b, "qc2", 72, 2)
    assert ping(z, "192.168.72.2", count=3) == (3, 3)
    # The CLI works again.
    r = cli(mc, "bridge", "list")
    assert r.returncode == 0 and "q-net3" in r.stdout, r.stderr
    agents_running(mc)
    print(f"quorum back: API answered again {back:.2f} s after the servers were relaunched")
    world.done.add("quorum-back")


def test_state_changed_without_quorum_is_written_when_it_returns(mc, world):
    world.need("baseline", "one-down", "no-quorum", "quorum-back")
    a = world.vms["qa1"]
    h2 = mc.hosts[1]
    plugged, unplugged = world.spare_port, world.vms["qb2"].port_id
    # The port plugged in without quorum is active on its host now, and its
    # VM is reachable from the other host.
    mc.wait_port(plugged, h2, timeout=10)
    wait_for(lambda: ping(a, "192.168.70.3", count=1)[1] == 1, 10,
             "the VM plugged in without quorum to be reachable from the other host")
    # The port unplugged without quorum is not active anywhere any more.
    wait_for(lambda: mc.port_host(unplugged) is None, 5,
             "the port unplugged without quorum to be inactive")
    # The host's published state lists what is bound there now.
    state = mc.store.get_state(paths.host_alive(mc.host_ids[h2.name]))
    assert plugged in state["bound_ports"] and unplugged not in state["bound_ports"], state
