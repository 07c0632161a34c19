"""The `midoflow bgp ...` and `midoflow router learned-routes` commands against the
real REST app over a MemoryStore, in-process (fixtures of test_cli)."""

from __future__ import annotations

import uuid

import pytest

from midoflow.cli.main import main
from midoflow.store import paths
from tests.unit.test_cli import api, cli, create, ok, one_error_line, store  # noqa: F401


@pytest.fixture
def gw(cli):  # noqa: F811
    """Router edge: uplink 203.0.113.2/24 (exterior), lan 10.0.1.1/24 (interior)."""
    r = create(cli, "router", "create", "--name", "edge")
    up = create(cli, "router", "add-port", "edge", "--ip", "203.0.113.2/24", "--name", "uplink")
    lan = create(cli, "router", "add-port", "edge", "--ip", "10.0.1.1/24", "--type",
                 "interior", "--name", "lan")
    return r, up, lan


def test_peer_add_list_show_set_delete(cli, store, gw):  # noqa: F811
    r, up, lan = gw
    p = create(cli, "bgp", "peer", "add", "uplink", "--local-as", "64512", "--peer-address",
               "203.0.113.1", "--peer-as", "65000", "--name", "border-1")
    assert (p["port_id"], p["local_as"], p["peer_address"], p["peer_as"]) == \
        (up["id"], 64512, "203.0.113.1", 65000)
    assert (p["keepalive"], p["hold_time"], p["connect_retry"]) == (10, 30, 5)
    q = create(cli, "bgp", "peer", "create", up["id"], "--local-as", "64512",
               "--peer-address", "203.0.113.3", "--peer-as", "65001", "--keepalive", "20",
               "--hold-time", "60", "--connect-retry", "15")
    assert (q["keepalive"], q["hold_time"], q["connect_retry"], q["name"]) == (20, 60, 15, "")

    out = ok(cli("bgp", "peer", "add", "uplink", "--local-as", "64512", "--peer-address",
                 "203.0.113.4", "--peer-as", "65002")).out
    assert "peer_address:" in out and "203.0.113.4" in out and "state=down" in out

    # the table: the session's state, from what the gateway's agent publishes
    store.put_state(paths.bgp_peer_state(p["id"]), {
        "host_id": "gw-host-1", "state": "established", "since": 1.0,
        "prefixes_received": 12, "prefixes_advertised": 2})
    res = ok(cli("bgp", "peer", "list"))
    lines = res.out.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "PORT", "PEER"]
    assert "STATE" in lines[0] and "HOST" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert len(rows) == 3
    assert "established" in rows[p["id"]] and "gw-host-1" in rows[p["id"]]
    assert "12/2" in rows[p["id"]] and "10/30" in rows[p["id"]]
    assert "down" in rows[q["id"]] and "20/60" in rows[q["id"]]
    assert "border-1" in rows[p["id"]]
    # by port (id or name)
    for ref in ("uplink", up["id"]):
        got = ok(cli("--json", "bgp", "peer", "list", ref)).json()
        assert len(got) == 3
    assert ok(cli("--json", "bgp", "peer", "list", lan["id"])).json() == []
    # --json is accepted at every level of the nested group
    for argv in (("bgp", "peer", "list", "--json"), ("bgp", "--json", "peer", "list"),
                 ("bgp", "peer", "--json", "list")):
        assert len(ok(cli(*argv)).json()) == 3

    # show: by id or name
    for ref in (p["id"], "border-1"):
        out = ok(cli("bgp", "peer", "show", ref)).out
        assert "state=established" in out and "65000" in out and "hold_time" in out

    # set (alias update)
    got = ok(cli("--json", "bgp", "peer", "set", "border-1", "--hold-time", "90",
                 "--keepalive", "30", "--peer-as", "65010")).json()
    assert (got["hold_time"], got["keepalive"], got["peer_as"]) == (90, 30, 65010)
    got = ok(cli("--json", "bgp", "peer", "update", p["id"], "--name", "border-a")).json()
    assert got["name"] == "border-a"
    one_error_line(cli("bgp", "peer", "set", p["id"], "--name", "x", "--if-version", "0"), 1,
                   "409", "(field: version)")
    one_error_line(cli("bgp", "peer", "set", p["id"]), 2, "nothing to update",
                   "--hold-time")

    res = ok(cli("bgp", "peer", "delete", "border-a"))
    assert p["id"] in res.out and "deleted BGP peer" in res.out
    assert len(ok(cli("--json", "bgp", "peer", "list")).json()) == 2
    one_error_line(cli("bgp", "peer", "show", p["id"]), 1, "404")


def test_peer_errors_are_one_line(cli, gw):  # noqa: F811
    r, up, lan = gw
    base = ["bgp", "peer", "add", "uplink", "--local-as", "64512", "--peer-as", "65000"]
    one_error_line(cli(*base, "--peer-address", "10.9.9.9"), 1, "400",
                   "(field: peer_address)", "203.0.113.0/24")
    line = one_error_line(cli(*base, "--peer-address", "203.0.113.1", "--keepalive", "20"),
                          1, "400", "(field: keepalive)")
    assert "keepalive * 3 must not exceed hold_time" in line
    one_error_line(cli(*base, "--peer-address", "203.0.113.1", "--hold-time", "2"), 1,
                   "(field: hold_time)")
    one_error_line(cli("bgp", "peer", "add", "uplink", "--local-as", "0", "--peer-as", "1",
                       "--peer-address", "203.0.113.1"), 1, "(field: local_as)")
    line = one_error_line(cli("bgp", "peer", "add", "lan", "--local-as", "1", "--peer-as",
                              "2", "--peer-address", "10.0.1.2"), 1, "400",
                          "(field: port_id)")
    assert "exterior router port" in line
    ok(cli(*base, "--peer-address", "203.0.113.1"))
    one_error_line(cli(*base, "--peer-address", "203.0.113.1"), 1, "409",
                   "(field: peer_address)")
    # usage errors: exit 2, one line
    one_error_line(cli("bgp", "peer", "add", "uplink", "--local-as", "1"), 2, "required")
    one_error_line(cli(*base, "--peer-address", "203.0.113.9", "--keepalive", "ten"), 2,
                   "--keepalive")
    one_error_line(cli("bgp", "peer", "add"), 2)
    one_error_line(cli("bgp", "peer"), 2, "ACTION")
    one_error_line(cli("bgp"), 2, "ACTION")
    one_error_line(cli("bgp", "peer", "frobnicate"), 2, "frobnicate")
    # names that do not resolve
    one_error_line(cli(*base[:3], "nope", *base[4:], "--peer-address", "203.0.113.9"), 1,
                   "no port", "'nope'")
    one_error_line(cli("bgp", "peer", "show", "nope"), 1, "no BGP peer", "'nope'")
    one_error_line(cli("bgp", "peer", "delete", str(uuid.uuid4())), 1, "404")
    one_error_line(cli("bgp", "peer", "list", "nope"), 1, "no port")


def test_network_add_list_delete(cli, gw):  # noqa: F811
    r, up, lan = gw
    a = create(cli, "bgp", "network", "add", "uplink", "198.51.100.0/24")
    assert (a["port_id"], a["prefix"]) == (up["id"], "198.51.100.0/24")
    b = create(cli, "bgp", "network", "create", up["id"], "192.0.2.0/25")
    res = ok(cli("bgp", "network", "list"))
    lines = res.out.splitlines()
    assert lines[0].split() == ["ID", "PORT", "PREFIX"]
    assert [line.split()[0] for line in lines[1:]] == [b["id"], a["id"]]
    assert "198.51.100.0/24" in res.out
    assert len(ok(cli("--json", "bgp", "network", "list", "uplink")).json()) == 2
    assert ok(cli("--json", "bgp", "network", "list", "lan")).json() == []

    line = one_error_line(cli("bgp", "network", "add", "uplink", "198.51.100.1/24"), 1, "400",
                          "(field: prefix)")
    assert "did you mean 198.51.100.0/24?" in line
    line = one_error_line(cli("bgp", "network", "add", "uplink", "0.0.0.0/0"), 1, "400",
                          "(field: prefix)")
    assert "default route" in line
    one_error_line(cli("bgp", "network", "add", "uplink", "198.51.100.0/24"), 1, "409")
    one_error_line(cli("bgp", "network", "add", "lan", "10.0.0.0/8"), 1, "(field: port_id)")
    one_error_line(cli("bgp", "network", "add", "uplink"), 2, "prefix")

    res = ok(cli("bgp", "network", "delete", a["id"]))
    assert "deleted BGP network" in res.out and a["id"] in res.out
    one_error_line(cli("bgp", "network", "delete", a["id"]), 1, "404")
    one_error_line(cli("bgp", "network", "delete", "nope"), 1, "no BGP network")
    # deleting the port takes its BGP configuration along
    create(cli, "bgp", "peer", "add", "uplink", "--local-as", "1", "--peer-as", "2",
           "--peer-address", "203.0.113.1")
    ok(cli("port", "delete", up["id"]))
    assert ok(cli("--json", "bgp", "network", "list")).json() == []
    assert ok(cli("--json", "bgp", "peer", "list")).json() == []


def test_router_learned_routes(cli, store, gw):  # noqa: F811
    r, up, lan = gw
    res = ok(cli("router", "learned-routes", "edge"))
    assert res.out.split() == ["DESTINATION", "GATEWAY", "PORT", "WEIGHT"]
    for dst, w in (("0.0.0.0/0", 100), ("10.20.0.0/16", 50)):
        store.put_state(paths.learned_route_entry(r["id"], dst, "203.0.113.1", up["id"], w), {})
    res = ok(cli("router", "learned-routes", "edge"))
    lines = res.out.splitlines()
    assert lines[1].split() == ["10.20.0.0/16", "203.0.113.1", up["id"], "50"]
    assert lines[2].split() == ["0.0.0.0/0", "203.0.113.1", up["id"], "100"]
    got = ok(cli("--json", "router", "learned-routes", r["id"])).json()
    assert [x["dst_cidr"] for x in got] == ["10.20.0.0/16", "0.0.0.0/0"]
    assert all(x["learned"] is True for x in got)
    one_error_line(cli("router", "learned-routes", "nope"), 1, "no router")
    one_error_line(cli("router", "learned-routes", str(uuid.uuid4())), 1, "404")


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "bgp" in capsys.readouterr().out
    assert main(["bgp", "--help"]) == 0
    out = capsys.readouterr().out
    assert "peer" in out and "network" in out
    assert main(["bgp", "peer", "--help"]) == 0
    out = capsys.readouterr().out
    for action in ("list", "show", "add", "set", "delete"):
        assert action in out
    assert main(["router", "--help"]) == 0
    assert "learned-routes" in capsys.readouterr().out


def test_status_summarises_bgp_sessions():
    from midoflow.cli.status import format_status

    out = format_status({"store": {"backend": "memory", "connected": True}, "hosts": [],
                         "bgp_peers": [
                             {"peer_address": "192.0.2.2", "peer_as": 65000, "port_id": "u1",
                              "status": {"state": "established"}},
                             {"peer_address": "192.0.2.6", "peer_as": 65000, "port_id": "u2",
                              "status": {"state": "down"}}]})
    assert "bgp:    1 of 2 sessions established" in out
    assert "192.0.2.6 (AS 65000) on port u2: down" in out
    assert "192.0.2.2 (AS" not in out


def test_peer_status_shows_history_and_counters(cli, store, gw):  # noqa: F811
    p = create(cli, "bgp", "peer", "add", "uplink", "--local-as", "64512", "--peer-address",
               "203.0.113.1", "--peer-as", "65000", "--name", "border-1")
    assert ok(cli("bgp", "peer", "status", "border-1")).out.split() == ["state:", "down"]
    store.put_state(paths.bgp_peer_state(p["id"]), {
        "host_id": "gw1", "state": "active", "since": 1700000000.0, "flaps": 2,
        "last_error": "notification received: hold timer expired",
        "last_error_at": 1700000000.0, "prefixes_received": 1200, "prefixes_accepted": 1000,
        "prefixes_refused": 200, "prefixes_filtered": 0, "prefixes_stale": 0,
        "prefix_limit": 1000, "prefixes_advertised": 1})
    out = ok(cli("bgp", "peer", "status", "border-1")).out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["state"].strip() == "active" and lines["flaps"].strip() == "2"
    assert lines["last_error"].strip() == "notification received: hold timer expired"
    assert "s ago)" in lines["since"]
    assert (lines["prefixes_accepted"].strip(), lines["prefixes_refused"].strip()) == \
        ("1000", "200")
    got = ok(cli("--json", "bgp", "peer", "status", p["id"])).json()
    assert got["since"] == 1700000000.0 and got["prefixes_received"] == 1200
    one_error_line(cli("bgp", "peer", "status", "nope"), 1, "no BGP peer")
