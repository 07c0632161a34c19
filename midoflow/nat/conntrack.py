"""Connection tracking, pure: keys both ways, a table with idle expiry by
protocol (UDP's and ICMP's short, TCP's long, as Linux) and TCP close
handling.

A connection is tracked by the device (port, bridge or router) whose rules
asked for it. When its first packet (the forward flow) passes, the *return*
key -- the reply's 5-tuple at that device -- is recorded; a later packet is
a return flow when its own key is in the table. The agent pushes the return
key to every host that may see the reply before it forwards the first packet
("zero-delay"), and files it in the flow-state store for recovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# IP protocol numbers (IANA); midoflow.sim.packet re-exports them.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

# MidoNet's idle timeout for flow state; refreshed by traffic. Still the TTL
# of NAT bindings and of the store's copy, and of connections of protocols
# without a timeout of their own (below).
IDLE_SECONDS = 60.0
# Per-protocol idle timeouts of a connection, as Linux conntrack's defaults
# (nf_conntrack_*_timeout*): a connection nobody answered goes soon, one
# that was answered ("assured") lives longer. The clock starts when no
# installed flow uses the connection any more (the flow's own idle timeout
# comes first), and every packet simulated for it restarts it.
UDP_UNREPLIED_SECONDS = 30.0   # Linux udp_timeout
UDP_ASSURED_SECONDS = 180.0    # Linux udp_timeout_stream (since 5.x)
ICMP_SECONDS = 30.0            # Linux icmp_timeout (an echo and its replies)
TCP_UNREPLIED_SECONDS = 120.0  # Linux tcp_timeout_syn_sent
# An answered TCP connection (Linux: 5 days established). Bounded by the
# largest TTL a flow-state message carries between hosts (statewire: 3600 s).
TCP_ESTABLISHED_SECONDS = 3600.0
# A TCP connection seen closing (FIN both ways, or RST) lingers this long.
CLOSING_SECONDS = 10.0
TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
_WITH_PORTS = (PROTO_TCP, PROTO_UDP)


class Headers(Protocol):
    """The packet fields a connection key reads (midoflow.sim.packet.Packet)."""

    ip_src: str | None
    ip_dst: str | None
    ip_proto: int | None
    tp_src: int | None
    tp_dst: int | None
    icmp_id: int | None


@dataclass(frozen=True, order=True)
class ConnKey:
    """A connection's 5-tuple at a device. An ICMP echo's identifier stands
    in both port slots; other ICMP carries none (0, 0)."""

    device: str
    proto: int
    src: str
    sport: int
    dst: str
    dport: int

    @classmethod
    def of(cls, device: str, pkt: Headers) -> ConnKey | None:
        """The key of an IPv4 packet at ``device`` (None for non-IP)."""
        if pkt.ip_src is None or pkt.ip_dst is None or pkt.ip_proto is None:
            return None
        if pkt.ip_proto in _WITH_PORTS:
            return cls(device, pkt.ip_proto, pkt.ip_src, pkt.tp_src or 0, pkt.ip_dst,
                       pkt.tp_dst or 0)
        if pkt.ip_proto == PROTO_ICMP and pkt.icmp_id is not None:
            # an echo and its reply share the identifier: it is both "ports"
            return cls(device, pkt.ip_proto, pkt.ip_src, pkt.icmp_id, pkt.ip_dst, pkt.icmp_id)
        return cls(device, pkt.ip_proto, pkt.ip_src, 0, pkt.ip_dst, 0)

    def __hash__(self) -> int:
        # computed once: keys are looked up in several tables per packet and
        # per expiry pass (tens of thousands), and the dataclass's own hash
        # rebuilds its tuple every time
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.device, self.proto, self.src, self.sport, self.dst, self.dport))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        # str hashes differ between processes: never carry a cached one over
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def reverse(self) -> ConnKey:
        """The key of the reply at the same device."""
        return ConnKey(self.device, self.proto, self.dst, self.dport, self.src, self.sport)

    def encode(self) -> str:
        return f"{self.device}|{self.proto}|{self.src}|{self.sport}|{self.dst}|{self.dport}"

    @classmethod
    def decode(cls, text: str) -> ConnKey:
        """Inverse of :meth:`encode`; ValueError on anything else."""
        parts = text.split("|")
        if len(parts) != 6:
            raise ValueError(f"not a connection key: {text!r}")
        dev, proto, src, sport, dst, dport = parts
        return cls(dev, int(proto), src, int(sport), dst, int(dport))


def timeout(proto: int, replied: bool) -> float:
    """A connection's idle timeout by protocol and whether a reply was seen."""
    if proto == PROTO_UDP:
        return UDP_ASSURED_SECONDS if replied else UDP_UNREPLIED_SECONDS
    if proto == PROTO_TCP:
        return TCP_ESTABLISHED_SECONDS if replied else TCP_UNREPLIED_SECONDS
    if proto == PROTO_ICMP:
        return ICMP_SECONDS
    return IDLE_SECONDS


@dataclass
class Conn:
    expires: float
    closing: bool = False
    fin_fwd: bool = False
    fin_ret: bool = False
    replied: bool = False  # a reply was seen here (UDP/TCP: the longer timeout)


class ConnTrackTable:
    """Return keys of live connections, with idle expiry. The clock is the
    caller's (``now`` arguments): no I/O, no threads. ``idle``: one timeout
    for every connection; None (the default): :func:`timeout`'s, by
    protocol and by whether the connection was answered."""

    def __init__(self, idle: float | None = None, closing: float = CLOSING_SECONDS) -> None:
        self.idle = idle
        self.closing = closing
        self._conns: dict[ConnKey, Conn] = {}

    def timeout(self, key: ConnKey, replied: bool = False) -> float:
        """The idle timeout of the connection whose return key is ``key``."""
        return self.idle if self.idle is not None else timeout(key.proto, replied)

    def _idle(self, key: ConnKey, c: Conn) -> float:
        return self.timeout(key, c.replied)

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, key: ConnKey) -> bool:
        return key in self._conns

    def keys(self) -> list[ConnKey]:
        return list(self._conns)

    def track(self, forward: ConnKey, now: float) -> ConnKey:
        """Record a connection by its forward key; returns its return key."""
        ret = forward.reverse()
        c = self._conns.get(ret)
        if c is None or c.closing:
            self._conns[ret] = Conn(now + self.timeout(ret))
        else:
            c.expires = max(c.expires, now + self._idle(ret, c))
        return ret

    def replied(self, ret: ConnKey, now: float) -> None:
        """A reply of the connection was seen (``ret``, its return key):
        from now on it has its protocol's longer timeout (Linux: assured)."""
        c = self._conns.get(ret)
        if c is not None and not c.closing:
            c.replied = True
            c.expires = max(c.expires, now + self._idle(ret, c))

    def install(self, ret: ConnKey, now: float, ttl: float | None = None) -> None:
        """Accept a return key pushed by another host or recovered from the store."""
        until = now + (self.timeout(ret) if ttl is None else ttl)
        c = self._conns.get(ret)
        if c is None:
            self._conns[ret] = Conn(until)
        else:
            c.expires = max(c.expires, until)

    def is_return(self, key: ConnKey, now: float) -> bool:
        """Is a packet with this key the reply of a tracked connection?"""
        c = self._conns.get(key)
        if c is None:
            return False
        if c.expires <= now:
            del self._conns[key]
            return False
        return True

    def live(self, key: ConnKey, now: float) -> bool:
        """:meth:`is_return` without its side effect (an expired key stays
        until :meth:`expire`): for read-only views."""
        c = self._conns.get(key)
        return c is not None and c.expires > now

    def refresh(self, ret: ConnKey, now: float) -> None:
        c = self._conns.get(ret)
        if c is not None and not c.closing:
            c.expires = max(c.expires, now + self._idle(ret, c))

    def tcp_flags(self, key: ConnKey, flags: int, now: float) -> None:
        """A TCP segment of a tracked connection (``key`` as seen: a forward
        or a return key): RST closes it; FIN from both sides closes it."""
        if key.proto != PROTO_TCP:
            return
        ret, is_fwd = (key.reverse(), True) if key.reverse() in self._conns else (key, False)
        c = self._conns.get(ret)
        if c is None:
            return
        if flags & TCP_RST:
            c.closing, c.expires = True, min(c.expires, now + self.closing)
            return
        if flags & TCP_FIN:
            if is_fwd:
                c.fin_fwd = True
            else:
                c.fin_ret = True
            if c.fin_fwd and c.fin_ret:
                c.closing, c.expires = True, min(c.expires, now + self.closing)

    def remove(self, ret: ConnKey) -> None:
        self._conns.pop(ret, None)

    def expire(self, now: float, keep: set[ConnKey] | frozenset = frozenset()) -> list[ConnKey]:
        """Drop and return the return keys of idle or closed connections;
        ``keep``: keys an installed flow still uses (their idle time starts
        when the flow goes)."""
        for k in keep:
            c = self._conns.get(k)
            if c is not None and not c.closing:
                c.expires = max(c.expires, now + self._idle(k, c))
        gone = [k for k, c in self._conns.items() if c.expires <= now]
        for k in gone:
            del self._conns[k]
        return gone


def icmp_is_error(pkt: Headers) -> bool:
    """ICMP errors relate to a connection by the packet they quote."""
    return pkt.ip_proto == PROTO_ICMP and pkt.tp_src in (3, 4, 5, 11, 12)
