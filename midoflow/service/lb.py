"""Layer-4 load balancing (issue 14): load balancers, pools, VIPs, members, health monitors.

Entry points for other layers (the Octavia API combines them with Neutron objects
in one commit): each write is staged into the caller's
:class:`~midoflow.service.txn.Txn` and returns the object as it will be stored;
the caller commits, then calls :func:`forget_health` (best effort), then answers
with :func:`output` (``operating_status`` and a member's ``health`` filled in)::

    create_load_balancer(txn, body)           update_load_balancer(txn, id, body)
    create_pool(txn, body)                    update_pool(txn, id, body)
    create_vip(txn, body)                     update_vip(txn, id, body)
    create_member(txn, body)                  update_member(txn, id, body)
    create_health_monitor(txn, body)          update_health_monitor(txn, id, body)
    delete(txn, kind, id, cascade=False)      # any of the five kinds (cascade: LBs)
    commit(txn)                               # txn.commit() + forget_health(txn)
    output(store, kind, data, version)        # the native API's answer

Bodies are the native API's (model field names); errors are Invalid (400, naming
the field), NotFound (404, an id of the URL) and Conflict (409). Creating a load
balancer also creates its health port (an exterior port of its router with the
first address of a free /30 of :data:`model.HEALTH_NET`), deleted with it.
Deleting a pool deletes its members and monitor and clears the ``pool_id`` of
its VIPs (declared in the kinds: :mod:`.refs`); a load balancer with VIPs or pools
is only deleted with ``cascade``. Every create touches its parent, so a
concurrent delete of the parent fails instead of leaving an orphan, and the
uniqueness checks (VIPs per router, members per pool, a monitor per pool)
serialise on the object they are checked against.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import netaddr

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.kinds import KINDS
from midoflow.service import body as gen
from midoflow.service import dhcp, refs
from midoflow.service import validate as v
from midoflow.service.context import Ctx, ref, sort_key
from midoflow.service.ports import tunnel_key
from midoflow.service.txn import Txn
from midoflow.store import paths
from midoflow.store.base import Data, Store

LOG = logging.getLogger(__name__)

LB, POOL, VIP, MEMBER, HM = (model.LOAD_BALANCERS, model.POOLS, model.VIPS,
                             model.POOL_MEMBERS, model.HEALTH_MONITORS)
HEALTH_PREFIX = 30
HTTP_FIELDS = ("http_method", "url_path", "expected_codes")
_CODES_RE = re.compile(r"[0-9]{3}(-[0-9]{3})?(,[0-9]{3}(-[0-9]{3})?)*")
_WORST = {model.OP_ONLINE: 0, model.OP_NO_MONITOR: 0, model.OP_OFFLINE: 1,
          model.OP_DEGRADED: 2, model.OP_ERROR: 3}


# ------------------------------------------------------------------ helpers
def _label(kind: str) -> str:
    return KINDS[kind].label


def _obj(txn: Txn, kind: str, oid: str) -> Data:
    """An object named in the URL, read through ``txn``: missing is 404."""
    oid = v.url_id(oid, _label(kind))
    data = txn.get(kind, oid)
    if data is None:
        raise NotFound(f"{_label(kind)} {oid} not found")
    return data


def _new_id(txn: Txn, kind: str, body: dict[str, Any]) -> str:
    if "id" not in body:
        return v.new_id()
    oid = v.uuid_str(body["id"], "id")
    if txn.get(kind, oid) is not None:
        raise Conflict(f"{_label(kind)} {oid} already exists", "id")
    return oid


def _update(txn: Txn, kind: str, oid: str, body: Any) -> tuple[dict[str, Any], Data, Data]:
    """(body, the object now, the object changed by the body's generic fields)."""
    body = v.body_object(body)
    data = _obj(txn, kind, oid)
    new = gen.update(kind, body, data)
    Ctx.check_version(body, txn.version(kind, data["id"]) or 0,
                      f"{_label(kind)} {data['id']}")
    return body, data, new


def _of(txn: Txn, kind: str, field: str, oid: str) -> list[Data]:
    return sorted((d for d in txn.scan(kind) if d.get(field) == oid), key=lambda d: d["id"])


# ----------------------------------------------------------- load balancers
def _health_port(txn: Txn, router: Data, lb_id: str) -> tuple[Data, str]:
    """A new exterior port of ``router`` on the first /30 of HEALTH_NET that no
    load balancer of the router and no port of it uses (409 when none is left)."""
    ports = [p for p in (txn.get(model.PORTS, pid) for pid in router.get("port_ids", ()))
             if p is not None]
    used = [v.network(p["ip_address"], p["prefix_len"]) for p in ports
            if p.get("ip_address") and p.get("prefix_len") is not None]
    used += [netaddr.IPNetwork(lb["health_cidr"]) for lb in txn.scan(LB)
             if lb.get("router_id") == router["id"] and lb.get("health_cidr")]
    net = next((n for n in netaddr.IPNetwork(model.HEALTH_NET).subnet(HEALTH_PREFIX)
                if not any(v.overlaps(n, u) for u in used)), None)
    if net is None:
        raise Conflict(f"router {router['id']} has no free /{HEALTH_PREFIX} of "
                       f"{model.HEALTH_NET} left for a load balancer's health port: delete "
                       "a load balancer of the router first", "router_id")
    _, port = gen.create(model.PORTS, {"name": f"lb-health-{lb_id[:8]}",
                                       "type": model.PORT_EXTERIOR})
    for f in ("fixed_ips", "security_group_ids", "port_security_enabled",
              "allowed_address_pairs", *dhcp.INSTANCE_FIELDS):
        port.pop(f, None)  # bridge ports only, as routers.create_router_port leaves them
    used_macs = {p.get("mac") for p in txn.scan(model.PORTS)}
    mac = v.random_mac()
    while mac in used_macs:
        mac = v.random_mac()
    port.update(id=v.new_id(), device_id=router["id"], device_type=model.DEVICE_ROUTER,
                mac=mac, ip_address=str(net[1]), prefix_len=HEALTH_PREFIX,
                tunnel_key=tunnel_key(Ctx(txn.store)))
    txn.create(model.PORTS, port)
    router = dict(router, port_ids=list(router.get("port_ids", ())) + [port["id"]])
    txn.put(model.ROUTERS, router)
    return port, str(net)


def create_load_balancer(txn: Txn, body: Any) -> Data:
    body, data = gen.create(LB, body)
    data["id"] = _new_id(txn, LB, body)
    router = ref(txn, model.ROUTERS, data["router_id"], "router_id")
    port, cidr = _health_port(txn, router, data["id"])
    data.update(health_port_id=port["id"], health_cidr=cidr)
    txn.create(LB, data)
    return data


def update_load_balancer(txn: Txn, oid: str, body: Any) -> Data:
    _, _, new = _update(txn, LB, oid, body)
    txn.put(LB, new)
    return new


@refs.special(LB)
def _deleting_load_balancer(txn: Txn, lb: Data) -> None:
    """Refused while VIPs or pools use it; its health port goes with it."""
    vips, pools = _of(txn, VIP, "load_balancer_id", lb["id"]), \
        _of(txn, POOL, "load_balancer_id", lb["id"])
    if vips or pools:
        raise Conflict(f"load balancer {lb['id']} still has {len(vips)} VIP(s) and "
                       f"{len(pools)} pool(s): delete them first, or delete it with "
                       "?cascade=true (they go with it)")
    if lb.get("health_port_id"):
        refs._stage(txn, model.PORTS, lb["health_port_id"])


# ---------------------------------------------------------------- pools
def create_pool(txn: Txn, body: Any) -> Data:
    body, data = gen.create(POOL, body)
    data["id"] = _new_id(txn, POOL, body)
    ref(txn, LB, data["load_balancer_id"], "load_balancer_id")
    txn.touch(LB, data["load_balancer_id"])
    txn.create(POOL, data)
    return data


def update_pool(txn: Txn, oid: str, body: Any) -> Data:
    _, _, new = _update(txn, POOL, oid, body)
    txn.put(POOL, new)
    return new


# ----------------------------------------------------------------- VIPs
def _vip_address(txn: Txn, lb: Data, address: str) -> None:
    """A host address of the network of one of the router's ports (not the health
    ports), and not a router port's own address."""
    router = txn.get(model.ROUTERS, lb["router_id"]) or {}
    health = {o.get("health_port_id") for o in txn.scan(LB)}
    ports = [p for p in (txn.get(model.PORTS, pid) for pid in router.get("port_ids", ()))
             if p is not None and p["id"] not in health and p.get("ip_address")
             and p.get("prefix_len") is not None]
    for p in ports:
        if p["ip_address"] == address:
            raise Invalid(f"address {address} is the address of port {p['id']} of router "
                          f"{router['id']}: a VIP needs an address of its own", "address")
    for p in ports:
        net = v.network(p["ip_address"], p["prefix_len"])
        if address in net:
            if net.prefixlen <= 30 and address in (str(net.network), str(net.broadcast)):
                which = "network" if address == str(net.network) else "broadcast"
                raise Invalid(f"address {address} is the {which} address of {net}",
                              "address")
            return
    nets = ", ".join(str(v.network(p["ip_address"], p["prefix_len"])) for p in ports)
    raise Invalid(f"address {address} is on no network of router {lb['router_id']} "
                  f"({nets or 'it has no port with an address'}): a VIP is an address "
                  "of one of its load balancer's router's port networks", "address")


def _vip_pool(txn: Txn, vip: Data) -> None:
    if vip.get("pool_id") is None:
        return
    pool = ref(txn, POOL, vip["pool_id"], "pool_id")
    if pool["load_balancer_id"] != vip["load_balancer_id"]:
        raise Invalid(f"pool {pool['id']} belongs to load balancer "
                      f"{pool['load_balancer_id']}, not to the VIP's "
                      f"{vip['load_balancer_id']}", "pool_id")
    if pool["protocol"] != vip["protocol"]:
        raise Invalid(f"pool {pool['id']} is {pool['protocol']}, the VIP {vip['protocol']}: "
                      "a VIP's pool has its protocol", "pool_id")
    txn.touch(POOL, pool["id"])


def create_vip(txn: Txn, body: Any) -> Data:
    body, data = gen.create(VIP, body)
    data["id"] = _new_id(txn, VIP, body)
    lb = ref(txn, LB, data["load_balancer_id"], "load_balancer_id")
    _vip_address(txn, lb, data["address"])
    same_router = {o["id"] for o in txn.scan(LB) if o.get("router_id") == lb["router_id"]}
    for other in txn.scan(VIP):
        if other.get("load_balancer_id") in same_router and all(
                other.get(f) == data[f] for f in ("address", "protocol", "protocol_port")):
            raise Conflict(f"router {lb['router_id']} already has a {data['protocol']} VIP "
                           f"at {data['address']}:{data['protocol_port']} ({other['id']})",
                           "protocol_port")
    _vip_pool(txn, data)
    txn.touch(LB, lb["id"])
    txn.touch(model.ROUTERS, lb["router_id"])  # VIP uniqueness is per router
    txn.create(VIP, data)
    return data


def update_vip(txn: Txn, oid: str, body: Any) -> Data:
    _, data, new = _update(txn, VIP, oid, body)
    if new.get("pool_id") != data.get("pool_id"):
        _vip_pool(txn, new)
    txn.put(VIP, new)
    return new


# -------------------------------------------------------------- members
def create_member(txn: Txn, body: Any) -> Data:
    body, data = gen.create(MEMBER, body)
    data["id"] = _new_id(txn, MEMBER, body)
    pool = ref(txn, POOL, data["pool_id"], "pool_id")
    for other in _of(txn, MEMBER, "pool_id", pool["id"]):
        if (other["address"], other["protocol_port"]) == (data["address"],
                                                          data["protocol_port"]):
            raise Conflict(f"pool {pool['id']} already has a member at {data['address']}:"
                           f"{data['protocol_port']} ({other['id']})", "address")
    txn.touch(POOL, pool["id"])
    txn.create(MEMBER, data)
    return data


def update_member(txn: Txn, oid: str, body: Any) -> Data:
    _, _, new = _update(txn, MEMBER, oid, body)
    txn.put(MEMBER, new)
    return new


# ------------------------------------------------------- health monitors
def expected_codes(value: str, field: str = "expected_codes") -> str:
    """"200", "200,202", "200-204" (HTTP status codes 100 to 599)."""
    if not _CODES_RE.fullmatch(value):
        raise Invalid(f"{field} {value!r} must be HTTP status codes: one (\"200\"), a list "
                      "(\"200,202\") or a range (\"200-204\")", field)
    for part in value.split(","):
        lo, _, hi = part.partition("-")
        if not all(100 <= int(c) <= 599 for c in (lo, hi or lo)):
            raise Invalid(f"{field}: {part} is not an HTTP status code (100 to 599)", field)
        if int(lo) > int(hi or lo):
            raise Invalid(f"{field}: the range {part} ends before it starts", field)
    return value


def _check_monitor(body: dict[str, Any], new: Data, old: Data) -> None:
    """``old``: the object before (on creation, the defaults)."""
    if new["delay"] < new["timeout"]:
        field = "delay" if "delay" in body else "timeout"
        raise Invalid(f"delay ({new['delay']} s) must be at least timeout "
                      f"({new['timeout']} s): a check ends before the next starts", field)
    if new["type"] == model.HM_TCP:
        for f in HTTP_FIELDS:
            if f in body and new[f] != old.get(f):
                raise Invalid(f"{f} is for HTTP and HTTPS monitors only, not {new['type']}",
                              f)
    if not new["url_path"].startswith("/") or any(c.isspace() for c in new["url_path"]):
        raise Invalid(f"url_path {new['url_path']!r} must be a path starting with '/' and "
                      "without spaces", "url_path")
    expected_codes(new["expected_codes"])


def create_health_monitor(txn: Txn, body: Any) -> Data:
    body, data = gen.create(HM, body)
    data["id"] = _new_id(txn, HM, body)
    pool = ref(txn, POOL, data["pool_id"], "pool_id")
    for other in _of(txn, HM, "pool_id", pool["id"]):
        raise Conflict(f"pool {pool['id']} already has a health monitor ({other['id']}): "
                       "change or delete it", "pool_id")
    _check_monitor(body, data, {f.name: f.default for f in KINDS[HM].fields
                                if f.has_default})
    txn.touch(POOL, pool["id"])
    txn.create(HM, data)
    return data


def update_health_monitor(txn: Txn, oid: str, body: Any) -> Data:
    body, data, new = _update(txn, HM, oid, body)
    _check_monitor(body, new, data)
    txn.put(HM, new)
    return new


# ---------------------------------------------------------------- deletes
def delete(txn: Txn, kind: str, oid: str, cascade: bool = False) -> None:
    """Stage the deletion of one object of the five kinds and what it implies;
    ``cascade`` (load balancers): its VIPs and pools go with it."""
    data = _obj(txn, kind, oid)
    if cascade and kind == LB:
        for vip in _of(txn, VIP, "load_balancer_id", data["id"]):
            refs.delete(txn, VIP, vip["id"])
        for pool in _of(txn, POOL, "load_balancer_id", data["id"]):
            refs.delete(txn, POOL, pool["id"])
    refs.delete(txn, kind, data["id"])


def gone_health(txn: Txn) -> list[str]:
    """The members whose health entries a staged change makes stale: those deleted,
    and, when a monitor is deleted, those of the pools left without one."""
    deleted = txn.deleted()
    ids = {oid for k, oid in deleted if k == MEMBER}
    if any(k == HM for k, _ in deleted):
        monitored = {hm.get("pool_id") for hm in txn.scan(HM)}
        ids.update(m["id"] for m in txn.scan(MEMBER) if m.get("pool_id") not in monitored)
    return sorted(ids)


def forget_health(store: Store, member_ids: Iterable[str]) -> None:
    """Best effort, after the commit: the checker also drops stale entries."""
    for mid in member_ids:
        try:
            store.delete_state(paths.member_health(mid))
        except Exception as e:  # noqa: BLE001 - an entry left behind is harmless
            LOG.warning("member %s: health entry not deleted: %s", mid, e)


def commit(txn: Txn) -> None:
    """Commit, then drop the health entries the change made stale."""
    stale = gone_health(txn)
    txn.commit()
    forget_health(txn.store, stale)


# ---------------------------------------------------------------- output
class Status:
    """Operating status of the objects of one answer, from one read of the five kinds
    and of the members' health entries."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._kinds: dict[str, dict[str, Data]] = {}
        self._health: dict[str, Data | None] = {}

    def _all(self, kind: str) -> dict[str, Data]:
        if kind not in self._kinds:
            self._kinds[kind] = {d["id"]: d for d, _ in self.store.list(kind)}
        return self._kinds[kind]

    def health(self, member_id: str) -> Data | None:
        if member_id not in self._health:
            try:
                entry = self.store.get_state(paths.member_health(member_id))
            except Exception as e:  # noqa: BLE001 - the answer says "not checked"
                LOG.warning("member %s: health not read: %s", member_id, e)
                entry = None
            self._health[member_id] = entry if isinstance(entry, dict) else None
        return self._health[member_id]

    def member(self, m: Data) -> str:
        if not m.get("admin_state_up", True):
            return model.OP_OFFLINE
        monitored = any(hm.get("pool_id") == m.get("pool_id") and hm.get("admin_state_up")
                        for hm in self._all(HM).values())
        entry = self.health(m["id"]) if monitored else None
        status = (entry or {}).get("status")
        if status in (model.HEALTH_ONLINE, model.HEALTH_ERROR):
            return model.OP_ONLINE if status == model.HEALTH_ONLINE else model.OP_ERROR
        return model.OP_NO_MONITOR

    def pool(self, p: Data) -> str:
        if not p.get("admin_state_up", True):
            return model.OP_OFFLINE
        states = [self.member(m) for m in self._all(MEMBER).values()
                  if m.get("pool_id") == p["id"] and m.get("admin_state_up", True)]
        errors = states.count(model.OP_ERROR)
        if errors and errors == len(states):
            return model.OP_ERROR
        return model.OP_DEGRADED if errors else model.OP_ONLINE

    def vip(self, vp: Data) -> str:
        lb = self._all(LB).get(vp.get("load_balancer_id") or "", {})
        if not vp.get("admin_state_up", True) or not lb.get("admin_state_up", True):
            return model.OP_OFFLINE
        pool = self._all(POOL).get(vp.get("pool_id") or "")
        return self.pool(pool) if pool else model.OP_ONLINE

    def load_balancer(self, lb: Data) -> str:
        if not lb.get("admin_state_up", True):
            return model.OP_OFFLINE
        return _worst(self.pool(p) for p in self._all(POOL).values()
                      if p.get("load_balancer_id") == lb["id"])


def _worst(states: Iterable[str]) -> str:
    return max(states, key=lambda s: _WORST[s], default=model.OP_ONLINE)


def output(store: Store, kind: str, data: Data, version: int,
           status: Status | None = None) -> Data:
    """The native API's answer for one object of the five kinds."""
    st = status or Status(store)
    out = gen.output(kind, data, version)
    if kind == LB:
        out["operating_status"] = st.load_balancer(data)
    elif kind == POOL:
        out["operating_status"] = st.pool(data)
    elif kind == VIP:
        out["operating_status"] = st.vip(data)
    elif kind == MEMBER:
        out["operating_status"] = st.member(data)
        out["health"] = st.health(data["id"])
    return out


# -------------------------------------------------------- the REST family
_CREATE = {LB: create_load_balancer, POOL: create_pool, VIP: create_vip,
           MEMBER: create_member, HM: create_health_monitor}
_UPDATE = {LB: update_load_balancer, POOL: update_pool, VIP: update_vip,
           MEMBER: update_member, HM: update_health_monitor}
# the REST handler names (the kinds' singular) -> kind
_ONE = {"load_balancer": LB, "pool": POOL, "vip": VIP, "pool_member": MEMBER,
        "health_monitor": HM}
# every method the REST app calls by route (midoflow.rest.app.kind_routes)
METHODS = tuple(f"{op}_{one}" for one in _ONE for op in ("get", "create", "update",
                                                           "delete")) + \
    tuple(f"list_{k}" for k in model.LB_KINDS) + ("list_members_of_pool",)


class Lb:
    """The five kinds' CRUD for the REST app: each request one Txn, one commit."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def list(self, kind: str, tenant_id: str | None = None) -> list[Data]:
        st = Status(self.store)
        return sorted((output(self.store, kind, d, ver, st)
                       for d, ver in self.ctx.listed(kind, tenant_id)), key=sort_key)

    def get(self, kind: str, oid: str) -> Data:
        return output(self.store, kind, *self.ctx.get(kind, oid))

    def create(self, kind: str, body: Any) -> Data:
        txn = Txn(self.store)
        data = _CREATE[kind](txn, body)
        commit(txn)
        return self.get(kind, data["id"])

    def update(self, kind: str, oid: str, body: Any) -> Data:
        txn = Txn(self.store)
        data = _UPDATE[kind](txn, oid, body)
        commit(txn)
        return self.get(kind, data["id"])

    def delete(self, kind: str, oid: str, cascade: bool = False) -> None:
        txn = Txn(self.store)
        delete(txn, kind, oid, cascade)
        commit(txn)

    def list_members_of_pool(self, pool_id: str) -> list[Data]:
        pool, _ = self.ctx.get(POOL, pool_id)
        return [m for m in self.list(MEMBER) if m["pool_id"] == pool["id"]]

    def __getattr__(self, name: str) -> Any:
        """``get_vip(id)``, ``list_pools(tenant_id)``, ``delete_load_balancer(id,
        cascade)``, ...: the methods the REST app names by route."""
        op, _, what = name.partition("_")
        if op == "list" and what in model.LB_KINDS:
            return lambda tenant_id=None: self.list(what, tenant_id)
        kind = _ONE.get(what)
        if kind is None or op not in ("get", "create", "update", "delete"):
            raise AttributeError(name)
        fn = getattr(self, op)
        return lambda *args, **kw: fn(kind, *args, **kw)
