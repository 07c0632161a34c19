"""A tracked connection's exact flow, once installed, answers for it without
a simulation: a later packet of it that still reaches the agent (the
datapath's cache is revalidated later) is sent with the flow's actions, and
its close flow's copy of a FIN is closed from what the flow recorded, with
the same state and the same push as a simulated copy."""

from __future__ import annotations

import pytest

from midoflow.nat import statewire
from midoflow.nat.conntrack import TCP_FIN
from midoflow.store.base import Create
from tests.unit import worlds
from tests.unit.worlds import GW, PUBLIC, RMAC, TUNNELS, UPMAC, VM

SYN, SYN_ACK, ACK, FIN_ACK, PSH_ACK = 0x02, 0x12, 0x10, 0x11, 0x18


def snat_agents(tracked: bool = False):
    """As the snat_world fixture (uplink on h1, ofport 7; the VM on h2, 5);
    ``tracked``: the inbound chain also accepts the VM's return flows (each
    connection a conntrack entry too, as bench_stateful_rate's)."""
    objects = worlds.snat_uplink()
    if tracked:
        for o in objects:
            if o.kind == "chains" and o.data["id"] == "pre":
                o.data["rule_ids"] = ["rev", "trk"]
        objects.append(Create("rules", {"id": "trk", "chain_id": "pre", "action": "accept",
                                        "match_return_flow": True,
                                        "nw_src": "192.168.1.8/29"}))
    api = worlds.two_hosts(*objects)
    worlds.learn_arp(api, "r", {"198.51.100.254": GW, "192.168.1.10": VM})
    agents = {h: worlds.agent(api, h) for h in worlds.HOSTS}
    worlds.bind(agents, {"h1": {**TUNNELS, "uplink": (7, "up")},
                         "h2": {**TUNNELS, "vm1": (5, "vm")}})
    h1, h2 = agents["h1"], agents["h2"]
    opened(h1, h2, sport=30000)  # what the first connection learns invalidates flows
    return h1, h2


def out(flags: int, sport: int = 40000) -> dict:
    return {"eth_src": VM, "eth_dst": RMAC, "eth_type": 0x800, "ip_src": "192.168.1.10",
            "ip_dst": "8.8.8.8", "ip_proto": 6, "tp_src": sport, "tp_dst": 80,
            "tcp_flags": flags, "ip_ttl": 64}


def back(port: int, flags: int) -> dict:
    return {"eth_src": GW, "eth_dst": UPMAC, "eth_type": 0x800, "ip_src": "8.8.8.8",
            "ip_dst": PUBLIC, "ip_proto": 6, "tp_src": 80, "tp_dst": port,
            "tcp_flags": flags, "ip_ttl": 64}


def opened(h1, h2, sport: int = 40000):
    """A connection through SNAT: the SYN at h2 (its state pushed to h1),
    the SYN/ACK at h1. (SYN decision, SYN/ACK decision, public port)"""
    syn = h2.handle_miss(5, out(SYN, sport))
    port = {r.field: r.value for r in syn.rewrites}["tp_src"]
    for p in syn.pushes:
        h1.receive_state(p.frame)
    return syn, h1.handle_miss(7, back(port, SYN_ACK)), port


def test_later_packets_of_an_installed_connection_are_not_simulated():
    h1, h2 = snat_agents()
    syn, synack, port = opened(h1, h2)
    assert syn.install and synack.install and syn.cookie and synack.cookie
    sims = h2.stats["simulated"], h1.stats["simulated"]
    ack = h2.handle_miss(5, out(ACK))
    assert (ack.actions, ack.rewrites, ack.cookie) == (syn.actions, syn.rewrites, syn.cookie)
    assert not ack.install and not ack.pushes and not ack.emits
    data = h1.handle_miss(7, back(port, PSH_ACK))  # the reply direction, at h1
    assert (data.actions, data.rewrites) == (synack.actions, synack.rewrites)
    assert not data.install and not data.pushes
    assert (h2.stats["simulated"], h1.stats["simulated"]) == sims
    assert h2.stats["installed_answers"] == h1.stats["installed_answers"] == 1
    # another connection, a FIN, a low TTL: simulated as before
    h2.handle_miss(5, out(ACK, sport=40001))
    h2.handle_miss(5, out(FIN_ACK))
    h2.handle_miss(5, {**out(ACK), "ip_ttl": 3})
    assert h2.stats["simulated"] == sims[0] + 3


def test_once_the_flow_is_gone_its_packets_are_simulated_again():
    h1, h2 = snat_agents()
    syn, _synack, _port = opened(h1, h2)
    h2.flow_removed(syn.cookie)
    n = h2.stats["simulated"]
    again = h2.handle_miss(5, out(ACK))
    assert h2.stats["simulated"] == n + 1 and again.install and again.cookie != syn.cookie
    h2.handle_miss(5, out(ACK))  # the new flow answers now
    assert h2.stats["simulated"] == n + 1
    h2.forget_flows()  # OVS's flows wiped: nothing answers
    h2.handle_miss(5, out(ACK))
    assert h2.stats["simulated"] == n + 2


def _close_both(h1, h2, syn, synack, port, known: bool) -> list[bytes]:
    """The client's FIN copied at h2, the server's at h1, each push
    delivered; ``known``: the copies carry their flows' cookies."""
    pushes = []
    d = h2.handle_miss(5, out(FIN_ACK), copy=syn.cookie if known else True)
    assert d.actions == [] and not d.install and not d.emits
    for p in d.pushes:
        pushes.append(p.frame)
        h1.receive_state(p.frame)
    d = h1.handle_miss(7, back(port, FIN_ACK), copy=synack.cookie if known else True)
    for p in d.pushes:
        pushes.append(p.frame)
        h2.receive_state(p.frame)
    return pushes


@pytest.mark.parametrize("tracked", [False, True])
def test_a_close_copy_is_closed_from_its_flow_as_a_simulation_would(tracked):
    results = []
    for known in (True, False):
        h1, h2 = snat_agents(tracked)
        syn, synack, port = opened(h1, h2)
        sims = h2.stats["simulated"], h1.stats["simulated"]
        pushes = _close_both(h1, h2, syn, synack, port, known)
        simulated = (h2.stats["simulated"] - sims[0], h1.stats["simulated"] - sims[1])
        (b,) = (b for b in h2.state.tables.nat_until if b.orig[1] == 40000)
        closing = (b in h2.state.tables.nat_closing, b in h1.state.tables.nat_closing,
                   *(c.closing for k, c in h2.state.tables.ct._conns.items()
                     if 40000 in (k.sport, k.dport)))
        closes = [statewire.decode_full(f)[2] for f in pushes]
        results.append((simulated, closing, closes))
        assert h2.stats["close_copies"] == h1.stats["close_copies"] == 1
    (sim_known, closing_known, closes_known), (sim_before, closing_before, closes_before) \
        = results
    assert sim_known == (0, 0) and sim_before == (1, 1)
    # the binding closed on both hosts (and its conntrack entry, if any, as
    # the simulated copies leave it)
    assert closing_known == closing_before and closing_known[:2] == (True, True)
    assert len(closing_known) == (3 if tracked else 2)
    assert closes_known == closes_before and all(
        flags & TCP_FIN for c in closes_known for _k, flags in c)


def test_a_copy_of_a_flow_not_known_here_is_simulated():
    h1, h2 = snat_agents()
    syn, _synack, _port = opened(h1, h2)
    h2.forget_flows()  # e.g. a restarted agent: the flow was kept, not recorded
    n = h2.stats["simulated"]
    d = h2.handle_miss(5, out(FIN_ACK), copy=syn.cookie)
    assert h2.stats["simulated"] == n + 1 and d.pushes and d.actions == []
    # another connection's FIN on this cookie is not closed from it either
    h1b, h2b = snat_agents()
    syn, _synack, _port = opened(h1b, h2b)
    n = h2b.stats["simulated"]
    h2b.handle_miss(5, out(FIN_ACK, sport=40001), copy=syn.cookie)
    assert h2b.stats["simulated"] == n + 1
