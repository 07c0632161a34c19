"""What a gateway does with the paths its BGP peers send: pure, no os-ken.

os-ken's best-path selection keeps one path per prefix, so ECMP is built
here from the Adj-RIB-In (every path of every peer): for each prefix, the
paths that tie on the BGP decision (highest local preference, shortest AS
path, lowest origin, lowest MED among paths from the same neighbour AS)
all become routes of the provider router. Across gateways, the AS-path
length goes into the route's weight, so the provider router (which prefers
the lowest weight and spreads equal weights by a 5-tuple hash) makes the
same choice among the paths every gateway learned.

Inbound filters keep a gateway from installing what it must not: its own
advertised prefixes (and anything inside them) coming back, the uplink's
connected network, martians, and more than ``max_prefixes`` per peer (those
are kept and learned when room frees up: :mod:`midoflow.bgp.table`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from netaddr import AddrFormatError, IPNetwork, IPSet

from midoflow.bgp.table import PeerTable
from midoflow.model import ROUTE_DEFAULT_WEIGHT

# Never installed from BGP: this-network, loopback, link-local, multicast, class E.
MARTIANS = IPSet(["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"])
MAX_PREFIXES_PER_PEER = 1000


@dataclass(frozen=True)
class Path:
    """One path a peer sent (an Adj-RIB-In entry)."""

    peer: str  # the peer's address
    prefix: str  # "a.b.c.d/n", normalised
    nexthop: str
    as_path_len: int = 0
    local_pref: int = 100
    origin: int = 0  # IGP 0, EGP 1, INCOMPLETE 2
    med: int = 0
    neighbour_as: int = 0  # first AS of the AS path (MED is compared only within one)


@dataclass(frozen=True)
class LearnedRoute:
    """A route the provider router gets: ``dst_cidr`` via ``gateway`` out of
    the uplink ``port_id``, with ``weight`` from the path's AS-path length."""

    dst_cidr: str
    gateway: str
    port_id: str
    weight: int


def weight_of(path: Path) -> int:
    return ROUTE_DEFAULT_WEIGHT + path.as_path_len


def multipath(paths: Iterable[Path]) -> list[Path]:
    """The paths of one prefix that tie on the decision process (ECMP set)."""
    paths = list(paths)
    if not paths:
        return []
    top = max(p.local_pref for p in paths)
    paths = [p for p in paths if p.local_pref == top]
    shortest = min(p.as_path_len for p in paths)
    paths = [p for p in paths if p.as_path_len == shortest]
    best_origin = min(p.origin for p in paths)
    paths = [p for p in paths if p.origin == best_origin]
    # MED only compares paths from the same neighbouring AS (RFC 4271 9.1.2.2 c)
    best_med: dict[int, int] = {}
    for p in paths:
        best_med[p.neighbour_as] = min(best_med.get(p.neighbour_as, p.med), p.med)
    return sorted((p for p in paths if p.med == best_med[p.neighbour_as]),
                  key=lambda p: (p.peer, p.nexthop))


def normalise(prefix: str) -> str | None:
    try:
        return str(IPNetwork(prefix, version=4).cidr)
    except (AddrFormatError, ValueError, TypeError):
        return None


@dataclass
class PeerPolicy:
    """What is known of one configured peer: its uplink, what it must not send."""

    port_id: str
    connected: str | None = None  # the uplink's network, "a.b.c.d/n"
    max_prefixes: int = MAX_PREFIXES_PER_PEER


@dataclass
class RouteLearner:
    """Adj-RIB-In of every peer of this agent's speaker, and the routes due.

    Feed it peer and path events (from os-ken's handlers, or a test); ask
    :meth:`routes` for what the provider routers should hold. Each peer's
    announcements are kept in a :class:`~midoflow.bgp.table.PeerTable`
    (prefix limit, refused prefixes learned when room frees up, stale
    paths kept ``stale_time`` s after a session drops)."""

    peers: dict[str, PeerPolicy] = field(default_factory=dict)
    own: IPSet = field(default_factory=IPSet)  # prefixes this gateway advertises
    tables: dict[str, PeerTable] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # peer -> paths refused, ever
    stale_time: float = 0.0

    # ---- configuration ---------------------------------------------------
    def set_peer(self, peer: str, policy: PeerPolicy) -> None:
        self.peers[peer] = policy
        self._accept_cache.clear()
        t = self.tables.get(peer)
        if t is None:
            self.tables[peer] = PeerTable(peer, policy.max_prefixes,
                                          lambda prefix, peer=peer: self.acceptable(peer, prefix))
        else:
            t.max_prefixes = policy.max_prefixes
            t.refilter()

    def remove_peer(self, peer: str) -> None:
        self.peers.pop(peer, None)
        self.tables.pop(peer, None)
        self.rejected.pop(peer, None)

    def set_own(self, prefixes: Iterable[str]) -> None:
        """Our advertised prefixes: never learned back. Paths already held
        that fall inside them are dropped (and refused ones may take their room)."""
        self.own = IPSet(p for p in (normalise(x) for x in prefixes) if p)
        self._accept_cache.clear()
        for t in self.tables.values():
            t.refilter()

    # ---- events ------------------------------------------------------------
    def acceptable(self, peer: str, prefix: str) -> bool:
        pol = self.peers.get(peer)
        if pol is None:
            return False
        key = (peer, prefix)
        hit = self._accept_cache.get(key)
        if hit is not None:
            return hit
        net = IPNetwork(prefix)
        ok = not ((net.prefixlen > 0 and (IPSet([net]) & MARTIANS
                                          or IPSet([net]).issubset(self.own)))
                  or (pol.connected and net == IPNetwork(pol.connected)))
        if len(self._accept_cache) > 100_000:
            self._accept_cache.clear()
        self._accept_cache[key] = bool(ok)
        return bool(ok)

    def __post_init__(self) -> None:
        self._accept_cache: dict[tuple[str, str], bool] = {}

    def update(self, peer: str, prefix: str, nexthop: str, as_path_len: int = 0,
               local_pref: int = 100, origin: int = 0, med: int = 0,
               neighbour_as: int = 0) -> bool:
        """A path announced (or replaced). False if refused (filters or limit:
        a refused path is kept, and accepted once there is room)."""
        norm = normalise(prefix)
        t = self.tables.get(peer)
        if norm is None or t is None or not nexthop:
            self.rejected[peer] = self.rejected.get(peer, 0) + 1
            return False
        ok = t.announce(norm, Path(peer, norm, nexthop, as_path_len, local_pref, origin, med,
                                   neighbour_as))
        if not ok:
            self.rejected[peer] = self.rejected.get(peer, 0) + 1
        return ok

    def withdraw(self, peer: str, prefix: str) -> bool:
        norm = normalise(prefix)
        t = self.tables.get(peer)
        return bool(t and norm and t.withdraw(norm))

    def peer_down(self, peer: str, now: float = 0.0) -> None:
        """The session closed: what it taught stays ``stale_time`` s as stale
        (gone at once with 0), and must be announced again."""
        t = self.tables.get(peer)
        if t is not None:
            t.session_down(now, self.stale_time)

    def expire(self, now: float) -> bool:
        """Stale paths whose time is up go. True if any went."""
        return any([t.expire(now) for t in self.tables.values()])

    # ---- results --------------------------------------------------------------
    @property
    def overflowed(self) -> set[str]:
        """Peers refusing prefixes at their limit now."""
        return {p for p, t in self.tables.items() if t.refused() > 0}

    @property
    def paths(self) -> dict[str, dict[str, Path]]:
        """peer -> prefix -> path: what is installed (accepted and stale)."""
        return {p: dict(t.paths()) for p, t in self.tables.items()}

    def received(self, peer: str) -> int:
        """Prefixes the peer announces now (accepted or not)."""
        t = self.tables.get(peer)
        return len(t.announced) if t else 0

    def counters(self, peer: str) -> dict[str, int]:
        t = self.tables.get(peer)
        return t.counters() if t else {}

    def routes(self) -> dict[str, set[LearnedRoute]]:
        """Router port (uplink) id -> the learned routes to hold through it."""
        by_prefix: dict[str, list[Path]] = {}
        for t in self.tables.values():
            for prefix, path in t.paths():
                by_prefix.setdefault(prefix, []).append(path)
        out: dict[str, set[LearnedRoute]] = {}
        for prefix, paths in by_prefix.items():
            for p in multipath(paths):
                pol = self.peers.get(p.peer)
                if pol is None:
                    continue
                out.setdefault(pol.port_id, set()).add(
                    LearnedRoute(prefix, p.nexthop, pol.port_id, weight_of(p)))
        return out


def diff(have: set[LearnedRoute], want: set[LearnedRoute]
         ) -> tuple[set[LearnedRoute], set[LearnedRoute]]:
    """(to add, to remove) to go from ``have`` to ``want``."""
    return want - have, have - want
