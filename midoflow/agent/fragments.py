"""IPv4 fragments at the agent: what was decided for the first fragment of a
datagram, so that its later fragments (which carry no L4 header, hence no
ports) follow that decision; and the splitting of a datagram too big for the
egress link of a router (``split_frame``).

How a later fragment finds its connection. The first fragment carries the
ports: it is simulated like any packet (chains, conntrack, NAT), and the
decision it got -- its datapath actions and the rewrites a portless packet can
take (MACs, TTL, addresses: a NAT's port rewrite applies to the first fragment
only, which holds the UDP/TCP header and checksum) -- is remembered under the
ingress port and (ip_src, ip_dst, ip_proto, ip_id), the fields RFC 791 says
identify one datagram's fragments, as MidoNet keyed them (IP id, source,
destination, protocol). The port is part of the key so a VM cannot ride on a
decision made for another port's datagram. Later fragments are never
simulated on their own and can never open a port or create state; a rule's
``fragment_policy`` sees them as ``nonheader`` only through the decision their
first fragment got (a rule that drops the first drops the datagram).

A later fragment that arrives before its first (reordered on the way, or the
first one lost) is held, not reassembled: up to ``HOLD_PER_PORT`` frames per
port and ``HOLD_MAX`` in all, for ``HOLD_TTL`` seconds; when the first
fragment's decision is made they are simulated again (and follow it), else
they are dropped. Nothing is buffered per datagram beyond those frames.

When a router's egress link is smaller than the packet (``Result.mtu``) and
the packet may be fragmented (no DF), the agent splits it here, RFC 791
style, as a real router does: each piece is at most the MTU, its data a
multiple of 8 bytes, later pieces carry only the options marked "copied",
a piece of a fragment keeps its offset and its MF bit. The first piece is
the packet itself (its rewrites all apply); the others follow it like any
later fragment.

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

The values are opaque (the agent stores its actions). Pure: no I/O, no os-ken;
the splitting is hand-written over ``struct`` (a few lines, bounded loops)
because os-ken's packet library recomputes L4 checksums over a fragment's
partial data and would corrupt them.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from midoflow.agent.clock import Clock

FragmentKey = tuple[str | None, str | None, int | None, int | None]
"""(ip_src, ip_dst, ip_proto, ip_id) of a fragmented datagram."""

DEFAULT_TTL = 5.0
DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_PER_PORT = 256
# Later fragments that came before their first: held at most this long, this
# many per port and in all (oldest evicted first).
HOLD_TTL = 1.0
HOLD_PER_PORT = 32
HOLD_MAX = 512
ETH_LEN = 14
MIN_MTU = 68  # RFC 791: every link carries 68 bytes in one piece


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
        self._counts = {"remembered": 0, "hits": 0, "misses": 0, "evicted": 0, "expired": 0,
                        "held": 0, "released": 0, "hold_dropped": 0}
        # later fragments before their first: (port, key) -> [(deadline, item)],
        # oldest first; _held_n counts them per port
        self._held: OrderedDict[tuple[Hashable, FragmentKey], list[tuple[float, Any]]] = \
            OrderedDict()
        self._held_n: dict[Hashable, int] = {}

    def remember(self, in_port: Hashable, key: FragmentKey, value: Any) -> list[Any]:
        """Record the decision for a first fragment (replacing, and renewing,
        an earlier one for the same port and key); returns the later
        fragments of it that were held (``hold``), to be handled again."""
        now = self.clock.mono()
        self._expire(now)
        released = self._release((in_port, key), now)
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
        return released

    def hold(self, in_port: Hashable, key: FragmentKey, item: Any) -> None:
        """Keep a later fragment that came before its first for ``HOLD_TTL``
        seconds (the oldest held frame of the port, else of the table, goes
        when one is full)."""
        now = self.clock.mono()
        self._expire(now)
        if self._held_n.get(in_port, 0) >= HOLD_PER_PORT:
            self._drop_held(next(e for e in self._held if e[0] == in_port))
        elif sum(self._held_n.values()) >= HOLD_MAX:
            self._drop_held(next(iter(self._held)))
        self._held.setdefault((in_port, key), []).append((now + HOLD_TTL, item))
        self._held_n[in_port] = self._held_n.get(in_port, 0) + 1
        self._counts["held"] += 1

    @property
    def held(self) -> int:
        """Later fragments held now."""
        return sum(self._held_n.values())

    def _release(self, entry: tuple[Hashable, FragmentKey], now: float) -> list[Any]:
        items = self._held.pop(entry, [])
        if items:
            self._uncount(entry[0], len(items))
        live = [item for deadline, item in items if deadline > now]
        self._counts["released"] += len(live)
        self._counts["hold_dropped"] += len(items) - len(live)
        return live

    def _drop_held(self, entry: tuple[Hashable, FragmentKey]) -> None:
        """The oldest frame held under ``entry`` goes."""
        items = self._held[entry]
        items.pop(0)
        if not items:
            del self._held[entry]
        self._uncount(entry[0], 1)
        self._counts["hold_dropped"] += 1

    def _uncount(self, in_port: Hashable, n: int) -> None:
        left = self._held_n[in_port] - n
        if left:
            self._held_n[in_port] = left
        else:
            del self._held_n[in_port]

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
        """Forget every entry of a port (unbound or deleted), and what it
        held; how many entries went."""
        for entry in [e for e in self._held if e[0] == in_port]:
            self._counts["hold_dropped"] += len(self._held.pop(entry))
        self._held_n.pop(in_port, None)
        keys = list(self._per_port.get(in_port, ()))
        for key in keys:
            self._drop((in_port, key))
        return len(keys)

    @property
    def counters(self) -> dict[str, int]:
        """remembered, hits, misses, evicted (table or port full), expired,
        held / released / hold_dropped (later fragments before their first),
        and the current number of entries."""
        return {**self._counts, "entries": len(self._all)}

    def __len__(self) -> int:
        return len(self._all)

    def _expire(self, now: float) -> int:
        while self._held:
            entry, items = next(iter(self._held.items()))
            if items[-1][0] > now:  # a datagram's newest frame is still due
                break
            self._release(entry, now)
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


# ---- the rewrites a later fragment takes ---------------------------------------
# A NAT's address rewrite of a later fragment is made in the frame, IP header
# only: OVS's set_field ipv4_src/dst would also "update" a UDP or TCP checksum
# at the L4 offset of a later fragment, which is payload there (seen here:
# every fragmented UDP datagram through SNAT or a floating IP was lost).
IN_FRAME = {"frag_ip_src": 12, "frag_ip_dst": 16}
_LATER = frozenset({"eth_src", "eth_dst", "ttl"})


def later_rewrites(rewrites) -> tuple:
    """The rewrites (``midoflow.sim.result.Rewrite``) a later fragment of a
    datagram takes: MACs and TTL by the switch, addresses in the frame
    (``frag_ip_src`` / ``frag_ip_dst``, see ``set_addresses``); no ports
    (it has no L4 header) and nothing else."""
    out = []
    for r in rewrites:
        if r.field in _LATER:
            out.append(r)
        elif r.field in ("ip_src", "ip_dst"):
            out.append(type(r)("frag_" + r.field, r.value))
    return tuple(out)


def set_addresses(frame: bytes, rewrites) -> bytes:
    """``frame`` with the ``frag_ip_src`` / ``frag_ip_dst`` rewrites made in
    its IPv4 header (its checksum updated; nothing past the header touched);
    the same object when there are none. Raises SplitError on a frame that
    is not IPv4."""
    todo = [(IN_FRAME[r.field], r.value) for r in rewrites if r.field in IN_FRAME]
    if not todo:
        return frame
    if len(frame) < ETH_LEN + 20 or frame[12:14] != b"\x08\x00" or frame[ETH_LEN] >> 4 != 4:
        raise SplitError("not an IPv4 frame")
    ihl = (frame[ETH_LEN] & 0x0F) * 4
    out = bytearray(frame)
    for at, ip in todo:
        try:
            out[ETH_LEN + at:ETH_LEN + at + 4] = bytes(int(o) for o in str(ip).split("."))
        except ValueError:
            raise SplitError(f"{ip!r} is not an IPv4 address") from None
    out[ETH_LEN + 10:ETH_LEN + 12] = b"\0\0"
    out[ETH_LEN + 10:ETH_LEN + 12] = struct.pack(
        "!H", ip_checksum(bytes(out[ETH_LEN:ETH_LEN + ihl])))
    return bytes(out)


# ---- splitting a datagram for a smaller link (RFC 791, section 3.2) ------------
_HDR = struct.Struct("!BBHHHBBH")


class SplitError(ValueError):
    """A frame that cannot be split for this MTU (DF set, not IPv4, an MTU
    below 68, or a header too long for it)."""


def ip_checksum(header: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``header`` (even length)."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _copied_options(options: bytes) -> bytes:
    """The options a later fragment carries (RFC 791: the copied flag, bit
    0x80 of the type), padded to 4 bytes. At most 40 bytes: bounded."""
    out = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        size = options[i + 1] if i + 1 < len(options) else 0
        if size < 2:
            break  # malformed: copy nothing further
        if kind & 0x80:
            out += options[i:i + size]
        i += size
    out += b"\0" * (-len(out) % 4)
    return bytes(out)


def split_frame(frame: bytes, mtu: int) -> list[bytes]:
    """An Ethernet/IPv4 frame as frames whose IP packets are at most ``mtu``
    bytes; the frame itself (alone) when it fits. Raises SplitError."""
    if mtu < MIN_MTU:
        raise SplitError(f"an MTU of {mtu} is below IPv4's minimum of {MIN_MTU}")
    if len(frame) < ETH_LEN + 20 or frame[12:14] != b"\x08\x00" or frame[ETH_LEN] >> 4 != 4:
        raise SplitError("not an IPv4 frame")
    vhl, tos, total, ident, frag, ttl, proto, _csum = _HDR.unpack_from(frame, ETH_LEN)
    ihl = (vhl & 0x0F) * 4
    if ihl < 20 or total < ihl or ETH_LEN + total > len(frame):
        raise SplitError("IPv4 header or total length does not fit the frame")
    if total <= mtu:
        return [frame]
    if frag & 0x4000:
        raise SplitError("Don't Fragment is set")
    eth, ip = frame[:ETH_LEN], frame[ETH_LEN:ETH_LEN + total]
    addrs = ip[12:20]
    first_opts, later_opts = ip[20:ihl], _copied_options(ip[20:ihl])
    data = ip[ihl:]
    last_mf, offset = frag & 0x2000, frag & 0x1FFF
    # As few pieces as the MTU allows, of even sizes: no tiny fragment (a
    # receiver's conntrack, OVS's included, drops small non-last fragments)
    step = (mtu - 20 - len(first_opts)) // 8 * 8
    if step <= 0:
        raise SplitError(f"a {20 + len(first_opts)}-byte header leaves no room in an MTU "
                         f"of {mtu}")
    pieces = -(-len(data) // step)
    even = -(-len(data) // pieces // 8) * 8 if pieces > 1 else step
    out, pos = [], 0
    while pos < len(data):  # at most 65,535 / 8 turns
        opts = first_opts if pos == 0 else later_opts
        hlen = 20 + len(opts)
        size = min((mtu - hlen) // 8 * 8, even)
        if size <= 0:
            raise SplitError(f"a {hlen}-byte header leaves no room in an MTU of {mtu}")
        chunk = data[pos:pos + size]
        more = 0x2000 if pos + len(chunk) < len(data) else last_mf
        hdr = bytearray(_HDR.pack(0x40 | hlen // 4, tos, hlen + len(chunk), ident,
                                  more | (offset + pos // 8), ttl, proto, 0))
        hdr += addrs + opts
        hdr[10:12] = struct.pack("!H", ip_checksum(bytes(hdr)))
        out.append(eth + bytes(hdr) + chunk)
        pos += len(chunk)
    return out
