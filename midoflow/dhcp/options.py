"""The options the agent's DHCP server sends, encoded (RFC 2132, RFC 3442),
and the per-port extra options by name or number (Neutron's
``extra_dhcp_opts``, which take dnsmasq's option names).

``encode(code, value)`` takes a Python value of the option's kind;
``extra(name, text)`` parses the text Neutron stores (``"10.0.0.1,10.0.0.2"``,
``"1400"``, ``"pxelinux.0"``). Both raise ``OptionError`` saying what is
wrong; the agent counts it, logs it and answers without that option.
"""

from __future__ import annotations

import socket
import struct

from netaddr import AddrFormatError, IPAddress, IPNetwork

from midoflow.model import DHCP_OPTION_CODES, DHCP_SIADDR_OPTION

SUBNET_MASK, ROUTER, DNS, HOSTNAME, DOMAIN_NAME, MTU, BROADCAST = 1, 3, 6, 12, 15, 26, 28
LEASE_TIME, MESSAGE, RENEWAL, REBINDING, SERVER_ID = 51, 56, 58, 59, 54
REQUESTED_IP, PARAMS, CLIENT_ID, CLASSLESS_ROUTES = 50, 55, 61, 121
INFINITE = 0xFFFFFFFF

# Kinds: ips (one or more IPv4), u8, u16, u32, text, bool, routes (RFC 3442),
# domains (RFC 1035 names, option 119).
KINDS: dict[int, str] = {
    1: "ips", 2: "u32", 3: "ips", 4: "ips", 5: "ips", 6: "ips", 7: "ips", 9: "ips",
    12: "text", 13: "u16", 15: "text", 16: "ips", 17: "text", 19: "bool", 23: "u8",
    26: "u16", 28: "ips", 40: "text", 41: "ips", 42: "ips", 44: "ips", 45: "ips",
    46: "u8", 47: "text", 51: "u32", 58: "u32", 59: "u32", 64: "text", 65: "ips",
    66: "text", 67: "text", 69: "ips", 70: "ips", 119: "domains", 121: "routes",
    150: "ips", 252: "text", 21: "ips", 33: "ips", 37: "u8", 38: "u32", 35: "u32",
    71: "ips", 74: "ips",
}

# dnsmasq's names (what Neutron's extra_dhcp_opts carry) -> option code: the
# model's table, the one the API validates against ("server-ip-address" is not
# an option but the reply header's siaddr: see ``Lease.siaddr``).
NAMES: dict[str, int] = dict(DHCP_OPTION_CODES)
SIADDR_NAME = DHCP_SIADDR_OPTION


class OptionError(ValueError):
    """An option that cannot be encoded; the message says which and why."""


def code_of(name: str) -> int:
    """An option's code from its dnsmasq name or its number ("26",
    "option:mtu" and "option:26" as dnsmasq writes them)."""
    n = name.strip()
    if n.startswith("option:"):
        n = n[7:]
    if n.isdigit() and 0 < int(n) < 255:
        return int(n)
    if n in NAMES:
        return NAMES[n]
    raise OptionError(f"unknown DHCP option {name!r}: give a number 1-254 or one of "
                      f"{', '.join(sorted(NAMES))}")


def _ip(text: str) -> bytes:
    try:
        return IPAddress(text.strip(), 4).packed
    except (AddrFormatError, ValueError, TypeError):
        raise OptionError(f"{text!r} is not an IPv4 address") from None


def routes(pairs) -> bytes:
    """RFC 3442 classless routes: for each (cidr, next hop), the prefix
    length, the significant octets of the destination, the router."""
    out = bytearray()
    for cidr, hop in pairs:
        try:
            net = IPNetwork(cidr, 4)
        except (AddrFormatError, ValueError, TypeError):
            raise OptionError(f"{cidr!r} is not an IPv4 network") from None
        out.append(net.prefixlen)
        out += net.network.packed[:(net.prefixlen + 7) // 8]
        out += _ip(hop or "0.0.0.0")
    return bytes(out)


def _domains(names) -> bytes:
    out = bytearray()
    for name in names:
        for label in name.strip().strip(".").split("."):
            b = label.encode()
            if not 0 < len(b) < 64:
                raise OptionError(f"{name!r} is not a domain name")
            out += bytes((len(b),)) + b
        out.append(0)
    return bytes(out)


def encode(code: int, value) -> bytes:
    """An option's value: ``value`` a str or a sequence of str (ips, domains),
    an int (u8/u16/u32, bool), str (text), pairs (routes); bytes as they are."""
    if isinstance(value, bytes):
        return value
    kind = KINDS.get(code, "text")
    try:
        if kind == "ips":
            return b"".join(_ip(v) for v in ([value] if isinstance(value, str) else value))
        if kind in ("u8", "u16", "u32", "bool"):
            return struct.pack({"u8": "!B", "bool": "!B", "u16": "!H", "u32": "!I"}[kind],
                               int(value))
        if kind == "routes":
            return routes(value)
        if kind == "domains":
            return _domains([value] if isinstance(value, str) else value)
        return str(value).encode()
    except (struct.error, ValueError, TypeError) as e:
        if isinstance(e, OptionError):
            raise
        raise OptionError(f"option {code}: {value!r} does not fit ({kind}): {e}") from None


def extra(name: str, text: str) -> tuple[int, bytes]:
    """A per-port extra option from Neutron's (opt_name, opt_value) text."""
    code = code_of(name)
    kind = KINDS.get(code, "text")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if kind in ("ips", "domains"):
        value = parts
    elif kind == "routes":  # "10.1.0.0/24,10.0.0.1,0.0.0.0/0,10.0.0.1" as dnsmasq takes it
        if len(parts) % 2:
            raise OptionError(f"classless-static-route {text!r}: give destination,router pairs")
        value = list(zip(parts[::2], parts[1::2], strict=True))
    elif kind == "bool":
        value = text.strip().lower() in ("1", "true", "yes", "on")
    elif kind in ("u8", "u16", "u32"):
        if not text.strip().isdigit():
            raise OptionError(f"option {name!r} needs a number, got {text!r}")
        value = int(text)
    else:
        value = text
    return code, encode(code, value)


def mask(prefix: int) -> bytes:
    return socket.inet_aton(str(IPNetwork(f"0.0.0.0/{prefix}").netmask))
