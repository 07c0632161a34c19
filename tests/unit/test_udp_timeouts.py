"""UDP conntrack timeouts distinct from TCP's and ICMP's (issue 12, item 5),
as Linux's defaults: an unanswered UDP "connection" goes after 30 s, an
answered one after 180 s; TCP's last much longer; ICMP's 30 s. In the table,
then through two agents (the push carries the new connection's timeout;
the host that sees the reply keeps it longer; idle time starts when no
installed flow uses it)."""

from __future__ import annotations

import pytest

from midoflow.nat import statewire
from midoflow.nat.conntrack import (
    ICMP_SECONDS,
    IDLE_SECONDS,
    TCP_ESTABLISHED_SECONDS,
    TCP_UNREPLIED_SECONDS,
    UDP_ASSURED_SECONDS,
    UDP_UNREPLIED_SECONDS,
    ConnKey,
    ConnTrackTable,
    timeout,
)
from tests.unit.worlds import M1, M2, tcp

UDP_OUT = {**tcp("10.1.0.2", "10.1.0.1", 40000, 53, M2, M1), "ip_proto": 17}
UDP_REPLY = {**tcp("10.1.0.1", "10.1.0.2", 53, 40000, M1, M2), "ip_proto": 17}


def test_the_timeouts_are_linuxs_and_distinct():
    assert (UDP_UNREPLIED_SECONDS, UDP_ASSURED_SECONDS, ICMP_SECONDS) == (30, 180, 30)
    assert TCP_ESTABLISHED_SECONDS > 10 * UDP_ASSURED_SECONDS
    assert TCP_ESTABLISHED_SECONDS <= 3600  # what a flow-state message can carry
    assert timeout(17, False) != timeout(6, False) and timeout(17, True) != timeout(6, True)
    assert timeout(47, False) == timeout(47, True) == IDLE_SECONDS  # GRE: MidoNet's


@pytest.mark.parametrize("proto, unreplied, replied", [
    (17, UDP_UNREPLIED_SECONDS, UDP_ASSURED_SECONDS),
    (6, TCP_UNREPLIED_SECONDS, TCP_ESTABLISHED_SECONDS),
    (1, ICMP_SECONDS, ICMP_SECONDS),
])
def test_expiry_by_protocol_and_reply(proto, unreplied, replied):
    t = ConnTrackTable()
    fwd = ConnKey("d", proto, "10.0.0.1", 5000, "10.0.0.2", 53)
    ret = t.track(fwd, 0)
    assert t.live(ret, unreplied - 1) and not t.live(ret, unreplied + 1)
    assert t.expire(unreplied + 1) == [ret]
    ret = t.track(fwd, 1000)
    t.replied(ret, 1010)  # answered ten seconds later
    assert t.live(ret, 1010 + replied - 1) and not t.live(ret, 1010 + replied + 1)
    # a flow using it keeps it; its idle time then starts with the same timeout
    assert t.expire(2000 + replied, keep={ret}) == []
    assert t.live(ret, 2000 + 2 * replied - 1) and not t.live(ret, 2000 + 2 * replied + 1)


def test_a_fixed_idle_still_applies_to_every_protocol():
    t = ConnTrackTable(idle=60)
    for proto in (1, 6, 17):
        ret = t.track(ConnKey("d", proto, "10.0.0.1", 1, "10.0.0.2", 2), 0)
        t.replied(ret, 0)
        assert t.live(ret, 59) and not t.live(ret, 61)


def test_a_closed_tcp_connection_is_not_revived_by_a_late_reply():
    t = ConnTrackTable()
    fwd = ConnKey("d", 6, "10.0.0.1", 5000, "10.0.0.2", 80)
    ret = t.track(fwd, 0)
    t.tcp_flags(fwd, 0x04, 1)  # RST
    t.replied(ret, 2)
    assert not t.live(ret, 12)


def test_udp_through_two_agents(ct_world):
    """p2 (h2) sends a datagram to p1 (h1), whose port admits only replies:
    the push carries UDP's unreplied timeout; h1, which sees the answer,
    keeps the connection 180 s once no flow uses it, h2 (no reply seen
    there) 30 s."""
    agents, _ = ct_world
    h1, h2 = agents["h1"], agents["h2"]
    d = h2.handle_miss(5, UDP_OUT)
    assert d.actions
    keys, ttl = statewire.decode(d.pushes[0].frame)
    assert ttl == UDP_UNREPLIED_SECONDS
    assert h1.receive_state(d.pushes[0].frame) == 1
    r = h1.handle_miss(5, UDP_REPLY)
    assert r.actions and r.cookie is not None
    (ret,) = keys
    h1.flow_removed(r.cookie)
    h2.flow_removed(d.cookie)
    assert h1.expire_state() == 0 and h2.expire_state() == 0
    for h in (h1, h2):
        h.clock.advance(UDP_UNREPLIED_SECONDS + 1)
    assert h2.expire_state() == 1 and ret not in h2.ct  # never answered there
    assert h1.expire_state() == 0 and ret in h1.ct  # answered: assured
    h1.clock.advance(UDP_ASSURED_SECONDS - UDP_UNREPLIED_SECONDS)
    assert h1.expire_state() == 1 and h1.handle_miss(5, UDP_REPLY).actions == []
