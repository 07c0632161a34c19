"""Installed flows indexed by the tags they depend on, for exact invalidation."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable


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
            self.by_tag[t].add(cookie)
        return cookie

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

    def invalidate(self, tags: Iterable[str]) -> set[int]:
        """Forget and return every cookie carrying any of these tags."""
        cookies: set[int] = set()
        for t in tags:
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
