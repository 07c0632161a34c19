"""A real Keystone (PyPI ``keystone`` in ``.keystone-venv``, which ``make setup``
creates) on SQLite and a loopback port, for tests, the demo and by hand.

    with KeystoneServer(workdir) as ks:          # bootstrapped: admin / ks.admin_password
        ks.add_project_user("p1", "p1user", "p1pw")
        conf = ks.service_user()                 # keystonemiddleware auth_token options
        ks.register_network_endpoint("http://127.0.0.1:9696")
        os.environ.update(ks.env("p1user", "p1pw", "p1"))

From a shell::

    python -m midoflow.devenv.keystone start [--dir D] [--port P] [--background]
    python -m midoflow.devenv.keystone stop --dir D

The server is uwsgi (``--http11-socket``, every response with ``Connection:
close``: a client never re-sends on a connection the server is closing, which
under load failed the ``openstack`` CLI's login now and then with
RemoteDisconnected) in a process group of its own; it is stopped at
interpreter exit and, unless started with ``die_with_parent=False``, dies with
the process that started it. Projects, users, roles and the catalog are set
through Keystone's v3 API with a keystoneauth1 session: no ``openstack``
subprocess (each costs over a second).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from midoflow.devenv.zookeeper import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_ENV = "MIDOFLOW_KEYSTONE_VENV"
REGION = "RegionOne"
DOMAIN = "Default"
PID_FILE = "uwsgi.pid"
LOG_FILE = "keystone.log"        # keystone's own log
SERVER_LOG = "uwsgi.log"         # the WSGI server's output
DEFAULT_ADMIN_PASSWORD = "adminpw"
DEFAULT_SERVICE_PASSWORD = "midoflowpw"


# keystone-manage db_sync, fernet_setup, credential_setup and bootstrap, run
# by the Keystone venv's python: argv = conf user group admin_password region url
_MANAGE_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
from keystone.cmd import cli
from keystone.conf import CONF
conf, user, group, password, region, url = sys.argv[1:7]
owner = ["--keystone-user", user, "--keystone-group", group]
for step in (["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner],
             ["bootstrap", "--bootstrap-password", password, "--bootstrap-region-id", region,
              "--bootstrap-admin-url", url, "--bootstrap-public-url", url,
              "--bootstrap-internal-url", url]):
    print("keystone-manage", step[0], flush=True)
    cli.main(argv=["keystone-manage", "--config-file", conf, *step])
    CONF.clear()
print("done", flush=True)
"""


class KeystoneError(RuntimeError):
    """Keystone could not be set up, started or reached; the message says what to do."""


def find_venv(venv: str | os.PathLike | None = None) -> Path:
    """The virtualenv holding ``keystone-manage`` and ``uwsgi``."""
    cand = Path(venv or os.environ.get(VENV_ENV) or REPO / ".keystone-venv")
    for tool in ("keystone-manage", "uwsgi"):
        if not os.access(cand / "bin" / tool, os.X_OK):
            raise KeystoneError(
                f"{cand / 'bin' / tool} not found: run `make setup` (creates .keystone-venv "
                f"with PyPI's keystone and uwsgi), or set {VENV_ENV} to such a virtualenv")
    return cand


def _progress(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[keystone] {msg}", file=sys.stderr, flush=True)


def _child_setup(die_with_parent: bool):
    def setup() -> None:  # runs in the child between fork and exec
        os.setsid()  # a process group of its own: stop() kills master and workers
        if die_with_parent:
            with contextlib.suppress(OSError):
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    return setup


# ------------------------------------------------------------------ the API


class Keystone:
    """Administration of a running Keystone over its v3 API, as its admin.

    Used as it is for a Keystone started elsewhere (``MIDOFLOW_KEYSTONE_URL``);
    :class:`KeystoneServer` adds starting and stopping one."""

    def __init__(self, url: str, admin_password: str = DEFAULT_ADMIN_PASSWORD, *,
                 admin_user: str = "admin", admin_project: str = "admin") -> None:
        self._url = url.rstrip("/")
        self.admin_password = admin_password
        self.admin_user = admin_user
        self.admin_project = admin_project
        self._session = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The identity v3 endpoint, ``http://127.0.0.1:PORT/v3``."""
        return self._url

    # ---- OS_* environments
    def env(self, user: str, password: str, project: str) -> dict[str, str]:
        """The ``OS_*`` variables the OpenStack clients (and ``midoflow``) log in with."""
        return {
            "OS_AUTH_URL": self.url,
            "OS_IDENTITY_API_VERSION": "3",
            "OS_AUTH_TYPE": "password",
            "OS_USERNAME": user,
            "OS_PASSWORD": password,
            "OS_PROJECT_NAME": project,
            "OS_USER_DOMAIN_NAME": DOMAIN,
            "OS_PROJECT_DOMAIN_NAME": DOMAIN,
            "OS_REGION_NAME": REGION,
            "OS_INTERFACE": "public",
        }

    def admin_env(self) -> dict[str, str]:
        return self.env(self.admin_user, self.admin_password, self.admin_project)

    # ---- v3 API calls
    def session(self):
        """A keystoneauth1 session logged in as the admin (made once)."""
        with self._lock:
            if self._session is None:
                from keystoneauth1 import session
                from keystoneauth1.identity import v3

                auth = v3.Password(auth_url=self.url, username=self.admin_user,
                                   password=self.admin_password,
                                   project_name=self.admin_project,
                                   user_domain_name=DOMAIN, project_domain_name=DOMAIN)
                self._session = session.Session(auth=auth)
            return self._session

    def _call(self, method: str, path: str, body: dict | None = None,
              ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        from keystoneauth1 import exceptions as ksa

        try:
            resp = self.session().request(self.url + path, method, json=body,
                                          raise_exc=False, connect_retries=2)
        except ksa.ClientException as e:
            raise KeystoneError(f"Keystone at {self.url}: {method} {path} failed: {e}") from None
        if resp.status_code not in ok:
            raise KeystoneError(f"Keystone at {self.url}: {method} {path} answered "
                                f"{resp.status_code}: {resp.text[:300]}")
        return resp.json() if resp.content else None

    def _find(self, collection: str, name: str, **query: str) -> dict | None:
        from urllib.parse import urlencode

        q = urlencode({"name": name, **query})
        found = self._call("GET", f"/{collection}?{q}")[collection]
        return found[0] if found else None

    def _domain_id(self) -> str:
        return self._find("domains", DOMAIN)["id"]

    def ensure_project(self, name: str) -> str:
        """The id of project ``name`` in the Default domain, created if missing."""
        found = self._find("projects", name)
        if found:
            return found["id"]
        return self._call("POST", "/projects", {"project": {
            "name": name, "domain_id": self._domain_id(), "enabled": True}})["project"]["id"]

    def ensure_user(self, name: str, password: str) -> str:
        """The id of user ``name``, created if missing, with this password."""
        found = self._find("users", name)
        if found:
            self._call("PATCH", f"/users/{found['id']}", {"user": {"password": password}})
            return found["id"]
        return self._call("POST", "/users", {"user": {
            "name": name, "password": password, "domain_id": self._domain_id(),
            "enabled": True}})["user"]["id"]

    def role_id(self, name: str) -> str:
        found = self._find("roles", name)
        if found is None:
            found = self._call("POST", "/roles", {"role": {"name": name}})["role"]
        return found["id"]

    def add_project_user(self, project: str, user: str, password: str,
                         role: str = "member") -> dict[str, str]:
        """Project and user (created if missing) with ``role`` on the project;
        ``{"project_id", "user_id"}``."""
        pid = self.ensure_project(project)
        uid = self.ensure_user(user, password)
        self._call("PUT", f"/projects/{pid}/users/{uid}/roles/{self.role_id(role)}")
        return {"project_id": pid, "user_id": uid}

    def service_user(self, name: str = "midoflow",
                     password: str = DEFAULT_SERVICE_PASSWORD) -> dict[str, Any]:
        """User ``name`` with the ``service`` role in project ``service``; the
        keystonemiddleware ``auth_token`` options that validate tokens as it."""
        self.add_project_user("service", name, password, role="service")
        return {
            "www_authenticate_uri": self.url,
            "auth_url": self.url,
            "auth_type": "password",
            "username": name,
            "password": password,
            "project_name": "service",
            "user_domain_name": DOMAIN,
            "project_domain_name": DOMAIN,
            "region_name": REGION,
            "delay_auth_decision": True,
            "token_cache_time": 300,
        }

    def register_network_endpoint(self, url: str, *, name: str = "neutron") -> str:
        """Catalog service ``name`` of type ``network`` with public, internal and
        admin endpoints ``url`` in RegionOne, replacing any earlier endpoints of
        the network service. The service id."""
        return self.register_endpoint("network", name, url, "midoflow (Neutron API)")

    def register_load_balancer_endpoint(self, url: str, *, name: str = "octavia") -> str:
        """The ``load-balancer`` service (``openstack loadbalancer``) at ``url``:
        the API server's Octavia root, ``<api url>/load-balancer``."""
        return self.register_endpoint("load-balancer", name, url,
                                      "midoflow (Octavia v2 API subset)")

    def register_endpoint(self, stype: str, name: str, url: str, description: str) -> str:
        """Catalog service ``name`` of type ``stype`` with public, internal and
        admin endpoints ``url`` in RegionOne, replacing any earlier endpoints of
        that type. The service id."""
        url = url.rstrip("/")
        services = self._call("GET", f"/services?type={stype}")["services"]
        if services:
            sid = services[0]["id"]
            for extra in services[1:]:
                self._delete_service(extra["id"])
        else:
            sid = self._call("POST", "/services", {"service": {
                "name": name, "type": stype, "enabled": True,
                "description": description}})["service"]["id"]
        for ep in self._call("GET", f"/endpoints?service_id={sid}")["endpoints"]:
            self._call("DELETE", f"/endpoints/{ep['id']}")
        for interface in ("public", "internal", "admin"):
            self._call("POST", "/endpoints", {"endpoint": {
                "service_id": sid, "interface": interface, "url": url,
                "region_id": REGION, "enabled": True}})
        return sid

    def _delete_service(self, sid: str) -> None:
        for ep in self._call("GET", f"/endpoints?service_id={sid}")["endpoints"]:
            self._call("DELETE", f"/endpoints/{ep['id']}")
        self._call("DELETE", f"/services/{sid}")

    def token(self, user: str, password: str, project: str) -> str:
        """A project-scoped token for ``user`` (a fresh login, not cached)."""
        import requests

        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "password": password, "domain": {"name": DOMAIN}}}},
            "scope": {"project": {"name": project, "domain": {"name": DOMAIN}}}}}
        r = requests.post(self.url + "/auth/tokens", json=body, timeout=30)
        if r.status_code != 201:
            raise KeystoneError(f"login of {user} in {project} at {self.url}: "
                                f"{r.status_code} {r.text[:200]}")
        return r.headers["X-Subject-Token"]

    def answers(self, timeout: float = 1.0) -> bool:
        """Does ``GET /v3`` answer 200?"""
        import requests

        try:
            return requests.get(self.url, timeout=timeout).status_code == 200
        except requests.RequestException:
            return False


# --------------------------------------------------------------- the server

_live: set[KeystoneServer] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for s in servers:
        with contextlib.suppress(Exception):
            s.stop()


class KeystoneServer(Keystone):
    """One Keystone under uwsgi on ``127.0.0.1:port`` (a free one for 0), its
    SQLite database, fernet and credential keys and logs in ``workdir``.

    One worker thread by default: every password login writes the user's
    ``last_active_at``, and two SQLite write transactions at once fail one of
    them at once with "database is locked" (Keystone answers 500 with no
    headers and uwsgi drops the connection: the ``openstack`` CLI then says
    RemoteDisconnected). A production Keystone runs on MySQL/PostgreSQL."""

    def __init__(self, workdir: str | os.PathLike | None = None, port: int = 0, *,
                 admin_password: str = DEFAULT_ADMIN_PASSWORD,
                 venv: str | os.PathLike | None = None, threads: int = 1,
                 die_with_parent: bool = True, quiet: bool = True) -> None:
        self.port = port or free_port()
        super().__init__(f"http://127.0.0.1:{self.port}/v3", admin_password)
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="midoflow-keystone-"))
        self.venv = venv
        self.threads = threads
        self.die_with_parent = die_with_parent
        self.quiet = quiet
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG_FILE

    @property
    def server_log_path(self) -> Path:
        return self.workdir / SERVER_LOG

    @property
    def pid_path(self) -> Path:
        return self.workdir / PID_FILE

    def config(self) -> str:
        d = self.workdir
        return "\n".join([
            "[DEFAULT]", f"log_file = {d / LOG_FILE}", "",
            "[database]", f"connection = sqlite:///{d / 'keystone.db'}", "",
            "[token]", "provider = fernet", "",
            "[fernet_tokens]", f"key_repository = {d / 'fernet'}", "",
            "[credential]", f"key_repository = {d / 'cred'}", "",
            # admin means the admin project too (X-Is-Admin-Project is True for
            # every project without this)
            "[resource]", "admin_project_name = admin", f"admin_project_domain_name = {DOMAIN}",
            "",
            # a development server: bcrypt's minimum cost (the default 12 makes
            # every login about 0.25 s)
            "[identity]", "password_hash_rounds = 4", "",
        ])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def setup(self, venv: Path) -> None:
        """Config, database, keys and the bootstrap (admin, roles, identity
        endpoint): the four ``keystone-manage`` steps in ONE Python process
        (each ``keystone-manage`` spends about 1.5 s importing keystone)."""
        for sub in ("fernet", "cred"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self.workdir / "keystone.conf"
        conf.write_text(self.config())
        user, group = _whoami()
        log_path = self.workdir / "keystone-manage.log"
        with open(log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%F %T')} keystone-manage steps\n".encode())
            log.flush()
            try:
                rc = subprocess.run(
                    [str(venv / "bin" / "python"), "-c", _MANAGE_SCRIPT, str(conf), user, group,
                     self.admin_password, REGION, self.url],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.workdir, timeout=180).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if rc != 0:
            raise KeystoneError(f"keystone-manage db_sync/fernet_setup/credential_setup/bootstrap "
                                f"failed ({rc}): see {log_path} and {self.log_path}")

    def start(self, timeout: float = 60.0) -> KeystoneServer:
        """Set up (first time) and serve; returns once ``GET /v3`` answers."""
        if self.running():
            return self
        t0 = time.monotonic()
        venv = find_venv(self.venv)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if not (self.workdir / "keystone.db").exists():
                _progress(f"setting up in {self.workdir} (database, keys, bootstrap) ...",
                          self.quiet)
                self.setup(venv)
            self._launch(venv)
            self._wait_ready(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        _progress(f"serving {self.url} in {self.start_seconds:.1f} s (log {self.log_path})",
                  self.quiet)
        return self

    def _launch(self, venv: Path) -> None:
        out = open(self.server_log_path, "ab")  # noqa: SIM115 - the child keeps it
        env = dict(os.environ, OS_KEYSTONE_CONFIG_DIR=str(self.workdir))
        env.pop("OS_KEYSTONE_CONFIG_FILES", None)
        try:
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "uwsgi"), "--http11-socket", f"127.0.0.1:{self.port}",
                 "--module", "keystone.wsgi.api:application", "--processes", "1",
                 "--threads", str(self.threads), "--master", "--die-on-term",
                 "--need-app", "--add-header", "Connection: close",
                 "--pidfile", str(self.pid_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=env, preexec_fn=_child_setup(self.die_with_parent))
        finally:
            out.close()
        with _live_lock:
            _live.add(self)

    def _wait_ready(self, deadline: float) -> None:
        note = time.monotonic()
        while time.monotonic() < deadline:
            if not self.running():
                raise KeystoneError(
                    f"Keystone's uwsgi on port {self.port} exited (code {self.proc.returncode}): "
                    f"see {self.server_log_path} and {self.log_path}")
            if self.answers(timeout=1.0):
                return
            if time.monotonic() - note > 3:
                _progress(f"waiting for {self.url} to answer ...", self.quiet)
                note = time.monotonic()
            time.sleep(0.1)
        raise KeystoneError(f"Keystone at {self.url} does not answer: see "
                            f"{self.server_log_path} and {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``timeout``; waits."""
        proc, self.proc = self.proc, None
        self._session = None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):  # workers left behind, if any
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
        with _live_lock:
            _live.discard(self)

    kill = stop

    def cleanup(self) -> None:
        """Stop, and remove the workdir if this object created it."""
        import shutil

        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KeystoneServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"KeystoneServer({self.url}, pid={pid}, dir={self.workdir})"


def _whoami() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


# ------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m midoflow.devenv.keystone",
                                 description="Start or stop a development Keystone on loopback.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="set up (first time) and serve Keystone")
    st.add_argument("--dir", help="database, keys, config and logs (default: a new temp dir)")
    st.add_argument("--port", type=int, default=0, help="default: a free port")
    st.add_argument("--background", action="store_true",
                    help="leave it running (pid file in --dir) and return")
    sp = sub.add_parser("stop", help="stop a server started with --background")
    sp.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "stop":
        pf = Path(args.dir) / PID_FILE
        try:
            pid = int(pf.read_text().split()[0])
            os.killpg(os.getpgid(pid), signal.SIGTERM)
        except (OSError, ValueError, IndexError) as e:
            print(f"error: no running Keystone recorded in {pf}: {e}", file=sys.stderr)
            return 1
        print(f"stopped Keystone (pid {pid})")
        return 0
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="midoflow-keystone-"))
    ks = KeystoneServer(base, args.port, die_with_parent=not args.background, quiet=False)
    try:
        ks.start()
    except KeystoneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for k, v in ks.admin_env().items():
        print(f"export {k}={v}")
    if args.background:
        with _live_lock:
            _live.discard(ks)
        print(f"# running in the background; stop with: python -m midoflow.devenv.keystone "
              f"stop --dir {base}", file=sys.stderr)
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(1.0):
            if not ks.running():
                print(f"[keystone] exited: see {ks.server_log_path}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        ks.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
