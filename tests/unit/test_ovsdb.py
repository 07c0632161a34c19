"""The OVSDB monitor's pure parts: IDL rows -> the bridge's interfaces, the
wanted ports' comparison, and the green poller (midoflow.apps.ovsdb)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import eventlet
import pytest
from ovs import poller as ovs_poller

from midoflow.apps.ovsdb import GreenPoller, WantedPort, bridge_interfaces


def iface(name, ofport=(), **ext):
    """An Interface row as the IDL gives it: ofport is an optional integer
    ([] before OVS assigns one), external_ids a map."""
    return SimpleNamespace(name=name, ofport=list(ofport), external_ids=dict(ext))


def port(name, *ifaces):
    return SimpleNamespace(name=name, interfaces=list(ifaces))


def bridge(name, *ports):
    return SimpleNamespace(name=name, ports=list(ports))


def test_interfaces_of_the_bridge_with_ofport_and_iface_id():
    rows = [
        bridge("br-int",
               port("br-int", iface("br-int", [65534])),  # the bridge's own: left out
               port("tap1", iface("tap1", [5], **{"iface-id": "port-a"})),
               port("vxlan0", iface("vxlan0", [1])),
               port("tap2", iface("tap2"))),  # no ofport yet
        bridge("br-phy", port("eth0", iface("eth0", [1], **{"iface-id": "other"}))),
    ]
    assert bridge_interfaces(rows, "br-int") == {
        "tap1": (5, "port-a"), "vxlan0": (1, None), "tap2": (-1, None)}


def test_a_bond_port_lists_each_interface_and_a_failed_one_is_minus_one():
    rows = [bridge("br-int", port("bond0", iface("a", [3]), iface("b", [-1])))]
    assert bridge_interfaces(rows, "br-int") == {"a": (3, None), "b": (-1, None)}


def test_no_such_bridge_is_no_interfaces():
    assert bridge_interfaces([bridge("br-phy", port("x", iface("x", [1])))], "br-int") == {}


def test_wanted_port_compares_only_the_keys_it_sets():
    want = WantedPort("vxlan0", {"type": "vxlan", "ofport_request": [1],
                                 "options": {"key": "flow", "local_ip": "10.0.0.1"}})
    row = SimpleNamespace(type="vxlan", ofport_request=[1],
                          options={"key": "flow", "local_ip": "10.0.0.1", "remote_ip": "flow"})
    assert want.satisfied_by(row)
    row.options = {"key": "flow", "local_ip": "10.0.0.2", "remote_ip": "flow"}
    assert not want.satisfied_by(row)
    row.options["local_ip"] = "10.0.0.1"
    row.ofport_request = []
    assert not want.satisfied_by(row)


def test_green_poller_wakes_on_a_readable_fd_before_its_timer():
    r, w = os.pipe()
    try:
        p = GreenPoller()
        p.fd_wait(r, ovs_poller.POLLIN)
        p.timer_wait(5000)
        eventlet.spawn_after(0.05, os.write, w, b"x")
        t0 = time.monotonic()
        p.block()
        assert time.monotonic() - t0 < 2
    finally:
        os.close(r)
        os.close(w)


def test_green_poller_timer_lets_other_green_threads_run():
    ran = []
    eventlet.spawn(ran.append, 1)
    p = GreenPoller()
    p.timer_wait(30)
    p.timer_wait(1000)  # the smallest wins
    t0 = time.monotonic()
    p.block()
    assert ran == [1] and 0.02 <= time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("call", ["immediate_wake", "past"])
def test_green_poller_immediate(call):
    p = GreenPoller()
    p.timer_wait(1000)
    if call == "immediate_wake":
        p.immediate_wake()
    else:
        from ovs import timeval
        p.timer_wait_until(timeval.msec() - 10)
    t0 = time.monotonic()
    p.block()
    assert time.monotonic() - t0 < 0.1
