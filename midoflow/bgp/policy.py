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
connected network, martians, and more than ``max_prefixes`` per peer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from netaddr import AddrFormatError, IPNetwork, IPSet

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
    :meth:`routes` for what the provider routers should hold."""

    peers: dict[str, PeerPolicy] = field(default_factory=dict)
    own: IPSet = field(default_factory=IPSet)  # prefixes this gateway advertises
    paths: dict[str, dict[str, Path]] = field(default_factory=dict)  # peer -> prefix -> path
    rejected: dict[str, int] = field(default_factory=dict)  # peer -> paths refused
    overflowed: set[str] = field(default_factory=set)

    # ---- configuration ---------------------------------------------------
    def set_peer(self, peer: str, policy: PeerPolicy) -> None:
        self.peers[peer] = policy
        self.paths.setdefault(peer, {})

    def remove_peer(self, peer: str) -> None:
        self.peers.pop(peer, None)
        self.paths.pop(peer, None)
        self.rejected.pop(peer, None)
        self.overflowed.discard(peer)

    def set_own(self, prefixes: Iterable[str]) -> None:
        """Our advertised prefixes: never learned back. Paths already held
        that fall inside them are dropped."""
        self.own = IPSet(p for p in (normalise(x) for x in prefixes) if p)
        for peer, table in self.paths.items():
            for prefix in [k for k in table if not self.acceptable(peer, k)]:
                del table[prefix]

    # ---- events ------------------------------------------------------------
    def acceptable(self, peer: str, prefix: str) -> bool:
        pol = self.peers.get(peer)
        if pol is None:
            return False
        net = IPNetwork(prefix)
        if IPSet([net]) & MARTIANS and net.prefixlen > 0:
            return False
        if IPSet([net]).issubset(self.own) and net.prefixlen > 0:
            return False
        return not (pol.connected and net == IPNetwork(pol.connected))

    def update(self, peer: str, prefix: str, nexthop: str, as_path_len: int = 0,
               local_pref: int = 100, origin: int = 0, med: int = 0,
               neighbour_as: int = 0) -> bool:
        """A path announced (or replaced). False if refused by the filters."""
        norm = normalise(prefix)
        table = self.paths.get(peer)
        if norm is None or table is None or not self.acceptable(peer, norm) or not nexthop:
            self.rejected[peer] = self.rejected.get(peer, 0) + 1
            return False
        if norm not in table and len(table) >= self.peers[peer].max_prefixes:
            self.overflowed.add(peer)
            self.rejected[peer] = self.rejected.get(peer, 0) + 1
            return False
        table[norm] = Path(peer, norm, nexthop, as_path_len, local_pref, origin, med,
                           neighbour_as)
        return True

    def withdraw(self, peer: str, prefix: str) -> bool:
        norm = normalise(prefix)
        table = self.paths.get(peer)
        return bool(table and norm and table.pop(norm, None) is not None)

    def peer_down(self, peer: str) -> None:
        """The session closed: everything learned from it goes."""
        if peer in self.paths:
            self.paths[peer] = {}
        self.overflowed.discard(peer)

    # ---- results --------------------------------------------------------------
    def received(self, peer: str) -> int:
        return len(self.paths.get(peer, {}))

    def routes(self) -> dict[str, set[LearnedRoute]]:
        """Router port (uplink) id -> the learned routes to hold through it."""
        by_prefix: dict[str, list[Path]] = {}
        for table in self.paths.values():
            for prefix, path in table.items():
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
