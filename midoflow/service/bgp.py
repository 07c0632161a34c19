"""BGP configuration: the peers and the advertised networks of uplink ports.

A BGP peer is a session of an uplink port (an exterior
router port with an address) to a directly connected router; a BGP network is
a prefix the gateway holding the port advertises to that port's peers. The
agent of the host the port is bound to runs the speaker (:mod:`midoflow.bgp`),
publishes each session's state at :func:`~midoflow.store.paths.bgp_peer_state`
and the routes it learns under :func:`~midoflow.store.paths.learned_routes`.

Every create touches the port (re-written unchanged: its version moves on), so
two concurrent creations on a port cannot both pass the duplicate check, and a
concurrent delete of the port fails instead of leaving a peer or a network
behind. Deleting a port deletes its peers and networks in the same commit (their
``port_id`` is declared ``cascade``: :mod:`.refs`).
"""

from __future__ import annotations

from typing import Any

import netaddr

from midoflow import model
from midoflow.errors import Conflict, Invalid
from midoflow.service import body as gen
from midoflow.service import validate as v
from midoflow.service.context import Ctx
from midoflow.store import paths
from midoflow.store.base import Create, Data, Update

# What the status of a session holds (from the agent's ephemeral state).
BGP_STATUS_FIELDS = ("state", "host_id", "since", "prefixes_received", "prefixes_advertised")
# Shown when the agent publishes them (midoflow.bgp.table): the session's
# history and the peer's table at its prefix limit.
BGP_STATUS_COUNTS = ("flaps", "prefixes_accepted", "prefixes_refused", "prefixes_filtered",
                     "prefixes_stale", "prefix_limit")
BGP_DOWN = "down"
# Timer limits (seconds).
KEEPALIVE_MAX = 21845  # 65535 // 3
HOLD_TIME_MIN, HOLD_TIME_MAX = 3, 65535
CONNECT_RETRY_MAX = 3600


def _peer_key(p: Data) -> tuple:
    return (p.get("port_id") or "", v.ip_key(p["peer_address"]), p["id"])


def _network_key(n: Data) -> tuple:
    net = netaddr.IPNetwork(n["prefix"])
    return (n.get("port_id") or "", net.first, net.prefixlen, n["id"])


def _learned_key(r: Data) -> tuple:
    """Routing-table order: longest prefix first, then address, weight, next hop."""
    net = netaddr.IPNetwork(r["dst_cidr"])
    return (-net.prefixlen, net.first, r["weight"], v.ip_key(r["next_hop_gateway"]),
            r["next_hop_port"])


def _status(state: Any) -> Data:
    """The session status an agent published, or {"state": "down"} without one.

    The agent's record is passed through field by field, each of its expected
    type (anything else is null), so a bad record cannot break the answer."""
    if not isinstance(state, dict):
        return {"state": BGP_DOWN}

    def num(x: Any, kinds: type | tuple[type, ...]) -> Any:
        return x if isinstance(x, kinds) and not isinstance(x, bool) else None

    st = state.get("state")
    host = state.get("host_id")
    out = {
        "state": st if isinstance(st, str) and st else "unknown",
        "host_id": host if isinstance(host, str) else None,
        "since": num(state.get("since"), (int, float)),
        "prefixes_received": num(state.get("prefixes_received"), int),
        "prefixes_advertised": num(state.get("prefixes_advertised"), int),
    }
    for f in BGP_STATUS_COUNTS:
        if f in state:
            out[f] = num(state[f], int)
    if "last_error" in state:
        err = state["last_error"]
        out["last_error"] = err if isinstance(err, str) else None
        out["last_error_at"] = num(state.get("last_error_at"), (int, float))
    return out


def _learned_route(name: str) -> Data | None:
    """A learned route's entry name -> the route; None for a foreign or malformed name."""
    r = paths.parse_learned_route(name)
    if r is None:
        return None
    addr, _, plen = r["dst_cidr"].partition("/")
    try:
        dst = v.network(v.ipv4(addr, "dst_cidr"), int(plen)) if int(plen) <= 32 else None
        gateway = v.ipv4(r["next_hop_gateway"], "next_hop_gateway")
    except Invalid:
        return None
    if dst is None or not v.UUID_RE.fullmatch(r["next_hop_port"]):
        return None
    return {"dst_cidr": str(dst), "next_hop_gateway": gateway,
            "next_hop_port": r["next_hop_port"], "weight": r["weight"], "learned": True}


class Bgp:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    # ------------------------------------------------------------- helpers
    def _uplink(self, port_id: str) -> tuple[Data, int]:
        """The port a peer or network is created on: an exterior router port with an
        address (404 if missing, 400 naming port_id if it cannot speak BGP)."""
        port, pver = self.ctx.get(model.PORTS, port_id)
        pid = port["id"]
        if port.get("device_type") != model.DEVICE_ROUTER:
            raise Invalid(f"port {pid} is a bridge port: BGP runs on a router's uplink, an "
                          "exterior router port with an address (create one with POST "
                          "/routers/{id}/ports)", "port_id")
        if port.get("type") != model.PORT_EXTERIOR:
            raise Invalid(f"port {pid} is an interior router port: BGP runs on an exterior "
                          "router port (an uplink bound to a gateway host's interface)",
                          "port_id")
        if not port.get("ip_address") or port.get("prefix_len") is None:
            raise Invalid(f"port {pid} has no address: BGP needs the uplink's address on "
                          "the peer's network; create the port with ip_address and "
                          "prefix_len", "port_id")
        return port, pver

    @staticmethod
    def _peer_address(value: Any, port: Data) -> str:
        ip = v.unicast_ipv4(value, "peer_address")
        net = v.network(port["ip_address"], port["prefix_len"])
        if ip not in net:
            raise Invalid(f"peer_address {ip} is not on the network {net} of port "
                          f"{port['id']}: a BGP peer must be directly connected",
                          "peer_address")
        if ip == port["ip_address"]:
            raise Invalid(f"peer_address {ip} is the address of port {port['id']} itself",
                          "peer_address")
        if net.prefixlen <= 30 and ip in (str(net.network), str(net.broadcast)):
            which = "network" if ip == str(net.network) else "broadcast"
            raise Invalid(f"peer_address {ip} is the {which} address of {net}",
                          "peer_address")
        return ip

    @staticmethod
    def _bgp_prefix(value: Any) -> str:
        prefix = v.cidr(value, "prefix")
        if prefix == "0.0.0.0/0":
            raise Invalid("prefix 0.0.0.0/0 is refused: a gateway must not advertise a "
                          "default route to its upstream routers; advertise the floating-IP "
                          "ranges and provider subnets", "prefix")
        return prefix

    @staticmethod
    def _timers(body: dict[str, Any], data: Data) -> None:
        """keepalive, hold_time and connect_retry from ``body`` into ``data``."""
        if "keepalive" in body:
            data["keepalive"] = v.integer(body["keepalive"], "keepalive", 1, KEEPALIVE_MAX)
        if "hold_time" in body:
            hold = v.integer(body["hold_time"], "hold_time", 0, HOLD_TIME_MAX)
            if 0 < hold < HOLD_TIME_MIN:
                raise Invalid(f"hold_time must be 0 (no keepalives) or {HOLD_TIME_MIN} to "
                              f"{HOLD_TIME_MAX} seconds", "hold_time")
            data["hold_time"] = hold
        if "connect_retry" in body:
            data["connect_retry"] = v.integer(body["connect_retry"], "connect_retry", 1,
                                              CONNECT_RETRY_MAX)
        v.bgp_timers(data["keepalive"], data["hold_time"],
                     "keepalive" if "keepalive" in body else "hold_time")

    # ----------------------------------------------------------- BGP peers
    def _bgp_peer_out(self, data: Data, version: int) -> Data:
        out = self.ctx.out(model.BGP_PEERS, data, version)
        out["status"] = _status(self.store.get_state(paths.bgp_peer_state(data["id"])))
        return out

    def list_bgp_peers(self) -> list[Data]:
        return [self._bgp_peer_out(d, ver) for d, ver in
                sorted(self.store.list(model.BGP_PEERS), key=lambda dv: _peer_key(dv[0]))]

    def list_port_bgp_peers(self, port_id: str) -> list[Data]:
        port, _ = self.ctx.get(model.PORTS, port_id)
        return [self._bgp_peer_out(d, ver) for d, ver in
                sorted(self.store.list(model.BGP_PEERS), key=lambda dv: _peer_key(dv[0]))
                if d.get("port_id") == port["id"]]

    def get_bgp_peer(self, id: str) -> Data:
        return self._bgp_peer_out(*self.ctx.get(model.BGP_PEERS, id))

    def create_bgp_peer(self, port_id: str, body: Any) -> Data:
        """POST /ports/{id}/bgp_peers: a session of that uplink port."""
        port, pver = self._uplink(port_id)
        body, data = gen.create(model.BGP_PEERS, body)  # timers default to model.BGP_*
        data["port_id"] = port["id"]
        data["peer_address"] = self._peer_address(v.require(body, "peer_address"), port)
        self._timers(body, data)
        data["id"] = self.ctx.new_id(model.BGP_PEERS, body)
        for other, _ in self.store.list(model.BGP_PEERS):
            if (other.get("port_id") == port["id"]
                    and other.get("peer_address") == data["peer_address"]):
                raise Conflict(f"port {port['id']} already has a BGP peer at "
                               f"{data['peer_address']} ({other['id']})", "peer_address")
        self.ctx.commit([Create(model.BGP_PEERS, data),
                         self.ctx.touch(model.PORTS, port, pver)])
        return self.get_bgp_peer(data["id"])

    def update_bgp_peer(self, id: str, body: Any) -> Data:
        """Partial update of the name, the AS numbers and the timers."""
        body = v.body_object(body)
        data, ver = self.ctx.get(model.BGP_PEERS, id)
        new = gen.update(model.BGP_PEERS, body, data)  # port_id, peer_address: fixed
        if "status" in body and not isinstance(body["status"], dict):
            raise Invalid("status must be an object (it is read-only, and ignored)", "status")
        self._timers(body, new)
        self.ctx.check_version(body, ver, f"BGP peer {data['id']}")
        self.ctx.commit([Update(model.BGP_PEERS, new, ver)])
        return self.get_bgp_peer(data["id"])

    def delete_bgp_peer(self, id: str) -> None:
        self.ctx.delete(model.BGP_PEERS, *self.ctx.get(model.BGP_PEERS, id))

    # -------------------------------------------------------- BGP networks
    def _bgp_network_out(self, data: Data, version: int) -> Data:
        return self.ctx.out(model.BGP_NETWORKS, data, version)

    def list_bgp_networks(self) -> list[Data]:
        return [self._bgp_network_out(d, ver) for d, ver in
                sorted(self.store.list(model.BGP_NETWORKS), key=lambda dv: _network_key(dv[0]))]

    def list_port_bgp_networks(self, port_id: str) -> list[Data]:
        port, _ = self.ctx.get(model.PORTS, port_id)
        return [self._bgp_network_out(d, ver) for d, ver in
                sorted(self.store.list(model.BGP_NETWORKS), key=lambda dv: _network_key(dv[0]))
                if d.get("port_id") == port["id"]]

    def get_bgp_network(self, id: str) -> Data:
        return self._bgp_network_out(*self.ctx.get(model.BGP_NETWORKS, id))

    def create_bgp_network(self, port_id: str, body: Any) -> Data:
        """POST /ports/{id}/bgp_networks: a prefix the port's gateway advertises."""
        port, pver = self._uplink(port_id)
        body, data = gen.create(model.BGP_NETWORKS, body)
        data.update(port_id=port["id"], prefix=self._bgp_prefix(v.require(body, "prefix")))
        data["id"] = self.ctx.new_id(model.BGP_NETWORKS, body)
        for other, _ in self.store.list(model.BGP_NETWORKS):
            if other.get("port_id") == port["id"] and other.get("prefix") == data["prefix"]:
                raise Conflict(f"port {port['id']} already advertises {data['prefix']} "
                               f"({other['id']})", "prefix")
        self.ctx.commit([Create(model.BGP_NETWORKS, data),
                         self.ctx.touch(model.PORTS, port, pver)])
        return self.get_bgp_network(data["id"])

    def delete_bgp_network(self, id: str) -> None:
        self.ctx.delete(model.BGP_NETWORKS, *self.ctx.get(model.BGP_NETWORKS, id))

    # ------------------------------------------------------ learned routes
    def list_learned_routes(self, router_id: str) -> list[Data]:
        """The routes the router's BGP speakers learned (ephemeral, per agent)."""
        router, _ = self.ctx.get(model.ROUTERS, router_id)
        routes = (_learned_route(n) for n in self.store.list_state(paths.learned_routes(
            router["id"])))
        return sorted((r for r in routes if r is not None), key=_learned_key)
