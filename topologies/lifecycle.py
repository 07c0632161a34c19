"""What every lab in ``topologies`` shares: waiting for a condition, and
being a context manager that stops whatever it started, even when starting
fails half-way."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Self


def wait_for(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.05,
             error: type[Exception] = TimeoutError):
    """``pred()``'s first true value, polled every ``interval`` seconds;
    ``error`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class StartStop:
    """``with Lab(...) as lab:`` starts it and always stops it; a start that
    fails half-way stops what it had started before raising."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
