"""Metadata for the VMs bound here (pure): which ports get the flows that
steer their requests to 169.254.169.254:80 into the agent's metadata port,
the link-local address each is rewritten to (``midoflow.metadata.addresses``),
the VM an address names (for the proxy), and the ARP answer for
169.254.169.254 to a VM that routes it on-link.

A port is served when it is a bridge's exterior port bound on this host
with a MAC and an IPv4 fixed address (the answers' destination is
rewritten back to them); Neutron's ports always have both.
"""

from __future__ import annotations

from dataclasses import dataclass

from midoflow.agent.cache import TopologyCache
from midoflow.agent.decision import Decision, Emit, Frames, Output
from midoflow.metadata.addresses import METADATA_IP, LinkLocalPool
from midoflow.metadata.tree import Instance
from midoflow.model import DEVICE_BRIDGE, PORT_EXTERIOR, RULE_DNAT, RULE_STATIC_DNAT, Port
from midoflow.sim.packet import ETH_ARP, Packet
from midoflow.sim.result import Action, Generated, Result

__all__ = ["METADATA_IP", "METADATA_MAC", "METADATA_PORT", "MetadataPorts", "Steering"]

METADATA_PORT = 80
# The metadata port's MAC (locally administered): the ARP answer's, and the
# destination the VMs' requests are rewritten to.
METADATA_MAC = "0a:a9:fe:a9:fe:fe"
_ARP_REQUEST = 1
_MAX_JUMPS = 4  # chains followed from a router's inbound filter (floating IPs)


@dataclass(frozen=True)
class Steering:
    """The flows of one served port: its requests leave with source
    ``address``; answers to ``address`` go back to ``vm_ip``/``vm_mac``."""

    port_id: str
    ofport: int
    address: str
    vm_ip: str
    vm_mac: str


def fixed_ipv4(port: Port) -> str | None:
    for ip in port.fixed_ips:
        ip = ip.split("/")[0]
        if ip.count(".") == 3:
            return ip
    return None


def served(port: Port | None) -> bool:
    return port is not None and port.device_type == DEVICE_BRIDGE and \
        port.type == PORT_EXTERIOR and bool(port.mac) and fixed_ipv4(port) is not None


class MetadataPorts:
    def __init__(self, cache: TopologyCache, frames: Frames | None = None) -> None:
        self.cache = cache
        self.frames = frames or Frames()
        self.pool = LinkLocalPool()
        self.stats = {"arp_answered": 0}

    def wanted(self, bindings: dict[str, int]) -> dict[str, Steering]:
        """The served ports among ``bindings`` (port id -> ofport) with their
        flows; ports no longer served give their address back."""
        out: dict[str, Steering] = {}
        for pid, ofport in bindings.items():
            port = self.cache.ports.get(pid)
            if not served(port) or ofport <= 0:
                continue
            out[pid] = Steering(pid, ofport, self.pool.assign(pid, port.tunnel_key),
                                fixed_ipv4(port), port.mac.lower())
        for pid in self.pool.ports() - set(out):
            self.pool.release(pid)
        return out

    # ---- the proxy's lookup ---------------------------------------------------
    def instance(self, address: str) -> Instance | None:
        """The VM whose requests come from ``address``, None if no port has it."""
        pid = self.pool.port_of(address)
        port = self.cache.ports.get(pid) if pid else None
        if port is None or not served(port):
            return None
        return self.instance_of(port)

    def instance_of(self, port: Port) -> Instance:
        ip = fixed_ipv4(port) or ""
        bridge = self.cache.bridges.get(port.device_id)
        mtu = getattr(bridge, "mtu", None) or getattr(self.cache, "default_mtu", None)
        return Instance(
            port_id=port.id, instance_id=port.instance_id or port.id,
            tenant_id=port.tenant_id or (bridge.tenant_id if bridge else ""),
            hostname=port.hostname or "host-" + ip.replace(".", "-"),
            local_ipv4=ip, mac=port.mac or "", network_id=port.device_id,
            public_ipv4=self.floating_ip(port.device_id, ip), mtu=mtu, name=port.name)

    def floating_ip(self, bridge_id: str, fixed_ip: str) -> str | None:
        """Best effort: the address a DNAT rule of a router on the port's
        bridge translates to ``fixed_ip`` (a floating IP), if any."""
        chains = []
        for p in self.cache.ports.values():
            if p.device_type != DEVICE_BRIDGE or p.device_id != bridge_id or not p.peer_id:
                continue
            peer = self.cache.ports.get(p.peer_id)
            router = self.cache.routers.get(peer.device_id) if peer else None
            if router is not None and router.inbound_filter_id:
                chains.append(router.inbound_filter_id)
        seen: set[str] = set()
        for _ in range(_MAX_JUMPS):
            nxt = []
            for cid in chains:
                chain = self.cache.chains.get(cid)
                if chain is None or cid in seen:
                    continue
                seen.add(cid)
                for rid in chain.rule_ids:
                    rule = self.cache.rules.get(rid)
                    if rule is None:
                        continue
                    if rule.jump_chain_id:
                        nxt.append(rule.jump_chain_id)
                    if rule.action in (RULE_DNAT, RULE_STATIC_DNAT) and rule.nw_dst and \
                            rule.nw_dst.endswith("/32") and any(
                                t.addr_from == fixed_ip == t.addr_to for t in rule.nat_targets):
                        return rule.nw_dst.split("/")[0]
            chains = nxt
        return None

    # ---- ARP for 169.254.169.254 ------------------------------------------------
    def answer_arp(self, in_port: str, ofport: int, fields: dict) -> Decision | None:
        """A served VM asking who has 169.254.169.254 gets the metadata
        port's MAC (the request goes no further); None for anything else."""
        if fields.get("eth_type") != ETH_ARP or fields.get("arp_op") != _ARP_REQUEST or \
                fields.get("arp_tpa") != METADATA_IP or not served(self.cache.ports.get(in_port)):
            return None
        sha, spa = fields.get("arp_sha"), fields.get("arp_spa")
        if not sha or not spa:
            return None
        gen = Generated("arp_reply", in_port, (("eth_dst", sha), ("eth_src", METADATA_MAC),
                                               ("ip_dst", spa), ("ip_src", METADATA_IP)))
        try:
            frame = self.frames.build(gen, None)
        except (ValueError, NotImplementedError):
            return None
        self.stats["arp_answered"] += 1
        return Decision([], frozenset(), frozenset(),
                        Result(action=Action.DROP, reason="metadata ARP answered"),
                        packet=Packet(in_port=in_port, **fields),
                        emits=[Emit(frame, [Output(ofport)])], install=False)
