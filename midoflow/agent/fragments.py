"""What was decided for the first fragment of an IP datagram, so that its later
fragments (which carry no L4 header, hence no ports) follow that decision or
are dropped: they are never simulated on their own and can never open a port.

Entries are keyed by the ingress port and (ip_src, ip_dst, ip_proto, ip_id), the
fields RFC 791 says identify one datagram's fragments; the port is part of the
key so a VM cannot ride on a decision made for another port's datagram.

Bounds, so a VM sending first fragments cannot grow the agent without end:

* ``ttl`` (5 s): an entry lives that long from its first fragment. Linux keeps a
  reassembly queue ``net.ipv4.ipfrag_time`` = 30 s, because it buffers data
  that may cross slow paths; here the fragments of one datagram follow each
  other within milliseconds over a virtual link, and all the entry must do is
  outlive them. A shorter life also makes a stale match less likely once the
  16-bit IP id wraps (RFC 4963): 5 s covers up to about 13,000 fragmented
  datagrams per second between one pair of addresses before an id can recur.
* ``max_per_port`` (256) and ``max_entries`` (4096): when full, the oldest entry
  (of that port, else of the table) goes first, so one port's flood evicts its
  own entries before anyone else's.

The values are opaque (the agent stores its actions). Pure: no I/O, no os-ken.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from midoflow.agent.clock import Clock

FragmentKey = tuple[str | None, str | None, int | None, int | None]
"""(ip_src, ip_dst, ip_proto, ip_id) of a fragmented datagram."""

DEFAULT_TTL = 5.0
DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_PER_PORT = 256


class FragmentTable:
    """First-fragment decisions by (ingress port, datagram key), bounded in
    time, in total and per port. Not thread-safe (the agent is one hub)."""

    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_per_port: int = DEFAULT_MAX_PER_PORT,
                 clock: Clock | None = None) -> None:
        if ttl <= 0 or max_entries < 1 or max_per_port < 1:
            raise ValueError("FragmentTable needs ttl > 0, max_entries >= 1 and "
                             f"max_per_port >= 1 (got {ttl}, {max_entries}, {max_per_port})")
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_per_port = max_per_port
        self.clock = clock or Clock()
        # (port, key) -> (deadline, value), oldest first: with one ttl and a
        # monotonic clock, insertion order is also deadline order.
        self._all: OrderedDict[tuple[Hashable, FragmentKey], tuple[float, Any]] = OrderedDict()
        self._per_port: dict[Hashable, OrderedDict[FragmentKey, None]] = {}
        self._counts = {"remembered": 0, "hits": 0, "misses": 0, "evicted": 0, "expired": 0}

    def remember(self, in_port: Hashable, key: FragmentKey, value: Any) -> None:
        """Record the decision for a first fragment (replacing, and renewing,
        an earlier one for the same port and key)."""
        now = self.clock.mono()
        self._expire(now)
        entry = (in_port, key)
        port = self._per_port.setdefault(in_port, OrderedDict())
        if entry in self._all:
            del self._all[entry]
            del port[key]
        else:
            if len(port) >= self.max_per_port:
                self._evict((in_port, next(iter(port))))
            if len(self._all) >= self.max_entries:
                self._evict(next(iter(self._all)))
            port = self._per_port.setdefault(in_port, OrderedDict())  # may have emptied
        self._all[entry] = (now + self.ttl, value)
        port[key] = None
        self._counts["remembered"] += 1

    def lookup(self, in_port: Hashable, key: FragmentKey) -> Any | None:
        """The value remembered for this port and key, None if there is none
        (never seen, expired or evicted)."""
        got = self._all.get((in_port, key))
        if got is not None and got[0] > self.clock.mono():
            self._counts["hits"] += 1
            return got[1]
        if got is not None:
            self._drop((in_port, key))
            self._counts["expired"] += 1
        self._counts["misses"] += 1
        return None

    def expire(self) -> int:
        """Forget the entries whose time is up; how many went."""
        return self._expire(self.clock.mono())

    def forget_port(self, in_port: Hashable) -> int:
        """Forget every entry of a port (unbound or deleted); how many went."""
        keys = list(self._per_port.get(in_port, ()))
        for key in keys:
            self._drop((in_port, key))
        return len(keys)

    @property
    def counters(self) -> dict[str, int]:
        """remembered, hits, misses, evicted (table or port full), expired,
        and the current number of entries."""
        return {**self._counts, "entries": len(self._all)}

    def __len__(self) -> int:
        return len(self._all)

    def _expire(self, now: float) -> int:
        gone = 0
        while self._all:
            entry, (deadline, _value) = next(iter(self._all.items()))
            if deadline > now:
                break
            self._drop(entry)
            gone += 1
        self._counts["expired"] += gone
        return gone

    def _evict(self, entry: tuple[Hashable, FragmentKey]) -> None:
        self._drop(entry)
        self._counts["evicted"] += 1

    def _drop(self, entry: tuple[Hashable, FragmentKey]) -> None:
        in_port, key = entry
        del self._all[entry]
        port = self._per_port[in_port]
        del port[key]
        if not port:
            del self._per_port[in_port]
