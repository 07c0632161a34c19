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
    rest_app = pytest.importorskip("midoflow.rest.app", reason="REST API not written yet")
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
    for c in ("host", "tunnel-zone", "bridge", "port", "status"):
        assert c in out


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
