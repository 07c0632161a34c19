"""A TopologyView read straight from the store: what a trace simulates against.

The agent simulates against its watched cache (:mod:`midoflow.agent.cache`);
the API has no cache, so :class:`StoreView` reads the store on demand and
remembers what it read for the life of one view (one trace sees one
consistent-enough picture and never reads an object twice). It is read-only:
nothing a simulation learns is written back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from midoflow import model
from midoflow.errors import NotFound
from midoflow.model import (
    Bridge,
    Chain,
    HealthMonitor,
    IpAddrGroup,
    LoadBalancer,
    Pool,
    PoolMember,
    Port,
    PortGroup,
    Route,
    Router,
    Rule,
    Vip,
)
from midoflow.store import paths
from midoflow.store.base import Store


class StoreView:
    """Implements :class:`midoflow.sim.view.TopologyView` over a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # One object per id for the life of the view: the simulation memoises
        # what it derives from an object by the object's identity.
        self._objects: dict[tuple[str, str], Any] = {}
        self._routes: dict[str, tuple[Route, ...]] | None = None
        self._macs: dict[str, dict[str, str]] = {}
        self._arps: dict[str, dict[str, tuple[str, float]]] = {}
        self._active: dict[str, bool] = {}

    def _get(self, kind: str, oid: str, cls: Any) -> Any:
        key = (kind, oid)
        if key not in self._objects:
            try:
                self._objects[key] = cls.from_dict(self.store.get(kind, oid)[0])
            except NotFound:
                self._objects[key] = None
        return self._objects[key]

    # ---- TopologyView -----------------------------------------------------
    def port(self, port_id: str) -> Port | None:
        return self._get(model.PORTS, port_id, Port)

    def bridge(self, bridge_id: str) -> Bridge | None:
        return self._get(model.BRIDGES, bridge_id, Bridge)

    def router(self, router_id: str) -> Router | None:
        return self._get(model.ROUTERS, router_id, Router)

    def routes(self, router_id: str) -> Sequence[Route]:
        if self._routes is None:
            by_router: dict[str, list[Route]] = {}
            for d, _ in self.store.list(model.ROUTES):
                by_router.setdefault(d.get("router_id"), []).append(Route.from_dict(d))
            self._routes = {rid: tuple(sorted(rs, key=lambda r: r.id))
                            for rid, rs in by_router.items()}
        memo = self.__dict__.setdefault("_with_learned", {})
        if router_id in memo:  # one tuple per router: the simulation memoises by identity
            return memo[router_id]
        configured = self._routes.get(router_id, ())
        learned = []  # what the gateways' BGP speakers hold now (ephemeral)
        try:
            names = self.store.list_state(paths.learned_routes(router_id))
        except Exception:  # the trace still works from the configured routes
            names = []
        for name in sorted(names):
            e = paths.parse_learned_route(name)
            if e:
                learned.append(Route(id=f"learned:{name}", router_id=router_id, **e))
        memo[router_id] = (*configured, *learned)
        return memo[router_id]

    def chain(self, chain_id: str) -> Chain | None:
        return self._get(model.CHAINS, chain_id, Chain)

    def rule(self, rule_id: str) -> Rule | None:
        return self._get(model.RULES, rule_id, Rule)

    def rules(self, chain_id: str) -> tuple[Rule, ...]:
        """The chain's rules in order (missing ones skipped)."""
        chain = self.chain(chain_id)
        if chain is None:
            return ()
        return tuple(r for r in (self.rule(rid) for rid in chain.rule_ids) if r is not None)

    def port_group(self, group_id: str) -> PortGroup | None:
        return self._get(model.PORT_GROUPS, group_id, PortGroup)

    def ip_addr_group(self, group_id: str) -> IpAddrGroup | None:
        return self._get(model.IP_ADDR_GROUPS, group_id, IpAddrGroup)

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        if bridge_id not in self._macs:
            table: dict[str, str] = {}
            for name in sorted(self.store.list_state(paths.mac_table(bridge_id))):
                entry = paths.parse_mac_entry(name)
                if entry is None:
                    continue
                m, pid = entry
                # Two entries for one MAC (a VM moving): prefer an active port,
                # as the agents do.
                if m not in table or (not self._is_active(table[m]) and self._is_active(pid)):
                    table[m] = pid
            self._macs[bridge_id] = table
        return self._macs[bridge_id].get(mac)

    def address_port(self, bridge_id: str, ip: str) -> Port | None:
        memo = self.__dict__.setdefault("_addresses", {})
        if bridge_id not in memo:
            memo[bridge_id] = {addr: d["id"] for d, _ in self.store.list(model.PORTS)
                               if d.get("device_id") == bridge_id
                               and d.get("type", model.PORT_EXTERIOR) == model.PORT_EXTERIOR
                               for addr in d.get("fixed_ips") or ()}
        pid = memo[bridge_id].get(ip)
        return self.port(pid) if pid else None

    def arp(self, router_id: str, ip: str) -> tuple[str, float] | None:
        if router_id not in self._arps:
            table: dict[str, tuple[str, float]] = {}
            for name in self.store.list_state(paths.arp_table(router_id)):
                entry = paths.parse_arp_entry(name)
                if entry is None:
                    continue
                eip, emac, learned = entry
                # During a refresh old and new names coexist: the newest wins.
                if eip not in table or learned > table[eip][1]:
                    table[eip] = (emac, learned)
            self._arps[router_id] = table
        return self._arps[router_id].get(ip)

    # ---- load balancing: each kind listed once per view, indexed by parent --
    def _children(self, kind: str, parent_field: str, parent_id: str) -> tuple:
        index = self.__dict__.setdefault("_lb_index", {})
        if kind not in index:
            by_parent: dict[str, list] = {}
            for d, _ in self.store.list(kind):
                obj = model.from_dict(kind, d)
                by_parent.setdefault(getattr(obj, parent_field), []).append(obj)
            index[kind] = {k: tuple(sorted(v, key=lambda o: o.id)) for k, v in by_parent.items()}
        return index[kind].get(parent_id, ())

    def load_balancers(self, router_id: str) -> Sequence[LoadBalancer]:
        return self._children(model.LOAD_BALANCERS, "router_id", router_id)

    def pools(self, lb_id: str) -> Sequence[Pool]:
        return self._children(model.POOLS, "load_balancer_id", lb_id)

    def vips(self, lb_id: str) -> Sequence[Vip]:
        return self._children(model.VIPS, "load_balancer_id", lb_id)

    def pool(self, pool_id: str) -> Pool | None:
        return self._get(model.POOLS, pool_id, Pool)

    def pool_members(self, pool_id: str) -> Sequence[PoolMember]:
        return self._children(model.POOL_MEMBERS, "pool_id", pool_id)

    def health_monitor(self, pool_id: str) -> HealthMonitor | None:
        found = self._children(model.HEALTH_MONITORS, "pool_id", pool_id)
        return found[0] if found else None

    def member_health(self, member_id: str) -> str | None:
        data = self.store.get_state(paths.member_health(member_id))
        return data.get("status") if data else None

    def _is_active(self, port_id: str) -> bool:
        if port_id not in self._active:
            self._active[port_id] = self.store.get_state(paths.port_active(port_id)) is not None
        return self._active[port_id]
