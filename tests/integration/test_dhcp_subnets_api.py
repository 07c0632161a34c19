"""DHCP subnets (issue 12) over a real ZooKeeper: the REST API and the
``midoflow dhcp-subnet`` CLI write them, and an agent's topology cache on
another session follows every create, update and delete (and a bridge's
cascade) within the watch latency."""

from __future__ import annotations

import json
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from midoflow.agent.cache import TopologyCache
from midoflow.cli.main import main
from midoflow.rest.app import make_app
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

WATCH = 3.0  # seconds a watch may take to reach the cache


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _Server(WSGIServer):
    daemon_threads = True


@pytest.fixture
def world(zk_store_factory, capsys, monkeypatch):
    """(run the CLI, the agent's cache) over one ZooKeeper root."""
    server = make_server("127.0.0.1", 0, make_app(zk_store_factory()), _Server, _Quiet)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    monkeypatch.setenv("MIDOFLOW_API", f"http://127.0.0.1:{server.server_port}")

    def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    cache = TopologyCache(zk_store_factory(), lambda _tags: None)
    cache.start()
    try:
        yield cli, cache
    finally:
        server.shutdown()
        server.server_close()


def _ok(cli, *argv: str) -> dict | list | None:
    rc, out, err = cli("--json", *argv)
    assert rc == 0 and err == "", (rc, out, err)
    return json.loads(out) if out.strip() else None


def _fails(cli, rc: int, *argv: str) -> str:
    got, out, err = cli(*argv)
    assert got == rc, (got, out, err)
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_cli_and_cache_follow_dhcp_subnets(world):
    cli, cache = world
    b = _ok(cli, "bridge", "create", "--name", "tenant-net", "--mtu", "1400")
    assert b["mtu"] == 1400
    s = _ok(cli, "dhcp-subnet", "create", "--bridge", "tenant-net", "--cidr", "10.0.0.0/24",
            "--gateway", "10.0.0.1", "--dns", "192.0.2.53", "--dns", "192.0.2.54",
            "--domain", "example.org", "--lease-time", "600",
            "--host-route", "192.168.0.0/16,10.0.0.254")
    assert s["host_routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]
    got = wait_until(lambda: cache.dhcp_subnets(b["id"]), WATCH, "the cache to see the subnet")
    assert got[0].id == s["id"] and got[0].dns_servers == ("192.0.2.53", "192.0.2.54")
    assert got[0].lease_time == 600 and got[0].domain_name == "example.org"
    wait_until(lambda: cache.bridge(b["id"]) and cache.bridge(b["id"]).mtu == 1400, WATCH,
               "the bridge's MTU in the cache")

    _ok(cli, "dhcp-subnet", "update", s["id"], "--disable", "--no-dns", "--no-gateway")
    wait_until(lambda: not cache.dhcp_subnets(b["id"])[0].enabled, WATCH, "the disabled flag")
    sub = cache.dhcp_subnets(b["id"])[0]
    assert sub.dns_servers == () and sub.gateway_ip is None
    rows = _ok(cli, "dhcp-subnet", "list", "--bridge", "tenant-net")
    assert [r["id"] for r in rows] == [s["id"]]
    rc, out, _ = cli("dhcp-subnet", "list")
    assert rc == 0 and "10.0.0.0/24" in out and "CIDR" in out

    # refusals: one line naming what is wrong; nothing changes
    assert "overlaps" in _fails(cli, 1, "dhcp-subnet", "create", "--bridge", "tenant-net",
                                "--cidr", "10.0.0.128/25")
    assert "gateway_ip" in _fails(cli, 1, "dhcp-subnet", "create", "--bridge", "tenant-net",
                                  "--cidr", "10.0.1.0/24", "--gateway", "10.0.2.1")
    assert "DEST" in _fails(cli, 2, "dhcp-subnet", "create", "--bridge", "tenant-net",
                            "--cidr", "10.0.1.0/24", "--host-route", "10.9.0.0/16")
    assert "nothing to update" in _fails(cli, 2, "dhcp-subnet", "update", s["id"])
    assert len(_ok(cli, "dhcp-subnet", "list")) == 1

    s2 = _ok(cli, "dhcp-subnet", "create", "--bridge", b["id"], "--cidr", "10.0.1.0/24")
    wait_until(lambda: len(cache.dhcp_subnets(b["id"])) == 2, WATCH, "the second subnet")
    _ok(cli, "dhcp-subnet", "delete", s2["id"])
    wait_until(lambda: len(cache.dhcp_subnets(b["id"])) == 1, WATCH, "the delete")
    # the bridge goes with its subnets, in one commit
    _ok(cli, "bridge", "delete", "tenant-net")
    wait_until(lambda: cache.dhcp_subnets(b["id"]) == (), WATCH, "the cascade")
    assert _ok(cli, "dhcp-subnet", "list") == []


def test_port_and_router_port_fields_through_the_cli(world):
    cli, cache = world
    b = _ok(cli, "bridge", "create", "--name", "net")
    p = _ok(cli, "port", "create", "--bridge", "net", "--fixed-ip", "10.0.0.5",
            "--instance-id", "i-42", "--instance-tenant", "t1", "--hostname", "web1",
            "--extra-dhcp-opt", "domain-search=example.org", "--extra-dhcp-opt", "42=192.0.2.1")
    assert p["extra_dhcp_opts"] == [{"opt_name": "domain-search", "opt_value": "example.org"},
                                    {"opt_name": "42", "opt_value": "192.0.2.1"}]
    port = wait_until(lambda: cache.port(p["id"]), WATCH, "the port in the cache")
    assert (port.instance_id, port.tenant_id, port.hostname) == ("i-42", "t1", "web1")
    assert port.extra_dhcp_opts == (("domain-search", "example.org"), ("42", "192.0.2.1"))
    _ok(cli, "port", "update", p["id"], "--no-extra-dhcp-opts", "--hostname", "web2")
    wait_until(lambda: cache.port(p["id"]).hostname == "web2", WATCH, "the new host name")
    assert cache.port(p["id"]).extra_dhcp_opts == ()
    assert "opt_name" in _fails(cli, 1, "port", "update", p["id"], "--extra-dhcp-opt",
                                "bogus=1")
    r = _ok(cli, "router", "create", "--name", "r")
    up = _ok(cli, "router", "add-port", r["id"], "--ip", "192.0.2.2/24", "--mtu", "9000")
    assert up["mtu"] == 9000
    wait_until(lambda: cache.port(up["id"]) and cache.port(up["id"]).mtu == 9000, WATCH,
               "the uplink's MTU")
    assert _ok(cli, "port", "update", up["id"], "--default-mtu")["mtu"] is None
    assert _ok(cli, "port", "update", up["id"], "--mtu", "1500")["mtu"] == 1500
    assert "mtu" in _fails(cli, 1, "port", "update", p["id"], "--mtu", "1500")
    _ok(cli, "bridge", "update", "net", "--mtu", "1300")
    wait_until(lambda: cache.bridge(b["id"]).mtu == 1300, WATCH, "the bridge's MTU")
    _ok(cli, "bridge", "update", "net", "--default-mtu")
    wait_until(lambda: cache.bridge(b["id"]).mtu is None, WATCH, "the default MTU")
