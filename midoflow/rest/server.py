"""Serving the API: eventlet.wsgi standalone, or a plain thread for tests."""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from midoflow.rest.app import make_app
from midoflow.store.base import Store

LOG = logging.getLogger("midoflow.rest")


def serve(store: Store, host: str = "127.0.0.1", port: int = 8181, sock=None) -> None:
    """Serve the API over ``store`` with eventlet.wsgi until interrupted.

    ``sock`` may be an already listening eventlet socket (then host/port are ignored).
    """
    import eventlet
    import eventlet.wsgi

    if sock is None:
        sock = eventlet.listen((host, port))
    LOG.info("midoflow API listening on http://%s:%d/v1", *sock.getsockname()[:2])
    eventlet.wsgi.server(sock, make_app(store), log=_EventletLog(), log_output=True)


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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
        LOG.debug("%s - %s", self.address_string(), format % args)


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
    """The API on a real socket in a daemon thread (tests, the CLI's tests, demos).

    >>> srv = BackgroundServer(store).start(); srv.url  # 'http://127.0.0.1:PORT'
    >>> srv.stop()
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0) -> None:
        self.httpd = make_server(host, port, make_app(store), server_class=_ThreadingWSGIServer,
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


def serve_in_thread(store: Store, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Start the API in a background thread; returns the server (``.url``, ``.stop()``)."""
    return BackgroundServer(store, host, port).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m midoflow.rest.server --store memory|HOST:PORT,... [--host H] [--port P]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m midoflow.rest.server",
                                 description="Serve the midoflow REST API (eventlet.wsgi).")
    ap.add_argument("--store", default="memory", help="'memory' or ZooKeeper host:port,...")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8181)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from midoflow.store.factory import make_store

    store = make_store(args.store, handler="eventlet" if args.store != "memory" else "threading")
    try:
        serve(store, args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
