"""kazoo's connection loop sending queued requests in batches (issue 13).

kazoo sends one request per turn of its connection loop: a select, one
``send`` system call, one wake-up byte read, per request. An agent that
queues 35,000 reads at once (:func:`midoflow.store.zookeeper._send_all`)
spends a third of its load there. :func:`batch_sends` replaces the
connection's ``_send_request`` by one that takes up to :data:`BATCH`
plain requests off the queue, files them as pending (in order, as kazoo
does) and writes them with one ``send``. Authentication packets, kazoo's
test sentinels and ``Close`` still go through kazoo's own method, one at a
time. A batch is filed as pending before it is written: if the connection
drops meanwhile its requests fail with ConnectionLoss (outcome unknown), as
a request that was sent and not answered does, instead of being sent again.
"""

from __future__ import annotations

import struct
import types
from typing import Any

from kazoo.protocol.serialization import Auth, Close

BATCH = 256
_INT = struct.Struct("!i")
_SPECIAL_TYPES = (Auth.type, Close.type)


def _plain(request: Any) -> bool:
    t = getattr(request, "type", None)
    return t is not None and t not in _SPECIAL_TYPES and hasattr(request, "serialize")


def batch_sends(client: Any) -> None:
    """Make ``client``'s connection send queued requests in batches."""
    conn = client._connection
    single = conn._send_request

    def _send_request(self: Any, read_timeout: float, connect_timeout: float) -> Any:
        queue = client._queue
        if len(queue) < 2 or not _plain(queue[0][0]):
            return single(read_timeout, connect_timeout)
        out = bytearray()
        n = 0
        while queue and n < BATCH:
            request, async_object = queue[0]
            if not _plain(request):
                break
            self._xid = (self._xid % 2147483647) + 1
            body = _INT.pack(self._xid) + _INT.pack(request.type) + request.serialize()
            out += _INT.pack(len(body))
            out += body
            queue.popleft()
            client._pending.append((request, async_object, self._xid))
            n += 1
        self._write(bytes(out), connect_timeout)
        got = 0
        while got < n:  # one wake-up byte per request taken (fewer if not written yet)
            try:
                chunk = self._read_sock.recv(n - got)
            except OSError:
                break
            if not chunk:
                break
            got += len(chunk)
            if got < n and not self.handler.select([self._read_sock], [], [], 0)[0]:
                break
        return None

    conn._send_request = types.MethodType(_send_request, conn)
