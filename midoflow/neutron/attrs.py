"""Attribute validation and defaults shared by the Neutron collections.

Every error is a :class:`~midoflow.neutron.errors.BadRequest` worded as
Neutron's: "Invalid input for cidr. Reason: ...". Converters return the
normalized value (a CIDR without host bits, a lower-case MAC, ...).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import netaddr

from midoflow.neutron import errors as ne

NAME_MAX = 255
DESCRIPTION_MAX = 255
# Standard attributes every stored Neutron object carries; read-only.
STANDARD = ("id", "tags", "created_at", "updated_at", "revision_number")
OWNER = ("project_id", "tenant_id")


def invalid(attr: str, reason: str) -> ne.BadRequest:
    return ne.BadRequest(f"Invalid input for {attr}. Reason: {reason}.")


def now() -> str:
    """ISO 8601 UTC, seconds, as Neutron shows timestamps: 2026-12-05T01:02:03Z."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------- bodies
def body_of(body: Any, resource: str) -> dict[str, Any]:
    """The attributes of a request body: ``{"network": {...}}`` or the inner dict."""
    if isinstance(body, dict) and set(body) == {resource} and isinstance(body[resource], dict):
        body = body[resource]
    if not isinstance(body, dict):
        raise ne.BadRequest(f"Resource body required: a JSON object with the {resource}'s "
                            "attributes")
    return body


def check_known(body: dict[str, Any], create: Iterable[str], readonly: Iterable[str] = (),
                *, post: bool = True) -> None:
    """400 for an unknown attribute, or a read-only one (POST) / one that cannot
    change (PUT)."""
    create, readonly = set(create), set(readonly)
    unknown = sorted(k for k in body if k not in create and k not in readonly)
    if unknown:
        raise ne.BadRequest("Unrecognized attribute(s) " + ", ".join(f"'{k}'" for k in unknown))
    ro = sorted(k for k in body if k in readonly)
    if ro:
        raise ne.BadRequest(f"Attribute '{ro[0]}' not allowed in POST" if post
                            else f"Cannot update read-only attribute {ro[0]}")


def owner(ctx: Any, body: dict[str, Any], resource: str) -> str:
    """The project a new object belongs to: the caller's, or (admin only) the
    ``project_id``/``tenant_id`` of the body."""
    given = [body[k] for k in OWNER if body.get(k) is not None]
    for k in OWNER:
        if body.get(k) is not None:
            string(body[k], k, NAME_MAX)
    if len(given) == 2 and given[0] != given[1]:
        raise ne.BadRequest("project_id and tenant_id do not match")
    pid = given[0] if given else ctx.project_id
    if pid != ctx.project_id and not ctx.is_admin:
        raise policy("create", resource, "tenant_id")
    return pid


def policy(action: str, resource: str, attr: str | None = None) -> ne.PolicyNotAuthorized:
    rule = f"{action}_{resource}" + (f":{attr}" if attr else "")
    return ne.PolicyNotAuthorized(f"rule:{rule} is disallowed by policy")


def admin_only(ctx: Any, body: dict[str, Any], attrs: Iterable[str], action: str,
               resource: str, current: dict[str, Any] | None = None) -> None:
    """403 when a non-admin sets an admin-only attribute (echoing the current
    value in an update is allowed)."""
    if ctx.is_admin:
        return
    for a in attrs:
        if a in body and (current is None or body[a] != current.get(a)):
            raise policy(action, resource, a)


def stamp_new(obj: dict[str, Any], project_id: str) -> dict[str, Any]:
    """Owner and standard attributes of a new object."""
    t = now()
    obj.update(project_id=project_id, tenant_id=project_id, tags=[], created_at=t,
               updated_at=t, revision_number=0)
    return obj


def stamp_update(obj: dict[str, Any]) -> dict[str, Any]:
    obj["updated_at"] = now()
    obj["revision_number"] = int(obj.get("revision_number") or 0) + 1
    return obj


# --------------------------------------------------------------------- values
def string(value: Any, attr: str, max_len: int = NAME_MAX) -> str:
    if not isinstance(value, str):
        raise invalid(attr, f"'{value}' is not a valid string")
    if len(value) > max_len:
        raise invalid(attr, f"'{value[:40]}...' exceeds maximum length of {max_len}")
    return value


def boolean(value: Any, attr: str) -> bool:
    """Neutron's convert_to_boolean: booleans, 0/1, "true"/"false", "0"/"1"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "0", "1"):
        return value.lower() in ("true", "1")
    raise invalid(attr, f"'{value}' cannot be converted to boolean")


def integer(value: Any, attr: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool):
        raise invalid(attr, f"'{value}' is not an integer")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise invalid(attr, f"'{value}' is not an integer")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise invalid(attr, f"'{value}' is not in range {lo} through {hi}")
    return value


def uuid_str(value: Any, attr: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(uuid.UUID(value))
    except (ValueError, TypeError):
        raise invalid(attr, f"'{value}' is not a valid UUID") from None


def ip(value: Any, attr: str, version: int | None = 4) -> str:
    """An IP address (IPv4 unless ``version`` says otherwise; None: either)."""
    if not isinstance(value, str) or "/" in value:
        raise invalid(attr, f"'{value}' is not a valid IP address")
    try:
        addr = netaddr.IPAddress(value, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise invalid(attr, f"'{value}' is not a valid IP address") from None
    if version is not None and addr.version != version:
        raise invalid(attr, f"'{value}' is not a valid IPv{version} address")
    return str(addr)


def cidr(value: Any, attr: str, version: int | None = 4, *, strict: bool = True) -> str:
    """A network address with prefix length; ``strict``: no host bits (Neutron's
    "isn't a recommended CIDR" 400), else they are dropped."""
    if not isinstance(value, str):
        raise invalid(attr, f"'{value}' is not a valid IP subnet")
    try:
        if "/" not in value:
            raise ValueError
        addr, plen = value.split("/", 1)
        net = netaddr.IPNetwork(f"{netaddr.IPAddress(addr, flags=netaddr.INET_PTON)}/"
                                f"{int(plen)}")
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise invalid(attr, f"'{value}' is not a valid IP subnet") from None
    if version is not None and net.version != version:
        raise invalid(attr, f"'{value}' is not a valid IPv{version} subnet")
    if strict and net.ip != net.network:
        raise invalid(attr, f"'{value}' isn't a recommended CIDR, use '{net.cidr}' instead")
    return str(net.cidr)


def ip_or_cidr(value: Any, attr: str) -> str:
    """An IPv4 address or network (allowed address pairs)."""
    if isinstance(value, str) and "/" in value:
        return cidr(value, attr, strict=False)
    return ip(value, attr)


def mac(value: Any, attr: str) -> str:
    """A unicast MAC, as lower-case colon-separated."""
    try:
        if not isinstance(value, str):
            raise ValueError
        m = netaddr.EUI(value, version=48, dialect=netaddr.mac_unix_expanded)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise invalid(attr, f"'{value}' is not a valid MAC address") from None
    if m.words[0] & 1 or int(m) == 0:
        raise invalid(attr, f"'{value}' is not a valid unicast MAC address")
    return str(m).lower()


def a_list(value: Any, attr: str, item: Callable[[Any, str], Any] | None = None,
           *, unique: bool = True) -> list:
    if not isinstance(value, list):
        raise invalid(attr, f"'{value}' is not a list")
    out = [item(x, attr) for x in value] if item else list(value)
    if unique:
        seen: list = []
        for x in out:
            if x in seen:
                raise invalid(attr, f"Duplicate items in the list: '{x}'")
            seen.append(x)
    return out


def a_dict(value: Any, attr: str, keys: Iterable[str], required: Iterable[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise invalid(attr, f"'{value}' is not a dictionary")
    keys = set(keys)
    extra = sorted(k for k in value if k not in keys)
    if extra:
        raise invalid(attr, f"Unexpected keys supplied: {', '.join(extra)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise invalid(attr, f"Validation of dictionary's keys failed. Expected keys: "
                            f"{set(required)} Provided keys: {set(value)}")
    return value


def one_of(value: Any, attr: str, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise invalid(attr, f"'{value}' is not in {choices}")
    return value
