"""Simulate a packet through the virtual topology, from its ingress port to
its egress exterior ports. Pure: reads a TopologyView, returns a Result.

A packet entering a bridge is learned (source MAC → ingress port), then
forwarded to the port its destination MAC was learned on, or flooded to every
other port of the bridge when the destination is unknown, broadcast or
multicast. Interior ports hand the packet to the peer port's device; the walk
visits at most ``MAX_DEVICES`` devices (MidoNet's loop guard).

An ARP frame entering through a port with port security must carry the
frame's own source MAC as its sender hardware address (SHA), as Neutron's OVS
firewall enforces; the port's anti-spoof chain (see
:mod:`midoflow.service.security`) then checks that MAC and the sender
address (SPA) against the port's own pairs.
"""

from __future__ import annotations

from collections import deque

from midoflow.model import (
    DEVICE_BRIDGE,
    DEVICE_ROUTER,
    PORT_EXTERIOR,
    PORT_INTERIOR,
    Port,
    conntrack_enforced,
    port_chain_id,
)
from midoflow.sim import chains, lb, router
from midoflow.sim.packet import ETH_ARP, ETH_IP, Packet, is_multicast
from midoflow.sim.result import (
    Action,
    Result,
    _Builder,
    bridge_tag,
    flood_tag,
    mac_tag,
    port_tag,
)
from midoflow.sim.view import NO_FLOW_STATE, FlowStateView, TopologyView

MAX_DEVICES = 12


def simulate(view: TopologyView, pkt: Packet, now: float = 0.0,
             state: FlowStateView = NO_FLOW_STATE) -> Result:
    """Walk ``pkt`` through the topology. ``now`` (seconds, same clock as the
    ARP table's timestamps) decides ARP entry expiry; ``state``: the host's
    conntrack and NAT tables, read only (what the walk wants tracked, bound
    or allocated comes back in the Result, for the caller to commit)."""
    b = _Builder()
    ingress = view.port(pkt.in_port)
    b.tags.add(port_tag(pkt.in_port))
    if ingress is None:
        b.step("port", pkt.in_port, "unknown port: drop")
        return b.result(Action.DROP, "unknown ingress port")
    if not ingress.admin_state_up:
        b.step("port", ingress.id, "ingress port is down: drop")
        return b.result(Action.DROP, "ingress port down")
    if ingress.port_security_enabled and pkt.eth_type == ETH_ARP:
        b.fields.update(("eth_type", "eth_src", "arp_sha"))
        if pkt.arp_sha != pkt.eth_src:
            if pkt.arp_sha is None:  # no ARP payload: a flow could not tell it apart
                b.cacheable = False
            b.step("port", ingress.id, f"ARP sender MAC {pkt.arp_sha} is not the frame's "
                                       f"source {pkt.eth_src}: drop (port security)")
            return b.result(Action.DROP, "ARP spoofing")

    # Work list of ports the packet enters a device through, each with the
    # packet as it is there (routers rewrite it).
    queue: deque[tuple[Port, Packet]] = deque([(ingress, pkt)])
    visited = 0
    while queue:
        port, cur = queue.popleft()
        visited += 1
        if visited > MAX_DEVICES:
            b.step("sim", port.device_id, f"more than {MAX_DEVICES} devices: drop")
            return b.result(Action.DROP, "loop guard")
        if port.device_type == DEVICE_BRIDGE:
            device = view.bridge(port.device_id)
        elif port.device_type == DEVICE_ROUTER:
            device = view.router(port.device_id)
        else:
            b.step("port", port.id, f"device type {port.device_type} not supported: drop")
            continue
        # MidoNet's order: port inbound, device inbound, the device, device
        # outbound, port outbound.
        cur = _port_filter(view, state, port, "inbound", cur, port, b)
        if cur is None:
            continue
        if device is not None:
            cur = _filter(view, state, device.inbound_filter_id, cur, port, port.device_id,
                          None, b, "inbound")
            if cur is None:
                continue
            if port.device_type == DEVICE_ROUTER:  # load balancing, at pre-routing
                cur = lb.prerouting(view, state, port, cur, b)
                if cur is None:
                    continue
        if port.device_type == DEVICE_BRIDGE:
            nexts = [(p, cur) for p in _bridge(view, port, cur, b)]
        else:
            hop = router.route(view, port, cur, b, now)
            nexts = [hop] if hop else []
        for nxt, npkt in nexts:
            if device is not None:
                npkt = _filter(view, state, device.outbound_filter_id, npkt, port,
                               port.device_id, nxt.id, b, "outbound")
                if npkt is None:
                    continue
            npkt = _port_filter(view, state, nxt, "outbound", npkt, port, b)
            if npkt is None:
                continue
            if nxt.type == PORT_INTERIOR:
                peer = view.port(nxt.peer_id) if nxt.peer_id else None
                b.tags.add(port_tag(nxt.id))
                if peer is None or not peer.admin_state_up:
                    b.step("port", nxt.id, "interior port not linked or peer down: drop")
                    continue
                b.tags.add(port_tag(peer.id))
                b.step("port", nxt.id, f"to peer port {peer.id} on {peer.device_id}")
                queue.append((peer, npkt))  # devices read the port, not pkt.in_port
            else:
                b.out.append(nxt.id)
    if not b.out:
        if not b.trace or "drop" not in b.trace[-1].decision:
            b.step("sim", pkt.in_port, "no egress port: drop")
        return b.result(Action.DROP, "no egress port")
    return b.result(Action.FORWARD)


def _bridge(view: TopologyView, inport: Port, pkt: Packet, b: _Builder) -> list[Port]:
    """Forwarding inside one bridge: the ports the packet leaves through."""
    bid = inport.device_id
    b.tags.add(bridge_tag(bid))
    bridge = view.bridge(bid)
    if bridge is None:
        b.step("bridge", bid, "bridge missing: drop")
        return []
    if not bridge.admin_state_up:
        b.step("bridge", bid, "bridge is down: drop")
        return []
    b.fields.update(("eth_src", "eth_dst"))

    if not is_multicast(pkt.eth_src):
        # Always reported: the agent decides whether the store needs a write
        # (a restarted agent takes over what its previous run learned).
        b.learned.append((bid, pkt.eth_src, inport.id))
        if view.mac_port(bid, pkt.eth_src) != inport.id:
            b.step("bridge", bid, f"learn {pkt.eth_src} on port {inport.id}")

    if not is_multicast(pkt.eth_dst):
        b.tags.add(mac_tag(bid, pkt.eth_dst))
        out_id = _router_port_by_mac(view, bridge, pkt.eth_dst) \
            or view.mac_port(bid, pkt.eth_dst) or _port_by_own_mac(view, bridge, pkt.eth_dst)
        if out_id is not None:
            if out_id == inport.id:
                b.step("bridge", bid, f"{pkt.eth_dst} is behind the ingress port: drop")
                return []
            out = view.port(out_id)
            b.tags.add(port_tag(out_id))
            if out is None or out.device_id != bid:
                b.step("bridge", bid, f"{pkt.eth_dst} learned on a stale port: flood")
            elif not out.admin_state_up:
                b.step("bridge", bid, f"{pkt.eth_dst} is on port {out_id}, which is down: drop")
                return []
            else:
                b.step("bridge", bid, f"{pkt.eth_dst} is on port {out_id}: forward")
                return [out]
        else:
            b.step("bridge", bid, f"{pkt.eth_dst} unknown: flood")
    else:
        b.step("bridge", bid, f"{pkt.eth_dst} is broadcast/multicast: flood")

    b.flooded = True
    b.tags.add(flood_tag(bid))
    out_ports = []
    for pid in bridge.port_ids:
        if pid == inport.id:
            continue
        p = view.port(pid)
        if p is None or not p.admin_state_up:
            continue
        out_ports.append(p)
    return out_ports


def _port_by_own_mac(view: TopologyView, bridge, mac: str) -> str | None:
    """The bridge's exterior port whose own MAC (Neutron's) is ``mac``, for a
    MAC not learned yet: a new VM's first packets go to it, not everywhere
    (as OVN; MidoNet's Neutron plugin seeded its MAC tables so). A view may
    keep an index (``own_mac_port``); else scan."""
    indexed = getattr(view, "own_mac_port", None)
    if indexed is not None:
        return indexed(bridge.id, mac)
    for pid in bridge.port_ids:
        p = view.port(pid)
        if p is not None and p.type == PORT_EXTERIOR and p.mac == mac:
            return pid
    return None


def _router_port_by_mac(view: TopologyView, bridge, mac: str) -> str | None:
    """The bridge's interior port linked to the router port that owns ``mac``:
    routers' MACs are known to their bridges without learning (as in MidoNet).
    A view may keep an index of them (``router_mac_port``); else scan."""
    indexed = getattr(view, "router_mac_port", None)
    if indexed is not None:
        return indexed(bridge.id, mac)
    for pid in bridge.port_ids:
        p = view.port(pid)
        if p is None or p.type != PORT_INTERIOR or not p.peer_id:
            continue
        peer = view.port(p.peer_id)
        if peer is not None and peer.device_type == DEVICE_ROUTER and peer.mac == mac:
            return pid
    return None


def _sg_in_ovs(view: TopologyView, port_id: str) -> bool:
    """Whether the port's host enforces its security groups in OVS (a view
    without the notion, as the API's trace: no, its chains are simulated)."""
    ask = getattr(view, "sg_in_ovs", None)
    return bool(ask(port_id)) if ask is not None else False


def _port_filter(view: TopologyView, state: FlowStateView, port: Port, which: str,
                 pkt: Packet, inport: Port, b: _Builder) -> Packet | None:
    """A port's own filter: ``which`` is "inbound" (the packet enters the
    topology or a device through ``port``) or "outbound" (it leaves through
    ``port``; ``inport``: where it entered the device). With
    a protected port whose host enforces its security groups with OVS
    conntrack (``view.sg_in_ovs``, ``midoflow.agent.sgflows``), its
    generated security-group chain is not simulated for IPv4; only its
    anti-spoof chain, which is stateless, is. The decision then matches the ethertype, so its flow
    never carries another protocol the chain would have dropped."""
    if which == "inbound":
        chain_id, out_port = port.inbound_filter_id, None
    else:
        chain_id, out_port = port.outbound_filter_id, port.id
    if chain_id and pkt.eth_type == ETH_IP and conntrack_enforced(port, which) \
            and _sg_in_ovs(view, port.id):
        b.fields.add("eth_type")
        if which == "inbound" and port.port_security_enabled:
            ctx = chains.Context(inport.id, None, port.id, state)
            verdict, _ = chains.run(view, port_chain_id(port.id, "anti-spoof"), pkt, ctx, b)
            if verdict not in (None, chains.RULE_ACCEPT):
                b.step("filter", port.id, f"anti-spoof chain: {verdict}")
                return None
        b.step("filter", port.id, f"{which} security groups: OVS conntrack on the port's host")
        return pkt
    return _filter(view, state, chain_id, pkt, inport, port.id, out_port, b, which)


def _filter(view: TopologyView, state: FlowStateView, chain_id: str | None, pkt: Packet,
            inport: Port, ct_device: str, out_port: str | None, b: _Builder,
            where: str) -> Packet | None:
    """Run one filter chain: the packet (as NAT rules left it) when it may go
    on, else None. A reject answers the sender with ICMP administratively
    prohibited."""
    if not chain_id:
        return pkt
    ctx = chains.Context(inport.id, out_port, ct_device, state)
    verdict, out = chains.run(view, chain_id, pkt, ctx, b)
    if verdict in (None, chains.RULE_ACCEPT):
        return out
    b.step("filter", ct_device, f"{where} chain {chain_id}: {verdict}")
    if verdict == chains.RULE_REJECT:
        router.reject(b, inport, pkt)
    return None
