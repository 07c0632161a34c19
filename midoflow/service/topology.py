"""The topology service: validation and referential integrity over a Store.

Everything the API writes goes through here. Each request is one
``store.commit`` (all or nothing) whose ops carry the versions the checks were
made against, so a concurrent change of any object a decision depended on
makes the commit fail with Conflict instead of leaving a dangling reference.

:class:`TopologyService` is a facade: each kind family is a module of its own
(:mod:`.hosts`, :mod:`.ports`, :mod:`.routers`, :mod:`.chains`, :mod:`.groups`,
:mod:`.security_groups`, :mod:`.bgp`, :mod:`.status`), each given the shared
:class:`~.context.Ctx` (the store and the read/commit/output helpers). The
fields, types, defaults and read-only fields of every kind are declared once
in :mod:`midoflow.kinds`; every delete stages through :mod:`.refs`, which applies
what the fields referencing the deleted kind declare (refuse, cascade, clear).
"""

from __future__ import annotations

from typing import Any

from midoflow.service.bgp import Bgp
from midoflow.service.chains import Chains
from midoflow.service.context import Ctx
from midoflow.service.crud import KindCrud
from midoflow.service.dhcp import Dhcp
from midoflow.service.groups import Groups
from midoflow.service.hosts import Hosts
from midoflow.service.lb import METHODS as LB_METHODS
from midoflow.service.lb import Lb
from midoflow.service.ports import Ports
from midoflow.service.routers import Routers
from midoflow.service.security_groups import SecurityGroups
from midoflow.service.status import Status, status_host
from midoflow.store.base import Data, Store

_status_host = status_host  # the name tests and tools import from here


class TopologyService:
    def __init__(self, store: Store) -> None:
        self.store = store
        ctx = Ctx(store)
        self.hosts = Hosts(ctx)
        self.ports = Ports(ctx)
        self.routers = Routers(ctx)
        self.chains = Chains(ctx)
        self.groups = Groups(ctx)
        self.security_groups = SecurityGroups(ctx)
        self.bgp = Bgp(ctx)
        self.dhcp = Dhcp(ctx)
        self.lb = Lb(ctx)
        self.status_ = Status(ctx, self.hosts)
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        """The load-balancing kinds' CRUD (``create_vip``, ``list_pools``, ...: the
        names the REST app calls, served by :class:`~midoflow.service.lb.Lb`)."""
        if name in LB_METHODS and "lb" in self.__dict__:
            return getattr(self.__dict__["lb"], name)
        raise AttributeError(name)

    def kind(self, name: str) -> KindCrud:
        """The generic CRUD of a declared kind (what a kind without special rules
        needs; the REST app falls back to it where no method is named here)."""
        return KindCrud(self._ctx, name)

    # -------------------------------------- hosts and tunnel zones
    def list_hosts(self) -> list[Data]:
        return self.hosts.list_hosts()

    def get_host(self, id: str) -> Data:
        return self.hosts.get_host(id)

    def create_host(self, body: Any) -> Data:
        return self.hosts.create_host(body)

    def update_host(self, id: str, body: Any) -> Data:
        return self.hosts.update_host(id, body)

    def delete_host(self, id: str) -> None:
        return self.hosts.delete_host(id)

    def host_bindings(self, id: str) -> list[Data]:
        return self.hosts.host_bindings(id)

    def list_tunnel_zones(self) -> list[Data]:
        return self.hosts.list_tunnel_zones()

    def get_tunnel_zone(self, id: str) -> Data:
        return self.hosts.get_tunnel_zone(id)

    def create_tunnel_zone(self, body: Any) -> Data:
        return self.hosts.create_tunnel_zone(body)

    def update_tunnel_zone(self, id: str, body: Any) -> Data:
        return self.hosts.update_tunnel_zone(id, body)

    def delete_tunnel_zone(self, id: str) -> None:
        return self.hosts.delete_tunnel_zone(id)

    def list_members(self, id: str) -> list[Data]:
        return self.hosts.list_members(id)

    def add_member(self, id: str, body: Any) -> Data:
        return self.hosts.add_member(id, body)

    def remove_member(self, id: str, host_id: str) -> Data:
        return self.hosts.remove_member(id, host_id)

    # -------------------------- bridges, ports, bindings and links
    def list_bridges(self, tenant_id: str | None = None) -> list[Data]:
        return self.ports.list_bridges(tenant_id)

    def get_bridge(self, id: str) -> Data:
        return self.ports.get_bridge(id)

    def create_bridge(self, body: Any) -> Data:
        return self.ports.create_bridge(body)

    def update_bridge(self, id: str, body: Any) -> Data:
        return self.ports.update_bridge(id, body)

    def delete_bridge(self, id: str) -> None:
        return self.ports.delete_bridge(id)

    def list_bridge_ports(self, id: str) -> list[Data]:
        return self.ports.list_bridge_ports(id)

    def list_ports(self) -> list[Data]:
        return self.ports.list_ports()

    def get_port(self, id: str) -> Data:
        return self.ports.get_port(id)

    def create_port(self, bridge_id: str, body: Any) -> Data:
        return self.ports.create_port(bridge_id, body)

    def update_port(self, id: str, body: Any) -> Data:
        return self.ports.update_port(id, body)

    def delete_port(self, id: str) -> None:
        return self.ports.delete_port(id)

    def set_binding(self, port_id: str, body: Any) -> Data:
        return self.ports.set_binding(port_id, body)

    def bind_port(self, port_id: str, host_id: str, interface_name: str) -> Data:
        return self.ports.bind_port(port_id, host_id, interface_name)

    def unbind_port(self, port_id: str) -> Data:
        return self.ports.unbind_port(port_id)

    def set_link(self, port_id: str, body: Any) -> Data:
        return self.ports.set_link(port_id, body)

    def link_port(self, port_id: str, peer_id: str) -> Data:
        return self.ports.link_port(port_id, peer_id)

    def unlink_port(self, port_id: str) -> Data:
        return self.ports.unlink_port(port_id)

    # ---------------------------- routers, router ports and routes
    def list_routers(self, tenant_id: str | None = None) -> list[Data]:
        return self.routers.list_routers(tenant_id)

    def get_router(self, id: str) -> Data:
        return self.routers.get_router(id)

    def create_router(self, body: Any) -> Data:
        return self.routers.create_router(body)

    def update_router(self, id: str, body: Any) -> Data:
        return self.routers.update_router(id, body)

    def delete_router(self, id: str) -> None:
        return self.routers.delete_router(id)

    def list_router_ports(self, id: str) -> list[Data]:
        return self.routers.list_router_ports(id)

    def create_router_port(self, router_id: str, body: Any) -> Data:
        return self.routers.create_router_port(router_id, body)

    def list_routes(self) -> list[Data]:
        return self.routers.list_routes()

    def list_router_routes(self, id: str) -> list[Data]:
        return self.routers.list_router_routes(id)

    def get_route(self, id: str) -> Data:
        return self.routers.get_route(id)

    def create_route(self, router_id: str, body: Any) -> Data:
        return self.routers.create_route(router_id, body)

    def update_route(self, id: str, body: Any) -> Data:
        return self.routers.update_route(id, body)

    def delete_route(self, id: str) -> None:
        return self.routers.delete_route(id)

    # -------------------------------------------- chains and rules
    def list_chains(self, tenant_id: str | None = None) -> list[Data]:
        return self.chains.list_chains(tenant_id)

    def get_chain(self, id: str) -> Data:
        return self.chains.get_chain(id)

    def create_chain(self, body: Any) -> Data:
        return self.chains.create_chain(body)

    def update_chain(self, id: str, body: Any) -> Data:
        return self.chains.update_chain(id, body)

    def delete_chain(self, id: str) -> None:
        return self.chains.delete_chain(id)

    def list_rules(self) -> list[Data]:
        return self.chains.list_rules()

    def list_chain_rules(self, id: str) -> list[Data]:
        return self.chains.list_chain_rules(id)

    def get_rule(self, id: str) -> Data:
        return self.chains.get_rule(id)

    def create_rule(self, chain_id: str, body: Any) -> Data:
        return self.chains.create_rule(chain_id, body)

    def update_rule(self, id: str, body: Any) -> Data:
        return self.chains.update_rule(id, body)

    def delete_rule(self, id: str) -> None:
        return self.chains.delete_rule(id)

    # --------------------------- port groups and IP address groups
    def list_port_groups(self, tenant_id: str | None = None) -> list[Data]:
        return self.groups.list_port_groups(tenant_id)

    def get_port_group(self, id: str) -> Data:
        return self.groups.get_port_group(id)

    def create_port_group(self, body: Any) -> Data:
        return self.groups.create_port_group(body)

    def update_port_group(self, id: str, body: Any) -> Data:
        return self.groups.update_port_group(id, body)

    def delete_port_group(self, id: str) -> None:
        return self.groups.delete_port_group(id)

    def list_port_group_ports(self, id: str) -> list[Data]:
        return self.groups.list_port_group_ports(id)

    def add_port_group_port(self, id: str, body: Any) -> Data:
        return self.groups.add_port_group_port(id, body)

    def remove_port_group_port(self, id: str, port_id: str) -> Data:
        return self.groups.remove_port_group_port(id, port_id)

    def list_ip_addr_groups(self, tenant_id: str | None = None) -> list[Data]:
        return self.groups.list_ip_addr_groups(tenant_id)

    def get_ip_addr_group(self, id: str) -> Data:
        return self.groups.get_ip_addr_group(id)

    def create_ip_addr_group(self, body: Any) -> Data:
        return self.groups.create_ip_addr_group(body)

    def update_ip_addr_group(self, id: str, body: Any) -> Data:
        return self.groups.update_ip_addr_group(id, body)

    def delete_ip_addr_group(self, id: str) -> None:
        return self.groups.delete_ip_addr_group(id)

    def list_ip_addr_group_addresses(self, id: str) -> list[str]:
        return self.groups.list_ip_addr_group_addresses(id)

    def add_ip_addr_group_address(self, id: str, body: Any) -> Data:
        return self.groups.add_ip_addr_group_address(id, body)

    def remove_ip_addr_group_address(self, id: str, address: str) -> Data:
        return self.groups.remove_ip_addr_group_address(id, address)

    # --------------------------------------------- security groups
    def list_security_groups(self, tenant_id: str | None = None) -> list[Data]:
        return self.security_groups.list_security_groups(tenant_id)

    def get_security_group(self, id: str) -> Data:
        return self.security_groups.get_security_group(id)

    def create_security_group(self, body: Any) -> Data:
        return self.security_groups.create_security_group(body)

    def update_security_group(self, id: str, body: Any) -> Data:
        return self.security_groups.update_security_group(id, body)

    def delete_security_group(self, id: str) -> None:
        return self.security_groups.delete_security_group(id)

    def list_security_group_rules(self, id: str) -> list[Data]:
        return self.security_groups.list_security_group_rules(id)

    def get_security_group_rule(self, id: str, rule_id: str) -> Data:
        return self.security_groups.get_security_group_rule(id, rule_id)

    def add_security_group_rule(self, id: str, body: Any) -> Data:
        return self.security_groups.add_security_group_rule(id, body)

    def delete_security_group_rule(self, id: str, rule_id: str) -> None:
        return self.security_groups.delete_security_group_rule(id, rule_id)

    # ---------------------- BGP peers, networks and learned routes
    def list_bgp_peers(self) -> list[Data]:
        return self.bgp.list_bgp_peers()

    def list_port_bgp_peers(self, port_id: str) -> list[Data]:
        return self.bgp.list_port_bgp_peers(port_id)

    def get_bgp_peer(self, id: str) -> Data:
        return self.bgp.get_bgp_peer(id)

    def create_bgp_peer(self, port_id: str, body: Any) -> Data:
        return self.bgp.create_bgp_peer(port_id, body)

    def update_bgp_peer(self, id: str, body: Any) -> Data:
        return self.bgp.update_bgp_peer(id, body)

    def delete_bgp_peer(self, id: str) -> None:
        return self.bgp.delete_bgp_peer(id)

    def list_bgp_networks(self) -> list[Data]:
        return self.bgp.list_bgp_networks()

    def list_port_bgp_networks(self, port_id: str) -> list[Data]:
        return self.bgp.list_port_bgp_networks(port_id)

    def get_bgp_network(self, id: str) -> Data:
        return self.bgp.get_bgp_network(id)

    def create_bgp_network(self, port_id: str, body: Any) -> Data:
        return self.bgp.create_bgp_network(port_id, body)

    def delete_bgp_network(self, id: str) -> None:
        return self.bgp.delete_bgp_network(id)

    def list_learned_routes(self, router_id: str) -> list[Data]:
        return self.bgp.list_learned_routes(router_id)

    # ------------------------------------------------- DHCP subnets
    def list_dhcp_subnets(self) -> list[Data]:
        return self.dhcp.list_dhcp_subnets()

    def list_bridge_dhcp_subnets(self, bridge_id: str) -> list[Data]:
        return self.dhcp.list_bridge_dhcp_subnets(bridge_id)

    def get_dhcp_subnet(self, id: str) -> Data:
        return self.dhcp.get_dhcp_subnet(id)

    def create_dhcp_subnet(self, bridge_id: str, body: Any) -> Data:
        return self.dhcp.create_dhcp_subnet(bridge_id, body)

    def update_dhcp_subnet(self, id: str, body: Any) -> Data:
        return self.dhcp.update_dhcp_subnet(id, body)

    def delete_dhcp_subnet(self, id: str) -> None:
        return self.dhcp.delete_dhcp_subnet(id)

    # -------------------------------------------- status and trace
    def trace(self, body: Any) -> Data:
        return self.status_.trace(body)

    def status(self) -> Data:
        return self.status_.status()
