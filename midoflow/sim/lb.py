"""Layer-4 load balancing in a router, simulated at pre-routing (after the
router's inbound filter, where a floating IP is DNATed to the VIP, before
the route lookup). Pure: reads the TopologyView and the host's flow state,
writes into the simulation's builder.

A new connection to a VIP (its address, protocol and port) is DNATed to a
member chosen among the eligible ones (admin up, weight > 0, not ERROR when
its pool has an admin-up monitor): SOURCE_IP persistence first (the client's
sticky entry, else a weighted rendezvous hash every host computes alike),
else the pool's method (round robin in id order, smooth weighted round
robin, weighted least connections). The choice is a DNAT binding at the
router (chains.py's NAT machinery), so every later packet of the
connection keeps its member, even one disabled meanwhile; a deleted
member's connections are dropped. A client in the same network as its
member (hairpin) is also SNATed to the VIP address, so the member answers
through the router. Replies from a member are translated back here.

Only routers with a balancer are touched; their flows carry ``lb:<router>``
and match only the fields read here (the source address, and more only for
packets from a member's address or to a VIP's).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

from midoflow.model import (
    HEALTH_ERROR,
    LB_LEAST_CONNECTIONS,
    LB_PERSIST_SOURCE_IP,
    LB_UDP,
    LB_WEIGHTED_ROUND_ROBIN,
    LoadBalancer,
    NatTarget,
    PoolMember,
    Port,
    Vip,
)
from midoflow.nat.bindings import DNAT, SNAT, NatBinding
from midoflow.nat.conntrack import TCP_SYN, ConnKey
from midoflow.sim.chains import CT_FIELDS, _in_cidr, _translate
from midoflow.sim.packet import ETH_IP, PROTO_TCP, PROTO_UDP, Packet
from midoflow.sim.result import _Builder, lb_tag, nat_miss_tag
from midoflow.sim.view import FlowStateView, TopologyView

HAIRPIN_PORTS = (1024, 65535)  # the VIP's source ports for hairpinned clients
TCP_ACK = 0x10


def _proto(protocol: str) -> int:
    return PROTO_UDP if protocol == LB_UDP else PROTO_TCP


@dataclass(frozen=True)
class Index:
    """A router's balancing at one instant: (address, proto, port) -> its
    balancer and VIP; the members' (address, proto, port) of all its pools."""

    vips: dict[tuple[str, int, int], tuple[LoadBalancer, Vip]]
    vip_ips: frozenset[str]
    members: frozenset[tuple[str, int, int]]
    member_ips: frozenset[str]


_INDEX: dict[str, tuple[tuple, Index]] = {}
_INDEX_MAX = 1024


def index(view: TopologyView, router_id: str) -> Index | None:
    """The router's balancing (None: no balancer), memoised by the identity
    of what the view returned (it replaces a sequence when it changes)."""
    lbs_of = getattr(view, "load_balancers", None)
    lbs = lbs_of(router_id) if lbs_of is not None else ()
    if not lbs:
        return None
    parts: list = [lbs]
    pools_vips = []
    for lb in lbs:
        pools, vips = view.pools(lb.id), view.vips(lb.id)
        members = [view.pool_members(p.id) for p in pools]
        parts += [pools, vips, *members]
        pools_vips.append((lb, pools, vips, members))
    hit = _INDEX.get(router_id)
    if hit is not None and len(hit[0]) == len(parts) and all(
            a is b for a, b in zip(hit[0], parts, strict=True)):
        return hit[1]
    vmap: dict[tuple[str, int, int], tuple[LoadBalancer, Vip]] = {}
    mset: set[tuple[str, int, int]] = set()
    for lb, pools, vips, members in pools_vips:
        for v in vips:
            vmap[(v.address, _proto(v.protocol), v.protocol_port)] = (lb, v)
        for p, ms in zip(pools, members, strict=True):
            mset.update((m.address, _proto(p.protocol), m.protocol_port) for m in ms)
    idx = Index(vmap, frozenset(k[0] for k in vmap), frozenset(mset),
                frozenset(k[0] for k in mset))
    if len(_INDEX) >= _INDEX_MAX:
        _INDEX.clear()
    _INDEX[router_id] = (tuple(parts), idx)
    return idx


def _closed(state: FlowStateView, binding: NatBinding, b: _Builder) -> bool:
    """Has the binding's connection closed? Its last packets (a retransmitted
    FIN, the last ACK) go one by one: no flow (its flows went at the close)."""
    closing = getattr(state, "nat_closing", None)
    if closing is None or not closing(binding):
        return False
    b.cacheable = False
    return True


def _opens(pkt: Packet) -> bool:
    """A TCP SYN: the packet opens a connection (or answers one opening)."""
    return pkt.ip_proto == PROTO_TCP and bool((pkt.tcp_flags or 0) & TCP_SYN)


def vip_addresses(view: TopologyView, router_id: str) -> frozenset[str]:
    """The router's VIP addresses (its ports answer ARP for them)."""
    idx = index(view, router_id)
    return idx.vip_ips if idx is not None else frozenset()


def prerouting(view: TopologyView, state: FlowStateView, inport: Port, pkt: Packet,
               b: _Builder) -> Packet | None:
    """Balance ``pkt`` entering router ``inport.device_id``: the packet as
    it goes on to the route lookup (translated or not), or None (dropped)."""
    rid = inport.device_id
    idx = index(view, rid)
    if idx is None:
        return pkt
    b.tags.add(lb_tag(rid))
    if pkt.eth_type != ETH_IP or pkt.ip_dst is None or pkt.ip_src is None:
        return pkt
    b.fields.update(("eth_type", "ip_src"))
    if pkt.ip_src in idx.member_ips:
        b.fields.update(("ip_proto", "tp_src"))
        if (pkt.ip_src, pkt.ip_proto, pkt.tp_src) in idx.members:
            back = _reply(state, rid, idx, pkt, b)
            if back is not None:
                return back
    b.fields.add("ip_dst")
    if pkt.ip_dst not in idx.vip_ips:
        return pkt
    b.fields.update(("ip_proto", "tp_dst"))
    hit = idx.vips.get((pkt.ip_dst, pkt.ip_proto, pkt.tp_dst))
    if hit is None or pkt.ip_proto not in (PROTO_TCP, PROTO_UDP):
        b.step("lb", rid, f"{pkt.ip_dst} is a VIP with no listener for protocol "
                          f"{pkt.ip_proto} port {pkt.tp_dst}: drop")
        return None
    return _balance(view, state, inport, pkt, hit[0], hit[1], b)


def _reply(state: FlowStateView, rid: str, idx: Index, pkt: Packet,
           b: _Builder) -> Packet | None:
    """A packet from a member: the reply of a balanced connection gets the
    VIP back as its source (a hairpinned one first its client as its
    destination). None: not a reply of one."""
    b.fields.update(CT_FIELDS)
    out = pkt
    if pkt.ip_dst in idx.vip_ips:  # hairpin: to the VIP's SNAT port
        key = ConnKey.of(rid, pkt)
        snat = state.nat_reverse(SNAT, key)
        if snat is None:
            b.tags.add(nat_miss_tag(SNAT, key))
        else:
            b.ct_hits.append(("nat", snat))
            b.step("lb", rid, f"hairpin reply: back to client {snat.orig[0]}:{snat.orig[1]}")
            out = _translate(b, pkt, "dst", snat.orig)
    key = ConnKey.of(rid, out)
    dnat = state.nat_reverse(DNAT, key)
    if dnat is None or (dnat.orig[0], key.proto, dnat.orig[1]) not in idx.vips:
        b.tags.add(nat_miss_tag(DNAT, key))  # the binding may be on its way
        return out if out is not pkt else None
    if _closed(state, dnat, b) and _opens(out):
        # a closed connection never answers a SYN: a new connection from the
        # client's port (straight to the member) owns the tuple now
        b.nat_ended.append(dnat)
        b.step("lb", rid, f"{key.src}:{key.sport} answers a new connection: the closed "
                          f"one to VIP {dnat.orig[0]}:{dnat.orig[1]} is forgotten")
        return out if out is not pkt else None
    b.ct_hits.append(("nat", dnat))
    b.step("lb", rid, f"reply from member {key.src}:{key.sport}: source back to VIP "
                      f"{dnat.orig[0]}:{dnat.orig[1]}")
    return _translate(b, out, "src", dnat.orig)


def eligible(view: TopologyView, pool_id: str,
             members: tuple[PoolMember, ...] | list[PoolMember]) -> list[PoolMember]:
    """Members that may take new connections, in id order."""
    mon = view.health_monitor(pool_id)
    checked = mon is not None and mon.admin_state_up
    return sorted((m for m in members if m.admin_state_up and m.weight > 0 and not (
        checked and view.member_health(m.id) == HEALTH_ERROR)), key=lambda m: m.id)


def _drop(b: _Builder, rid: str, why: str) -> None:
    b.step("lb", rid, f"{why}: drop")


def _balance(view: TopologyView, state: FlowStateView, inport: Port, pkt: Packet,
             lb: LoadBalancer, vip: Vip, b: _Builder) -> Packet | None:
    rid = inport.device_id
    where = f"VIP {vip.address}:{vip.protocol_port} ({vip.id})"
    if not lb.admin_state_up:
        return _drop(b, rid, f"{where}: load balancer {lb.id} is down")
    if not vip.admin_state_up:
        return _drop(b, rid, f"{where} is down")
    pool = view.pool(vip.pool_id) if vip.pool_id else None
    if pool is None:
        return _drop(b, rid, f"{where} has no pool")
    if not pool.admin_state_up:
        return _drop(b, rid, f"{where}: pool {pool.id} is down")
    members = view.pool_members(pool.id)
    b.fields.update(CT_FIELDS)
    key = ConnKey.of(rid, pkt)
    binding = state.nat_forward(DNAT, key)
    if binding is not None and _closed(state, binding, b) and _opens(pkt) \
            and not pkt.tcp_flags & TCP_ACK:  # a new SYN on a closed connection's tuple
        binding = None
    if binding is not None and binding.orig == (vip.address, vip.protocol_port):
        if not any((m.address, m.protocol_port) == binding.xlated for m in members):
            return _drop(b, rid, f"{where}: the connection's member "
                                 f"{binding.xlated[0]}:{binding.xlated[1]} was deleted")
        b.ct_hits.append(("nat", binding))
        b.step("lb", rid, f"{where}: established connection stays on "
                          f"{binding.xlated[0]}:{binding.xlated[1]}")
    else:
        ok = eligible(view, pool.id, members)
        if not ok:
            return _drop(b, rid, f"{where}: no eligible member in pool {pool.id}")
        member, how = _choose(state, vip, pool.id, pool.lb_method, ok, key)
        binding = NatBinding(DNAT, key, (vip.address, vip.protocol_port),
                             (member.address, member.protocol_port))
        b.nat.append(binding)
        if vip.session_persistence == LB_PERSIST_SOURCE_IP:
            b.lb_sticky.append((vip.id, key.src, member.id, vip.persistence_timeout))
        else:
            b.lb_picks.append((pool.id, member.id))
        b.step("lb", rid, f"{where}: new connection to member {member.id} "
                          f"{member.address}:{member.protocol_port} ({how})")
    out = _translate(b, pkt, "dst", binding.xlated)
    if inport.ip_address and inport.prefix_len is not None and _in_cidr(
            binding.xlated[0], f"{inport.ip_address}/{inport.prefix_len}"):
        return _hairpin(state, rid, vip, out, binding, b)
    return out


def _hairpin(state: FlowStateView, rid: str, vip: Vip, pkt: Packet, dnat: NatBinding,
             b: _Builder) -> Packet | None:
    """Client and member behind the same router port: the client's source
    becomes the VIP (a port of this host's SNAT blocks), so the member's
    reply comes back through the router to be translated."""
    key = ConnKey.of(rid, pkt)
    snat = state.nat_forward(SNAT, key)
    if snat is None:
        targets = (NatTarget(vip.address, vip.address, *HAIRPIN_PORTS),)
        xl = state.nat_propose(targets, key.proto, b.nat_allocs)
        if xl is None:  # the agent leases a block and simulates again
            b.cacheable = False
            b.nat_wants.append((targets, key.proto))
            if dnat in b.nat:  # nothing of this walk is committed
                b.nat.remove(dnat)
                b.lb_picks.clear()
                b.lb_sticky.clear()
            return _drop(b, rid, "hairpin: no SNAT port of the VIP free in this host's blocks")
        b.nat_allocs.append((xl[0], xl[1], key.proto))
        snat = NatBinding(SNAT, key, (key.src, key.sport), xl)
        b.nat.append(snat)
    else:
        b.ct_hits.append(("nat", snat))
    b.step("lb", rid, f"hairpin: client {key.src}:{key.sport} -> VIP "
                      f"{snat.xlated[0]}:{snat.xlated[1]}")
    return _translate(b, pkt, "src", snat.xlated)


# ---- choosing a member ---------------------------------------------------------------
def _choose(state: FlowStateView, vip: Vip, pool_id: str, method: str,
            ok: list[PoolMember], key: ConnKey) -> tuple[PoolMember, str]:
    """The member of a new connection, and how it was chosen."""
    if vip.session_persistence == LB_PERSIST_SOURCE_IP:
        stuck = state.lb_sticky(vip.id, key.src)
        for m in ok:
            if m.id == stuck:
                return m, f"source IP {key.src} sticks to it"
        return hrw(ok, key.src), f"source IP {key.src}, rendezvous hash"
    n = state.lb_counter(pool_id)
    if method == LB_WEIGHTED_ROUND_ROBIN:
        seq = wrr_sequence(tuple(m.weight for m in ok))
        return ok[seq[n % len(seq)]], "weighted round robin"
    if method == LB_LEAST_CONNECTIONS:
        loads = [state.lb_active(m.address, m.protocol_port, key.proto) / m.weight for m in ok]
        least = min(loads)
        ties = [m for m, load in zip(ok, loads, strict=True) if load == least]
        return ties[n % len(ties)], "least connections"
    return ok[n % len(ok)], "round robin"


@lru_cache(maxsize=256)
def wrr_sequence(weights: tuple[int, ...]) -> tuple[int, ...]:
    """Smooth weighted round robin (nginx's) over one cycle: indexes into
    ``weights``, each i appearing weights[i] times, interleaved."""
    total = sum(weights)
    current = [0] * len(weights)
    seq = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=current.__getitem__)
        current[best] -= total
        seq.append(best)
    return tuple(seq)


def _unit(client: str, member_id: str) -> float:
    """A uniform number in (0, 1) from the pair, the same in every process."""
    h = hashlib.blake2b(f"{client}|{member_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "big") + 0.5) / 2.0 ** 64


def hrw(members: list[PoolMember], client: str) -> PoolMember:
    """Weighted rendezvous hashing: each member scores weight / -ln(u) for
    the client; the best wins (a member's share follows its weight; removing
    one moves only its own clients)."""
    return max(members, key=lambda m: (m.weight / -math.log(_unit(client, m.id)), m.id))
