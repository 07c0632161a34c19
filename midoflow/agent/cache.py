"""The agent's local copy of the topology, kept current by store watches.

It is the simulation's TopologyView (flow state reaches the simulation
separately, read only: midoflow.nat.tables.StateView), answers where a port
lives and how to reach that host, and turns each change into the set of
flow tags it invalidates (see :mod:`midoflow.sim.result`). Uses the Store
interface only.

Loading (issue 13: 10,000 ports, 1,000 routers, 2,000 security groups):
every kind but chains and rules is loaded at start, each kind's objects read
in one pipelined batch (:meth:`Store.watch_objects`), and so are the MAC, ARP
and learned-route tables of the devices and the ports' activations; work that
scans every port (router MAC index, the bindings' recomputation) runs once per
batch, not once per object. Chains and rules (about 18 per protected port:
most of the topology's objects, and none of them needed until a packet
crosses their port) are loaded lazily, as MidoNet's agent loads devices: the
first :meth:`chain` of an id reads it and its rules (one round trip) and
watches them from then on. The load runs without the cyclic garbage
collector, and a large one is frozen after it (:func:`_no_cyclic_gc`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from midoflow import model
from midoflow.model import (
    BGP_NETWORKS,
    BGP_PEERS,
    BRIDGES,
    CHAINS,
    DEVICE_BRIDGE,
    DEVICE_ROUTER,
    DHCP_SUBNETS,
    HEALTH_MONITORS,
    HOSTS,
    IP_ADDR_GROUPS,
    LB_KINDS,
    LOAD_BALANCERS,
    POOL_MEMBERS,
    POOLS,
    PORT_EXTERIOR,
    PORT_GROUPS,
    PORT_INTERIOR,
    PORTS,
    ROUTERS,
    ROUTES,
    RULES,
    TUNNEL_ZONES,
    VIPS,
    BgpNetwork,
    BgpPeer,
    Bridge,
    Chain,
    DhcpSubnet,
    IpAddrGroup,
    Port,
    PortGroup,
    Route,
    Router,
    Rule,
    TunnelZone,
)
from midoflow.sim.result import (
    address_tag,
    arp_tag,
    bridge_tag,
    chain_tag,
    flood_tag,
    ip_addr_group_tag,
    lb_tag,
    mac_tag,
    port_group_tag,
    port_tag,
    route_prefix_tag,
    router_tag,
    routes_tag,
)
from midoflow.store import paths
from midoflow.store.base import Data, Store

LOG = logging.getLogger(__name__)


def _device_state(d) -> tuple:
    """What of a bridge or router its flows depend on, besides ports."""
    return (d.admin_state_up, d.name, d.inbound_filter_id, d.outbound_filter_id)


# Kinds kept as plain objects: (attribute, class, the tag a change invalidates).
# BGP configuration changes no flow (the gateway's speaker follows it).
_SIMPLE = {
    CHAINS: ("chains", Chain, lambda c: chain_tag(c.id)),
    RULES: ("rules", Rule, lambda r: chain_tag(r.chain_id)),
    PORT_GROUPS: ("port_groups", PortGroup, lambda g: port_group_tag(g.id)),
    IP_ADDR_GROUPS: ("ip_addr_groups", IpAddrGroup, lambda g: ip_addr_group_tag(g.id)),
    BGP_PEERS: ("bgp_peers", BgpPeer, lambda b: f"bgp:{b.port_id}"),
    BGP_NETWORKS: ("bgp_networks", BgpNetwork, lambda b: f"bgp:{b.port_id}"),
}


# Load-balancing kinds: the field naming each object's parent (a balancer's
# is its router).
_LB_PARENT = {LOAD_BALANCERS: "router_id", POOLS: "load_balancer_id",
              VIPS: "load_balancer_id", POOL_MEMBERS: "pool_id", HEALTH_MONITORS: "pool_id"}


def _router_port_prefixes(p: Port | None) -> set[str]:
    """What of the router's route lookups a router port decides: its network
    (a connected route) and its own address (packets to it stop there)."""
    if p is None or p.device_type != DEVICE_ROUTER or p.ip_address is None:
        return set()
    out = {f"{p.ip_address}/32"}
    if p.prefix_len is not None:
        out.add(f"{p.ip_address}/{p.prefix_len}")
    return out


FREEZE_AFTER = 50_000  # objects a load makes before they are frozen (below)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """No cyclic garbage collection while the topology loads. A large load
    (10,000 ports: about half a million long-lived objects) is then collected
    once and what survives it frozen (:func:`gc.freeze`): collections while
    the objects pile up traverse them again and again (45 % of the load's
    CPU), and every full collection after it would too (0.25 s: a pause of
    the agent); frozen, later collections see only what is new. A small load
    (tests) is left to the collector."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_count()[0] > FREEZE_AFTER:
                gc.collect()
                gc.freeze()
            gc.enable()


# How long an ARP answer noted here (arp_learned_here) outlives a store
# that does not show it: its write failed, or another host's replaced it.
ARP_NOTE_SECONDS = 5.0
LOCATION_NOTE_SECONDS = 5.0  # a pushed location the store has not confirmed


def host_tag(host_id: str) -> str:
    """Flows that tunnel to a host depend on its tunnel address."""
    return f"host:{host_id}"


class TopologyCache:
    def __init__(
        self,
        store: Store,
        on_invalidate: Callable[[set[str]], None],
        on_port_change: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.on_invalidate = on_invalidate
        self.on_port_change = on_port_change or (lambda _pid: None)
        self.ports: dict[str, Port] = {}
        self.bridges: dict[str, Bridge] = {}
        self.hosts: dict[str, Data] = {}
        self.zones: dict[str, TunnelZone] = {}
        self.port_hosts: dict[str, str] = {}  # active port -> host id
        self._active_watched: set[str] = set()  # ports whose activation is followed
        # Called with a port id when its host changes (bound, moved, unbound).
        self.on_port_location: Callable[[str], None] = lambda _pid: None
        self.host_state: dict[str, Data] = {}
        self.macs: dict[tuple[str, str], str] = {}  # (bridge, mac) -> port
        # (bridge, fixed IP or own MAC) -> exterior port: _index_addresses
        self._addr_ports: dict[tuple[str, str], str] = {}
        self._bridge_ips: defaultdict[str, dict[str, str]] = defaultdict(dict)  # the same, IPs
        self.routers: dict[str, Router] = {}
        self.route_objs: dict[str, Route] = {}
        self.routes_by_router: dict[str, dict[str, Route]] = {}
        self._route_tuples: dict[str, tuple[Route, ...]] = {}  # stable until changed
        # (router, ip) -> (mac, learned_at, entry name in the store)
        self.arps: dict[tuple[str, str], tuple[str, float, str]] = {}
        # Called with (router_id, ip) when an ARP entry appears or changes.
        self.on_arp: Callable[[str, str], None] = lambda _r, _ip: None
        self.chains: dict[str, Chain] = {}
        self.rules: dict[str, Rule] = {}
        self.port_groups: dict[str, PortGroup] = {}
        self.ip_addr_groups: dict[str, IpAddrGroup] = {}
        self.bgp_peers: dict[str, BgpPeer] = {}
        self.bgp_networks: dict[str, BgpNetwork] = {}
        # Called after a BGP configuration change (the gateway's speaker).
        self.on_bgp: Callable[[], None] = lambda: None
        # router -> {entry name: Route}: what the gateways' BGP speakers learned
        self.learned: dict[str, dict[str, Route]] = {}
        # (bridge, router port MAC) -> the bridge's interior port linked to it
        self.router_macs: dict[tuple[str, str], str] = {}
        self._watched: set[tuple[str, str]] = set()
        # DHCP subnets (issue 12), by id and by bridge. They change no flow:
        # the agent answers DHCP itself, never through an installed flow.
        self.dhcp_subnet_objs: dict[str, DhcpSubnet] = {}
        self._dhcp_by_bridge: dict[str, dict[str, DhcpSubnet]] = {}
        # The MTUs a network or an uplink without its own takes (AgentCore
        # sets them from its config: default_mtu, underlay_mtu).
        self.default_mtu = 1450
        self.underlay_mtu = 1500
        # While a batch loads: the tables to follow and whether a port
        # changed, done once when the batch is in (see _batch).
        self._batching = False
        self._pending_tables: list[tuple[str, Callable]] = []
        self._pending_chains: list[str] = []
        self._batch_port: str | None = None
        self._batch_interior = False
        # bridge interior port -> its key in router_macs
        self._router_mac_key: dict[str, tuple[str, str]] = {}
        self.load_seconds: float | None = None  # start() to every kind loaded
        # The MAC and ARP tables by device, as last delivered (macs and arps
        # are their union, by (device, key)).
        self._macs_of: dict[str, dict[str, str]] = {}
        self._arps_of: dict[str, dict[str, tuple[str, float, str]]] = {}
        # (router, ip) -> entry name: ARP answers noted here before the store
        # has them (arp_learned_here); kept until the watch shows the name.
        self._arp_noted: dict[tuple[str, str], tuple[str, float]] = {}
        # port -> (its location before another host pushed one, when): see port_bound_at
        self._located_noted: dict[str, tuple[str | None, float]] = {}
        # True: a route change invalidates every flow routed by its router
        # (the behaviour before issue 13), kept for the benchmark's baseline
        # (benchmarks/bench_route_invalidation.py) only.
        self.router_wide_route_invalidation = False
        # This host's sg_conntrack (midoflow.agent.sgflows): its ports'
        # security groups are enforced by its OVS conntrack; other hosts
        # publish theirs in their state (sg_in_ovs). ``is_local``: whether a
        # port is bound here (the agent's binding table), ``local_host``: us.
        self.sg_conntrack = False
        self.local_host: str | None = None
        self.is_local: Callable[[str], bool] = lambda _pid: False
        # Load balancing (issue 14): every object of the five kinds by kind
        # and id, by kind and parent id (tuples by id, stable until changed:
        # the simulation memoises by identity), and the members' health.
        self.lb_objects: dict[str, dict[str, object]] = {k: {} for k in LB_KINDS}
        self._lb_children: dict[str, dict[str, dict[str, object]]] = {k: {} for k in LB_KINDS}
        self._lb_tuples: dict[tuple[str, str], tuple] = {}
        self.health: dict[str, str] = {}  # member id -> HEALTH_ONLINE | HEALTH_ERROR
        self._health_watched: set[str] = set()

    # ---- TopologyView -----------------------------------------------------
    def sg_in_ovs(self, port_id: str) -> bool:
        """Whether the port's host enforces its security groups with OVS
        conntrack: ours by our configuration, another host's as its state
        says (a host that does not say, or a port bound nowhere known: no,
        the simulation filters; twice is safe, never is not)."""
        if self.is_local(port_id):
            return self.sg_conntrack
        host = self.port_hosts.get(port_id)
        if host is None:
            return False
        if host == self.local_host:
            return self.sg_conntrack
        state = self.host_state.get(host)
        return bool(state and state.get("sg_conntrack"))

    def port(self, port_id: str) -> Port | None:
        return self.ports.get(port_id)

    def bridge(self, bridge_id: str) -> Bridge | None:
        return self.bridges.get(bridge_id)

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        return self.macs.get((bridge_id, mac))

    def router(self, router_id: str) -> Router | None:
        return self.routers.get(router_id)

    def chain(self, chain_id: str) -> Chain | None:
        """The chain, read (with its rules) at its first use; raises the
        store's Unavailable when it cannot be read (the packet is dropped)."""
        c = self.chains.get(chain_id)
        if c is None and chain_id and (CHAINS, chain_id) not in self._watched:
            self._load_lazily(CHAINS, [chain_id])
            c = self.chains.get(chain_id)
            if c is not None:
                self._load_lazily(RULES, c.rule_ids)
        return c

    def rule(self, rule_id: str) -> Rule | None:
        r = self.rules.get(rule_id)
        if r is None and rule_id and (RULES, rule_id) not in self._watched:
            self._load_lazily(RULES, [rule_id])
            r = self.rules.get(rule_id)
        return r

    def _load_lazily(self, kind: str, ids: Sequence[str]) -> None:
        new = [i for i in dict.fromkeys(ids) if (kind, i) not in self._watched]
        if not new:
            return
        self._watched.update((kind, i) for i in new)
        try:
            self.store.watch_objects(kind, new, lambda oid: self._object_cb(kind, oid, True))
        except Exception:
            self._watched.difference_update((kind, i) for i in new)
            raise

    def port_group(self, group_id: str) -> PortGroup | None:
        return self.port_groups.get(group_id)

    def ip_addr_group(self, group_id: str) -> IpAddrGroup | None:
        return self.ip_addr_groups.get(group_id)

    def router_mac_port(self, bridge_id: str, mac: str) -> str | None:
        return self.router_macs.get((bridge_id, mac))

    def _router_mac_entry(self, p: Port | None) -> tuple[str, str] | None:
        if p and p.type == PORT_INTERIOR and p.peer_id and p.device_type != DEVICE_ROUTER:
            peer = self.ports.get(p.peer_id)
            if peer is not None and peer.device_type == DEVICE_ROUTER and peer.mac:
                return (p.device_id, peer.mac)
        return None

    def _index_router_macs(self) -> None:
        idx, keys = {}, {}
        for p in self.ports.values():
            key = self._router_mac_entry(p)
            if key is not None:
                idx[key] = p.id
                keys[p.id] = key
        self.router_macs, self._router_mac_key = idx, keys

    def _reindex_router_macs(self, pids: set[str]) -> None:
        """The router MAC index for the bridge ports among ``pids`` (a port
        that changed and its old and new peers): O(1), not a scan."""
        for pid in pids:
            old = self._router_mac_key.pop(pid, None)
            if old is not None and self.router_macs.get(old) == pid:
                del self.router_macs[old]
            key = self._router_mac_entry(self.ports.get(pid))
            if key is not None:
                self.router_macs[key] = pid
                self._router_mac_key[pid] = key

    def routes(self, router_id: str) -> tuple[Route, ...]:
        t = self._route_tuples.get(router_id)
        if t is None:
            t = (*self.routes_by_router.get(router_id, {}).values(),
                 *self.learned.get(router_id, {}).values())
            self._route_tuples[router_id] = t
        return t

    def dhcp_subnets(self, bridge_id: str) -> tuple[DhcpSubnet, ...]:
        """The bridge's DHCP subnets, enabled or not (the caller checks), by id."""
        subs = self._dhcp_by_bridge.get(bridge_id)
        return tuple(subs[k] for k in sorted(subs)) if subs else ()

    def address_port(self, bridge_id: str, ip: str) -> Port | None:
        pid = self._addr_ports.get((bridge_id, ip))
        return self.ports.get(pid) if pid else None

    def bridge_addresses(self, bridge_id: str) -> dict[str, str]:
        """The fixed IPs of the bridge's exterior ports: ip -> port id."""
        return self._bridge_ips.get(bridge_id, {})

    def own_mac_port(self, bridge_id: str, mac: str) -> str | None:
        return self._addr_ports.get((bridge_id, mac))

    def _index_addresses(self, oid: str, old: Port | None, new: Port | None) -> set[str]:
        """(bridge, fixed IP or own MAC) -> exterior bridge port: the index, and
        the tags of the entries that changed."""
        def keys(p: Port | None) -> set[tuple[str, str]]:
            if p is None or p.type != PORT_EXTERIOR or p.device_type != DEVICE_BRIDGE:
                return set()
            return {(p.device_id, a) for a in (*p.fixed_ips, *((p.mac,) if p.mac else ()))}

        before, after = keys(old), keys(new)
        for k in before - after:
            if self._addr_ports.get(k) == oid:
                del self._addr_ports[k]
                if ":" not in k[1]:
                    self._bridge_ips[k[0]].pop(k[1], None)
        for k in after:
            self._addr_ports[k] = oid
            if ":" not in k[1]:
                self._bridge_ips[k[0]][k[1]] = oid
        return {(mac_tag if ":" in k[1] else address_tag)(*k) for k in before ^ after}

    def arp(self, router_id: str, ip: str) -> tuple[str, float] | None:
        e = self.arps.get((router_id, ip))
        return (e[0], e[1]) if e else None

    # ---- load balancing (TopologyView) ---------------------------------------
    def _lb_tuple(self, kind: str, parent: str) -> tuple:
        t = self._lb_tuples.get((kind, parent))
        if t is None:
            objs = self._lb_children[kind].get(parent, {})
            t = tuple(objs[k] for k in sorted(objs))
            self._lb_tuples[(kind, parent)] = t
        return t

    def load_balancers(self, router_id: str) -> tuple[model.LoadBalancer, ...]:
        if router_id not in self._lb_children[LOAD_BALANCERS]:
            return ()
        return self._lb_tuple(LOAD_BALANCERS, router_id)

    def pools(self, lb_id: str) -> tuple[model.Pool, ...]:
        return self._lb_tuple(POOLS, lb_id)

    def vips(self, lb_id: str) -> tuple[model.Vip, ...]:
        return self._lb_tuple(VIPS, lb_id)

    def pool(self, pool_id: str) -> model.Pool | None:
        return self.lb_objects[POOLS].get(pool_id)  # type: ignore[return-value]

    def pool_members(self, pool_id: str) -> tuple[model.PoolMember, ...]:
        return self._lb_tuple(POOL_MEMBERS, pool_id)

    def health_monitor(self, pool_id: str) -> model.HealthMonitor | None:
        mons = self._lb_tuple(HEALTH_MONITORS, pool_id)
        return mons[0] if mons else None

    def member_health(self, member_id: str) -> str | None:
        return self.health.get(member_id)

    def _lb_router(self, kind: str, obj) -> str | None:
        """The router whose balancing ``obj`` is part of (None: its parents
        are not known here yet; they tag their router when they come)."""
        for _ in range(3):
            if obj is None:
                return None
            if kind == LOAD_BALANCERS:
                return obj.router_id
            if kind in (VIPS, POOLS):
                kind, obj = LOAD_BALANCERS, self.lb_objects[LOAD_BALANCERS].get(
                    obj.load_balancer_id)
            else:
                kind, obj = POOLS, self.lb_objects[POOLS].get(obj.pool_id)
        return None

    def _apply_lb(self, kind: str, oid: str, data: Data | None) -> set[str]:
        """A balancer, VIP, pool, member or monitor changed: the flows of its
        router's balancing (a balancer's coming or going: all its router's,
        which did not match what balancing reads)."""
        objs, children, parent = self.lb_objects[kind], self._lb_children[kind], _LB_PARENT[kind]
        old = objs.pop(oid, None)
        new = model.from_dict(kind, data) if data else None
        if old is not None:
            by = children.get(getattr(old, parent), {})
            by.pop(oid, None)
            if not by:
                children.pop(getattr(old, parent), None)
            self._lb_tuples.pop((kind, getattr(old, parent)), None)
        if new is not None:
            objs[oid] = new
            children.setdefault(getattr(new, parent), {})[oid] = new
            self._lb_tuples.pop((kind, getattr(new, parent)), None)
        if old == new:
            return set()
        tags: set[str] = set()
        for o in (old, new):
            r = self._lb_router(kind, o)
            if r is not None:
                tags.add(lb_tag(r))
                if kind == LOAD_BALANCERS and (old is None or new is None
                                               or old.router_id != new.router_id):
                    tags.add(router_tag(r))
        return tags

    def _health_children(self, children: list[str]) -> None:
        new = [mid for mid in children if mid not in self._health_watched]
        self._health_watched.update(new)
        by_path = {paths.member_health(mid): mid for mid in new}
        if by_path:
            self.store.watch_states(list(by_path), lambda path: self._health_cb(by_path[path]))

    def _health_cb(self, mid: str):
        def cb(data: Data | None):
            old = self.health.get(mid)
            new = data.get("status") if data else None
            if new:
                self.health[mid] = new
            else:
                self.health.pop(mid, None)
            if old != new:
                r = self._lb_router(POOL_MEMBERS, self.lb_objects[POOL_MEMBERS].get(mid))
                if r is not None:
                    self.on_invalidate({lb_tag(r)})
            if data is None:
                self._health_watched.discard(mid)
                return False
            return None

        return cb

    # ---- locations --------------------------------------------------------
    def tunnel_to(self, local_host: str, remote_host: str) -> tuple[str, str] | None:
        """(remote tunnel IP, tunnel type) through a zone both hosts are in."""
        for zone in sorted(self.zones.values(), key=lambda z: z.id):
            members = {m.host_id: m.ip for m in zone.members}
            if local_host in members and remote_host in members:
                return members[remote_host], zone.type
        return None

    # ---- watches ----------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        with _no_cyclic_gc():
            # Chains and rules are read lazily (module doc).
            for kind in (TUNNEL_ZONES, HOSTS, PORT_GROUPS, IP_ADDR_GROUPS, BRIDGES,
                         ROUTERS, ROUTES, PORTS, BGP_PEERS, BGP_NETWORKS, DHCP_SUBNETS,
                         *LB_KINDS):
                self.store.watch_kind(kind, self._kind_cb(kind))
            self.store.watch_state_children(paths.MEMBER_HEALTH, self._health_children)
            self.store.watch_state_children(paths.PORTS_ACTIVE, self._active_ports)
            self.store.watch_state_children(paths.HOSTS_ALIVE, self._alive_hosts)
        self.load_seconds = time.monotonic() - t0
        LOG.info("topology loaded in %.2f s: %d ports, %d bridges, %d routers, %d routes, "
                 "%d hosts, %d active ports", self.load_seconds, len(self.ports),
                 len(self.bridges), len(self.routers), len(self.route_objs),
                 len(self.host_state), len(self.port_hosts))

    def _batch(self, load: Callable[[], None]) -> None:
        """Run ``load`` (a batch of first reads), then once what its objects
        asked for: the tables to follow, the router MAC index, the port change."""
        if self._batching:
            load()
            return
        self._batching = True
        try:
            load()
        finally:
            self._batching = False
            tables, self._pending_tables = self._pending_tables, []
            port, self._batch_port = self._batch_port, None
            interior, self._batch_interior = self._batch_interior, False
            chains, self._pending_chains = self._pending_chains, []
        if interior:
            self._index_router_macs()
        if tables:
            fns = dict(tables)
            self.store.watch_states_children(list(fns), lambda path: fns[path])
        if chains:
            self._load_chains(chains)
        if port is not None:
            self.on_port_change(port)

    def _want_chains(self, device: Bridge | Router) -> None:
        """A device's filters are read with it (few, and the metadata service
        reads the routers' DNAT rules without a packet); ports' lazily."""
        ids = [c for c in (device.inbound_filter_id, device.outbound_filter_id)
               if c and (CHAINS, c) not in self._watched]
        if self._batching:
            self._pending_chains.extend(ids)
        elif ids:
            self._load_chains(ids)

    def _load_chains(self, ids: Sequence[str]) -> None:
        try:
            self._load_lazily(CHAINS, ids)
            self._load_lazily(RULES, [r for c in ids if c in self.chains
                                      for r in self.chains[c].rule_ids])
        except Exception as e:  # read at the first packet instead
            LOG.warning("cannot read chains %s now (%s): read at their first use", ids, e)

    def _follow_table(self, path: str, cb: Callable[[list[str]], object]) -> None:
        if self._batching:
            self._pending_tables.append((path, cb))
        else:
            self.store.watch_state_children(path, cb)

    def _kind_cb(self, kind: str):
        def cb(ids: list[str]) -> None:
            new = [oid for oid in ids if (kind, oid) not in self._watched]
            if not new:
                return
            self._watched.update((kind, oid) for oid in new)
            self._batch(lambda: self.store.watch_objects(
                kind, new, lambda oid: self._object_cb(kind, oid)))

        return cb

    def _object_cb(self, kind: str, oid: str, lazy: bool = False):
        first = [lazy]  # a lazily read object's first value invalidates nothing

        def cb(data: Data | None, _version: int):
            try:
                self._apply(kind, oid, data, quiet=first[0])
            except Exception:  # a bad object must not kill the watch thread
                LOG.exception("cannot apply %s %s", kind, oid)
            first[0] = False
            if data is None:
                self._watched.discard((kind, oid))
                return False
            return None

        return cb

    def _apply(self, kind: str, oid: str, data: Data | None, quiet: bool = False) -> None:
        tags: set[str] = set()
        if kind == PORTS:
            old = self.ports.get(oid)
            new = model.Port.from_dict(data) if data else None
            if new:
                self.ports[oid] = new
            else:
                self.ports.pop(oid, None)
            if any(p is not None and p.type == PORT_INTERIOR for p in (old, new)):
                if self._batching:
                    self._batch_interior = True
                else:
                    self._reindex_router_macs(
                        {oid} | {p.peer_id for p in (old, new) if p and p.peer_id})
            if old != new:
                tags.add(port_tag(oid))
                for p in (old, new):
                    if p:
                        tags.add(flood_tag(p.device_id))
                        if p.peer_id:
                            tags.add(port_tag(p.peer_id))
                # A router port's network is a route and its address the
                # router's: the lookups of those addresses change with them
                # (flows in or out through the port carry its port tag).
                tags |= self._index_addresses(oid, old, new)
                if (old is None or new is None or old.device_id != new.device_id
                        or _router_port_prefixes(old) != _router_port_prefixes(new)):
                    for p in (old, new):
                        if p is not None and p.device_type == DEVICE_ROUTER:
                            tags |= self._route_tags(p.device_id, _router_port_prefixes(p))
            self.on_invalidate(tags)
            if self._batching:  # once for the batch: it scans every port
                self._batch_port = oid
            else:
                self.on_port_change(oid)
            return
        if kind == BRIDGES:
            old_b = self.bridges.get(oid)
            new_b = model.Bridge.from_dict(data) if data else None
            if new_b:
                self.bridges[oid] = new_b
                if old_b is None:
                    self._follow_table(paths.mac_table(oid), self._mac_cb(oid))
                self._want_chains(new_b)
            else:
                self.bridges.pop(oid, None)
            if old_b is None or new_b is None:
                tags |= {bridge_tag(oid), flood_tag(oid)}
            elif old_b != new_b:
                if old_b.port_ids != new_b.port_ids:
                    tags.add(flood_tag(oid))
                if (_device_state(old_b) != _device_state(new_b)
                        or old_b.mtu != new_b.mtu):
                    tags.add(bridge_tag(oid))
        elif kind == ROUTERS:
            old_r = self.routers.get(oid)
            new_r = model.Router.from_dict(data) if data else None
            if new_r:
                self.routers[oid] = new_r
                if old_r is None:
                    self._follow_table(paths.arp_table(oid), self._arp_cb(oid))
                    self._follow_table(paths.learned_routes(oid), self._learned_cb(oid))
                self._want_chains(new_r)
            else:
                self.routers.pop(oid, None)
                if self.learned.pop(oid, None):
                    self._route_tuples.pop(oid, None)
            if old_r != new_r:
                tags |= self._router_tags(oid, old_r, new_r)
        elif kind in _SIMPLE:
            store, cls, tag_of = _SIMPLE[kind]
            table = getattr(self, store)
            old_o = table.get(oid)
            new_o = cls.from_dict(data) if data else None
            if new_o is not None:
                table[oid] = new_o
            else:
                table.pop(oid, None)
            if old_o != new_o and not quiet:
                tags |= {tag_of(o) for o in (old_o, new_o) if o is not None}
                if kind in (BGP_PEERS, BGP_NETWORKS):
                    self.on_bgp()
        elif kind == ROUTES:
            old_rt = self.route_objs.pop(oid, None)
            new_rt = model.Route.from_dict(data) if data else None
            for r in (old_rt, new_rt):
                if r is not None:
                    self._route_tuples.pop(r.router_id, None)
            if old_rt is not None:
                self.routes_by_router.get(old_rt.router_id, {}).pop(oid, None)
                tags |= self._route_tags(old_rt.router_id, {old_rt.dst_cidr})
            if new_rt is not None:
                self.route_objs[oid] = new_rt
                self.routes_by_router.setdefault(new_rt.router_id, {})[oid] = new_rt
                tags |= self._route_tags(new_rt.router_id, {new_rt.dst_cidr})
            if old_rt == new_rt:
                tags.clear()
        elif kind == TUNNEL_ZONES:
            old_z = self.zones.get(oid)
            new_z = model.TunnelZone.from_dict(data) if data else None
            if new_z:
                self.zones[oid] = new_z
            else:
                self.zones.pop(oid, None)
            before = {(m.host_id, m.ip) for m in old_z.members} if old_z else set()
            after = {(m.host_id, m.ip) for m in new_z.members} if new_z else set()
            if old_z and new_z and old_z.type != new_z.type:
                before = after | before
            tags |= {host_tag(h) for h, _ in before ^ after}
        elif kind == DHCP_SUBNETS:
            old_d = self.dhcp_subnet_objs.pop(oid, None)
            new_d = DhcpSubnet.from_dict(data) if data else None
            if old_d is not None:
                by = self._dhcp_by_bridge.get(old_d.bridge_id, {})
                by.pop(oid, None)
                if not by:
                    self._dhcp_by_bridge.pop(old_d.bridge_id, None)
            if new_d is not None:
                self.dhcp_subnet_objs[oid] = new_d
                self._dhcp_by_bridge.setdefault(new_d.bridge_id, {})[oid] = new_d
        elif kind in _LB_PARENT:
            tags |= self._apply_lb(kind, oid, data)
        elif kind == HOSTS:
            if data:
                self.hosts[oid] = data
            else:
                self.hosts.pop(oid, None)
        if tags:
            self.on_invalidate(tags)

    def _router_tags(self, oid: str, old: Router | None, new: Router | None) -> set[str]:
        """A router changed. Only its set of ports (an interface added or
        removed; its name): the lookups of those ports' networks and
        addresses, and the flows through them. Anything else (created,
        deleted, admin state, chains): every flow through the router."""
        if (old is not None and new is not None and not self.router_wide_route_invalidation
                and replace(old, port_ids=new.port_ids, name=new.name,
                            tenant_id=new.tenant_id) == new):
            moved = set(old.port_ids) ^ set(new.port_ids)
            tags = {port_tag(p) for p in moved}
            for pid in moved:
                tags |= self._route_tags(oid, _router_port_prefixes(self.ports.get(pid)))
            return tags
        return {router_tag(oid), routes_tag(oid)}

    def _route_tags(self, router_id: str, cidrs: set[str]) -> set[str]:
        """The tags a change of the router's routes for these destination
        prefixes invalidates: the flows routed to an address in one of them
        (a new more-specific route, a removed one, a changed next hop...)."""
        if not cidrs:
            return set()
        if self.router_wide_route_invalidation:
            return {routes_tag(router_id)}
        return {route_prefix_tag(router_id, c) for c in cidrs}

    def _mac_cb(self, bridge_id: str):
        def cb(children: list[str]):
            if bridge_id not in self.bridges:
                return False
            new: dict[str, str] = {}
            for name in children:
                entry = paths.parse_mac_entry(name)
                if entry:
                    mac, pid = entry
                    # Two entries for one MAC (a VM moving): prefer an active port.
                    if mac not in new or pid in self.port_hosts:
                        new[mac] = pid
            old = self._macs_of.get(bridge_id, {})  # not a scan of every bridge's
            self._macs_of[bridge_id] = new
            changed = {m for m in old.keys() | new.keys() if old.get(m) != new.get(m)}
            for m in changed:
                if m in new:
                    self.macs[(bridge_id, m)] = new[m]
                else:
                    self.macs.pop((bridge_id, m), None)
            if changed:
                self.on_invalidate({mac_tag(bridge_id, m) for m in changed})
            return None

        return cb

    def _arp_cb(self, router_id: str):
        def cb(children: list[str]):
            if router_id not in self.routers:
                return False
            new: dict[str, tuple[str, float, str]] = {}
            for name in children:
                entry = paths.parse_arp_entry(name)
                if entry:
                    ip, mac, at = entry
                    if ip not in new or at > new[ip][1]:  # the freshest entry wins
                        new[ip] = (mac, at, name)
            old = self._arps_of.get(router_id, {})  # not a scan of every router's
            for ip, e in old.items():  # noted here, its store entry not seen yet
                noted = self._arp_noted.get((router_id, ip))
                if noted is not None and noted[0] == e[2]:
                    if e[2] in children or time.monotonic() - noted[1] > ARP_NOTE_SECONDS:
                        del self._arp_noted[(router_id, ip)]
                    elif ip not in new or e[1] >= new[ip][1]:
                        new[ip] = e
            self._arps_of[router_id] = new
            changed = {ip for ip in old.keys() | new.keys()
                       if (old.get(ip) or ("",))[0] != (new.get(ip) or ("",))[0]}
            for ip in old.keys() - new.keys():
                self.arps.pop((router_id, ip), None)
            for ip, e in new.items():
                self.arps[(router_id, ip)] = e
            if changed:
                self.on_invalidate({arp_tag(router_id, ip) for ip in changed})
            for ip in new:
                if ip in changed or new[ip][1] != old.get(ip, ("", -1.0))[1]:
                    self.on_arp(router_id, ip)
            return None

        return cb

    def arp_learned_here(self, router_id: str, ip: str, mac: str, at: float,
                         name: str) -> None:
        """An ARP answer this agent simulated, in the table before its store
        entry (``name``) comes back through the watch, which then finds it
        there and changes nothing. What waits for it goes now (on_arp)."""
        if router_id not in self.routers:
            return
        table = self._arps_of.setdefault(router_id, {})
        old = table.get(ip)
        table[ip] = self.arps[(router_id, ip)] = (mac, at, name)
        self._arp_noted[(router_id, ip)] = (name, time.monotonic())
        if old is None or old[0] != mac:
            self.on_invalidate({arp_tag(router_id, ip)})
        self.on_arp(router_id, ip)

    def _learned_cb(self, router_id: str):
        def cb(children: list[str]):
            if router_id not in self.routers:
                return False
            new: dict[str, Route] = {}
            for name in children:
                e = paths.parse_learned_route(name)
                if e:
                    new[name] = Route(id=f"learned:{name}", router_id=router_id, **e)
            old = self.learned.get(router_id, {})
            if new.keys() != old.keys():
                self.learned[router_id] = new
                self._route_tuples.pop(router_id, None)
                changed = {r.dst_cidr for k, r in (*old.items(), *new.items())
                           if k not in old or k not in new}
                self.on_invalidate(self._route_tags(router_id, changed))
            return None

        return cb

    def _active_ports(self, children: list[str]) -> None:
        new = [pid for pid in children if pid not in self._active_watched]
        self._active_watched.update(new)
        by_path = {paths.port_active(pid): pid for pid in new}
        self.store.watch_states(list(by_path), lambda path: self._active_cb(by_path[path]))

    def _active_cb(self, pid: str):
        """Follows one port's activation. The watch outlives a deletion while
        the port exists: an agent that takes a port over (a restart, a moved
        VM) deletes and re-creates the node, and the children list may never
        show the gap, so a watch that ended there would lose the port."""
        def cb(data: Data | None):
            old = self.port_hosts.get(pid)
            new = data.get("host_id") if data else None
            self._located_noted.pop(pid, None)  # the store's word, from now on
            self._set_location(pid, old, new)
            if new or pid in self.ports:
                return None
            self._active_watched.discard(pid)
            return False

        return cb

    def port_bound_at(self, pid: str, host: str) -> bool:
        """Another host says it has just bound ``pid`` (pushed over the tunnel
        with its first packets, ahead of the store): this host may reach the
        port now instead of after its watch of ``state/ports``. The store's
        word replaces it when it comes; unconfirmed, it is forgotten after
        LOCATION_NOTE_SECONDS (:meth:`expire_notes`). False when ignored (a
        port or host not known here, or the location already known)."""
        if pid not in self.ports or host not in self.host_state or host == self.local_host:
            return False
        old = self.port_hosts.get(pid)
        if old == host:
            return False
        if pid not in self._located_noted:
            self._located_noted[pid] = (old, time.monotonic())
        self._set_location(pid, old, host)
        return True

    def expire_notes(self) -> int:
        """Locations another host pushed that the store has not confirmed in
        LOCATION_NOTE_SECONDS: back to what the store said. How many."""
        now = time.monotonic()
        gone = [pid for pid, (_prev, at) in self._located_noted.items()
                if now - at > LOCATION_NOTE_SECONDS]
        for pid in gone:
            prev, _at = self._located_noted.pop(pid)
            self._set_location(pid, self.port_hosts.get(pid), prev)
        return len(gone)

    def _set_location(self, pid: str, old: str | None, new: str | None) -> None:
        if new:
            self.port_hosts[pid] = new
        else:
            self.port_hosts.pop(pid, None)
        if old != new:
            tags = {port_tag(pid)}
            p = self.ports.get(pid)
            if p:
                tags.add(flood_tag(p.device_id))
            self.on_invalidate(tags)
            self.on_port_location(pid)

    def _alive_hosts(self, children: list[str]) -> None:
        new = [hid for hid in children if hid not in self.host_state]
        for hid in new:
            self.host_state[hid] = {}
        by_path = {paths.host_alive(hid): hid for hid in new}
        self.store.watch_states(list(by_path), lambda path: self._alive_cb(by_path[path]))

    def _alive_cb(self, hid: str):
        def cb(data: Data | None):
            if data is None:
                self.host_state.pop(hid, None)
                self.on_invalidate({host_tag(hid)})
                return False
            before = self.host_state.get(hid)  # {}: not read yet (_alive_hosts)
            self.host_state[hid] = data
            if before and bool(before.get("sg_conntrack")) != bool(data.get("sg_conntrack")):
                # who filters its ports changed: decisions to them are stale
                self.on_invalidate({host_tag(hid)})
            return None

        return cb
