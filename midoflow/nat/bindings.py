"""NAT bindings, pure: what a SNAT or DNAT rule decided for a connection,
keyed both ways so the reply is translated back at the same device.

``fwd``: the connection's key at the device before translation;
``rev``: the key of the reply as it arrives at the device (after translation)
-- a rev_snat / rev_dnat rule looks it up to restore ``orig``."""

from __future__ import annotations

from dataclasses import dataclass

from midoflow.nat.conntrack import PROTO_ICMP, ConnKey

SNAT, DNAT = "snat", "dnat"


@dataclass(frozen=True)
class NatBinding:
    kind: str  # snat: the source was translated; dnat: the destination
    fwd: ConnKey
    orig: tuple[str, int]  # the address and port before translation
    xlated: tuple[str, int]  # after

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")  # computed once, as ConnKey's
        if h is None:
            h = hash((self.kind, self.fwd, self.orig, self.xlated))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        # str hashes differ between processes: never carry a cached one over
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    @property
    def rev(self) -> ConnKey:
        f = self.fwd
        if f.proto == PROTO_ICMP and f.sport == f.dport:  # an echo: the id is both ports
            if self.kind == SNAT:
                return ConnKey(f.device, f.proto, f.dst, self.xlated[1], self.xlated[0],
                               self.xlated[1])
            return ConnKey(f.device, f.proto, self.xlated[0], f.sport, f.src, f.sport)
        if self.kind == SNAT:  # reply: from the original destination to the new source
            return ConnKey(f.device, f.proto, f.dst, f.dport, self.xlated[0], self.xlated[1])
        return ConnKey(f.device, f.proto, self.xlated[0], self.xlated[1], f.src, f.sport)

    def encode(self) -> str:
        return (f"{self.kind}|{self.fwd.encode()}|{self.orig[0]}|{self.orig[1]}|"
                f"{self.xlated[0]}|{self.xlated[1]}")

    @classmethod
    def decode(cls, text: str) -> NatBinding:
        parts = text.split("|")
        if len(parts) != 11 or parts[0] not in (SNAT, DNAT):
            raise ValueError(f"not a NAT binding: {text!r}")
        return cls(parts[0], ConnKey.decode("|".join(parts[1:7])), (parts[7], int(parts[8])),
                   (parts[9], int(parts[10])))


class NatTable:
    """A host's NAT bindings, by forward key and by reply key."""

    def __init__(self) -> None:
        self.by_fwd: dict[tuple[str, ConnKey], NatBinding] = {}
        self.by_rev: dict[tuple[str, ConnKey], NatBinding] = {}

    def __len__(self) -> int:
        return len(self.by_fwd)

    def add(self, b: NatBinding) -> None:
        self.by_fwd[(b.kind, b.fwd)] = b
        self.by_rev[(b.kind, b.rev)] = b

    def forward(self, kind: str, key: ConnKey) -> NatBinding | None:
        return self.by_fwd.get((kind, key))

    def reverse(self, kind: str, key: ConnKey) -> NatBinding | None:
        return self.by_rev.get((kind, key))

    def remove(self, b: NatBinding) -> None:
        self.by_fwd.pop((b.kind, b.fwd), None)
        self.by_rev.pop((b.kind, b.rev), None)
