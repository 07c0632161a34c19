"""Two agents on the memory store: a connection opened through a stateful
filter at one host is tracked there, its return key pushed to the egress
host before the packet leaves, and the reply is admitted there; without the
push the reply is dropped. Also recovery from the flow-state store."""

from __future__ import annotations

from midoflow.agent.core import AgentCore, Tunnel
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.nat import statewire
from midoflow.nat.conntrack import TCP_ESTABLISHED_SECONDS, TCP_UNREPLIED_SECONDS
from tests.unit.worlds import M1, M2, cfg, tcp

OUT = tcp("10.1.0.2", "10.1.0.1", 40000, 443, M2, M1)  # p2's VM opens
REPLY = tcp("10.1.0.1", "10.1.0.2", 443, 40000, M1, M2)  # p1's VM answers


def test_unsolicited_traffic_to_the_guarded_vm_is_dropped(ct_world):
    agents, _ = ct_world
    assert agents["h1"].handle_miss(5, REPLY).actions == []


def test_return_key_is_pushed_first_and_admits_the_reply(ct_world):
    agents, state = ct_world
    h1, h2 = agents["h1"], agents["h2"]
    d = h2.handle_miss(5, OUT)
    assert d.actions == [Tunnel(11, "10.0.0.1", 1)]
    (push,) = d.pushes
    assert push.actions == [Tunnel(STATE_TUNNEL_KEY, "10.0.0.1", 1)]
    keys, ttl = statewire.decode(push.frame)
    assert [k.encode() for k in keys] == ["p2|6|10.1.0.1|443|10.1.0.2|40000"] \
        and ttl == TCP_UNREPLIED_SECONDS
    # the flow of the forward packet matches the whole 5-tuple
    assert {"ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst"} <= d.match_fields
    assert h1.receive_state(push.frame) == 1
    r = h1.handle_miss(5, REPLY)
    assert r.actions == [Tunnel(12, "10.0.0.2", 1)]
    # filed under both ports for recovery, behind the packet
    assert state.load("p1") == []
    assert h2.flush_state() == 2
    assert [e.key for e in state.load("p1")] == [keys[0].encode()]
    assert [e.key for e in state.load("p2")] == [keys[0].encode()]


def test_a_restarted_agent_recovers_its_connections_from_the_store(ct_world):
    agents, state = ct_world
    d = agents["h2"].handle_miss(5, OUT)
    assert d.pushes
    agents["h2"].flush_state()
    # h1's agent restarts: empty conntrack, then p1 is bound again
    fresh = AgentCore(cfg("h1"), agents["h1"].store, flow_state=state)
    fresh.start()
    fresh.set_interfaces({"vxlan0": (1, None), "gre0": (2, None), "vm1": (5, "p1")})
    assert fresh.handle_miss(5, REPLY).actions == [Tunnel(12, "10.0.0.2", 1)]


def test_garbage_state_frames_are_counted_not_fatal(ct_world):
    h1 = ct_world[0]["h1"]
    assert h1.receive_state(b"\x00" * 40) == 0
    assert h1.receive_state(statewire.DST_MAC + statewire.SRC_MAC + b"\x88\xb5MFS1{") == 0
    assert h1.stats["malformed"] == 2


def test_state_lives_while_a_flow_uses_it(ct_world):
    agents, _ = ct_world
    h1, h2 = agents["h1"], agents["h2"]
    h1.receive_state(h2.handle_miss(5, OUT).pushes[0].frame)
    r = h1.handle_miss(5, REPLY)
    h1.clock.advance(10 ** 6)  # far future: idle long ago
    assert h1.expire_state() == 0  # the reply's flow still uses the key
    h1.flow_removed(r.cookie)
    assert h1.expire_state() == 0  # idle from now on...
    h1.clock.advance(TCP_ESTABLISHED_SECONDS + 1)  # (answered: TCP's long timeout)
    assert h1.expire_state() == 1  # ...and gone an idle timeout later


def test_fin_both_ways_closes_on_both_hosts_and_its_flows_go(ct_world):
    agents, _ = ct_world
    h1, h2 = agents["h1"], agents["h2"]
    h1.receive_state(h2.handle_miss(5, OUT).pushes[0].frame)
    reply = h1.handle_miss(5, REPLY)
    assert reply.install
    removed = set()
    h1.on_invalidate = removed.update
    # p2's VM closes: its FIN is seen at h2, whose agent tells h1
    fin = h2.handle_miss(5, {**OUT, "tcp_flags": 0x11})
    assert not fin.install and fin.actions == [Tunnel(11, "10.0.0.1", 1)]
    (note,) = fin.pushes
    h1.receive_state(note.frame)
    # p1's VM closes too: its FIN at h1
    fin2 = h1.handle_miss(5, {**REPLY, "tcp_flags": 0x11})
    assert not fin2.install and fin2.actions == [Tunnel(12, "10.0.0.2", 1)]
    h1.clock.advance(11)
    assert h1.expire_state() >= 1  # closed: gone after the closing time, flow or not
    assert reply.cookie in removed  # and the reply's flow with it
    assert h1.handle_miss(5, REPLY).actions == []


def test_rst_closes_at_once(ct_world):
    agents, _ = ct_world
    h1, h2 = agents["h1"], agents["h2"]
    h1.receive_state(h2.handle_miss(5, OUT).pushes[0].frame)
    h1.handle_miss(5, {**REPLY, "tcp_flags": 0x04})
    h1.clock.advance(11)
    assert h1.expire_state() == 1


def test_state_the_store_refused_is_kept_for_the_next_flush(ct_world):
    agents, state = ct_world
    h2 = agents["h2"]
    real = state.save
    state.save = lambda *a: (_ for _ in ()).throw(RuntimeError("down"))
    h2.handle_miss(5, OUT)
    assert h2.flush_state() == 0 and h2.stats["state_save_failed"] >= 1
    state.save = real
    assert h2.flush_state() == 2  # both ports' entries, kept
    assert state.load("p1")
