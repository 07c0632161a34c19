"""Octavia's errors: ``{"faultcode", "faultstring", "debuginfo"}`` (what
python-octaviaclient prints is ``faultstring``)."""

from __future__ import annotations

from typing import Any


class OctaviaError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"faultcode": "Client" if self.status < 500 else "Server",
                "faultstring": self.message, "debuginfo": None}


class BadRequest(OctaviaError):
    status = 400


class Unauthorized(OctaviaError):
    status = 401


class Forbidden(OctaviaError):
    status = 403


class NotFound(OctaviaError):
    status = 404


class MethodNotAllowed(OctaviaError):
    status = 405

    def __init__(self, method: str, allow: list[str]) -> None:
        super().__init__(f"The method {method} is not allowed for this resource; allowed: "
                         f"{', '.join(allow)}")
        self.allow = allow


class Conflict(OctaviaError):
    status = 409


class TooLarge(OctaviaError):
    status = 413


class NotImplementedHere(OctaviaError):
    status = 501


class Unavailable(OctaviaError):
    status = 503


def unsupported(what: str, hint: str) -> BadRequest:
    """A feature Octavia has and midoflow's layer-4 balancing does not."""
    return BadRequest(f"{what} is not supported: midoflow balances at layer 4 in the "
                      f"routers ({hint})")
