"""Checks of Octavia request attributes: each bad value is a 400 naming the
attribute, the value and what is expected (Octavia's "Invalid input for
field/attribute ..." wording)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import netaddr

from midoflow.octavia.errors import BadRequest

NAME_MAX = 255
DESCRIPTION_MAX = 255


def invalid(attr: str, value: Any, reason: str) -> BadRequest:
    shown = repr(value) if not isinstance(value, str) else f"'{value[:80]}'"
    return BadRequest(f"Invalid input for field/attribute {attr}. Value: {shown}. {reason}")


def body_of(body: Any, resource: str) -> dict[str, Any]:
    """The attributes of ``{"<resource>": {...}}``."""
    if not isinstance(body, dict) or resource not in body:
        raise BadRequest(f"Missing mandatory field/attribute: the body must be "
                         f"{{\"{resource}\": {{...}}}}")
    extra = sorted(k for k in body if k != resource)
    if extra:
        raise BadRequest(f"Unknown attribute(s) {', '.join(extra)}: the body must be "
                         f"{{\"{resource}\": {{...}}}} only")
    if not isinstance(body[resource], dict):
        raise BadRequest(f"Invalid input: '{resource}' must be a JSON object")
    return body[resource]


def check_known(body: dict[str, Any], known: Iterable[str], what: str) -> None:
    unknown = sorted(k for k in body if k not in set(known))
    if unknown:
        raise BadRequest(f"Invalid input: unknown or read-only attribute(s) for a {what}: "
                         f"{', '.join(unknown)}")


def string(value: Any, attr: str, max_len: int = NAME_MAX) -> str:
    """A string (None is the empty string, as Octavia shows a cleared name)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(attr, value, "Value should be a string.")
    if len(value) > max_len:
        raise invalid(attr, value, f"Value should have a length of at most {max_len}.")
    return value


def boolean(value: Any, attr: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(attr, value, "Value should be a boolean (true or false).")
    return value


def integer(value: Any, attr: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(attr, value, "Value should be an integer.")
    try:
        n = int(value)
    except ValueError:
        raise invalid(attr, value, "Value should be an integer.") from None
    if not lo <= n <= hi:
        raise invalid(attr, value, f"Value should be between {lo} and {hi}.")
    return n


def uuid_str(value: Any, attr: str) -> str:
    if not isinstance(value, str):
        raise invalid(attr, value, "Value should be a UUID.")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise invalid(attr, value, "Value should be a UUID.") from None


def ipv4(value: Any, attr: str) -> str:
    if not isinstance(value, str):
        raise invalid(attr, value, "Value should be an IPv4 address.")
    try:
        ip = netaddr.IPAddress(value, version=4, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError):
        raise invalid(attr, value, "Value should be an IPv4 address (midoflow balances "
                      "IPv4).") from None
    return str(ip)


def one_of(value: Any, attr: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise invalid(attr, value, f"Value should be one of: {', '.join(choices)}.")
    return value


def tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise invalid("tags", value, "Value should be a list of non-empty strings.")
    if any(len(t) > NAME_MAX for t in value):
        raise invalid("tags", value, f"Each tag should have at most {NAME_MAX} characters.")
    return sorted(set(value))
