"""An ICMP error about a ping: the parser reads the quoted echo's identifier
(the ping's connection is keyed by it) and NAT's rewrite of the quoted packet
puts the original identifier back, with the quoted echo's checksum kept right."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, icmp, ipv4, packet
from os_ken.lib.packet.packet_utils import checksum

from midoflow.apps import frames

ETH = ethernet.ethernet(dst="02:00:00:00:00:01", src="02:00:00:00:00:02", ethertype=0x0800)


def echo_ip(ident: int, payload: bytes) -> bytes:
    p = packet.Packet()
    p.add_protocol(ipv4.ipv4(src="203.0.113.10", dst="8.8.8.8", proto=1, ttl=1))
    p.add_protocol(icmp.icmp(type_=8, code=0, data=icmp.echo(id_=ident, seq=7, data=payload)))
    p.serialize()
    return bytes(p.data)


def time_exceeded(quoted: bytes) -> bytes:
    p = packet.Packet()
    p.add_protocol(ETH)
    p.add_protocol(ipv4.ipv4(src="198.51.100.7", dst="203.0.113.10", proto=1))
    p.add_protocol(icmp.icmp(type_=11, code=0, data=icmp.TimeExceeded(data=quoted)))
    p.serialize()
    return bytes(p.data)


def test_the_quoted_echo_identifier_stands_in_both_port_slots():
    f = frames.parse(time_exceeded(echo_ip(0x1234, b"x" * 16)))
    assert f["icmp_inner"] == (1, "203.0.113.10", 0x1234, "8.8.8.8", 0x1234)


def test_an_error_quoting_only_8_bytes_of_the_echo_still_names_it():
    f = frames.parse(time_exceeded(echo_ip(77, b"")[:28]))
    assert f["icmp_inner"] == (1, "203.0.113.10", 77, "8.8.8.8", 77)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_rewriting_the_quoted_echo_sets_address_and_identifier_checksums_right(old, new, data):
    out = frames.set_icmp_inner(time_exceeded(echo_ip(old, data)), "src", f"10.0.0.5:{new}")
    f = frames.parse(out)
    assert f["icmp_inner"] == (1, "10.0.0.5", new, "8.8.8.8", new)
    quoted = out[14 + 20 + 8:]
    assert checksum(quoted[:20]) == 0  # the quoted IP header
    assert checksum(quoted[20:]) == 0  # the quoted echo, whole here
    assert struct.unpack_from("!H", quoted, 24)[0] == new
