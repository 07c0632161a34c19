"""A fast check of layer-4 balancing on a real cloud (the full acceptance is
tests/e2e/test_lb.py): two hosts, a router with two subnets, two member VMs
serving HTTP on the members' subnet, a client on the other subnet fetching
the VIP (created through the native REST API) and reaching both members,
then one member disabled: only the other answers."""

from __future__ import annotations

import pytest

from topologies.midocloud import wait_for

pytestmark = pytest.mark.e2e_lb

VIP = "192.168.2.100"
FETCH = ("import sys, urllib.request\n"
         "for i in range(int(sys.argv[2])):\n"
         "    try:\n"
         "        print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())\n"
         "    except Exception as e:\n"
         "        print('fail', type(e).__name__)\n")


def fetch(vm, n: int) -> list[str]:
    out = vm.cmd(f"python3 -c \"{FETCH}\" http://{VIP}/ {n}")
    # the shell echoes a "> " prompt per continuation line before the output
    return [line.replace("> ", "").strip() for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def lab(cloud_factory, tmp_path_factory):
    mc = cloud_factory(2, tunnel="vxlan")
    r = mc.router("lbs-r", "t")
    b1, b2 = mc.bridge("lbs-net1", "t"), mc.bridge("lbs-net2", "t")
    mc.attach(r, b1, "192.168.1.1/24", "02:aa:00:00:0b:01")
    mc.attach(r, b2, "192.168.2.1/24", "02:aa:00:00:0b:02")
    client = mc.vm(1, b1, "lbsc", "192.168.1.10/24", "02:00:00:0b:01:10")
    client.cmd("ip route add default via 192.168.1.1")
    servers = []
    members = {}
    for i, host in ((1, 1), (2, 2)):
        vm = mc.vm(host, b2, f"lbsm{i}", f"192.168.2.2{i}/24", f"02:00:00:0b:02:2{i}")
        vm.cmd("ip route add default via 192.168.2.1")
        root = tmp_path_factory.mktemp(f"member{i}")
        (root / "index.html").write_text(f"member{i}\n")
        pid = vm.cmd(f"python3 -m http.server 8080 --bind 0.0.0.0 --directory {root} "
                     ">/dev/null 2>&1 & echo $!").strip().splitlines()[-1]
        servers.append((vm, pid))
        members[f"member{i}"] = f"192.168.2.2{i}"
    try:
        lb = mc.api.request("POST", "/load_balancers", {"router_id": r, "name": "lbs"})
        pool = mc.api.request("POST", "/pools", {"load_balancer_id": lb["id"],
                                                 "protocol": "TCP"})
        mc.api.request("POST", "/vips", {"load_balancer_id": lb["id"], "address": VIP,
                                         "protocol_port": 80, "pool_id": pool["id"],
                                         "protocol": "TCP"})
        ids = {name: mc.api.request("POST", "/pool_members", {
            "pool_id": pool["id"], "address": ip, "protocol_port": 8080})["id"]
            for name, ip in members.items()}
        for vm, _ in servers:  # the servers are up
            wait_for(lambda vm=vm: "8080" in vm.cmd("ss -ltn"), 10, "an HTTP server")
        yield mc, client, ids
    finally:
        for vm, pid in servers:
            vm.cmd(f"kill {pid}")


def test_vip_reaches_both_members_then_only_the_enabled_one(lab):
    mc, client, ids = lab
    wait_for(lambda: any(x.startswith("member") for x in fetch(client, 1)), 20,
             "a first answer from the VIP")
    got = fetch(client, 10)
    assert sorted(set(got)) == ["member1", "member2"], got
    mc.api.request("PUT", f"/pool_members/{ids['member1']}", {"admin_state_up": False})
    wait_for(lambda: fetch(client, 1) == ["member2"], 10, "member1 disabled")
    got = fetch(client, 6)
    assert got == ["member2"] * 6, got


REUSE = ("import socket, sys\n"
         "def get(ip, port, sport):\n"
         "    s = socket.socket()\n"
         "    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "    s.bind(('', sport))\n"
         "    s.settimeout(3)\n"
         "    try:\n"
         "        s.connect((ip, port))\n"
         "        s.sendall(b'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n')\n"
         "        data = b''\n"
         "        while True:\n"
         "            chunk = s.recv(4096)\n"
         "            if not chunk:\n"
         "                break\n"
         "            data += chunk\n"
         "        return data.split(b'\\\\r\\\\n\\\\r\\\\n', 1)[-1].decode().strip()\n"
         "    except Exception as e:\n"
         "        return 'fail ' + type(e).__name__\n"
         "    finally:\n"
         "        s.close()\n"
         "m = get(sys.argv[1], 80, int(sys.argv[2]))\n"
         "print('vip', m)\n"
         "ip = '192.168.2.2' + m[-1:] if m.startswith('member') else sys.argv[1]\n"
         "print('direct', get(ip, 8080, int(sys.argv[2])))\n")


def test_a_closed_vip_connection_leaves_the_client_port_free_for_the_member(lab):
    """The client's port of a closed VIP connection, reused at once straight
    to the member that answered: the member's answer is not turned into
    the VIP's (the closed binding's flows went at the close)."""
    _, client, _ = lab
    wait_for(lambda: any(x.startswith("member") for x in fetch(client, 1)), 20,
             "an answer from the VIP")
    for sport in (41000, 41001, 41002):
        out = client.cmd(f"python3 -c \"{REUSE}\" {VIP} {sport}")
        lines = [line.replace("> ", "").strip() for line in out.splitlines() if line.strip()]
        got = dict(line.split(" ", 1) for line in lines if line.startswith(("vip", "direct")))
        assert got.get("vip", "").startswith("member"), lines
        assert got.get("direct") == got["vip"], lines
