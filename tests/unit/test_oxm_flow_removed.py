"""Flow-removed messages parsed with a lazy match (``oxm.apply``): the same
fields as os-ken's own parser, the match read only when asked for, and the
same event class (os-ken finds it by the message class's name)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as p

from midoflow.apps import oxm
from midoflow.apps.pipeline import OFFLINE
from tests.unit.test_oxm import FIELDS

COUNTERS = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 65535), st.integers(0, 3),
                     st.integers(0, 254), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                     st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 2**64 - 1),
                     st.integers(0, 2**64 - 1))


def flow_removed(values: tuple, match: dict) -> bytes:
    body = bytearray(struct.pack(ofp.OFP_FLOW_REMOVED_PACK_STR0, *values))
    p.OFPMatch(**match).serialize(body, len(body))
    return struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED,
                       8 + len(body), 3) + bytes(body)


@settings(max_examples=200, deadline=None)
@given(COUNTERS, st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})))
def test_a_flow_removed_parses_as_os_kens(values, match):
    buf = flow_removed(values, match)
    args = (OFFLINE, ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED, len(buf), 3, buf)
    ref = p.OFPFlowRemoved.parser(*args)
    saved = dict(p._MSG_PARSERS)
    try:
        oxm.apply()
        got = p.msg_parser(*args)
    finally:
        p._MSG_PARSERS.clear()
        p._MSG_PARSERS.update(saved)
    names = ("cookie", "priority", "reason", "table_id", "duration_sec", "duration_nsec",
             "idle_timeout", "hard_timeout", "packet_count", "byte_count")
    assert [getattr(got, n) for n in names] == [getattr(ref, n) for n in names] == list(values)
    assert got._match is None  # not read yet
    assert dict(got.match.items()) == dict(ref.match.items())
    assert isinstance(got, p.OFPFlowRemoved)
    assert type(ofp_event.ofp_msg_to_ev(got)) is ofp_event.EventOFPFlowRemoved
