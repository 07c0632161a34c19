"""A host's live flow state (conntrack, NAT bindings, SNAT ports), pure, and
the read-only view of it that the simulation gets.

The simulation never writes here: it looks connections and bindings up
through a :class:`StateView` and returns what it wants committed (keys to
track, bindings made, SNAT ports proposed, blocks to lease). The agent then
commits through :meth:`FlowTables.commit_nat` and :meth:`FlowTables.track`,
and simulates again when a proposal was taken meanwhile or a block was
leased (MidoNet's simulation works this way).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from midoflow.model import NatTarget
from midoflow.nat.allocator import NatAllocator
from midoflow.nat.bindings import SNAT, NatBinding, NatTable
from midoflow.nat.conntrack import IDLE_SECONDS, ConnKey, ConnTrackTable

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


class FlowTables:
    """Conntrack return keys, NAT bindings with their idle deadlines, and the
    SNAT allocator (None: no SNAT port is ever proposed)."""

    def __init__(self, allocator: NatAllocator | None = None) -> None:
        self.ct = ConnTrackTable()
        self.nat = NatTable()
        self.nat_until: dict[NatBinding, float] = {}
        self.allocator = allocator

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
                   now: float, ttl: float = IDLE_SECONDS) -> bool:
        """Take the proposed ports and record the bindings. False, with
        nothing changed, when a port was taken meanwhile (simulate again)."""
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
            self.add_binding(b, now + ttl)
        return True

    def add_binding(self, b: NatBinding, until: float) -> None:
        self.nat.add(b)
        self.nat_until[b] = max(self.nat_until.get(b, 0.0), until)

    def track(self, forward: Iterable[ConnKey], now: float) -> list[ConnKey]:
        """Track the connections these forward keys open; their return keys."""
        return [self.ct.track(k, now) for k in forward]

    def expire_nat(self, keep: Collection[NatBinding], now: float,
                   idle: float = IDLE_SECONDS) -> int:
        """Forget idle bindings (``keep``: an installed flow uses them) and
        give their SNAT ports back; how many went."""
        gone = 0
        for b, until in list(self.nat_until.items()):
            if b in keep:
                self.nat_until[b] = max(until, now + idle)
            elif until <= now:
                del self.nat_until[b]
                self.nat.remove(b)
                if b.kind == SNAT and self.allocator is not None:
                    self.allocator.free(b.xlated[0], b.xlated[1], b.fwd.proto)
                gone += 1
        return gone
