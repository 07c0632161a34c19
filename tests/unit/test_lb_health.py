"""Health checks: the member state machine and schedule on a fake clock, the
probes against real loopback TCP/HTTP(S) servers, the leader's bookkeeping
and the in-memory election."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from midoflow.agent.healthcheck import HealthChecks, namespace_name, plan
from midoflow.lb.health import Monitor, Schedule, Target
from midoflow.lb.probes import ProbeResult, http_probe, parse_expected_codes, tcp_probe
from midoflow.model import (
    HEALTH_ERROR,
    HEALTH_MONITORS,
    HEALTH_ONLINE,
    HM_HTTP,
    LOAD_BALANCERS,
    POOL_MEMBERS,
    POOLS,
    LoadBalancer,
)
from midoflow.store import paths
from midoflow.store.base import Create, Delete, Update
from midoflow.store.memory import MemoryBackend, MemoryStore

# ---- expected codes ------------------------------------------------------------


@pytest.mark.parametrize(("text", "codes"), [
    ("200", {200}), ("200,202", {200, 202}), ("200-204", {200, 201, 202, 203, 204}),
    (" 200 , 301-302 ", {200, 301, 302}),
])
def test_expected_codes(text, codes):
    assert parse_expected_codes(text) == codes


@pytest.mark.parametrize("text", ["", "20", "abc", "204-200", "99", "600", "200,", "2000"])
def test_expected_codes_refused_with_a_hint(text):
    with pytest.raises(ValueError, match="200-204"):
        parse_expected_codes(text)


# ---- state machine and schedule ------------------------------------------------

MON = Monitor(delay=5, timeout=3, max_retries=3, max_retries_down=2)


def target(mid="m1", monitor=MON, address="10.0.0.5", port=80):
    return Target(mid, "p1", "lb1", address, port, monitor)


def run(s: Schedule, t: Target, results: list[bool]) -> list:
    return [s.result(t, ok, "ok" if ok else "refused") for ok in results]


def test_never_checked_member_goes_online_after_max_retries_successes():
    s = Schedule()
    t = target()
    s.set_targets({t.member_id: t}, {}, now=0)
    changes = run(s, t, [True, True, True, True])
    assert changes[:2] == [None, None]
    assert changes[2].status == HEALTH_ONLINE and changes[3] is None
    assert s.status("m1") == HEALTH_ONLINE


def test_error_after_max_retries_down_failures_in_a_row():
    s = Schedule()
    t = target()
    s.set_targets({t.member_id: t}, {"m1": HEALTH_ONLINE}, now=0)
    # a success between failures starts the count again
    assert run(s, t, [False, True, False]) == [None, None, None]
    change = s.result(t, False, "connection refused")
    assert change.status == HEALTH_ERROR and change.reason == "connection refused"
    assert run(s, t, [False]) == [None]  # no write while it stays ERROR


def test_stored_error_stays_until_max_retries_successes():
    """A new leader starts from the stored entries."""
    s = Schedule()
    t = target()
    s.set_targets({t.member_id: t}, {"m1": HEALTH_ERROR}, now=0)
    assert s.status("m1") == HEALTH_ERROR
    assert run(s, t, [True, True]) == [None, None]
    assert s.status("m1") == HEALTH_ERROR
    assert s.result(t, True, "HTTP 200").status == HEALTH_ONLINE


def test_probes_every_delay_never_doubled():
    s = Schedule()
    t = target()
    s.set_targets({t.member_id: t}, {}, now=100)
    assert s.due(100) == [t]  # at once
    assert s.due(100) == [] and s.due(106) == []  # still running
    s.result(t, True, "ok")
    assert s.due(104.9) == []
    assert s.due(105) == [t]  # delay counted from the previous start
    assert s.next_due() is None  # running
    s.result(t, True, "ok")
    assert s.next_due() == 110


def test_not_allowed_targets_wait():
    s = Schedule()
    t = target()
    s.set_targets({t.member_id: t}, {}, now=0)
    assert s.due(1, lambda _t: False) == []
    assert s.due(1, lambda _t: True) == [t]


def test_changed_or_removed_targets():
    s = Schedule()
    t = target()
    s.set_targets({t.member_id: t}, {}, now=0)
    s.due(0)
    run(s, t, [True, True])
    t2 = target(port=8080)
    s.set_targets({t.member_id: t2}, {}, now=1)
    assert s.result(t, True, "late result of the old probe") is None
    assert run(s, t2, [True, True]) == [None, None]  # a new run: 3 successes needed
    assert s.result(t2, True, "ok").status == HEALTH_ONLINE
    s.set_targets({}, {}, now=2)
    assert s.status("m1") is None and s.due(100) == []


# ---- probes against loopback servers -------------------------------------------


def factory():
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


# The member's server runs in a process of its own: a thread-based server in
# the test process hangs in shutdown() once eventlet.wsgi has been imported
# after threading (os-ken's hub does, when the integration tests are collected
# in the same run). Each request's "METHOD PATH" goes to a file.
_SERVER = r"""
import http.server, ssl, sys
code, log, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        with open(log, "a") as f:
            f.write(f"{self.command} {self.path}\n")
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"ok")
    do_GET = do_HEAD = do_POST = answer
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


@pytest.fixture
def server(tmp_path):
    """``server(code, tls_files=None)`` -> (port, seen(): the requests so far)."""
    made = []

    def start(code=200, tls=None):
        log = tmp_path / f"requests-{len(made)}"
        log.touch()
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(code), str(log),
                                 *(tls or ())], stdout=subprocess.PIPE, text=True)
        made.append(proc)
        port = int(proc.stdout.readline())

        def seen() -> list[tuple[str, str]]:
            return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]

        return port, seen

    yield start
    for proc in made:
        proc.kill()
        proc.wait(5)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tcp_probe_connects(server):
    port, _ = server()
    assert tcp_probe(factory, "127.0.0.1", port, 2) == ProbeResult(True, "connected")


def test_tcp_probe_refused():
    r = tcp_probe(factory, "127.0.0.1", closed_port(), 2)
    assert r == ProbeResult(False, "connection refused")


def test_probe_timeout_when_nothing_answers():
    """A server that accepts but never answers: the HTTP probe gives up at its timeout."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    try:
        r = http_probe(factory, "127.0.0.1", lsock.getsockname()[1], 0.3)
        assert r == ProbeResult(False, "timed out after 0.3 s")
    finally:
        lsock.close()


def test_http_probe_method_path_and_code(server):
    port, seen = server(200)
    r = http_probe(factory, "127.0.0.1", port, 2, method="HEAD", path="/healthz")
    assert r == ProbeResult(True, "HTTP 200")
    assert seen() == [("HEAD", "/healthz")]


def test_http_probe_wrong_code(server):
    port, _ = server(503)
    r = http_probe(factory, "127.0.0.1", port, 2, expected=parse_expected_codes("200-204"))
    assert r == ProbeResult(False, "HTTP 503, expected 200-204")
    r = http_probe(factory, "127.0.0.1", port, 2, expected=parse_expected_codes("200,503"))
    assert r.ok


def test_http_probe_refused_and_not_http(server):
    assert http_probe(factory, "127.0.0.1", closed_port(), 2).reason == "connection refused"
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def garbage():
        c, _ = lsock.accept()
        c.sendall(b"SSH-2.0-OpenSSH\r\n")
        c.close()

    threading.Thread(target=garbage, daemon=True).start()
    try:
        r = http_probe(factory, "127.0.0.1", lsock.getsockname()[1], 2)
        assert not r.ok and r.reason.startswith("not an HTTP answer")
    finally:
        lsock.close()


def test_https_probe_without_verification(server, tmp_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=member"],
                   check=True, capture_output=True)
    port, seen = server(200, tls=(str(cert), str(key)))
    assert http_probe(factory, "127.0.0.1", port, 3, tls=True) == ProbeResult(True, "HTTP 200")
    assert seen() == [("GET", "/")]
    # the same server spoken to in clear text fails
    assert not http_probe(factory, "127.0.0.1", port, 2).ok


# ---- the leader's bookkeeping --------------------------------------------------


def lb_world(store: MemoryStore, monitor_up=True, member_up=True):
    store.commit([
        Create(LOAD_BALANCERS, {"id": "lb-1", "router_id": "r1", "health_port_id": "hp1",
                                "health_cidr": "169.254.252.4/30"}),
        Create(POOLS, {"id": "p1", "load_balancer_id": "lb-1"}),
        Create(POOL_MEMBERS, {"id": "m1", "pool_id": "p1", "address": "10.0.0.5",
                              "protocol_port": 80, "admin_state_up": member_up}),
        Create(POOL_MEMBERS, {"id": "m2", "pool_id": "p1", "address": "10.0.0.6",
                              "protocol_port": 80}),
        Create(HEALTH_MONITORS, {"id": "hm1", "pool_id": "p1", "type": HM_HTTP, "delay": 2,
                                 "timeout": 1, "max_retries": 2, "max_retries_down": 1,
                                 "admin_state_up": monitor_up}),
    ])


def test_plan_links_and_targets():
    store = MemoryStore()
    lb_world(store, member_up=False)
    checks = HealthChecks(store, "host-a")
    links = checks.sync(0)
    link = links["lb-1"]
    assert link.namespace == namespace_name("lb-1", "host-a") == "mfhm-lb1-hosta"
    assert (link.ip, link.prefix_len, link.gateway, link.port_id) == \
        ("169.254.252.6", 30, "169.254.252.5", "hp1")
    assert set(checks.schedule.entries) == {"m2"}  # m1 is admin down
    t = checks.schedule.entries["m2"].target
    assert (t.address, t.port, t.monitor.type, t.monitor.delay) == ("10.0.0.6", 80, HM_HTTP, 2)


def test_no_monitor_no_checks():
    store = MemoryStore()
    lb_world(store, monitor_up=False)
    checks = HealthChecks(store, "h")
    assert checks.sync(0) == {} and checks.schedule.entries == {}
    # a load balancer without its health port yet is not checked either
    assert plan([LoadBalancer("lb", "r1")], [], [], [], "h").links == {}


def test_writes_on_change_only_and_takeover_keeps_status():
    backend = MemoryBackend()
    a = MemoryStore(backend)
    lb_world(a)
    checks = HealthChecks(a, "host-a", wall=lambda: 1234.0)
    checks.lead()
    checks.sync(0)
    (t1, t2) = sorted(checks.due(0, {"lb-1"}), key=lambda t: t.member_id)
    down = checks.report(t1, ProbeResult(False, "connection refused"))
    assert down.status == HEALTH_ERROR
    assert a.get_state(paths.member_health("m1")) == {
        "status": HEALTH_ERROR, "since": 1234.0, "host_id": "host-a",
        "reason": "connection refused"}
    assert checks.report(t2, ProbeResult(True, "HTTP 200")) is None  # 1 of 2 successes
    assert a.get_state(paths.member_health("m2")) is None
    # another agent takes over: m1 stays ERROR until max_retries (2) successes
    b = MemoryStore(backend)
    other = HealthChecks(b, "host-b")
    other.lead()
    other.sync(10)
    t1 = other.schedule.entries["m1"].target
    assert other.report(t1, ProbeResult(True, "HTTP 200")) is None
    assert b.get_state(paths.member_health("m1"))["status"] == HEALTH_ERROR
    assert other.report(t1, ProbeResult(True, "HTTP 200")).status == HEALTH_ONLINE
    assert b.get_state(paths.member_health("m1"))["host_id"] == "host-b"


def test_entries_deleted_with_their_member_or_monitor():
    store = MemoryStore()
    lb_world(store)
    checks = HealthChecks(store, "h")
    checks.lead()
    checks.sync(0)
    for t in checks.due(0, {"lb-1"}):
        checks.report(t, ProbeResult(False, "refused"))
    assert store.list_state(paths.MEMBER_HEALTH) == ["m1", "m2"]
    store.commit([Delete(POOL_MEMBERS, "m2")])
    checks.sync(1)
    assert store.list_state(paths.MEMBER_HEALTH) == ["m1"]
    hm, v = store.get(HEALTH_MONITORS, "hm1")
    store.commit([Update(HEALTH_MONITORS, {**hm, "admin_state_up": False}, v)])
    checks.sync(2)
    assert store.list_state(paths.MEMBER_HEALTH) == []


def test_failed_write_is_retried_with_the_next_result(monkeypatch):
    from midoflow.errors import Unavailable

    store = MemoryStore()
    lb_world(store)
    checks = HealthChecks(store, "h")
    checks.lead()
    checks.sync(0)
    t = checks.schedule.entries["m1"].target
    real = store.put_state

    def down(*a, **kw):
        raise Unavailable("no quorum (test)")

    monkeypatch.setattr(store, "put_state", down)
    assert checks.report(t, ProbeResult(False, "refused")) is None
    monkeypatch.setattr(store, "put_state", real)
    assert checks.report(t, ProbeResult(False, "refused")).status == HEALTH_ERROR
    assert store.get_state(paths.member_health("m1"))["status"] == HEALTH_ERROR


# ---- the in-memory election ----------------------------------------------------


def test_memory_election_hands_over_on_close_and_cancel():
    backend = MemoryBackend()
    a, b, c = MemoryStore(backend), MemoryStore(backend), MemoryStore(backend)
    log: list = []

    def join(store, name):
        return store.elect("state/lb/election", name, lambda: log.append(("lead", name)),
                           lambda: log.append(("lose", name)))

    ea, eb, ec = join(a, "a"), join(b, "b"), join(c, "c")
    assert (ea.leading, eb.leading, ec.leading) == (True, False, False)
    assert a.election_leader("state/lb/election") == "a"
    a.close()
    assert log == [("lead", "a"), ("lose", "a"), ("lead", "b")]
    assert eb.leading and c.election_leader("state/lb/election") == "b"
    ec.cancel()  # not leading: nobody is told
    eb.cancel()
    assert log[-1] == ("lose", "b") and c.election_leader("state/lb/election") is None
