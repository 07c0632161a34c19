"""A small JSON client for the midoflow REST API (standard library; keystoneauth1
for a Keystone token when ``OS_AUTH_URL`` is set).

Authentication follows the OpenStack clients' ``OS_*`` variables: with
``OS_AUTH_URL`` (and ``OS_USERNAME``, ``OS_PASSWORD``, ``OS_PROJECT_NAME``,
``OS_USER_DOMAIN_NAME``/``OS_PROJECT_DOMAIN_NAME``, default ``Default``) the
client logs in with the password and sends the token in ``X-Auth-Token``,
logging in again once when the API answers 401 (an expired token);
``OS_TOKEN`` is sent as it is; ``OS_AUTH_TYPE=none`` (or no ``OS_AUTH_URL``)
sends no token, for a no-auth development server.
"""

from __future__ import annotations

import errno
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_API = "http://127.0.0.1:8181"
PREFIX = "/v1"


class ApiError(Exception):
    """The API answered with an error status (4xx/5xx)."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field

    def one_line(self) -> str:
        kind = _words(self.error) if self.error else "error"
        line = f"{self.status} {kind}: {self.message}"
        if self.field:
            line += f" (field: {self.field})"
        return line


class ResolveError(Exception):
    """A name given where an id is expected matches no object, or several."""


class Unreachable(Exception):
    """No HTTP answer at all: refused, timed out, unknown name, ..."""

    def __init__(self, base_url: str, reason: str, what: str = "the midoflow API"):
        super().__init__(reason)
        self.base_url = base_url
        self.reason = reason
        self.what = what


LOGIN_VARS = "set OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME"
NO_TOKEN = f"the midoflow API needs a Keystone token: {LOGIN_VARS} (an admin's)"


class AuthFailed(Exception):
    """No token could be had from Keystone with the ``OS_*`` settings."""


class KeystoneLogin:
    """Tokens for the ``OS_*`` settings: a fixed ``OS_TOKEN``, or a password
    login with keystoneauth1 (made on first use, again after :meth:`invalidate`)."""

    def __init__(self, env: dict[str, str], timeout: float = 10.0) -> None:
        self.env = env
        self.timeout = timeout
        self.auth_url = (env.get("OS_AUTH_URL") or "").rstrip("/")
        self.fixed = env.get("OS_TOKEN") or None
        self.user = env.get("OS_USERNAME") or env.get("OS_USER_ID") or ""
        self.project = env.get("OS_PROJECT_NAME") or env.get("OS_PROJECT_ID") or ""
        self._plugin = None
        self._session = None

    @classmethod
    def from_env(cls, env: dict[str, str], timeout: float = 10.0) -> KeystoneLogin | None:
        """None when the settings ask for no token (no OS_AUTH_URL nor OS_TOKEN,
        or OS_AUTH_TYPE none/noauth)."""
        kind = (env.get("OS_AUTH_TYPE") or "").lower()
        if kind in ("none", "noauth"):
            return None
        if not env.get("OS_AUTH_URL") and not env.get("OS_TOKEN"):
            return None
        return cls(env, timeout)

    @property
    def can_renew(self) -> bool:
        return self.fixed is None

    @property
    def who(self) -> str:
        if self.fixed is not None:
            return "the token in OS_TOKEN"
        return f"user {self.user or '?'} of project {self.project or '?'}"

    def _password_plugin(self):
        missing = [v for v, ok in (
            ("OS_USERNAME", self.user), ("OS_PASSWORD", self.env.get("OS_PASSWORD")),
            ("OS_PROJECT_NAME", self.project)) if not ok]
        if missing:
            raise AuthFailed(f"OS_AUTH_URL is set but {', '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} not: {LOGIN_VARS}")
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        e = self.env
        kw = {
            "auth_url": self.auth_url, "password": e["OS_PASSWORD"],
            "user_domain_id": e.get("OS_USER_DOMAIN_ID"),
            "project_domain_id": e.get("OS_PROJECT_DOMAIN_ID"),
        }
        kw.update({"user_id": e["OS_USER_ID"]} if e.get("OS_USER_ID") and not e.get(
            "OS_USERNAME") else {"username": self.user})
        kw.update({"project_id": e["OS_PROJECT_ID"]} if e.get("OS_PROJECT_ID") and not e.get(
            "OS_PROJECT_NAME") else {"project_name": self.project})
        if not kw["user_domain_id"]:
            kw["user_domain_name"] = e.get("OS_USER_DOMAIN_NAME") or "Default"
        if not kw["project_domain_id"]:
            kw["project_domain_name"] = e.get("OS_PROJECT_DOMAIN_NAME") or "Default"
        self._plugin = v3.Password(**{k: v for k, v in kw.items() if v is not None})
        self._session = session.Session(auth=self._plugin, timeout=self.timeout)
        return self._plugin

    def token(self) -> str:
        if self.fixed is not None:
            return self.fixed
        from keystoneauth1 import exceptions as ksa

        plugin = self._plugin or self._password_plugin()
        try:
            tok = plugin.get_token(self._session)
        except ksa.Unauthorized:
            raise AuthFailed(f"Keystone at {self.auth_url} refused the login of {self.who}: "
                             f"check OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME and the "
                             f"domains") from None
        except (ksa.ConnectFailure, ksa.ConnectTimeout, ksa.DiscoveryFailure) as e:
            raise Unreachable(self.auth_url, _ksa_reason(e), "Keystone (OS_AUTH_URL)") from None
        except ksa.ClientException as e:
            raise AuthFailed(f"login at Keystone {self.auth_url} failed: {e}") from None
        if not tok:
            raise AuthFailed(f"Keystone at {self.auth_url} gave no token for {self.who}")
        return tok

    def invalidate(self) -> None:
        if self._plugin is not None:
            self._plugin.invalidate()


def _ksa_reason(exc: BaseException) -> str:
    text = str(exc)
    for known in ("Connection refused", "timed out", "Name or service not known"):
        if known.lower() in text.lower():
            return known.lower()
    return text[:200] or type(exc).__name__


def _words(name: str) -> str:
    """``"NotFound"`` -> ``"not found"``; ``"conflict"`` stays as it is."""
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and not name[i - 1].isupper():
            out.append(" ")
        out.append(c.lower())
    return "".join(out).replace("_", " ")


def _reason(exc: BaseException) -> str:
    """A short, human phrase for why a connection failed."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if isinstance(exc, str):
            return exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror or exc})"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to host"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def check_base_url(url: str) -> str:
    """Validate ``--api`` / ``MIDOFLOW_API``; raises ValueError with a reason."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid API URL {url!r}: expected http://HOST:PORT")
    return url.rstrip("/")


class Client:
    def __init__(self, base_url: str = DEFAULT_API, timeout: float = 10.0,
                 login: KeystoneLogin | None = None):
        self.base_url = check_base_url(base_url)
        self.timeout = timeout
        self.login = login

    # ---- low level ----------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """Send one request under ``/v1``; the decoded JSON body, or None when empty."""
        url = self.base_url + PREFIX + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.login is not None:
                headers["X-Auth-Token"] = self.login.token()
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as e:
                err = self._api_error(e)
                if (err.status == 401 and attempt == 1 and self.login is not None
                        and self.login.can_renew):
                    self.login.invalidate()  # expired or revoked: log in again, once
                    continue
                raise self._explain(err) from None
            except (urllib.error.URLError, OSError) as e:
                raise Unreachable(self.base_url, _reason(e)) from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(
                502, "bad response", f"{method} {path} answered with non-JSON: {raw[:80]!r}"
            ) from None

    def _explain(self, err: ApiError) -> ApiError:
        """401 and 403 say what to set or whose role is missing."""
        if err.status == 401:
            err.message = (NO_TOKEN if self.login is None else
                           f"the midoflow API refused the Keystone token of {self.login.who}: "
                           f"{LOGIN_VARS} (an admin's)")
        elif err.status == 403 and self.login is not None:
            err.message = f"{err.message} ({self.login.who} has no admin role)"
        return err

    @staticmethod
    def _api_error(e: urllib.error.HTTPError) -> ApiError:
        try:
            raw = e.read()
        except OSError:
            raw = b""
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and ("message" in doc or "error" in doc):
            return ApiError(
                e.code,
                str(doc.get("error") or e.reason or ""),
                str(doc.get("message") or e.reason or ""),
                doc.get("field"),
            )
        text = raw.decode("utf-8", "replace").strip().splitlines()
        message = text[0][:200] if text else str(e.reason or "")
        return ApiError(e.code, str(e.reason or "error"), message)

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, query={k: v for k, v in query.items() if v})

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # ---- name resolution ----------------------------------------------------
    def resolve(self, kind: str, ref: str, label: str) -> str:
        """An id for ``ref``: an id, or the name of exactly one object of ``kind``.

        UUID-shaped refs are taken as ids as they are (the API answers 404 for a
        missing one); anything else is matched against the ids, then the names,
        of a listing."""
        if _looks_like_uuid(ref):
            return ref
        objs = self.get(f"/{kind}") or []
        for o in objs:
            if o.get("id") == ref:
                return ref
        named = [o for o in objs if o.get("name") == ref]
        if len(named) == 1:
            return named[0]["id"]
        if not named:
            raise ResolveError(f"no {label} with id or name {ref!r}")
        ids = ", ".join(o["id"] for o in named)
        raise ResolveError(f"{len(named)} {label}s are named {ref!r} ({ids}); use an id")


def _looks_like_uuid(s: str) -> bool:
    import uuid

    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return len(s) in (32, 36)
