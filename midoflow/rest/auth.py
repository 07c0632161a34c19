"""Who may use the APIs: one WSGI application serving both APIs on one port,
behind keystonemiddleware's ``auth_token``.

* ``/v1...``: the native API (:func:`midoflow.rest.app.make_app`). It changes
  any tenant's topology, so it needs a confirmed Keystone identity with the
  ``admin`` role: no or a bad token is 401 (auth_token adds ``WWW-Authenticate:
  Keystone uri=...`` to every 401), a token without ``admin`` is 403.
* everything else: the Neutron API (:func:`midoflow.neutron.api.make_neutron_app`),
  whose version document (``GET /``) needs no token and whose resources
  decide per project (it reads the identity auth_token put in the headers).

``auth_token`` runs with ``delay_auth_decision``: a request without a valid
token still reaches the application, marked ``X-Identity-Status: Invalid``
(auth_token strips any identity headers a client sent itself).

No-auth mode (:meth:`AuthConfig.noauth`) is for one development machine: no
Keystone, every request is the admin's; it must be asked for explicitly, and a
server in that mode listens on loopback only.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from midoflow.store.base import Store

NATIVE_PREFIX = "/v1"
AUTHTOKEN_SECTION = "keystone_authtoken"  # as in neutron.conf
ADMIN_ROLE = "admin"
LOOPBACK_NAMES = ("localhost",)
# auth_token's start-up warnings that tell an operator nothing (options of other
# services it does not know, its in-process token cache): quiet unless debugging
QUIET_LOGGERS = ("keystonemiddleware._common.config", "keystonemiddleware.auth_token")

NEEDS_TOKEN = ("the midoflow API needs a Keystone token with the admin role in X-Auth-Token "
               "(the midoflow CLI: set OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME)")
NEEDS_ADMIN = ("the midoflow API needs the admin role; use the Neutron API (/v2.0) for "
               "project resources")


class AuthConfigError(ValueError):
    """The authentication settings are incomplete or unsafe; the message says what to do."""


@dataclass(frozen=True)
class AuthConfig:
    """``mode`` ``"keystone"`` (``options``: auth_token's, as in the
    ``[keystone_authtoken]`` section of neutron.conf) or ``"noauth"``."""

    mode: str = "keystone"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def noauth(cls) -> AuthConfig:
        """No Keystone: every request is the admin's (one development machine)."""
        return cls("noauth", {})

    @classmethod
    def keystone(cls, options: Mapping[str, Any]) -> AuthConfig:
        opts = {"delay_auth_decision": True, "token_cache_time": 300, **options}
        opts["delay_auth_decision"] = True  # GET / is served without a token
        return cls("keystone", opts)

    @property
    def is_noauth(self) -> bool:
        return self.mode == "noauth"

    def check(self) -> None:
        """The settings are usable (AuthConfigError otherwise)."""
        if self.mode not in ("keystone", "noauth"):
            raise AuthConfigError(f"unknown auth mode {self.mode!r}: use 'keystone' or 'noauth'")
        if self.is_noauth:
            return
        missing = [k for k in ("auth_url", "username", "password", "project_name")
                   if not self.options.get(k)]
        if missing:
            raise AuthConfigError(
                f"Keystone authentication needs {', '.join(missing)} of the service user that "
                f"validates tokens: give --keystone-url/--keystone-user/--keystone-project and "
                f"the password in MIDOFLOW_KEYSTONE_PASSWORD or --keystone-password-file (or a "
                f"[{AUTHTOKEN_SECTION}] section in --keystone-config), or run with "
                f"--auth noauth on 127.0.0.1 for single-machine development")

    def check_listen(self, host: str) -> None:
        """No-auth mode listens on loopback only."""
        if self.is_noauth and not is_loopback(host):
            raise AuthConfigError(
                f"no-auth mode refuses to listen on {host}: anyone who reaches the port could "
                f"change every tenant's network. Listen on 127.0.0.1 (or ::1), or use "
                f"--auth keystone")

    @classmethod
    def load(cls, mode: str = "keystone", *, config_file: str | None = None,
             url: str | None = None, user: str | None = None, project: str | None = None,
             password: str | None = None, password_file: str | None = None,
             env: Mapping[str, str] | None = None) -> AuthConfig:
        """From a ``[keystone_authtoken]`` file, then ``MIDOFLOW_KEYSTONE_*``
        variables, then the explicit arguments (each overriding the one before)."""
        if mode == "noauth":
            return cls.noauth()
        env = os.environ if env is None else env
        opts: dict[str, Any] = {}
        config_file = config_file or env.get("MIDOFLOW_KEYSTONE_CONFIG")
        if config_file:
            opts.update(read_authtoken_file(config_file))
        url = url or env.get("MIDOFLOW_KEYSTONE_URL")
        if url:
            opts["auth_url"] = url
            opts["www_authenticate_uri"] = url
        for key, arg, var in (("username", user, "MIDOFLOW_KEYSTONE_USER"),
                              ("project_name", project, "MIDOFLOW_KEYSTONE_PROJECT")):
            if arg or env.get(var):
                opts[key] = arg or env[var]
        password_file = password_file or env.get("MIDOFLOW_KEYSTONE_PASSWORD_FILE")
        if password:
            opts["password"] = password
        elif password_file:
            try:
                with open(password_file, encoding="utf-8") as f:
                    opts["password"] = f.readline().rstrip("\r\n")
            except OSError as e:
                raise AuthConfigError(f"cannot read the Keystone password file "
                                      f"{password_file}: {e.strerror}") from None
        elif env.get("MIDOFLOW_KEYSTONE_PASSWORD"):
            opts["password"] = env["MIDOFLOW_KEYSTONE_PASSWORD"]
        opts.setdefault("auth_type", "password")
        opts.setdefault("username", "midoflow")
        opts.setdefault("project_name", "service")
        opts.setdefault("user_domain_name", "Default")
        opts.setdefault("project_domain_name", "Default")
        if opts.get("auth_url"):
            opts.setdefault("www_authenticate_uri", opts["auth_url"])
        cfg = cls.keystone(opts)
        cfg.check()
        return cfg


def read_authtoken_file(path: str) -> dict[str, str]:
    """The ``[keystone_authtoken]`` options of an INI file."""
    cp = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f)
    except OSError as e:
        raise AuthConfigError(f"cannot read {path}: {e.strerror}") from None
    except configparser.Error as e:
        raise AuthConfigError(f"{path} is not an INI file: {e}") from None
    if not cp.has_section(AUTHTOKEN_SECTION):
        raise AuthConfigError(f"{path} has no [{AUTHTOKEN_SECTION}] section")
    return dict(cp.items(AUTHTOKEN_SECTION))


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json_error(start_response: Callable, status: str, error: str, message: str,
                headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (json.dumps({"error": error, "message": message}) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), *(headers or [])])
    return [body]


def _neutron_missing(environ: dict, start_response: Callable) -> list[bytes]:
    body = json.dumps({"NeutronError": {"type": "HTTPNotFound", "detail": "",
                                        "message": "The resource could not be found."}})
    start_response("404 Not Found", [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))])
    return [body.encode()]


class RootApp:
    """Routes ``/v1`` to the native API (admins only, unless no-auth), the rest
    to the Neutron API."""

    def __init__(self, store: Store, auth: AuthConfig) -> None:
        from midoflow.rest.app import make_app

        self.auth = auth
        self.native = make_app(store)
        try:
            from midoflow.neutron.api import make_neutron_app
        except ImportError:  # the Neutron layer is not there (yet)
            self.neutron: Callable = _neutron_missing
        else:
            self.neutron = make_neutron_app(store, noauth=auth.is_noauth)
        from midoflow.octavia import PREFIX
        from midoflow.octavia.api import make_octavia_app

        self.octavia_prefix = PREFIX  # the Octavia v2 API (`openstack loadbalancer`)
        self.octavia = make_octavia_app(store, noauth=auth.is_noauth,
                                        neutron=getattr(self.neutron, "service", None))

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if path == NATIVE_PREFIX or path.startswith(NATIVE_PREFIX + "/"):
            if not self.auth.is_noauth:
                refused = self._refuse_native(environ, start_response)
                if refused is not None:
                    return refused
            return self.native(environ, start_response)
        octavia = self.octavia_prefix
        if path == octavia or path.startswith(octavia + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + octavia
            environ["PATH_INFO"] = path[len(octavia):]
            return self.octavia(environ, start_response)
        return self.neutron(environ, start_response)

    def _refuse_native(self, environ: dict, start_response: Callable) -> list[bytes] | None:
        if environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":
            # auth_token adds WWW-Authenticate: Keystone uri="..." to every 401
            return _json_error(start_response, "401 Unauthorized", "Unauthorized", NEEDS_TOKEN)
        roles = {r.strip() for r in (environ.get("HTTP_X_ROLES") or "").split(",")}
        if ADMIN_ROLE not in roles:
            return _json_error(start_response, "403 Forbidden", "Forbidden", NEEDS_ADMIN)
        return None


def make_root_app(store: Store, *, auth: AuthConfig) -> Callable:
    """Both APIs on one WSGI application, behind auth_token unless no-auth;
    counted and timed, with ``GET /metrics`` (midoflow.rest.metrics) before it."""
    from midoflow.rest.metrics import ApiMetrics  # GET /metrics, open (see there)

    auth.check()
    root = RootApp(store, auth)
    if auth.is_noauth:
        return ApiMetrics(root)
    from keystonemiddleware import auth_token

    quiet_authtoken_logs()
    return ApiMetrics(auth_token.AuthProtocol(root, dict(auth.options)))


def quiet_authtoken_logs() -> None:
    """auth_token's loggers (:data:`QUIET_LOGGERS`) at ERROR, unless the operator
    asked for debug logging (the root or ``midoflow`` logger at DEBUG). Each is
    set by name: Mininet's logger class gives every new logger a level of its
    own, so the parent's level would not reach them."""
    if any(logging.getLogger(n).isEnabledFor(logging.DEBUG) for n in ("", "midoflow")):
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
