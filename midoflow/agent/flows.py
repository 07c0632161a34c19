"""Installed flows indexed by the tags they depend on, for exact invalidation.

Route lookups are indexed by destination too: a routed flow carries
``rdst:<router>:<ip>/<len>`` (:func:`midoflow.sim.result.route_dst_tag`: the
address looked up, the prefix length of the route that answered), and a
route change names the prefix it touched (``rprefix:<router>:<cidr>``). A
prefix is a contiguous range of addresses, so the lookups each router has
flows for are kept sorted (sortedcontainers' SortedDict, (address as an
integer, len) -> tag): a prefix finds its destinations in O(log n + k),
however many flows the router carries, and skips those answered by a more
specific route than itself (a change of a less specific one cannot move them).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import defaultdict
from collections.abc import Iterable

import netaddr
from sortedcontainers import SortedDict

from midoflow.sim.result import ROUTE_DST as DST
from midoflow.sim.result import ROUTE_PREFIX as PREFIX

LOG = logging.getLogger(__name__)


def _dst_key(tag: str) -> tuple[str, tuple[int, int]] | None:
    """(router, (address as an integer, prefix length)) of an ``rdst:`` tag."""
    router, _, lookup = tag[len(DST):].rpartition(":")
    ip, _, plen = lookup.partition("/")
    try:
        return router, (int.from_bytes(socket.inet_aton(ip), "big"), int(plen or 32))
    except (OSError, ValueError):
        return None


def _prefix_range(tag: str) -> tuple[str, int, int, int]:
    """(router, first, last address, prefix length) of an ``rprefix:`` tag;
    a prefix that does not parse covers every address and every lookup."""
    router, _, cidr = tag[len(PREFIX):].rpartition(":")
    try:
        net = netaddr.IPNetwork(cidr)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        LOG.warning("route prefix %r does not parse: every flow routed by %s goes",
                    cidr, router)
        return router, 0, (1 << 128) - 1, 128
    return router, net.first, net.last, net.prefixlen


class FlowIndex:
    """Cookie ↔ tags. Each simulated flow gets its own cookie; a change to a
    tagged thing removes exactly the cookies carrying that tag."""

    # Cookies of simulated flows carry this in their top byte, so they never
    # collide with the base pipeline's (0) and can be deleted as a group.
    COOKIE_BASE = 0x4D << 56
    COOKIE_MASK = 0xFF << 56
    _LOW = (1 << 56) - 1

    def __init__(self, first: int | None = None) -> None:
        # Each agent process numbers its cookies from the microsecond it
        # started: an agent takes far fewer than a million cookies a second,
        # so a restarted agent's new cookies stay clear of those its previous
        # run left in OVS (fast restart keeps them) even before it has read them.
        self._next = (time.time_ns() // 1000 if first is None else first) & self._LOW or 1
        # Cookies found in OVS and not yet judged (see reserve / adopt).
        self.reserved: set[int] = set()
        self.by_tag: dict[str, set[int]] = defaultdict(set)
        self.tags_of: dict[int, frozenset[str]] = {}
        # The port whose traffic each flow carries (its ingress), and how many
        # flows each port has: the per-port flow limit reads it.
        self.owner_of: dict[int, str] = {}
        self.per_owner: dict[str, int] = defaultdict(int)
        # router -> {(destination address, answer's prefix length): its rdst
        # tag}, for the lookups some indexed flow made (emptied as they go).
        self.dsts: dict[str, SortedDict] = {}

    def __len__(self) -> int:
        return len(self.tags_of)

    def add(self, tags: Iterable[str], owner: str | None = None) -> int:
        while True:
            cookie = self.COOKIE_BASE | self._next
            self._next = (self._next + 1) & self._LOW or 1
            if cookie not in self.tags_of and cookie not in self.reserved:
                break
        return self._index(cookie, tags, owner)

    def reserve(self, cookies: Iterable[int]) -> None:
        """Cookies of flows OVS holds that are not judged yet: ``add`` never
        hands them out until they are adopted or released."""
        self.reserved.update(cookies)

    def release(self, cookie: int) -> None:
        self.reserved.discard(cookie)

    def adopt(self, cookie: int, tags: Iterable[str], owner: str | None = None) -> None:
        """Index a flow OVS already holds (kept across a restart) under its
        own cookie, as if ``add`` had made it."""
        if cookie & self.COOKIE_MASK != self.COOKIE_BASE:
            raise ValueError(f"cookie {cookie:#x} is not a simulated flow's")
        self.reserved.discard(cookie)
        self.remove(cookie)
        self._index(cookie, tags, owner)

    def _index(self, cookie: int, tags: Iterable[str], owner: str | None) -> int:
        tags = frozenset(tags)
        self.tags_of[cookie] = tags
        if owner is not None:
            self.owner_of[cookie] = owner
            self.per_owner[owner] += 1
        for t in tags:
            s = self.by_tag.get(t)
            if s is None:
                s = self.by_tag[t] = set()
                if t.startswith(DST):
                    self._dst_seen(t)
            s.add(cookie)
        return cookie

    def _dst_seen(self, tag: str) -> None:
        key = _dst_key(tag)
        if key is not None:
            d = self.dsts.get(key[0])
            if d is None:
                d = self.dsts[key[0]] = SortedDict()
            d[key[1]] = tag

    def _dst_gone(self, tag: str) -> None:
        key = _dst_key(tag)
        d = self.dsts.get(key[0]) if key is not None else None
        if d is not None:
            d.pop(key[1], None)
            if not d:
                del self.dsts[key[0]]

    def dst_tags(self, prefix_tag: str) -> list[str]:
        """The ``rdst`` tags of the lookups a change of the routes for the
        prefix an ``rprefix`` tag names may answer differently: on its
        router, for an address in the prefix, answered by a route no more
        specific than the prefix."""
        router, first, last, plen = _prefix_range(prefix_tag)
        d = self.dsts.get(router)
        if not d:
            return []
        return [d[k] for k in d.irange((first, -1), (last, 129)) if k[1] <= plen]

    def count(self, owner: str) -> int:
        """Flows installed for traffic entering by ``owner``."""
        return self.per_owner.get(owner, 0)

    def remove(self, cookie: int) -> None:
        self.reserved.discard(cookie)  # a kept flow OVS removed before it was judged
        owner = self.owner_of.pop(cookie, None)
        if owner is not None:
            n = self.per_owner[owner] - 1
            if n > 0:
                self.per_owner[owner] = n
            else:
                del self.per_owner[owner]
        for t in self.tags_of.pop(cookie, ()):
            s = self.by_tag.get(t)
            if s is not None:
                s.discard(cookie)
                if not s:
                    del self.by_tag[t]
                    if t.startswith(DST):
                        self._dst_gone(t)

    def invalidate(self, tags: Iterable[str]) -> set[int]:
        """Forget and return every cookie carrying any of these tags (an
        ``rprefix`` tag: every flow routed to an address of its prefix)."""
        cookies: set[int] = set()
        for t in tags:
            if t.startswith(PREFIX):
                for dt in self.dst_tags(t):
                    cookies |= self.by_tag.get(dt, set())
                continue
            cookies |= self.by_tag.get(t, set())
        for c in cookies:
            self.remove(c)
        return cookies

    def clear(self) -> None:
        """Forget every indexed flow (reserved cookies stay: OVS still holds them)."""
        self.by_tag.clear()
        self.tags_of.clear()
        self.owner_of.clear()
        self.per_owner.clear()
        self.dsts.clear()
