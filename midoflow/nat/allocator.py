"""Distributed SNAT port allocation, pure: ports come from blocks of
``BLOCK_SIZE`` that a host leases (in ZooKeeper, through a :class:`Leaser`),
so hosts never hand out the same external (address, port) and no central
node is asked per connection. A lease is given back when its last port is
freed (and, by ZooKeeper, when the host dies).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
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


def _blocks(lo: int, hi: int) -> range:
    return range(lo // BLOCK_SIZE, hi // BLOCK_SIZE + 1)


class NatAllocator:
    """One host's SNAT ports. ``allocate`` returns an (ip, port) that no live
    connection of any host holds for the protocol; ``free`` gives it back."""

    def __init__(self, leaser: Leaser, salt: str = "") -> None:
        self.leaser = leaser
        self.salt = salt  # spreads hosts over different blocks first
        # (ip, proto, block) leased by us -> ports in use in it
        self.leased: dict[tuple[str, int, int], set[int]] = {}

    def allocate(self, targets: Sequence[NatTarget], proto: int) -> tuple[str, int]:
        if not targets:
            raise NatExhausted("no NAT target")
        for t in targets:
            lo, hi = (t.port_from, t.port_to) if t.port_to else (PORT_MIN, PORT_MAX)
            lo, hi = max(lo, PORT_MIN), min(hi, PORT_MAX)
            for ip in (str(a) for a in netaddr.iter_iprange(t.addr_from, t.addr_to)):
                got = self._from_leased(ip, proto, lo, hi) or self._lease(ip, proto, lo, hi)
                if got is not None:
                    return ip, got
        raise NatExhausted(f"every {proto=} address and port of {len(targets)} NAT "
                           "target(s) is in use")

    def _from_leased(self, ip: str, proto: int, lo: int, hi: int) -> int | None:
        for (lip, lproto, block), used in self.leased.items():
            if lip != ip or lproto != proto:
                continue
            port = self._free_port(block, used, lo, hi)
            if port is not None:
                used.add(port)
                return port
        return None

    @staticmethod
    def _free_port(block: int, used: set[int], lo: int, hi: int) -> int | None:
        start, end = max(block * BLOCK_SIZE, lo), min(block * BLOCK_SIZE + BLOCK_SIZE - 1, hi)
        if end - start + 1 <= len(used):
            return None
        for port in range(start, end + 1):
            if port not in used:
                return port
        return None

    def _lease(self, ip: str, proto: int, lo: int, hi: int) -> int | None:
        blocks = _blocks(lo, hi)
        first = zlib.crc32(f"{self.salt}|{ip}|{proto}".encode()) % len(blocks)
        for i in range(len(blocks)):
            block = blocks[(first + i) % len(blocks)]
            if (ip, proto, block) in self.leased:
                continue
            if self.leaser.try_lease(ip, proto, block):
                used: set[int] = set()
                port = self._free_port(block, used, lo, hi)
                if port is None:  # the range covers none of this block's ports
                    self.leaser.release(ip, proto, block)
                    continue
                used.add(port)
                self.leased[(ip, proto, block)] = used
                return port
        return None

    def free(self, ip: str, port: int, proto: int) -> None:
        key = (ip, proto, port // BLOCK_SIZE)
        used = self.leased.get(key)
        if used is None:
            return
        used.discard(port)
        if not used:
            del self.leased[key]
            self.leaser.release(*key)

    def in_use(self) -> set[tuple[str, int, int]]:
        """(ip, port, proto) of every live binding of this host."""
        return {(ip, p, proto) for (ip, proto, _), used in self.leased.items() for p in used}
