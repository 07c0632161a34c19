"""Serving the API: eventlet.wsgi standalone, or a plain thread for tests."""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

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
    # debug=False: an error never puts a traceback in a response body.
    eventlet.wsgi.server(sock, make_app(store), log=_EventletLog(), log_output=True,
                         debug=False)


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
