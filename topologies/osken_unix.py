"""Make os-ken 3.1 accept OpenFlow connections on a unix socket.

``osken-manager --ofp-listen-host /path/of.sock`` does listen on a unix socket
(os_ken.lib.hub.StreamServer picks AF_UNIX when the path's directory exists),
but every accepted connection then dies in ``Datapath.__init__`` on
``setsockopt(IPPROTO_TCP, TCP_NODELAY)`` → ``OSError: [Errno 95] Operation not
supported``; OVS only logs "connection timed out". Importing this module
(e.g. listing it as an app module: ``osken-manager topologies.osken_unix
midoflow.apps.agent``, or ``import topologies.osken_unix`` at the top of the
agent app) wraps unix sockets so that TCP-level options are ignored.

Call ``apply()`` explicitly if you prefer; importing applies it once.
"""

from __future__ import annotations

import socket

from os_ken.controller import controller as _controller


class _UnixSocket:
    """Proxy of an AF_UNIX socket that ignores IPPROTO_TCP options."""

    def __init__(self, sock):
        self._sock = sock

    def setsockopt(self, level, optname, value, *rest):
        if level == socket.IPPROTO_TCP:
            return None
        return self._sock.setsockopt(level, optname, value, *rest)

    def __getattr__(self, name):
        return getattr(self._sock, name)


_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    orig = _controller.Datapath.__init__

    def __init__(self, sock, address):  # noqa: N807
        if getattr(sock, "family", None) == socket.AF_UNIX:
            sock = _UnixSocket(sock)
            address = address or ("unix", 0)
        orig(self, sock, address)

    _controller.Datapath.__init__ = __init__
    _applied = True


apply()
