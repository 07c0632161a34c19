"""Issue 9 against a real ZooKeeper and the production API server (eventlet.wsgi
with kazoo's eventlet handler, green threads as under osken-manager).

* Concurrent rule creation jumping to chains other clients delete wedged that
  API (every call "no answer in 5.0 s") once kazoo's wake-up socket overflowed:
  it must keep answering, with no 5xx at all.
* Two (or N) creates of one id: exactly one 201, for every kind.
* A transaction over ZooKeeper's limit: 413, and the session survives.
* The watchdog: an unanswered call on a CONNECTED session is recovered.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from midoflow.devenv.zookeeper import free_port
from midoflow.errors import TooLarge, Unavailable
from midoflow.store.base import Create, Update
from tests.store_contract import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent("""
    import sys
    import eventlet
    eventlet.monkey_patch(thread=False)  # as osken-manager's hub.patch(thread=False)
    from midoflow.rest.auth import AuthConfig
    from midoflow.rest.server import serve
    from midoflow.store.zookeeper import ZkStore
    hosts, root, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = ZkStore(hosts, root=root, handler="eventlet", timeout=10.0)
    sock = eventlet.listen(("127.0.0.1", port))
    print("READY", flush=True)
    serve(store, sock=sock, auth=AuthConfig.noauth())
""")


class Api:
    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(self, method: str, path: str, body=None) -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            c.request(method, path, None if body is None else json.dumps(body), headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


@pytest.fixture
def eventlet_api(zk_store_factory, tmp_path):
    port = free_port()
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, zk_store_factory.hosts,
                             zk_store_factory.root, str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY", (tmp_path / "api.log").read_text()
        api = Api(port)
        api.log = tmp_path / "api.log"
        yield api
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def _no_traceback(body: bytes) -> None:
    assert b"Traceback" not in body and b'File "' not in body, body[:500]


def test_rule_jump_delete_race_never_wedges_the_eventlet_api(eventlet_api):
    api = eventlet_api
    chains: list[str] = []
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    bad: list[bytes] = []
    stop = time.monotonic() + 15

    def worker(seed: int) -> None:
        import random

        rnd = random.Random(seed)
        while time.monotonic() < stop:
            with lock:
                pick = list(chains)
            r = rnd.random()
            if r < 0.3 or len(pick) < 3:
                s, d = api("POST", "/v1/chains", {"name": "c"})
                if s == 201:
                    with lock:
                        chains.append(json.loads(d)["id"])
            elif r < 0.8:
                a, b = rnd.sample(pick, 2)
                s, d = api("POST", f"/v1/chains/{a}/rules",
                           {"action": "jump", "jump_chain_id": b})
            else:
                a = rnd.choice(pick)
                s, d = api("DELETE", f"/v1/chains/{a}")
                if s == 204:
                    with lock:
                        if a in chains:
                            chains.remove(a)
            with lock:
                statuses[s] = statuses.get(s, 0) + 1
                if s >= 500:
                    bad.append(d)
            _no_traceback(d)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, f"{statuses}: {bad[:3]}"
    assert statuses.get(201, 0) > 50, statuses
    t0 = time.monotonic()
    s, d = api("GET", "/v1/chains")
    assert s == 200 and time.monotonic() - t0 < 2.0, d


KINDS = {  # path -> body of a create with an explicit id
    "/v1/hosts": {"name": "h"}, "/v1/tunnel_zones": {"name": "tz"},
    "/v1/bridges": {"name": "br"}, "/v1/routers": {"name": "rt"},
    "/v1/chains": {"name": "c"}, "/v1/port_groups": {"name": "pg"},
    "/v1/ip_addr_groups": {"name": "ipg", "addresses": ["10.0.0.1"]},
    "/v1/security_groups": {"name": "sg"},
}


@pytest.mark.parametrize("path", sorted(KINDS))
def test_n_concurrent_creates_of_one_id_give_one_201(eventlet_api, path):
    api = eventlet_api
    for _ in range(5):
        oid = str(uuid.uuid4())
        barrier = threading.Barrier(8)
        results: list[tuple[int, bytes]] = []

        def create(oid=oid, barrier=barrier, results=results) -> None:
            barrier.wait()
            results.append(api("POST", path, dict(KINDS[path], id=oid)))

        threads = [threading.Thread(target=create) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(s for s, _ in results)
        assert codes == [201] + [409] * 7, (codes, [d[:200] for _, d in results])
        for _, d in results:
            _no_traceback(d)
        s, d = api("GET", f"{path}/{oid}")
        assert s == 200 and json.loads(d)["version"] == 0


def test_child_creates_of_one_id_give_one_201(eventlet_api):
    api = eventlet_api
    _, d = api("POST", "/v1/bridges", {"name": "br"})
    br = json.loads(d)["id"]
    _, d = api("POST", "/v1/routers", {"name": "rt"})
    rt = json.loads(d)["id"]
    _, d = api("POST", "/v1/chains", {"name": "c"})
    ch = json.loads(d)["id"]
    cases = [(f"/v1/bridges/{br}/ports", lambda i: {}),
             (f"/v1/routers/{rt}/ports",
              lambda i: {"ip_address": f"10.{i}.0.1", "prefix_len": 24}),
             (f"/v1/routers/{rt}/routes",
              lambda i: {"dst_cidr": f"10.{i}.0.0/16", "type": "blackhole"}),
             (f"/v1/chains/{ch}/rules", lambda i: {"action": "accept"})]
    for path, body in cases:
        oid = str(uuid.uuid4())
        barrier = threading.Barrier(6)
        results: list[int] = []

        def create(i, path=path, body=body, oid=oid, barrier=barrier, results=results):
            barrier.wait()
            results.append(api("POST", path, dict(body(i + 1), id=oid))[0])

        threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # the losers are 409: the id exists, or the parent changed meanwhile
        assert sorted(results) == [201] + [409] * 5, (path, results)


def test_oversized_transaction_is_413_and_the_session_survives(zk_store, eventlet_api):
    zk_store.commit([Create("ip_addr_groups", {"id": "g", "addresses": []})])
    big = {"id": "g", "addresses": [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
                                    for i in range(80000)]}
    session = zk_store._client.client_id
    with pytest.raises(TooLarge, match="limit"):
        zk_store.commit([Update("ip_addr_groups", big)])
    assert zk_store.get("ip_addr_groups", "g")[1] == 0
    assert zk_store._client.client_id == session and zk_store.health()["connected"]
    # through the API: a port whose generated chains are over the limit
    api = eventlet_api
    _, d = api("POST", "/v1/bridges", {"name": "br"})
    br = json.loads(d)["id"]
    _, d = api("POST", "/v1/security_groups", {"name": "sg"})
    sg = json.loads(d)["id"]
    ips = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(1, 6001)]
    s, d = api("POST", f"/v1/bridges/{br}/ports",
               {"mac": "02:00:00:00:00:07", "fixed_ips": ips, "security_group_ids": [sg],
                "port_security_enabled": True})
    assert s == 413 and b"limit" in d, d
    assert api("GET", "/v1/bridges")[0] == 200


def test_watchdog_wakes_a_stalled_connection_loop(zk_store_factory):
    """A request left queued without its wake-up byte (what eventlet's
    simultaneous-write error did) stalls every later call: the watchdog wakes
    the loop and the store answers again, same session."""
    store = zk_store_factory(op_timeout=1.0)
    store.commit([Create("bridges", {"id": "b1"})])
    client = store._client
    del client._connection._send_request  # kazoo's own sends (zk_send's batches heal this)
    from kazoo.protocol.serialization import Exists

    client._queue.append((Exists(store.root, None), client.handler.async_result()))
    with pytest.raises(Unavailable, match="no answer"):
        store.get("bridges", "b1")
    wait_until(lambda: _answers(store), timeout=10)
    assert store._client is client and store.recoveries == 0


def test_watchdog_replaces_a_client_that_stays_stuck(zk_store_factory, monkeypatch):
    """If waking does not help, a new kazoo client (a new session) takes over:
    calls answer again, watches keep firing, ephemeral state is re-created."""
    from midoflow.store import zookeeper as zkmod

    store = zk_store_factory(op_timeout=1.0)
    other = zk_store_factory()
    seen: list[list[str]] = []
    store.watch_kind("bridges", lambda ids: seen.append(ids))
    store.put_state("state/hosts/h1", {"up": True})
    old = store._client
    del old._connection._send_request  # kazoo's own sends (zk_send's batches heal this)
    monkeypatch.setattr(zkmod, "_wake", lambda client: None)  # waking does not help
    from kazoo.protocol.serialization import Exists

    old._queue.append((Exists(store.root, None), old.handler.async_result()))
    with pytest.raises(Unavailable):
        store.get("bridges", "b1")
    wait_until(lambda: store.recoveries == 1 and _answers(store), timeout=20)
    assert store._client is not old
    other.commit([Create("bridges", {"id": "b2"})])
    wait_until(lambda: seen and seen[-1] == ["b2"], timeout=10)
    wait_until(lambda: other.get_state("state/hosts/h1") == {"up": True}, timeout=10)


def _answers(store) -> bool:
    try:
        store.list("bridges")
        return True
    except Unavailable:
        return False


def test_eventlet_api_hostile_wire_requests(eventlet_api):
    """Through eventlet.wsgi itself: bad encoding is 400 without a traceback, a
    chunked body is read, an aborted upload costs one log line and no traceback."""
    import socket

    api = eventlet_api

    def raw(request: bytes, close_early: bool = False) -> bytes:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
            s.sendall(request)
            if close_early:
                return b""
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data

    for target in (b"/v1/bridges/%ff", b"/v1/bridges?tenant_id=%ff"):
        out = raw(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400"), out[:200]
        _no_traceback(out)
    body = b'{"name": "chunked"}'
    out = raw(b"POST /v1/bridges HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert out.startswith(b"HTTP/1.1 201") and b'"chunked"' in out, out[:300]
    raw(b"POST /v1/bridges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{\"name\": ", close_early=True)
    wait_until(lambda: "client gone" in api.log.read_text(), timeout=10)
    assert api("GET", "/v1/bridges")[0] == 200
    log = api.log.read_text()
    assert "Traceback" not in log, log
    assert len([ln for ln in log.splitlines() if "client gone" in ln]) == 1, log
