"""A host's live flow state (conntrack, NAT bindings, SNAT ports), pure, and
the read-only view of it that the simulation gets.

The simulation never writes here: it looks connections and bindings up
through a :class:`StateView` and returns what it wants committed (keys to
track, bindings made, SNAT ports proposed, blocks to lease). The agent then
commits through :meth:`FlowTables.commit_nat` and :meth:`FlowTables.track`,
and simulates again when a proposal was taken meanwhile or a block was
leased (MidoNet's simulation works this way).

A NAT binding lives as its connection does (Linux conntrack's timeouts,
:func:`midoflow.nat.conntrack.timeout`): short until a reply was
translated back, longer after, :data:`~midoflow.nat.conntrack.CLOSING_SECONDS`
once a TCP RST or both FINs were seen; an installed flow that uses it keeps
it alive (its idle clock starts when the flow goes). When it goes, its SNAT
port goes back to the allocator.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from midoflow.model import NatTarget
from midoflow.nat.allocator import NatAllocator
from midoflow.nat.bindings import DNAT, SNAT, NatBinding, NatTable
from midoflow.nat.conntrack import (
    CLOSING_SECONDS,
    PROTO_TCP,
    TCP_FIN,
    TCP_RST,
    ConnKey,
    ConnTrackTable,
    timeout,
)
from midoflow.nat.lbstate import LbTables, Sticky

# (ip, port, proto): an SNAT port proposed by a simulation.
Alloc = tuple[str, int, int]
# (targets, proto): the simulation found no free port in this host's blocks.
Want = tuple[tuple[NatTarget, ...], int]


class StateView:
    """Lookups and SNAT proposals over the tables at one instant; no effect."""

    __slots__ = ("_t", "_now")

    def __init__(self, tables: FlowTables, now: float) -> None:
        self._t, self._now = tables, now

    def is_return_flow(self, key: ConnKey) -> bool:
        return self._t.ct.live(key, self._now)

    def nat_forward(self, kind: str, key: ConnKey) -> NatBinding | None:
        return self._t.nat.forward(kind, key)

    def nat_reverse(self, kind: str, key: ConnKey) -> NatBinding | None:
        return self._t.nat.reverse(kind, key)

    def nat_propose(self, targets: Sequence[NatTarget], proto: int,
                    taken: Collection[Alloc] = ()) -> tuple[str, int] | None:
        a = self._t.allocator
        return a.propose(targets, proto, taken) if a is not None else None

    def nat_closing(self, b: NatBinding) -> bool:
        """Has the binding's connection closed (RST, or FIN both ways)?"""
        return b in self._t.nat_closing

    def lb_counter(self, pool_id: str) -> int:
        return self._t.lb.counter(pool_id)

    def lb_active(self, ip: str, port: int, proto: int) -> int:
        return len(self._t.dnat_active.get((ip, port, proto), ()))

    def lb_sticky(self, vip_id: str, client_ip: str) -> str | None:
        return self._t.lb.sticky_member(vip_id, client_ip, self._now)


class FlowTables:
    """Conntrack return keys, NAT bindings with their idle deadlines, and the
    SNAT allocator (None: no SNAT port is ever proposed)."""

    def __init__(self, allocator: NatAllocator | None = None) -> None:
        self.ct = ConnTrackTable()
        self.nat = NatTable()
        self.nat_until: dict[NatBinding, float] = {}
        # bindings whose connection was answered / is closing; FINs seen
        # (forward, reply) of TCP bindings not closed yet
        self.nat_replied: set[NatBinding] = set()
        self.nat_closing: set[NatBinding] = set()
        self.nat_fins: dict[NatBinding, tuple[bool, bool]] = {}
        self.allocator = allocator
        # (ip, port, proto) -> the DNAT bindings to it not closing: the
        # active connections of a balancer's member, as this host sees them
        self.dnat_active: dict[tuple[str, int, int], set[NatBinding]] = {}
        self.lb = LbTables()
        # DNAT bindings closed or replaced since the owner last took them:
        # the flows that translate with them must go at once (a new
        # connection on the same reply tuple must reach the simulation)
        self.ended: list[NatBinding] = []

    def take_ended(self) -> list[NatBinding]:
        ended, self.ended = self.ended, []
        return ended

    def _active(self, b: NatBinding, on: bool) -> None:
        if b.kind != DNAT:
            return
        key = (b.xlated[0], b.xlated[1], b.fwd.proto)
        if on:
            self.dnat_active.setdefault(key, set()).add(b)
            return
        bs = self.dnat_active.get(key)
        if bs is not None:
            bs.discard(b)
            if not bs:
                del self.dnat_active[key]

    def nat_timeout(self, b: NatBinding) -> float:
        """The idle timeout of a binding: its connection's."""
        if b in self.nat_closing:
            return CLOSING_SECONDS
        return timeout(b.fwd.proto, b in self.nat_replied)

    def view(self, now: float) -> StateView:
        return StateView(self, now)

    def lease(self, wants: Iterable[Want]) -> bool:
        """Lease a block for each want (store writes): True when at least one
        was leased (simulate again), False when the targets are exhausted."""
        if self.allocator is None:
            return False
        got = [self.allocator.lease(targets, proto) for targets, proto in wants]
        return any(got)

    def commit_nat(self, allocs: Sequence[Alloc], bindings: Iterable[NatBinding],
                   now: float, ttl: float | None = None) -> bool:
        """Take the proposed ports and record the bindings (``ttl``: their
        idle time; None: their connection's, :meth:`nat_timeout`). False,
        with nothing changed, when a port was taken meanwhile (simulate
        again)."""
        a = self.allocator
        if allocs and a is None:
            return False
        done: list[Alloc] = []
        for ip, port, proto in allocs:
            if not a.take(ip, port, proto):  # type: ignore[union-attr]
                for d_ip, d_port, d_proto in done:
                    a.free(d_ip, d_port, d_proto)  # type: ignore[union-attr]
                return False
            done.append((ip, port, proto))
        for b in bindings:
            self.reopen(b)
            self.add_binding(b, now + (self.nat_timeout(b) if ttl is None else ttl))
        return True

    def reopen(self, b: NatBinding) -> None:
        """A new connection on a closed binding's tuple (the same choice made
        again): it starts afresh, not closing."""
        if b in self.nat_closing:
            self.nat_closing.discard(b)
            self.nat_replied.discard(b)
            self.nat_fins.pop(b, None)
            self.nat_until.pop(b, None)

    def commit_lb(self, picks: Iterable[tuple[str, str]],
                  sticky: Iterable[tuple[str, str, str, int]], now: float) -> None:
        """A load balancer's choices (Result.lb_picks, Result.lb_sticky): each
        pick advances its pool's counter, each SOURCE_IP choice (re)starts
        its client's sticky entry."""
        for pool_id, _member in picks:
            self.lb.advance(pool_id)
        for vip, client, member, seconds in sticky:
            self.lb.stick(Sticky(vip, client, member, now + seconds))

    def add_binding(self, b: NatBinding, until: float) -> None:
        """Record a binding; a different DNAT binding on the same forward or
        reply key (an old connection's, closed or stale) is replaced: as in
        Linux conntrack, the new connection owns the tuple."""
        if b.kind == DNAT:
            for old in (self.nat.forward(DNAT, b.fwd), self.nat.reverse(DNAT, b.rev)):
                if old is not None and old != b:
                    self.forget_binding(old)
                    self.ended.append(old)
        self.nat.add(b)
        self.nat_until[b] = max(self.nat_until.get(b, 0.0), until)
        if b not in self.nat_closing:
            self._active(b, True)

    def nat_replied_to(self, b: NatBinding, now: float) -> None:
        """A reply of the binding's connection was translated back: from now
        on it has its protocol's longer timeout."""
        if b not in self.nat_until or b in self.nat_closing:
            return
        self.nat_replied.add(b)
        self.nat_until[b] = max(self.nat_until[b], now + self.nat_timeout(b))

    def nat_tcp_flags(self, b: NatBinding, flags: int, forward: bool, now: float) -> None:
        """A TCP segment of the binding's connection (``forward``: from the
        side that opened it): RST closes it, FIN from both sides closes it;
        a closing binding lingers CLOSING_SECONDS, then goes with its port."""
        if b.fwd.proto != PROTO_TCP or b not in self.nat_until or b in self.nat_closing:
            return
        fin_fwd, fin_ret = self.nat_fins.get(b, (False, False))
        if flags & TCP_FIN:
            fin_fwd, fin_ret = fin_fwd or forward, fin_ret or not forward
        if flags & TCP_RST or (fin_fwd and fin_ret):
            self.nat_fins.pop(b, None)
            self.nat_closing.add(b)
            self._active(b, False)
            self.nat_until[b] = min(self.nat_until[b], now + CLOSING_SECONDS)
            if b.kind == DNAT:
                self.ended.append(b)
        elif fin_fwd or fin_ret:
            self.nat_fins[b] = (fin_fwd, fin_ret)

    def track(self, forward: Iterable[ConnKey], now: float) -> list[ConnKey]:
        """Track the connections these forward keys open; their return keys."""
        return [self.ct.track(k, now) for k in forward]

    def expire_nat(self, keep: Collection[NatBinding], now: float,
                   idle: float | None = None) -> list[NatBinding]:
        """Forget idle bindings and give their SNAT ports back; the bindings
        that went. ``keep``: an installed flow uses them (a closing one
        goes all the same: its flows must go with it); ``idle``: one idle
        time for all (None: each its connection's)."""
        gone: list[NatBinding] = []
        closing, replied, nat_until = self.nat_closing, self.nat_replied, self.nat_until
        for b, until in list(nat_until.items()):
            if b in keep and b not in closing:
                t = timeout(b.fwd.proto, b in replied) if idle is None else idle
                if until < now + t:
                    nat_until[b] = now + t
            elif until <= now:
                self.forget_binding(b)
                gone.append(b)
        return gone

    def forget_binding(self, b: NatBinding) -> None:
        """Drop a binding now and give its SNAT port back."""
        if self.nat_until.pop(b, None) is None:
            return
        self.nat.remove(b)
        self._active(b, False)
        self.nat_replied.discard(b)
        self.nat_closing.discard(b)
        self.nat_fins.pop(b, None)
        if b.kind == SNAT and self.allocator is not None:
            self.allocator.free(b.xlated[0], b.xlated[1], b.fwd.proto)
