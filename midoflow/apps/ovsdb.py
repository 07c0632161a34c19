"""The local OVS through the OVSDB IDL of the ``ovs`` library.

:class:`OvsdbMonitor` keeps a replica of the bridge's ports and interfaces,
updated by ovsdb-server's monitor notifications (no polling), and reports the
bridge's interfaces, ``name -> (ofport, external_ids:iface-id)``, whenever
they change: a binding is known as soon as OVS assigns its ofport. The few
writes the agent makes (its tunnel ports, the BGP links) are *wanted ports*
that the monitor's thread reconciles through IDL transactions, again after
every reconnection.

Everything runs in one eventlet green thread (:meth:`OvsdbMonitor.run`): the
IDL is driven with its ``run``/``wait`` protocol and a poller that waits in
eventlet's ``select`` (:class:`GreenPoller`), so it never blocks os-ken's hub;
the IDL's reconnecting session brings the replica back after ovsdb-server
restarts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import eventlet
from eventlet.green import select as gselect
from ovs import poller as ovs_poller
from ovs import timeval
from ovs.db import idl as ovs_idl

LOG = logging.getLogger(__name__)
# the wake-up pipe is non-blocking: eventlet's green os.read would wait instead of
# raising BlockingIOError
_os = eventlet.patcher.original("os")

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
COLUMNS = {
    "Bridge": ["name", "ports"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "ofport", "external_ids", "type", "options", "ofport_request"],
}
RECONNECT_BACKOFF_MS = (100, 1000)  # ovs' default tops out at 8 s
Interfaces = dict[str, tuple[int, "str | None"]]


class OvsError(RuntimeError):
    pass


# ---- pure: rows -> interfaces ----------------------------------------------
def bridge_interfaces(bridges, bridge: str) -> Interfaces:
    """The interfaces of the bridge named ``bridge`` among the IDL's Bridge
    rows, as ``ovs-vsctl list-ifaces`` lists them (the bridge's own internal
    interface left out): name -> (ofport or -1, external_ids:iface-id)."""
    out: Interfaces = {}
    for br in bridges:
        if br.name != bridge:
            continue
        for port in br.ports:
            for iface in port.interfaces:
                if iface.name == bridge:
                    continue
                ofport = iface.ofport  # optional integer: [] or [n]
                if isinstance(ofport, list):
                    ofport = ofport[0] if ofport else -1
                out[iface.name] = (ofport if isinstance(ofport, int) else -1,
                                   dict(iface.external_ids).get("iface-id"))
    return out


@dataclass
class WantedPort:
    """A port (of one interface) the agent wants on the bridge: ``columns`` are
    Interface columns; for map columns only the given keys are set."""

    name: str
    columns: dict = field(default_factory=dict)

    def satisfied_by(self, iface) -> bool:
        for col, want in self.columns.items():
            have = getattr(iface, col)
            if isinstance(want, dict):
                if any(dict(have).get(k) != v for k, v in want.items()):
                    return False
            elif have != want:
                return False
        return True


# ---- the green poller ------------------------------------------------------
class GreenPoller:
    """``ovs.poller.Poller``'s interface, blocking in eventlet's select: only
    the calling green thread waits."""

    def __init__(self) -> None:
        self.rlist: list[int] = []
        self.wlist: list[int] = []
        self.timeout: float | None = None  # seconds; None: until an fd is ready

    def fd_wait(self, fd, events: int) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        if events & ovs_poller.POLLIN:
            self.rlist.append(fd)
        if events & ovs_poller.POLLOUT:
            self.wlist.append(fd)

    def timer_wait(self, msec: float) -> None:
        s = max(msec, 0) / 1000.0
        self.timeout = s if self.timeout is None else min(self.timeout, s)

    def timer_wait_until(self, msec: float) -> None:
        self.timer_wait(msec - timeval.msec())

    def immediate_wake(self) -> None:
        self.timeout = 0.0

    def block(self) -> None:
        if self.timeout == 0.0:
            eventlet.sleep(0)
            return
        try:
            gselect.select(self.rlist, self.wlist, [], self.timeout)
        except (OSError, ValueError) as e:  # an fd closed under us: run() sorts it out
            LOG.debug("OVSDB poll: %s", e)


# ---- the monitor -----------------------------------------------------------
class OvsdbMonitor:
    """The bridge ``bridge`` of the OVSDB at ``remote`` (e.g.
    ``unix:/run/openvswitch/db.sock``); ``on_change(interfaces)`` is called in
    the monitor's green thread after each change of the bridge's interfaces."""

    def __init__(self, remote: str, bridge: str,
                 on_change: Callable[[Interfaces], None] = lambda _i: None,
                 schema: str = SCHEMA) -> None:
        if not os.path.exists(schema):
            raise OvsError(f"OVSDB schema {schema} not found: install openvswitch-common")
        helper = ovs_idl.SchemaHelper(location=schema)
        for table, cols in COLUMNS.items():
            helper.register_columns(table, cols)
        self.remote = remote
        self.bridge = bridge
        self.on_change = on_change
        self.idl = ovs_idl.Idl(remote, helper)
        self.idl._session.reconnect.set_backoff(*RECONNECT_BACKOFF_MS)
        self.interfaces: Interfaces = {}
        self.wanted: dict[str, WantedPort] = {}
        self.unwanted: set[str] = set()
        self._txn: ovs_idl.Transaction | None = None
        self._txn_names: set[str] = set()
        self._waiters: list[eventlet.Event] = []
        self._errors: dict[str, str] = {}
        self._running = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.bridge_missing = False

    # -- the green thread ----------------------------------------------------
    def run(self) -> None:
        """Drive the IDL until :meth:`stop` (the body of a green thread)."""
        self._running = True
        try:
            while self._running:
                try:
                    self.run_once()
                except Exception:  # a bug here must not end the bindings for good
                    LOG.exception("OVSDB monitor step failed")
                    eventlet.sleep(1)
                poller = GreenPoller()
                self.idl.wait(poller)
                if self._txn is not None:
                    self._txn.wait(poller)
                poller.fd_wait(self._wake_r, ovs_poller.POLLIN)
                poller.block()
                self._drain_wake()
        finally:
            self.idl.close()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def stop(self) -> None:
        self._running = False
        self.wake()

    def wake(self) -> None:
        try:
            _os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (or closed)

    def _drain_wake(self) -> None:
        try:
            while _os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def run_once(self) -> None:
        """One IDL step: take in notifications, report a change, move the
        wanted ports' transaction on."""
        self.idl.run()
        if not self.idl.has_ever_connected():
            return
        ifaces = bridge_interfaces(self.idl.tables["Bridge"].rows.values(), self.bridge)
        if ifaces != self.interfaces:
            self.interfaces = ifaces
            try:
                self.on_change(dict(ifaces))
            except Exception:
                LOG.exception("handling the bridge's interfaces failed")
        self._reconcile()

    @property
    def connected(self) -> bool:
        """Connected, and the replica is in step (monitoring) again."""
        return self.idl._session.is_connected() and self.idl.state == self.idl.IDL_S_MONITORING

    # -- wanted ports ----------------------------------------------------------
    def want_port(self, name: str, **columns) -> None:
        """Keep a port ``name`` with these Interface columns on the bridge."""
        self._errors.pop(name, None)  # a new request: try again
        self.unwanted.discard(name)
        self.wanted[name] = WantedPort(name, columns)
        self.wake()

    def unwant_port(self, name: str) -> None:
        """Remove the port ``name`` from the bridge (if it is there)."""
        self._errors.pop(name, None)
        self.wanted.pop(name, None)
        self.unwanted.add(name)
        self.wake()

    def ensure_tunnel_ports(self, local_ip: str, vxlan: str, gre: str) -> None:
        """One VXLAN and one GRE port; remote IP and key are set per flow."""
        for name, kind, req in ((vxlan, "vxlan", 1), (gre, "gre", 2)):
            self.want_port(name, type=kind, ofport_request=[req],
                           options={"remote_ip": "flow", "key": "flow", "local_ip": local_ip})

    def add_port(self, name: str, external_ids: dict[str, str], timeout: float = 10,
                 **columns) -> None:
        """Add ``name`` (an existing kernel interface unless ``columns`` give
        another type) to the bridge; returns once OVSDB has it (call it from
        another green thread than the monitor's)."""
        self.want_port(name, external_ids=dict(external_ids), **columns)
        self.wait_reconciled(name, timeout)

    def del_port(self, name: str, timeout: float = 10) -> None:
        """Remove ``name``; waits for OVSDB only while connected (else it goes
        once the connection is back: a dead OVS must not hold up a shutdown)."""
        self.unwant_port(name)
        if self.idl._session.is_connected():
            self.wait_reconciled(name, timeout)

    def ofport(self, name: str) -> int:
        return self.interfaces.get(name, (-1, None))[0]

    def wait_reconciled(self, name: str, timeout: float) -> None:
        """Wait until the monitor's replica shows the wanted state of ``name``."""
        deadline = timeval.msec() / 1000.0 + timeout
        while not self._reconciled(name):
            if name in self._errors:
                raise OvsError(f"OVSDB at {self.remote}: port {name}: {self._errors[name]}")
            if self.idl.has_ever_connected() and not self.idl._session.is_connected():
                raise OvsError(f"lost the connection to OVSDB at {self.remote} (reconnecting): "
                               f"is ovsdb-server running?")
            if self.bridge_missing:
                raise OvsError(f"OVSDB at {self.remote} has no bridge {self.bridge}: create "
                               f"it (ovs-vsctl add-br {self.bridge})")
            left = deadline - timeval.msec() / 1000.0
            if left <= 0:
                raise OvsError(f"OVSDB at {self.remote} did not confirm port {name} on "
                               f"{self.bridge} within {timeout:g} s: is ovsdb-server running "
                               f"and does the bridge exist?")
            ev = eventlet.Event()
            self._waiters.append(ev)
            ev.wait(timeout=min(left, 1.0))

    def _iface_rows(self) -> dict:
        for br in self.idl.tables["Bridge"].rows.values():
            if br.name == self.bridge:
                return {i.name: (p, i) for p in br.ports for i in p.interfaces}
        return {}

    def _reconciled(self, name: str) -> bool:
        if not self.idl.has_ever_connected() or (self._txn is not None
                                                 and name in self._txn_names):
            return False
        rows = self._iface_rows()
        if name in self.unwanted:
            return name not in rows
        want = self.wanted.get(name)
        return want is None or (name in rows and want.satisfied_by(rows[name][1]))

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for ev in waiters:
            ev.send(True)

    def _reconcile(self) -> None:
        if self._txn is not None:
            status = self._txn.commit()
            if status == ovs_idl.Transaction.INCOMPLETE:
                return
            if status == ovs_idl.Transaction.TRY_AGAIN:  # the replica was stale: redo
                LOG.debug("OVSDB transaction on %s: try again", self.bridge)
            elif status not in (ovs_idl.Transaction.SUCCESS, ovs_idl.Transaction.UNCHANGED):
                err = f"{status}: {self._txn.get_error()}"
                LOG.warning("OVSDB transaction on %s (%s) failed: %s", self.bridge,
                            ", ".join(sorted(self._txn_names)), err)
                self._errors.update({n: err for n in self._txn_names})
            self._txn, self._txn_names = None, set()
            self._notify()
        if not self.connected:
            self._notify()  # waiters re-check: a lost connection fails them at once
            return
        bridge = next((b for b in self.idl.tables["Bridge"].rows.values()
                       if b.name == self.bridge), None)
        self.bridge_missing = bridge is None
        if bridge is None:
            self._notify()
            return
        rows = self._iface_rows()
        self.unwanted &= set(rows)  # gone: nothing more to do
        todo = set(self.unwanted)
        todo |= {n for n, w in self.wanted.items()
                 if n not in rows or not w.satisfied_by(rows[n][1])}
        todo -= set(self._errors)
        if todo:
            self._start_txn(bridge, rows, todo)
        self._notify()

    def _start_txn(self, bridge, rows: dict, names: set[str]) -> None:
        txn = ovs_idl.Transaction(self.idl)
        txn.add_comment(f"midoflow: ports {', '.join(sorted(names))}")
        for name in names:
            if name in self.unwanted:
                port = rows[name][0]
                bridge.delvalue("ports", port)
                continue
            want = self.wanted[name]
            if name in rows:
                iface = rows[name][1]
            else:
                iface = txn.insert(self.idl.tables["Interface"])
                iface.name = name
                port = txn.insert(self.idl.tables["Port"])
                port.name = name
                port.interfaces = [iface]
                bridge.addvalue("ports", port)
            for col, value in want.columns.items():
                if isinstance(value, dict):
                    for k, v in value.items():
                        iface.setkey(col, k, v)
                else:
                    setattr(iface, col, value)
        self._txn, self._txn_names = txn, set(names)
        txn.commit()  # sent; the reply is taken in by a later run_once()
        self.wake()
