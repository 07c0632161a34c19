"""The packet-in meters across a fast restart's reconnect, through the fake
table: the agent asks OVS which meters it holds before classifying, then
modifies those (their counters go on) and adds the missing ones; it deletes
none (OVS would take the flows using them too)."""

from __future__ import annotations

import itertools
import threading
from types import SimpleNamespace

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from midoflow.apps import pipeline as pl
from midoflow.apps.agent import MidoflowAgent
from tests.unit import worlds
from tests.unit.fakeoftable import CONTROLLER, FakeOFTable
from tests.unit.worlds import TUNNELS


def datapath(sent: list) -> SimpleNamespace:
    xids = itertools.count(1)
    return SimpleNamespace(id=1, ofproto=ofp, ofproto_parser=parser, send_msg=sent.append,
                           set_xid=lambda m: m.set_xid(next(xids)))


def agent_on(api, fast: bool) -> MidoflowAgent:
    """The os-ken app without os-ken: h1's core (p1 on ofport 5, p3 on 6)."""
    a = MidoflowAgent.__new__(MidoflowAgent)
    a.cfg = worlds.cfg("h1", fast_restart=fast)
    a.dp, a.classified, a.bgp_links, a._poke = None, {}, {}, threading.Event()
    a.threads = []
    a.core = worlds.agent(api, "h1", config={"fast_restart": fast},
                          on_bindings=lambda change: a._bindings_changed(change))
    a.core.set_interfaces({**TUNNELS, "vm1": (5, "p1"), "vm3": (6, "p3")})
    return a


def mods(sent: list) -> list:
    return [m for m in sent if isinstance(m, parser.OFPFlowMod | parser.OFPMeterMod)]


def meter_mods(sent: list) -> list[tuple[int, int]]:
    """The ports' meter-mods (not those of table 0's shared miss meter, made
    afresh at every connection: see pipeline.unbound_miss_flows)."""
    return [(m.command, m.meter_id) for m in sent if isinstance(m, parser.OFPMeterMod)
            and m.meter_id != pl.UNBOUND_METER]


def port_packets(table: FakeOFTable) -> dict[int, int]:
    return {m: n for m, n in table.meter_packets.items() if m != pl.UNBOUND_METER}


def to_controller(table: FakeOFTable, in_port: int):
    return table.lookup({"in_port": in_port, "eth_type": 0x800, "eth_src": worlds.M1,
                         "eth_dst": worlds.M2}, table=pl.TABLE_TO_CONTROLLER)


def test_a_fast_reconnect_modifies_the_meters_ovs_kept_and_adds_the_missing_ones():
    api = worlds.two_hosts(*worlds.l2_bridge())
    # What the previous run left in OVS: p1 classified on ofport 5, its meter
    # having passed packets; p3 (ofport 6) was bound while the agent was away.
    table = FakeOFTable().apply(pl.base_flows(pl.OFFLINE))
    table.apply(pl.classify_flows(pl.OFFLINE, 5, 11, [1, 2]))
    for _ in range(3):
        to_controller(table, 5)
    assert port_packets(table) == {5: 3}

    a, sent = agent_on(api, fast=True), []
    dp = datapath(sent)
    a._features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    (ask,) = [m for m in sent if isinstance(m, parser.OFPMeterConfigStatsRequest)]
    assert ask.meter_id == ofp.OFPM_ALL and sent.index(ask) < sent.index(mods(sent)[0])
    assert set(a.classified) == {"p1", "p3"} and meter_mods(sent) == []  # waits for OVS
    table.apply(mods(sent))

    sent.clear()
    a._meter_config(SimpleNamespace(msg=SimpleNamespace(
        datapath=dp, xid=ask.xid, flags=0, body=table.meter_config())))
    assert sorted(meter_mods(sent)) == [(ofp.OFPMC_ADD, 6), (ofp.OFPMC_MODIFY, 5)]
    table.apply(mods(sent))  # the fake refuses a modify of a missing meter, an add twice
    assert to_controller(table, 5).meters == [5] and to_controller(table, 6).meters == [6]
    assert to_controller(table, 5).outputs[0].port == CONTROLLER
    assert port_packets(table) == {5: 5, 6: 1}  # p1's counters went on

    # A binding that changes later still makes its meter afresh, and only once.
    sent.clear()
    a.core.set_interfaces({**TUNNELS, "vm1": (5, "p1")})  # p3 unplugged
    a.core.set_interfaces({**TUNNELS, "vm1": (5, "p1"), "vm3": (6, "p3")})
    table.apply(mods(sent))
    assert meter_mods(sent) == [(ofp.OFPMC_DELETE, 6), (ofp.OFPMC_ADD, 6)]
    assert port_packets(table) == {5: 5, 6: 0}


def test_a_fresh_connection_wipes_every_meter_and_makes_each_again():
    api = worlds.two_hosts(*worlds.l2_bridge())
    a, sent = agent_on(api, fast=False), []
    a._features(SimpleNamespace(msg=SimpleNamespace(datapath=datapath(sent))))
    assert not any(isinstance(m, parser.OFPMeterConfigStatsRequest) for m in sent)
    assert meter_mods(sent) == [(ofp.OFPMC_DELETE, ofp.OFPM_ALL),
                                (ofp.OFPMC_DELETE, 5), (ofp.OFPMC_ADD, 5),
                                (ofp.OFPMC_DELETE, 6), (ofp.OFPMC_ADD, 6)]
    table = FakeOFTable().apply(mods(sent))
    assert to_controller(table, 5).meters == [5] and to_controller(table, 6).meters == [6]


def test_without_an_answer_about_meters_the_ports_are_classified_anyway(monkeypatch):
    """OVS should always list its meters; if it does not within METERS_WAIT,
    the bound ports are classified (meters added) instead of left dark."""
    import midoflow.apps.agent as glue

    monkeypatch.setattr(glue, "METERS_WAIT", 0)
    monkeypatch.setattr(glue.hub, "sleep", lambda _s: None)
    api = worlds.two_hosts(*worlds.l2_bridge())
    a, sent = agent_on(api, fast=True), []
    dp = datapath(sent)
    a._features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    a.dp = dp
    (ask,) = [m for m in sent if isinstance(m, parser.OFPMeterConfigStatsRequest)]
    assert meter_mods(sent) == []
    sent.clear()
    a._meters_deadline(dp, ask.xid + 1)  # another request's deadline: nothing
    assert meter_mods(sent) == []
    a._meters_deadline(dp, ask.xid)
    assert sorted(meter_mods(sent)) == [(ofp.OFPMC_ADD, 5), (ofp.OFPMC_ADD, 6)]
    table = FakeOFTable().apply(pl.base_flows(pl.OFFLINE)).apply(mods(sent))
    assert to_controller(table, 5).meters == [5] and to_controller(table, 6).meters == [6]
    sent.clear()  # the answer arriving late changes nothing
    a._meter_config(SimpleNamespace(msg=SimpleNamespace(
        datapath=dp, xid=ask.xid, flags=0, body=table.meter_config())))
    assert meter_mods(sent) == []
