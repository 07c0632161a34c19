"""The host's flow state: conntrack and NAT tables (midoflow.nat.tables),
the read-only view the simulation gets, the commit of what a simulation
wants (ports taken, bindings, keys tracked), the wire messages to other
hosts, and the copy filed in the flow-state store (buffered, flushed,
recovered, expired). The store is injected (FlowStateStore: local or
Cassandra, see midoflow.store.flowstate_factory)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from midoflow.agent.clock import Clock
from midoflow.nat import statewire
from midoflow.nat.allocator import NatAllocator
from midoflow.nat.bindings import NatBinding
from midoflow.nat.conntrack import IDLE_SECONDS, ConnKey
from midoflow.nat.flowstate import CONNTRACK, NAT, Entry, FlowStateStore
from midoflow.nat.tables import FlowTables, StateView
from midoflow.sim.result import Result, ct_miss_tag, nat_miss_tag

LOG = logging.getLogger(__name__)

# Buffered flow state is filed when this many entries wait (and every
# STATE_FLUSH_SECONDS by the agent's loop).
STATE_FLUSH_ENTRIES = 256
STATE_FLUSH_SECONDS = 0.05
# At most this many entries wait while the flow-state store is unreachable.
STATE_HOLD_MAX = 100_000


class FlowState:
    def __init__(self, store: FlowStateStore, allocator: NatAllocator,
                 clock: Clock, spawn: Callable[..., object],
                 stats: dict) -> None:
        # wall time throughout: entries and their expiry are shared with other
        # hosts and the store
        self.store, self.clock, self.spawn, self.stats = store, clock, spawn, stats
        self.tables = FlowTables(allocator)
        self.unsaved: dict[str, list[Entry]] = {}  # port -> entries to file
        self.unsaved_n = 0
        self._flushing = False

    def view(self) -> StateView:
        return self.tables.view(self.clock.wall())

    # ---- what a simulation wants ---------------------------------------------
    def lease(self, result: Result) -> bool:
        """No free SNAT port: lease a block (True: simulate again)."""
        if self.tables.lease(result.nat_wants):
            return True
        self.stats["nat_exhausted"] = self.stats.get("nat_exhausted", 0) + 1
        LOG.warning("SNAT: every address and port of the targets is in use "
                    "(connection refused)")
        return False

    def commit_nat(self, result: Result) -> bool:
        """Take the SNAT ports and record the bindings the simulation made;
        False when a port was taken meanwhile (simulate again)."""
        if not result.nat:
            return True
        return self.tables.commit_nat(result.nat_allocs, result.nat, self.clock.wall())

    def track(self, result: Result, ports: Iterable[str]) -> bytes:
        """Track the connections a packet opens, file them (and its NAT
        bindings) for ``ports``; the message that tells the other hosts."""
        rets = self.tables.track(result.conntrack, self.clock.wall())
        self.stats["ct_tracked"] = self.stats.get("ct_tracked", 0) + len(rets)
        entries = [Entry(CONNTRACK, k.encode()) for k in rets]
        entries += [Entry(NAT, b.encode()) for b in result.nat]
        self.buffer(ports, entries)
        # the peers keep the keys as long as a new connection of theirs lives
        # here (the bindings at least MidoNet's idle time)
        ttl = max((self.tables.ct.timeout(k) for k in rets), default=IDLE_SECONDS)
        if result.nat:
            ttl = max(ttl, IDLE_SECONDS)
        return statewire.encode(rets, int(ttl), list(result.nat))

    def replies(self, result: Result) -> None:
        """The connections this packet is a reply of were answered: each gets
        its protocol's longer timeout here (UDP "assured", TCP established)."""
        now = self.clock.wall()
        for k in result.ct_hits:
            if isinstance(k, ConnKey):
                self.tables.ct.replied(k, now)

    def closing(self, result: Result, flags: int) -> bytes | None:
        """A FIN or RST: close the connection here; the message that tells
        the hosts that track it too (each sees only its own side)."""
        now = self.clock.wall()
        seen = [*result.conntrack, *(k for k in result.ct_hits if isinstance(k, ConnKey))]
        for k in seen:
            self.tables.ct.tcp_flags(k, flags, now)
        if not seen:
            return None
        return statewire.encode([], int(IDLE_SECONDS),
                                closing=[(k, flags) for k in seen])

    # ---- from other hosts, from the store ---------------------------------------
    def receive(self, frame: bytes) -> tuple[int, set[str]]:
        """Flow state another host pushed: (keys installed, tags of decisions
        made without it). ValueError for a bad message."""
        keys, nat, closing, ttl = statewire.decode_full(frame)
        now = self.clock.wall()
        t = self.tables
        # A reply may have beaten its state here (another path through OVS):
        # what was decided without state that is new here goes, the next
        # packet sees it. State already known (pushed again) changes nothing.
        stale: set[str] = set()
        for k in keys:
            if not t.ct.live(k, now):
                stale.add(ct_miss_tag(k))
            t.ct.install(k, now, ttl)
        for b in nat:
            if t.nat.reverse(b.kind, b.rev) != b:
                stale.add(nat_miss_tag(b.kind, b.rev))
            t.add_binding(b, now + ttl)
        for k, flags in closing:
            t.ct.tcp_flags(k, flags, now)
        self.stats["ct_received"] = self.stats.get("ct_received", 0) + len(keys) + len(nat)
        return len(keys) + len(nat), stale

    def recover(self, port_id: str) -> int:
        """Connections of a port bound here, from the flow-state store (an
        agent restart, a VM that moved here)."""
        try:
            entries = self.store.load(port_id)
        except Exception as e:
            LOG.warning("cannot recover flow state of port %s: %s", port_id, e)
            return 0
        now = self.clock.wall()
        n = 0
        for e in entries:
            try:
                if e.kind == CONNTRACK:
                    self.tables.ct.install(ConnKey.decode(e.key), now)
                elif e.kind == NAT:
                    self.tables.add_binding(NatBinding.decode(e.key), now + IDLE_SECONDS)
                else:
                    continue
                n += 1
            except ValueError:
                continue
        return n

    def expire(self, keep: set) -> tuple[set[ConnKey], int]:
        """Forget idle connections and bindings (``keep``: what installed
        flows use); (connections gone, NAT bindings gone)."""
        now = self.clock.wall()
        gone = set(self.tables.ct.expire(now, {k for k in keep if isinstance(k, ConnKey)}))
        nat_keep = {k[1] for k in keep if isinstance(k, tuple) and k[:1] == ("nat",)}
        return gone, self.tables.expire_nat(nat_keep, now)

    # ---- the store's copy ----------------------------------------------------------
    def buffer(self, ports: Iterable[str], entries: Sequence[Entry]) -> None:
        """Flow state waits here to be filed in the store, grouped by port:
        one write per port for many connections (the Python driver costs about
        a millisecond of CPU per request). The push to the peers, which the
        reply needs, has already gone."""
        for p in ports:
            self.unsaved.setdefault(p, []).extend(entries)
        self.unsaved_n += len(entries)
        if self.unsaved_n >= STATE_FLUSH_ENTRIES and not self._flushing:
            self._flushing = True
            self.spawn(self.flush)

    def flush(self) -> int:
        """File the buffered flow state (called often by the agent's loop)."""
        pending, self.unsaved, self.unsaved_n = self.unsaved, {}, 0
        self._flushing = False
        n = 0
        for port, entries in pending.items():
            try:
                self.store.save((port,), entries, int(IDLE_SECONDS))
                n += len(entries)
            except Exception as e:  # the store is for recovery: forwarding goes on
                self.stats["state_save_failed"] = self.stats.get("state_save_failed", 0) + 1
                self._keep_unsaved(port, entries)
                LOG.warning("cannot file flow state for port %s (kept for a retry): %s",
                            port, e)
        self.stats["state_saved"] = self.stats.get("state_saved", 0) + n
        return n

    def _keep_unsaved(self, port: str, entries: list[Entry]) -> None:
        """Hold what the store refused for the next flush, up to a bound (the
        oldest go first: their connections are the likeliest to be gone)."""
        held = self.unsaved.setdefault(port, [])
        held[:0] = entries
        self.unsaved_n += len(entries)
        excess = self.unsaved_n - STATE_HOLD_MAX
        if excess > 0:
            drop = min(excess, len(held))
            del held[:drop]
            self.unsaved_n -= drop
            self.stats["state_dropped"] = self.stats.get("state_dropped", 0) + drop
