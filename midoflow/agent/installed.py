"""The flows installed in OVS: their cookies indexed by tag (FlowIndex) for
exact invalidation, by match (a flow-mod with the same match replaces one
silently), the flow state each keeps alive, and, for a tracked connection's
exact flow, what it does (``Known``): a later packet of that connection that
still reaches the agent (the datapath's cache not revalidated yet) or its
close flow's copy of a FIN/RST is answered from it without a simulation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from midoflow.agent.flows import FlowIndex

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Known:
    """A tracked connection's installed flow: the packet key it matches
    exactly (``conn_key``), its actions and rewrites, and how a FIN or RST
    of it closes its state (``closes``: the connection keys as the packet
    is seen, (binding, key, forward) of its NAT bindings, the egress ports
    whose hosts track it; None: not TCP); ``mtu``: a bigger packet is the
    agent's (the flow sends it here first)."""

    key: tuple
    actions: tuple
    rewrites: tuple
    match_fields: frozenset
    closes: tuple | None = None
    mtu: int | None = None


class InstalledFlows:
    def __init__(self, on_invalidate: Callable[[set[int]], None], stats: dict) -> None:
        self.index = FlowIndex()
        self.on_invalidate = on_invalidate
        self.stats = stats
        # cookie -> flow state it keeps alive (return keys, ("nat", binding))
        self.uses: dict[int, tuple] = {}
        self._users: dict[object, set[int]] = {}  # a piece of flow state -> its cookies
        self._by_match: dict[tuple, int] = {}  # installed flow match -> its cookie
        self._match_of: dict[int, tuple] = {}
        self.known: dict[int, Known] = {}  # cookie -> a tracked exact flow's decision
        self._known_by_key: dict[tuple, int] = {}  # its packet key -> cookie

    def add(self, tags: Iterable[str], owner: str, uses: tuple = (),
            known: Known | None = None) -> int:
        cookie = self.index.add(tags, owner=owner)
        if uses:
            self._use(cookie, uses)
            if known is not None:
                self.known[cookie] = known
                self._known_by_key[known.key] = cookie
        return cookie

    def lookup(self, key: tuple) -> tuple[int, Known] | None:
        """The installed tracked flow matching this packet key exactly."""
        cookie = self._known_by_key.get(key)
        if cookie is None:
            return None
        return cookie, self.known[cookie]

    def _use(self, cookie: int, uses: tuple) -> None:
        self._unuse(cookie)
        self.uses[cookie] = uses
        for k in uses:
            self._users.setdefault(k, set()).add(cookie)

    def _unuse(self, cookie: int) -> None:
        known = self.known.pop(cookie, None)
        if known is not None and self._known_by_key.get(known.key) == cookie:
            del self._known_by_key[known.key]
        for k in self.uses.pop(cookie, ()):
            cs = self._users.get(k)
            if cs is not None:
                cs.discard(cookie)
                if not cs:
                    del self._users[k]

    def adopt(self, cookie: int, tags: Iterable[str], owner: str | None,
              uses: tuple = ()) -> None:
        """Index a flow OVS already holds (kept across a restart)."""
        self.index.adopt(cookie, tags, owner)
        if uses:
            self._use(cookie, uses)

    def count(self, owner: str) -> int:
        return self.index.count(owner)

    def invalidate_tags(self, tags: set[str]) -> set[int]:
        """Forget the flows carrying any of the tags and have them deleted."""
        if not tags:
            return set()
        cookies = self.index.invalidate(tags)
        for c in cookies:
            self._unuse(c)
        if cookies:
            self.stats["invalidated"] += len(cookies)
            LOG.debug("invalidate %d flow(s) for %s", len(cookies), sorted(tags))
            self.on_invalidate(cookies)
        return cookies

    def drop_using(self, gone: set) -> set[int]:
        """Forget and delete the flows that use any of this (expired) state."""
        users = self._users
        dead = {c for k in gone for c in users.get(k, ())}
        for c in dead:
            self.index.remove(c)
            self._unuse(c)
        if dead:
            self.on_invalidate(dead)
        return dead

    def in_use(self) -> set:
        """Every piece of flow state an installed flow keeps alive."""
        return set(self._users)

    def replaced(self, match_key: tuple, cookie: int) -> None:
        """A new flow with the same match and priority as an installed one
        replaces it in OVS, which says nothing: forget the old cookie."""
        old = self._by_match.get(match_key)
        if old is not None and old != cookie:
            self.removed(old)
        self._by_match[match_key] = cookie
        self._match_of[cookie] = match_key

    def removed(self, cookie: int) -> None:
        self.index.remove(cookie)
        self._unuse(cookie)
        key = self._match_of.pop(cookie, None)
        if key is not None and self._by_match.get(key) == cookie:
            del self._by_match[key]

    def forget(self) -> None:
        """OVS's simulated flows are gone (wiped, or the switch is lost)."""
        self.index.clear()
        self.uses.clear()
        self._users.clear()
        self._by_match.clear()
        self._match_of.clear()
        self.known.clear()
        self._known_by_key.clear()
