"""The gateway's BGP speaker: os-ken's ``BGPSpeaker`` driven from the topology.

Thin glue around :mod:`midoflow.bgp.policy`. One speaker per agent process
(os-ken keeps a module-level core), with a neighbour for every BGP peer of
every uplink bound on this host. :meth:`BgpManager.reconcile` brings the
speaker, the BGP links (:mod:`midoflow.bgp.link`) and the learned routes in
the store in line with the configuration; os-ken's handlers only feed the
route learner and wake the reconciler.

Designed around os-ken's quirks: ECMP comes from ``adj_rib_in_change_handler``
(best-path keeps one path); ``peer_up_handler`` names the peer by router-id
while ``peer_down_handler`` names it by address, so sessions are followed by
polling the neighbours' states instead; our own prefixes are denied inbound
(otherwise ``prefix_del`` may send no withdraw); the keepalive interval,
which os-ken fixes at a third of the hold time, is set on the session once
it is up; os-ken refuses a connect-retry time under 10 s, so the configured
one is put in after its validation.

Under a real table (see :mod:`midoflow.bgp.table`): prefixes over a peer's
limit are kept and learned when room frees up; a session that drops leaves
its routes stale for ``stale_time`` s, so a short reset rewrites nothing;
learned routes reach the store in batches (one ZooKeeper multi per few
hundred: the agents watching them see one change). The status tells the
session's history: since when in its state, flaps, the last error (a
notification sent or received, a refused connection...) and the counters
of the peer's table. The speaker also listens (port 179 in the BGP
namespace), so a border router that connects first is accepted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from midoflow.bgp import link as bgplink
from midoflow.bgp.policy import MAX_PREFIXES_PER_PEER, LearnedRoute, PeerPolicy, RouteLearner
from midoflow.bgp.table import SessionRecord
from midoflow.errors import MidoflowError
from midoflow.model import DEVICE_ROUTER, PORT_EXTERIOR
from midoflow.store import paths

LOG = logging.getLogger("midoflow.bgp")
STALE_TIME = 10.0  # s a dropped session's routes are kept (graceful restart's stale timer)
ERROR_SHADOW = 2.0  # s a connection-lost reason does not replace a more telling error
SETTLE = 0.05  # s without a new path before the learned routes are written...
SETTLE_MAX = 0.3  # ...waiting at most this long while a table keeps arriving


@dataclass(frozen=True)
class PeerConf:
    """One neighbour as the speaker needs it (from a bgp_peers object and its port)."""

    peer_id: str
    port_id: str
    router_id: str
    local_ip: str
    prefix_len: int
    mac: str
    local_as: int
    peer_address: str
    peer_as: int
    keepalive: int
    hold_time: int
    connect_retry: int


def desired(cache, bound: set[str]) -> tuple[dict[str, PeerConf], dict[str, set[str]]]:
    """(peer address -> PeerConf, uplink port -> prefixes to advertise) for
    the uplinks bound on this host. A second peer with the same address on
    another local uplink is left out (os-ken keys neighbours by address)."""
    peers: dict[str, PeerConf] = {}
    for bp in sorted(cache.bgp_peers.values(), key=lambda p: p.id):
        port = cache.ports.get(bp.port_id)
        if (bp.port_id not in bound or port is None or port.device_type != DEVICE_ROUTER
                or port.type != PORT_EXTERIOR or not port.ip_address or not port.mac):
            continue
        if bp.peer_address in peers:
            LOG.warning("BGP peer %s: address %s is already a peer of port %s; ignored",
                        bp.id, bp.peer_address, peers[bp.peer_address].port_id)
            continue
        peers[bp.peer_address] = PeerConf(
            bp.id, bp.port_id, port.device_id, port.ip_address, int(port.prefix_len or 32),
            port.mac, bp.local_as, bp.peer_address, bp.peer_as, bp.keepalive, bp.hold_time,
            bp.connect_retry)
    ports = {p.port_id for p in peers.values()}
    nets: dict[str, set[str]] = {pid: set() for pid in ports}
    for n in cache.bgp_networks.values():
        if n.port_id in ports:
            nets[n.port_id].add(n.prefix)
    return peers, nets


class BgpManager:
    def __init__(self, cache, store, host_id: str, switch: bgplink.Switch,
                 ovs_netns: str | None, bindings: Callable[[], dict[str, int]],
                 on_links: Callable[[dict[str, tuple[int, int, str]]], None],
                 max_prefixes: int = MAX_PREFIXES_PER_PEER, stale_time: float = STALE_TIME,
                 batch: bool = True, listen: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.store = store
        self.host_id = host_id
        self.switch = switch  # the local OVS bridge (the agent's OVSDB monitor)
        self.ovs_netns = ovs_netns or None
        self.netns = bgplink.namespace_name(host_id)  # where the sessions' sockets live
        self.bindings = bindings
        self.on_links = on_links  # uplink port -> (link ofport, uplink ofport, ip)
        self.learner = RouteLearner(stale_time=stale_time)
        self.max_prefixes = max_prefixes
        self.batch = batch  # False: one store call per route (the old path, for benchmarks)
        self.listen = listen
        self.clock = clock
        self.sessions: dict[str, SessionRecord] = {}  # peer address -> its record
        self.route_writes = 0  # learned-route nodes created or deleted (benchmarks)
        self.settle = SETTLE  # 0: write at once (unit tests)
        self._last_path = 0.0  # time.monotonic() of the last path event
        self.speaker = None
        self.peers: dict[str, PeerConf] = {}  # address -> conf, as given to os-ken
        self.advertised: set[str] = set()
        self._own: frozenset[str] | None = None  # own prefixes last given to the learner
        self.filters: dict[str, tuple] = {}  # peer address -> (deny in, permit out) as set
        self.links: dict[str, bgplink.LinkSpec] = {}
        self.link_flows: dict[str, tuple[int, int, str]] = {}
        self.written: dict[LearnedRoute, str] = {}  # route -> its entry path
        self.states: dict[str, dict] = {}  # peer id -> last written state
        self.kick: Callable[[], None] = lambda: None  # set by the agent: wake reconcile
        # (local AS, router id, manager) -> the speaker; tests give a fake one
        self.make_speaker: Callable[..., object] = OsKenSpeaker
        self.errors: dict[str, str] = {}

    # ---- os-ken handlers (green threads of the BGP core) -------------------
    def _on_path(self, ev, peer_ip: str, peer_as: int) -> None:
        try:
            from os_ken.lib.packet import bgp

            if ev.prefix is None or ":" in str(ev.prefix):
                return
            if ev.is_withdraw:
                self.learner.withdraw(peer_ip, ev.prefix)
            else:
                path = ev.path
                asp = path.get_pattr(bgp.BGP_ATTR_TYPE_AS_PATH)
                lp = path.get_pattr(bgp.BGP_ATTR_TYPE_LOCAL_PREF)
                origin = path.get_pattr(bgp.BGP_ATTR_TYPE_ORIGIN)
                med = path.get_pattr(bgp.BGP_ATTR_TYPE_MULTI_EXIT_DISC)
                first_as = peer_as
                if asp is not None and asp.value and asp.value[0]:
                    seg = asp.value[0]
                    first_as = next(iter(seg)) if not isinstance(seg, list) else seg[0]
                self.learner.update(
                    peer_ip, ev.prefix, ev.nexthop,
                    as_path_len=asp.get_as_path_len() if asp is not None else 0,
                    local_pref=lp.value if lp is not None else 100,
                    origin=origin.value if origin is not None else 0,
                    med=med.value if med is not None else 0,
                    neighbour_as=int(first_as))
        except Exception:  # a strange path must not stop the BGP core
            LOG.exception("BGP path from %s not understood", peer_ip)
        self._last_path = time.monotonic()
        self.kick()

    def _on_down(self, peer_ip: str, _remote_as: int) -> None:
        stale = self.learner.stale_time
        LOG.info("BGP session to %s down%s", peer_ip,
                 f": its routes kept {stale:g} s as stale" if stale else "")
        self.learner.peer_down(peer_ip, self.clock())
        self.kick()

    def _on_error(self, peer_ip: str, text: str, weak: bool = False) -> None:
        """Something went wrong with the session to ``peer_ip`` (os-ken glue).
        ``weak``: a bare connection-lost reason, which does not replace an
        error recorded just before (the notification that caused it)."""
        rec = self.sessions.get(peer_ip)
        if rec is None:
            return
        now = self.clock()
        if weak and rec.last_error_at is not None and now - rec.last_error_at < ERROR_SHADOW:
            return
        if rec.last_error != text:
            LOG.warning("BGP peer %s: %s", peer_ip, text)
        rec.error(text, now)
        self.kick()

    def _on_up(self, router_id: str, remote_as: int) -> None:
        LOG.info("BGP session up with router-id %s (AS %s)", router_id, remote_as)
        self.kick()

    # ---- reconcile -----------------------------------------------------------
    def reconcile(self) -> None:
        bound = self.bindings()
        peers, nets = desired(self.cache, set(bound))
        self._reconcile_links(peers, bound)
        ready = {a: pc for a, pc in peers.items() if pc.port_id in self.link_flows}
        if ready and self.speaker is None:
            first = next(iter(ready.values()))
            self.speaker = self.make_speaker(first.local_as, first.local_ip, self)
            LOG.info("BGP speaker started: AS %s, router-id %s", first.local_as,
                     first.local_ip)
        if self.speaker is not None:
            self._reconcile_neighbours(ready, nets)
        own = frozenset(n.prefix for n in self.cache.bgp_networks.values())
        if own != self._own:  # every second otherwise: only when it changed
            self.learner.set_own(own)
            self._own = own
        self.learner.expire(self.clock())
        self._settle()
        self._write_routes()
        self._write_states()

    def _reconcile_links(self, peers: dict[str, PeerConf], bound: dict[str, int]) -> None:
        want: dict[str, bgplink.LinkSpec] = {}
        for pc in peers.values():
            want[pc.port_id] = bgplink.LinkSpec(pc.port_id, pc.mac, pc.local_ip, pc.prefix_len)
        changed = False
        for pid, spec in list(self.links.items()):
            if want.get(pid) != spec:
                bgplink.remove(spec, self.switch, self.netns)
                del self.links[pid]
                changed |= self.link_flows.pop(pid, None) is not None
        for pid, spec in want.items():
            if pid not in self.links:
                try:
                    bgplink.create(spec, self.switch, self.netns, self.ovs_netns)
                    self.links[pid] = spec
                    self.errors.pop(pid, None)
                except (bgplink.LinkError, Exception) as e:
                    if self.errors.get(pid) != str(e):
                        LOG.error("BGP link for uplink %s: %s", pid, e)
                    self.errors[pid] = str(e)
                    continue
            ofp = bgplink.ofport(self.switch, spec)
            entry = (ofp, bound[pid], spec.ip)
            if ofp > 0 and self.link_flows.get(pid) != entry:
                self.link_flows[pid] = entry
                changed = True
        if changed:
            self.on_links(dict(self.link_flows))

    def _reconcile_neighbours(self, ready: dict[str, PeerConf], nets) -> None:
        for addr, pc in list(self.peers.items()):
            if ready.get(addr) != pc:
                try:
                    self.speaker.del_neighbour(addr)
                except Exception as e:
                    LOG.warning("BGP neighbour %s: %s", addr, e)
                del self.peers[addr]
                self.filters.pop(addr, None)
                if ready.get(addr) is None or ready[addr].peer_id != pc.peer_id:
                    self.learner.remove_peer(addr)
                    self.sessions.pop(addr, None)
                    self._drop_state(pc.peer_id)
                else:  # the same peer made again (new timers): like a reset
                    self.learner.peer_down(addr, self.clock())
        added = False
        for addr, pc in ready.items():
            if addr not in self.peers:
                self.learner.set_peer(addr, PeerPolicy(
                    pc.port_id, connected=f"{pc.local_ip}/{pc.prefix_len}",
                    max_prefixes=self.max_prefixes))
                rec = self.sessions.setdefault(addr, SessionRecord(since=self.clock()))
                rec.rebase()
                try:
                    self.speaker.add_neighbour(pc)
                    LOG.info("BGP neighbour %s (AS %s) added for uplink %s, hold %s s",
                             pc.peer_address, pc.peer_as, pc.port_id, pc.hold_time)
                except Exception as e:
                    LOG.error("BGP neighbour %s: %s", addr, e)
                    continue
                self.peers[addr] = pc
                added = True
        if added and self.peers:
            self.speaker.set_retry(min(pc.connect_retry for pc in self.peers.values()))
        # the networks of the uplinks that have a neighbour up in os-ken
        want = set().union(*(nets.get(pid, set()) for pid in
                             {pc.port_id for pc in self.peers.values()}))
        # Withdraw before changing the filters, announce after.
        for p in sorted(self.advertised - want):
            self.speaker.prefix_del(p)
            self.advertised.discard(p)
            LOG.info("BGP: withdrew %s", p)
        own = tuple(sorted({n.prefix for n in self.cache.bgp_networks.values()}))
        for pc in self.peers.values():
            # out: deny what this speaker advertises for its other uplinks only
            # (os-ken's out filter also stops withdraws: a catch-all deny
            # would keep a removed range announced)
            f = (own, tuple(sorted(want - nets.get(pc.port_id, set()))))
            if self.filters.get(pc.peer_address) == f:
                continue
            try:
                self.speaker.set_filters(pc.peer_address, list(f[0]), list(f[1]))
                self.filters[pc.peer_address] = f
            except Exception as e:
                LOG.warning("BGP filters for %s: %s", pc.peer_address, e)
        for p in sorted(want - self.advertised):
            self.speaker.prefix_add(p)
            self.advertised.add(p)
            LOG.info("BGP: advertising %s", p)

    def _settle(self) -> None:
        """While a table is arriving (a path less than ``settle`` s ago), wait
        a little, up to SETTLE_MAX: the routes then go to the store in one
        batch, and the agents see one change instead of one per path. The
        wait yields (time.sleep is green in the agent: osken-manager patches it)."""
        if self.settle <= 0:
            return
        end = time.monotonic() + SETTLE_MAX
        while True:
            now = time.monotonic()
            quiet = now - self._last_path
            if quiet >= self.settle or now >= end:
                return
            time.sleep(min(self.settle - quiet, end - now))

    def _write_routes(self) -> None:
        """Bring the learned-route nodes in line with the learner: only what
        changed is written, in batches (one store call for all when ``batch``)."""
        want = set().union(*self.learner.routes().values()) if self.peers else set()
        gone = sorted(set(self.written) - want, key=str)
        new: list[tuple[LearnedRoute, str]] = []
        for r in sorted(want - set(self.written), key=str):
            port = self.cache.ports.get(r.port_id)
            if port is not None:
                new.append((r, paths.learned_route_entry(port.device_id, r.dst_cidr, r.gateway,
                                                         r.port_id, r.weight)))
        if gone:
            if self.batch:
                try:
                    self.store.delete_states([self.written[r] for r in gone])
                    for r in gone:
                        del self.written[r]
                    self.route_writes += len(gone)
                except MidoflowError as e:
                    LOG.warning("cannot remove %d learned routes: %s", len(gone), e)
            else:
                for r in gone:
                    try:
                        self.store.delete_state(self.written[r])
                        del self.written[r]
                        self.route_writes += 1
                    except MidoflowError as e:
                        LOG.warning("cannot remove learned route %s: %s", r, e)
        if new:
            data = {"host_id": self.host_id, "at": self.clock()}
            if self.batch:
                try:
                    self.store.put_states([(path, data) for _, path in new], ephemeral=True)
                    self.written.update(new)
                    self.route_writes += len(new)
                except MidoflowError as e:
                    LOG.warning("cannot record %d learned routes: %s", len(new), e)
            else:
                for r, path in new:
                    try:
                        self.store.put_state(path, data, ephemeral=True)
                        self.written[r] = path
                        self.route_writes += 1
                    except MidoflowError as e:
                        LOG.warning("cannot record learned route %s: %s", r, e)

    def _write_states(self) -> None:
        states = self.speaker.states(list(self.peers)) if self.speaker is not None else {}
        now = self.clock()
        for addr, pc in self.peers.items():
            st = states.get(addr, "idle")
            st, transitions = (st, None) if isinstance(st, str) else st
            rec = self.sessions.setdefault(addr, SessionRecord(since=now))
            prev = self.states.get(pc.peer_id)
            was_up = prev is not None and prev["state"] == "established"
            rec.observe(st, now, transitions)
            if st == "established" and not was_up:
                self.speaker.set_keepalive(pc.peer_address, pc.keepalive)
            data = {"host_id": self.host_id, "address": addr, **rec.status(),
                    **self.learner.counters(addr),
                    "prefixes_advertised": len(self.advertised)}
            if prev == data:
                continue
            try:
                self.store.put_state(paths.bgp_peer_state(pc.peer_id), data, ephemeral=True)
                self.states[pc.peer_id] = data
            except MidoflowError as e:
                LOG.warning("cannot publish BGP peer state: %s", e)

    def _drop_state(self, peer_id: str) -> None:
        self.states.pop(peer_id, None)
        try:
            self.store.delete_state(paths.bgp_peer_state(peer_id))
        except MidoflowError:
            pass

    def stop(self) -> None:
        """Close the sessions and remove the links (the agent is stopping)."""
        if self.speaker is not None:
            for addr in list(self.peers):
                try:
                    self.speaker.del_neighbour(addr)
                except Exception:
                    pass
        for spec in self.links.values():
            try:
                bgplink.remove(spec, self.switch, self.netns)
            except Exception:
                pass
        if self.links:
            bgplink.remove_namespace(self.netns)


NOTIFICATION_CODES = {1: "message header error", 2: "OPEN message error",
                      3: "UPDATE message error", 4: "hold timer expired",
                      5: "finite state machine error", 6: "cease"}


def notification_text(code, subcode, reason) -> str:
    """A NOTIFICATION as a person reads it: os-ken's reason when it has one
    ("Open Message Error: bad peer AS"), else the code's name."""
    if reason:
        return str(reason)
    name = NOTIFICATION_CODES.get(code, f"error code {code}")
    return f"{name} (subcode {subcode})" if subcode else name


def _can_listen(netns: str, port: int) -> bool:
    """Whether a listening socket on ``port`` can be bound in ``netns`` now."""
    import socket as pysocket

    try:
        s = bgplink.socket_in(netns)
    except Exception:
        return False
    try:
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class _NamespacedSockets:
    """Stands for the ``socket`` module in os-ken's BGP code: the same, except
    that new sockets are made in the BGP namespace."""

    def __init__(self, real, netns: str) -> None:
        self._real = real
        self._netns = netns

    def socket(self, family=None, type=None, *args):  # noqa: A002 (socket's own names)
        return bgplink.socket_in(self._netns, family or self._real.AF_INET,
                                 type or self._real.SOCK_STREAM)

    def __getattr__(self, name: str):
        return getattr(self._real, name)


class OsKenSpeaker:
    """The one os-ken ``BGPSpeaker`` of this process, behind the few calls the
    manager makes (a fake stands in for it in unit tests)."""

    def __init__(self, local_as: int, router_id: str, mgr: BgpManager) -> None:
        from os_ken.services.protocols.bgp import base as bgpbase
        from os_ken.services.protocols.bgp.bgpspeaker import BGPSpeaker

        # the sessions' sockets are made in the BGP namespace (midoflow.bgp.link)
        if not isinstance(bgpbase.socket, _NamespacedSockets):
            bgpbase.socket = _NamespacedSockets(bgpbase.socket, mgr.netns)
        # Sessions are opened actively (retried every connect_retry s) and
        # accepted on port 179 in the BGP namespace (a border router that
        # connects first). os-ken's core dies if it cannot bind its listening
        # socket: a probe first, and no listening at all if it fails.
        self.mgr = mgr
        port = 179 if mgr.listen and _can_listen(mgr.netns, 179) else 0
        if mgr.listen and not port:
            LOG.warning("BGP: cannot listen on port 179 in %s: only sessions this gateway "
                        "opens will come up", mgr.netns)
        self.bgp = BGPSpeaker(
            as_number=local_as, router_id=router_id, bgp_server_port=port,
            bgp_server_hosts=("0.0.0.0",),
            adj_rib_in_change_handler=mgr._on_path,
            peer_down_handler=mgr._on_down, peer_up_handler=mgr._on_up)

    @staticmethod
    def _core():
        from os_ken.services.protocols.bgp.core_manager import CORE_MANAGER

        return CORE_MANAGER.get_core_service()

    def add_neighbour(self, pc: PeerConf) -> None:
        """``neighbor_add`` plus the hold time, a neighbour setting os-ken
        has but does not take there (and validates to 10 s or more)."""
        from os_ken.services.protocols.bgp.api.base import call
        from os_ken.services.protocols.bgp.rtconf import base as rtbase
        from os_ken.services.protocols.bgp.rtconf import neighbors

        call("neighbor.create", **{
            neighbors.IP_ADDRESS: pc.peer_address, neighbors.REMOTE_AS: pc.peer_as,
            neighbors.LOCAL_AS: pc.local_as, rtbase.HOLD_TIME: max(pc.hold_time, 10),
            neighbors.CONNECT_MODE: neighbors.CONNECT_MODE_BOTH,
            rtbase.CAP_MBGP_IPV4: True, rtbase.CAP_MBGP_IPV6: False,
            rtbase.CAP_MBGP_VPNV4: False, rtbase.CAP_MBGP_VPNV6: False,
            rtbase.CAP_MBGP_EVPN: False, rtbase.CAP_ENHANCED_REFRESH: False,
            rtbase.CAP_FOUR_OCTET_AS_NUMBER: True,
        })
        if pc.hold_time < 10:
            # os-ken's validator wants 10 s or more; RFC 4271 allows 3 (and 0).
            # The session's OPEN is sent a second later: set it before then.
            from os_ken.services.protocols.bgp.core_manager import CORE_MANAGER

            conf = CORE_MANAGER.neighbors_conf.get_neighbor_conf(pc.peer_address)
            conf._settings[rtbase.HOLD_TIME] = pc.hold_time
        self._watch_errors(pc.peer_address)

    def _watch_errors(self, address: str) -> None:
        """Tell the manager why a session failed: os-ken only logs it. Its
        signal bus carries notifications sent and received; a refused or
        timed-out connection and a lost one are seen around the peer's own
        methods (per instance: nothing of os-ken's classes changes)."""
        from os_ken.services.protocols.bgp.signals.emit import BgpSignalBus

        peer = self._core().peer_manager.get_by_addr(address)
        if peer is None:
            return
        mgr = self.mgr
        bus = peer._signal_bus
        bus.register_listener(("error", "bgp", peer), lambda _i, data: mgr._on_error(
            address, "notification sent: " + notification_text(
                data.get("code"), data.get("subcode"), data.get("reason"))))
        bus.register_listener(BgpSignalBus.BGP_NOTIFICATION_RECEIVED + (peer,),
                              lambda _i, msg: mgr._on_error(
                                  address, "notification received: " + notification_text(
                                      getattr(msg, "error_code", None),
                                      getattr(msg, "error_subcode", None),
                                      getattr(msg, "reason", None))))
        connect, lost = peer._connect_tcp, peer.connection_lost

        def connect_tcp(peer_addr, *args, **kw):
            try:
                return connect(peer_addr, *args, **kw)
            except OSError as e:
                why = os.strerror(e.errno) if e.errno else (str(e) or "timed out")
                mgr._on_error(address, f"connection to {peer_addr[0]} port {peer_addr[1]} "
                              f"failed: {why}")
                raise

        def connection_lost(reason):
            mgr._on_error(address, f"connection lost: {reason}", weak=True)
            return lost(reason)

        peer._connect_tcp = connect_tcp
        peer.connection_lost = connection_lost

    def del_neighbour(self, address: str) -> None:
        self.bgp.neighbor_del(address)

    def prefix_add(self, prefix: str) -> None:
        self.bgp.prefix_add(prefix)

    def prefix_del(self, prefix: str) -> None:
        self.bgp.prefix_del(prefix)

    def set_filters(self, address: str, deny_in: list[str], deny_out: list[str]) -> None:
        """In: our own prefixes (and anything inside) are never learned back.
        Out: the peer does not hear ``deny_out`` (other uplinks' ranges)."""
        from os_ken.services.protocols.bgp.info_base.base import PrefixFilter

        deny = PrefixFilter.POLICY_DENY
        self.bgp.in_filter_set(address, [PrefixFilter(p, policy=deny, le=32) for p in deny_in])
        self.bgp.out_filter_set(address, [PrefixFilter(p, policy=deny) for p in deny_out])

    def set_retry(self, seconds: int) -> None:
        """os-ken refuses a connect-retry time under 10 s: set it after validation."""
        from os_ken.services.protocols.bgp.rtconf import common

        conf = self._core()._common_config
        conf._settings[common.BGP_CONN_RETRY_TIME] = max(1, seconds)
        conf._settings[common.TCP_CONN_TIMEOUT] = max(2, seconds)

    def states(self, addresses: list[str]) -> dict[str, tuple[str, int]]:
        """Peer address -> (its FSM state: "established", "active", "idle"...,
        how many times it became established)."""
        out = {}
        try:
            pm = self._core().peer_manager
            for addr in addresses:
                peer = pm.get_by_addr(addr)
                if peer is not None:
                    out[addr] = (str(peer.state.bgp_state).lower(),
                                 int(peer.state.get_count("fms_established_transitions")))
        except Exception as e:
            LOG.debug("BGP neighbour states: %s", e)
        return out

    def set_keepalive(self, address: str, seconds: int) -> None:
        """os-ken sends keepalives every hold/3 s: use the configured interval."""
        try:
            peer = self._core().peer_manager.get_by_addr(address)
            proto = getattr(peer, "_protocol", None) if peer else None
            timer = getattr(proto, "_keepalive", None)
            hold = getattr(proto, "_holdtime", None)
            if timer is not None and hold and seconds < hold:
                timer.stop()
                timer.start(seconds, now=False)
        except Exception as e:
            LOG.debug("keepalive of %s not set: %s", address, e)
