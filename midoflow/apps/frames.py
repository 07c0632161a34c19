"""Frames on the wire <-> the simulation's packet fields, with os-ken's packet
library: parse a packet-in, build what the topology itself sends (ARP replies
and requests, ICMP echo replies and errors)."""

from __future__ import annotations

import socket
import struct
from typing import Any

from os_ken.lib.packet import arp, ethernet, icmp, ipv4, packet, tcp, udp

from midoflow.sim.packet import BROADCAST, ETH_ARP, ETH_IP, ICMP_ECHO_REPLY
from midoflow.sim.result import Generated


class FrameError(ValueError):
    """A frame that cannot be parsed or built."""


def parse(frame: bytes) -> dict[str, Any]:
    """The simulation's fields of an Ethernet frame (``Packet`` minus in_port).

    Raises FrameError on a frame without a whole Ethernet header. An IPv4
    frame whose IP header is broken has only its Ethernet fields."""
    try:
        pkt = packet.Packet(frame)
    except Exception as e:  # os-ken raises many kinds on garbage
        raise FrameError(f"unparsable frame: {e}") from None
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is None:
        raise FrameError("no Ethernet header")
    f: dict[str, Any] = {"eth_src": eth.src.lower(), "eth_dst": eth.dst.lower(),
                         "eth_type": eth.ethertype}
    if eth.ethertype == ETH_IP:
        ip = pkt.get_protocol(ipv4.ipv4)
        if ip is None:
            # A broken IPv4 header still switches at L2 (the flow matches only
            # MACs there); a router drops it without installing a flow.
            return f
        f.update(ip_src=ip.src, ip_dst=ip.dst, ip_proto=ip.proto, ip_ttl=ip.ttl, ip_tos=ip.tos)
        if ip.offset:  # a later fragment: no L4 header (whatever os-ken made of it)
            f["ip_frag"] = 2
            return f
        if ip.flags & 0x1:  # more fragments: the first one
            f["ip_frag"] = 1
        t = pkt.get_protocol(tcp.tcp)
        l4 = t or pkt.get_protocol(udp.udp)
        if l4 is not None:
            f.update(tp_src=l4.src_port, tp_dst=l4.dst_port)
            if t is not None:
                f["tcp_flags"] = t.bits
        else:
            ic = pkt.get_protocol(icmp.icmp)
            if ic is not None:
                f.update(tp_src=ic.type, tp_dst=ic.code)
                if ic.type in (0, 8) and isinstance(ic.data, icmp.echo):
                    f["icmp_id"] = ic.data.id
                elif ic.type in (3, 11) and ic.data is not None:
                    inner = _quoted(bytes(ic.data.data or b""))
                    if inner is not None:
                        f["icmp_inner"] = inner
    elif eth.ethertype == ETH_ARP:
        a = pkt.get_protocol(arp.arp)
        if a is None:
            raise FrameError("truncated ARP packet")
        f.update(arp_op=a.opcode, arp_sha=a.src_mac.lower(), arp_spa=a.src_ip,
                 arp_tha=a.dst_mac.lower(), arp_tpa=a.dst_ip)
    return f


def _quoted(data: bytes) -> tuple[int, str, int, str, int] | None:
    """(proto, src, sport, dst, dport) of the packet an ICMP error quotes."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    proto = data[9]
    src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
    sport = dport = 0
    if proto in (6, 17):
        if len(data) < ihl + 4:
            return None
        sport, dport = struct.unpack("!HH", data[ihl:ihl + 4])
    return proto, src, sport, dst, dport


def set_icmp_inner(frame: bytes, which: str, addr: str) -> bytes:
    """Rewrite the source ("src") or destination ("dst") address and port of
    the packet an ICMP error quotes ("ip:port"); checksums updated."""
    pkt = packet.Packet(frame)
    ic = pkt.get_protocol(icmp.icmp)
    if ic is None or ic.data is None or not ic.data.data:
        raise FrameError("not an ICMP error with a quoted packet")
    q = bytearray(ic.data.data)
    if len(q) < 20:
        raise FrameError("the quoted packet is too short")
    ip, _, port = addr.rpartition(":")
    ihl = (q[0] & 0x0F) * 4
    off = 12 if which == "src" else 16
    q[off:off + 4] = socket.inet_aton(ip)
    if q[9] in (6, 17) and len(q) >= ihl + 4:
        poff = ihl if which == "src" else ihl + 2
        q[poff:poff + 2] = struct.pack("!H", int(port))
        if q[9] == 17 and len(q) >= ihl + 8:
            q[ihl + 6:ihl + 8] = b"\0\0"  # a UDP checksum of 0 means "none"
    q[10:12] = b"\0\0"
    q[10:12] = struct.pack("!H", _ip_checksum(bytes(q[:ihl])))
    body = icmp.TimeExceeded(data=bytes(q)) if ic.type == icmp.ICMP_TIME_EXCEEDED \
        else icmp.dest_unreach(data=bytes(q))
    out = packet.Packet()
    for proto in pkt.protocols:
        if isinstance(proto, icmp.icmp):
            out.add_protocol(icmp.icmp(type_=ic.type, code=ic.code, data=body))
            break
        if isinstance(proto, ipv4.ipv4):
            proto.csum = 0
            proto.total_length = 0
        out.add_protocol(proto)
    out.serialize()
    return bytes(out.data)


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def set_icmp_id(frame: bytes, ident: int) -> bytes:
    """The frame with its ICMP echo identifier replaced (checksum updated)."""
    pkt = packet.Packet(frame)
    ic = pkt.get_protocol(icmp.icmp)
    if ic is None or not isinstance(ic.data, icmp.echo):
        raise FrameError("not an ICMP echo")
    out = packet.Packet()
    for proto in pkt.protocols:
        if isinstance(proto, icmp.icmp):
            out.add_protocol(icmp.icmp(type_=ic.type, code=ic.code, data=icmp.echo(
                id_=ident, seq=ic.data.seq, data=ic.data.data)))
            break
        if isinstance(proto, ipv4.ipv4):
            proto.csum = 0
            proto.total_length = 0
        out.add_protocol(proto)
    out.serialize()
    return bytes(out.data)


def build(gen: Generated, original: bytes | None = None) -> bytes:
    """The frame of a generated packet; ICMP answers quote ``original``."""
    try:
        return _BUILDERS[gen.kind](gen, original)
    except KeyError:
        raise FrameError(f"cannot build a {gen.kind!r} packet") from None


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


def _original_ip(original: bytes | None) -> tuple[ipv4.ipv4, bytes]:
    if original is None:
        raise FrameError("an ICMP answer needs the original frame")
    pkt = packet.Packet(original)
    ip = pkt.get_protocol(ipv4.ipv4)
    if ip is None:
        raise FrameError("the original frame is not IPv4")
    return ip, original[14:]  # the IP packet (no VLAN: the agent strips none)


def _icmp_frame(gen: Generated, ic: icmp.icmp, ttl: int = 64) -> bytes:
    p = packet.Packet()
    p.add_protocol(_eth(gen, gen.get("eth_dst"), ETH_IP))
    p.add_protocol(ipv4.ipv4(src=gen.get("ip_src"), dst=gen.get("ip_dst"), proto=1, ttl=ttl))
    p.add_protocol(ic)
    p.serialize()
    return bytes(p.data)


def _icmp_echo_reply(gen: Generated, original: bytes | None) -> bytes:
    _ip, _raw = _original_ip(original)
    req = packet.Packet(original).get_protocol(icmp.icmp)
    if req is None or not isinstance(req.data, icmp.echo):
        raise FrameError("the original frame is not an ICMP echo request")
    echo = icmp.echo(id_=req.data.id, seq=req.data.seq, data=req.data.data)
    return _icmp_frame(gen, icmp.icmp(type_=ICMP_ECHO_REPLY, code=0, data=echo))


def _icmp_error(gen: Generated, original: bytes | None) -> bytes:
    ip, raw = _original_ip(original)
    quote = raw[: ip.header_length * 4 + 8]  # RFC 792: the header and 64 bits of data
    t, code = gen.get("icmp_type"), gen.get("icmp_code")
    body = icmp.TimeExceeded(data=quote) if t == icmp.ICMP_TIME_EXCEEDED \
        else icmp.dest_unreach(data=quote)
    return _icmp_frame(gen, icmp.icmp(type_=t, code=code, data=body))


_BUILDERS = {
    "arp_reply": _arp_reply,
    "arp_request": _arp_request,
    "icmp_echo_reply": _icmp_echo_reply,
    "icmp_error": _icmp_error,
}
