"""The flows installed in OVS: their cookies indexed by tag (FlowIndex) for
exact invalidation, by match (a flow-mod with the same match replaces one
silently), and the flow state each keeps alive."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from midoflow.agent.flows import FlowIndex

LOG = logging.getLogger(__name__)


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

    def add(self, tags: Iterable[str], owner: str, uses: tuple = ()) -> int:
        cookie = self.index.add(tags, owner=owner)
        if uses:
            self._use(cookie, uses)
        return cookie

    def _use(self, cookie: int, uses: tuple) -> None:
        self._unuse(cookie)
        self.uses[cookie] = uses
        for k in uses:
            self._users.setdefault(k, set()).add(cookie)

    def _unuse(self, cookie: int) -> None:
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
