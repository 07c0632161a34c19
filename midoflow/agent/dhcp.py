"""DHCP answered by the agent of the VM's host (issue 12): for a VM port on
a bridge with an enabled DHCP subnet holding the port's first fixed IP, the
lease that port gets and the frame that answers its client. Never a flow:
each request is answered by a packet-out of the reply through the port.

The lease: the port's address and the subnet's prefix, gateway (option 3,
and the default route in option 121 when host routes are sent), DNS
servers, domain, lease time, the network's MTU (the bridge's ``mtu``, else
the agent's ``default_mtu``: underlay less tunnel overhead), the subnet's
host routes, the port's hostname (else ``host-10-0-0-5``) and extra options.
The replies come from the subnet's server address (``server_ip``, else the
gateway, else the subnet's last host) with the MAC of the router port that
holds that address on the bridge, else a fixed MAC derived from the subnet.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, MutableMapping

from netaddr import AddrFormatError, IPAddress, IPNetwork

from midoflow.dhcp import codec, frames, options, server
from midoflow.metadata.addresses import METADATA_IP
from midoflow.model import DEVICE_BRIDGE, PORT_INTERIOR, DhcpSubnet, Port

LOG = logging.getLogger(__name__)


def server_ip(subnet: DhcpSubnet) -> str:
    if subnet.server_ip:
        return subnet.server_ip
    if subnet.gateway_ip:
        return subnet.gateway_ip
    # the last host address: the first is most often a VM's or the router's
    return str(IPAddress(IPNetwork(subnet.cidr).last - 1))


class DhcpResponder:
    """The agent's DHCP server over the topology cache. ``stats``: the
    agent's counters (``dhcp_<reason>`` each); ``malformed``: called with a
    reason for a request that cannot be parsed."""

    def __init__(self, cache, stats: MutableMapping[str, int],
                 malformed: Callable[[str], None] = lambda reason: None,
                 metadata_route: bool = False) -> None:
        self.cache = cache
        self.stats = stats
        self.malformed = malformed
        # A subnet without a gateway (no router: no default route) gets an
        # on-link route to the metadata address, whose ARP this host's agent
        # answers (Neutron's isolated-network metadata, without its DHCP port).
        self.metadata_route = metadata_route

    def _count(self, reason: str) -> None:
        key = "dhcp_" + reason
        self.stats[key] = self.stats.get(key, 0) + 1

    def subnet_for(self, port_id: str) -> tuple[Port, DhcpSubnet] | None:
        """The port and its enabled DHCP subnet, or None: not served here."""
        port = self.cache.ports.get(port_id)
        if port is None or port.device_type != DEVICE_BRIDGE or not port.fixed_ips:
            return None
        try:
            ip = IPAddress(port.fixed_ips[0], 4)
        except (AddrFormatError, ValueError):
            return None
        for s in self.cache.dhcp_subnets(port.device_id):
            if s.enabled and ip in IPNetwork(s.cidr):
                return port, s
        return None

    def lease(self, port: Port, subnet: DhcpSubnet) -> server.Lease:
        bridge = self.cache.bridges.get(port.device_id)
        mtu = (bridge.mtu if bridge is not None else None) or self.cache.default_mtu
        extra = []
        siaddr = server.ANY
        for name, value in port.extra_dhcp_opts:
            try:
                if name == options.SIADDR_NAME:
                    siaddr = str(IPAddress(value.strip(), 4))
                    continue
                extra.append(options.extra(name, value))
            except (options.OptionError, AddrFormatError, ValueError) as e:
                self._count("bad_option")
                LOG.warning("port %s: extra DHCP option left out: %s", port.id, e)
        ip = port.fixed_ips[0]
        return server.Lease(
            ip=ip, prefix=IPNetwork(subnet.cidr).prefixlen, server_ip=server_ip(subnet),
            gateway=subnet.gateway_ip, dns=tuple(subnet.dns_servers),
            domain=subnet.domain_name, lease_time=subnet.lease_time, mtu=mtu,
            routes=self._routes(subnet),
            hostname=port.hostname or "host-" + ip.replace(".", "-"), extra=tuple(extra),
            siaddr=siaddr)

    def _routes(self, subnet: DhcpSubnet) -> tuple[tuple[str, str], ...]:
        routes = tuple(subnet.host_routes)
        if self.metadata_route and not subnet.gateway_ip and not any(
                IPAddress(METADATA_IP) in IPNetwork(c) for c, _ in routes):
            routes += ((f"{METADATA_IP}/32", "0.0.0.0"),)
        return routes

    def server_mac(self, subnet: DhcpSubnet, sip: str) -> str:
        """The MAC of the router port holding ``sip`` on the subnet's bridge,
        else one derived from the subnet (locally administered, unicast)."""
        mac = self._router_mac(subnet, sip)
        if mac is not None:
            return mac
        digest = hashlib.sha256(subnet.id.encode()).digest()
        return "fa:16:3e:" + digest[:3].hex(":")

    def _router_mac(self, subnet: DhcpSubnet, sip: str) -> str | None:
        bridge = self.cache.bridges.get(subnet.bridge_id)
        for pid in bridge.port_ids if bridge is not None else ():
            p = self.cache.ports.get(pid)
            if p is None or p.type != PORT_INTERIOR or not p.peer_id:
                continue
            peer = self.cache.ports.get(p.peer_id)
            if peer is not None and peer.ip_address == sip and peer.mac:
                return peer.mac
        return None

    def server_arp(self, port_id: str, fields: dict) -> tuple[str, str] | None:
        """A served VM's ARP request for its DHCP server's address, which no
        router port holds (a lease is renewed by unicast to the server): the
        (MAC, address) to answer with; None for anything else (a router port
        holding the address answers by simulation)."""
        if fields.get("arp_op") != 1:
            return None
        found = self.subnet_for(port_id)
        if found is None:
            return None
        subnet = found[1]
        sip = server_ip(subnet)
        if fields.get("arp_tpa") != sip or self._router_mac(subnet, sip) is not None:
            return None
        self._count("server_arp")
        return self.server_mac(subnet, sip), sip

    def reply(self, port_id: str, frame: bytes) -> bytes | None:
        """The frame answering a client's request from ``port_id``, or None
        (not answered: its reason counted)."""
        found = self.subnet_for(port_id)
        if found is None:
            self._count("no_subnet")
            return None
        port, subnet = found
        try:
            req = codec.parse(frames.request_payload(frame))
        except codec.DhcpError as e:
            self._count("malformed")
            self.malformed("dhcp_" + e.reason)
            return None
        lease = self.lease(port, subnet)
        outcome = server.answer(req, lease)
        self._count(outcome.reason)
        if outcome.reason == "decline":
            LOG.warning("port %s: DHCPDECLINE of %s from %s (address in use on the network?)",
                        port.id, req.ip_option(options.REQUESTED_IP), req.mac)
        elif outcome.nak:
            LOG.info("port %s: DHCPNAK to %s (asked %s, the port has %s)", port.id, req.mac,
                     req.ip_option(options.REQUESTED_IP) or req.ciaddr, lease.ip)
        if outcome.reply is None:
            return None
        try:
            payload = codec.build(outcome.reply)
        except codec.DhcpError as e:  # an extra option that does not fit, say
            self._count("build_failed")
            LOG.warning("port %s: DHCP reply not built: %s", port.id, e)
            return None
        return frames.reply_frame(payload, outcome.reply,
                                  self.server_mac(subnet, lease.server_ip), lease.server_ip)
