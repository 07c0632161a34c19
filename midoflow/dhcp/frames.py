"""The Ethernet/IPv4/UDP frame around DHCP messages, pure and bounded:
``request_payload`` takes a client's frame apart (raising ``DhcpError``),
``reply_frame`` wraps the server's reply, addressed per RFC 2131 4.1: a NAK,
or a client that set the broadcast bit, gets a broadcast; a client that has
an address (``ciaddr``, renewing) gets it unicast there; otherwise unicast
to ``chaddr`` and ``yiaddr`` (Linux clients accept it before configuring
the address). Both checksums are computed (udhcpc checks the UDP one).
"""

from __future__ import annotations

import socket
import struct

from midoflow.dhcp.codec import (
    CLIENT_PORT,
    FLAG_BROADCAST,
    NAK,
    SERVER_PORT,
    DhcpError,
    DhcpMessage,
)

ETH_IP = 0x0800
BROADCAST_MAC = b"\xff" * 6
_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def request_payload(frame: bytes) -> bytes:
    """The UDP payload of an untagged Ethernet/IPv4/UDP frame to port 67
    (first fragment only, not a later one: the caller checked that)."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        raise DhcpError("short", "not an Ethernet/IPv4 frame")
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    if frame[14] >> 4 != 4 or ihl < 20 or frame[23] != 17 or 14 + ihl + 8 > len(frame):
        raise DhcpError("short", "not a whole IPv4/UDP header")
    end = min(len(frame), 14 + max(total, ihl + 8))
    udp = 14 + ihl
    ulen = struct.unpack_from("!H", frame, udp + 4)[0]
    if ulen < 8 or udp + ulen > end:
        raise DhcpError("short", f"UDP length {ulen} past the datagram")
    return frame[udp + 8:udp + ulen]


def destination(reply: DhcpMessage) -> tuple[bytes, str]:
    """(Ethernet destination, IP destination) of a reply, RFC 2131 4.1."""
    if reply.message_type == NAK or reply.flags & FLAG_BROADCAST:
        return BROADCAST_MAC, "255.255.255.255"
    if reply.ciaddr != "0.0.0.0":
        return reply.chaddr, reply.ciaddr
    if reply.yiaddr != "0.0.0.0":
        return reply.chaddr, reply.yiaddr
    return BROADCAST_MAC, "255.255.255.255"


def reply_frame(payload: bytes, reply: DhcpMessage, server_mac: str, server_ip: str) -> bytes:
    """The frame carrying ``payload`` (the built ``reply``) from the server."""
    mac_dst, ip_dst = destination(reply)
    src, dst = socket.inet_aton(server_ip), socket.inet_aton(ip_dst)
    ulen = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, ulen)
    csum = checksum(pseudo + _UDP.pack(SERVER_PORT, CLIENT_PORT, ulen, 0) + payload) or 0xFFFF
    udp = _UDP.pack(SERVER_PORT, CLIENT_PORT, ulen, csum) + payload
    head = _IP.pack(0x45, 0x10, 20 + ulen, 0, 0, 64, 17, 0, src, dst)
    ip = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    eth = mac_dst + bytes.fromhex(server_mac.replace(":", "")) + struct.pack("!H", ETH_IP)
    return eth + ip + udp
