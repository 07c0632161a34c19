"""A virtual L3 router, simulated: ARP for its own addresses, ICMP echo and
errors, longest-prefix match with source prefixes, weights and ECMP, next-hop
resolution through the replicated ARP table, MAC rewrite and TTL decrement.

Pure: reads a TopologyView, writes into the simulation's builder.
"""

from __future__ import annotations

import socket
import zlib
from dataclasses import dataclass

import netaddr

from midoflow.model import (
    DEVICE_BRIDGE,
    PORT_INTERIOR,
    ROUTE_BLACKHOLE,
    ROUTE_DEFAULT_WEIGHT,
    ROUTE_NORMAL,
    ROUTE_REJECT,
    Port,
)
from midoflow.sim import lb
from midoflow.sim.packet import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    ETH_ARP,
    ETH_IP,
    ICMP_ECHO_REQUEST,
    ICMP_TIME_EXCEEDED,
    ICMP_UNREACH,
    PROTO_ICMP,
    UNREACH_FILTER,
    UNREACH_NEEDFRAG,
    UNREACH_NET,
    Packet,
    is_multicast,
)
from midoflow.sim.result import (
    Generated,
    Rewrite,
    _Builder,
    address_tag,
    arp_tag,
    port_tag,
    route_dst_tag,
    router_tag,
    routes_tag,
)
from midoflow.sim.view import TopologyView

# MidoNet's ARP cache timings: an entry older than STALE is still used but
# refreshed by a new request; older than EXPIRE it is not used any more.
ARP_STALE = 1800.0
ARP_EXPIRE = 3600.0
ANY = netaddr.IPNetwork("0.0.0.0/0")
ICMP_ERRORS = (ICMP_UNREACH, ICMP_TIME_EXCEEDED, 4, 5, 12)  # never answered with an error
# MTUs when the view does not say (the agent's cache sets its own from its
# config): VXLAN over a 1500-byte underlay.
DEFAULT_MTU = 1450
UNDERLAY_MTU = 1500


@dataclass(frozen=True)
class Candidate:
    """A route as the lookup sees it (configured, or connected from a port)."""

    dst: netaddr.IPNetwork
    src: netaddr.IPNetwork
    port_id: str | None
    gateway: str | None
    weight: int
    type: str
    id: str


def _network(port: Port) -> netaddr.IPNetwork | None:
    if port.ip_address is None or port.prefix_len is None:
        return None
    return netaddr.IPNetwork(f"{port.ip_address}/{port.prefix_len}").cidr


def candidates(view: TopologyView, router_id: str, ports: list[Port]) -> list[Candidate]:
    """Connected networks of the router's ports, then its configured routes."""
    out = []
    for p in ports:
        net = _network(p)
        if net is not None:
            out.append(Candidate(net, ANY, p.id, None, 0, ROUTE_NORMAL, f"connected:{p.id}"))
    for r in view.routes(router_id):
        out.append(Candidate(netaddr.IPNetwork(r.dst_cidr), netaddr.IPNetwork(r.src_cidr),
                             r.next_hop_port, r.next_hop_gateway,
                             r.weight if r.weight is not None else ROUTE_DEFAULT_WEIGHT,
                             r.type, r.id))
    return out


def _ip_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


@dataclass(frozen=True)
class Table:
    """A router's routes compiled for lookup: (preference key, dst net, dst
    mask, src net, src mask, candidate), best preference first."""

    rows: tuple[tuple[tuple[int, int, int], int, int, int, int, Candidate], ...]
    has_src: bool


def compile_table(cands: list[Candidate]) -> Table:
    rows = []
    for c in cands:
        key = (c.dst.prefixlen, c.src.prefixlen, -c.weight)
        rows.append((key, int(c.dst.network), int(c.dst.netmask), int(c.src.network),
                     int(c.src.netmask), c))
    rows.sort(key=lambda r: (r[0], r[5].id), reverse=True)
    return Table(tuple(rows), any(c.src.prefixlen for c in cands))


def lookup(cands: list[Candidate] | Table, src: str, dst: str) -> list[Candidate]:
    """The best routes for (src, dst): longest destination prefix, then
    longest source prefix, then lowest weight; several left means ECMP."""
    table = cands if isinstance(cands, Table) else compile_table(cands)
    s, d = _ip_int(src or "0.0.0.0"), _ip_int(dst)
    best: list[Candidate] = []
    best_key = None
    for key, dnet, dmask, snet, smask, c in table.rows:
        if best_key is not None and key != best_key:
            break
        if d & dmask == dnet and s & smask == snet:
            best_key = key
            best.append(c)
    return sorted(best, key=lambda c: c.id)


# Compiled tables by the identity of what they were compiled from (the agent's
# cache and the views replace an object when it changes, never mutate it).
_TABLES: dict[tuple[int, ...], tuple[tuple[object, ...], Table]] = {}
_TABLES_MAX = 4096


def table_for(view: TopologyView, router_id: str, router, ports: list[Port]) -> Table:
    routes = view.routes(router_id)
    objs = (router, routes, *ports)
    key = tuple(id(o) for o in objs)
    hit = _TABLES.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], objs, strict=True)):
        return hit[1]
    table = compile_table(candidates(view, router_id, ports))
    if len(_TABLES) >= _TABLES_MAX:
        _TABLES.clear()
    _TABLES[key] = (objs, table)
    return table


def flow_hash(pkt: Packet) -> int:
    """A stable hash of the 5-tuple: the same flow always takes the same path."""
    key = f"{pkt.ip_src}|{pkt.ip_dst}|{pkt.ip_proto}|{pkt.tp_src}|{pkt.tp_dst}"
    return zlib.crc32(key.encode())


def _gen(kind: str, out_port: str, **fields) -> Generated:
    return Generated(kind, out_port, tuple(sorted(fields.items())))


def icmp_error(b: _Builder, inport: Port, pkt: Packet, icmp_type: int, code: int,
               why: str) -> None:
    """Answer ``pkt`` with an ICMP error from ``inport`` (never about an ICMP
    error, a broadcast or a packet without a source)."""
    b.cacheable = False
    if (pkt.ip_proto == PROTO_ICMP and pkt.tp_src in ICMP_ERRORS) or not pkt.ip_src \
            or pkt.eth_dst == BROADCAST or inport.ip_address is None:
        b.step("router", inport.device_id, f"{why}: drop (no ICMP error for this packet)")
        return
    b.generated.append(_gen("icmp_error", inport.id, icmp_type=icmp_type, icmp_code=code,
                            eth_src=inport.mac, eth_dst=pkt.eth_src,
                            ip_src=inport.ip_address, ip_dst=pkt.ip_src))
    b.step("router", inport.device_id,
           f"{why}: ICMP type {icmp_type} code {code} to {pkt.ip_src}")


def reject(b: _Builder, inport: Port, pkt: Packet) -> None:
    """A filter rejected ``pkt``: ICMP administratively prohibited to its
    sender, sent back out of the port it came in by, from the address it
    was sent to (as a host firewall answers)."""
    b.cacheable = False
    if pkt.ip_src is None or pkt.ip_dst is None or pkt.eth_dst == BROADCAST or (
            pkt.ip_proto == PROTO_ICMP and pkt.tp_src in ICMP_ERRORS):
        return
    b.generated.append(_gen("icmp_error", inport.id, icmp_type=ICMP_UNREACH,
                            icmp_code=UNREACH_FILTER, eth_src=pkt.eth_dst,
                            eth_dst=pkt.eth_src, ip_src=pkt.ip_dst, ip_dst=pkt.ip_src))


def egress_mtu(view: TopologyView, port: Port) -> int | None:
    """The MTU of the link behind a router port: its own ``mtu`` if set; an
    interior port linked to a bridge: that bridge's ``mtu``, else the view's
    ``default_mtu`` (the underlay less the tunnel overhead); an exterior port
    (an uplink): the view's ``underlay_mtu``. None: no limit of its own (an
    interior port linked to another router: a virtual wire, the next router
    checks its own egress)."""
    if port.mtu:
        return port.mtu
    if port.type == PORT_INTERIOR:
        peer = view.port(port.peer_id) if port.peer_id else None
        if peer is None or peer.device_type != DEVICE_BRIDGE:
            return None
        bridge = view.bridge(peer.device_id)
        if bridge is not None and bridge.mtu:
            return bridge.mtu
        return getattr(view, "default_mtu", DEFAULT_MTU)
    return getattr(view, "underlay_mtu", UNDERLAY_MTU)


def frag_needed(b: _Builder, inport: Port, pkt: Packet, mtu: int) -> None:
    """ICMP fragmentation needed and DF set (type 3 code 4) with the next-hop
    MTU (RFC 1191), from ``inport`` to the sender; never about an ICMP error,
    a broadcast or a packet without a source."""
    b.cacheable = False
    why = f"{pkt.ip_len} bytes with DF set, next-hop MTU {mtu}"
    if (pkt.ip_proto == PROTO_ICMP and pkt.tp_src in ICMP_ERRORS) or not pkt.ip_src \
            or pkt.eth_dst == BROADCAST or inport.ip_address is None:
        b.step("router", inport.device_id, f"{why}: drop (no ICMP error for this packet)")
        return
    b.generated.append(_gen("icmp_error", inport.id, icmp_type=ICMP_UNREACH,
                            icmp_code=UNREACH_NEEDFRAG, mtu=mtu, eth_src=inport.mac,
                            eth_dst=pkt.eth_src, ip_src=inport.ip_address, ip_dst=pkt.ip_src))
    b.step("router", inport.device_id, f"{why}: ICMP fragmentation needed to {pkt.ip_src}")


def _check_mtu(view: TopologyView, inport: Port, out: Port, pkt: Packet,
               b: _Builder) -> bool:
    """The MTU of the egress link: False (dropped, answered with ICMP
    fragmentation needed) when the packet is bigger and has DF set. A
    bigger packet without DF goes on, to be split by the agent; a path
    onto a smaller link than the one the packet came in by records the
    MTU (``b.mtu``) so its flow sends bigger packets to the agent."""
    mtu = egress_mtu(view, out)
    if mtu is None:
        return True
    if pkt.ip_len > mtu:
        if pkt.ip_df:
            frag_needed(b, inport, pkt, mtu)
            return False
        b.step("router", inport.device_id,
               f"{pkt.ip_len} bytes, next-hop MTU {mtu}: fragmented by the agent")
    else:
        came = egress_mtu(view, inport)  # None: from another router, size unknown
        if came is not None and mtu >= came:
            return True  # the link is not smaller than the one the packet came in by
    b.mtu = mtu if b.mtu is None else min(b.mtu, mtu)
    return True


def route(view: TopologyView, inport: Port, pkt: Packet, b: _Builder,
          now: float) -> tuple[Port, Packet] | None:
    """One router: the port the packet leaves through and the packet as it
    leaves, or None when the router consumed or dropped it."""
    rid = inport.device_id
    b.tags.add(router_tag(rid))
    router = view.router(rid)
    if router is None:
        b.step("router", rid, "router missing: drop")
        return None
    if not router.admin_state_up:
        b.step("router", rid, "router is down: drop")
        return None
    ports = [p for p in (view.port(pid) for pid in router.port_ids) if p is not None]
    b.fields.update(("eth_dst", "eth_type"))

    if pkt.eth_type == ETH_ARP:
        own = {p.ip_address for p in ports if p.ip_address}
        vips = lb.vip_addresses(view, rid)
        net = _network(inport) if vips else None
        here = {a for a in vips if net is not None and netaddr.IPAddress(a) in net}
        _arp(inport, pkt, b, own | vips | {a for p in ports for a in p.proxy_arp}, here)
        return None
    if pkt.eth_dst != inport.mac:
        b.step("router", rid, f"{pkt.eth_dst} is not port {inport.id}'s MAC: drop")
        return None
    if pkt.eth_type != ETH_IP:
        b.step("router", rid, f"ethertype {pkt.eth_type:#06x} not routed: drop")
        return None
    if pkt.ip_dst is None:  # IPv4 whose header did not parse: no flow for it
        b.cacheable = False
        b.step("router", rid, "malformed IPv4 header: drop")
        return None

    b.fields.add("ip_dst")
    mine = {p.ip_address: p for p in ports if p.ip_address}
    if pkt.ip_dst in mine:
        b.tags.add(route_dst_tag(rid, pkt.ip_dst, 32))  # until that address moves
        b.fields.update(("ip_proto", "tp_src"))
        if pkt.ip_proto == PROTO_ICMP and pkt.tp_src == ICMP_ECHO_REQUEST:
            b.cacheable = False
            b.generated.append(_gen("icmp_echo_reply", inport.id, eth_src=inport.mac,
                                    eth_dst=pkt.eth_src, ip_src=pkt.ip_dst,
                                    ip_dst=pkt.ip_src))
            b.step("router", rid, f"ICMP echo request to its address {pkt.ip_dst}: reply")
        else:
            b.step("router", rid, f"to its own address {pkt.ip_dst}: drop")
        return None

    if pkt.ip_ttl <= 1:
        icmp_error(b, inport, pkt, ICMP_TIME_EXCEEDED, 0, f"TTL {pkt.ip_ttl} expires here")
        return None

    b.tags.add(routes_tag(rid))
    table = table_for(view, rid, router, ports)
    if table.has_src:
        b.fields.add("ip_src")
    best = lookup(table, pkt.ip_src or "0.0.0.0", pkt.ip_dst)
    if not best:
        icmp_error(b, inport, pkt, ICMP_UNREACH, UNREACH_NET, f"no route to {pkt.ip_dst}")
        return None
    chosen = best[0]
    # Only a change of the routes for a prefix that holds this destination,
    # as specific as the answer or more, can change it (FlowIndex.invalidate).
    b.tags.add(route_dst_tag(rid, pkt.ip_dst, chosen.dst.prefixlen))
    if len(best) > 1:
        b.fields.update(("ip_src", "ip_proto", "tp_src", "tp_dst"))
        chosen = best[flow_hash(pkt) % len(best)]
        b.step("router", rid, f"ECMP: {len(best)} equal routes, flow hash picks {chosen.id}")
    if chosen.type == ROUTE_BLACKHOLE:
        b.step("router", rid, f"route {chosen.id} ({chosen.dst}) is a blackhole: drop")
        return None
    if chosen.type == ROUTE_REJECT:
        icmp_error(b, inport, pkt, ICMP_UNREACH, UNREACH_FILTER,
                   f"route {chosen.id} ({chosen.dst}) rejects")
        return None
    out = view.port(chosen.port_id) if chosen.port_id else None
    if chosen.port_id:
        b.tags.add(port_tag(chosen.port_id))
    if out is None or out.device_id != rid or not out.admin_state_up:
        icmp_error(b, inport, pkt, ICMP_UNREACH, UNREACH_NET,
                   f"route {chosen.id} leads to a missing or down port")
        return None
    if not _check_mtu(view, inport, out, pkt, b):
        return None
    hop = chosen.gateway or pkt.ip_dst
    via = f"via {chosen.gateway}" if chosen.gateway else "directly connected"
    b.step("router", rid, f"{pkt.ip_dst} matches {chosen.dst} ({chosen.id}): out port "
                          f"{out.id}, {via}")

    known = _address_port(view, out, hop, b)
    if known is not None:  # the VM's port says its MAC: no ARP (as OVN, and
        # MidoNet's Neutron plugin seeding its bridges' ARP tables)
        mac = known.mac
        b.rewrites += [Rewrite("eth_src", out.mac), Rewrite("eth_dst", mac), Rewrite("ttl", 1)]
        b.step("router", rid, f"next hop {hop} is port {known.id}'s address, MAC {mac} "
                              f"(no ARP): eth {out.mac} -> {mac}, TTL {pkt.ip_ttl} -> "
                              f"{pkt.ip_ttl - 1}")
        return out, pkt.evolve(eth_src=out.mac, eth_dst=mac, ip_ttl=pkt.ip_ttl - 1)
    b.tags.add(arp_tag(rid, hop))
    entry = view.arp(rid, hop)
    if entry is None or now - entry[1] > ARP_EXPIRE:
        if out.ip_address is None or out.mac is None:
            b.step("router", rid, f"port {out.id} has no address to ARP from: drop")
            return None
        b.generated.append(_gen("arp_request", out.id, eth_src=out.mac, ip_src=out.ip_address,
                                ip_dst=hop))
        b.wait_arp = (rid, hop)
        b.step("router", rid, f"no ARP entry for {hop}: ARP request out of {out.id}, "
                              "the packet waits")
        return None
    mac = entry[0]
    if now - entry[1] > ARP_STALE:
        b.generated.append(_gen("arp_request", out.id, eth_src=out.mac, ip_src=out.ip_address,
                                ip_dst=hop))
        b.step("router", rid, f"ARP entry for {hop} is stale: refresh it")
    b.rewrites += [Rewrite("eth_src", out.mac), Rewrite("eth_dst", mac), Rewrite("ttl", 1)]
    b.step("router", rid, f"next hop {hop} is {mac}: eth {out.mac} -> {mac}, "
                          f"TTL {pkt.ip_ttl} -> {pkt.ip_ttl - 1}")
    return out, pkt.evolve(eth_src=out.mac, eth_dst=mac, ip_ttl=pkt.ip_ttl - 1)


def _address_port(view: TopologyView, out: Port, hop: str, b: _Builder) -> Port | None:
    """The port of the bridge behind ``out`` that has ``hop`` among its fixed
    addresses, and a MAC: its MAC needs no ARP. The flow depends on that
    bridge's address ``hop`` (tag) and on the port found."""
    peer = view.port(out.peer_id) if out.peer_id else None
    if peer is None or peer.device_type != DEVICE_BRIDGE:
        return None
    b.tags.add(address_tag(peer.device_id, hop))
    port = view.address_port(peer.device_id, hop)
    if port is None or not port.mac:
        return None
    b.tags.add(port_tag(port.id))
    return port


def learnable(inport: Port, own: set[str], spa: str | None, sha: str | None) -> bool:
    """Whether an ARP sender (SPA, SHA) seen on ``inport`` may become an ARP
    entry: a unicast MAC, for a host address of the port's own subnet (not
    its network or broadcast address) that is none of the router's."""
    net = _network(inport)
    if not spa or not sha or net is None or spa in own:
        return False
    if sha == "00:00:00:00:00:00" or is_multicast(sha):
        return False
    try:
        ip = netaddr.IPAddress(spa)
    except (ValueError, netaddr.AddrFormatError):
        return False
    if ip not in net:
        return False
    return net.prefixlen >= 31 or ip not in (net.network, net.broadcast)


def is_gratuitous(pkt: Packet) -> bool:
    """A gratuitous ARP (RFC 5227 announcement, RFC 5944 4.6): a request or a
    reply whose sender and target addresses are both the address announced
    (a VRRP backup taking over a virtual IP sends these), to any destination
    MAC. An ARP probe (sender 0.0.0.0) is not one."""
    return (pkt.arp_op in (ARP_REQUEST, ARP_REPLY) and bool(pkt.arp_spa)
            and pkt.arp_spa != "0.0.0.0" and pkt.arp_spa == pkt.arp_tpa)


def _arp(inport: Port, pkt: Packet, b: _Builder, own: set[str],
         vips: set[str] = frozenset()) -> None:
    """ARP at a router port: answer requests for its address, its
    ``proxy_arp`` addresses (floating IPs) and ``vips`` (the router's VIP
    addresses inside the port's network) with its MAC; learn senders on its
    network (requests and replies addressed to it), never one of the router's
    own addresses or an address outside the port's subnet.

    A gratuitous ARP (:func:`is_gratuitous`) seen on the port, flooded by its
    bridge, creates or replaces the router's entry for the announced address
    when that is a host of the port's subnet (MidoNet's choice; Linux with
    ``arp_accept=0`` only updates an entry it has). Creating one is harmless:
    the sender could answer the router's request for it just as well, and a
    protected port's anti-spoof chain has dropped any ARP whose sender
    address the port may not use before it reaches a router. Any other ARP
    not addressed to the router changes nothing (no cache poisoning from
    broadcasts meant for others)."""
    rid = inport.device_id
    b.cacheable = False  # the router's answer depends on the whole ARP payload
    b.fields.update(("arp_op", "arp_tpa"))
    if inport.ip_address is None or (pkt.arp_tpa != inport.ip_address
                                     and pkt.arp_tpa not in inport.proxy_arp
                                     and pkt.arp_tpa not in vips):
        if inport.ip_address is not None and is_gratuitous(pkt) \
                and learnable(inport, own, pkt.arp_spa, pkt.arp_sha):
            b.arp_learned.append((rid, pkt.arp_spa, pkt.arp_sha))
            b.step("router", rid, f"gratuitous ARP: learn {pkt.arp_spa} is at {pkt.arp_sha}")
            return
        b.step("router", rid, f"ARP for {pkt.arp_tpa}, not port {inport.id}'s address: drop")
        return
    if learnable(inport, own, pkt.arp_spa, pkt.arp_sha):
        b.arp_learned.append((rid, pkt.arp_spa, pkt.arp_sha))
        b.step("router", rid, f"ARP: learn {pkt.arp_spa} is at {pkt.arp_sha}")
    elif pkt.arp_spa and pkt.arp_spa != "0.0.0.0":
        b.step("router", rid, f"ARP: {pkt.arp_spa} at {pkt.arp_sha} not learned "
                              f"(not a host of port {inport.id}'s subnet)")
    if pkt.arp_op == ARP_REQUEST:
        b.generated.append(_gen("arp_reply", inport.id, eth_src=inport.mac,
                                eth_dst=pkt.arp_sha or pkt.eth_src, ip_src=pkt.arp_tpa,
                                ip_dst=pkt.arp_spa))
        b.step("router", rid, f"ARP request for {pkt.arp_tpa}: reply {inport.mac}")
    elif pkt.arp_op != ARP_REPLY:
        b.step("router", rid, f"ARP op {pkt.arp_op}: drop")
