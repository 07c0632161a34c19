"""The DHCP server's decision, its options and the reply's frame."""

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.dhcp import codec, frames, options, server
from midoflow.dhcp.codec import DhcpMessage
from midoflow.dhcp.server import Lease

MAC = bytes.fromhex("020000000005")
LEASE = Lease(ip="10.0.0.5", prefix=24, server_ip="10.0.0.1", gateway="10.0.0.1",
              dns=("10.0.0.2", "8.8.8.8"), domain="example.org", lease_time=600, mtu=1450,
              routes=(("172.16.0.0/16", "10.0.0.254"),), hostname="vm1")


def req(kind: int, *opts, ciaddr: str = "0.0.0.0", flags: int = 0) -> DhcpMessage:
    return DhcpMessage(op=codec.BOOTREQUEST, xid=42, chaddr=MAC, ciaddr=ciaddr, flags=flags,
                       options=((53, bytes((kind,))), *opts))


def ip_opt(code: int, ip: str) -> tuple[int, bytes]:
    return code, socket.inet_aton(ip)


def test_discover_is_offered_the_ports_address_and_everything_it_needs():
    out = server.answer(req(codec.DISCOVER, (55, bytes([1, 3, 26]))), LEASE)
    r = out.reply
    assert out.reason == "offer" and r.message_type == codec.OFFER
    assert (r.op, r.xid, r.chaddr, r.yiaddr) == (codec.BOOTREPLY, 42, MAC, "10.0.0.5")
    assert r.options[0] == (53, b"\x02") and r.ip_option(54) == "10.0.0.1"
    assert r.option(1) == socket.inet_aton("255.255.255.0")
    assert r.option(3) == socket.inet_aton("10.0.0.1")
    assert r.option(6) == socket.inet_aton("10.0.0.2") + socket.inet_aton("8.8.8.8")
    assert r.option(15) == b"example.org" and r.option(12) == b"vm1"
    assert r.option(26) == struct.pack("!H", 1450)
    assert r.option(28) == socket.inet_aton("10.0.0.255")
    assert [struct.unpack("!I", r.option(c))[0] for c in (51, 58, 59)] == [600, 300, 525]


def test_classless_routes_carry_the_default_route_rfc3442():
    r = server.answer(req(codec.DISCOVER), LEASE).reply
    assert r.option(121) == bytes([16, 172, 16, 10, 0, 0, 254, 0, 10, 0, 0, 1])
    plain = server.answer(req(codec.DISCOVER), Lease(ip="10.0.0.5", prefix=24,
                                                     server_ip="10.0.0.1", gateway="10.0.0.1"))
    assert plain.reply.option(121) is None and plain.reply.option(26) is None


def test_infinite_lease_has_no_renewal_times():
    r = server.answer(req(codec.DISCOVER), Lease(ip="10.0.0.5", prefix=24,
                                                 server_ip="10.0.0.1", lease_time=-1)).reply
    assert r.option(51) == b"\xff\xff\xff\xff" and r.option(58) is None and r.option(3) is None


@pytest.mark.parametrize("msg", [
    req(codec.REQUEST, ip_opt(50, "10.0.0.5"), ip_opt(54, "10.0.0.1")),  # selecting
    req(codec.REQUEST, ip_opt(50, "10.0.0.5")),  # init-reboot
    req(codec.REQUEST, ciaddr="10.0.0.5"),  # renewing / rebinding
])
def test_request_for_the_ports_address_is_acked(msg):
    out = server.answer(msg, LEASE)
    assert out.reason == "ack" and out.reply.message_type == codec.ACK
    assert out.reply.yiaddr == "10.0.0.5" and out.reply.ciaddr == msg.ciaddr


@pytest.mark.parametrize("msg", [
    req(codec.REQUEST, ip_opt(50, "10.0.0.6"), ip_opt(54, "10.0.0.1")),
    req(codec.REQUEST, ip_opt(50, "10.0.0.6")),
    req(codec.REQUEST, ciaddr="10.0.0.6"),
    req(codec.REQUEST),
])
def test_request_for_another_address_is_naked_at_once(msg):
    out = server.answer(msg, LEASE)
    assert out.nak and out.reason == "nak"
    assert out.reply.yiaddr == "0.0.0.0" and out.reply.option(51) is None
    assert out.reply.ip_option(54) == "10.0.0.1" and out.reply.option(56)


def test_request_to_another_server_is_ignored():
    out = server.answer(req(codec.REQUEST, ip_opt(50, "10.0.0.5"), ip_opt(54, "10.0.0.9")),
                        LEASE)
    assert out == server.Outcome(None, "other_server")


def test_inform_gets_configuration_without_a_lease_and_client_id_is_echoed():
    out = server.answer(req(codec.INFORM, (61, b"\x01" + MAC), ciaddr="10.0.0.5"), LEASE)
    r = out.reply
    assert out.reason == "inform" and r.message_type == codec.ACK and r.yiaddr == "0.0.0.0"
    assert r.option(51) is None and r.option(3) and r.option(61) == b"\x01" + MAC


@pytest.mark.parametrize("msg, reason", [
    (req(codec.RELEASE, ciaddr="10.0.0.5"), "release"),
    (req(codec.DECLINE, ip_opt(50, "10.0.0.5")), "decline"),
    (req(codec.OFFER), "unexpected_type"),
    (DhcpMessage(op=1, xid=1, chaddr=MAC), "no_message_type"),
    (DhcpMessage(op=2, xid=1, chaddr=MAC, options=((53, b"\x01"),)), "not_ethernet_request"),
    (DhcpMessage(op=1, xid=1, chaddr=MAC, giaddr="10.9.9.9", options=((53, b"\x01"),)),
     "relayed"),
])
def test_what_is_not_answered_is_counted_by_reason(msg, reason):
    assert server.answer(msg, LEASE) == server.Outcome(None, reason)


def test_extra_options_replace_by_name_or_number():
    code, value = options.extra("mtu", "1400")
    assert (code, value) == (26, struct.pack("!H", 1400))
    assert options.extra("26", "1400") == (26, value) == options.extra("option:mtu", "1400")
    assert options.extra("dns-server", "1.1.1.1,9.9.9.9")[1] == bytes([1, 1, 1, 1, 9, 9, 9, 9])
    assert options.extra("bootfile-name", "pxelinux.0") == (67, b"pxelinux.0")
    assert options.extra("classless-static-route", "10.9.0.0/16,10.0.0.1") == (
        121, bytes([16, 10, 9, 10, 0, 0, 1]))
    assert options.extra("domain-search", "a.example,b") == (
        119, b"\x01a\x07example\x00\x01b\x00")
    lease = Lease(**{**LEASE.__dict__, "extra": (options.extra("mtu", "1400"),)})
    assert server.answer(req(codec.DISCOVER), lease).reply.option(26) == value


@pytest.mark.parametrize("name, value", [
    ("no-such-option", "1"), ("mtu", "big"), ("router", "10.0.0.300"), ("255", "x"),
    ("classless-static-route", "10.0.0.0/8"), ("mtu", "70000"),
])
def test_bad_extra_options_say_what_is_wrong(name, value):
    with pytest.raises(options.OptionError) as e:
        options.extra(name, value)
    assert str(e.value)


def test_reply_addressing_rfc2131_4_1():
    offer = server.answer(req(codec.DISCOVER), LEASE).reply
    assert frames.destination(offer) == (MAC, "10.0.0.5")
    bcast = server.answer(req(codec.DISCOVER, flags=codec.FLAG_BROADCAST), LEASE).reply
    assert frames.destination(bcast) == (frames.BROADCAST_MAC, "255.255.255.255")
    nak = server.answer(req(codec.REQUEST, ciaddr="10.0.0.6"), LEASE).reply
    assert frames.destination(nak) == (frames.BROADCAST_MAC, "255.255.255.255")
    renew = server.answer(req(codec.REQUEST, ciaddr="10.0.0.5"), LEASE).reply
    assert frames.destination(renew) == (MAC, "10.0.0.5")


def test_reply_frame_has_valid_checksums_and_the_message():
    reply = server.answer(req(codec.DISCOVER), LEASE).reply
    payload = codec.build(reply)
    frame = frames.reply_frame(payload, reply, "02:aa:00:00:00:01", "10.0.0.1")
    assert frame[:6] == MAC and frame[6:12] == bytes.fromhex("02aa00000001")
    ip = frame[14:34]
    assert frames.checksum(ip) == 0 and ip[12:16] == socket.inet_aton("10.0.0.1")
    udp = frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert frames.checksum(pseudo + udp) == 0
    assert struct.unpack("!HH", udp[:4]) == (67, 68)
    assert codec.parse(frames.request_payload(frame)) == reply  # the same wrapper, back


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_request_payload_of_any_frame_is_bytes_or_dhcp_error(data):
    try:
        assert isinstance(frames.request_payload(data), bytes)
    except codec.DhcpError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.builds(DhcpMessage, op=st.integers(0, 3), xid=st.integers(0, 2**32 - 1),
                 chaddr=st.binary(min_size=5, max_size=7),
                 options=st.lists(st.tuples(st.sampled_from([50, 53, 54, 55, 61]),
                                            st.binary(max_size=6)),
                                  max_size=5, unique_by=lambda o: o[0]).map(tuple),
                 ciaddr=st.sampled_from(["0.0.0.0", "10.0.0.5", "10.0.0.6"])))
def test_any_request_gets_a_buildable_reply_or_a_reason(msg):
    out = server.answer(msg, LEASE)
    assert out.reason
    if out.reply is not None:
        assert codec.parse(codec.build(out.reply)) == out.reply
        assert out.reply.message_type in (codec.OFFER, codec.ACK, codec.NAK)
