"""The host's flow state: conntrack and NAT tables (midoflow.nat.tables),
the read-only view the simulation gets, the commit of what a simulation
wants (ports taken, bindings, keys tracked), the wire messages to other
hosts, and the copy filed in the flow-state store (buffered, flushed,
recovered, expired). The store is injected (FlowStateStore: local or
Cassandra, see midoflow.store.flowstate_factory).

The store's copy has a TTL (IDLE_SECONDS): what this host filed is filed
again every STATE_REFRESH_SECONDS while its connection or binding lives
here, so a long connection survives a restart or a move at any age."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from midoflow.agent.clock import Clock
from midoflow.nat import statewire
from midoflow.nat.allocator import NatAllocator
from midoflow.nat.bindings import DNAT, SNAT, NatBinding
from midoflow.nat.conntrack import IDLE_SECONDS, PROTO_TCP, PROTO_UDP, ConnKey
from midoflow.nat.flowstate import CONNTRACK, NAT, Entry, FlowStateStore
from midoflow.nat.lbstate import STICKY, Sticky
from midoflow.nat.tables import FlowTables, StateView
from midoflow.sim.result import Result, ct_miss_tag, nat_miss_tag

LOG = logging.getLogger(__name__)

# Buffered flow state is filed when this many entries wait (and every
# STATE_FLUSH_SECONDS by the agent's loop). Big writes are what make the
# store cheap: measured here (Cassandra 5.0, one node, 4 rows a connection),
# the node spent 271 us of CPU per connection filed 64 entries at a time and
# 71 us at 1000, on the cores the agent and OVS need. The price: a
# connection younger than STATE_FLUSH_SECONDS when an agent dies may be
# missing from the store (its peers got it pushed all the same).
STATE_FLUSH_ENTRIES = 2048
STATE_FLUSH_SECONDS = 0.5
# At most this many entries wait while the flow-state store is unreachable.
STATE_HOLD_MAX = 100_000
# What this host filed is filed again this often while it lives (the
# store's TTL is IDLE_SECONDS).
STATE_REFRESH_SECONDS = IDLE_SECONDS / 2
# The value of a NAT entry whose connection is tracked too, at the same
# device: its return key is the binding's forward key reversed.
NAT_TRACKED = "ct"


def nat_seen(result: Result, pkt) -> list[tuple[NatBinding, ConnKey, bool]]:
    """The NAT bindings a packet went through (``result.ct_hits``, in the
    walk's order), each with the packet's key there and whether it went
    forward: the packet as each earlier binding translated it (a hairpin's
    reply meets its SNAT binding, then its DNAT binding with the client
    restored; a floating IP's DNAT comes before a VIP's)."""
    out = []
    cur = pkt
    for hit in result.ct_hits:
        if isinstance(hit, ConnKey) or hit[0] != "nat":
            continue
        b = hit[1]
        k = ConnKey.of(b.fwd.device, cur)
        if k is None or k not in (b.fwd, b.rev):
            continue
        forward = k == b.fwd
        out.append((b, k, forward))
        if forward:
            cur = _moved(cur, "src" if b.kind == SNAT else "dst", b.xlated)
        else:
            cur = _moved(cur, "dst" if b.kind == SNAT else "src", b.orig)
    return out


def _moved(pkt, side: str, to: tuple[str, int]):
    """``pkt`` with its source or destination address and port set."""
    ip, port = to
    if pkt.ip_proto in (PROTO_TCP, PROTO_UDP):
        return replace(pkt, **{f"ip_{side}": ip, f"tp_{side}": port})
    if pkt.icmp_id is not None:  # an echo: its id is both "ports"
        return replace(pkt, **{f"ip_{side}": ip, "icmp_id": port})
    return replace(pkt, **{f"ip_{side}": ip})


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
        # bindings committed for a packet that was not forwarded (yet)
        self.unpushed: dict[NatBinding, None] = {}
        # return key or binding -> (its entry, the ports it is filed under,
        # when): what to file again while it lives
        self.filed: dict[object, tuple[Entry, tuple[str, ...], float]] = {}
        # the flows using these ({("nat", binding)}) must go: the owner's
        # installed flows (the core sets it)
        self.on_ended: Callable[[set], object] = lambda gone: None

    def _ended(self) -> None:
        """DNAT bindings closed or replaced: their flows go now, so a new
        connection on the same tuple reaches the simulation (the closed one's
        last packets are simulated one by one while it lingers)."""
        ended = self.tables.take_ended()
        if ended:
            self.on_ended({("nat", b) for b in ended})

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
        False when a port was taken meanwhile (simulate again). Bindings a
        new connection took the reply tuple of (``nat_ended``) are forgotten."""
        if result.nat_ended:
            for b in result.nat_ended:
                self.tables.forget_binding(b)
            self.tables.ended.extend(result.nat_ended)
        if not result.nat:
            self._ended()
            return True
        ok = self.tables.commit_nat(result.nat_allocs, result.nat, self.clock.wall())
        if ok and result.dropped:  # e.g. waiting for ARP: pushed when it goes on
            self.unpushed.update(dict.fromkeys(result.nat))
        self._ended()
        return ok

    def pending(self, result: Result) -> list[NatBinding]:
        """Bindings this packet uses that were committed by an earlier walk
        of it that went nowhere (it waited for a next hop's ARP): they still
        have to reach the other hosts."""
        if not self.unpushed:
            return []
        return [h[1] for h in result.ct_hits
                if isinstance(h, tuple) and h[0] == "nat" and h[1] in self.unpushed]

    def commit_lb(self, result: Result) -> None:
        """A load balancer's choices: pool counters, sticky entries."""
        self.tables.commit_lb(result.lb_picks, result.lb_sticky, self.clock.wall())

    def _stickies(self, result: Result, ports: tuple[str, ...], now: float,
                  entries: list[Entry]) -> list[Sticky]:
        """The sticky entries a packet made, filed with its connection."""
        out = []
        for vip, client, _m, _t in result.lb_sticky:
            s = self.tables.lb.sticky.get((vip, client))
            if s is None:
                continue
            out.append(s)
            e = Entry(STICKY, s.store_key(), s.store_value())
            entries.append(e)
            self.filed[(STICKY, vip, client)] = (e, ports, now)
        return out

    def track(self, result: Result, ports: Iterable[str]) -> bytes:
        """Track the connections a packet opens, file them (and its NAT
        bindings) for ``ports``; the message that tells the other hosts."""
        now = self.clock.wall()
        t = self.tables
        late = self.pending(result)
        for b in late:
            del self.unpushed[b]
        if late:
            result = replace(result, nat=(*result.nat, *late))
        rets = t.track(result.conntrack, now)
        self.stats["ct_tracked"] = self.stats.get("ct_tracked", 0) + len(rets)
        ports = tuple(ports)
        filed = self.filed
        entries = []
        # a connection tracked where it is translated: one row, its NAT
        # binding's, says both (half the store's writes; see recover)
        natted = {b.fwd.reverse(): b for b in result.nat} if result.nat else {}
        with_ct = set()
        for k in rets:
            b = natted.get(k)
            if b is not None:
                with_ct.add(b)
                continue
            e = Entry(CONNTRACK, k.encode())
            entries.append(e)
            filed[k] = (e, ports, now)
        for b in result.nat:
            e = Entry(NAT, b.encode(), NAT_TRACKED if b in with_ct else "")
            entries.append(e)
            filed[b] = (e, ports, now)
        sticky = self._stickies(result, ports, now, entries) if result.lb_sticky else []
        self.buffer(ports, entries)
        # the peers keep the keys and bindings as long as a new connection
        # lives here
        ttl = max((t.ct.timeout(k) for k in rets), default=0.0)
        ttl = max(ttl, *(t.nat_timeout(b) for b in result.nat), 0.0) if result.nat else ttl
        return statewire.encode(rets, int(ttl or IDLE_SECONDS), list(result.nat),
                                sticky=sticky, now=now)

    def replies(self, result: Result, pkt=None) -> None:
        """The connections this packet is a reply of were answered: each gets
        its protocol's longer timeout here (UDP "assured", TCP established),
        and so do the NAT bindings it was translated back by (``pkt``: the
        packet, to tell a reply from a forward packet of a binding)."""
        now = self.clock.wall()
        t = self.tables
        for k in result.ct_hits:
            if isinstance(k, ConnKey):
                t.ct.replied(k, now)
        if pkt is not None:
            for b, _k, forward in nat_seen(result, pkt):
                if not forward:
                    t.nat_replied_to(b, now)

    def closing(self, result: Result, flags: int, pkt=None) -> bytes | None:
        """A FIN or RST: close the connection here, and its NAT bindings
        (``pkt``: the packet, whose key at each binding's device tells its
        direction); the message that tells the hosts that track it too (each
        sees only its own side)."""
        seen, nat = self.close_keys(result, pkt)
        return self.close(seen, nat, flags)

    @staticmethod
    def close_keys(result: Result, pkt=None) -> tuple[tuple, tuple]:
        """What a FIN or RST of this packet's connection closes: (its
        connection keys as the packet is seen, (binding, key, forward) of
        each NAT binding it goes through)."""
        seen = (*result.conntrack, *(k for k in result.ct_hits if isinstance(k, ConnKey)))
        return seen, tuple(nat_seen(result, pkt)) if pkt is not None else ()

    def close(self, seen: tuple, nat: tuple, flags: int) -> bytes | None:
        """Close (``flags``: a FIN or RST) what :meth:`close_keys` named;
        the message for the hosts that track it too (None: nothing tracked)."""
        now = self.clock.wall()
        t = self.tables
        for k in seen:
            t.ct.tcp_flags(k, flags, now)
        for b, _k, forward in nat:
            t.nat_tcp_flags(b, flags, forward, now)
        self._ended()
        if not seen and not nat:
            return None
        return statewire.encode([], int(IDLE_SECONDS),
                                closing=[(k, flags) for k in (*seen, *(n[1] for n in nat))])

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
            t.reopen(b)  # a new connection on a closed one's tuple
            t.add_binding(b, now + ttl)
        for k, flags in closing:
            t.ct.tcp_flags(k, flags, now)
            for kind in (SNAT, DNAT):  # a binding's key as seen, either way
                b = t.nat.forward(kind, k)
                if b is not None or (b := t.nat.reverse(kind, k)) is not None:
                    t.nat_tcp_flags(b, flags, k == b.fwd, now)
        sticky = statewire.decode_sticky(frame, now) if b'"lb"' in frame else []
        for s in sticky:
            t.lb.stick(s)
        self._ended()
        self.stats["ct_received"] = self.stats.get("ct_received", 0) + len(keys) + len(nat)
        return len(keys) + len(nat) + len(sticky), stale

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
                    obj: object = ConnKey.decode(e.key)
                    self.tables.ct.install(obj, now)
                elif e.kind == NAT:
                    obj = NatBinding.decode(e.key)
                    self.tables.add_binding(obj, now + IDLE_SECONDS)
                    if e.value == NAT_TRACKED:
                        self.tables.ct.install(obj.fwd.reverse(), now)
                        n += 1
                elif e.kind == STICKY:
                    s = Sticky.from_store(e.key, e.value)
                    if s.until <= now:
                        continue
                    self.tables.lb.stick(s)
                    obj = (STICKY, s.vip_id, s.client)
                else:
                    continue
                # filed again from here while it lives (it was filed just now)
                old = self.filed.get(obj)
                self.filed[obj] = (e, tuple({*(old[1] if old else ()), port_id}), now)
                n += 1
            except ValueError:
                continue
        return n

    def expire(self, keep: set) -> tuple[set, int]:
        """Forget idle and closed connections and bindings (``keep``: what
        installed flows use), and file again what lives and was filed
        STATE_REFRESH_SECONDS ago. (Connections gone, with ("nat", binding)
        for each closed binding an installed flow still used: its flows must
        go; NAT bindings gone.)"""
        now = self.clock.wall()
        gone: set = set(self.tables.ct.expire(
            now, {k for k in keep if isinstance(k, ConnKey)}))
        nat_keep = {k[1] for k in keep if isinstance(k, tuple) and k[:1] == ("nat",)}
        nat_gone = self.tables.expire_nat(nat_keep, now)
        gone.update(("nat", b) for b in nat_gone if b in nat_keep)
        for b in [b for b in self.unpushed if b not in self.tables.nat_until]:
            del self.unpushed[b]
        for s in self.tables.lb.expire(now):
            self.filed.pop((STICKY, s.vip_id, s.client), None)
        self._refresh(gone, nat_gone, now)
        return gone, len(nat_gone)

    def _refresh(self, gone: set, nat_gone: list[NatBinding], now: float) -> None:
        """Forget what went; file again what lives and is due."""
        filed = self.filed
        for k in (*gone, *nat_gone):
            filed.pop(k, None)
        due = now - STATE_REFRESH_SECONDS
        t = self.tables
        again: dict[tuple[str, ...], list[Entry]] = {}
        for k, (e, ports, at) in list(filed.items()):
            if at > due:
                continue
            if k in t.ct or k in t.nat_until or (
                    isinstance(k, tuple) and k[:1] == (STICKY,) and k[1:] in t.lb.sticky):
                filed[k] = (e, ports, now)
                again.setdefault(ports, []).append(e)
            else:  # gone without our noticing (removed, replaced)
                del filed[k]
        for ports, entries in again.items():
            self.buffer(ports, entries)
        if again:
            self.stats["state_refreshed"] = self.stats.get("state_refreshed", 0) + sum(
                len(v) for v in again.values())

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
