"""kazoo's eventlet handler with a cheap ``select`` (issue 13: an agent reading
35,000 nodes at start).

kazoo's connection loop calls ``handler.select`` three times per answer it
reads (the loop, the length, the body) and twice per request it sends, and
the eventlet handler makes each call a new green epoll selector with two
yields to the hub: about 50 µs each, most of a large load. Here:

* the socket reads ahead (64 KB) and says what it holds through
  ``pending()``, which kazoo's reader already honours (it is how it reads
  TLS), so the answers in one segment are parsed without a select each;
* ``select`` returns at once, without the hub, when a socket holds read-ahead
  data or a zero-timeout ``poll`` (the real one, one system call) finds
  something ready; only when nothing is ready does it wait in the hub as
  before. It still yields to the other green threads every
  :data:`YIELD_EVERY` calls, so a long burst of answers does not starve them;
* a request's result makes its green Condition only when someone waits on
  it (:class:`LightAsyncResult`): most of a pipelined load's results are
  ready before they are read.
"""

from __future__ import annotations

from typing import Any

import eventlet
from eventlet import patcher
from eventlet.green import threading as green_threading
from kazoo.handlers import utils
from kazoo.handlers.eventlet import SequentialEventletHandler, TimeoutError

_select = patcher.original("select")
READ_AHEAD = 65536
YIELD_EVERY = 64


class ReadAheadSocket:
    """A (green, non-blocking) socket whose ``recv`` reads up to
    :data:`READ_AHEAD` bytes and serves them in the sizes asked."""

    __slots__ = ("_sock", "_buf", "_pos")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def recv(self, n: int, *flags: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(n, READ_AHEAD), *flags)
            if len(data) <= n:
                return data
            self._buf, self._pos = data, 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        return out

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class LightAsyncResult(utils.AsyncResult):
    """kazoo's AsyncResult with its green Condition made at the first wait,
    link or unlink. Green threads switch only where they block, so setting a
    result and reading a ready one need no lock."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self._exception = utils._NONE
        self._cond: Any = None
        self._callbacks: list = []
        self._timeout_factory = TimeoutError
        self.value = None

    @property
    def _condition(self) -> Any:
        if self._cond is None:
            self._cond = green_threading.Condition()
        return self._cond

    def set(self, value: Any = None) -> None:
        self.value = value
        self._exception = None
        self._wake()

    def set_exception(self, exception: BaseException) -> None:
        self._exception = exception
        self._wake()

    def _wake(self) -> None:
        if self._callbacks:
            self._do_callbacks()
        if self._cond is not None:
            with self._cond:
                self._cond.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        exc = self._exception
        if exc is not utils._NONE:
            if exc is None:
                return self.value
            raise exc
        return super().get(block, timeout)


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


class FastEventletHandler(SequentialEventletHandler):
    """:class:`SequentialEventletHandler` with the cheap select (module doc)."""

    name = "midoflow_eventlet_handler"

    def __init__(self) -> None:
        super().__init__()
        self._calls = 0

    def async_result(self) -> LightAsyncResult:
        return LightAsyncResult(self)

    def create_connection(self, *args: Any, **kw: Any) -> Any:
        sock = super().create_connection(*args, **kw)
        return sock if hasattr(sock, "pending") else ReadAheadSocket(sock)  # TLS: its own

    def select(self, rlist: list, wlist: list, xlist: list, timeout: float | None = None):
        self._calls += 1
        if self._calls % YIELD_EVERY == 0:
            eventlet.sleep(0)
        buffered = [s for s in rlist if isinstance(s, ReadAheadSocket) and s.pending()]
        if buffered:
            return buffered, [], []
        ready = self._poll(rlist, wlist)
        if ready is not None:
            return ready
        return super().select(rlist, wlist, xlist, timeout)

    @staticmethod
    def _poll(rlist: list, wlist: list) -> tuple[list, list, list] | None:
        """What is ready now (one real ``poll``, no wait), or None."""
        p = _select.poll()
        mask: dict[int, int] = {}
        for s in rlist:
            mask[_fd(s)] = mask.get(_fd(s), 0) | _select.POLLIN
        for s in wlist:
            mask[_fd(s)] = mask.get(_fd(s), 0) | _select.POLLOUT
        for fd, m in mask.items():
            p.register(fd, m)
        events = dict(p.poll(0))
        if not events:
            return None
        bad = _select.POLLERR | _select.POLLHUP | _select.POLLNVAL
        r = [s for s in rlist if events.get(_fd(s), 0) & (_select.POLLIN | bad)]
        w = [s for s in wlist if events.get(_fd(s), 0) & (_select.POLLOUT | bad)]
        if not r and not w:
            return None
        return r, w, []
