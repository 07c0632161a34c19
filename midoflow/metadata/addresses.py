"""Per-port link-local addresses (pure).

A VM's request to 169.254.169.254:80 leaves OVS with its source rewritten to
an address of 169.254.0.0/16 that names the VM's port on this host; the
proxy, listening on 169.254.169.254 in the same network, tells the port from
the peer address (VMs of different tenants may share an IP address; their
ports never share one of these). The preferred address derives from the
port's tunnel key, so it is the same across agent restarts; a collision
takes the next free one. The network, broadcast and 169.254.169.254 itself
are never given.
"""

from __future__ import annotations

from netaddr import IPAddress, IPNetwork

NETWORK = IPNetwork("169.254.0.0/16")
METADATA_IP = "169.254.169.254"
_BASE = int(NETWORK.network)
_SIZE = NETWORK.size - 2  # offsets 1 .. size-2 (no network, no broadcast)
_RESERVED = int(IPAddress(METADATA_IP)) - _BASE


class PoolExhausted(RuntimeError):
    """Every link-local address is given (65,533 ports on one host)."""


class LinkLocalPool:
    """Addresses of the ports bound on this host: stable while bound,
    never two ports with one address."""

    def __init__(self) -> None:
        self._by_port: dict[str, int] = {}
        self._by_offset: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._by_port)

    def assign(self, port_id: str, tunnel_key: int) -> str:
        """The port's address (the same as before while it keeps it)."""
        off = self._by_port.get(port_id)
        if off is None:
            off = self._free(1 + tunnel_key % _SIZE)
            self._by_port[port_id] = off
            self._by_offset[off] = port_id
        return str(IPAddress(_BASE + off))

    def _free(self, start: int) -> int:
        for i in range(_SIZE):
            off = 1 + (start - 1 + i) % _SIZE
            if off != _RESERVED and off not in self._by_offset:
                return off
        raise PoolExhausted(f"every address of {NETWORK} is given to a port on this host")

    def release(self, port_id: str) -> None:
        off = self._by_port.pop(port_id, None)
        if off is not None:
            del self._by_offset[off]

    def address_of(self, port_id: str) -> str | None:
        off = self._by_port.get(port_id)
        return None if off is None else str(IPAddress(_BASE + off))

    def port_of(self, address: str) -> str | None:
        """The port an address names, None for any other text."""
        try:
            ip = IPAddress(address, 4)
        except Exception:  # netaddr raises several types for bad text
            return None
        if ip not in NETWORK:
            return None
        return self._by_offset.get(int(ip) - _BASE)

    def ports(self) -> set[str]:
        return set(self._by_port)
