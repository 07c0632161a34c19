"""The cheap-select eventlet handler for kazoo (midoflow.store.zk_eventlet):
read-ahead served in the sizes asked, select answering from the read-ahead
and from a zero-timeout poll, and waiting in the hub only when nothing is
ready."""

from __future__ import annotations

import socket
import time

import pytest
from kazoo.handlers.eventlet import TimeoutError as KazooEventletTimeout

from midoflow.store.zk_eventlet import FastEventletHandler, ReadAheadSocket


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_read_ahead_serves_the_sizes_asked_in_order(pair):
    a, b = pair
    payload = bytes(range(256)) * 40  # 10,240 bytes
    a.sendall(payload)
    s = ReadAheadSocket(b)
    first = s.recv(4)
    assert first == payload[:4]
    assert s.pending() == len(payload) - 4  # the rest read ahead in one recv
    got = bytearray(first)
    while s.pending():
        got += s.recv(100)
    assert bytes(got) == payload
    a.sendall(b"xy")
    assert s.recv(10) == b"xy" and s.pending() == 0


def test_select_answers_from_the_read_ahead_though_the_socket_is_empty(pair):
    a, b = pair
    a.sendall(b"0123456789")
    s = ReadAheadSocket(b)
    assert s.recv(2) == b"01"
    h = FastEventletHandler()
    r, w, _ = h.select([s], [], [], 0.5)  # a plain select would find nothing
    assert r == [s] and w == []
    assert s.recv(8) == b"23456789"


def test_select_sees_ready_sockets_at_once_and_waits_when_none_is(pair):
    a, b = pair
    h = FastEventletHandler()
    s = ReadAheadSocket(b)
    r, w, _ = h.select([s], [a], [], 5.0)  # a is writable at once
    assert r == [] and w == [a]
    t0 = time.monotonic()
    r, w, _ = h.select([s], [], [], 0.2)  # nothing to read: waits out the timeout
    assert (r, w) == ([], []) and time.monotonic() - t0 >= 0.15
    a.sendall(b"!")
    r, _, _ = h.select([s, a], [], [], 5.0)
    assert r == [s]


def test_light_results_wait_link_and_fail_as_kazoos_do():
    import eventlet

    from midoflow.store.zk_eventlet import LightAsyncResult

    h = FastEventletHandler()
    r = LightAsyncResult(h)
    r.set(42)
    assert r.ready() and r.get() == 42 and r._cond is None  # no Condition made
    waited = LightAsyncResult(h)
    eventlet.spawn_after(0.05, waited.set, "later")
    assert waited.get(timeout=5) == "later"  # a waiter is woken
    failed = LightAsyncResult(h)
    linked = []
    failed.rawlink(linked.append)  # the handler is not running: called at once
    failed.set_exception(KeyError("x"))
    assert linked == [failed]
    with pytest.raises(KeyError):
        failed.get()
    with pytest.raises(KazooEventletTimeout):
        LightAsyncResult(h).get(block=False)
