"""The fast match and set-field (midoflow.apps.oxm) serialize to the very
bytes os-ken's own classes give, for every field the agent's flows use, and
read back the same."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as p

from midoflow.apps import oxm
from midoflow.apps.pipeline import OFFLINE

MACS = st.sampled_from(["02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "0a:1b:2c:3d:4e:5f",
                        "00:00:00:00:00:00"])
IPS = st.ip_addresses(v=4).map(str)
PORTS = st.integers(0, 65535)
FIELDS = {"in_port": st.integers(1, 0xFFFFFF00), "eth_src": MACS, "eth_dst": MACS,
          "ipv4_src": IPS, "ipv4_dst": IPS, "tcp_src": PORTS, "tcp_dst": PORTS,
          "udp_src": PORTS, "udp_dst": PORTS, "ip_dscp": st.integers(0, 63),
          "ip_ecn": st.integers(0, 3), "arp_op": st.integers(1, 2), "arp_spa": IPS,
          "arp_tpa": IPS, "arp_sha": MACS, "icmpv4_type": st.integers(0, 255),
          "icmpv4_code": st.integers(0, 255), "eth_type": st.sampled_from([0x800, 0x806]),
          "ip_proto": st.sampled_from([1, 6, 17])}


def _bytes(obj) -> bytes:
    buf = bytearray()
    obj.serialize(buf, 0)
    return bytes(buf)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), min_size=1).flatmap(
    lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})))
def test_a_match_serializes_as_os_kens(kw):
    fast, ref = oxm.match(**kw), p.OFPMatch(**kw)
    assert _bytes(fast) == _bytes(ref)
    assert dict(fast.items()) == dict(ref.items())
    back = p.OFPMatch.parser(_bytes(fast), 0)
    assert dict(back.items()) == dict(ref.items())


def test_masked_and_extension_fields_take_os_kens_encoding():
    fields = [("eth_type", 0x800), ("ip_proto", 6), ("tcp_flags", (1, 1))]
    assert _bytes(oxm.Match(fields)) == _bytes(p.OFPMatch(_ordered_fields=fields))


@pytest.mark.parametrize("kw", [{"eth_src": "02:00:00:00:00:01"}, {"ipv4_dst": "8.8.8.8"},
                                {"tcp_src": 40000}, {"udp_dst": 53}, {"tunnel_id": 77},
                                {"tun_ipv4_dst": "10.10.0.2"}])
def test_a_set_field_serializes_as_os_kens(kw):
    assert _bytes(oxm.SetField(**kw)) == _bytes(p.OFPActionSetField(**kw))


@pytest.mark.parametrize("fields", [{"in_port": 5}, {"in_port": 2, "tunnel_id": 77,
                                                     "tun_ipv4_src": "10.0.0.2"}])
def test_a_packet_in_parses_as_os_kens(fields):
    body = bytearray(struct.pack(ofp.OFP_PACKET_IN_PACK_STR[1:], ofp.OFP_NO_BUFFER, 64, 0, 2, 9))
    p.OFPMatch(**fields).serialize(body, len(body))
    body += bytes(2) + bytes(range(64))
    buf = struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_PACKET_IN,
                      8 + len(body), 1) + bytes(body)
    args = (OFFLINE, ofp.OFP_VERSION, ofp.OFPT_PACKET_IN, len(buf), 1, buf)
    ref = p.OFPPacketIn.parser(*args)
    saved = p._MSG_PARSERS[ofp.OFPT_PACKET_IN]
    try:
        oxm.apply()
        got = p.msg_parser(*args)
    finally:
        p._MSG_PARSERS[ofp.OFPT_PACKET_IN] = saved
    assert type(got) is p.OFPPacketIn and isinstance(got.match, oxm.Match)
    assert dict(got.match.items()) == dict(ref.match.items()) == fields
    assert got.match["in_port"] == fields["in_port"] and got.match.get("nope") is None
    assert bytes(got.data) == bytes(ref.data) and (got.buffer_id, got.reason, got.table_id,
                                                    got.cookie) == (ref.buffer_id, ref.reason,
                                                                    ref.table_id, ref.cookie)
