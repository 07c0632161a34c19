"""The `midoflow` CLI against the real REST app over a MemoryStore, in-process."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import uuid
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from midoflow.cli.client import ApiError, _words
from midoflow.cli.main import main
from midoflow.cli.render import table
from midoflow.model import HostState
from midoflow.store import paths
from midoflow.store.memory import MemoryStore

# ------------------------------------------------------------------ fixtures


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


class _Server(WSGIServer):
    daemon_threads = True


@pytest.fixture
def store():
    s = MemoryStore()
    yield s
    s.close()


@pytest.fixture
def api(store):
    from midoflow.rest import app as rest_app

    server = make_server("127.0.0.1", 0, rest_app.make_app(store), _Server, _Quiet)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    t.daemon = True
    t.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class Result:
    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli(api, capsys, monkeypatch):
    """``cli("bridge", "list")`` -> Result; the API URL comes from MIDOFLOW_API."""
    monkeypatch.setenv("MIDOFLOW_API", api)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    return run


def ok(r: Result) -> Result:
    assert r.rc == 0, r
    assert r.err == "", r
    return r


def one_error_line(r: Result, rc: int, *needles: str) -> str:
    assert r.rc == rc, r
    lines = r.err.splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("error: "), r
    assert "Traceback" not in r.err
    for n in needles:
        assert n in lines[0], r
    return lines[0]


def create(cli, *argv: str) -> dict:
    obj = ok(cli("--json", *argv)).json()
    assert obj["id"]
    return obj


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------- hosts


def test_host_crud(cli):
    h = create(cli, "host", "create", "--name", "compute-1", "--description", "rack 4")
    assert h["name"] == "compute-1"

    r = ok(cli("host", "list"))
    assert r.out.splitlines()[0].split() == ["ID", "NAME", "ALIVE", "DESCRIPTION"]
    assert "DOWN" in r.out  # no agent runs for it
    assert h["id"] in r.out and "compute-1" in r.out and "rack 4" in r.out

    for ref in (h["id"], "compute-1"):  # id or unique name
        r = ok(cli("host", "show", ref))
        assert h["id"] in r.out and "rack 4" in r.out

    ok(cli("host", "update", "compute-1", "--name", "compute-2"))
    assert ok(cli("--json", "host", "show", h["id"])).json()["name"] == "compute-2"

    r = ok(cli("host", "delete", "compute-2"))
    assert h["id"] in r.out
    one_error_line(cli("host", "show", h["id"]), 1, "404")
    assert ok(cli("--json", "host", "list")).json() == []


def test_json_flag_after_the_command(cli):
    create(cli, "host", "create", "--name", "h")
    rows = ok(cli("host", "list", "--json")).json()
    assert [x["name"] for x in rows] == ["h"]


# -------------------------------------------------------------- tunnel zones


def test_tunnel_zone_crud_and_members(cli):
    z = create(cli, "tunnel-zone", "create", "--name", "tz", "--type", "vxlan")
    h1 = create(cli, "host", "create", "--name", "h1")
    h2 = create(cli, "host", "create", "--name", "h2")

    r = ok(cli("tunnel-zone", "list"))
    assert z["id"] in r.out and "vxlan" in r.out

    ok(cli("tunnel-zone", "member-add", "tz", "--host", "h1", "--ip", "10.0.0.1"))
    ok(cli("tunnel-zone", "member-add", z["id"], "--host", h2["id"], "--ip", "10.0.0.2"))
    r = ok(cli("tunnel-zone", "members", "tz"))
    assert h1["id"] in r.out and "10.0.0.1" in r.out and "10.0.0.2" in r.out
    members = ok(cli("--json", "tunnel-zone", "members", "tz")).json()
    assert {(m["host_id"], m["ip"]) for m in members} == {
        (h1["id"], "10.0.0.1"),
        (h2["id"], "10.0.0.2"),
    }
    r = ok(cli("tunnel-zone", "show", "tz"))
    assert "10.0.0.2" in r.out

    ok(cli("tunnel-zone", "member-remove", "tz", "--host", "h1"))
    members = ok(cli("--json", "tunnel-zone", "members", "tz")).json()
    assert [m["host_id"] for m in members] == [h2["id"]]

    ok(cli("tunnel-zone", "update", "tz", "--type", "gre", "--name", "tz2"))
    z2 = ok(cli("--json", "tunnel-zone", "show", z["id"])).json()
    assert (z2["name"], z2["type"]) == ("tz2", "gre")

    ok(cli("tunnel-zone", "delete", "tz2"))
    one_error_line(cli("tunnel-zone", "show", z["id"]), 1, "404")


# ------------------------------------------------------------------- bridges


def test_bridge_crud(cli):
    b1 = create(cli, "bridge", "create", "--name", "net1", "--tenant", "alice")
    b2 = create(cli, "bridge", "create", "--name", "net2", "--tenant", "bob", "--down")
    assert b1["admin_state_up"] is True and b2["admin_state_up"] is False

    r = ok(cli("bridge", "list"))
    head = r.out.splitlines()[0].split()
    assert head[:3] == ["ID", "NAME", "TENANT"]
    assert b1["id"] in r.out and b2["id"] in r.out and "down" in r.out

    r = ok(cli("--json", "bridge", "list", "--tenant", "bob"))
    assert [b["id"] for b in r.json()] == [b2["id"]]

    ok(cli("bridge", "update", "net2", "--up", "--name", "net2b"))
    b = ok(cli("--json", "bridge", "show", b2["id"])).json()
    assert (b["name"], b["admin_state_up"]) == ("net2b", True)
    ok(cli("bridge", "update", "net2b", "--down"))
    assert ok(cli("--json", "bridge", "show", "net2b")).json()["admin_state_up"] is False

    r = ok(cli("bridge", "show", "net1"))
    assert "alice" in r.out

    ok(cli("bridge", "delete", "net1"))
    one_error_line(cli("bridge", "show", "net1"), 1, "no bridge", "net1")
    one_error_line(cli("bridge", "show", b1["id"]), 1, "404")


# --------------------------------------------------------------------- ports


def test_port_crud_and_binding(cli):
    b = create(cli, "bridge", "create", "--name", "net")
    other = create(cli, "bridge", "create", "--name", "other")
    h = create(cli, "host", "create", "--name", "compute-1")

    p = create(cli, "port", "create", "--bridge", "net", "--name", "vm1")
    assert p["device_id"] == b["id"] and p["type"] == "exterior"
    create(cli, "port", "create", "--bridge", other["id"], "--down")

    r = ok(cli("--json", "port", "list", "--bridge", "net"))
    assert [x["id"] for x in r.json()] == [p["id"]]
    assert len(ok(cli("--json", "port", "list")).json()) == 2
    r = ok(cli("port", "list"))
    assert p["id"] in r.out and b["id"] in r.out

    r = ok(cli("port", "show", p["id"]))
    assert "vm1" in r.out and "exterior" in r.out

    ok(cli("port", "update", p["id"], "--down", "--name", "vm1-eth0"))
    q = ok(cli("--json", "port", "show", p["id"])).json()
    assert (q["name"], q["admin_state_up"]) == ("vm1-eth0", False)

    r = ok(cli("port", "bind", p["id"], "--host", "compute-1", "--interface", "tap0"))
    assert "tap0" in r.out
    q = ok(cli("--json", "port", "show", p["id"])).json()
    assert (q["host_id"], q["interface_name"]) == (h["id"], "tap0")
    r = ok(cli("host", "bindings", "compute-1"))
    assert p["id"] in r.out and "tap0" in r.out
    assert [x["id"] for x in ok(cli("--json", "host", "bindings", h["id"])).json()] == [p["id"]]

    ok(cli("port", "unbind", p["id"]))
    assert not ok(cli("--json", "port", "show", p["id"])).json().get("host_id")
    assert ok(cli("--json", "host", "bindings", h["id"])).json() == []

    r = ok(cli("port", "delete", p["id"]))
    assert p["id"] in r.out
    one_error_line(cli("port", "show", p["id"]), 1, "404")


def test_port_link_unlink(cli):
    create(cli, "bridge", "create", "--name", "a")
    create(cli, "bridge", "create", "--name", "b")
    pa = create(cli, "port", "create", "--bridge", "a", "--type", "interior")
    pb = create(cli, "port", "create", "--bridge", "b", "--type", "interior")

    ok(cli("port", "link", pa["id"], "--peer", pb["id"]))
    assert ok(cli("--json", "port", "show", pa["id"])).json()["peer_id"] == pb["id"]
    assert ok(cli("--json", "port", "show", pb["id"])).json()["peer_id"] == pa["id"]
    r = ok(cli("port", "list", "--bridge", "a"))
    assert pb["id"] in r.out  # the PEER column

    ok(cli("port", "unlink", pa["id"]))
    assert not ok(cli("--json", "port", "show", pa["id"])).json().get("peer_id")
    assert not ok(cli("--json", "port", "show", pb["id"])).json().get("peer_id")


# -------------------------------------------------------------------- status


def test_status(cli, store):
    up = create(cli, "host", "create", "--name", "compute-1")
    down = create(cli, "host", "create", "--name", "compute-2")
    state = HostState(
        host_id=up["id"], hostname="compute-1",
        tunnel_ips={"vxlan": "192.0.2.11"}, ovs_connected=True, started_at=1.0,
    )
    store.put_state(paths.host_alive(up["id"]), dataclasses.asdict(state))

    r = ok(cli("status"))
    assert "store" in r.out and "connected" in r.out.splitlines()[0]
    assert "2 registered, 1 alive" in r.out
    rows = {line.split()[0]: line for line in r.out.splitlines() if line[:1] not in ("", " ")}
    assert "alive" in rows[up["id"]] and "connected" in rows[up["id"]]
    assert "192.0.2.11" in rows[up["id"]]
    assert "DOWN" in rows[down["id"]]

    st = ok(cli("--json", "status")).json()
    assert st["store"]["connected"] is True
    by_id = {h["id"]: h for h in st["hosts"]}
    assert by_id[up["id"]]["alive"] is True and by_id[down["id"]]["alive"] is False


# -------------------------------------------------------------------- errors


def test_404_is_one_line_exit_1(cli):
    r = cli("bridge", "show", str(uuid.uuid4()))
    line = one_error_line(r, 1, "404")
    assert line.startswith("error: 404 not found: ")
    assert r.out == ""


def test_409_bridge_with_ports(cli):
    create(cli, "bridge", "create", "--name", "net")
    create(cli, "port", "create", "--bridge", "net")
    one_error_line(cli("bridge", "delete", "net"), 1, "409")
    ok(cli("bridge", "show", "net"))


def test_409_stale_version(cli):
    b = create(cli, "bridge", "create", "--name", "net")
    ok(cli("bridge", "update", "net", "--name", "net2", "--if-version", str(b["version"])))
    r = cli("bridge", "update", "net2", "--down", "--if-version", str(b["version"]))
    one_error_line(r, 1, "409", "(field: version)")
    assert ok(cli("--json", "bridge", "show", "net2")).json()["admin_state_up"] is True


def test_400_names_the_field(cli):
    create(cli, "tunnel-zone", "create", "--name", "tz", "--type", "vxlan")
    create(cli, "host", "create", "--name", "h")
    r = cli("tunnel-zone", "member-add", "tz", "--host", "h", "--ip", "not-an-ip")
    one_error_line(r, 1, "400", "(field: ")


def test_ambiguous_and_unknown_names(cli):
    create(cli, "bridge", "create", "--name", "dup")
    create(cli, "bridge", "create", "--name", "dup")
    one_error_line(cli("bridge", "show", "dup"), 1, "2 bridges are named 'dup'", "use an id")
    one_error_line(cli("port", "create", "--bridge", "nope"), 1, "no bridge", "'nope'")
    one_error_line(cli("host", "bindings", "nope"), 1, "no host")


def test_usage_errors_exit_2(cli):
    one_error_line(cli("bridge", "create"), 2, "--name")
    one_error_line(cli("tunnel-zone", "create", "--name", "x", "--type", "ipip"), 2, "ipip")
    one_error_line(cli("bridge", "update", "x", "--up", "--down"), 2, "not allowed")
    one_error_line(cli("bridge", "update", "x"), 2, "nothing to update")
    one_error_line(cli("host"), 2)
    one_error_line(cli("frobnicate"), 2, "frobnicate")
    one_error_line(cli("--api", "localhost:1", "host", "list"), 2, "invalid API URL")


def test_unreachable_exit_3(capsys, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MIDOFLOW_API", url)
    rc = main(["host", "list"])
    err = capsys.readouterr().err
    assert rc == 3
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot reach the midoflow API at {url}: connection refused" in err
    assert "is it running?" in err and "MIDOFLOW_API" in err

    monkeypatch.delenv("MIDOFLOW_API")
    assert main(["--api", url, "status"]) == 3  # --api works as well
    assert "cannot reach" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for c in ("host", "tunnel-zone", "bridge", "port", "status", "router", "route", "trace",
              "chain", "rule", "port-group", "ip-group", "security-group"):
        assert c in out


# ---------------------------------------------------------- routers, routes


def test_router_crud(cli):
    r1 = create(cli, "router", "create", "--name", "r1", "--tenant", "alice")
    r2 = create(cli, "router", "create", "--name", "r2", "--tenant", "bob", "--down")
    assert r1["admin_state_up"] is True and r2["admin_state_up"] is False

    r = ok(cli("router", "list"))
    assert r.out.splitlines()[0].split() == ["ID", "NAME", "TENANT", "STATE", "PORTS"]
    assert r1["id"] in r.out and r2["id"] in r.out and "down" in r.out
    assert [x["id"] for x in ok(cli("--json", "router", "list", "--tenant", "bob")).json()] \
        == [r2["id"]]

    ok(cli("router", "update", "r2", "--up", "--name", "edge"))
    got = ok(cli("--json", "router", "show", r2["id"])).json()
    assert (got["name"], got["admin_state_up"]) == ("edge", True)
    assert "alice" in ok(cli("router", "show", "r1")).out

    one_error_line(cli("router", "update", "edge", "--name", "x", "--if-version", "0"), 1,
                   "409", "(field: version)")
    one_error_line(cli("router", "update", "edge"), 2, "nothing to update")
    r = ok(cli("router", "delete", "edge"))
    assert r2["id"] in r.out
    one_error_line(cli("router", "show", "edge"), 1, "no router", "edge")
    one_error_line(cli("router", "show", r2["id"]), 1, "404")


def test_router_ports_and_routes(cli):
    create(cli, "bridge", "create", "--name", "net1")
    link = create(cli, "port", "create", "--bridge", "net1", "--type", "interior")
    r = create(cli, "router", "create", "--name", "r1")
    lan = create(cli, "router", "add-port", "r1", "--ip", "10.0.1.1/24", "--type", "interior",
                 "--name", "lan", "--mac", "02:AA:00:00:00:01")
    assert (lan["ip_address"], lan["prefix_len"], lan["mac"]) == \
        ("10.0.1.1", 24, "02:aa:00:00:00:01")
    up = create(cli, "router", "add-port", r["id"], "--address", "203.0.113.2/24",
                "--name", "uplink")
    assert up["type"] == "exterior" and up["mac"]

    r_ = ok(cli("router", "ports", "r1"))
    head = r_.out.splitlines()[0].split()
    assert head[:4] == ["ID", "NAME", "TYPE", "ADDRESS"]
    assert "10.0.1.1/24" in r_.out and "203.0.113.2/24" in r_.out and "02:aa:00:00:00:01" in r_.out
    rows = ok(cli("--json", "port", "list", "--router", "r1")).json()
    assert {p["id"] for p in rows} == {lan["id"], up["id"]}
    assert "10.0.1.1/24" in ok(cli("port", "list")).out
    assert "10.0.1.1" in ok(cli("port", "show", lan["id"])).out
    ok(cli("port", "link", lan["id"], "--peer", link["id"]))

    # the next-hop port by name, among the router's ports
    default = create(cli, "route", "create", "r1", "--dst", "0.0.0.0/0", "--port", "uplink",
                     "--gateway", "203.0.113.1")
    assert (default["next_hop_port"], default["next_hop_gateway"]) == (up["id"], "203.0.113.1")
    bh = create(cli, "route", "create", "r1", "--dst", "192.0.2.0/24", "--type", "blackhole",
                "--weight", "5")
    assert bh["type"] == "blackhole" and bh["next_hop_port"] is None and bh["weight"] == 5
    src = create(cli, "route", "create", "r1", "--dst", "10.9.0.0/16", "--src", "10.0.1.0/24",
                 "--port", lan["id"])
    r_ = ok(cli("route", "list", "r1"))
    lines = r_.out.splitlines()
    assert lines[0].split()[:3] == ["ID", "DESTINATION", "SOURCE"]
    assert [line.split()[0] for line in lines[1:]] == [bh["id"], src["id"], default["id"]]
    assert "10.0.1.0/24" in r_.out and "203.0.113.1" in r_.out
    assert "blackhole" in ok(cli("route", "show", bh["id"])).out

    ok(cli("route", "update", default["id"], "--weight", "7"))
    assert ok(cli("--json", "route", "show", default["id"])).json()["weight"] == 7
    ok(cli("route", "update", src["id"], "--port", "uplink", "--gateway", "203.0.113.9"))
    got = ok(cli("--json", "route", "show", src["id"])).json()
    assert (got["next_hop_port"], got["next_hop_gateway"]) == (up["id"], "203.0.113.9")
    ok(cli("route", "update", src["id"], "--no-gateway"))
    assert ok(cli("--json", "route", "show", src["id"])).json()["next_hop_gateway"] is None
    one_error_line(cli("route", "update", src["id"]), 2, "nothing to update")

    # errors: each one line, the API's field named
    one_error_line(cli("route", "create", "r1", "--dst", "10.0.0.1/8", "--port", "lan"), 1,
                   "400", "(field: dst_cidr)")
    one_error_line(cli("route", "create", "r1", "--dst", "10.0.0.0/8", "--port", "lan",
                       "--gateway", "8.8.8.8"), 1, "400", "(field: next_hop_gateway)")
    one_error_line(cli("route", "create", "r1", "--dst", "10.0.0.0/8", "--port", "nope"), 1,
                   "no port", "'nope'")
    one_error_line(cli("route", "create", "r1", "--dst", "0.0.0.0/0", "--port", "uplink",
                       "--gateway", "203.0.113.1"), 1, "409")
    one_error_line(cli("router", "add-port", "r1", "--ip", "10.0.1.7/25"), 1, "409",
                   "(field: ip_address)")
    one_error_line(cli("router", "add-port", "r1", "--ip", "10.0.7.7"), 2, "ADDRESS/PREFIX_LEN")
    one_error_line(cli("router", "add-port", "r1", "--ip", "10.0.7.7/x"), 2)
    one_error_line(cli("router", "add-port", "r1", "--ip", "10.0.7.7/40"), 1,
                   "(field: prefix_len)")
    one_error_line(cli("router", "delete", "r1"), 1, "409")
    one_error_line(cli("route", "show", "nope"), 1, "no route")

    r_ = ok(cli("route", "delete", bh["id"]))
    assert bh["id"] in r_.out
    ok(cli("port", "delete", up["id"]))  # takes the routes through it along
    assert [x["id"] for x in ok(cli("--json", "route", "list", "r1")).json()] == []
    ok(cli("port", "delete", lan["id"]))
    ok(cli("router", "delete", "r1"))


# --------------------------------------------------------------------- trace


@pytest.fixture
def l2_net(cli, store):
    b = create(cli, "bridge", "create", "--name", "net")
    p1 = create(cli, "port", "create", "--bridge", "net", "--name", "vm1")
    p2 = create(cli, "port", "create", "--bridge", "net", "--name", "vm2")
    store.put_state(paths.mac_entry(b["id"], "02:00:00:00:00:02", p2["id"]), {})
    return b, p1, p2


def test_trace_human(cli, l2_net):
    b, p1, p2 = l2_net
    r = ok(cli("trace", "--in-port", "vm1", "--eth-src", "02:00:00:00:00:01",
               "--eth-dst", "02:00:00:00:00:02", "--ip-src", "10.0.0.1", "--ip-dst", "10.0.0.2",
               "--proto", "tcp", "--sport", "1234", "--dport", "80"))
    lines = r.out.splitlines()
    assert lines[0].startswith("packet: 02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 10.0.0.1 "
                               "> 10.0.0.2 tcp 1234 > 80 ttl 64, into port " + p1["id"])
    assert lines[1] == "steps:"
    assert lines[2].startswith(f"  1. bridge {b['id']} (net): learn 02:00:00:00:00:01")
    assert lines[3].startswith(f"  2. bridge {b['id']} (net): ")
    assert f"decision: FORWARD to port {p2['id']} (vm2)" in lines
    match = next(line for line in lines if line.startswith("flow match: "))
    assert f"in_port={p1['id']}" in match and "eth_dst=02:00:00:00:00:02" in match
    assert "installed as a flow: yes" in lines
    assert not any(line.startswith("note: ") for line in lines)

    r = ok(cli("trace", "--in-port", p1["id"], "--eth-src", "02:00:00:00:00:01",
               "--eth-dst", "ff:ff:ff:ff:ff:ff", "--arp", "request", "--ip-src", "10.0.0.1",
               "--ip-dst", "10.0.0.2"))
    assert "ARP request 10.0.0.1 > 10.0.0.2" in r.out and "flood" in r.out

    r = ok(cli("trace", "--in-port", "vm2", "--eth-src", "02:00:00:00:00:02",
               "--eth-dst", "02:00:00:00:00:02"))
    assert "decision: DROP (" in r.out


def test_trace_notes_a_port_whose_groups_its_hosts_ovs_enforces():
    from midoflow.cli.trace import format_trace

    res = {"action": "forward", "out_ports": ["p2"], "steps": [], "notes": ["port p2: ..."]}
    out = format_trace(res, {"in_port": "p1", "eth_src": "02:00:00:00:00:01",
                             "eth_dst": "02:00:00:00:00:02"}, {})
    assert out.splitlines()[-1] == "note: port p2: ..."


def test_trace_json(cli, l2_net):
    _, p1, p2 = l2_net
    res = ok(cli("--json", "trace", "--in-port", "vm1", "--eth-src", "02:00:00:00:00:01",
                 "--eth-dst", "02:00:00:00:00:02", "--ip-src", "10.0.0.1", "--ip-dst",
                 "10.0.0.2", "--proto", "icmp", "--sport", "8", "--dport", "0", "--ttl",
                 "3")).json()
    assert res["action"] == "forward" and res["out_ports"] == [p2["id"]]
    assert {"steps", "match_fields", "tags", "rewrites", "generated", "cacheable",
            "wait_arp", "reason"} <= set(res)


def test_trace_errors(cli, l2_net):
    base = ("trace", "--in-port", "vm1", "--eth-src", "02:00:00:00:00:01", "--eth-dst",
            "02:00:00:00:00:02")
    one_error_line(cli(*base[:-2]), 2, "--eth-dst")
    one_error_line(cli(*base, "--ip-dst", "10.0.0.2"), 2, "--ip-src")
    one_error_line(cli(*base, "--ip-src", "1.1.1.1", "--ip-dst", "1.1.1.2", "--proto", "gre"),
                   2, "--proto")
    one_error_line(cli(*base, "--ip-src", "1.1.1.1", "--ip-dst", "1.1.1.2", "--dport", "80"),
                   2, "--proto")
    one_error_line(cli(*base, "--arp", "request"), 2, "--ip-src")
    one_error_line(cli(*base, "--arp", "reply", "--ip-src", "1.1.1.1", "--ip-dst", "1.1.1.2",
                       "--ttl", "3"), 2, "--ttl")
    one_error_line(cli(*base, "--eth-type", "ip"), 2, "eth-type")
    one_error_line(cli("trace", "--in-port", "nope", "--eth-src", "02:00:00:00:00:01",
                       "--eth-dst", "02:00:00:00:00:02"), 1, "no port")
    one_error_line(cli("trace", "--in-port", "vm1", "--eth-src", "01:00:00:00:00:01",
                       "--eth-dst", "02:00:00:00:00:02"), 1, "400", "(field: eth_src)")
    one_error_line(cli(*base, "--ip-src", "1.1.1.1", "--ip-dst", "1.1.1.2", "--ttl", "0"), 1,
                   "(field: ip_ttl)")
    one_error_line(cli(*base, "--ip-src", "1.1.1.1", "--ip-dst", "1.1.1.2", "--df"), 2,
                   "--df needs --size")
    one_error_line(cli(*base, "--arp", "request", "--ip-src", "1.1.1.1", "--ip-dst", "1.1.1.2",
                       "--size", "100"), 2, "--size")
    one_error_line(cli(*base, "--ip-src", "1.1.1.1", "--ip-dst", "1.1.1.2", "--size", "10"), 1,
                   "(field: ip_len)")


def test_trace_with_a_size(cli, l2_net):
    r = ok(cli("trace", "--in-port", "vm1", "--eth-src", "02:00:00:00:00:01",
               "--eth-dst", "02:00:00:00:00:02", "--ip-src", "10.0.0.1", "--ip-dst", "10.0.0.2",
               "--proto", "udp", "--sport", "1", "--dport", "2", "--size", "1500", "--df"))
    assert "udp 1 > 2 ttl 64, 1500 bytes DF, into port" in r.out.splitlines()[0]


# ------------------------------------------------------ pure helpers (no API)


def test_table_is_aligned_and_keeps_full_ids():
    long_id = str(uuid.uuid4())
    out = table(
        [{"id": long_id, "n": "a"}, {"id": "x", "n": None}],
        [("ID", lambda r: r["id"]), ("NAME", lambda r: r["n"])],
    )
    lines = out.splitlines()
    assert long_id in lines[1]
    assert lines[1].endswith("a") and lines[2].endswith("-")
    assert lines[0].index("NAME") == len(lines[1]) - 1 == len(lines[2]) - 1


def test_api_error_line():
    e = ApiError(409, "Conflict", "bridge b still has 2 ports", "port_ids")
    assert e.one_line() == "409 conflict: bridge b still has 2 ports (field: port_ids)"
    assert _words("NotFound") == "not found"


# ------------------------------------------------ chains, rules, groups, SGs


def test_chain_and_rule_commands(cli):
    create(cli, "bridge", "create", "--name", "net")
    p1 = create(cli, "port", "create", "--bridge", "net", "--name", "vm1")
    ch = create(cli, "chain", "create", "--name", "in", "--tenant", "alice")
    sub = create(cli, "chain", "create", "--name", "sub")
    assert ch["generated"] is False and ch["rule_ids"] == []
    r = ok(cli("chain", "list"))
    assert r.out.splitlines()[0].split() == ["ID", "NAME", "TENANT", "RULES", "GENERATED"]
    assert ch["id"] in r.out and sub["id"] in r.out

    web = create(cli, "rule", "create", "in", "--action", "accept", "--nw-proto", "tcp",
                 "--tp-dst", "80-90", "--nw-src", "10.0.0.0/8", "--invert", "nw_src",
                 "--in-port", "vm1", "--forward-flow")
    assert (web["nw_proto"], web["tp_dst"], web["nw_src"], web["invert"], web["in_ports"],
            web["match_forward_flow"]) == (6, [80, 90], "10.0.0.0/8", ["nw_src"], [p1["id"]],
                                           True)
    jump = create(cli, "rule", "create", "in", "--jump", "sub", "--position", "1")
    assert (jump["action"], jump["jump_chain_id"]) == ("jump", sub["id"])
    nat = create(cli, "rule", "create", "sub", "--action", "dnat", "--eth-type", "ip",
                 "--tp-dst", "443", "--nat-target", "10.0.0.5-10.0.0.9:8443",
                 "--nat-target", "10.0.1.5")
    assert nat["eth_type"] == 0x0800 and nat["tp_dst"] == [443, 443]
    assert nat["nat_targets"] == [
        {"addr_from": "10.0.0.5", "addr_to": "10.0.0.9", "port_from": 8443, "port_to": 8443},
        {"addr_from": "10.0.1.5", "addr_to": "10.0.1.5", "port_from": 0, "port_to": 0}]
    create(cli, "rule", "create", "sub", "--action", "accept", "--return-flow")

    rows = ok(cli("--json", "chain", "rules", "in")).json()
    assert [x["id"] for x in rows] == [jump["id"], web["id"]]
    r = ok(cli("chain", "rules", "in"))
    lines = r.out.splitlines()
    assert lines[0].split() == ["#", "ID", "ACTION", "MATCH"]
    assert lines[1].split()[:4] == ["1", jump["id"], "jump", sub["id"]]
    assert "nw_src!=10.0.0.0/8" in lines[2] and "tp_dst=80-90" in lines[2]
    assert "nw_proto=tcp" in lines[2] and "forward-flow" in lines[2]
    r = ok(cli("chain", "show", "sub"))
    assert "dnat 10.0.0.5-10.0.0.9:8443, 10.0.1.5" in r.out and "return-flow" in r.out
    assert ok(cli("--json", "chain", "show", "in")).json()["rule_ids"] == [jump["id"],
                                                                         web["id"]]
    assert "10.0.0.0/8" in ok(cli("rule", "show", web["id"])).out
    assert len(ok(cli("--json", "rule", "list", "sub")).json()) == 2

    ok(cli("chain", "update", "in", "--name", "inbound"))
    assert ok(cli("--json", "chain", "show", ch["id"])).json()["name"] == "inbound"

    # errors: the API's field, or a usage error before any request
    one_error_line(cli("rule", "create", "inbound", "--action", "accept", "--nw-src",
                       "10.0.0.1/8"), 1, "400", "(field: nw_src)")
    one_error_line(cli("rule", "create", "inbound", "--action", "accept", "--invert",
                       "nw_dst"), 1, "400", "(field: invert)")
    one_error_line(cli("rule", "create", "sub", "--jump", "inbound"), 1, "409",
                   "(field: jump_chain_id)")
    one_error_line(cli("rule", "create", "inbound", "--action", "dnat"), 1,
                   "(field: nat_targets)")
    one_error_line(cli("rule", "create", "inbound"), 2, "--action")
    one_error_line(cli("rule", "create", "inbound", "--action", "drop", "--jump", "sub"), 2,
                   "--jump")
    one_error_line(cli("rule", "create", "inbound", "--action", "accept", "--tp-dst", "x"),
                   2, "--tp-dst")
    one_error_line(cli("rule", "create", "inbound", "--action", "accept", "--nw-proto",
                       "gre"), 2, "--nw-proto")
    one_error_line(cli("rule", "create", "inbound", "--action", "dnat", "--nat-target",
                       "10.0.0.5:"), 2, "--nat-target")
    one_error_line(cli("rule", "create", "inbound", "--action", "accept", "--eth-type",
                       "ipx"), 2, "--eth-type")
    one_error_line(cli("rule", "create", "nope", "--action", "accept"), 1, "no chain")
    one_error_line(cli("chain", "delete", "sub"), 1, "409")
    one_error_line(cli("chain", "update", "sub"), 2, "nothing to update")

    ok(cli("rule", "delete", jump["id"]))
    ok(cli("chain", "delete", "sub"))
    assert [c["name"] for c in ok(cli("--json", "chain", "list")).json()] == ["inbound"]


def test_port_group_and_ip_group_commands(cli):
    create(cli, "bridge", "create", "--name", "net")
    p = create(cli, "port", "create", "--bridge", "net", "--name", "up1")
    g = create(cli, "port-group", "create", "--name", "uplinks", "--stateful")
    assert g["stateful"] is True
    ok(cli("port-group", "add-port", "uplinks", "--port", "up1"))
    assert ok(cli("--json", "port-group", "show", "uplinks")).json()["port_ids"] == [p["id"]]
    assert p["id"] in ok(cli("port-group", "ports", "uplinks")).out
    assert "uplinks" in ok(cli("port-group", "list")).out
    one_error_line(cli("port-group", "add-port", "uplinks", "--port", p["id"]), 1, "409")
    ok(cli("port-group", "update", "uplinks", "--stateless", "--name", "up"))
    assert ok(cli("--json", "port-group", "show", "up")).json()["stateful"] is False
    ok(cli("port-group", "remove-port", "up", "--port", p["id"]))
    assert ok(cli("--json", "port-group", "show", "up")).json()["port_ids"] == []
    ok(cli("port-group", "delete", "up"))

    ig = create(cli, "ip-group", "create", "--name", "dns", "--address", "10.0.0.53")
    assert ig["addresses"] == ["10.0.0.53"] and ig["generated"] is False
    ok(cli("ip-group", "add-address", "dns", "--address", "10.0.1.53"))
    assert "10.0.1.53" in ok(cli("ip-group", "show", "dns")).out
    one_error_line(cli("ip-group", "add-address", "dns", "--address", "10.0.1.999"), 1,
                   "(field: address)")
    ok(cli("ip-group", "remove-address", "dns", "--address", "10.0.0.53"))
    assert ok(cli("--json", "ip-group", "show", "dns")).json()["addresses"] == ["10.0.1.53"]
    ok(cli("ip-group", "update", "dns", "--name", "resolvers"))
    create(cli, "chain", "create", "--name", "c")
    create(cli, "rule", "create", "c", "--action", "accept", "--dst-group", "resolvers")
    one_error_line(cli("ip-group", "delete", "resolvers"), 1, "409")
    assert "resolvers" in ok(cli("ip-group", "list")).out


def test_security_group_commands(cli):
    sg = create(cli, "security-group", "create", "--name", "web", "--description", "front")
    assert [r["direction"] for r in sg["rules"]] == ["egress"]
    db = create(cli, "security-group", "create", "--name", "db")
    ssh = create(cli, "security-group", "rule-add", "web", "--direction", "ingress",
                 "--protocol", "tcp", "--port", "22", "--remote-ip", "192.0.2.0/24")
    assert (ssh["protocol"], ssh["port_range_min"], ssh["port_range_max"]) == (6, 22, 22)
    ping = create(cli, "security-group", "rule-add", "web", "--direction", "ingress",
                  "--protocol", "icmp", "--icmp-type", "8", "--icmp-code", "0",
                  "--remote-group", "web")
    assert (ping["port_range_min"], ping["remote_group_id"]) == (8, sg["id"])
    create(cli, "security-group", "rule-add", "db", "--direction", "ingress", "--protocol",
           "tcp", "--port", "5432-5433", "--remote-group", "web")
    r = ok(cli("security-group", "show", "web"))
    assert "192.0.2.0/24" in r.out and "type 8 code 0" in r.out and "tcp" in r.out
    assert sg["ingress_chain_id"] in r.out
    rows = ok(cli("--json", "security-group", "rules", "web")).json()
    assert len(rows) == 3
    r = ok(cli("security-group", "list"))
    assert r.out.splitlines()[0].split() == ["ID", "NAME", "TENANT", "RULES", "DESCRIPTION"]
    # the generated chains are there, marked
    r = ok(cli("chain", "list"))
    assert "sg-web-ingress" in r.out and "yes" in r.out
    assert ok(cli("--json", "chain", "list", "--user")).json() == []
    assert "5432-5433" in ok(cli("chain", "rules", db["ingress_chain_id"])).out

    one_error_line(cli("security-group", "rule-add", "web", "--direction", "ingress",
                       "--ethertype", "IPv6"), 1, "(field: ethertype)")
    one_error_line(cli("security-group", "rule-add", "web", "--direction", "ingress",
                       "--protocol", "tcp", "--port", "22", "--remote-ip", "192.0.2.0/24"),
                   1, "409")
    one_error_line(cli("security-group", "rule-add", "web", "--direction", "ingress",
                       "--icmp-type", "8"), 2, "--icmp-code")
    one_error_line(cli("security-group", "rule-add", "web", "--direction", "up"), 2)
    one_error_line(cli("security-group", "rule-add", "web", "--direction", "ingress",
                       "--remote-ip", "10.0.0.0/8", "--remote-group", "db"), 2)
    one_error_line(cli("chain", "delete", sg["ingress_chain_id"]), 1, "409")

    ok(cli("security-group", "rule-delete", "web", ssh["id"]))
    assert len(ok(cli("--json", "security-group", "rules", "web")).json()) == 2
    ok(cli("security-group", "update", "web", "--name", "www"))
    assert ok(cli("--json", "chain", "show", sg["ingress_chain_id"])).json()["name"] == \
        "sg-www-ingress"
    ok(cli("security-group", "delete", "db"))
    one_error_line(cli("security-group", "show", "db"), 1, "no security group")


def test_port_update_security_and_filters(cli):
    create(cli, "bridge", "create", "--name", "net")
    p = create(cli, "port", "create", "--bridge", "net", "--name", "vm1")
    web = create(cli, "security-group", "create", "--name", "web")
    create(cli, "security-group", "create", "--name", "db")
    q = ok(cli("--json", "port", "update", p["id"], "--security-group", "web",
               "--security-group", "db", "--port-security", "--mac", "02:00:00:00:00:01",
               "--fixed-ip", "10.0.0.5", "--allowed-address-pair", "10.0.0.64/26",
               "--allowed-address-pair", "10.0.0.7,02:00:00:00:00:02")).json()
    assert len(q["security_group_ids"]) == 2 and q["port_security_enabled"] is True
    assert q["allowed_address_pairs"][1] == {"ip_address": "10.0.0.7",
                                             "mac_address": "02:00:00:00:00:02"}
    assert q["inbound_filter_id"] and q["fixed_ips"] == ["10.0.0.5"]
    r = ok(cli("port", "show", p["id"]))
    assert "10.0.0.5" in r.out and web["id"] in r.out
    r = ok(cli("chain", "rules", q["inbound_filter_id"]))
    assert "return-flow" in r.out and "forward-flow" in r.out and "drop" in r.out
    assert "10.0.0.5" in ok(cli("ip-group", "show", "sg-web")).out

    mine = create(cli, "chain", "create", "--name", "mine")
    one_error_line(cli("port", "update", p["id"], "--inbound-filter", "mine"), 1, "409",
                   "(field: inbound_filter_id)")
    q = ok(cli("--json", "port", "update", p["id"], "--no-security-groups",
               "--no-port-security", "--no-allowed-address-pairs", "--inbound-filter",
               "mine")).json()
    assert (q["security_group_ids"], q["inbound_filter_id"], q["outbound_filter_id"]) == \
        ([], mine["id"], None)
    q = ok(cli("--json", "port", "update", p["id"], "--no-inbound-filter",
               "--outbound-filter", mine["id"])).json()
    assert (q["inbound_filter_id"], q["outbound_filter_id"]) == (None, mine["id"])
    ok(cli("bridge", "update", "net", "--inbound-filter", "mine"))
    assert ok(cli("--json", "bridge", "show", "net")).json()["inbound_filter_id"] == mine["id"]
    create(cli, "router", "create", "--name", "r1")
    ok(cli("router", "update", "r1", "--outbound-filter", "mine"))
    assert mine["id"] in ok(cli("router", "show", "r1")).out
    ok(cli("router", "update", "r1", "--no-outbound-filter"))
    assert ok(cli("--json", "router", "show", "r1")).json()["outbound_filter_id"] is None
    one_error_line(cli("chain", "delete", "mine"), 1, "409")

    # port security on a port filtering through a user chain
    one_error_line(cli("port", "update", p["id"], "--port-security"), 1, "409",
                   "(field: port_security_enabled)")
    one_error_line(cli("port", "update", p["id"]), 2, "nothing to update")
    one_error_line(cli("port", "update", p["id"], "--fixed-ip", "1.2.3.4", "--no-fixed-ips"),
                   2, "not allowed")
    one_error_line(cli("port", "update", p["id"], "--security-group", "nope"), 1,
                   "no security group")
    v = create(cli, "port", "create", "--bridge", "net", "--mac", "02:00:00:00:00:09",
               "--fixed-ip", "10.0.0.9", "--security-group", "web", "--port-security")
    assert v["port_security_enabled"] is True and v["inbound_filter_id"]


# ------------------------------------------------------------------ load balancing (issue 14)
def test_cli_crud_of_the_five_kinds(cli):
    create(cli, "router", "create", "--name", "edge")
    for ip in ("10.0.0.1/24", "10.1.0.1/24"):
        ok(cli("router", "add-port", "edge", "--address", ip))
    b = create(cli, "load-balancer", "create", "--router", "edge", "--name", "web")
    assert b["health_cidr"] == "169.254.252.0/30"
    pool = create(cli, "pool", "create", "--load-balancer", "web", "--name", "p",
                  "--lb-method", "WEIGHTED_ROUND_ROBIN")
    m = create(cli, "member", "create", "--pool", "p", "--address", "10.1.0.11",
               "--protocol-port", "8080", "--weight", "3", "--name", "m1")
    create(cli, "member", "create", "--pool", "p", "--address", "10.1.0.12",
           "--protocol-port", "8080")
    vip = create(cli, "vip", "create", "--load-balancer", "web", "--address", "10.0.0.100",
                 "--protocol-port", "80", "--pool", "p", "--session-persistence",
                 "SOURCE_IP", "--name", "v")
    assert (vip["pool_id"], vip["session_persistence"]) == (pool["id"], "SOURCE_IP")
    hm = create(cli, "health-monitor", "create", "--pool", "p", "--type", "HTTP",
                "--url-path", "/health", "--delay", "2", "--check-timeout", "1")
    assert (hm["url_path"], hm["delay"]) == ("/health", 2)
    # lists: human tables and per-parent filters
    out = ok(cli("member", "list", "--pool", "p")).out
    assert "10.1.0.11" in out and "10.1.0.12" in out and "NO_MONITOR" in out
    assert len(ok(cli("--json", "member", "list", "--pool", "p")).json()) == 2
    assert [p["id"] for p in ok(cli("--json", "pool", "list", "--load-balancer", "web"))
            .json()] == [pool["id"]]
    assert "10.0.0.100" in ok(cli("vip", "list")).out
    assert "web" in ok(cli("load-balancer", "show", "web")).out
    # set
    got = ok(cli("--json", "member", "set", "m1", "--weight", "0", "--down")).json()
    assert (got["weight"], got["admin_state_up"], got["operating_status"]) == (
        0, False, "OFFLINE")
    got = ok(cli("--json", "vip", "set", "v", "--session-persistence", "none",
                 "--no-pool")).json()
    assert (got["session_persistence"], got["pool_id"]) == (None, None)
    assert ok(cli("--json", "vip", "update", "v", "--pool", "p")).json()["pool_id"] == \
        pool["id"]
    assert ok(cli("--json", "health-monitor", "set", hm["id"], "--expected-codes",
                  "200-204")).json()["expected_codes"] == "200-204"
    assert ok(cli("--json", "pool", "set", "p", "--lb-method", "LEAST_CONNECTIONS")
              ).json()["lb_method"] == "LEAST_CONNECTIONS"
    one_error_line(cli("pool", "set", "p"), 2, "nothing to update")
    # errors: one line naming the field or the conflict
    one_error_line(cli("member", "create", "--pool", "p", "--address", "10.1.0.11",
                       "--protocol-port", "8080"), 1, "already has a member")
    one_error_line(cli("health-monitor", "set", hm["id"], "--check-timeout", "5"), 1, "delay")
    one_error_line(cli("load-balancer", "delete", "web"), 1, "cascade")
    # delete
    ok(cli("member", "delete", m["id"]))
    ok(cli("load-balancer", "delete", "web", "--cascade"))
    for kind in ("load-balancer", "pool", "vip", "member", "health-monitor"):
        assert ok(cli("--json", kind, "list")).json() == []
