"""The OVSDB monitor (midoflow.apps.ovsdb) against a real ovsdb-server and
ovs-vswitchd of its own (midoflow.devenv.ovs): bindings by notification,
the agent's writes as IDL transactions, and reconnection after ovsdb-server
restarts."""

from __future__ import annotations

import os
import shutil
import time

import eventlet
import pytest
from eventlet.queue import Empty, Queue

from midoflow.apps.ovsdb import OvsdbMonitor, OvsError
from midoflow.devenv.ovs import PrivateOvs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ovs-vswitchd in a namespace)"),
    pytest.mark.skipif(not shutil.which("ovs-vswitchd"),
                       reason="needs Open vSwitch (apt-get install openvswitch-switch)"),
]

BR = "br-mon"


@pytest.fixture(scope="module")
def ovs():
    with PrivateOvs() as o:
        o.vsctl("add-br", BR, "--", "set", "Bridge", BR, "datapath_type=netdev")
        yield o


class Watched:
    """A monitor in a green thread, and the interfaces it reported, in order."""

    def __init__(self, ovs: PrivateOvs, bridge: str = BR) -> None:
        self.reports: Queue = Queue()
        self.mon = OvsdbMonitor(ovs.remote, bridge, on_change=self.reports.put)
        self.thread = eventlet.spawn(self.mon.run)

    def until(self, pred, timeout: float = 10) -> dict:
        """The first report (from now on, or the current state) that satisfies ``pred``."""
        if pred(self.mon.interfaces):
            return self.mon.interfaces
        deadline = eventlet.hubs.get_hub().clock() + timeout
        while True:
            left = deadline - eventlet.hubs.get_hub().clock()
            try:
                ifaces = self.reports.get(timeout=max(left, 0.001))
            except Empty:
                raise AssertionError(f"no such report in {timeout} s; last: "
                                     f"{self.mon.interfaces}") from None
            if pred(ifaces):
                return ifaces

    def close(self) -> None:
        self.mon.stop()
        self.thread.wait()


@pytest.fixture
def watched(ovs):
    w = Watched(ovs)
    yield w
    w.close()


def bound(name: str, iface_id: str):
    return lambda ifs: name in ifs and ifs[name][0] > 0 and ifs[name][1] == iface_id


def test_a_port_with_iface_id_is_reported_with_its_ofport(ovs, watched):
    watched.until(lambda ifs: "p1" not in ifs)
    ovs.vsctl("add-port", BR, "p1", "--", "set", "Interface", "p1", "type=internal",
              "external_ids:iface-id=vport-1")
    ifs = watched.until(bound("p1", "vport-1"))
    assert BR not in ifs  # the bridge's own interface is not a VM port
    ovs.vsctl("set", "Interface", "p1", "external_ids:iface-id=vport-2")
    watched.until(bound("p1", "vport-2"))
    ovs.vsctl("del-port", BR, "p1")
    watched.until(lambda ifs: "p1" not in ifs)


def test_tunnel_ports_and_added_ports_through_transactions(ovs, watched):
    watched.mon.ensure_tunnel_ports("10.9.0.1", "vx-t", "gre-t")
    ifs = watched.until(lambda ifs: ifs.get("vx-t", (0,))[0] == 1
                        and ifs.get("gre-t", (0,))[0] == 2)
    assert ifs["vx-t"] == (1, None)
    assert ovs.vsctl("get", "Interface", "vx-t", "options:local_ip").strip(' "\n') == "10.9.0.1"
    assert ovs.vsctl("get", "Interface", "gre-t", "type").strip() == "gre"
    # a port added from another green thread, as the BGP links are
    watched.mon.add_port("lnk1", {"midoflow-bgp-link": "uplink-1"}, type="internal")
    assert ovs.vsctl("get", "Interface", "lnk1",
                     "external_ids:midoflow-bgp-link").strip(' "\n') == "uplink-1"
    watched.until(lambda ifs: ifs.get("lnk1", (0,))[0] > 0)
    watched.mon.del_port("lnk1")
    assert "lnk1" not in ovs.vsctl("list-ifaces", BR).split()
    for name in ("vx-t", "gre-t"):
        watched.mon.del_port(name)


def test_no_bridge_says_what_to_do(ovs):
    w = Watched(ovs, bridge="br-absent")
    try:
        with pytest.raises(OvsError, match="add-br br-absent"):
            w.mon.add_port("x1", {"k": "v"}, timeout=5)
    finally:
        w.close()


def test_reconnects_after_ovsdb_server_restarts(ovs, watched):
    ovs.vsctl("add-port", BR, "p2", "--", "set", "Interface", "p2", "type=internal",
              "external_ids:iface-id=vport-3")
    watched.until(bound("p2", "vport-3"))
    ovs.kill_db()
    t0 = time.monotonic()
    with pytest.raises(OvsError, match="lost the connection"):
        watched.mon.add_port("p9", {"k": "v"}, type="internal")
    watched.mon.del_port("p9")  # queued: does not wait for a dead server
    assert time.monotonic() - t0 < 5
    ovs.start_db()
    ovs.vsctl("add-port", BR, "p3", "--", "set", "Interface", "p3", "type=internal",
              "external_ids:iface-id=vport-4")
    ifs = watched.until(bound("p3", "vport-4"))
    assert ifs["p2"][1] == "vport-3"  # the replica came back whole
    ovs.vsctl("del-port", BR, "p2", "--", "del-port", BR, "p3")
    watched.until(lambda ifs: "p2" not in ifs and "p3" not in ifs)
