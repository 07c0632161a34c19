"""Scenario 7: established NAT'd connections survive ``kill -9`` and restart
of their host's agent, and a VM's move to a host that holds none of its
state (recovered from a real Cassandra 5.0 node by the VM's port id).

Three hosts: h1 holds the provider router's uplink and the external host; the
VMs start on h2; h3 sees nothing of them until one moves there."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.e2e.test_stateful import EXT, FIP, PUBLIC, connect, serve
from topologies.cloud import ping
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_stateful

RV_IP, MV_IP = "192.168.70.10", "192.168.70.11"


@pytest.fixture(scope="module")
def rc(cloud_factory, cassandra_server):
    spec = (f"cassandra:{cassandra_server.address}:{cassandra_server.native_port}"
            "/e2e_restart")
    mc = cloud_factory(3, tunnel="vxlan", flow_state=spec,
                       cassandra_credentials=cassandra_server.credentials)
    pr = mc.router("provider", "admin")
    net = mc.bridge("restart-net", "t")
    mc.attach(pr, net, "192.168.70.1/24", "02:aa:00:00:07:01")
    up = mc.router_port(pr, "198.51.100.1/24", "02:aa:00:00:07:09", interior=False)
    mc.route(pr, "0.0.0.0/0", up, EXT)
    mc.route(pr, "203.0.113.0/24", type="blackhole")
    # rv: SNAT to PUBLIC (ports leased per host); mv: a floating IP and a
    # security group that admits only its two server ports (and replies)
    rv = mc.vm(2, net, "rv", f"{RV_IP}/24", "02:00:00:07:00:0a")
    mv = mc.vm(2, net, "mv", f"{MV_IP}/24", "02:00:00:07:00:0b")
    group = mc.api.request("POST", "/security_groups", {"name": "mv", "tenant_id": "t"})["id"]
    for port in (5213, 8091):
        mc.api.request("POST", f"/security_groups/{group}/rules", {
            "direction": "ingress", "protocol": "tcp", "port_range_min": port,
            "port_range_max": port})
    mc.api.request("PUT", f"/ports/{mv.port_id}", {
        "mac": "02:00:00:07:00:0b", "fixed_ips": [MV_IP], "security_group_ids": [group],
        "port_security_enabled": True})
    post = mc.chain("restart-out", [
        {"action": "snat", "out_ports": [up], "nw_src": f"{MV_IP}/32",
         "nat_targets": [{"addr_from": FIP, "addr_to": FIP}]},
        {"action": "snat", "out_ports": [up],
         "nat_targets": [{"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024,
                          "port_to": 65535}]}])
    pre = mc.chain("restart-in", [
        {"action": "dnat", "nw_dst": f"{FIP}/32",
         "nat_targets": [{"addr_from": MV_IP, "addr_to": MV_IP}]},
        {"action": "rev_snat"}])
    mc.api.request("PUT", f"/routers/{pr}", {"inbound_filter_id": pre,
                                             "outbound_filter_id": post})
    ext = mc.external(1, up, "rext", f"{EXT}/24", "02:00:00:07:00:fe",
                      routes=(("203.0.113.0/24", "198.51.100.1"),))
    for vm in (rv, mv):
        vm.cmd("ip route add default via 192.168.70.1")
        wait_for(lambda vm=vm: ping(vm, EXT, count=1)[1] == 1, 15,
                 f"{vm.vm_name} to reach the outside")
    return mc, rv, mv, ext


def _diagnose(mc, vms=()) -> str:
    """Where ZooKeeper says the VMs' ports are, what each host's OVS holds
    (flows that saw packets) and the tail of each agent's log."""
    out = []
    for vm in vms:
        try:
            where = mc.port_host(vm.port_id)
        except Exception as e:  # ZooKeeper unreachable: say so, and go on
            where = f"? ({e})"
        out.append(f"port of {vm.vm_name} active on {where} (hosts: "
                   f"{ {h.name: mc.host_ids.get(h.name) for h in mc.hosts} })")
    for h in mc.hosts:
        flows = [f for f in h.dump_flows() if "n_packets=0" not in f or "table=0" in f]
        out.append(f"--- {h.name} flows ({len(flows)}):\n" + "\n".join(f[:260] for f in flows[:40]))
        log = os.path.join(h.rundir, "agent.log")
        try:
            with open(log, errors="replace") as f:
                lines = [ln for ln in f.read().splitlines()
                         if "eventlet" not in ln.lower() and ln.strip()]
            out.append(f"--- {h.name} agent log (last 15):\n" + "\n".join(lines[-15:]))
        except OSError as e:
            out.append(f"--- {h.name} agent log: {e}")
    return "\n".join(out)


def _iperf_server(node, ip: str, port: int):
    srv = node.popen(["iperf3", "-s", "-1", "-p", str(port), "-B", ip])
    wait_for(lambda: f":{port}" in node.cmd(f"ss -ltnH 'sport = :{port}'"), 5,
             f"iperf3 server on {node.name}:{port}")
    return srv


def _iperf_client(node, ip: str, port: int, rate: str = "20M"):
    return node.popen(["iperf3", "-J", "-c", ip, "-p", str(port), "-t", "10", "-b", rate,
                       "--connect-timeout", "3000"], text=True)


def _under_way(mc, h, *needles: str, packets: int = 200, timeout: float = 10) -> None:
    """Until a flow on ``h`` matching every needle has carried ``packets``:
    the transfer it belongs to is in full flow (iperf3 -J says nothing earlier)."""
    def carried() -> bool:
        for f in h.dump_flows():
            m = re.search(r"n_packets=(\d+)", f)
            if m and int(m.group(1)) >= packets and all(n in f for n in needles):
                return True
        return False

    try:
        wait_for(carried, timeout, f"a flow on {h.name} with {needles} to carry {packets} "
                                   f"packets")
    except Exception as e:
        raise AssertionError(f"{e}\n{_diagnose(mc)}") from None


def _finished(mc, vms, what: str, client, server) -> dict:
    """The client's JSON report once it ends; fails with every host's view if
    it does not, or if the transfer stalled or broke."""
    try:
        out, _ = client.communicate(timeout=60)
    except Exception:
        client.kill()
        raise AssertionError(f"{what}: the transfer never ended:\n"
                             + _diagnose(mc, vms)) from None
    finally:
        server.kill()
    res = json.loads(out[out.index("{"):])
    assert "error" not in res, f"{what}: {res.get('error')}\n{_diagnose(mc, vms)}"
    got = res["end"]["sum_received"]["bytes"]
    sent = res["end"]["sum_sent"]["bytes"]
    assert got > 0 and got >= 0.9 * sent, f"{what}: received {got} of {sent} bytes"
    tail = [i["sum"]["bytes"] for i in res["intervals"][-3:]]
    assert all(b > 0 for b in tail), \
        f"{what}: no data in the last seconds: {tail}\n{_diagnose(mc, vms)}"
    return res


def test_kill_9_of_the_agent_mid_transfer_then_restart_the_transfer_completes(rc):
    mc, rv, _, ext = rc
    server = serve(ext, 8090)
    try:
        assert connect(rv, EXT, 8090).startswith(f"{PUBLIC}:")  # NAT works before
    finally:
        server.kill()
    iperf = _iperf_server(ext, EXT, 5210)
    client = _iperf_client(rv, EXT, 5210)
    h2 = mc.hosts[1]
    _under_way(mc, h2, "tp_dst=5210", "set_field:" + PUBLIC)
    mc.kill_agent(h2, sig=9)
    time.sleep(1)  # the VM's packets meet a dead agent for a while
    mc.start_agent(h2)
    mc.wait_agents([h2])
    # The restart wiped h2's flows: the transfer goes on through a SNAT flow
    # the restarted agent made from the recovered binding (a new binding
    # would make ext reset the connection: _finished checks that).
    _under_way(mc, h2, "tp_dst=5210", "set_field:" + PUBLIC, timeout=20)
    _finished(mc, [rv], "rv -> ext across the restart", client, iperf)


def test_a_vm_moved_to_a_host_without_its_state_keeps_its_connections(rc):
    """mv (security group, floating IP) moves from h2 to h3 with a transfer
    each way in flight: h3 never saw them, so their NAT bindings and
    conntrack entries come from Cassandra by mv's port id."""
    mc, _, mv, ext = rc
    h3 = mc.hosts[2]
    assert not [f for f in h3.dump_flows() if MV_IP in f or FIP in f], \
        "h3 holds flows of mv before the move"
    out_srv = _iperf_server(ext, EXT, 5211)
    in_srv = _iperf_server(mv, MV_IP, 5213)
    outbound = _iperf_client(mv, EXT, 5211)
    inbound = _iperf_client(ext, FIP, 5213)
    h2 = mc.hosts[1]
    _under_way(mc, h2, "tp_dst=5211", "set_field:" + FIP)  # mv -> ext, SNAT to the FIP
    _under_way(mc, h2, f"nw_src={MV_IP}", "tp_src=5213")  # mv's side of ext -> FIP
    mc.cloud.move_vm(mv, h3)
    mc.wait_port(mv.port_id, h3)
    # both go on through h3, with the translations h3 got from Cassandra
    _under_way(mc, h3, "tp_dst=5211", "set_field:" + FIP, timeout=20)
    _under_way(mc, h3, f"nw_src={MV_IP}", "tp_src=5213", "set_field:" + FIP, timeout=20)
    _finished(mc, [mv], "mv -> ext across the move", outbound, out_srv)
    _finished(mc, [mv], "ext -> mv's floating IP across the move", inbound, in_srv)
    # new connections both ways from the new host; the security group holds there
    server = serve(ext, 8090)
    try:
        got = connect(mv, EXT, 8090)
        assert got.startswith(f"{FIP}:"), f"ext saw {got!r}\n{_diagnose(mc, [mv])}"
    finally:
        server.kill()
    servers = [serve(mv, 8091), serve(mv, 8092)]
    try:
        got = connect(ext, FIP, 8091)
        assert got.startswith(f"{EXT}:"), f"mv saw {got!r}\n{_diagnose(mc, [mv])}"
        got = connect(ext, FIP, 8092)  # listening, but not in the group
        assert not got.startswith(f"{EXT}:"), \
            f"the security group let port 8092 through after the move: {got!r}"
    finally:
        for s in servers:
            s.kill()


KA_IP, KB_IP, KC_IP = "192.168.71.10", "192.168.71.11", "192.168.71.12"
KC_MAC = "02:00:00:07:01:0c"
KD_IP = "192.168.71.13"


def _cookie(h, *needles: str) -> str | None:
    """The cookie of the simulated flow on ``h`` that matches every needle and
    carried the most packets."""
    best, cookie = 0, None
    for f in h.dump_flows():
        n = int(re.search(r"n_packets=(\d+)", f).group(1))
        if "table=1" in f and n > best and all(x in f for x in needles):
            best, cookie = n, re.search(r"cookie=(0x[0-9a-f]+)", f).group(1)
    return cookie


def _judged(h, since: int, timeout: float = 30) -> str:
    """The restarted agent's log line saying it judged the flows OVS kept."""
    path = os.path.join(h.rundir, "agent.log")

    def line():
        with open(path, errors="replace") as f:
            f.seek(since)
            return next((ln for ln in f if "kept flows judged" in ln), None)
    return wait_for(line, timeout, f"{h.name}'s agent to judge the flows OVS kept")


def _connects(node, ip: str, port: int) -> bool:
    """Whether a new TCP connection from ``node`` to ip:port is set up within 2 s."""
    code = (f"import socket; s = socket.socket(); s.settimeout(2); "
            f"s.connect(('{ip}', {port})); print('CONNECTED')")
    return "CONNECTED" in node.cmd(f'python3 -c "{code}"')


def test_a_restarted_agent_keeps_valid_flows_and_removes_the_stale_ones(rc):
    """kill -9 of h2's agent with a 10 ms ping and two TCP streams from ka (h2)
    to kb (h3) under way; meanwhile the security-group rule of kb that
    admitted one stream is removed. After the restart OVS still holds the
    ping's and the streams' flows under their old cookies and they carry on
    (no stall, no three pings in a row lost); kb's host, whose OVS enforces
    its group (sg_conntrack), drops the removed rule's flow at once, its
    agent being alive, and new connections to its port are refused. The port
    of kd (h2), deleted meanwhile, leaves no flow."""
    mc = rc[0]
    h2 = mc.hosts[1]
    net = mc.bridge("keep-net", "t")
    ka = mc.vm(2, net, "ka", f"{KA_IP}/24", "02:00:00:07:01:0a")
    kb = mc.vm(3, net, "kb", f"{KB_IP}/24", "02:00:00:07:01:0b")
    mc.vm(3, net, "kc", f"{KC_IP}/24", KC_MAC)
    kd = mc.vm(2, net, "kd", f"{KD_IP}/24", "02:00:00:07:01:0d")  # deleted meanwhile
    group = mc.api.request("POST", "/security_groups", {"name": "kb", "tenant_id": "t"})["id"]
    rules = {port: mc.api.request("POST", f"/security_groups/{group}/rules", {
        "direction": "ingress", "protocol": "tcp", "port_range_min": port,
        "port_range_max": port})["id"] for port in (7001, 7002)}
    mc.api.request("PUT", f"/ports/{kb.port_id}", {
        "mac": "02:00:00:07:01:0b", "fixed_ips": [KB_IP], "security_group_ids": [group],
        "port_security_enabled": True})
    wait_for(lambda: ping(ka, KC_IP, count=1)[1] == 1, 15, "ka to reach kc")
    wait_for(lambda: ping(kd, KC_IP, count=1)[1] == 1, 15, "kd to reach kc")
    kd_flows = re.compile(rf"in_port={kd.ofport}\b|output:{kd.ofport}\b")
    servers = [_iperf_server(kb, KB_IP, p) for p in (7001, 7002)]
    kept_stream = _iperf_client(ka, KB_IP, 7002, rate="5M")
    stale_stream = _iperf_client(ka, KB_IP, 7001, rate="5M")
    pinger = ka.popen(["ping", "-i", "0.01", "-c", "900", "-W", "1", KC_IP], text=True)
    h3 = mc.hosts[2]
    kb_mac = "02:00:00:07:01:0b"

    def rule_flow(port: int) -> list[str]:  # kb's group's rule, in h3's OVS
        return [f for f in h3.dump_flows() if "table=5" in f and f"tp_dst={port}" in f]
    try:
        # the streams are stateless for h2's agent: one flow to kb carries both
        _under_way(mc, h2, f"dl_dst={kb_mac}", packets=400)
        _under_way(mc, h2, f"dl_dst={KC_MAC}", packets=20)
        _under_way(mc, h3, "table=5", "tp_dst=7001")
        _under_way(mc, h3, "table=5", "tp_dst=7002")
        before = {"stream": _cookie(h2, f"dl_dst={kb_mac}"),
                  "ping": _cookie(h2, f"dl_dst={KC_MAC}")}
        assert all(before.values()), f"flows on h2 before the restart: {before}"
        assert _connects(ka, KB_IP, 7001), "no new connection to kb:7001 before the change"
        log_at = os.path.getsize(os.path.join(h2.rundir, "agent.log"))
        mc.kill_agent(h2, sig=9)
        mc.api.request("DELETE", f"/security_groups/{group}/rules/{rules[7001]}")
        mc.api.request("DELETE", f"/ports/{kd.port_id}")
        mc.start_agent(h2)
        judged = _judged(h2, log_at)
        assert int(re.search(r"(\d+) adopted", judged).group(1)) >= 2, judged
        cookies = set(re.findall(r"cookie=(0x[0-9a-f]+)", "\n".join(h2.dump_flows())))
        assert before["stream"] in cookies and before["ping"] in cookies, \
            f"kept flows lost their cookies: {before}\n{_diagnose(mc)}"
        wait_for(lambda: not rule_flow(7001), 5, "h3's OVS to drop the removed rule's flow")
        assert rule_flow(7002), "h3's OVS lost the flow of the rule that stays"
        assert not _connects(ka, KB_IP, 7001), "a new connection to the removed rule's port"
        left = [f for f in h2.dump_flows() if kd_flows.search(f)]
        assert not left, f"flows of kd's port, deleted while the agent was away: {left}"
        out, _ = pinger.communicate(timeout=30)
        sent = int(re.search(r"(\d+) packets transmitted", out).group(1))
        lost = sorted(set(range(1, sent + 1)) - {int(n) for n in re.findall(
            r"icmp_seq=(\d+) ttl", out)})
        runs = [n for n in lost if n - 1 in lost and n - 2 in lost]
        # This loaded 2-core machine drops the odd ping beside two streams
        # through userspace OVS, restart or not (seen: 2 to 4 of 900, spread
        # over the run); a restart that broke the path would lose a run of
        # them (the agent takes a second or more to come back).
        assert not runs and len(lost) <= sent // 100, \
            f"the ping lost {lost} of {sent} across the restart ({judged.strip()})\n" \
            f"{_diagnose(mc)}"
        res = _finished(mc, [ka], "ka -> kb:7002 across the restart", kept_stream, servers[1])
        empty = [i["sum"]["start"] for i in res["intervals"] if i["sum"]["bytes"] == 0]
        assert not empty, f"the kept stream carried nothing in the seconds from {empty}"
    finally:
        for p in (pinger, kept_stream, stale_stream, *servers):
            p.kill()
