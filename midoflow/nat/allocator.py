"""Distributed SNAT port allocation, pure: ports come from blocks of
``BLOCK_SIZE`` that a host leases (in ZooKeeper, through a :class:`Leaser`),
so hosts never hand out the same external (address, port) and no central
node is asked per connection. A lease is given back when its last port is
freed (and, by ZooKeeper, when the host dies).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence, Set
from functools import lru_cache
from typing import Protocol

import netaddr

from midoflow.model import NatTarget

BLOCK_SIZE = 64  # MidoNet's
PORT_MIN, PORT_MAX = 1, 65535


class NatExhausted(RuntimeError):
    """No (address, port) left in the targets for this protocol: the
    connection is refused, the agent carries on."""


class Leaser(Protocol):
    def try_lease(self, ip: str, proto: int, block: int) -> bool:
        """Claim the block for this host; False if another host holds it."""
        ...

    def release(self, ip: str, proto: int, block: int) -> None: ...


class MemoryLeaser:
    """Leases shared by the allocators given the same instance: unit tests,
    single-host use."""

    def __init__(self) -> None:
        self.owner: dict[tuple[str, int, int], object] = {}

    def for_host(self, host: object) -> _HostLeaser:
        return _HostLeaser(self, host)


class _HostLeaser:
    def __init__(self, shared: MemoryLeaser, host: object) -> None:
        self.shared, self.host = shared, host

    def try_lease(self, ip: str, proto: int, block: int) -> bool:
        return self.shared.owner.setdefault((ip, proto, block), self.host) == self.host

    def release(self, ip: str, proto: int, block: int) -> None:
        if self.shared.owner.get((ip, proto, block)) == self.host:
            del self.shared.owner[(ip, proto, block)]


@lru_cache(maxsize=1024)
def addresses(addr_from: str, addr_to: str) -> tuple[str, ...]:
    """The addresses of a NAT target's range, as text (computed once: netaddr
    costs tens of microseconds per call, once per new connection otherwise)."""
    return tuple(str(a) for a in netaddr.iter_iprange(addr_from, addr_to))


def _blocks(lo: int, hi: int) -> range:
    return range(lo // BLOCK_SIZE, hi // BLOCK_SIZE + 1)


def _span(t: NatTarget) -> tuple[int, int]:
    lo, hi = (t.port_from, t.port_to) if t.port_to else (PORT_MIN, PORT_MAX)
    return max(lo, PORT_MIN), min(hi, PORT_MAX)


def _free_port(block: int, used: Set[int], lo: int, hi: int,
               skip: Collection[int] = ()) -> int | None:
    start, end = max(block * BLOCK_SIZE, lo), min(block * BLOCK_SIZE + BLOCK_SIZE - 1, hi)
    if end - start + 1 <= len(used):
        return None
    for port in range(start, end + 1):
        if port not in used and port not in skip:
            return port
    return None


def propose(leased: Mapping[tuple[str, int, int], Set[int]], targets: Sequence[NatTarget],
            proto: int, taken: Collection[tuple[str, int, int]] = ()) -> tuple[str, int] | None:
    """A free (address, port) of the targets in the blocks already leased
    (``leased``: (ip, proto, block) -> ports in use), skipping ``taken``
    ((ip, port, proto) proposed but not yet committed). Pure: it changes
    nothing; None when no leased block has a free port (lease another)."""
    for t in targets:
        lo, hi = _span(t)
        for ip in addresses(t.addr_from, t.addr_to):
            skip = {port for tip, port, tproto in taken if tip == ip and tproto == proto}
            for (lip, lproto, block), used in leased.items():
                if lip == ip and lproto == proto:
                    port = _free_port(block, used, lo, hi, skip)
                    if port is not None:
                        return ip, port
    return None


class NatAllocator:
    """One host's SNAT ports. ``allocate`` returns an (ip, port) that no live
    connection of any host holds for the protocol; ``free`` gives it back.

    The blocks that still have a free port are indexed by (ip, proto), so a
    proposal looks at those only: scanning every leased block (what
    :func:`propose` does) made each new connection cost time in proportion to
    the connections already open (hundreds of full blocks under load)."""

    def __init__(self, leaser: Leaser, salt: str = "") -> None:
        self.leaser = leaser
        self.salt = salt  # spreads hosts over different blocks first
        # (ip, proto, block) leased by us -> ports in use in it
        self.leased: dict[tuple[str, int, int], set[int]] = {}
        # (ip, proto) -> leased blocks with a free port (an ordered set)
        self._open: dict[tuple[str, int], dict[int, None]] = {}

    def allocate(self, targets: Sequence[NatTarget], proto: int) -> tuple[str, int]:
        """Propose, leasing a block when none has a free port, and take."""
        got = self.propose(targets, proto)
        if got is None and self.lease(targets, proto):
            got = self.propose(targets, proto)
        if got is None or not self.take(got[0], got[1], proto):
            raise NatExhausted(f"every {proto=} address and port of {len(targets)} NAT "
                               "target(s) is in use")
        return got

    def propose(self, targets: Sequence[NatTarget], proto: int,
                taken: Collection[tuple[str, int, int]] = ()) -> tuple[str, int] | None:
        """See :func:`propose` (this host's leased blocks; no effect)."""
        for t in targets:
            lo, hi = _span(t)
            for ip in addresses(t.addr_from, t.addr_to):
                blocks = self._open.get((ip, proto))
                if not blocks:
                    continue
                skip = {port for tip, port, tproto in taken if tip == ip and tproto == proto}
                for block in blocks:
                    port = _free_port(block, self.leased[(ip, proto, block)], lo, hi, skip)
                    if port is not None:
                        return ip, port
        return None

    def take(self, ip: str, port: int, proto: int) -> bool:
        """Commit a proposal: False when the port is no longer free (taken
        meanwhile) or its block is not ours."""
        block = port // BLOCK_SIZE
        used = self.leased.get((ip, proto, block))
        if used is None or port in used:
            return False
        used.add(port)
        if len(used) >= BLOCK_SIZE:
            self._open.get((ip, proto), {}).pop(block, None)
        return True

    def lease(self, targets: Sequence[NatTarget], proto: int) -> bool:
        """Lease one more block with a port in the targets (a store write):
        False when every block is held (by us or by other hosts)."""
        for t in targets:
            lo, hi = _span(t)
            for ip in addresses(t.addr_from, t.addr_to):
                if self._lease(ip, proto, lo, hi):
                    return True
        return False

    def _lease(self, ip: str, proto: int, lo: int, hi: int) -> bool:
        blocks = _blocks(lo, hi)
        first = zlib.crc32(f"{self.salt}|{ip}|{proto}".encode()) % len(blocks)
        for i in range(len(blocks)):
            block = blocks[(first + i) % len(blocks)]
            if (ip, proto, block) in self.leased:
                continue
            if _free_port(block, set(), lo, hi) is None:  # the range covers none of it
                continue
            if self.leaser.try_lease(ip, proto, block):
                self.leased[(ip, proto, block)] = set()
                self._open.setdefault((ip, proto), {})[block] = None
                return True
        return False

    def free(self, ip: str, port: int, proto: int) -> None:
        key = (ip, proto, port // BLOCK_SIZE)
        used = self.leased.get(key)
        if used is None:
            return
        used.discard(port)
        blocks = self._open.setdefault((ip, proto), {})
        if not used:
            del self.leased[key]
            blocks.pop(key[2], None)
            if not blocks:
                del self._open[(ip, proto)]
            self.leaser.release(*key)
        else:
            blocks[key[2]] = None

    def in_use(self) -> set[tuple[str, int, int]]:
        """(ip, port, proto) of every live binding of this host."""
        return {(ip, p, proto) for (ip, proto, _), used in self.leased.items() for p in used}
