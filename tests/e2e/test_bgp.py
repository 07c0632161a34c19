"""Gateways end to end: two gateway hosts, each agent's os-ken BGP speaker
peering with a real border router (FRR, then GoBGP), ECMP both ways, NAT
state on either gateway, withdrawal through the API, and a gateway killed
under a continuous TCP stream and ping (see topologies/gateways.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from tests.helpers import read_until
from topologies.cloud import whoami, whoami_server
from topologies.gateways import FIP, INTERNET_IP, RANGE, SNAT_IP, UPLINKS, GatewayLab, ping_gaps
from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_bgp

HOLD = 3
GW_ZK_TIMEOUT = 3  # the gateways' ZooKeeper session: their learned routes go with it
STREAM = [sys.executable, "-m", "topologies.stream"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", params=["frr", "gobgp"])
def lab(request, cloud_factory):
    gw_opts = {"zk_session_timeout": GW_ZK_TIMEOUT}
    mc = cloud_factory(3, agent_options={"hosts": {"h2": gw_opts, "h3": gw_opts}})
    lab = GatewayLab(mc, border=request.param, keepalive=1, hold=HOLD)
    try:
        lab.start()
        lab.wait_sessions(timeout=60)
        yield lab
    finally:
        lab.stop()


def _popen(node, args):
    return node.popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                      cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def test_sessions_up_and_reported_by_the_api(lab):
    peers = lab.mc.api.request("GET", "/bgp_peers")
    assert len(peers) == 2
    wait_for(lambda: all(p["status"]["state"] == "established"
                         for p in lab.mc.api.request("GET", "/bgp_peers")), 15,
             "both sessions established in the API's status")
    for u, r in zip(UPLINKS, lab.borders, strict=True):
        assert r.neighbors()[u.ip] == "established"


def test_both_border_routers_carry_the_range_from_both_gateways(lab):
    lab.wait_range_everywhere()
    # each border router has the range from its own gateway (eBGP) and from
    # the other gateway through the other border router (iBGP)
    for i, r in enumerate(lab.borders):
        mine, other = UPLINKS[i], UPLINKS[1 - i]
        wait_for(lambda r=r, mine=mine, other=other: {mine.ip, other.lan_ip} <= set(
            r.rib().get(RANGE, [])), 20, f"{RANGE} via {mine.ip} and {other.lan_ip} "
            f"in {r.name}")
        assert mine.ip in r.fib().get(RANGE, []), r.fib()


def test_default_route_learned_from_both_border_routers(lab):
    routes = lab.wait_learned_default(2)
    gws = {x["next_hop_gateway"] for x in routes if x["dst_cidr"] == "0.0.0.0/0"}
    assert gws == {u.peer_ip for u in UPLINKS}
    assert {x["next_hop_port"] for x in routes} == set(lab.uplink_ports)


def test_snat_out_through_learned_routes_spread_over_both_gateways(lab):
    server = whoami_server(lab.upstream.internet, 8080)
    try:
        seen = {whoami(lab.vm1, INTERNET_IP, 8080) for _ in range(12)}
    finally:
        server.kill()
    assert all(s.startswith(SNAT_IP + ":") for s in seen), seen
    assert len(seen) == 12  # one binding (port) per connection
    flows = [f for f in lab.compute.dump_flows() if "tp_dst=8080" in f]
    used = {i for i, gw in enumerate(lab.gateways)
            if any(f"{gw.underlay_ip}->tun_dst" in f for f in flows)}
    assert used == {0, 1}, f"12 connections all left through one gateway: {flows}"


# 12 connections, each answered (the server then closes its side); all are
# held open until a line on stdin, so their flows stay (a connection closed
# both ways has its flows deleted at once).
_HOLDING_CLIENT = """
import socket, sys
held = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    held.append(s)
    print(s.recv(64).decode().strip(), flush=True)
sys.stdin.readline()
"""


def test_internet_reaches_the_floating_ip_through_either_gateway(lab):
    server = whoami_server(lab.vm2, 8081)
    client = lab.upstream.internet.popen(["python3", "-c", _HOLDING_CLIENT, FIP, "8081", "12"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
    try:
        seen = [client.stdout.readline().strip() for _ in range(12)]
        assert all(s.startswith(INTERNET_IP + ":") for s in seen), \
            (seen, client.poll() is not None and client.stderr.read())
        # the internet spreads by L4 hash over both border routers: both
        # gateways simulated inbound connections
        hit = [i for i, gw in enumerate(lab.gateways)
               if any("tp_dst=8081" in f for f in gw.dump_flows())]
        assert hit == [0, 1], "inbound connections did not use both gateways"
    finally:
        client.kill()
        client.communicate(timeout=5)
        server.kill()


def test_return_traffic_at_the_other_gateway_finds_the_nat_state(lab):
    """Replies forced through border2 (gateway 2) for connections that left
    through gateway 1: gateway 2 has their SNAT bindings (stateful group)."""
    lab.upstream.route_via(RANGE, [UPLINKS[1].lan_ip])
    server = whoami_server(lab.upstream.internet, 8082)
    try:
        seen = [whoami(lab.vm1, INTERNET_IP, 8082) for _ in range(8)]
    finally:
        server.kill()
        lab.upstream.route_via(RANGE, [u.lan_ip for u in UPLINKS])
    assert all(s.startswith(SNAT_IP + ":") for s in seen), seen
    flows = [f for f in lab.compute.dump_flows() if "tp_dst=8082" in f]
    assert any(f"{lab.gateways[0].underlay_ip}->tun_dst" in f for f in flows), \
        "no connection left through gateway 1: the asymmetric path was not exercised"


def test_range_added_and_removed_through_the_api(lab):
    extra = "198.18.7.0/24"
    nid = lab.add_network(lab.uplink_ports[0], extra)
    t0 = time.monotonic()
    wait_for(lambda: UPLINKS[0].ip in lab.borders[0].rib().get(extra, []), 10,
             f"{extra} advertised to border1")
    added = time.monotonic() - t0
    lab.mc.api.request("DELETE", f"/bgp_networks/{nid}")
    t0 = time.monotonic()
    wait_for(lambda: extra not in lab.borders[0].rib(), 10, f"{extra} withdrawn from border1")
    removed = time.monotonic() - t0
    print(f"\n[bgp {lab.kind}] range advertised in {added:.2f} s, withdrawn in {removed:.2f} s")


def test_killing_a_gateway_keeps_tcp_and_ping_going(lab):
    """Last: it kills the gateway carrying vm1's SNAT stream."""
    inet = lab.upstream.internet
    duration = HOLD + GW_ZK_TIMEOUT + 12
    srv_out = _popen(inet, [*STREAM, "server", "9100"])
    srv_in = _popen(lab.vm2, [*STREAM, "server", "9101"])
    for srv in (srv_out, srv_in):
        read_until(srv, '"listening"', 10, "the stream server to listen")
    cli_out = _popen(lab.vm1, [*STREAM, "client", INTERNET_IP, "9100", str(duration)])
    cli_in = _popen(inet, [*STREAM, "client", FIP, "9101", str(duration)])
    # to a file: a pipe read only at the end would fill up and stall ping
    ping_log = tempfile.TemporaryFile(mode="w+")
    pinger = inet.popen(["ping", "-D", "-i", "0.01", "-w", str(duration), FIP],
                        stdout=ping_log, stderr=subprocess.STDOUT)
    try:
        victim = wait_for(lambda: (lambda g: None if g is None else (g,))(
            lab.gateway_of_flow("tp_dst=9100")), 10, "vm1's stream to show in h1's flows")[0]
        # the floating-IP path carries traffic too (pread: ping shares the file offset)
        wait_for(lambda: b"bytes from" in os.pread(ping_log.fileno(), 1 << 16, 0), 10,
                 "the internet host's ping to the floating IP to be answered")
        killed_at = time.monotonic()
        lab.kill_gateway(victim)
        dead = UPLINKS[victim]
        border = lab.borders[victim]
        wait_for(lambda: dead.ip not in border.rib().get(RANGE, []), HOLD + 5,
                 f"{border.name} to drop the route via the dead gateway")
        dropped_after = time.monotonic() - killed_at
        results = {}
        for name, p in (("snat", srv_out), ("fip", srv_in)):
            out, _ = p.communicate(timeout=duration + 60)
            results[name] = json.loads(out.strip().splitlines()[-1])
        for p in (cli_out, cli_in):
            p.communicate(timeout=30)
        pinger.wait(timeout=duration + 30)
        ping_log.seek(0)
        ping_out = ping_log.read()
    finally:
        for p in (srv_out, srv_in, cli_out, cli_in, pinger):
            if p.poll() is None:
                p.kill()
    sent, got, ping_gap = ping_gaps(ping_out)
    print(f"\n[bgp {lab.kind}] killed gateway {victim + 1}: border dropped its route after "
          f"{dropped_after:.2f} s (hold {HOLD} s); outage: ping {ping_gap:.0f} ms "
          f"({sent - got}/{sent} lost at 10 ms), TCP via SNAT {results['snat']['max_gap_ms']} "
          f"ms, TCP via floating IP {results['fip']['max_gap_ms']} ms")
    assert dropped_after < HOLD + 3
    for name, r in results.items():
        assert r["in_order"] and r["chunks"] > 100, (name, r)
        assert r["max_gap_ms"] < 15000, (name, r)
    assert got > 0 and ping_gap < 12000, ping_out[-500:]
    # after the outage, everything flows through the survivor
    survivor = lab.gateways[1 - victim]
    assert any("tp_dst=9100" in f or "tp_src=9100" in f for f in survivor.dump_flows())
