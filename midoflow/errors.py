"""Errors shared by every layer; the REST API maps each to one HTTP status."""


class MidoflowError(Exception):
    """Base class. ``status`` is the HTTP status the API answers with."""

    status = 500

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        d = {"error": type(self).__name__, "message": self.message}
        if self.field:
            d["field"] = self.field
        return d


class Invalid(MidoflowError):
    """Bad input: a field is missing, has the wrong type or an impossible value."""

    status = 400


class NotFound(MidoflowError):
    status = 404


class Conflict(MidoflowError):
    """Stale version, duplicate, or a change that would break a reference."""

    status = 409


class Unavailable(MidoflowError):
    """The topology store cannot be reached or has lost quorum."""

    status = 503


class TooLarge(MidoflowError):
    """A request body, or the transaction a request would commit, is over a size limit."""

    status = 413
