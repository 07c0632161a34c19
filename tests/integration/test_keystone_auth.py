"""Both APIs behind keystonemiddleware against the REAL Keystone
(``keystone_server``): tokens refused, a project member kept off /v1, an
admin let in, the ``midoflow`` CLI logging in with OS_*, and the unmodified
``openstack`` CLI finding midoflow's network endpoint through the catalog.

The API runs as it is deployed (``python -m midoflow.rest.server``: eventlet,
monkey-patched) and in a thread (``serve_in_thread`` with a Keystone
AuthConfig, as the OpenStack lab does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from midoflow.devenv.zookeeper import free_port
from midoflow.rest.auth import NEEDS_ADMIN, AuthConfig
from midoflow.rest.server import serve_in_thread
from midoflow.store.memory import MemoryStore
from tests.helpers import wait_until

pytestmark = [pytest.mark.keystone, pytest.mark.integration, pytest.mark.timeout(300)]

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tokens(keystone_server):
    ks = keystone_server
    return {"admin": ks.token("admin", ks.admin_password, "admin"),
            "p1user": ks.token("p1user", "p1pw", "p1"),
            "p2user": ks.token("p2user", "p2pw", "p2")}


@pytest.fixture(scope="module")
def server(keystone_server):
    """``python -m midoflow.rest.server`` (memory store) authenticating with
    the service user, its password in the environment (never on argv)."""
    conf = keystone_server.auth_conf
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "MIDOFLOW_KEYSTONE"))}
    env.update(MIDOFLOW_KEYSTONE_URL=conf["auth_url"], MIDOFLOW_KEYSTONE_USER=conf["username"],
               MIDOFLOW_KEYSTONE_PROJECT=conf["project_name"],
               MIDOFLOW_KEYSTONE_PASSWORD=conf["password"])
    proc = subprocess.Popen([sys.executable, "-m", "midoflow.rest.server", "--store", "memory",
                             "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the API server exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            return requests.get(url + "/", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    try:
        wait_until(up, 30, "the API server to answer GET /")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _get(url: str, token: str | None = None) -> requests.Response:
    headers = {"X-Auth-Token": token} if token else {}
    return requests.get(url, headers=headers, timeout=30)


def test_no_token_is_401_on_both_apis(server, keystone_server):
    r = _get(server + "/v1/hosts")
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    assert r.raw.headers.getlist("WWW-Authenticate") == [f'Keystone uri="{keystone_server.url}"']
    r = _get(server + "/v2.0/networks")
    assert r.status_code == 401 and "NeutronError" in r.json()
    assert r.raw.headers.getlist("WWW-Authenticate") == [f'Keystone uri="{keystone_server.url}"']


def test_version_document_needs_no_token(server):
    r = _get(server + "/")
    assert r.status_code == 200 and r.json()["versions"][0]["id"] == "v2.0"


def test_bad_and_forged_identities_are_401(server):
    for token in ("gAAAAAnot-a-token", "x" * 40):
        assert _get(server + "/v1/hosts", token).status_code == 401
        assert _get(server + "/v2.0/networks", token).status_code == 401
    forged = {"X-Identity-Status": "Confirmed", "X-Roles": "admin", "X-Project-Id": "p"}
    r = requests.get(server + "/v1/hosts", headers=forged, timeout=30)
    assert r.status_code == 401


def test_member_is_403_on_native_and_served_by_neutron(server, tokens):
    r = _get(server + "/v1/hosts", tokens["p1user"])
    assert r.status_code == 403 and r.json() == {"error": "Forbidden", "message": NEEDS_ADMIN}
    r = _get(server + "/v2.0/networks", tokens["p1user"])
    assert r.status_code == 200 and isinstance(r.json()["networks"], list)


def test_admin_is_served_by_native(server, tokens):
    r = _get(server + "/v1/hosts", tokens["admin"])
    assert r.status_code == 200 and r.json() == []


def test_token_validation_is_cached(server, keystone_server):
    """A fresh token's first validation asks Keystone; later ones come from
    auth_token's cache (figures printed with -s, with the time of an
    unauthenticated request sent while the first validation runs)."""
    import concurrent.futures

    token = keystone_server.token("admin", keystone_server.admin_password, "admin")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        t0 = time.monotonic()
        first = pool.submit(_get, server + "/v1/hosts", token)
        t_free = time.monotonic()
        assert _get(server + "/").status_code == 200
        free = time.monotonic() - t_free
        assert first.result().status_code == 200
        first_s = time.monotonic() - t0
    t0 = time.monotonic()
    assert _get(server + "/v1/hosts", token).status_code == 200
    cached_s = time.monotonic() - t0
    print(f"\ntoken validation: first {first_s * 1000:.0f} ms, cached {cached_s * 1000:.0f} ms; "
          f"concurrent unauthenticated request {free * 1000:.0f} ms")
    assert cached_s < first_s


def _cli(env: dict[str, str], *args: str, api: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    full.update(env)
    return subprocess.run([str(BIN / "midoflow"), "--api", api, *args], env=full,
                          capture_output=True, text=True, timeout=60)


def test_midoflow_cli_logs_in_with_os_variables(server, keystone_server):
    r = _cli(keystone_server.admin_env(), "host", "list", "--json", api=server)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    r = _cli(keystone_server.env("p1user", "p1pw", "p1"), "host", "list", api=server)
    assert r.returncode == 1 and "403" in r.stderr and "needs the admin role" in r.stderr
    r = _cli({}, "host", "list", api=server)
    assert r.returncode == 1
    assert "needs a Keystone token: set OS_AUTH_URL, OS_USERNAME, OS_PASSWORD" in r.stderr
    r = _cli(keystone_server.env("admin", "wrong", "admin"), "host", "list", api=server)
    assert r.returncode == 1 and "refused the login of user admin" in r.stderr


def _openstack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    full.update(env)
    return subprocess.run([str(BIN / "openstack"), *args], env=full, capture_output=True,
                          text=True, timeout=120)


def test_openstack_cli_finds_midoflow_in_the_catalog(server, keystone_server, tokens):
    """The unmodified client: a password login, the network endpoint from the
    catalog; p1's network is p1's only."""
    keystone_server.register_network_endpoint(server)
    r = requests.post(server + "/v2.0/networks", json={"network": {"name": "p1net"}},
                      headers={"X-Auth-Token": tokens["p1user"]}, timeout=30)
    assert r.status_code == 201, r.text
    net_id = r.json()["network"]["id"]
    p1 = _openstack(keystone_server.env("p1user", "p1pw", "p1"), "network", "list", "-f", "json")
    assert p1.returncode == 0, p1.stderr
    assert [(n["ID"], n["Name"]) for n in json.loads(p1.stdout)] == [(net_id, "p1net")]
    p2 = _openstack(keystone_server.env("p2user", "p2pw", "p2"), "network", "list", "-f", "json")
    assert p2.returncode == 0, p2.stderr
    assert json.loads(p2.stdout) == []


def test_thread_server_with_keystone(keystone_server, tokens):
    """serve_in_thread given a Keystone AuthConfig (the OpenStack lab's way)."""
    store = MemoryStore()
    srv = serve_in_thread(store, auth=AuthConfig.keystone(keystone_server.auth_conf))
    try:
        assert _get(srv.url + "/v1/hosts").status_code == 401
        assert _get(srv.url + "/v1/hosts", tokens["p2user"]).status_code == 403
        assert _get(srv.url + "/v1/hosts", tokens["admin"]).status_code == 200
        assert _get(srv.url + "/v2.0/networks", tokens["p2user"]).status_code == 200
    finally:
        srv.stop()
        store.close()


def test_a_missing_keystone_venv_says_what_to_run(tmp_path, monkeypatch):
    from midoflow.devenv.keystone import KeystoneError, KeystoneServer

    monkeypatch.setenv("MIDOFLOW_KEYSTONE_VENV", str(tmp_path / "nothing"))
    ks = KeystoneServer(tmp_path / "ks")
    with pytest.raises(KeystoneError, match=r"keystone-manage not found: run `make setup`"):
        ks.start()
    assert not ks.running()
