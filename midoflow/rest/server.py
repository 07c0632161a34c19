"""Serving both APIs (native ``/v1`` and Neutron, see :mod:`midoflow.rest.auth`):
eventlet.wsgi standalone, or a plain thread for tests and MidoCloud.

Both listen on 127.0.0.1 unless told otherwise. A standalone server
authenticates with Keystone unless ``--auth noauth`` is asked for; the
in-process :func:`serve_in_thread` is no-auth unless given a Keystone
:class:`AuthConfig`.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

from midoflow.rest.auth import AuthConfig, AuthConfigError, make_root_app
from midoflow.store.base import Store

LOG = logging.getLogger("midoflow.rest")


def serve(store: Store, host: str = "127.0.0.1", port: int = 8181, sock=None, *,
          auth: AuthConfig) -> None:
    """Serve both APIs over ``store`` with eventlet.wsgi until interrupted.

    ``sock`` may be an already listening eventlet socket (then host/port are
    ignored). ``auth`` is required: Keystone, or an explicit no-auth (which
    refuses a non-loopback address: AuthConfigError). Run it in a process
    patched by ``eventlet.monkey_patch()`` (as :func:`main` does): otherwise
    auth_token's first validation of a token blocks every other request.
    """
    import eventlet
    import eventlet.wsgi

    app = make_root_app(store, auth=auth)
    if sock is None:
        auth.check_listen(host)
        sock = eventlet.listen((host, port))
    else:
        auth.check_listen(sock.getsockname()[0])
    LOG.info("midoflow API listening on http://%s:%d (native /v1, Neutron /v2.0; auth %s)",
             *sock.getsockname()[:2], auth.mode)
    # debug=False: an error never puts a traceback in a response body.
    eventlet.wsgi.server(sock, app, log=_EventletLog(), log_output=True, debug=False)


class _EventletLog:
    """eventlet.wsgi writes its access log here: route it to logging."""

    def write(self, msg: str) -> None:
        LOG.debug(msg.rstrip())

    def info(self, msg, *args, **kwargs) -> None:
        LOG.debug(msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs) -> None:
        LOG.debug(msg, *args, **kwargs)

    def error(self, msg, *args, **kwargs) -> None:
        LOG.error(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs) -> None:
        LOG.exception(msg, *args, **kwargs)


class _Dechunked:
    """``wsgi.input`` for a chunked request body (wsgiref passes it raw): reads
    the chunks' data; ValueError for a malformed chunk, like eventlet."""

    def __init__(self, rfile) -> None:
        self.rfile = rfile
        self.left = 0  # bytes left in the current chunk
        self.done = False

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while not self.done and (size < 0 or len(out) < size):
            if self.left == 0:
                line = self.rfile.readline(1024)
                if not line:
                    raise OSError("connection closed in a chunked body")
                try:
                    self.left = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError(f"bad chunk size line {line[:40]!r}") from None
                if self.left < 0:
                    raise ValueError("negative chunk size")
                if self.left == 0:  # the last chunk; skip the trailers
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    self.done = True
                    break
            n = self.left if size < 0 else min(self.left, size - len(out))
            data = self.rfile.read(n)
            if not data:
                raise OSError("connection closed in a chunked body")
            out += data
            self.left -= len(data)
            if self.left == 0:
                self.rfile.readline(16)  # the CRLF after the chunk's data
        return bytes(out)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
        LOG.debug("%s - %s", self.address_string(), format % args)

    def handle(self) -> None:
        """wsgiref's, with chunked request bodies de-chunked."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        rfile = self.rfile
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            rfile = _Dechunked(self.rfile)
        handler = ServerHandler(rfile, self.wfile, self.get_stderr(), self.get_environ(),
                                multithread=True)
        handler.request_handler = self
        handler.run(self.server.get_app())


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request, client_address):
        t = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        t.start()

    def _handle(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class BackgroundServer:
    """Both APIs on a real socket in a daemon thread (tests, the CLI's tests,
    MidoCloud). wsgiref answers HTTP/1.0 and closes each connection after
    its response, which clients that reuse connections (keystoneauth) handle.

    >>> srv = BackgroundServer(store).start(); srv.url  # 'http://127.0.0.1:PORT'
    >>> srv.stop()
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0, *,
                 auth: AuthConfig | None = None) -> None:
        self.auth = AuthConfig.noauth() if auth is None else auth
        self.auth.check_listen(host)
        app = make_root_app(store, auth=self.auth)
        self.httpd = make_server(host, port, app, server_class=_ThreadingWSGIServer,
                                 handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="midoflow-api",
                                       daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> BackgroundServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(store: Store, host: str = "127.0.0.1", port: int = 0, *,
                    auth: AuthConfig | None = None) -> BackgroundServer:
    """Start both APIs in a background thread; returns the server (``.url``, ``.stop()``).

    In-process servers (tests, MidoCloud) are explicitly no-auth and on
    loopback unless ``auth`` is a Keystone :class:`AuthConfig`."""
    return BackgroundServer(store, host, port, auth=auth).start()


def add_auth_arguments(ap) -> None:
    """``--auth`` and the Keystone options (argparse), shared with other launchers."""
    g = ap.add_argument_group("authentication")
    g.add_argument("--auth", choices=("keystone", "noauth"), default="keystone",
                   help="keystone (default): tokens validated by keystonemiddleware; noauth: "
                   "no authentication, single-machine development, loopback only")
    g.add_argument("--keystone-config", metavar="FILE",
                   help="an INI file with a [keystone_authtoken] section, as in neutron.conf "
                   "(env MIDOFLOW_KEYSTONE_CONFIG)")
    g.add_argument("--keystone-url", metavar="URL",
                   help="Keystone's identity endpoint, http://HOST:PORT/v3 "
                   "(env MIDOFLOW_KEYSTONE_URL)")
    g.add_argument("--keystone-user", metavar="NAME",
                   help="service user that validates tokens (env MIDOFLOW_KEYSTONE_USER; "
                   "default midoflow)")
    g.add_argument("--keystone-project", metavar="NAME",
                   help="its project (env MIDOFLOW_KEYSTONE_PROJECT; default service)")
    g.add_argument("--keystone-password-file", metavar="FILE",
                   help="file whose first line is its password (env "
                   "MIDOFLOW_KEYSTONE_PASSWORD_FILE, or the password in "
                   "MIDOFLOW_KEYSTONE_PASSWORD)")
    g.add_argument("--keystone-password", metavar="PASSWORD",
                   help="its password (visible to other local users in the process list: "
                   "prefer the file or the environment)")


def auth_from_arguments(args) -> AuthConfig:
    return AuthConfig.load(args.auth, config_file=args.keystone_config, url=args.keystone_url,
                           user=args.keystone_user, project=args.keystone_project,
                           password=args.keystone_password,
                           password_file=args.keystone_password_file)


def main(argv: list[str] | None = None) -> int:
    """``python -m midoflow.rest.server --store memory|HOST:PORT,... [--host H]
    [--port P] [--auth keystone|noauth] [--keystone-...]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m midoflow.rest.server",
                                 description="Serve the midoflow APIs (native /v1 and Neutron "
                                 "v2.0) with eventlet.wsgi.")
    ap.add_argument("--store", default="memory", help="'memory' or ZooKeeper host:port,...")
    ap.add_argument("--host", default="127.0.0.1",
                    help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8181)
    ap.add_argument("--store-credentials", default="",
                    help="the stores' credentials file (mode 0600; default "
                    "$MIDOFLOW_STORE_CREDENTIALS): ZooKeeper digest ACLs")
    add_auth_arguments(ap)
    args = ap.parse_args(argv)
    from midoflow.store.credentials import CredentialsError, credentials_from_env
    from midoflow.store.factory import load_credentials

    try:
        auth = auth_from_arguments(args)
        auth.check_listen(args.host)
        creds = load_credentials(args.store_credentials) if args.store_credentials \
            else credentials_from_env()
    except (AuthConfigError, CredentialsError) as e:
        ap.exit(2, f"error: {e}\n")
    # Before the store and keystonemiddleware create sockets and threads: a
    # token's validation must not block the hub (this process uses no Cassandra).
    import eventlet

    eventlet.monkey_patch()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from midoflow.store.factory import make_store

    store = make_store(args.store, handler="eventlet" if args.store != "memory" else "threading",
                       credentials=creds)
    try:
        serve(store, args.host, args.port, auth=auth)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
