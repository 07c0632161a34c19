"""The DHCP server's decision for one port (RFC 2131 4.3), pure: the
request and the port's ``Lease`` in, a reply (or none) and a reason out.

The address is the port's fixed IP and nothing else, so there is no pool
and no lease database: DISCOVER -> OFFER of it; REQUEST -> ACK when the
address asked for (option 50 when SELECTING or INIT-REBOOT, ``ciaddr``
when RENEWING or REBINDING) is the port's, else NAK at once (a REQUEST
naming another server, option 54, is that server's business and ignored);
INFORM -> ACK with the configuration and no lease; RELEASE and DECLINE are
counted and not answered. Anything else is not answered either and its
reason counted.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from netaddr import IPNetwork

from midoflow.dhcp import options as o
from midoflow.dhcp.codec import (
    ACK,
    BOOTREPLY,
    BOOTREQUEST,
    DECLINE,
    DISCOVER,
    HTYPE_ETHER,
    INFORM,
    NAK,
    OFFER,
    OPT_MESSAGE_TYPE,
    RELEASE,
    REQUEST,
    DhcpMessage,
)

ANY = "0.0.0.0"


@dataclass(frozen=True)
class Lease:
    """What one port gets: its address in its subnet and the configuration.
    ``lease_time`` -1: infinite. ``routes``: the subnet's host routes
    (cidr, next hop). ``extra``: the port's extra options, encoded; they
    replace the option of the same code."""

    ip: str
    prefix: int
    server_ip: str
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    domain: str = ""
    lease_time: int = 86400
    mtu: int | None = None
    routes: tuple[tuple[str, str], ...] = ()
    hostname: str = ""
    extra: tuple[tuple[int, bytes], ...] = ()
    siaddr: str = ANY  # the next server (PXE): dnsmasq's "server-ip-address"

    def options(self, with_lease: bool = True) -> list[tuple[int, bytes]]:
        """Every option of an OFFER/ACK (after 53 and 54), in code order."""
        net = IPNetwork(f"{self.ip}/{self.prefix}")
        opts: dict[int, bytes] = {o.SUBNET_MASK: o.mask(self.prefix)}
        if self.gateway:
            opts[o.ROUTER] = o.encode(o.ROUTER, self.gateway)
        if self.dns:
            opts[o.DNS] = o.encode(o.DNS, self.dns)
        if self.hostname:
            opts[o.HOSTNAME] = self.hostname.encode()
        if self.domain:
            opts[o.DOMAIN_NAME] = self.domain.encode()
        if self.mtu:
            opts[o.MTU] = struct.pack("!H", self.mtu)
        opts[o.BROADCAST] = o.encode(o.BROADCAST, str(net.broadcast or net.network))
        if with_lease:
            t = o.INFINITE if self.lease_time < 0 else self.lease_time
            opts[o.LEASE_TIME] = struct.pack("!I", t)
            if t != o.INFINITE:
                opts[o.RENEWAL] = struct.pack("!I", t // 2)
                opts[o.REBINDING] = struct.pack("!I", t * 7 // 8)
        if self.routes:
            # RFC 3442: a client given option 121 ignores option 3, so the
            # default route goes in it too.
            pairs = list(self.routes)
            if self.gateway and not any(IPNetwork(c).prefixlen == 0 for c, _ in pairs):
                pairs.append(("0.0.0.0/0", self.gateway))
            opts[o.CLASSLESS_ROUTES] = o.routes(pairs)
        for code, value in self.extra:
            opts[code] = value
        return sorted(opts.items())


@dataclass(frozen=True)
class Outcome:
    """A reply (None: no answer) and why: a counter name."""

    reply: DhcpMessage | None
    reason: str

    @property
    def nak(self) -> bool:
        return self.reply is not None and self.reply.message_type == NAK


def _reply(req: DhcpMessage, kind: int, lease: Lease, yiaddr: str, ciaddr: str,
           opts: list[tuple[int, bytes]]) -> DhcpMessage:
    head = [(OPT_MESSAGE_TYPE, bytes((kind,))),
            (o.SERVER_ID, socket.inet_aton(lease.server_ip))]
    client_id = req.option(o.CLIENT_ID)
    tail = [(o.CLIENT_ID, client_id)] if client_id is not None else []  # RFC 6842
    return DhcpMessage(op=BOOTREPLY, xid=req.xid, chaddr=req.chaddr, htype=req.htype,
                       flags=req.flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=lease.siaddr,
                       giaddr=req.giaddr,
                       options=tuple(head + opts + tail))


def answer(req: DhcpMessage, lease: Lease) -> Outcome:
    """What the server says to ``req`` from the port whose lease is ``lease``."""
    if req.op != BOOTREQUEST or req.htype != HTYPE_ETHER or len(req.chaddr) != 6:
        return Outcome(None, "not_ethernet_request")
    if req.giaddr != ANY:
        return Outcome(None, "relayed")  # our clients are on the port itself
    kind = req.message_type
    if kind == DISCOVER:
        return Outcome(_reply(req, OFFER, lease, lease.ip, ANY, lease.options()), "offer")
    if kind == REQUEST:
        server = req.ip_option(o.SERVER_ID)
        if server is not None and server != lease.server_ip:
            return Outcome(None, "other_server")
        asked = req.ip_option(o.REQUESTED_IP) or (req.ciaddr if req.ciaddr != ANY else None)
        if asked != lease.ip:
            why = (f"address {asked} is not this port's" if asked
                   else "no address requested").encode()
            return Outcome(_reply(req, NAK, lease, ANY, ANY, [(o.MESSAGE, why)]), "nak")
        return Outcome(_reply(req, ACK, lease, lease.ip, req.ciaddr, lease.options()), "ack")
    if kind == INFORM:
        return Outcome(_reply(req, ACK, lease, ANY, req.ciaddr, lease.options(False)),
                       "inform")
    if kind == RELEASE:
        return Outcome(None, "release")
    if kind == DECLINE:
        return Outcome(None, "decline")
    if kind is None:
        return Outcome(None, "no_message_type")
    return Outcome(None, "unexpected_type")
