"""frames.py for MTUs and fragments: the IP total length and DF parsed, the
fragmentation-needed message built with its next-hop MTU, an ICMP echo's
identifier rewritten in a first fragment (checksum right for the whole
datagram), and the frame rewrites that split or readdress a fragment."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.apps import frames
from midoflow.sim.result import Generated, Rewrite
from tests.unit.test_fragments_split import ETH, ip_checksum, ip_frame, reassemble


def udp(n: int) -> bytes:
    """A UDP datagram of ``n`` bytes (ports 5000 -> 6000, no checksum)."""
    return struct.pack("!HHHH", 5000, 6000, n, 0) + bytes(n - 8)


def echo_datagram(size: int, ident: int = 4242) -> bytes:
    """An ICMP echo request of ``size`` bytes of data, checksum over it all."""
    body = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, 1) + bytes(i % 249 for i in
                                                                       range(size)))
    body[2:4] = struct.pack("!H", ip_checksum(bytes(body) + b"\0" * (len(body) % 2)))
    return bytes(body)


@pytest.mark.parametrize("df, mf, size", [(True, False, 1500), (False, False, 64),
                                          (False, True, 1000)])
def test_parse_gives_the_total_length_and_df(df, mf, size):
    f = frames.parse(ip_frame(udp(size - 20), df=df, mf=mf))
    assert (f["ip_len"], f["ip_df"]) == (size, df)


def test_a_padded_runt_has_its_ip_length_not_the_frames():
    frame = ip_frame(udp(8)) + b"\0" * 18  # Ethernet padding to 60 bytes
    assert frames.parse(frame)["ip_len"] == 28


def test_fragmentation_needed_carries_the_next_hop_mtu():
    original = ip_frame(udp(1480), df=True)
    gen = Generated("icmp_error", "r1a", (("eth_dst", "02:00:00:00:00:01"),
                                         ("eth_src", "02:aa:00:00:00:01"), ("icmp_code", 4),
                                         ("icmp_type", 3), ("ip_dst", "10.0.0.1"),
                                         ("ip_src", "10.0.0.254"), ("mtu", 1450)))
    out = frames.build(gen, original)
    icmp = out[34:]
    assert icmp[:2] == b"\x03\x04" and struct.unpack_from("!H", icmp, 6)[0] == 1450
    assert icmp[8:36] == original[14:42]  # the header and 8 bytes of the original
    assert ip_checksum(icmp) == 0
    # another unreachable leaves the field zero, as before
    plain = frames.build(Generated("icmp_error", "r1a", tuple(
        (k, 3 if k == "icmp_code" else v) for k, v in gen.fields if k != "mtu")), original)
    assert plain[34 + 4:34 + 8] == b"\0\0\0\0"


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1500, 6000), old=st.integers(0, 0xFFFF), new=st.integers(0, 0xFFFF))
def test_the_echo_identifier_of_a_first_fragment_keeps_the_datagrams_checksum(size, old, new):
    datagram = echo_datagram(size, old)
    pieces = frames.split_frame(ip_frame(datagram, proto=1), 1450)
    first = frames.set_icmp_id(pieces[0], new)
    whole = reassemble([first, *pieces[1:]])
    assert struct.unpack_from("!H", whole, 4)[0] == new
    assert ip_checksum(whole + b"\0" * (len(whole) % 2)) == 0
    assert ip_checksum(first[14:34]) == 0


def test_an_unfragmented_echo_id_rewrite_is_still_right():
    frame = ip_frame(echo_datagram(56, 7), proto=1)
    out = frames.set_icmp_id(frame, 65535)
    assert frames.parse(out)["icmp_id"] == 65535 and ip_checksum(out[34:]) == 0
    with pytest.raises(frames.FrameError):
        frames.set_icmp_id(frame, 70000)


def test_ip_fragment_makes_the_frame_its_first_piece():
    frame = ip_frame(udp(3000))
    out = frames.apply_rewrites(frame, [Rewrite("eth_src", "x"), Rewrite("ip_fragment", 1450)])
    f = frames.parse(out)
    assert f["ip_len"] == 1020 and f["ip_frag"] == 1 and out[:14] == ETH  # 3 even pieces
    with pytest.raises(frames.FrameError, match="Don't Fragment"):
        frames.apply_rewrites(ip_frame(udp(3000), df=True), [Rewrite("ip_fragment", 1450)])
