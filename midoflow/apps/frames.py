"""Frames on the wire <-> the simulation's packet fields: parse a packet-in,
build what the topology itself sends (ARP replies and requests, ICMP echo
replies and errors).

Parsing is done here with ``struct``, not with os-ken's packet library, for two
reasons. Safety: os-ken trusts every length field it reads. Its TCP option loop
(``tcp.parser`` calling ``TCPOptionUnknown.parse``, which returns
``buf[length:]``) never advances on an option of unknown kind and length 0
(bytes ``fe 00``), so one segment froze the agent at 100% CPU; and where a
header is cut short it stops silently (``packet.Packet`` swallows
``struct.error``), so a TCP segment with data offset 0, or an IPv4 header with
IHL below 5, came out as a packet with no ports or no IP fields at all, and the
agent installed flows broader than the frame. Speed: the agent parses every
packet-in; reading the dozen fields the simulation needs took about 1.2 us a
frame here against about 15-25 us for os-ken's protocol objects
(``benchmarks/bench_parse.py``).

``parse`` returns the fields or raises ``FrameError`` whose ``reason`` names
what was wrong, in bounded time (no loop runs more than 40 times) and never any
other exception. Building still uses os-ken's packet library, on frames that
``parse`` has accepted first.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from typing import Any

from os_ken.lib.packet import arp, ethernet, icmp, ipv4, packet
from os_ken.lib.packet.packet_utils import checksum as _ip_checksum

from midoflow.agent.fragments import SplitError, set_addresses, split_frame
from midoflow.sim.packet import BROADCAST, ETH_ARP, ETH_IP, ICMP_ECHO_REPLY
from midoflow.sim.result import Generated, Rewrite

ETH_LEN = 14
VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100))  # 802.1Q, 802.1ad, old QinQ
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
ICMP_WITH_WORD = frozenset((0, 3, 8, 11))  # types whose second word the parser reads
_ECHO_TYPES = (0, 8)  # echo reply, echo request

REASONS = ("runt", "vlan", "ip_header", "ip_length", "fragment", "tiny_fragment",
           "tcp_header", "tcp_options", "udp_length", "icmp_length", "arp", "build")
"""Every ``FrameError.reason``: runt (no whole Ethernet header), vlan (a tagged
frame on a VLAN-unaware port), ip_header (version not 4, IHL below 5 or past
the frame), ip_length (total length below the header or past the frame),
fragment (a TCP fragment at offset 8, RFC 1858, or one that ends past 65,535
bytes), tiny_fragment (a first fragment too short for its TCP/UDP header,
RFC 1858), tcp_header, tcp_options, udp_length, icmp_length, arp (not
Ethernet/IPv4 or short), build (a frame that cannot be built or rewritten)."""

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HH8xBB")  # ports, data offset byte, flags byte
_UDP = struct.Struct("!HHH")
_ARP = struct.Struct("!HHBBH")
_U16 = struct.Struct("!H")
_ntoa = socket.inet_ntoa


class FrameError(ValueError):
    """A frame that cannot be parsed or built; ``reason`` is one of ``REASONS``
    (short and fixed, to be counted), the message says what was found."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse(frame: bytes) -> dict[str, Any]:
    """The simulation's fields of an Ethernet frame (``Packet`` minus in_port).

    Raises FrameError for anything that cannot be read whole: see ``REASONS``.
    Ethertypes other than IPv4, ARP and VLAN tags give the Ethernet fields only."""
    n = len(frame)
    if n < ETH_LEN:
        raise FrameError("runt", f"{n} bytes, an Ethernet header needs {ETH_LEN}")
    eth_type = frame[12] << 8 | frame[13]
    f: dict[str, Any] = {"eth_src": frame[6:12].hex(":"), "eth_dst": frame[0:6].hex(":"),
                         "eth_type": eth_type}
    if eth_type == ETH_IP:
        _ipv4(frame, n, f)
    elif eth_type == ETH_ARP:
        _arp(frame, n, f)
    elif eth_type in VLAN_TYPES:
        raise FrameError("vlan", f"ethertype {eth_type:#06x} on a VLAN-unaware port")
    return f


def _ipv4(frame: bytes, n: int, f: dict[str, Any]) -> None:
    if n < ETH_LEN + 20:
        raise FrameError("ip_header", f"IPv4 header cut short ({n - ETH_LEN} bytes)")
    vhl, tos, total, ident, frag, ttl, proto, _csum, src, dst = _IP.unpack_from(frame, ETH_LEN)
    ihl = (vhl & 0x0F) * 4
    if vhl >> 4 != 4 or ihl < 20:
        raise FrameError("ip_header", f"version {vhl >> 4}, header length {ihl}")
    if ETH_LEN + ihl > n:
        raise FrameError("ip_header", f"header length {ihl} past the frame")
    if total < ihl or ETH_LEN + total > n:
        # beyond: a truncated packet; trailing Ethernet padding is fine (ignored)
        raise FrameError("ip_length", f"total length {total}, header {ihl}, "
                                      f"{n - ETH_LEN} bytes in the frame")
    f["ip_src"] = _ntoa(src)
    f["ip_dst"] = _ntoa(dst)
    f["ip_proto"] = proto
    f["ip_ttl"] = ttl
    f["ip_tos"] = tos
    f["ip_len"] = total
    f["ip_df"] = bool(frag & 0x4000)
    offset = frag & 0x1FFF
    if offset:  # a later fragment: no L4 header; it follows its first fragment
        if proto == PROTO_TCP and offset == 1:
            raise FrameError("fragment", "TCP fragment at offset 8 (RFC 1858 overlap)")
        if offset * 8 + total - ihl > 0xFFFF:
            raise FrameError("fragment", "fragment ends past 65,535 bytes")
        f["ip_frag"] = 2
        f["ip_id"] = ident
        return
    first = bool(frag & 0x2000)  # more fragments, offset 0
    if first:
        f["ip_frag"] = 1
        f["ip_id"] = ident
    start, end = ETH_LEN + ihl, ETH_LEN + total
    if proto == PROTO_TCP:
        _tcp(frame, start, end, first, f)
    elif proto == PROTO_UDP:
        _udp(frame, start, end, first, f)
    elif proto == PROTO_ICMP:
        _icmp(frame, start, end, f)


def _tcp(frame: bytes, start: int, end: int, first: bool, f: dict[str, Any]) -> None:
    if end - start < 20:
        raise FrameError("tiny_fragment" if first else "tcp_header",
                         f"{end - start} bytes of TCP header")
    sport, dport, off, flags = _TCP.unpack_from(frame, start)
    hlen = (off >> 4) * 4
    if hlen < 20:
        raise FrameError("tcp_header", f"data offset {off >> 4}")
    if start + hlen > end:
        raise FrameError("tiny_fragment" if first else "tcp_header",
                         f"TCP header of {hlen} bytes, {end - start} in the packet")
    i, stop = start + 20, start + hlen
    while i < stop:  # at most 40 bytes of options; each turn advances
        kind = frame[i]
        if kind == 0:  # end of list: the rest is padding
            break
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= stop or frame[i + 1] < 2 or i + frame[i + 1] > stop:
            raise FrameError("tcp_options", f"option kind {kind} at byte {i - start}")
        i += frame[i + 1]
    f["tp_src"] = sport
    f["tp_dst"] = dport
    f["tcp_flags"] = flags & 0x3F


def _udp(frame: bytes, start: int, end: int, first: bool, f: dict[str, Any]) -> None:
    if end - start < 8:
        raise FrameError("tiny_fragment" if first else "udp_length",
                         f"{end - start} bytes of UDP header")
    sport, dport, length = _UDP.unpack_from(frame, start)
    # a first fragment's UDP length counts the whole datagram, beyond this packet
    if length < 8 or (not first and start + length > end):
        raise FrameError("udp_length", f"UDP length {length}, {end - start} in the packet")
    f["tp_src"] = sport
    f["tp_dst"] = dport


def _icmp(frame: bytes, start: int, end: int, f: dict[str, Any]) -> None:
    size = end - start
    if size < 4:
        raise FrameError("icmp_length", f"{size} bytes of ICMP")
    t = frame[start]
    if t in ICMP_WITH_WORD and size < 8:
        raise FrameError("icmp_length", f"ICMP type {t} of {size} bytes, needs 8")
    f["tp_src"] = t
    f["tp_dst"] = frame[start + 1]
    if t == 0 or t == 8:
        f["icmp_id"] = _U16.unpack_from(frame, start + 4)[0]
    elif t == 3 or t == 11:
        inner = _quoted(frame[start + 8:end])
        if inner is not None:
            f["icmp_inner"] = inner


def _arp(frame: bytes, n: int, f: dict[str, Any]) -> None:
    if n < ETH_LEN + 28:
        raise FrameError("arp", f"ARP of {n - ETH_LEN} bytes, needs 28")
    htype, ptype, hlen, plen, op = _ARP.unpack_from(frame, ETH_LEN)
    if htype != 1 or ptype != ETH_IP or hlen != 6 or plen != 4:
        raise FrameError("arp", f"not Ethernet/IPv4 ARP (htype {htype}, ptype {ptype:#06x}, "
                                f"hlen {hlen}, plen {plen})")
    f["arp_op"] = op
    f["arp_sha"] = frame[22:28].hex(":")
    f["arp_spa"] = _ntoa(frame[28:32])
    f["arp_tha"] = frame[32:38].hex(":")
    f["arp_tpa"] = _ntoa(frame[38:42])


def _quoted(data: bytes) -> tuple[int, str, int, str, int] | None:
    """(proto, src, sport, dst, dport) of the packet an ICMP error quotes, None
    if its header cannot be read."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20:
        return None
    proto = data[9]
    src, dst = _ntoa(data[12:16]), _ntoa(data[16:20])
    sport = dport = 0
    if proto in (PROTO_TCP, PROTO_UDP):
        if len(data) < ihl + 4:
            return None
        sport, dport = struct.unpack("!HH", data[ihl:ihl + 4])
    elif proto == PROTO_ICMP and len(data) >= ihl + 8 and data[ihl] in _ECHO_TYPES:
        # an error about a ping: its identifier stands in both port slots,
        # as in the echo's own connection key (midoflow.nat.conntrack.ConnKey)
        sport = dport = _U16.unpack_from(data, ihl + 4)[0]
    return proto, src, sport, dst, dport


def _csum_replace(csum: int, old: int, new: int) -> int:
    """A 16-bit Internet checksum after one 16-bit word changed (RFC 1624:
    HC' = ~(~HC + ~m + m'))."""
    total = (~csum & 0xFFFF) + (~old & 0xFFFF) + new
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip_part(frame: bytes) -> tuple[dict[str, Any], int, int]:
    """A frame accepted by ``parse``, with its IPv4 header and total lengths."""
    f = parse(frame)
    if f["eth_type"] != ETH_IP:
        raise FrameError("build", "not an IPv4 frame")
    return f, (frame[ETH_LEN] & 0x0F) * 4, _U16.unpack_from(frame, ETH_LEN + 2)[0]


def set_icmp_inner(frame: bytes, which: str, addr: str) -> bytes:
    """Rewrite the source ("src") or destination ("dst") address and port of
    the packet an ICMP error quotes ("ip:port"); checksums updated."""
    f = parse(frame)
    if "icmp_inner" not in f:
        raise FrameError("build", "not an ICMP error with a readable quoted packet")
    try:
        return _set_icmp_inner(frame, which, addr)
    except FrameError:
        raise
    except Exception as e:  # a bad address or port from the caller
        raise FrameError("build", f"cannot rewrite the quoted packet to {addr!r}: {e}") from None


def _set_icmp_inner(frame: bytes, which: str, addr: str) -> bytes:
    pkt = packet.Packet(frame)
    ic = pkt.get_protocol(icmp.icmp)
    if ic is None or ic.data is None or not ic.data.data:
        raise FrameError("build", "not an ICMP error with a quoted packet")
    q = bytearray(ic.data.data)
    ihl = (q[0] & 0x0F) * 4
    if len(q) < ihl:
        raise FrameError("build", "the quoted packet's header is cut short")
    ip, _, port = addr.rpartition(":")
    off = 12 if which == "src" else 16
    q[off:off + 4] = socket.inet_pton(socket.AF_INET, ip)  # dotted quads only
    if q[9] in (PROTO_TCP, PROTO_UDP) and len(q) >= ihl + 4:
        poff = ihl if which == "src" else ihl + 2
        q[poff:poff + 2] = struct.pack("!H", int(port))
        if q[9] == PROTO_UDP and len(q) >= ihl + 8:
            q[ihl + 6:ihl + 8] = b"\0\0"  # a UDP checksum of 0 means "none"
    elif q[9] == PROTO_ICMP and len(q) >= ihl + 8 and q[ihl] in _ECHO_TYPES:
        # a quoted ping: its identifier (the "port" of its connection)
        old, new = _U16.unpack_from(q, ihl + 4)[0], int(port)
        csum = _U16.unpack_from(q, ihl + 2)[0]
        q[ihl + 2:ihl + 4] = _U16.pack(_csum_replace(csum, old, new))
        q[ihl + 4:ihl + 6] = _U16.pack(new)
    q[10:12] = b"\0\0"
    q[10:12] = struct.pack("!H", _ip_checksum(bytes(q[:ihl])))
    body = icmp.TimeExceeded(data=bytes(q)) if ic.type == icmp.ICMP_TIME_EXCEEDED \
        else icmp.dest_unreach(data=bytes(q))
    return _replace_icmp(pkt, icmp.icmp(type_=ic.type, code=ic.code, data=body))


def set_icmp_id(frame: bytes, ident: int | str) -> bytes:
    """The frame with its ICMP echo identifier replaced, the checksum updated
    incrementally (RFC 1624): right for the first fragment of a big echo too,
    whose checksum covers data this frame does not hold."""
    if "icmp_id" not in parse(frame):
        raise FrameError("build", "not an ICMP echo")
    try:
        new = int(ident)
        if not 0 <= new <= 0xFFFF:
            raise ValueError("not a 16-bit identifier")
    except ValueError as e:  # a bad identifier from the caller
        raise FrameError("build", f"cannot set the ICMP identifier to {ident!r}: {e}") from None
    at = ETH_LEN + (frame[ETH_LEN] & 0x0F) * 4
    old, csum = _U16.unpack_from(frame, at + 4)[0], _U16.unpack_from(frame, at + 2)[0]
    out = bytearray(frame)
    out[at + 2:at + 4] = _U16.pack(_csum_replace(csum, old, new))
    out[at + 4:at + 6] = _U16.pack(new)
    return bytes(out)


FRAME_REWRITES = frozenset({"icmp_id", "icmp_inner_src", "icmp_inner_dst", "ip_fragment",
                            "frag_ip_src", "frag_ip_dst"})
"""Rewrites OpenFlow cannot make, so they are made in the frame itself."""


def apply_rewrites(frame: bytes, rewrites: Iterable[Rewrite]) -> bytes:
    """``frame`` with the rewrites of ``FRAME_REWRITES`` made, in order: the
    ICMP echo identifier (icmp_id, a number), the address and port of the
    packet an ICMP error quotes (icmp_inner_src / icmp_inner_dst, "ip:port"),
    a later fragment's addresses (frag_ip_src / frag_ip_dst: see
    ``midoflow.agent.fragments.later_rewrites``); then ip_fragment (an MTU):
    the frame becomes the first of the pieces
    ``midoflow.agent.fragments.split_frame`` cuts it into (the agent sends
    the others after it). Other rewrites are the flow's set-field actions:
    they are left alone, and a frame with none of these comes back as it is
    (the same object). Raises only FrameError."""
    mtu = None
    for r in rewrites:
        if r.field == "icmp_id":
            frame = set_icmp_id(frame, r.value)
        elif r.field in ("icmp_inner_src", "icmp_inner_dst"):
            frame = set_icmp_inner(frame, r.field[-3:], str(r.value))
        elif r.field == "ip_fragment":
            mtu = int(r.value)
    try:
        frame = set_addresses(frame, rewrites)
        if mtu is not None:
            frame = split_frame(frame, mtu)[0]
    except SplitError as e:
        raise FrameError("build", f"cannot rewrite or fragment the frame: {e}") from None
    return frame


def _replace_icmp(pkt: packet.Packet, new: icmp.icmp) -> bytes:
    """``pkt`` (os-ken, parsed from an accepted frame) with its ICMP message
    replaced; IP length and checksums recomputed."""
    out = packet.Packet()
    for proto in pkt.protocols:
        if isinstance(proto, icmp.icmp):
            out.add_protocol(new)
            break
        if isinstance(proto, ipv4.ipv4):
            proto.csum = 0
            proto.total_length = 0
        out.add_protocol(proto)
    out.serialize()
    return bytes(out.data)


def build(gen: Generated, original: bytes | None = None) -> bytes:
    """The frame of a generated packet; ICMP answers quote ``original``.
    Raises only FrameError (reason "build" for what cannot be built, or the
    reason ``original`` cannot be parsed)."""
    builder = _BUILDERS.get(gen.kind)
    if builder is None:
        raise FrameError("build", f"cannot build a {gen.kind!r} packet")
    try:
        return builder(gen, original)
    except FrameError:
        raise
    except Exception as e:  # a field the builder cannot encode
        raise FrameError("build", f"cannot build {gen.kind}: {e}") from None


def _eth(gen: Generated, dst: str, ethertype: int) -> ethernet.ethernet:
    return ethernet.ethernet(dst=dst, src=gen.get("eth_src"), ethertype=ethertype)


def _arp_reply(gen: Generated, _original: bytes | None) -> bytes:
    p = packet.Packet()
    p.add_protocol(_eth(gen, gen.get("eth_dst"), ETH_ARP))
    p.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=gen.get("eth_src"),
                           src_ip=gen.get("ip_src"), dst_mac=gen.get("eth_dst"),
                           dst_ip=gen.get("ip_dst")))
    p.serialize()
    return bytes(p.data)


def _arp_request(gen: Generated, _original: bytes | None) -> bytes:
    p = packet.Packet()
    p.add_protocol(_eth(gen, BROADCAST, ETH_ARP))
    p.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=gen.get("eth_src"),
                           src_ip=gen.get("ip_src"), dst_mac="00:00:00:00:00:00",
                           dst_ip=gen.get("ip_dst")))
    p.serialize()
    return bytes(p.data)


def _original_ip(original: bytes | None) -> tuple[dict[str, Any], int, bytes]:
    """The original frame's fields, IP header length and IP packet (up to its
    total length: no Ethernet padding; no VLAN, the agent strips none)."""
    if original is None:
        raise FrameError("build", "an ICMP answer needs the original frame")
    f, ihl, total = _ip_part(original)
    return f, ihl, bytes(original[ETH_LEN:ETH_LEN + total])


def _icmp_frame(gen: Generated, ic: icmp.icmp, ttl: int = 64) -> bytes:
    p = packet.Packet()
    p.add_protocol(_eth(gen, gen.get("eth_dst"), ETH_IP))
    p.add_protocol(ipv4.ipv4(src=gen.get("ip_src"), dst=gen.get("ip_dst"), proto=1, ttl=ttl))
    p.add_protocol(ic)
    p.serialize()
    return bytes(p.data)


def _icmp_echo_reply(gen: Generated, original: bytes | None) -> bytes:
    f, ihl, raw = _original_ip(original)
    if "icmp_id" not in f:  # parse read it: an unfragmented echo of 8 bytes or more
        raise FrameError("build", "the original frame is not an ICMP echo request")
    ident, seq = struct.unpack_from("!HH", raw, ihl + 4)
    echo = icmp.echo(id_=ident, seq=seq, data=raw[ihl + 8:] or None)
    return _icmp_frame(gen, icmp.icmp(type_=ICMP_ECHO_REPLY, code=0, data=echo))


def _icmp_error(gen: Generated, original: bytes | None) -> bytes:
    _f, ihl, raw = _original_ip(original)
    quote = raw[: ihl + 8]  # RFC 792: the header and 64 bits of data
    t, code = gen.get("icmp_type"), gen.get("icmp_code")
    # fragmentation needed (code 4) carries the next-hop MTU (RFC 1191)
    body = icmp.TimeExceeded(data=quote) if t == icmp.ICMP_TIME_EXCEEDED \
        else icmp.dest_unreach(mtu=gen.get("mtu") or 0, data=quote)
    return _icmp_frame(gen, icmp.icmp(type_=t, code=code, data=body))


_BUILDERS = {
    "arp_reply": _arp_reply,
    "arp_request": _arp_request,
    "icmp_echo_reply": _icmp_echo_reply,
    "icmp_error": _icmp_error,
}
