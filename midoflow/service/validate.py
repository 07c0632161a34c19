"""Field validation for API bodies: every failure is :class:`Invalid` naming the field."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

import netaddr

from midoflow.errors import Invalid, NotFound
from midoflow.kinds.base import DESCRIPTION_MAX as DESCRIPTION_MAX  # declared once there
from midoflow.kinds.base import NAME_MAX as NAME_MAX

# Linux IFNAMSIZ is 16 including the NUL; OVS port names follow it.
INTERFACE_RE = re.compile(r"[^\s/]{1,15}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID_ANYCASE_RE = re.compile(UUID_RE.pattern, re.IGNORECASE)


def new_id() -> str:
    return str(uuid.uuid4())


def url_id(value: str, what: str) -> str:
    """An id taken from a URL: canonical lower-case UUID, else NotFound."""
    if not isinstance(value, str) or not _UUID_ANYCASE_RE.fullmatch(value):
        raise NotFound(f"{what} {value!r} not found (ids are UUIDs)")
    return value.lower()


def body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object", None)
    return body


def check_fields(body: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for k in body:
        if k not in allowed:
            raise Invalid(f"unknown field {k!r}", k)


def item(value: Any, field: str, where: str, keys: tuple[str, ...],
         required: tuple[str, ...] = ()) -> dict[str, Any]:
    """One object of a list field (``where``: its path, "field[2]."): only
    ``keys``, with ``required`` present; each error names the key."""
    if not isinstance(value, dict):
        shape = ", ".join(f'"{k}": ...' for k in keys)
        raise Invalid(f"{field} items must be objects {{{shape}}}", field)
    for k in value:
        if k not in keys:
            raise Invalid(f"unknown field {k!r}", where + k)
    for k in required:
        if k not in value:
            raise Invalid(f"{where}{k} is required", where + k)
    return value


def require(body: dict[str, Any], field: str) -> Any:
    if field not in body:
        raise Invalid(f"{field} is required", field)
    return body[field]


def string(value: Any, field: str, max_len: int = NAME_MAX, min_len: int = 0) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a string", field)
    _unicode(value, field)
    if len(value) > max_len:
        raise Invalid(f"{field} is longer than {max_len} characters", field)
    if len(value) < min_len:
        raise Invalid(f"{field} must not be empty", field)
    return value


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field} must be true or false", field)
    return value


def integer(value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{field} must be an integer", field)
    if lo is not None and value < lo:
        raise Invalid(f"{field} must be at least {lo}", field)
    if hi is not None and value > hi:
        raise Invalid(f"{field} must be at most {hi}", field)
    return value


def enum(value: Any, field: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise Invalid(f"{field} must be one of {', '.join(choices)}", field)
    return value


def uuid_str(value: Any, field: str) -> str:
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise Invalid(f"{field} must be a UUID (lower-case, 8-4-4-4-12 hex digits)", field)
    return value


def interface_name(value: Any, field: str = "interface_name") -> str:
    if not isinstance(value, str) or not INTERFACE_RE.fullmatch(value):
        raise Invalid(
            f"{field} must be an interface name: 1 to 15 characters, no spaces or '/'", field
        )
    _unicode(value, field)
    return value


def _unicode(value: str, field: str) -> None:
    """JSON may carry lone surrogates (\\ud800): not text, and not storable as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{field} is not valid Unicode text", field) from None


def unicast_ipv4(value: Any, field: str) -> str:
    """A dotted-quad IPv4 unicast address, returned in canonical form."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", value):
        raise Invalid(f"{field} must be an IPv4 address (a.b.c.d)", field)
    try:
        ip = netaddr.IPAddress(value, 4, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(f"{field} must be an IPv4 address (a.b.c.d)", field) from None
    if ip.is_multicast() or ip in netaddr.IPNetwork("240.0.0.0/4") or ip in netaddr.IPNetwork(
        "0.0.0.0/8"
    ):
        raise Invalid(f"{field} must be a unicast address, not {value}", field)
    return str(ip)


def version(body: dict[str, Any]) -> int | None:
    if "version" not in body:
        return None
    return integer(body["version"], "version", lo=0)


def readonly(body: dict[str, Any], current: dict[str, Any], fields: Iterable[str]) -> None:
    """Read-only fields may be echoed back unchanged; a different value is Invalid."""
    for f in fields:
        if f in body and _norm(body[f]) != _norm(current.get(f)):
            raise Invalid(f"{f} is read-only", f)


def _norm(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_norm(x) for x in v]
    if isinstance(v, bool):
        return ("bool", v)
    return v


_IPV4_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_PREFIX_RE = re.compile(r"0|[1-9][0-9]?")


def ipv4(value: Any, field: str) -> str:
    """Any dotted-quad IPv4 address (broadcast, multicast and 0.0.0.0 included)."""
    if not isinstance(value, str) or not _IPV4_RE.fullmatch(value):
        raise Invalid(f"{field} must be an IPv4 address (a.b.c.d)", field)
    try:
        return str(netaddr.IPAddress(value, 4, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(f"{field} must be an IPv4 address (a.b.c.d)", field) from None


def cidr(value: Any, field: str) -> str:
    """An IPv4 network ``a.b.c.d/len`` (len 0..32) with no host bits set."""
    what = f"{field} must be an IPv4 network a.b.c.d/len (len 0 to 32)"
    if not isinstance(value, str) or "/" not in value:
        raise Invalid(what, field)
    addr, _, plen = value.partition("/")
    if not _IPV4_RE.fullmatch(addr) or not _PREFIX_RE.fullmatch(plen) or int(plen) > 32:
        raise Invalid(what, field)
    try:
        ip = netaddr.IPAddress(addr, 4, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(what, field) from None
    net = netaddr.IPNetwork(f"{ip}/{plen}")
    if net.network != ip:
        raise Invalid(f"{field} {value} has host bits set: did you mean {net.cidr}?", field)
    return str(net.cidr)


def mac(value: Any, field: str, unicast: bool = True) -> str:
    """A MAC address ``aa:bb:cc:dd:ee:ff`` (either case), returned lower-case.

    With ``unicast`` the group bit must be clear and the address not all zeros."""
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value):
        raise Invalid(f"{field} must be a MAC address (six hex octets separated by ':')", field)
    value = value.lower()
    if unicast and (int(value[:2], 16) & 1 or value == "00:00:00:00:00:00"):
        raise Invalid(f"{field} must be a unicast MAC address, not {value}", field)
    return value


def random_mac() -> str:
    """A random locally administered unicast MAC (first octet x2, x6, xa or xe)."""
    octets = bytearray(uuid.uuid4().bytes[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def network(ip: str, prefix_len: int) -> netaddr.IPNetwork:
    """The network an interface address lies on."""
    return netaddr.IPNetwork(f"{ip}/{prefix_len}").cidr


def overlaps(a: netaddr.IPNetwork, b: netaddr.IPNetwork) -> bool:
    return a.first <= b.last and b.first <= a.last


def optional(body: dict[str, Any], field: str, check: Any, *args: Any) -> Any:
    """An optional, nullable field: None when absent or null, else ``check``ed."""
    value = body.get(field)
    return None if value is None else check(value, field, *args)


def a_list(value: Any, field: str) -> list:
    if not isinstance(value, list):
        raise Invalid(f"{field} must be a list", field)
    return value


def unique(items: list, field: str) -> list:
    seen = set()
    for x in items:
        key = repr(x)
        if key in seen:
            raise Invalid(f"{field} lists {x} twice", field)
        seen.add(key)
    return items


def id_list(value: Any, field: str) -> list[str]:
    """A list of distinct UUIDs."""
    return unique([uuid_str(x, field) for x in a_list(value, field)], field)


def ipv4_list(value: Any, field: str) -> list[str]:
    """A list of distinct unicast IPv4 addresses (canonical form)."""
    return unique([unicast_ipv4(x, field) for x in a_list(value, field)], field)


def port_range(value: Any, field: str) -> list[int]:
    """An inclusive [lo, hi] range of L4 ports (or ICMP type/code), 0 <= lo <= hi <= 65535."""
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(f"{field} must be a list [lo, hi] of two integers", field)
    lo, hi = (integer(x, field, 0, 65535) for x in value)
    if lo > hi:
        raise Invalid(f"{field} [{lo}, {hi}]: lo must not be greater than hi", field)
    return [lo, hi]


def ip_key(addr: str) -> int:
    return int(netaddr.IPAddress(addr))


ASN_MAX = 4294967295  # 4-byte AS numbers (RFC 6793)


def asn(value: Any, field: str) -> int:
    """An AS number, 1 to 4294967295 (0 is reserved)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ASN_MAX:
        raise Invalid(f"{field} must be an AS number: an integer from 1 to {ASN_MAX}", field)
    return value


def bgp_timers(keepalive: int, hold_time: int, field: str) -> None:
    """A BGP hold time is 0 (no keepalives) or at least three keepalive intervals."""
    if hold_time and keepalive * 3 > hold_time:
        raise Invalid(f"keepalive * 3 must not exceed hold_time (keepalive {keepalive} s, "
                      f"hold_time {hold_time} s): lower keepalive to {hold_time // 3} or "
                      f"less, or raise hold_time to {keepalive * 3} or more", field)
