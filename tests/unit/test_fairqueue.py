"""The agent's packet-in fair queue (midoflow/agent/fairqueue.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp

from midoflow.agent.clock import Clock
from midoflow.agent.config import AgentConfig
from midoflow.agent.fairqueue import ARP, CONTROL, VM, FairQueue
from midoflow.agent.flows import FlowIndex
from midoflow.agent.protection import Protection
from midoflow.apps.agent import MidoflowAgent
from midoflow.apps.pipeline import TABLE_SIMULATED, TABLE_TO_CONTROLLER
from midoflow.cli.status import format_status
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.service.topology import _status_host

COOKIE_BASE = FlowIndex.COOKIE_BASE


def drain(q: FairQueue) -> list:
    out = []
    while (nxt := q.get()) is not None:
        out.append(nxt)
    return out


def test_empty_queue_gives_none():
    q = FairQueue()
    assert q.get() is None
    assert len(q) == 0


def test_fifo_within_a_port():
    q = FairQueue()
    for i in range(5):
        q.put(1, i)
    assert [item for _, item in drain(q)] == [0, 1, 2, 3, 4]


def test_a_quiet_port_is_served_after_one_packet_of_a_blaster_backlog():
    q = FairQueue(bound=1000)
    for i in range(500):
        q.put("blaster", i)
    q.put("quiet", "syn")
    served = drain(q)
    # the quiet port's packet comes second, not after the 500 queued before it
    assert served[1] == ("quiet", "syn")


def test_round_robin_alternates_ports():
    q = FairQueue()
    for i in range(3):
        q.put("a", i)
        q.put("b", i)
        q.put("b", i + 10)
    assert [p for p, _ in drain(q)] == ["a", "b", "a", "b", "a", "b", "b", "b", "b"]


def test_weight_gives_more_packets_per_turn():
    q = FairQueue()
    for i in range(6):
        q.put("uplink", i, weight=3)
        q.put("vm", i)
    order = [p for p, _ in drain(q)][:8]
    assert order == ["uplink", "uplink", "uplink", "vm", "uplink", "uplink", "uplink", "vm"]


def test_full_port_drops_its_oldest_and_counts_it():
    q = FairQueue(bound=3)
    dropped = [q.put("a", i) for i in range(5)]
    q.put("b", "x")
    assert dropped == [None, None, None, 0, 1]
    assert q.drops == {"a": 2}
    assert q.dropped == 2
    assert len(q) == 4
    assert [item for p, item in drain(q) if p == "a"] == [2, 3, 4]  # the newest kept


def test_bound_is_per_port_others_unaffected():
    q = FairQueue(bound=2)
    for i in range(10):
        q.put("a", i)
    q.put("b", 0)
    q.put("b", 1)
    assert "b" not in q.drops
    assert q.depth(port="b") == 2 and q.depth(port="a") == 2


def test_control_then_arp_then_vm():
    q = FairQueue()
    q.put(1, "first packet", VM)
    q.put(1, "arp reply", ARP)
    q.put(("state", "10.0.0.2"), "state push", CONTROL)
    assert [item for _, item in drain(q)] == ["state push", "arp reply", "first packet"]


def test_control_class_has_a_larger_bound():
    q = FairQueue(bound=2)
    for i in range(20):
        q.put("peer", i, CONTROL)
    assert q.depth(CONTROL) == 20 and not q.drops


def test_lower_class_escapes_starvation():
    q = FairQueue(escape=4)
    for i in range(100):
        q.put("arp-flooder", i, ARP)
    q.put("quiet", "syn", VM)
    served = drain(q)
    assert served.index(("quiet", "syn")) == 4  # after `escape` ARP replies, not 100


def test_clear_forgets_everything():
    q = FairQueue()
    q.put(1, "x")
    q.put(2, "y", CONTROL)
    assert q.clear() == 2
    assert len(q) == 0 and q.get() is None


def test_bad_parameters_say_what_is_wrong():
    with pytest.raises(ValueError, match="bounds >= 1"):
        FairQueue(bound=0)
    with pytest.raises(ValueError, match="escape"):
        FairQueue(escape=0)


ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 4), st.sampled_from([CONTROL, ARP, VM]),
              st.integers(1, 3)),
    st.tuples(st.just("get"))), max_size=300)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(1, 6), st.integers(1, 5))
def test_model(operations, bound, escape):
    """Against a model: nothing lost or invented, FIFO per (class, port),
    bounds hold, drops are the oldest, and a waiting class or port is not
    passed over for long."""
    q = FairQueue(bound=bound, control_bound=bound, escape=escape)
    model: dict[tuple[int, int], list[int]] = {}
    seq = 0
    # gets since each (class, port) / class last got service while it had packets
    port_wait: dict[tuple[int, int], int] = {}
    class_wait = {c: 0 for c in (CONTROL, ARP, VM)}
    for op in operations:
        if op[0] == "put":
            _, port, klass, weight = op
            items = model.setdefault((klass, port), [])
            dropped = q.put(port, (klass, seq), klass, weight)
            if len(items) >= bound:
                assert dropped == items.pop(0)
            else:
                assert dropped is None
            items.append((klass, seq))
            seq += 1
        else:
            got = q.get()
            waiting = {k for k, v in model.items() if v}
            if not waiting:
                assert got is None
                continue
            port, (klass, n) = got
            assert model[(klass, port)].pop(0) == (klass, n)  # FIFO, nothing invented
            higher = [c for c in (CONTROL, ARP, VM) if any(k[0] == c for k in waiting)]
            # strict priority, except the highest class that waited `escape` turns
            starved = [c for c in higher[1:] if class_wait[c] >= escape]
            assert klass == (starved[0] if starved else higher[0])
            for c in higher:
                class_wait[c] = 0 if c == klass else class_wait[c] + (c > klass)
            for k in waiting:
                if k[0] == klass:
                    port_wait[k] = 0 if k == (klass, port) else port_wait.get(k, 0) + 1
            for k, v in port_wait.items():  # round robin: one turn (<= 3) of each other port
                assert v <= 3 * 4, (k, v)
            for k in [k for k in port_wait if not model.get(k)]:
                del port_wait[k]
        assert len(q) == sum(len(v) for v in model.values())
        assert all(len(v) <= bound for v in model.values())
    rest = drain(q)
    assert sorted(item for _, item in rest) == sorted(i for v in model.values() for i in v)


def test_queue_drops_reach_the_status(tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text("[agent]\nhost_id=h\nzookeeper=memory\novsdb=unix:/x\n"
                    "tunnel_ip=10.0.0.1\npacket_in_queue=64\n")
    cfg = AgentConfig.load(str(path))
    stats = {"malformed": 0, "queue_drops": {"p1": 7}}
    report = Protection(cfg, stats, Clock()).report()
    assert report["queue_drops"] == {"p1": 7}
    text = format_status({"store": {"connected": True},
                          "hosts": [_status_host("h1", "h1", {"protection": report})]})
    assert ("h1: port p1: 7 packet-in(s) dropped by the agent's queue "
            "(limit 64 waiting per port)") in text


# ---- the glue: MidoflowAgent._packet_in files, _serve_packets serves ----------

def glue_agent(bound: int = 256, fair: bool = True):
    """The os-ken app without os-ken: _process and receive_state record."""
    served: list = []
    a = MidoflowAgent.__new__(MidoflowAgent)
    a.cfg = SimpleNamespace(packet_in_fair=fair, packet_in_rate=1000)
    a.packets = FairQueue(bound)
    a._packets_wake = hub.Event()
    a._ports_seen, a._ports_seen_of = {}, -1
    a.classified = {"vm-a": (5, 11), "vm-b": (6, 12), "uplink": (7, 13)}
    a._meter_rate = lambda pid: (20000, 4000) if pid == "uplink" else (1000, 200)
    a.core = SimpleNamespace(
        stats={}, receive_state=lambda data, src=None: served.append(("state", data)))
    a._process = lambda dp, in_port, data, buffer_id, copy=False: served.append(
        (in_port, data) if not copy else (in_port, data, "copy"))
    a.dp = SimpleNamespace(ofproto=ofp)  # the switch connection
    return a, served


def packet_in(dp, in_port: int, data: bytes, tunnel_id: int | None = None,
              table_id: int = TABLE_TO_CONTROLLER, cookie: int = 0):
    match = {"in_port": in_port} if tunnel_id is None else {"in_port": in_port,
                                                            "tunnel_id": tunnel_id}
    return SimpleNamespace(msg=SimpleNamespace(datapath=dp, match=match, data=data,
                                               buffer_id=ofp.OFP_NO_BUFFER,
                                               table_id=table_id, cookie=cookie))


def frame(ethertype: bytes, tail: bytes = b"") -> bytes:
    return bytes(12) + ethertype + bytes(6) + tail + bytes(20)


def test_packet_in_files_without_simulating_and_the_worker_serves_fairly():
    a, served = glue_agent()
    for i in range(5):  # a blaster's backlog
        a._packet_in(packet_in(a.dp, 5, frame(b"\x08\x00") + bytes([i])))
    a._packet_in(packet_in(a.dp, 6, frame(b"\x08\x00")))  # a quiet port's first packet
    a._packet_in(packet_in(a.dp, 5, frame(b"\x08\x06", b"\x00\x02")))  # an ARP reply
    a._packet_in(packet_in(a.dp, 1, b"state", tunnel_id=STATE_TUNNEL_KEY))
    assert served == []  # nothing simulated in os-ken's handler
    assert a._packets_wake.is_set()
    assert a._serve_packets() == 8
    kinds = [s[0] for s in served]
    assert kinds[0] == "state"
    assert served[1] == (5, frame(b"\x08\x06", b"\x00\x02"))  # the ARP reply next
    assert kinds[2:4] == [5, 6]  # the quiet port right after one of the blaster's


def test_a_full_port_queue_drops_its_oldest_and_counts_it_by_port_id():
    a, served = glue_agent(bound=2)
    for i in range(5):
        a._packet_in(packet_in(a.dp, 5, frame(b"\x08\x00") + bytes([i])))
    assert a.core.stats["packet_in_queue_drops"] == 3
    assert a.core.stats["queue_drops"] == {"vm-a": 3}


def test_packets_of_a_lost_connection_are_not_simulated():
    a, served = glue_agent()
    a._packet_in(packet_in(a.dp, 5, frame(b"\x08\x00")))
    a.dp = None  # the switch went away meanwhile
    assert a._serve_packets() == 1
    assert served == []


def test_packet_in_fair_false_simulates_in_the_handler():
    a, served = glue_agent(fair=False)
    ev = packet_in(a.dp, 5, frame(b"\x08\x00"))
    a._packet_in(ev)
    assert served == [(5, frame(b"\x08\x00"))] and len(a.packets) == 0


@pytest.mark.parametrize("fair", [True, False])
def test_a_close_flows_copy_reaches_process_flagged_through_the_queue(fair):
    a, served = glue_agent(fair=fair)
    fin = frame(b"\x08\x00", b"fin")
    a._packet_in(packet_in(a.dp, 5, fin, table_id=TABLE_SIMULATED, cookie=COOKIE_BASE | 9))
    a._packet_in(packet_in(a.dp, 5, fin))  # the same segment by table 2: a miss
    a._serve_packets()
    assert served == [(5, fin, "copy"), (5, fin)]


def test_an_uplink_gets_its_meter_share_per_turn():
    a, served = glue_agent()
    for i in range(30):
        a._packet_in(packet_in(a.dp, 7, frame(b"\x08\x00") + bytes([i])))
        a._packet_in(packet_in(a.dp, 5, frame(b"\x08\x00") + bytes([i])))
    a._serve_packets()
    ports = [s[0] for s in served]
    assert ports[:22] == [7] * 20 + [5, 7]  # 20,000/s against 1,000/s: 20 per turn
