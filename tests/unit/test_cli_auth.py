"""The ``midoflow`` CLI's OS_* login: a fake Keystone (a local HTTP server
issuing tokens) and the real API application, behind a stand-in for auth_token
that knows the fake's tokens."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from midoflow.cli.main import main
from midoflow.rest.auth import AuthConfig, RootApp
from midoflow.rest.server import BackgroundServer
from midoflow.store.memory import MemoryStore

ADMIN_ROLES = "admin,reader,member"


class FakeKeystone:
    """``POST /v3/auth/tokens``: a password login; hands out the next token of
    ``tokens`` (the last one again when they run out) to ``password``."""

    def __init__(self, password: str = "adminpw") -> None:
        self.password = password
        self.tokens = ["tok-admin"]
        self.logins: list[dict] = []
        ks = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ks.logins.append(body)
                ident = body["auth"]["identity"]["password"]["user"]
                if self.path != "/v3/auth/tokens" or ident.get("password") != ks.password:
                    return self._send(401, {"error": {"code": 401, "title": "Unauthorized",
                                                      "message": "bad credentials"}})
                token = ks.tokens.pop(0) if len(ks.tokens) > 1 else ks.tokens[0]
                doc = {"token": {
                    "methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                    "issued_at": "2026-01-01T00:00:00.000000Z",
                    "user": {"id": "u1", "name": ident.get("name"),
                             "domain": {"id": "default", "name": "Default"}},
                    "project": {"id": "p1", "name": "admin",
                                "domain": {"id": "default", "name": "Default"}},
                    "roles": [{"id": "r1", "name": "admin"}], "catalog": []}}
                self._send(201, doc, {"X-Subject-Token": token})

            def _send(self, status, doc, headers=None):
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v3"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeAuthToken:
    """Stands in for keystonemiddleware: known tokens become identities."""

    def __init__(self, app, identities: dict[str, str]) -> None:
        self.app = app
        self.identities = identities  # token -> roles
        self.seen: list[str | None] = []

    def __call__(self, environ, start_response):
        token = environ.get("HTTP_X_AUTH_TOKEN")
        self.seen.append(token)
        if token in self.identities:
            environ.update(HTTP_X_IDENTITY_STATUS="Confirmed",
                           HTTP_X_ROLES=self.identities[token], HTTP_X_PROJECT_ID="p1")
        else:
            environ["HTTP_X_IDENTITY_STATUS"] = "Invalid"
        return self.app(environ, start_response)


@pytest.fixture
def keystone():
    ks = FakeKeystone()
    yield ks
    ks.stop()


@pytest.fixture
def api():
    """The API in Keystone mode: tok-admin is an admin's, tok-member a member's."""
    store = MemoryStore()
    srv = BackgroundServer(store)
    auth = AuthConfig.keystone({"auth_url": "http://keystone.invalid/v3", "username": "m",
                                "password": "p", "project_name": "service"})
    fake = FakeAuthToken(RootApp(store, auth), {"tok-admin": ADMIN_ROLES,
                                                "tok-member": "member,reader"})
    srv.httpd.set_app(fake)
    srv.fake = fake
    srv.start()
    yield srv
    srv.stop()
    store.close()


@pytest.fixture
def os_env(monkeypatch):
    """A clean OS_* environment; returns a setter."""
    import os

    for k in list(os.environ):
        if k.startswith("OS_"):
            monkeypatch.delenv(k)

    def set_env(**kw: str) -> None:
        for k, v in kw.items():
            monkeypatch.setenv(k, v)
    return set_env


def _run(api, capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["--api", api.url, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _login_env(keystone, password="adminpw", **extra) -> dict[str, str]:
    return {"OS_AUTH_URL": keystone.url, "OS_USERNAME": "admin", "OS_PASSWORD": password,
            "OS_PROJECT_NAME": "admin", **extra}


def test_admin_login_sends_the_token(api, keystone, os_env, capsys):
    os_env(**_login_env(keystone))
    rc, out, err = _run(api, capsys, "host", "list", "--json")
    assert (rc, json.loads(out)) == (0, []), err
    assert api.fake.seen == ["tok-admin"]
    scope = keystone.logins[0]["auth"]["scope"]["project"]
    assert scope == {"name": "admin", "domain": {"name": "Default"}}
    user = keystone.logins[0]["auth"]["identity"]["password"]["user"]
    assert user["name"] == "admin" and user["domain"] == {"name": "Default"}


def test_domains_come_from_the_environment(api, keystone, os_env, capsys):
    os_env(**_login_env(keystone, OS_USER_DOMAIN_NAME="Users",
                        OS_PROJECT_DOMAIN_NAME="Projects"))
    _run(api, capsys, "host", "list")
    auth = keystone.logins[0]["auth"]
    assert auth["identity"]["password"]["user"]["domain"] == {"name": "Users"}
    assert auth["scope"]["project"]["domain"] == {"name": "Projects"}


def test_an_expired_token_is_renewed_once(api, keystone, os_env, capsys):
    keystone.tokens = ["tok-expired", "tok-admin"]
    os_env(**_login_env(keystone))
    rc, out, err = _run(api, capsys, "host", "list", "--json")
    assert rc == 0, err
    assert api.fake.seen == ["tok-expired", "tok-admin"] and len(keystone.logins) == 2


def test_a_token_refused_twice_is_an_error_saying_what_to_set(api, keystone, os_env, capsys):
    keystone.tokens = ["tok-unknown"]
    os_env(**_login_env(keystone))
    rc, _, err = _run(api, capsys, "host", "list")
    assert rc == 1 and len(keystone.logins) == 2  # one renewal, not a loop
    assert "401" in err and "OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME" in err


def test_no_os_auth_url_sends_no_token(api, os_env, capsys):
    rc, _, err = _run(api, capsys, "host", "list")
    assert rc == 1 and api.fake.seen == [None]
    assert ("error: 401 unauthorized: the midoflow API needs a Keystone token: set "
            "OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME") in err


def test_a_member_is_told_the_admin_role_is_needed(api, keystone, os_env, capsys):
    keystone.tokens = ["tok-member"]
    os_env(**_login_env(keystone))
    rc, _, err = _run(api, capsys, "host", "list")
    assert rc == 1
    assert "403" in err and "needs the admin role" in err
    assert "user admin of project admin has no admin role" in err


def test_a_wrong_password_is_explained(api, keystone, os_env, capsys):
    os_env(**_login_env(keystone, password="wrong"))
    rc, _, err = _run(api, capsys, "host", "list")
    assert rc == 1 and api.fake.seen == []
    assert "refused the login of user admin of project admin" in err


def test_missing_login_variables_are_named(api, keystone, os_env, capsys):
    os_env(OS_AUTH_URL=keystone.url, OS_USERNAME="admin")
    rc, _, err = _run(api, capsys, "host", "list")
    assert rc == 1 and "OS_PASSWORD, OS_PROJECT_NAME are not" in err
    assert keystone.logins == []


def test_unreachable_keystone(api, os_env, capsys):
    from midoflow.devenv.zookeeper import free_port

    os_env(OS_AUTH_URL=f"http://127.0.0.1:{free_port()}/v3", OS_USERNAME="admin",
           OS_PASSWORD="x", OS_PROJECT_NAME="admin")
    rc, _, err = _run(api, capsys, "host", "list")
    assert rc == 3 and "cannot reach Keystone (OS_AUTH_URL)" in err


def test_os_token_is_sent_as_it_is(api, keystone, os_env, capsys):
    os_env(OS_TOKEN="tok-admin")
    rc, _, err = _run(api, capsys, "host", "list")
    assert rc == 0, err
    assert api.fake.seen == ["tok-admin"] and keystone.logins == []


def test_auth_type_none_sends_no_token(api, keystone, os_env, capsys):
    os_env(**_login_env(keystone, OS_AUTH_TYPE="none"))
    rc, _, _ = _run(api, capsys, "host", "list")
    assert rc == 1 and api.fake.seen == [None] and keystone.logins == []
