"""The DHCP wire codec: known bytes, round trips, and hostile input."""

import socket
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.dhcp import codec
from midoflow.dhcp.codec import DhcpError, DhcpMessage


def raw(options: bytes, *, op: int = 1, hlen: int = 6) -> bytes:
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, hlen, 0, 0x1234, 3, 0x8000,
                       bytes(4), bytes(4), bytes(4), bytes(4), bytes.fromhex("020000000001"),
                       b"", b"")
    return head + codec.MAGIC + options


def test_parses_a_discover_with_its_options_in_order():
    m = codec.parse(raw(bytes([53, 1, 1, 55, 3, 1, 3, 26, 61, 7, 1, 2, 0, 0, 0, 0, 1, 255])))
    assert m.message_type == codec.DISCOVER and m.xid == 0x1234 and m.secs == 3
    assert m.flags == codec.FLAG_BROADCAST and m.mac == "02:00:00:00:00:01"
    assert [c for c, _ in m.options] == [53, 55, 61]
    assert m.option(55) == bytes([1, 3, 26]) and m.option(50) is None


def test_pad_is_skipped_and_split_options_are_joined_rfc3396():
    m = codec.parse(raw(bytes([0, 0, 53, 1, 3, 12, 2]) + b"ab" + bytes([12, 1]) + b"c"
                        + bytes([255])))
    assert m.option(12) == b"abc" and m.message_type == codec.REQUEST


def test_long_options_are_split_on_build_and_padded_to_bootp_minimum():
    m = DhcpMessage(op=2, xid=7, chaddr=b"\x02" * 6, options=((53, b"\x02"), (77, b"x" * 600)))
    data = codec.build(m)
    assert codec.parse(data) == m
    assert len(codec.build(DhcpMessage(op=2, xid=1, chaddr=b"\x02" * 6))) == codec.MIN_BOOTP
    assert data.count(bytes([77, 255])) == 2  # 255 + 255 + 90


@pytest.mark.parametrize("data, reason", [
    (b"", "short"),
    (raw(b"")[:-4] + b"\x00\x00\x00\x00" + bytes([255]), "magic"),
    (raw(bytes([53, 1, 1])), "options"),  # no end
    (raw(bytes([53, 5, 1, 255])), "options"),  # past the end
    (raw(bytes([12, 0]) * 10_000 + bytes([255])), "options"),  # 10,000 pieces
])
def test_refuses_what_cannot_be_read_whole(data, reason):
    with pytest.raises(DhcpError) as e:
        codec.parse(data)
    assert e.value.reason == reason


def test_at_most_max_options_pieces_are_read():
    ok = raw(bytes([12, 1, 65] * codec.MAX_OPTIONS + [255]))
    assert codec.parse(ok).option(12) == b"A" * codec.MAX_OPTIONS
    with pytest.raises(DhcpError):
        codec.parse(raw(bytes([12, 1, 65] * (codec.MAX_OPTIONS + 1) + [255])))


ADDR = st.builds(lambda b: socket.inet_ntoa(b), st.binary(min_size=4, max_size=4))
MESSAGES = st.builds(
    DhcpMessage,
    op=st.integers(0, 255), xid=st.integers(0, 2**32 - 1),
    chaddr=st.binary(min_size=0, max_size=16),
    options=st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=600)), max_size=8,
                     unique_by=lambda o: o[0]).map(tuple),
    htype=st.integers(0, 255), hops=st.integers(0, 255), secs=st.integers(0, 65535),
    flags=st.integers(0, 65535), ciaddr=ADDR, yiaddr=ADDR, siaddr=ADDR, giaddr=ADDR,
    sname=st.binary(max_size=64).map(lambda b: b.rstrip(b"\0")),
    file=st.binary(max_size=128).map(lambda b: b.rstrip(b"\0")))


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_parse_of_build_is_the_message(m):
    assert codec.parse(codec.build(m)) == m


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000) | st.builds(lambda t: raw(b"") + t, st.binary(max_size=1500)))
def test_any_bytes_parse_or_raise_dhcp_error_in_bounded_time(data):
    t0 = time.perf_counter()
    try:
        codec.parse(data)
    except DhcpError as e:
        assert e.reason in codec.REASONS
    assert time.perf_counter() - t0 < 0.05
