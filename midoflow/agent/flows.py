"""Installed flows indexed by the tags they depend on, for exact invalidation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable


class FlowIndex:
    """Cookie ↔ tags. Each simulated flow gets its own cookie; a change to a
    tagged thing removes exactly the cookies carrying that tag."""

    # Cookies of simulated flows carry this in their top byte, so they never
    # collide with the base pipeline's (0) and can be deleted as a group.
    COOKIE_BASE = 0x4D << 56
    COOKIE_MASK = 0xFF << 56

    def __init__(self) -> None:
        self._next = 1
        self.by_tag: dict[str, set[int]] = defaultdict(set)
        self.tags_of: dict[int, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self.tags_of)

    def add(self, tags: Iterable[str]) -> int:
        cookie = self.COOKIE_BASE | self._next
        self._next = (self._next + 1) & ((1 << 56) - 1) or 1
        tags = frozenset(tags)
        self.tags_of[cookie] = tags
        for t in tags:
            self.by_tag[t].add(cookie)
        return cookie

    def remove(self, cookie: int) -> None:
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
        self.by_tag.clear()
        self.tags_of.clear()
