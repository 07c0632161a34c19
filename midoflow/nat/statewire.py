"""Flow state on the wire between agents: a frame sent over the tunnel with
the reserved tunnel key, delivered by the peer's OVS to its agent. Pure."""

from __future__ import annotations

import json

from midoflow.nat.bindings import NatBinding
from midoflow.nat.conntrack import ConnKey
from midoflow.nat.lbstate import Sticky

ETHERTYPE = 0x88B5  # IEEE local experimental
MAGIC = b"MFS1"
# Locally administered addresses; the frame never reaches a VM.
SRC_MAC = bytes.fromhex("02000000fe01")
DST_MAC = bytes.fromhex("02000000fe02")
MAX_KEYS = 256


def encode(keys: list[ConnKey], ttl: int, nat: list[NatBinding] = (),
           closing: list[tuple[ConnKey, int]] = (), sticky: list[Sticky] = (),
           now: float = 0.0, bound: tuple[str, list[str]] | None = None) -> bytes:
    """``keys``: return keys to install; ``closing``: (key as seen, TCP flags)
    of FIN or RST segments, so both ends' hosts see both halves close;
    ``sticky``: a load balancer's SOURCE_IP entries (their time left at
    ``now``, each its own lifetime); ``bound``: (the sender's host id, ports
    it has just bound), the store's news before the store has it."""
    msg: dict = {"ct": [k.encode() for k in keys[:MAX_KEYS]], "ttl": ttl}
    if bound:
        msg["host"], msg["bound"] = bound[0], list(bound[1][:MAX_KEYS])
    if nat:
        msg["nat"] = [b.encode() for b in nat[:MAX_KEYS]]
    if sticky:
        msg["lb"] = [s.wire(now) for s in sticky[:MAX_KEYS]]
    if closing:
        msg["close"] = [[k.encode(), f] for k, f in closing[:MAX_KEYS]]
    body = json.dumps(msg, separators=(",", ":")).encode()
    return DST_MAC + SRC_MAC + ETHERTYPE.to_bytes(2, "big") + MAGIC + body


def decode_all(frame: bytes) -> tuple[list[ConnKey], list[NatBinding], int]:
    """Return keys, NAT bindings and their TTL; ValueError on anything else."""
    keys, nat, _closing, ttl = decode_full(frame)
    return keys, nat, ttl


def _message(frame: bytes) -> tuple[dict, int]:
    """The frame's JSON body, parsed once, and its TTL; ValueError else."""
    if len(frame) < 18 or frame[12:14] != ETHERTYPE.to_bytes(2, "big") \
            or frame[14:18] != MAGIC:
        raise ValueError("not a flow-state frame")
    try:
        msg = json.loads(frame[18:].rstrip(b"\x00"))
        ttl = int(msg["ttl"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"bad flow-state payload: {e}") from None
    if not 0 < ttl <= 3600:
        raise ValueError(f"bad flow-state ttl {ttl}")
    return msg, ttl


def decode_full(frame: bytes):
    """(return keys, NAT bindings, closing (key, flags) pairs, TTL)."""
    msg, ttl = _message(frame)
    try:
        keys = [ConnKey.decode(k) for k in msg["ct"][:MAX_KEYS]]
        nat = [NatBinding.decode(b) for b in msg.get("nat", [])[:MAX_KEYS]]
        closing = [(ConnKey.decode(k), int(f)) for k, f in msg.get("close", [])[:MAX_KEYS]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"bad flow-state payload: {e}") from None
    return keys, nat, closing, ttl


def decode(frame: bytes) -> tuple[list[ConnKey], int]:
    """Inverse of :func:`encode` (without NAT); ValueError on anything else."""
    msg, ttl = _message(frame)
    try:
        keys = [ConnKey.decode(k) for k in msg["ct"][:MAX_KEYS]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"bad flow-state payload: {e}") from None
    return keys, ttl


def decode_bound(frame: bytes) -> tuple[str, list[str]] | None:
    """(the sender's host id, the ports it has just bound) of a message that
    says so, None for one that does not; ValueError for a bad one."""
    msg, _ttl = _message(frame)
    if "bound" not in msg:
        return None
    host, ports = msg.get("host"), msg["bound"]
    if not isinstance(host, str) or not 0 < len(host) <= 64 or not isinstance(ports, list) \
            or not all(isinstance(p, str) and 0 < len(p) <= 64 for p in ports[:MAX_KEYS]):
        raise ValueError("bad flow-state payload: bound ports")
    return host, ports[:MAX_KEYS]


def decode_sticky(frame: bytes, now: float) -> list[Sticky]:
    """The sticky entries of a message, expiring from ``now``; ValueError
    for a bad one."""
    msg, _ttl = _message(frame)
    try:
        return [Sticky.from_wire(item, now) for item in msg.get("lb", [])[:MAX_KEYS]]
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad flow-state payload: {e}") from None
