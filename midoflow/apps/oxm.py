"""OpenFlow 1.3 matches and set-field actions for the per-packet path, built
and serialized fast.

Profiled in the agent's packet-in path (parse, simulate, messages, send),
os-ken's ``OFPMatch(**kwargs)`` normalizes every field through netaddr, and
``serialize`` converts every field of the match and of each set-field
action through netaddr once more: about 60 % of a new flow's CPU here. The
classes below are os-ken's own (``OFPMatch``, ``OFPActionSetField``: the
pipeline check, fast restart and the tests read them as usual), fields in
the order os-ken gives them, but each field's TLV is encoded once: the
values that repeat (ports' MACs, gateways, in_port) come from a cache, those
that vary per flow (addresses, L4 ports) are packed directly. Every fast
encoding is checked once per field against os-ken's own before it is used.

``apply()`` gives os-ken a packet-in parser that reads the match into the
same ``Match`` (os-ken's builds the legacy API's ``Flow`` and wildcard
objects for each packet-in: 15-20 % of a loaded agent's CPU, profiled with
py-spy).
"""

from __future__ import annotations

import socket
import struct
from functools import cache, lru_cache

from os_ken.lib.pack_utils import msg_pack_into
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

__all__ = ["Match", "SetField", "apply", "match", "parse_match", "tlv"]


def _slow(name: str, value) -> bytes:
    """os-ken's encoding of one OXM field (header, value, mask)."""
    n, v, m = ofp.oxm_from_user(name, value)
    buf = bytearray()
    size = ofp.oxm_serialize(n, v, m, buf, 0)
    return bytes(buf[:size])


def _mac(v: str) -> bytes:
    return bytes.fromhex(v.replace(":", ""))


def _int(size: int):
    return lambda v: int(v).to_bytes(size, "big")


# Fields whose values vary per flow: a direct encoder and a sample value.
_ENCODERS = {
    "in_port": (_int(4), 1), "eth_src": (_mac, "02:00:00:00:00:01"),
    "eth_dst": (_mac, "02:00:00:00:00:01"), "eth_type": (_int(2), 0x800),
    "ip_proto": (_int(1), 6), "ipv4_src": (socket.inet_aton, "10.0.0.1"),
    "ipv4_dst": (socket.inet_aton, "10.0.0.1"), "tcp_src": (_int(2), 1),
    "tcp_dst": (_int(2), 1), "udp_src": (_int(2), 1), "udp_dst": (_int(2), 1),
    "icmpv4_type": (_int(1), 8), "icmpv4_code": (_int(1), 0), "arp_op": (_int(2), 1),
    "arp_spa": (socket.inet_aton, "10.0.0.1"), "arp_tpa": (socket.inet_aton, "10.0.0.1"),
    "arp_sha": (_mac, "02:00:00:00:00:01"), "ip_dscp": (_int(1), 1), "ip_ecn": (_int(1), 1),
    "tunnel_id": (_int(8), 5), "tun_ipv4_dst": (socket.inet_aton, "10.0.0.1"),
}


@cache
def _fast(name: str):
    """(header bytes, encoder) of a field whose direct encoding equals
    os-ken's for a sample, else None (os-ken's own is used)."""
    enc = _ENCODERS.get(name)
    if enc is None:
        return None
    f, sample = enc
    try:
        value = f(sample)
        ref = _slow(name, sample)
    except (KeyError, ValueError, TypeError):
        return None
    if not ref.endswith(value):
        return None
    prefix = ref[:len(ref) - len(value)]
    return (prefix, f) if prefix + value == ref else None


@lru_cache(maxsize=1 << 16)
def tlv(name: str, value) -> bytes:
    """One OXM field, encoded (cached: most values repeat across flows)."""
    fast = None if isinstance(value, tuple) else _fast(name)
    if fast is not None:
        try:
            return fast[0] + fast[1](value)
        except (ValueError, TypeError, OSError, OverflowError):
            pass  # os-ken says what is wrong with it
    return _slow(name, value)


@cache
def _order(name: str):
    """os-ken's sort key of a field (OXM type value): eth_type comes before
    the IP fields that need it."""
    n = ofp.oxm_from_user_header(name)
    return n[0] if isinstance(n, tuple) else n


class Match(parser.OFPMatch):
    """An ``OFPMatch`` of fields given in order, serialized from cached TLVs."""

    def __init__(self, fields: list[tuple[str, object]]) -> None:  # noqa: D107
        # what OFPMatch(_ordered_fields=...) keeps, without the legacy API's
        # wildcard objects (serialize below never uses them)
        self.fields = []
        self.type = ofp.OFPMT_OXM
        self.length = None
        self._fields2 = fields

    def _composed_with_old_api(self) -> bool:
        return False

    def serialize(self, buf, offset):
        body = b"".join([tlv(k, v) for k, v in self._fields2])
        length = 4 + len(body)
        pad = -length % 8
        msg_pack_into(f"!HH{len(body) + pad}s", buf, offset, ofp.OFPMT_OXM, length, body)
        self.length = length
        return length + pad


def match(**kwargs) -> Match:
    """``OFPMatch(**kwargs)``'s fields and order, without its normalization
    (values as the agent's parser gives them: lowercase MACs, dotted IPv4)."""
    return Match(sorted(kwargs.items(), key=lambda kv: _order(kv[0])))


class SetField(parser.OFPActionSetField):
    """An ``OFPActionSetField`` serialized from a cached TLV."""

    def serialize(self, buf, offset):
        field = tlv(self.key, self.value)
        self.len = (4 + len(field) + 7) // 8 * 8
        msg_pack_into(f"!HH{self.len - 4}s", buf, offset, self.type, self.len, field)


def parse_match(buf, offset: int) -> parser.OFPMatch:
    """A match read from the wire, as ``OFPMatch.parser`` reads it (os-ken's
    own is used for one it cannot read: it says what is wrong)."""
    type_, length = struct.unpack_from("!HH", buf, offset)
    fields = []
    off, rest = offset + 4, length - 4
    try:
        while rest > 0:
            n, value, mask, size = ofp.oxm_parse(buf, off)
            fields.append(ofp.oxm_to_user(n, value, mask))
            off += size
            rest -= size
    except struct.error:
        return parser.OFPMatch.parser(buf, offset)
    m = Match(fields)
    m.type, m.length = type_, length
    return m


_MATCH_AT = ofp.OFP_PACKET_IN_SIZE - ofp.OFP_MATCH_SIZE


def _packet_in(datapath, version, msg_type, msg_len, xid, buf):
    """``OFPPacketIn.parser`` with ``parse_match``."""
    msg = parser.MsgBase.parser.__func__(parser.OFPPacketIn, datapath, version, msg_type,
                                         msg_len, xid, buf)
    (msg.buffer_id, msg.total_len, msg.reason, msg.table_id,
     msg.cookie) = struct.unpack_from(ofp.OFP_PACKET_IN_PACK_STR, msg.buf, ofp.OFP_HEADER_SIZE)
    msg.match = parse_match(msg.buf, _MATCH_AT)
    start = _MATCH_AT + (msg.match.length + 7) // 8 * 8 + 2
    msg.data = msg.buf[start:]
    if msg.total_len < len(msg.data):  # padding for 8-byte alignment
        msg.data = msg.data[:msg.total_len]
    return msg


_REMOVED_MATCH_AT = ofp.OFP_FLOW_REMOVED_SIZE - ofp.OFP_MATCH_SIZE


class OFPFlowRemoved(parser.OFPFlowRemoved):
    """``OFPFlowRemoved`` whose match is read when first asked for: the
    agent needs only the cookie of each of the many flows that go (a tracked
    connection's, at each host), and reading the match (MACs and addresses
    turned into text) was two thirds of the message's parse. Same name:
    os-ken finds a message's event class by it (``EventOFPFlowRemoved``)."""

    _match = None

    @property
    def match(self):
        if self._match is None and getattr(self, "buf", None) is not None:
            self._match = parse_match(self.buf, _REMOVED_MATCH_AT)
        return self._match

    @match.setter
    def match(self, value) -> None:
        self._match = value


def _flow_removed(datapath, version, msg_type, msg_len, xid, buf):
    """``OFPFlowRemoved.parser``, the match read lazily (``OFPFlowRemoved``)."""
    msg = parser.MsgBase.parser.__func__(OFPFlowRemoved, datapath, version, msg_type, msg_len,
                                         xid, buf)
    (msg.cookie, msg.priority, msg.reason, msg.table_id, msg.duration_sec,
     msg.duration_nsec, msg.idle_timeout, msg.hard_timeout, msg.packet_count,
     msg.byte_count) = struct.unpack_from(ofp.OFP_FLOW_REMOVED_PACK_STR0, msg.buf,
                                          ofp.OFP_HEADER_SIZE)
    return msg


def apply() -> None:
    """Parse packet-ins with ``parse_match``, flow-removed messages with a
    lazy match (os-ken's parser table)."""
    parser._MSG_PARSERS[ofp.OFPT_PACKET_IN] = _packet_in
    parser._MSG_PARSERS[ofp.OFPT_FLOW_REMOVED] = _flow_removed
