"""Neutron routers: external gateway, extra routes, interfaces by subnet or port.

Every change ends in :func:`sync_router`, which regenerates the router's whole
native side (router, router ports linked to the Neutron ports' bridge ports,
routes, NAT chains and rules, the gateway port's proxy ARP for floating IPs)
from the Neutron state staged in the request, and stages exactly the
difference (:mod:`.translate_l3` computes it).
"""

from __future__ import annotations

from typing import Any

import netaddr

from midoflow import model
from midoflow.neutron import attrs as a
from midoflow.neutron import errors as ne
from midoflow.neutron import ports as nports
from midoflow.neutron import translate_l3 as t3
from midoflow.neutron.base import Collection, Op, register
from midoflow.service import refs
from midoflow.service.sync import _reconcile_chain
from midoflow.store.base import Data

RESOURCE = "router"
CREATE = ("name", "description", "admin_state_up", "external_gateway_info", "distributed",
          "ha", "availability_zone_hints", "flavor_id", "project_id", "tenant_id")
UPDATE = ("name", "description", "admin_state_up", "external_gateway_info", "distributed",
          "routes")
READONLY = ("id", "status", "tags", "created_at", "updated_at", "revision_number",
            "availability_zones", "routes", "ha", "flavor_id", "availability_zone_hints",
            "project_id", "tenant_id")
INTERFACE_OWNER = "network:router_interface_distributed"


class _Typed(ne.NeutronError):
    """A Neutron error whose ``type`` is its own class name even under BadRequest."""

    @property
    def type(self) -> str:
        return type(self).__name__


class BadRouterRequest(_Typed, ne.BadRequest):
    """Neutron's ``BadRequest(resource='router')``: "Bad router request: ..."."""

    @property
    def type(self) -> str:
        return "BadRequest"


class InvalidRoutes(_Typed, ne.BadRequest): ...
class RouterInterfaceInUseByRoute(ne.Conflict): ...
class RouterExternalGatewayInUseByFloatingIp(ne.Conflict): ...


def bad(msg: str) -> BadRouterRequest:
    return BadRouterRequest(f"Bad router request: {msg}.")


# ------------------------------------------------------------ Neutron state
def interfaces(op: Op, rid: str) -> list[Data]:
    return [p for p in op.scan("ports") if p.get("device_id") == rid
            and p.get("device_owner") in t3.INTERFACE_OWNERS]


def gateway_port(op: Op, rid: str) -> Data | None:
    for p in op.scan("ports"):
        if p.get("device_id") == rid and p.get("device_owner") == t3.GATEWAY_OWNER:
            return p
    return None


def _subnet_of(op: Op, port: Data) -> Data | None:
    f = t3.fixed_ip(port)
    return op.get("subnets", f["subnet_id"]) if f else None


def attached(op: Op, rid: str) -> list[tuple[Data, Data]]:
    """(Neutron port, subnet) of every interface and of the gateway."""
    out = []
    gw = gateway_port(op, rid)
    for p in interfaces(op, rid) + ([gw] if gw else []):
        sub = _subnet_of(op, p)
        if sub is not None:
            out.append((p, sub))
    return out


def router_floatingips(op: Op, rid: str) -> list[Data]:
    return [f for f in op.scan("floatingips") if f.get("router_id") == rid and f.get("port_id")]


# ------------------------------------------------------------ native sync
def _tunnel_key(op: Op) -> int:
    key = op.txn.store.next_counter("tunnel_key")
    if not model.TUNNEL_KEY_MIN <= key <= model.TUNNEL_KEY_MAX:
        raise ne.Conflict("no tunnel key left for a new port (24-bit space exhausted)")
    return key


def sync_router(op: Op, rid: str) -> None:
    """Stage the native objects of router ``rid`` as its Neutron state says
    (all of them deleted when the Neutron router is gone)."""
    txn = op.txn
    router = op.get("routers", rid)
    gw = gateway_port(op, rid) if router else None
    ports = attached(op, rid) if router else []
    gw_pair = next(((p, s) for p, s in ports if p is gw), None) if gw else None
    fips = router_floatingips(op, rid) if router else []
    # rules first: they reference the ports that may go below
    chains = t3.router_chains(router, gw, fips) if router else []
    wanted_chains = {c["id"]: (c, rules) for c, rules in chains}
    for cid in t3.chain_ids(rid):
        _reconcile_chain(txn, cid, wanted_chains.get(cid))
    native = txn.get(model.ROUTERS, rid)
    if native is not None and not chains and native.get("inbound_filter_id"):
        # the chains went: the router stops filtering through them in this commit
        txn.put(model.ROUTERS, dict(native, inbound_filter_id=None, outbound_filter_id=None))
    routes = {r["id"]: r for r in (t3.router_routes(router, ports, gw_pair) if router else [])}
    for r in txn.scan(model.ROUTES):
        if r.get("router_id") == rid and r["id"] not in routes:
            txn.delete(model.ROUTES, r["id"])
    for r in routes.values():
        txn.sync(model.ROUTES, r)
    wanted: dict[str, Data] = {}
    for port, subnet in ports:
        pid = t3.router_port_id(port["id"])
        cur = txn.get(model.PORTS, pid)
        key = cur["tunnel_key"] if cur else _tunnel_key(op)
        arp = t3.proxy_arp(rid, fips) if port is gw else []
        wanted[pid] = t3.router_port(port, subnet, rid, key, arp)
    # the health ports of the router's load balancers are the native API's (issue 14)
    kept = [lb["health_port_id"] for lb in txn.scan(model.LOAD_BALANCERS)
            if lb.get("router_id") == rid and lb.get("health_port_id")]
    for p in list(txn.scan(model.PORTS)):
        if p.get("device_id") == rid and p["id"] not in wanted and p["id"] not in kept:
            refs.delete(txn, model.PORTS, p["id"])
    for pid, rp in wanted.items():
        txn.sync(model.PORTS, rp)
        bport = txn.get(model.PORTS, rp["peer_id"])
        if bport is not None and bport.get("peer_id") != pid:
            bport["peer_id"] = pid
            txn.put(model.PORTS, bport)
    if router is None:
        if txn.get(model.ROUTERS, rid) is not None:
            refs.delete(txn, model.ROUTERS, rid)
        return
    native = t3.native_router(router, list(wanted) + kept, bool(chains))
    if txn.get(model.ROUTERS, rid) is None:
        txn.create(model.ROUTERS, native)
    else:
        txn.sync(model.ROUTERS, native)


# ------------------------------------------------------------ validation
def _gateway_info(op: Op, value: Any, current: Data | None) -> Data | None:
    """external_gateway_info as stored (None: no gateway), with the policy checks."""
    if value is None or value == {}:
        return None
    info = a.a_dict(value, "external_gateway_info",
                    ("network_id", "enable_snat", "external_fixed_ips"), ("network_id",))
    net_id = a.uuid_str(info["network_id"], "external_gateway_info")
    net = op.service.find(op, "networks", net_id)
    if not net.get("router:external"):
        raise bad(f"Network {net_id} is not an external network")
    cur = current or {}
    same_net = cur.get("network_id") == net_id
    snat = a.boolean(info.get("enable_snat", True), "external_gateway_info")
    fixed = None
    if info.get("external_fixed_ips") is not None:
        fixed = []
        for f in a.a_list(info["external_fixed_ips"], "external_fixed_ips"):
            f = a.a_dict(f, "external_fixed_ips", ("subnet_id", "ip_address"))
            item = {}
            if f.get("subnet_id") is not None:
                item["subnet_id"] = a.uuid_str(f["subnet_id"], "external_fixed_ips")
            if f.get("ip_address") is not None:
                item["ip_address"] = a.ip(f["ip_address"], "external_fixed_ips")
            fixed.append(item)
    if not op.ctx.is_admin:
        action = "update" if current is not None else "create"
        # Neutron's policy: explicitly set fixed IPs or SNAT off are admin-only
        if fixed and not (same_net and _same_fixed(fixed, cur.get("external_fixed_ips"))):
            raise a.policy(action, RESOURCE, "external_gateway_info:external_fixed_ips")
        if not snat and not (same_net and cur.get("enable_snat") is False):
            raise a.policy(action, RESOURCE, "external_gateway_info:enable_snat")
    return {"network_id": net_id, "enable_snat": snat, "external_fixed_ips": fixed}


def _distributed(op: Op, body: Data, action: str) -> None:
    """``distributed`` is admin-only (Neutron's default policy, create and update);
    true is accepted (every midoflow router is distributed), false is refused as
    Neutron refuses to centralize a distributed router."""
    if "distributed" not in body:
        return
    if not op.ctx.is_admin:
        raise a.policy(action, RESOURCE, "distributed")
    if not a.boolean(body["distributed"], "distributed"):
        raise bad("Migration from distributed router to centralized is not supported: "
                  "midoflow's routers are always distributed")


def _same_fixed(want: list[Data], have: list[Data] | None) -> bool:
    have = have or []
    return all(any(all(h.get(k) == v for k, v in w.items()) for h in have) for w in want)


def _set_gateway(op: Op, router: Data, info: Data | None) -> None:
    """Make the router's gateway port match ``info`` (staged; router updated in place)."""
    rid = router["id"]
    old = gateway_port(op, rid)
    cur = router.get("external_gateway_info") or None
    if info is None:
        if old is not None:
            _refuse_if_fips(op, rid, None)
            nports.delete_port_in(op, old)
        router["external_gateway_info"] = None
        return
    keep = (old is not None and cur is not None and cur["network_id"] == info["network_id"]
            and (info["external_fixed_ips"] is None
                 or _same_fixed(info["external_fixed_ips"], old.get("fixed_ips"))))
    if not keep:
        if old is not None:
            _refuse_if_fips(op, rid, info["network_id"])
            nports.delete_port_in(op, old)
        # Neutron's gateway ports belong to no project (admin sees them only)
        body: Data = {"network_id": info["network_id"], "device_owner": t3.GATEWAY_OWNER,
                      "device_id": rid, "name": "", "admin_state_up": True,
                      "project_id": ""}
        if info["external_fixed_ips"]:
            body["fixed_ips"] = info["external_fixed_ips"]
        old = nports.create_port_in(op, body, owner_ok=True)
    ext_fixed = [{"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]}
                 for f in old.get("fixed_ips") or ()]
    if not any(op.get("subnets", f["subnet_id"]) and netaddr.IPAddress(f["ip_address"]).version
               == 4 for f in ext_fixed):
        raise bad(f"No IPv4 subnet on external network {info['network_id']} for the gateway")
    router["external_gateway_info"] = {"network_id": info["network_id"],
                                       "enable_snat": info["enable_snat"],
                                       "external_fixed_ips": ext_fixed}


def _refuse_if_fips(op: Op, rid: str, new_net: str | None) -> None:
    used = [f["id"] for f in router_floatingips(op, rid)
            if f.get("floating_network_id") != new_net]
    if used:
        raise RouterExternalGatewayInUseByFloatingIp(
            f"Gateway cannot be updated for router {rid}, since a gateway to external "
            f"network is required by one or more floating IPs ({', '.join(sorted(used))}).")


def _routes(op: Op, router: Data, value: Any) -> list[Data]:
    routes = a.a_list(value, "routes")
    out = []
    pairs = attached(op, router["id"])
    own = {t3.fixed_ip(p)["ip_address"] for p, _ in pairs if t3.fixed_ip(p)}
    for r in routes:
        r = a.a_dict(r, "routes", ("destination", "nexthop"), ("destination", "nexthop"))
        dst = a.cidr(r["destination"], "routes", strict=False)
        hop = a.ip(r["nexthop"], "routes")
        if t3.nexthop_port(hop, pairs) is None:
            raise InvalidRoutes(f"Invalid format for routes: {r}, the nexthop is not "
                                "connected with router")
        if hop in own:
            raise InvalidRoutes(f"Invalid format for routes: {r}, the nexthop is used by "
                                "router")
        item = {"destination": dst, "nexthop": hop}
        if item in out:
            raise InvalidRoutes(f"Invalid format for routes: {r}, duplicate route")
        out.append(item)
    return out


# ------------------------------------------------------------ the collection
class Routers(Collection):
    name = "routers"
    resource = RESOURCE
    not_found = ne.RouterNotFound
    actions = {"add_router_interface": "add_interface",
               "remove_router_interface": "remove_interface",
               "add_extraroutes": "add_extraroutes",
               "remove_extraroutes": "remove_extraroutes"}

    def create(self, op: Op, body: Data) -> Data:
        body = a.body_of(body, RESOURCE)
        a.check_known(body, CREATE, tuple(x for x in READONLY if x not in CREATE))
        pid = a.owner(op.ctx, body, RESOURCE)
        if body.get("ha") not in (None, False):
            raise bad("HA routers are not supported; midoflow's routers are distributed")
        if body.get("flavor_id") is not None:
            raise bad("router flavors are not supported")
        a.a_list(body.get("availability_zone_hints", []), "availability_zone_hints")
        router = a.stamp_new({
            "id": a.new_id(),
            "name": a.string(body.get("name", ""), "name"),
            "description": a.string(body.get("description", ""), "description",
                                    a.DESCRIPTION_MAX),
            "admin_state_up": a.boolean(body.get("admin_state_up", True), "admin_state_up"),
            "status": "ACTIVE",
            "distributed": True,
            "ha": False,
            "routes": [],
            "external_gateway_info": None,
            "availability_zone_hints": [],
            "availability_zones": ["nova"],
            "flavor_id": None,
        }, pid)
        _distributed(op, body, "create")
        info = _gateway_info(op, body.get("external_gateway_info"), None)
        op.txn.create(self.kind, router)
        if info is not None:
            _set_gateway(op, router, info)
            op.txn.put(self.kind, router)
        sync_router(op, router["id"])
        return router

    def update(self, op: Op, obj: Data, body: Data) -> Data:
        body = a.body_of(body, RESOURCE)
        a.check_known(body, UPDATE, tuple(x for x in READONLY if x not in UPDATE), post=False)
        router = dict(obj)
        for f, conv in (("name", lambda v: a.string(v, "name")),
                        ("description", lambda v: a.string(v, "description",
                                                           a.DESCRIPTION_MAX)),
                        ("admin_state_up", lambda v: a.boolean(v, "admin_state_up"))):
            if f in body:
                router[f] = conv(body[f])
        _distributed(op, body, "update")
        if "external_gateway_info" in body:
            info = _gateway_info(op, body["external_gateway_info"],
                                 obj.get("external_gateway_info"))
            _set_gateway(op, router, info)
        if "routes" in body:
            router["routes"] = _routes(op, router, body["routes"] or [])
        elif "external_gateway_info" in body:
            self._check_routes_still_valid(op, router)
        a.stamp_update(router)
        op.txn.put(self.kind, router)
        sync_router(op, router["id"])
        return router

    @staticmethod
    def _check_routes_still_valid(op: Op, router: Data) -> None:
        pairs = attached(op, router["id"])
        for r in router.get("routes") or ():
            if t3.nexthop_port(r["nexthop"], pairs) is None:
                raise RouterInterfaceInUseByRoute(
                    f"Router {router['id']} has an extra route via {r['nexthop']}, which "
                    "would no longer be connected: remove the route first")

    def delete(self, op: Op, obj: Data) -> None:
        rid = obj["id"]
        if interfaces(op, rid):
            raise ne.RouterInUse(f"Router {rid} still has ports: remove its interfaces "
                                 "first (remove_router_interface)")
        gw = gateway_port(op, rid)
        if gw is not None:
            _refuse_if_fips(op, rid, None)
            nports.delete_port_in(op, gw)
        op.txn.delete(self.kind, rid)
        sync_router(op, rid)

    # ------------------------------------------------------- interfaces
    def add_interface(self, op: Op, router: Data, body: Any) -> Data:
        body = _interface_body(body)
        rid = router["id"]
        if "port_id" in body and "subnet_id" in body:
            raise bad("Cannot specify both subnet-id and port-id")
        if "port_id" in body:
            port = op.service.find(op, "ports", body["port_id"])
            if port.get("device_id") or port.get("device_owner"):
                raise ne.PortInUse(f"Port {port['id']} on network {port['network_id']} is "
                                   f"in use (device_id {port.get('device_id') or '-'}, "
                                   f"device_owner {port.get('device_owner') or '-'})")
            if len(port.get("fixed_ips") or ()) != 1:
                raise bad(f"Router port must have exactly one fixed IP (port {port['id']} "
                          f"has {len(port.get('fixed_ips') or ())})")
            subnet = op.service.find(op, "subnets", port["fixed_ips"][0]["subnet_id"])
            self._check_subnet(op, router, subnet)
            # the ports code re-translates it: an interior bridge port, no port security
            port = op.service.handler("ports").update(
                op, port, {"device_id": rid, "device_owner": INTERFACE_OWNER})
        else:
            subnet = op.service.find(op, "subnets", body["subnet_id"])
            if not subnet.get("gateway_ip"):
                raise bad(f"Subnet {subnet['id']} does not have a gateway IP")
            self._check_subnet(op, router, subnet)
            port = nports.create_port_in(op, {
                "network_id": subnet["network_id"], "device_owner": INTERFACE_OWNER,
                "device_id": rid, "name": "", "admin_state_up": True,
                "project_id": router["project_id"],
                "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": subnet["gateway_ip"]}]},
                owner_ok=True)
        op.txn.touch(self.kind, rid)  # serialises interface changes per router
        sync_router(op, rid)
        return _interface_info(router, port, subnet)

    @staticmethod
    def _check_subnet(op: Op, router: Data, subnet: Data) -> None:
        if subnet.get("ip_version", 4) != 4:
            raise bad("IPv6 subnets are not supported yet")
        net = netaddr.IPNetwork(subnet["cidr"])
        for port, other in attached(op, router["id"]):
            if port.get("device_owner") == t3.GATEWAY_OWNER:
                continue
            if other["id"] == subnet["id"]:
                raise bad(f"Router already has a port on subnet {subnet['id']}")
            if net in netaddr.IPNetwork(other["cidr"]) or \
                    netaddr.IPNetwork(other["cidr"]) in net:
                raise bad(f"Cidr {subnet['cidr']} of subnet {subnet['id']} overlaps with cidr "
                          f"{other['cidr']} of subnet {other['id']}")

    def remove_interface(self, op: Op, router: Data, body: Any) -> Data:
        body = _interface_body(body)
        rid = router["id"]
        mine = interfaces(op, rid)
        if "port_id" in body:
            port = next((p for p in mine if p["id"] == body["port_id"]), None)
            if port is None:
                raise ne.RouterInterfaceNotFound(
                    f"Router {rid} does not have an interface with id {body['port_id']}")
            if "subnet_id" in body and not t3.fixed_ip(port, body["subnet_id"]):
                raise ne.RouterInterfaceNotFoundForSubnet(
                    f"Router {rid} has no interface on subnet {body['subnet_id']}")
        else:
            port = next((p for p in mine if t3.fixed_ip(p, body["subnet_id"])), None)
            if port is None:
                raise ne.RouterInterfaceNotFoundForSubnet(
                    f"Router {rid} has no interface on subnet {body['subnet_id']}")
        f = t3.fixed_ip(port)
        subnet = op.get("subnets", f["subnet_id"]) if f else None
        if subnet is not None:
            net = netaddr.IPNetwork(subnet["cidr"])
            for fip in router_floatingips(op, rid):
                if netaddr.IPAddress(fip["fixed_ip_address"]) in net:
                    raise ne.RouterInterfaceInUseByFloatingIP(
                        f"Router interface for subnet {subnet['id']} on router {rid} cannot "
                        f"be deleted, as it is required by one or more floating IPs "
                        f"({fip['id']}).")
            for r in router.get("routes") or ():
                if netaddr.IPAddress(r["nexthop"]) in net:
                    raise RouterInterfaceInUseByRoute(
                        f"Router interface for subnet {subnet['id']} on router {rid} cannot "
                        f"be deleted, as it is required by one or more routes "
                        f"({r['destination']} via {r['nexthop']}).")
        nports.delete_port_in(op, port)
        op.txn.touch(self.kind, rid)
        sync_router(op, rid)
        return _interface_info(router, port, subnet or {"id": f and f["subnet_id"],
                                                        "network_id": port["network_id"]})

    # ------------------------------------------------------- extra routes
    def add_extraroutes(self, op: Op, router: Data, body: Any) -> Data:
        return self._extraroutes(op, router, body, add=True)

    def remove_extraroutes(self, op: Op, router: Data, body: Any) -> Data:
        return self._extraroutes(op, router, body, add=False)

    def _extraroutes(self, op: Op, router: Data, body: Any, add: bool) -> Data:
        body = a.body_of(body, RESOURCE)
        a.check_known(body, ("routes",), post=False)
        given = a.a_list(body.get("routes", []), "routes", unique=False)
        cur = list(router.get("routes") or [])
        if add:
            new = cur + [r for r in _routes(op, router, given) if r not in cur]
        else:
            drop = [{"destination": a.cidr(r.get("destination"), "routes", strict=False),
                     "nexthop": a.ip(r.get("nexthop"), "routes")}
                    for r in (a.a_dict(x, "routes", ("destination", "nexthop"),
                                       ("destination", "nexthop")) for x in given)]
            new = [r for r in cur if r not in drop]
        router = dict(router, routes=new)
        a.stamp_update(router)
        op.txn.put(self.kind, router)
        sync_router(op, router["id"])
        return {"router": self.view(op, router)}


def _interface_body(body: Any) -> Data:
    if not isinstance(body, dict):
        raise BadRouterRequest("Bad router request: a JSON object with subnet_id or port_id "
                               "is required.")
    a.check_known(body, ("subnet_id", "port_id"), post=False)
    if not body.get("subnet_id") and not body.get("port_id"):
        raise BadRouterRequest("Bad router request: Either subnet_id or port_id must be "
                               "specified.")
    out = {}
    for k in ("subnet_id", "port_id"):
        if body.get(k):
            out[k] = a.uuid_str(body[k], k)
    return out


def _interface_info(router: Data, port: Data, subnet: Data) -> Data:
    return {"id": router["id"], "tenant_id": router["project_id"],
            "project_id": router["project_id"], "port_id": port["id"],
            "subnet_id": subnet["id"], "subnet_ids": [subnet["id"]],
            "network_id": port["network_id"]}


register(Routers())
