"""A host's load-balancing state, pure: the pick counter of each pool (round
robin and its weighted sequence advance it), and the SOURCE_IP sticky table
(VIP, client address) -> member, each entry with its expiry, shared with the
other hosts and filed in the flow-state store like NAT bindings (the wire and
store encodings are here). The active connections per translated address
(least connections) are counted by :class:`midoflow.nat.tables.FlowTables`
from its DNAT bindings."""

from __future__ import annotations

from dataclasses import dataclass

# Flow-state store entry kind of a sticky entry (midoflow.nat.flowstate.Entry):
# key "<vip id>|<client>", value "<member id>|<expiry, wall time>".
STICKY = "lbs"


@dataclass(frozen=True)
class Sticky:
    """Client ``client`` of VIP ``vip_id`` goes to ``member_id`` for new
    connections until ``until`` (wall time; every pick pushes it on)."""

    vip_id: str
    client: str
    member_id: str
    until: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.vip_id, self.client)

    def wire(self, now: float) -> list:
        """On the wire: the seconds left, not a time (hosts' clocks differ)."""
        return [self.vip_id, self.client, self.member_id, max(1, int(self.until - now))]

    @classmethod
    def from_wire(cls, item: list, now: float) -> Sticky:
        vip, client, member, left = item
        left = int(left)
        if not (isinstance(vip, str) and isinstance(client, str) and isinstance(member, str)) \
                or not 0 < left <= 86400:
            raise ValueError(f"not a sticky entry: {item!r}")
        return cls(vip, client, member, now + left)

    def store_key(self) -> str:
        return f"{self.vip_id}|{self.client}"

    def store_value(self) -> str:
        return f"{self.member_id}|{self.until:.3f}"

    @classmethod
    def from_store(cls, key: str, value: str) -> Sticky:
        vip, sep, client = key.partition("|")
        member, sep2, until = value.partition("|")
        if not (sep and sep2 and vip and client and member):
            raise ValueError(f"not a sticky entry: {key!r} {value!r}")
        return cls(vip, client, member, float(until))


class LbTables:
    """Pick counters by pool and the sticky table of one host."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.sticky: dict[tuple[str, str], Sticky] = {}

    def counter(self, pool_id: str) -> int:
        return self.counters.get(pool_id, 0)

    def advance(self, pool_id: str) -> None:
        self.counters[pool_id] = self.counters.get(pool_id, 0) + 1

    def sticky_member(self, vip_id: str, client: str, now: float) -> str | None:
        s = self.sticky.get((vip_id, client))
        return s.member_id if s is not None and s.until > now else None

    def stick(self, s: Sticky) -> Sticky:
        """Record an entry (a later expiry of the same choice wins; another
        member replaces it: the newest pick is the client's member)."""
        old = self.sticky.get(s.key)
        if old is not None and old.member_id == s.member_id and old.until >= s.until:
            return old
        self.sticky[s.key] = s
        return s

    def expire(self, now: float) -> list[Sticky]:
        gone = [s for s in self.sticky.values() if s.until <= now]
        for s in gone:
            del self.sticky[s.key]
        return gone
