"""Waiting helpers shared by every test: wait for a condition, never for a
fixed time (a fixed sleep is either too short on a busy machine or wasted on
an idle one). A sleep that IS the test ("nothing arrives for 2 s") stays where
it is, with a comment."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

import pytest

T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float = 5.0, what: str = "condition", *,
               interval: float = 0.02) -> T:
    """Poll ``cond`` until it returns something truthy and return that; fail
    the test, naming ``what`` did not happen, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        time.sleep(interval)


@contextlib.contextmanager
def running(server: T, what: str, errors: type[BaseException] | tuple = Exception, *,
            stop: str = "stop") -> Iterator[T]:
    """``server.start()`` (failing the test, not erroring it, with ``what``
    could not be started and why), then yield it and always ``server.<stop>()``
    at the end. For the real ZooKeeper and Cassandra the fixtures start."""
    try:
        server.start()  # type: ignore[attr-defined]
    except errors as e:
        getattr(server, stop)()
        pytest.fail(f"could not start {what} for the tests: {e}", pytrace=False)
    try:
        yield server
    finally:
        getattr(server, stop)()


def require(*, root: bool = False, tools: tuple[str, ...] = (),
            files: tuple[str, ...] = ()) -> None:
    """Fail (not skip: a missing piece is a broken setup, not a pass) unless
    this runs as root with these programs on PATH and these files present."""
    missing = [t for t in tools if shutil.which(t) is None]
    missing += [f for f in files if not os.path.exists(f)]
    if root and os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, OVS): run it as root, as "
                    "`make test` does", pytrace=False)
    if missing:
        pytest.fail(f"this test needs {', '.join(missing)}: run `make setup` (installs "
                    f"them)", pytrace=False)


def read_until(proc: subprocess.Popen, pattern: str, timeout: float, what: str,
               stream: IO | None = None) -> str:
    """Read ``proc``'s output (``stream``: its stdout unless given) until a
    line matches the regular expression ``pattern``; what was read. Reads the
    file descriptor itself, so ``proc.communicate()`` afterwards returns the
    rest. Fails the test after ``timeout`` or if the process ends first."""
    stream = stream if stream is not None else proc.stdout
    assert stream is not None, "the process needs a pipe to read from"
    fd = stream.fileno()
    rx = re.compile(pattern, re.M)
    buf = b""
    deadline = time.monotonic() + timeout
    while not rx.search(buf.decode(errors="replace")):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}; output so far: "
                        f"{buf[-500:].decode(errors='replace')!r}", pytrace=False)
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"the process ended before {what} (exit {proc.poll()}); output: "
                            f"{buf[-500:].decode(errors='replace')!r}", pytrace=False)
            buf += chunk
    return buf.decode(errors="replace")


REPLY = r"^\[(\d+\.\d+)\] \d+ bytes from"


class LivePing:
    """``ping -D`` running in a node (a Mininet host: anything with ``popen``)
    while a test changes the topology under it. Starting returns once the
    first reply is in, so "traffic passed before the change" holds by
    construction; :meth:`reply_times` waits for the end and gives the wall
    clock time of every reply."""

    def __init__(self, node, dst: str, count: int, interval: float = 0.05,
                 first_reply_timeout: float = 5.0) -> None:
        self.proc = node.popen(["ping", "-D", "-n", "-i", str(interval), "-c", str(count),
                                "-W", "1", dst], text=True)
        try:
            self._head = read_until(self.proc, REPLY, first_reply_timeout,
                                    f"a first ping reply from {dst}")
        except BaseException:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            raise

    def reply_times(self, timeout: float = 30.0) -> list[float]:
        out, _ = self.proc.communicate(timeout=timeout)
        return [float(t) for t in re.findall(REPLY, self._head + out, re.M)]
