"""Splitting a datagram for a smaller link (RFC 791) and holding later
fragments that come before their first: pure, no switch."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.agent.clock import FakeClock
from midoflow.agent.fragments import (
    HOLD_MAX,
    HOLD_PER_PORT,
    HOLD_TTL,
    FragmentTable,
    SplitError,
    ip_checksum,
    later_rewrites,
    set_addresses,
    split_frame,
)
from midoflow.sim.result import Rewrite

ETH = bytes.fromhex("020000000002" "020000000001" "0800")


def ip_frame(payload: bytes, *, ident: int = 0x1234, df: bool = False, mf: bool = False,
             offset: int = 0, options: bytes = b"", proto: int = 17) -> bytes:
    hlen = 20 + len(options)
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | offset
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | hlen // 4, 0, hlen + len(payload),
                                ident, flags, 64, proto, 0, bytes([10, 0, 0, 1]),
                                bytes([10, 0, 0, 2])) + options)
    hdr[10:12] = struct.pack("!H", ip_checksum(bytes(hdr)))
    return ETH + bytes(hdr) + payload


def fields(frame: bytes) -> dict:
    ip = frame[14:]
    vhl, _tos, total, ident, frag, ttl, proto, _c = struct.unpack_from("!BBHHHBBH", ip)
    hlen = (vhl & 15) * 4
    return {"hlen": hlen, "total": total, "id": ident, "df": bool(frag & 0x4000),
            "mf": bool(frag & 0x2000), "offset": (frag & 0x1FFF) * 8, "ttl": ttl,
            "proto": proto, "data": ip[hlen:total], "csum_ok": ip_checksum(ip[:hlen]) == 0,
            "options": ip[20:hlen]}


def reassemble(pieces: list[bytes]) -> bytes:
    out = bytearray()
    for f in sorted((fields(p) for p in pieces), key=lambda f: f["offset"]):
        assert f["offset"] == len(out), "a gap or an overlap"
        out += f["data"]
    return bytes(out)


def test_a_frame_that_fits_comes_back_alone_unchanged():
    frame = ip_frame(b"x" * 1000)
    assert split_frame(frame, 1450) == [frame]
    assert split_frame(ip_frame(b"x" * 1430, df=True), 1450)[0][14:16]  # DF but fits: fine


def test_a_30kb_datagram_in_1450_byte_pieces():
    data = bytes(i % 251 for i in range(30_008))
    pieces = split_frame(ip_frame(data), 1450)
    got = [fields(p) for p in pieces]
    assert len(pieces) == 22  # 1,424 bytes of data each (a multiple of 8), 21 full + 1
    assert all(f["total"] <= 1450 and f["csum_ok"] and f["id"] == 0x1234 for f in got)
    assert all(len(f["data"]) % 8 == 0 for f in got[:-1])
    assert [f["mf"] for f in got] == [True] * 21 + [False]
    assert reassemble(pieces) == data
    assert all(p[:14] == ETH for p in pieces)


def test_a_fragment_split_again_keeps_its_offset_and_its_mf_bit():
    data = b"y" * 2960
    middle = ip_frame(data, mf=True, offset=185)  # 1,480 bytes in, more to come
    pieces = [fields(p) for p in split_frame(middle, 1450)]
    # 3 pieces (1,424 bytes fit), of even sizes: 992, 992, 976
    assert [(p["offset"], p["mf"]) for p in pieces] == [(1480, True), (2472, True),
                                                        (3464, True)]
    assert [len(p["data"]) for p in pieces] == [992, 992, 976]
    last = [fields(p) for p in split_frame(ip_frame(data, offset=185), 1450)]
    assert [p["mf"] for p in last] == [True, True, False]


def test_a_split_makes_pieces_of_even_size_never_a_tiny_one():
    """A 1,500-byte fragment onto a 1,450-byte link: two pieces of about
    740 bytes, not 1,444 and 76 (OVS's conntrack drops non-last fragments
    below its minimum, 400 bytes at the least)."""
    pieces = [fields(p) for p in split_frame(ip_frame(b"q" * 1480, mf=True), 1450)]
    assert [len(p["data"]) for p in pieces] == [744, 736]
    assert all(p["mf"] for p in pieces)


def test_later_pieces_carry_only_the_copied_options():
    # a copied option (type 0x94, router alert) and a not-copied one (0x07 record route)
    opts = bytes([0x94, 4, 0, 0]) + bytes([0x07, 7, 4]) + b"\0" * 4 + b"\0"
    pieces = [fields(p) for p in split_frame(ip_frame(b"z" * 3000, options=opts), 1000)]
    assert pieces[0]["options"] == opts
    assert all(p["options"] == bytes([0x94, 4, 0, 0]) for p in pieces[1:])
    assert all(p["total"] <= 1000 and p["csum_ok"] for p in pieces)


@pytest.mark.parametrize("bad, why", [
    (lambda: split_frame(ip_frame(b"x" * 2000, df=True), 1450), "Don't Fragment"),
    (lambda: split_frame(ip_frame(b"x" * 2000), 60), "minimum"),
    (lambda: split_frame(ETH[:12] + b"\x86\xdd" + b"\0" * 60, 1450), "not an IPv4"),
    (lambda: split_frame(ip_frame(b"x" * 2000)[:100], 1450), "does not fit"),
])
def test_what_cannot_be_split_says_why(bad, why):
    with pytest.raises(SplitError, match=why):
        bad()


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 9000), mtu=st.integers(68, 9000), ident=st.integers(0, 0xFFFF),
       offset=st.integers(0, 64), mf=st.booleans())
def test_pieces_fit_their_mtu_and_reassemble_into_the_datagram(size, mtu, ident, offset, mf):
    data = bytes(i % 253 for i in range(size))
    pieces = split_frame(ip_frame(data, ident=ident, mf=mf, offset=offset), mtu)
    got = [fields(p) for p in pieces]
    assert all(f["total"] <= max(mtu, 20 + size) and f["csum_ok"] for f in got)
    if 20 + size > mtu:
        assert all(f["total"] <= mtu for f in got)
    assert all(f["id"] == ident and not f["df"] for f in got)
    assert got[0]["offset"] == offset * 8
    assert [f["mf"] for f in got] == [True] * (len(got) - 1) + [mf]
    assert b"".join(f["data"] for f in got) == data


# ---- later fragments before their first -----------------------------------
KEY = ("10.0.0.1", "10.0.0.2", 17, 7)


def test_a_held_later_fragment_is_released_when_its_first_is_decided():
    t = FragmentTable(clock=FakeClock())
    t.hold("p1", KEY, (5, b"later-1"))
    t.hold("p1", KEY, (5, b"later-2"))
    t.hold("p2", KEY, (6, b"other port"))
    assert t.held == 3
    assert t.remember("p1", KEY, "decision") == [(5, b"later-1"), (5, b"later-2")]
    assert t.held == 1 and t.lookup("p1", KEY) == "decision"
    assert t.remember("p1", KEY, "again") == []  # released once
    assert t.counters["held"] == 3 and t.counters["released"] == 2


def test_held_fragments_expire():
    clock = FakeClock()
    t = FragmentTable(clock=clock)
    t.hold("p1", KEY, (5, b"late"))
    clock.advance(HOLD_TTL + 0.01)
    t.expire()
    assert t.held == 0 and t.counters["hold_dropped"] == 1
    assert t.remember("p1", KEY, "decision") == []


def test_holding_is_bounded_per_port_and_in_all():
    t = FragmentTable(clock=FakeClock())
    t.hold("quiet", KEY, (1, b"q"))
    for i in range(HOLD_PER_PORT * 3):  # one port floods later fragments of unknown datagrams
        t.hold("noisy", ("10.9.9.9", "10.0.0.2", 17, i), (2, b"n"))
    assert t.held == HOLD_PER_PORT + 1
    assert t.remember("quiet", KEY, "d") == [(1, b"q")]  # the quiet port kept its own
    for p in range(HOLD_MAX // HOLD_PER_PORT + 4):
        for i in range(HOLD_PER_PORT):
            t.hold(f"p{p}", ("10.8.8.8", "10.0.0.2", 17, i), (3, b"m"))
    assert t.held <= HOLD_MAX


def test_forgetting_a_port_drops_what_it_held():
    t = FragmentTable(clock=FakeClock())
    t.hold("p1", KEY, (5, b"late"))
    t.forget_port("p1")
    assert t.held == 0 and t.remember("p1", KEY, "d") == []


def test_a_later_fragment_takes_macs_ttl_and_addresses_but_no_ports():
    got = later_rewrites([Rewrite("eth_src", "m1"), Rewrite("ip_src", "203.0.113.5"),
                          Rewrite("tp_src", 40001), Rewrite("ttl", 1),
                          Rewrite("icmp_id", 9), Rewrite("ip_dst", "10.0.0.9")])
    assert [(r.field, r.value) for r in got] == [
        ("eth_src", "m1"), ("frag_ip_src", "203.0.113.5"), ("ttl", 1),
        ("frag_ip_dst", "10.0.0.9")]
    frame = ip_frame(b"q" * 64, offset=100)
    out = set_addresses(frame, got)
    assert out[14 + 12:14 + 20] == bytes([203, 0, 113, 5, 10, 0, 0, 9])
    assert ip_checksum(out[14:34]) == 0 and out[34:] == frame[34:]
    assert set_addresses(frame, [Rewrite("ttl", 1)]) is frame
    with pytest.raises(SplitError):
        set_addresses(frame, [Rewrite("frag_ip_src", "not-an-address")])
