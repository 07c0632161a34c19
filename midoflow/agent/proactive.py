"""Flows computed before the first packet (OVN's way), for the paths whose
decision needs no connection state: a new connection then never waits for
the agent.

Reactive simulation costs a first packet two controller trips on a routed
path across hosts (the SYN at one host, the SYN/ACK at the other), each an
OVS upcall, a packet-in, a simulation, a flow-mod and a packet-out: about
1.2 ms each on this 2-core machine, of which the agent's own work (parse,
simulate, build, send) is about 0.5 ms under load (profiled, issue 13). So
for each port bound here the agent builds the packets it can foresee from
what the topology cache knows, and simulates them dry
(``AgentCore.dry_decision``):

* to every MAC learned on the port's bridge (L2 delivery);
* through each router the bridge is linked to, to every address that router
  has resolved (its ARP table: the VMs it has routed to) and every fixed IP
  of the VMs on the router's other bridges (it needs no ARP for those).

The source is the port's own MAC as its bridge learned it. A decision is
installed only when it is installable, tracks nothing (no conntrack, NAT or
reply of a tracked connection) and its match holds only what the foreseen
packet really knew (in_port, the MACs, eth_type, the IPv4 destination):
then the flow is the one the first packet itself would install, with its
tags (invalidated as any simulated flow), its idle timeout (renewed when the
next pass finds it gone), under a cookie of its own kind (``PROACTIVE_BIT``)
so a benchmark can tell it from a reactive one. Anything else stays
reactive: security groups, NAT, unknown destinations.

Bounded (on by default, ``proactive_flows`` = 64): at most ``limit``
candidates per bound port (so a host holds at most ``limit`` x its bound
ports of these flows), counted toward the port's ``max_flows_per_port`` and
taking at most half of it (the other half stays for its packets). A pass
costs little when nothing changed (50 ports, 500 destinations: about 1.4 ms,
benchmarks/bench_proactive_plan.py): an installed candidate is a dict
lookup, packets are built only to be simulated, at most
``SIMULATIONS_PER_PASS`` per call (the rest in the next calls, after a
yield), and a refused candidate waits twice as long each time it is refused
again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from midoflow.agent.flows import FlowIndex
from midoflow.model import DEVICE_BRIDGE, DEVICE_ROUTER, PORT_INTERIOR
from midoflow.sim.packet import ETH_IP, PROTO_TCP

# Set in the cookies of proactive flows (below the flow index's top byte;
# its own cookies count microseconds and stay far below this bit).
PROACTIVE_BIT = 1 << 55
# What a foreseen packet knows for sure: a decision reading anything else
# (a port, the source address...) depends on what it was not told.
KNOWN_L2 = frozenset({"in_port", "eth_src", "eth_dst", "eth_type"})
KNOWN_L3 = KNOWN_L2 | {"ip_dst"}
PLACEHOLDER_IP = "0.0.0.0"
# A candidate the simulation would not install is tried again after this
# long, then twice as long each time it is refused again, up to the maximum
# (a port whose every path is stateful costs almost nothing).
RETRY_SECONDS = 10.0
RETRY_MAX_SECONDS = 320.0
# Dry simulations per call of ``plan`` (about 30 us each): the agent's other
# work waits for no more than a few ms; the rest is planned in the next call.
SIMULATIONS_PER_PASS = 128


def is_proactive(cookie: int) -> bool:
    return bool(cookie & PROACTIVE_BIT)


def packet_fields(key: tuple) -> dict[str, Any]:
    """The foreseen packet of a candidate's key: ("l2", source MAC,
    destination MAC) or ("l3", source MAC, router port MAC, address)."""
    if key[0] == "l2":
        return _fields(key[1], key[2], PLACEHOLDER_IP)
    return _fields(key[1], key[2], key[3])


def _fields(src_mac: str, dst_mac: str, ip_dst: str) -> dict[str, Any]:
    return {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": ETH_IP,
            "ip_src": PLACEHOLDER_IP, "ip_dst": ip_dst, "ip_proto": PROTO_TCP, "ip_ttl": 64,
            "ip_tos": 0, "ip_len": 40, "ip_df": False, "tp_src": 0, "tp_dst": 0,
            "tcp_flags": 0x10}


class Proactive:
    """Which flows to install ahead of packets, and the ones installed.

    ``core``: the AgentCore (its cache, bindings, installed flows, clock and
    ``dry_decision``); ``limit``: candidates per port at most (0: off)."""

    def __init__(self, core: Any, limit: int) -> None:
        self.core, self.limit = core, limit
        self.cookies: dict[tuple, int] = {}  # (port, candidate) -> its flow's cookie
        # (port, candidate) -> (when to try again, the delay that was waited)
        self.refused: dict[tuple, tuple[float, float]] = {}
        self.more = False  # the last plan stopped at its budget
        self._next = (time.time_ns() // 1000) & (PROACTIVE_BIT - 1) or 1

    def candidates(self) -> list[tuple[str, int, tuple, frozenset[str]]]:
        """(port id, ofport, key, the fields it knows) of at most ``limit``
        foreseeable packets per port bound here (MACs on its bridge first,
        then its routers' resolved addresses); ``key`` holds what builds the
        packet (:func:`packet_fields`), built only when it is simulated."""
        cache = self.core.cache
        by_bridge: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (bridge, mac), pid in list(cache.macs.items()):
            by_bridge[bridge].append((mac, pid))
        resolved: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (router, ip), entry in list(cache.arps.items()):
            resolved[router].append((ip, entry[0]))
        memo: dict[str, list[tuple[str, str]]] = {}

        def seeded(router_id: str) -> list[tuple[str, str]]:
            """(ip, mac) of the VM ports on the router's bridges, bound somewhere."""
            if router_id not in memo:
                found = []
                router = cache.routers.get(router_id)
                for rp in router.port_ids if router is not None else ():
                    rport = cache.ports.get(rp)
                    link = cache.ports.get(rport.peer_id) if rport and rport.peer_id else None
                    if link is None or link.device_type != DEVICE_BRIDGE:
                        continue
                    for ip, vid in cache.bridge_addresses(link.device_id).items():
                        vm = cache.ports.get(vid)
                        if vm is not None and vm.mac and vid in cache.port_hosts:
                            found.append((ip, vm.mac))
                memo[router_id] = found
            return memo[router_id]

        out = []
        limit = self.limit
        for pid, ofport in sorted(self.core.bindings.items()):
            port = cache.ports.get(pid)
            if port is None or port.device_type != DEVICE_BRIDGE:
                continue
            macs = by_bridge.get(port.device_id, [])
            own = [m for m, p in macs if p == pid]
            if len(own) != 1:  # unknown yet, or several: leave it to the packets
                continue
            src = own[0]
            n = 0
            done: set[tuple[str, str]] = set()
            for mac, other in macs:
                if n >= limit:
                    break
                if other != pid:
                    out.append((pid, ofport, ("l2", src, mac), KNOWN_L2))
                    n += 1
            bridge = cache.bridges.get(port.device_id)
            for lid in bridge.port_ids if bridge is not None and n < limit else ():
                link = cache.ports.get(lid)
                peer = cache.ports.get(link.peer_id) if link is not None and \
                    link.type == PORT_INTERIOR and link.peer_id else None
                if peer is None or peer.device_type != DEVICE_ROUTER or not peer.mac:
                    continue
                for ip, mac in resolved.get(peer.device_id, []) + seeded(peer.device_id):
                    if n >= limit:
                        break
                    if mac != src and (ip, peer.mac) not in done:
                        done.add((ip, peer.mac))
                        out.append((pid, ofport, ("l3", src, peer.mac, ip), KNOWN_L3))
                        n += 1
        return out

    def plan(self, budget: int = SIMULATIONS_PER_PASS) -> list[tuple[int, Any]]:
        """(ofport, decision) of each flow to install now: foreseen packets
        whose flow is not installed, simulated dry, ``budget`` at most (then
        ``more`` is set: call again soon); each decision gets its cookie and
        is indexed as installed (the caller sends the flows)."""
        self.more = False
        if self.limit <= 0:
            return []
        core, index = self.core, self.core.flows
        now = core.clock.mono()
        todo = []
        seen = set()
        for pid, ofport, key, known in self.candidates():
            k = (pid, key)
            seen.add(k)
            cookie = self.cookies.get(k)
            if cookie is not None and cookie in index.tags_of:
                continue  # installed, not invalidated nor removed since
            retry = self.refused.get(k)
            if retry is not None and retry[0] > now:
                continue
            if core.installed.count(pid) >= core.cfg.max_flows_per_port // 2:
                continue  # the port's flow limit: its other half stays for its packets
            if budget <= 0:
                self.more = True
                continue
            budget -= 1
            decision = core.dry_decision(ofport, packet_fields(key))
            if decision is None or not decision.install or not decision.actions \
                    or decision.uses or not decision.match_fields <= known:
                delay = min(retry[1] * 2, RETRY_MAX_SECONDS) if retry else RETRY_SECONDS
                self.refused[k] = (now + delay, delay)
                self.cookies.pop(k, None)
                continue
            decision.cookie = self._cookie(index)
            core.installed.adopt(decision.cookie, decision.tags, pid)
            self.cookies[k] = decision.cookie
            self.refused.pop(k, None)
            todo.append((ofport, decision))
        for k in [k for k in self.cookies if k not in seen]:
            del self.cookies[k]  # its port or destination went: its tags deleted the flow
        for k in [k for k in self.refused if k not in seen]:
            del self.refused[k]
        return todo

    def kept(self, cookie: int, decision: Any) -> None:
        """A proactive flow OVS kept across a restart, judged right and
        adopted (``midoflow.agent.restart``): its candidate is installed, not
        to be made again under a new cookie."""
        pkt = decision.packet
        if not is_proactive(cookie) or pkt is None or not decision.match_fields <= KNOWN_L3:
            return
        key = ("l3", pkt.eth_src, pkt.eth_dst, pkt.ip_dst) \
            if "ip_dst" in decision.match_fields else ("l2", pkt.eth_src, pkt.eth_dst)
        self.cookies[(pkt.in_port, key)] = cookie
        self.refused.pop((pkt.in_port, key), None)

    def _cookie(self, index: FlowIndex) -> int:
        while True:
            cookie = FlowIndex.COOKIE_BASE | PROACTIVE_BIT | self._next
            self._next = (self._next + 1) & (PROACTIVE_BIT - 1) or 1
            if cookie not in index.tags_of and cookie not in index.reserved:
                return cookie
