"""DHCP messages (RFC 2131/2132) <-> bytes, with ``struct``.

Hand-written rather than os-ken's ``os_ken.lib.packet.dhcp`` for three
reasons: the pure core may not import os-ken (tests/unit/test_layers.py);
a VM's frame is untrusted input, so parsing must be bounded (one pass over
the options, each step advancing at least one byte, at most ``MAX_OPTIONS``
options) and fail with one error type (``DhcpError``, whose ``reason`` is
counted), never anything else; and a codec this small is easy to fuzz
(tests/unit/test_dhcp_codec.py: ``parse(build(m)) == m`` and arbitrary
bytes only ever raise ``DhcpError``).

Options are kept in order, one entry per code; an option longer than 255
bytes is split on build and its pieces concatenated on parse (RFC 3396).
Options in ``sname``/``file`` (overload, option 52) are not read: our
clients never send them.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHER = 1
MAGIC = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
SERVER_PORT, CLIENT_PORT = 67, 68

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "discover", OFFER: "offer", REQUEST: "request", DECLINE: "decline",
              ACK: "ack", NAK: "nak", RELEASE: "release", INFORM: "inform"}

OPT_PAD, OPT_END = 0, 255
OPT_MESSAGE_TYPE = 53
MAX_OPTIONS = 255  # option pieces: more in one message are refused
MIN_BOOTP = 300  # replies are padded to BOOTP's minimum (RFC 1542 2.1; old clients)

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes
HEADER_LEN = _HEADER.size

REASONS = ("short", "magic", "options", "message_type")
"""Every ``DhcpError.reason``: short (less than the 236-byte header and the
magic cookie), magic (not a DHCP cookie), options (an option past the end,
too many, or no end), message_type (option 53 missing or not one byte)."""


class DhcpError(ValueError):
    """A message that cannot be parsed or built; ``reason`` is one of
    ``REASONS`` (short and fixed, to be counted)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class DhcpMessage:
    op: int
    xid: int
    chaddr: bytes  # the client's hardware address (hlen bytes; 6 for Ethernet)
    options: tuple[tuple[int, bytes], ...] = ()
    htype: int = HTYPE_ETHER
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    sname: bytes = field(default=b"", repr=False)
    file: bytes = field(default=b"", repr=False)

    def option(self, code: int) -> bytes | None:
        for c, v in self.options:
            if c == code:
                return v
        return None

    @property
    def message_type(self) -> int | None:
        v = self.option(OPT_MESSAGE_TYPE)
        return v[0] if v is not None and len(v) == 1 else None

    @property
    def mac(self) -> str:
        return self.chaddr.hex(":")

    def ip_option(self, code: int) -> str | None:
        """An option holding one IPv4 address (50, 54), or None."""
        v = self.option(code)
        return socket.inet_ntoa(v) if v is not None and len(v) == 4 else None


def parse(data: bytes) -> DhcpMessage:
    """The message in a UDP payload; raises DhcpError, never anything else."""
    n = len(data)
    if n < HEADER_LEN + 4:
        raise DhcpError("short", f"{n} bytes, a DHCP message needs {HEADER_LEN + 4}")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, ch, sname,
     file) = _HEADER.unpack_from(data)
    if data[HEADER_LEN:HEADER_LEN + 4] != MAGIC:
        raise DhcpError("magic", data[HEADER_LEN:HEADER_LEN + 4].hex())
    values: dict[int, bytes] = {}
    order: list[int] = []
    i, count = HEADER_LEN + 4, 0
    while True:
        if i >= n:
            raise DhcpError("options", "no end option")
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= n or i + 2 + data[i + 1] > n:
            raise DhcpError("options", f"option {code} runs past the end")
        count += 1
        if count > MAX_OPTIONS:
            raise DhcpError("options", f"more than {MAX_OPTIONS} options")
        value = data[i + 2:i + 2 + data[i + 1]]
        if code in values:
            values[code] += value  # RFC 3396: a long option in pieces
        else:
            values[code] = value
            order.append(code)
        i += 2 + data[i + 1]
    ntoa = socket.inet_ntoa
    return DhcpMessage(op=op, xid=xid, chaddr=ch[:min(hlen, 16)],
                       options=tuple((c, values[c]) for c in order), htype=htype, hops=hops,
                       secs=secs, flags=flags, ciaddr=ntoa(ci), yiaddr=ntoa(yi),
                       siaddr=ntoa(si), giaddr=ntoa(gi), sname=sname.rstrip(b"\0"),
                       file=file.rstrip(b"\0"))


def build(m: DhcpMessage) -> bytes:
    """The message's bytes, padded to BOOTP's 300; raises DhcpError for a
    field that does not fit (an address, chaddr over 16 bytes, an option code
    0 or 255)."""
    if len(m.chaddr) > 16 or len(m.sname) > 64 or len(m.file) > 128:
        raise DhcpError("options", "chaddr, sname or file too long")
    try:
        aton = socket.inet_aton
        head = _HEADER.pack(m.op, m.htype, len(m.chaddr), m.hops, m.xid, m.secs, m.flags,
                            aton(m.ciaddr), aton(m.yiaddr), aton(m.siaddr), aton(m.giaddr),
                            m.chaddr, m.sname, m.file)
    except (OSError, struct.error) as e:
        raise DhcpError("options", f"header field: {e}") from None
    out = [head, MAGIC]
    for code, value in m.options:
        if not 0 < code < 255:
            raise DhcpError("options", f"option code {code}")
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [b""]
        out += [bytes((code, len(c))) + c for c in chunks]
    out.append(bytes((OPT_END,)))
    data = b"".join(out)
    return data + bytes(max(0, MIN_BOOTP - len(data)))
