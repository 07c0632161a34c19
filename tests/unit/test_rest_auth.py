"""Both APIs behind one application (midoflow.rest.auth): who may use /v1 and
the Neutron API, with the identity auth_token would put in the headers faked
here; no-auth mode's loopback-only rule; the server's auth options."""

from __future__ import annotations

import http.client
import json

import pytest
import webob

from midoflow.rest.auth import (
    NEEDS_ADMIN,
    AuthConfig,
    AuthConfigError,
    RootApp,
    is_loopback,
    make_root_app,
)
from midoflow.rest.server import serve_in_thread
from midoflow.store.memory import MemoryStore

KS = "http://127.0.0.1:9/v3"  # nothing listens on port 9 (discard): never contacted here
OPTIONS = {"auth_url": KS, "www_authenticate_uri": KS, "username": "midoflow",
           "password": "pw", "project_name": "service", "auth_type": "password"}
ADMIN = {"X-Identity-Status": "Confirmed", "X-Roles": "admin,reader,member",
         "X-Project-Id": "adminproj", "X-User-Id": "admin"}
MEMBER = {"X-Identity-Status": "Confirmed", "X-Roles": "member,reader",
          "X-Project-Id": "p1proj", "X-User-Id": "p1user"}


@pytest.fixture
def store():
    s = MemoryStore()
    yield s
    s.close()


@pytest.fixture
def root(store):
    """The application auth_token would wrap: identities are faked in the headers."""
    return RootApp(store, AuthConfig.keystone(OPTIONS))


def _get(app, path: str, headers: dict | None = None) -> webob.Response:
    return webob.Request.blank(path, headers=headers or {}).get_response(app)


@pytest.mark.parametrize("headers", [{}, {"X-Identity-Status": "Invalid"}])
def test_native_api_without_identity_is_401(root, headers):
    resp = _get(root, "/v1/hosts", headers)
    assert resp.status_int == 401
    body = resp.json
    assert body["error"] == "Unauthorized"
    assert "OS_AUTH_URL" in body["message"] and "admin role" in body["message"]


def test_native_api_needs_the_admin_role(root):
    resp = _get(root, "/v1/hosts", MEMBER)
    assert resp.status_int == 403
    assert resp.json == {"error": "Forbidden", "message": NEEDS_ADMIN}
    assert _get(root, "/v1", MEMBER).status_int == 403


def test_native_api_serves_an_admin(root):
    resp = _get(root, "/v1/hosts", ADMIN)
    assert resp.status_int == 200 and resp.json == []


def test_neutron_version_document_needs_no_token(root):
    resp = _get(root, "/")
    assert resp.status_int == 200
    assert any(v["id"] == "v2.0" for v in resp.json["versions"])


def test_neutron_resources_need_an_identity(root):
    resp = _get(root, "/v2.0/networks")
    assert resp.status_int == 401
    assert resp.json["NeutronError"]["type"] == "NotAuthorized"


def test_neutron_resources_serve_a_project_member(root):
    resp = _get(root, "/v2.0/networks", MEMBER)
    assert resp.status_int == 200 and resp.json["networks"] == []


def test_a_path_like_v1_is_not_the_native_api(root):
    """/v10 and /v1x belong to the Neutron side (its 404), not to /v1."""
    resp = _get(root, "/v1x/hosts", ADMIN)
    assert resp.status_int == 404 and "NeutronError" in resp.json


def test_noauth_serves_everyone_everything(store):
    app = make_root_app(store, auth=AuthConfig.noauth())
    assert _get(app, "/v1/hosts").status_int == 200
    assert _get(app, "/v2.0/networks").status_int == 200


def test_keystone_mode_is_behind_auth_token_which_strips_forged_identities(store):
    """A client cannot claim an identity: auth_token removes X-Identity-Status,
    X-Roles... it did not set (no token: Keystone is not even asked)."""
    from keystonemiddleware.auth_token import AuthProtocol

    app = make_root_app(store, auth=AuthConfig.keystone(OPTIONS))
    assert isinstance(app.app, AuthProtocol)  # inside the metrics middleware
    resp = _get(app, "/v1/hosts", ADMIN)
    assert resp.status_int == 401 and resp.json["error"] == "Unauthorized"
    assert resp.headers.getall("WWW-Authenticate") == [f'Keystone uri="{KS}"']
    resp = _get(app, "/v2.0/networks", MEMBER)
    assert resp.status_int == 401 and "NeutronError" in resp.json
    assert resp.headers.getall("WWW-Authenticate") == [f'Keystone uri="{KS}"']
    assert _get(app, "/").status_int == 200


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.org"])
def test_noauth_refuses_non_loopback_addresses(host):
    with pytest.raises(AuthConfigError, match="no-auth mode refuses to listen on"):
        AuthConfig.noauth().check_listen(host)
    AuthConfig.keystone(OPTIONS).check_listen(host)  # Keystone mode may listen anywhere


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host):
    assert is_loopback(host)
    AuthConfig.noauth().check_listen(host)


def test_serve_in_thread_is_noauth_on_loopback_only(store):
    with pytest.raises(AuthConfigError, match="0.0.0.0"):
        serve_in_thread(store, host="0.0.0.0")


def test_server_main_refuses_noauth_on_all_addresses(capsys):
    from midoflow.rest.server import main

    with pytest.raises(SystemExit) as e:
        main(["--auth", "noauth", "--host", "0.0.0.0"])
    assert e.value.code == 2
    assert "no-auth mode refuses to listen on 0.0.0.0" in capsys.readouterr().err


def test_server_main_needs_keystone_settings_by_default(capsys, monkeypatch):
    from midoflow.rest.server import main

    for var in ("URL", "USER", "PROJECT", "PASSWORD", "PASSWORD_FILE", "CONFIG"):
        monkeypatch.delenv(f"MIDOFLOW_KEYSTONE_{var}", raising=False)
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "auth_url, password" in err and "--auth noauth" in err


def test_auth_config_from_environment_file_and_arguments(tmp_path):
    pwfile = tmp_path / "pw"
    pwfile.write_text("s3cret\n")
    cfg = AuthConfig.load(env={"MIDOFLOW_KEYSTONE_URL": KS,
                               "MIDOFLOW_KEYSTONE_PASSWORD_FILE": str(pwfile)})
    assert cfg.options["password"] == "s3cret" and cfg.options["username"] == "midoflow"
    assert cfg.options["project_name"] == "service" and cfg.options["auth_url"] == KS
    assert cfg.options["delay_auth_decision"] is True
    cfg = AuthConfig.load(url=KS, user="u", project="p", password="x",
                          env={"MIDOFLOW_KEYSTONE_PASSWORD": "ignored"})
    assert (cfg.options["username"], cfg.options["project_name"],
            cfg.options["password"]) == ("u", "p", "x")
    ini = tmp_path / "neutron.conf"
    ini.write_text(f"[keystone_authtoken]\nauth_url = {KS}\nwww_authenticate_uri = {KS}\n"
                   "username = neutron\npassword = npw\nproject_name = service\n"
                   "region_name = RegionOne\n")
    cfg = AuthConfig.load(config_file=str(ini), env={})
    assert cfg.options["username"] == "neutron" and cfg.options["region_name"] == "RegionOne"
    with pytest.raises(AuthConfigError, match="no .keystone_authtoken. section"):
        (tmp_path / "empty.conf").write_text("[DEFAULT]\n")
        AuthConfig.load(config_file=str(tmp_path / "empty.conf"), env={})
    with pytest.raises(AuthConfigError, match="cannot read the Keystone password file"):
        AuthConfig.load(url=KS, password_file=str(tmp_path / "missing"), env={})


def test_api_app_refuses_noauth_on_all_addresses(monkeypatch):
    from midoflow.apps import api as api_app

    for var in ("URL", "USER", "PROJECT", "PASSWORD", "PASSWORD_FILE", "CONFIG"):
        monkeypatch.delenv(f"MIDOFLOW_KEYSTONE_{var}", raising=False)

    api_app.CONF.set_override("midoflow_auth", "noauth")
    api_app.CONF.set_override("midoflow_api_host", "0.0.0.0")
    try:
        with pytest.raises(SystemExit, match="no-auth mode refuses"):
            api_app.auth_config()
        api_app.CONF.set_override("midoflow_api_host", "127.0.0.1")
        assert api_app.auth_config().is_noauth
        api_app.CONF.set_override("midoflow_auth", "keystone")
        with pytest.raises(SystemExit, match="auth_url"):
            api_app.auth_config()
    finally:
        for opt in ("midoflow_auth", "midoflow_api_host"):
            api_app.CONF.clear_override(opt)


def test_thread_server_closes_each_connection_cleanly(store):
    """wsgiref answers HTTP/1.0 and closes: a client that reuses connections
    (keystoneauth) knows not to (an HTTP/1.1 answer without Connection: close
    followed by a close is what made Keystone's uwsgi --http-socket flaky)."""
    srv = serve_in_thread(store)
    try:
        host, port = srv.httpd.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=5)
        for _ in range(2):  # the second request reconnects on its own
            conn.request("GET", "/v1/hosts")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == []
            assert resp.version == 10 and resp.will_close
        conn.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("debug", [False, True])
def test_auth_token_start_up_warnings_are_quiet_unless_debugging(store, debug):
    """Each of auth_token's loggers by name at ERROR (a Mininet process gives
    every logger a level of its own), left alone when the operator debugs."""
    import logging

    from midoflow.rest.auth import QUIET_LOGGERS

    loggers = [logging.getLogger(n) for n in (*QUIET_LOGGERS, "midoflow")]
    saved = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.NOTSET)
        logging.getLogger("midoflow").setLevel(logging.DEBUG if debug else logging.INFO)
        make_root_app(store, auth=AuthConfig.keystone(OPTIONS))
        assert [lg.level for lg in loggers[:-1]] == \
            [logging.NOTSET if debug else logging.ERROR] * len(QUIET_LOGGERS)
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)
