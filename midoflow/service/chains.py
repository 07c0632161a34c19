"""Chains, rules, port groups, IP address groups and security groups.

Part of :class:`midoflow.service.topology.TopologyService` (a mixin: it uses
the service's helpers). Every request is one commit through a
:class:`~midoflow.service.txn.Txn`, carrying the versions its checks read:

* a rule write updates (or touches) its chain and touches every object it
  newly references (jump target, ports, groups), so a concurrent delete of any
  of them fails instead of leaving a dangling reference; the chains a jump-loop
  check walked are checked unchanged;
* a change to a security group, its rules, or a port's security settings
  rewrites the generated chains, rules and address groups
  (:mod:`midoflow.service.security`) in the same commit.

Generated objects (version-5 ids) are visible but refused (409) for direct
modification; users cannot create objects with version-5 ids.
"""

from __future__ import annotations

import copy
import re
from collections import deque
from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.service import security as sec
from midoflow.service import validate as v
from midoflow.service.txn import Txn
from midoflow.store.base import Data

CHAIN_FIELDS = ("id", "name", "tenant_id", "rule_ids")
RULE_FIELDS = sec.RULE_FIELDS
PORT_GROUP_FIELDS = ("id", "name", "tenant_id", "stateful", "port_ids")
IPAG_FIELDS = ("id", "name", "tenant_id", "addresses")
SG_FIELDS = ("id", "name", "tenant_id", "description", "rules")
SG_DERIVED = ("ip_addr_group_id", "ingress_chain_id", "egress_chain_id")
SG_RULE_FIELDS = ("id", "security_group_id", "direction", "ethertype", "protocol",
                  "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id")
# What makes two rules of a security group the same rule.
SG_RULE_IDENTITY = SG_RULE_FIELDS[2:]
FILTERS = ("inbound_filter_id", "outbound_filter_id")
REF_FIELDS = {  # rule field -> kind it references
    "port_group": model.PORT_GROUPS,
    "ip_addr_group_src": model.IP_ADDR_GROUPS,
    "ip_addr_group_dst": model.IP_ADDR_GROUPS,
}
_NAMED = {model.CHAINS: "chain", model.RULES: "rule", model.IP_ADDR_GROUPS: "IP address group"}


def _generated(kind: str, oid: str, field: str | None = None) -> Conflict:
    return Conflict(f"{_NAMED[kind]} {oid} is generated from security groups and port "
                    "security settings: change those instead", field)


def _rule_data(data: Data) -> Data:
    """A stored rule with every field present (defaults for missing ones)."""
    out = {"id": data["id"], "chain_id": data.get("chain_id"), "action": data.get("action")}
    for f, default in sec.RULE_DEFAULTS.items():
        val = data.get(f, default)
        out[f] = copy.deepcopy(val)
    return out


def _is_set(rule: Data, cond: str) -> bool:
    val = rule.get(cond)
    return bool(val) if isinstance(val, list) else val is not None


class ChainsMixin:
    store: Any

    # ------------------------------------------------------------- helpers
    def _user_id(self, kind: str, body: dict[str, Any]) -> str:
        """A new id for a user-created chain, rule or address group: version-5
        UUIDs are reserved for generated objects."""
        if "id" in body and sec.is_generated(v.uuid_str(body["id"], "id")):
            raise Invalid("id: version-5 UUIDs are reserved for generated objects", "id")
        return self._new_id(kind, body)  # type: ignore[attr-defined]

    @staticmethod
    def _ref(txn: Txn, kind: str, oid: str, field: str, label: str) -> Data:
        obj = txn.get(kind, oid)
        if obj is None:
            raise Invalid(f"{label} {oid} does not exist", field)
        return obj

    @staticmethod
    def _echo_generated(body: dict[str, Any], oid: str) -> None:
        if "generated" in body and v.boolean(body["generated"], "generated") != \
                sec.is_generated(oid):
            raise Invalid("generated is read-only", "generated")

    def _filter_users(self, txn: Txn, chain_id: str) -> list[str]:
        users = []
        for kind, label in ((model.PORTS, "port"), (model.BRIDGES, "bridge"),
                            (model.ROUTERS, "router")):
            for d in txn.list(kind):
                if chain_id in (d.get("inbound_filter_id"), d.get("outbound_filter_id")):
                    users.append(f"{label} {d['id']}")
        return users

    def _apply_filters(self, txn: Txn, body: dict[str, Any], new: Data,
                       old: Data | None) -> None:
        """inbound_filter_id / outbound_filter_id of a port, bridge or router:
        an existing chain (400 otherwise), not a generated one (409; a port may
        echo its own), or null. A newly set chain is touched."""
        for f in FILTERS:
            if f not in body:
                new.setdefault(f, None)
                continue
            if body[f] is None:
                new[f] = None
                continue
            cid = v.uuid_str(body[f], f)
            if old is not None and cid == old.get(f):
                new[f] = cid
                continue
            self._ref(txn, model.CHAINS, cid, f, "chain")
            if sec.is_generated(cid):
                raise _generated(model.CHAINS, cid, f)
            new[f] = cid
            txn.touch(model.CHAINS, cid)

    # -------------------------------------------------------------- chains
    def _chain_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, CHAIN_FIELDS)  # type: ignore[attr-defined]
        out["rule_ids"] = list(data.get("rule_ids", ()))
        out["generated"] = sec.is_generated(data["id"])
        return out

    def list_chains(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._chain_out(d, ver) for d, ver in self.store.list(model.CHAINS)
                       if tenant_id is None or d.get("tenant_id") == tenant_id),
                      key=lambda c: (c["name"] or "", c["id"]))

    def get_chain(self, id: str) -> Data:
        return self._chain_out(*self._get(model.CHAINS, id))  # type: ignore[attr-defined]

    def create_chain(self, body: Any) -> Data:
        body = v.body_object(body)
        v.check_fields(body, ("id", "name", "tenant_id"))
        data = {"name": v.string(body.get("name", ""), "name"),
                "tenant_id": v.string(body.get("tenant_id", ""), "tenant_id"),
                "rule_ids": []}
        data["id"] = self._user_id(model.CHAINS, body)
        txn = Txn(self.store)
        txn.create(model.CHAINS, data)
        txn.commit()
        return self.get_chain(data["id"])

    def update_chain(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._get(model.CHAINS, id)  # type: ignore[attr-defined]
        if sec.is_generated(data["id"]):
            raise _generated(model.CHAINS, data["id"])
        v.check_fields(body, CHAIN_FIELDS + ("version", "generated"))
        v.readonly(body, data, ("id", "rule_ids"))
        self._echo_generated(body, data["id"])
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name")
        if "tenant_id" in body:
            new["tenant_id"] = v.string(body["tenant_id"], "tenant_id")
        self._check_version(body, ver, f"chain {data['id']}")  # type: ignore[attr-defined]
        txn = Txn(self.store)
        txn.seen(model.CHAINS, data, ver)
        txn.put(model.CHAINS, new)
        txn.commit()
        return self.get_chain(data["id"])

    def delete_chain(self, id: str) -> None:
        """Refused while a port, bridge or router filters through it or a rule of
        another chain jumps to it; its rules are deleted with it."""
        data, ver = self._get(model.CHAINS, id)  # type: ignore[attr-defined]
        cid = data["id"]
        if sec.is_generated(cid):
            raise _generated(model.CHAINS, cid)
        txn = Txn(self.store)
        txn.seen(model.CHAINS, data, ver)
        users = self._filter_users(txn, cid)
        if users:
            raise Conflict(f"chain {cid} is the filter of {', '.join(sorted(users))}: "
                           "unset it there first")
        rules = txn.list(model.RULES)
        jumps = sorted(r["id"] for r in rules
                       if r.get("jump_chain_id") == cid and r.get("chain_id") != cid)
        if jumps:
            raise Conflict(f"rules {', '.join(jumps)} jump to chain {cid}: delete them first")
        txn.delete(model.CHAINS, cid)
        for r in rules:
            if r.get("chain_id") == cid:
                txn.delete(model.RULES, r["id"])
        txn.commit()

    # --------------------------------------------------------------- rules
    def _rule_out(self, data: Data, version: int) -> Data:
        out = _rule_data(data)
        out["generated"] = sec.is_generated(data["id"])
        out["version"] = version
        return out

    def list_rules(self) -> list[Data]:
        """Every rule, chain by chain (chains by name), in chain order."""
        order: dict[str, tuple] = {}
        for c in self.list_chains():
            for i, rid in enumerate(c["rule_ids"]):
                order.setdefault(rid, (c["name"], c["id"], i))
        return sorted((self._rule_out(d, ver) for d, ver in self.store.list(model.RULES)),
                      key=lambda r: order.get(r["id"], ("", r["chain_id"] or "", 0)))

    def list_chain_rules(self, id: str) -> list[Data]:
        chain, _ = self._get(model.CHAINS, id)  # type: ignore[attr-defined]
        out = []
        for rid in chain.get("rule_ids", ()):
            try:
                out.append(self._rule_out(*self.store.get(model.RULES, rid)))
            except NotFound:
                continue
        return out

    def get_rule(self, id: str) -> Data:
        return self._rule_out(*self._get(model.RULES, id))  # type: ignore[attr-defined]

    def _rule_fields(self, body: dict[str, Any], rule: Data, creating: bool) -> None:
        """Validate the rule fields of ``body`` into ``rule`` (whole-rule checks too)."""
        if creating or "action" in body:
            rule["action"] = v.enum(v.require(body, "action"), "action", model.RULE_ACTIONS)
        for f in ("jump_chain_id", "port_group", "ip_addr_group_src", "ip_addr_group_dst"):
            if f in body:
                rule[f] = v.optional(body, f, v.uuid_str)
        for f in ("in_ports", "out_ports"):
            if f in body:
                rule[f] = v.id_list(body[f], f)
        if "eth_type" in body:
            rule["eth_type"] = v.optional(body, "eth_type", v.integer, 0, 0xFFFF)
        for f in ("eth_src", "eth_dst"):
            if f in body:
                rule[f] = v.optional(body, f, v.mac, False)
        for f in ("nw_src", "nw_dst"):
            if f in body:
                rule[f] = v.optional(body, f, v.cidr)
        for f in ("nw_proto", "nw_tos"):
            if f in body:
                rule[f] = v.optional(body, f, v.integer, 0, 255)
        for f in ("tp_src", "tp_dst"):
            if f in body:
                rule[f] = v.optional(body, f, v.port_range)
        for f in ("match_forward_flow", "match_return_flow"):
            if f in body:
                rule[f] = v.boolean(body[f], f)
        if "fragment_policy" in body:
            rule["fragment_policy"] = v.enum(body["fragment_policy"], "fragment_policy",
                                             model.FRAG_POLICIES)
        if "invert" in body:
            rule["invert"] = v.unique([v.enum(c, "invert", model.RULE_CONDITIONS)
                                       for c in v.a_list(body["invert"], "invert")], "invert")
        if "nat_targets" in body:
            rule["nat_targets"] = [self._nat_target(t, f"nat_targets[{i}].")
                                   for i, t in enumerate(v.a_list(body["nat_targets"],
                                                                  "nat_targets"))]
        # the rule as a whole
        action = rule["action"]
        if action == model.RULE_JUMP and not rule["jump_chain_id"]:
            raise Invalid("a jump rule needs jump_chain_id (the chain to jump to)",
                          "jump_chain_id")
        if action != model.RULE_JUMP and rule["jump_chain_id"]:
            raise Invalid(f"jump_chain_id is only for action jump, not {action}",
                          "jump_chain_id")
        if rule["match_forward_flow"] and rule["match_return_flow"]:
            raise Invalid("a packet is either forward or return flow: match_forward_flow "
                          "and match_return_flow cannot both be true", "match_return_flow")
        if (rule["tp_src"] or rule["tp_dst"]) and \
                rule["fragment_policy"] == model.FRAG_NONHEADER:
            raise Invalid("a rule matching tp_src or tp_dst cannot have fragment_policy "
                          "nonheader (later fragments carry no L4 header)", "fragment_policy")
        for cond in rule["invert"]:
            if not _is_set(rule, cond):
                raise Invalid(f"invert names {cond}, which the rule does not match on",
                              "invert")
        if action in model.NAT_ACTIONS and not rule["nat_targets"]:
            raise Invalid(f"a {action} rule needs nat_targets", "nat_targets")
        if action not in model.NAT_ACTIONS and rule["nat_targets"]:
            raise Invalid(f"nat_targets are only for dnat, snat and their static forms, "
                          f"not {action}",
                          "nat_targets")

    @staticmethod
    def _nat_target(t: Any, prefix: str) -> Data:
        if not isinstance(t, dict):
            raise Invalid(f"{prefix[:-1]} must be an object", prefix[:-1])
        for k in t:
            if k not in ("addr_from", "addr_to", "port_from", "port_to"):
                raise Invalid(f"unknown field {k!r}", prefix + k)
        if "addr_from" not in t:
            raise Invalid(f"{prefix}addr_from is required", prefix + "addr_from")
        lo = v.unicast_ipv4(t["addr_from"], prefix + "addr_from")
        hi = v.unicast_ipv4(t.get("addr_to", lo), prefix + "addr_to")
        if v.ip_key(lo) > v.ip_key(hi):
            raise Invalid(f"{prefix}addr_to {hi} is below addr_from {lo}", prefix + "addr_to")
        pfrom = v.integer(t.get("port_from", 0), prefix + "port_from", 0, 65535)
        pto = v.integer(t.get("port_to", pfrom), prefix + "port_to", 0, 65535)
        if pfrom > pto:
            raise Invalid(f"{prefix}port_to {pto} is below port_from {pfrom}",
                          prefix + "port_to")
        if pfrom == 0 and pto != 0:
            raise Invalid(f"{prefix}port_from 0 means \"keep the port\" and needs port_to 0",
                          prefix + "port_from")
        return {"addr_from": lo, "addr_to": hi, "port_from": pfrom, "port_to": pto}

    def _rule_refs(self, txn: Txn, rule: Data, old: Data | None) -> None:
        """References of a rule: they exist (400), a jump target is not generated,
        not the rule's own chain and closes no loop (409). New references are
        touched; the chains the loop check walked are checked unchanged."""
        def new(f: str, val: Any) -> bool:
            return old is None or (val not in old.get(f) if isinstance(old.get(f), list)
                                   else old.get(f) != val)

        target = rule["jump_chain_id"]
        if target:
            self._ref(txn, model.CHAINS, target, "jump_chain_id", "chain")
        for f in ("in_ports", "out_ports"):
            for pid in rule[f]:
                self._ref(txn, model.PORTS, pid, f, "port")
        for f, kind in REF_FIELDS.items():
            if rule[f]:
                self._ref(txn, kind, rule[f], f,
                          "port group" if kind == model.PORT_GROUPS else "IP address group")
        if target:
            if target == rule["chain_id"]:
                raise Conflict("a rule cannot jump to its own chain", "jump_chain_id")
            if sec.is_generated(target):
                raise _generated(model.CHAINS, target, "jump_chain_id")
            self._check_loop(txn, rule, target)
            if new("jump_chain_id", target):
                txn.touch(model.CHAINS, target)
        for f in ("in_ports", "out_ports"):
            for pid in rule[f]:
                if new(f, pid):
                    txn.touch(model.PORTS, pid)
        for f, kind in REF_FIELDS.items():
            if rule[f] and new(f, rule[f]):
                txn.touch(kind, rule[f])

    @staticmethod
    def _check_loop(txn: Txn, rule: Data, target: str) -> None:
        graph: dict[str, set[str]] = {}
        for r in txn.list(model.RULES):
            if r["id"] != rule["id"] and r.get("action") == model.RULE_JUMP and \
                    r.get("jump_chain_id"):
                graph.setdefault(r.get("chain_id"), set()).add(r["jump_chain_id"])
        parent: dict[str, str | None] = {target: None}
        todo = deque([target])
        while todo:
            c = todo.popleft()
            txn.check(model.CHAINS, c)
            if c == rule["chain_id"]:
                path = [c]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])  # type: ignore[arg-type]
                raise Conflict(f"jumping to chain {target} would make a loop: "
                               f"{' -> '.join([rule['chain_id']] + path[::-1])}",
                               "jump_chain_id")
            for nxt in sorted(graph.get(c, ())):
                if nxt not in parent:
                    parent[nxt] = c
                    todo.append(nxt)

    def create_rule(self, chain_id: str, body: Any) -> Data:
        """A rule at ``position`` (1-based; default: last) of a user chain."""
        chain, cver = self._get(model.CHAINS, chain_id)  # type: ignore[attr-defined]
        if sec.is_generated(chain["id"]):
            raise _generated(model.CHAINS, chain["id"])
        body = v.body_object(body)
        v.check_fields(body, RULE_FIELDS + ("position",))
        if "chain_id" in body and body["chain_id"] != chain["id"]:
            raise Invalid("chain_id is the chain in the URL", "chain_id")
        rule = _rule_data({"id": "", "chain_id": chain["id"]})
        self._rule_fields(body, rule, creating=True)
        ids = list(chain.get("rule_ids", ()))
        pos = v.integer(body.get("position", len(ids) + 1), "position", 1, len(ids) + 1)
        txn = Txn(self.store)
        txn.seen(model.CHAINS, chain, cver)
        self._rule_refs(txn, rule, None)
        rule["id"] = self._user_id(model.RULES, body)
        ids.insert(pos - 1, rule["id"])
        txn.put(model.CHAINS, dict(chain, rule_ids=ids))
        txn.create(model.RULES, rule)
        txn.commit()
        return self.get_rule(rule["id"])

    def update_rule(self, id: str, body: Any) -> Data:
        """Partial update of a rule's action and conditions (validated as a whole),
        and optionally its position in its chain."""
        body = v.body_object(body)
        data, ver = self._get(model.RULES, id)  # type: ignore[attr-defined]
        if sec.is_generated(data["id"]):
            raise _generated(model.RULES, data["id"])
        v.check_fields(body, RULE_FIELDS + ("version", "generated", "position"))
        v.readonly(body, data, ("id", "chain_id"))
        self._echo_generated(body, data["id"])
        old = _rule_data(data)
        new = copy.deepcopy(old)
        self._rule_fields(body, new, creating=False)
        txn = Txn(self.store)
        txn.seen(model.RULES, data, ver)
        chain = txn.get(model.CHAINS, data["chain_id"])
        if chain is None:
            raise Conflict(f"rule {data['id']} belongs to a missing chain {data['chain_id']}")
        ids = [r for r in chain.get("rule_ids", ()) if r != data["id"]]
        pos = None
        if "position" in body:
            pos = v.integer(body["position"], "position", 1, len(ids) + 1)
        self._rule_refs(txn, new, old)
        self._check_version(body, ver, f"rule {data['id']}")  # type: ignore[attr-defined]
        txn.put(model.RULES, new)
        if pos is not None:
            ids.insert(pos - 1, data["id"])
            txn.put(model.CHAINS, dict(chain, rule_ids=ids))
        else:
            txn.touch(model.CHAINS, chain["id"])  # serialises the rule writes of a chain
        txn.commit()
        return self.get_rule(data["id"])

    def delete_rule(self, id: str) -> None:
        data, ver = self._get(model.RULES, id)  # type: ignore[attr-defined]
        if sec.is_generated(data["id"]):
            raise _generated(model.RULES, data["id"])
        txn = Txn(self.store)
        txn.seen(model.RULES, data, ver)
        chain = txn.get(model.CHAINS, data.get("chain_id") or "")
        if chain is not None:
            chain["rule_ids"] = [r for r in chain.get("rule_ids", ()) if r != data["id"]]
            txn.put(model.CHAINS, chain)
        txn.delete(model.RULES, data["id"])
        txn.commit()

    # ---------------------------------------------------------- port groups
    def _pg_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, PORT_GROUP_FIELDS)  # type: ignore[attr-defined]
        out["stateful"] = bool(data.get("stateful", False))
        out["port_ids"] = list(data.get("port_ids", ()))
        return out

    def list_port_groups(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._pg_out(d, ver) for d, ver in self.store.list(model.PORT_GROUPS)
                       if tenant_id is None or d.get("tenant_id") == tenant_id),
                      key=lambda g: (g["name"] or "", g["id"]))

    def get_port_group(self, id: str) -> Data:
        return self._pg_out(*self._get(model.PORT_GROUPS, id))  # type: ignore[attr-defined]

    def create_port_group(self, body: Any) -> Data:
        body = v.body_object(body)
        v.check_fields(body, ("id", "name", "tenant_id", "stateful"))
        data = {"name": v.string(body.get("name", ""), "name"),
                "tenant_id": v.string(body.get("tenant_id", ""), "tenant_id"),
                "stateful": v.boolean(body.get("stateful", False), "stateful"),
                "port_ids": []}
        data["id"] = self._new_id(model.PORT_GROUPS, body)  # type: ignore[attr-defined]
        txn = Txn(self.store)
        txn.create(model.PORT_GROUPS, data)
        txn.commit()
        return self.get_port_group(data["id"])

    def update_port_group(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._get(model.PORT_GROUPS, id)  # type: ignore[attr-defined]
        v.check_fields(body, PORT_GROUP_FIELDS + ("version",))
        v.readonly(body, data, ("id", "port_ids"))
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name")
        if "tenant_id" in body:
            new["tenant_id"] = v.string(body["tenant_id"], "tenant_id")
        if "stateful" in body:
            new["stateful"] = v.boolean(body["stateful"], "stateful")
        self._check_version(body, ver, f"port group {data['id']}")  # type: ignore[attr-defined]
        txn = Txn(self.store)
        txn.seen(model.PORT_GROUPS, data, ver)
        txn.put(model.PORT_GROUPS, new)
        txn.commit()
        return self.get_port_group(data["id"])

    def _rules_using(self, txn: Txn, fields: tuple[str, ...], oid: str) -> list[str]:
        return sorted(r["id"] for r in txn.list(model.RULES)
                      if any(r.get(f) == oid for f in fields))

    def delete_port_group(self, id: str) -> None:
        data, ver = self._get(model.PORT_GROUPS, id)  # type: ignore[attr-defined]
        txn = Txn(self.store)
        txn.seen(model.PORT_GROUPS, data, ver)
        users = self._rules_using(txn, ("port_group",), data["id"])
        if users:
            raise Conflict(f"port group {data['id']} is used by rules {', '.join(users)}: "
                           "change them first")
        txn.delete(model.PORT_GROUPS, data["id"])
        txn.commit()

    def list_port_group_ports(self, id: str) -> list[Data]:
        group, _ = self._get(model.PORT_GROUPS, id)  # type: ignore[attr-defined]
        out = []
        for pid in group.get("port_ids", ()):
            try:
                out.append(self._port_out(*self.store.get(model.PORTS, pid)))  # type: ignore
            except NotFound:
                continue
        return out

    def add_port_group_port(self, id: str, body: Any) -> Data:
        """Add {port_id}; answers the group. 409 if the port is already a member."""
        group, gver = self._get(model.PORT_GROUPS, id)  # type: ignore[attr-defined]
        body = v.body_object(body)
        v.check_fields(body, ("port_id",))
        pid = v.uuid_str(v.require(body, "port_id"), "port_id")
        txn = Txn(self.store)
        txn.seen(model.PORT_GROUPS, group, gver)
        self._ref(txn, model.PORTS, pid, "port_id", "port")
        if pid in group.get("port_ids", ()):
            raise Conflict(f"port {pid} is already in port group {group['id']}", "port_id")
        group["port_ids"] = list(group.get("port_ids", ())) + [pid]
        txn.put(model.PORT_GROUPS, group)
        txn.touch(model.PORTS, pid)  # a concurrent delete of the port fails
        txn.commit()
        return self.get_port_group(group["id"])

    def remove_port_group_port(self, id: str, port_id: str) -> Data:
        group, gver = self._get(model.PORT_GROUPS, id)  # type: ignore[attr-defined]
        pid = v.url_id(port_id, "member port")
        if pid not in group.get("port_ids", ()):
            raise NotFound(f"port {pid} is not in port group {group['id']}")
        txn = Txn(self.store)
        txn.seen(model.PORT_GROUPS, group, gver)
        group["port_ids"] = [p for p in group["port_ids"] if p != pid]
        txn.put(model.PORT_GROUPS, group)
        txn.commit()
        return self.get_port_group(group["id"])

    # ------------------------------------------------------- IP addr groups
    def _ipag_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, IPAG_FIELDS)  # type: ignore[attr-defined]
        out["addresses"] = list(data.get("addresses", ()))
        out["generated"] = sec.is_generated(data["id"])
        return out

    def list_ip_addr_groups(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._ipag_out(d, ver) for d, ver in
                       self.store.list(model.IP_ADDR_GROUPS)
                       if tenant_id is None or d.get("tenant_id") == tenant_id),
                      key=lambda g: (g["name"] or "", g["id"]))

    def get_ip_addr_group(self, id: str) -> Data:
        return self._ipag_out(*self._get(model.IP_ADDR_GROUPS, id))  # type: ignore

    def create_ip_addr_group(self, body: Any) -> Data:
        body = v.body_object(body)
        v.check_fields(body, IPAG_FIELDS)
        data = {"name": v.string(body.get("name", ""), "name"),
                "tenant_id": v.string(body.get("tenant_id", ""), "tenant_id"),
                "addresses": v.ipv4_list(body.get("addresses", []), "addresses")}
        data["id"] = self._user_id(model.IP_ADDR_GROUPS, body)
        txn = Txn(self.store)
        txn.create(model.IP_ADDR_GROUPS, data)
        txn.commit()
        return self.get_ip_addr_group(data["id"])

    def _user_ipag(self, id: str) -> tuple[Data, int]:
        data, ver = self._get(model.IP_ADDR_GROUPS, id)  # type: ignore[attr-defined]
        if sec.is_generated(data["id"]):
            raise _generated(model.IP_ADDR_GROUPS, data["id"])
        return data, ver

    def update_ip_addr_group(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._user_ipag(id)
        v.check_fields(body, IPAG_FIELDS + ("version", "generated"))
        v.readonly(body, data, ("id", "addresses"))
        self._echo_generated(body, data["id"])
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name")
        if "tenant_id" in body:
            new["tenant_id"] = v.string(body["tenant_id"], "tenant_id")
        self._check_version(body, ver,  # type: ignore[attr-defined]
                            f"IP address group {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.IP_ADDR_GROUPS, data, ver)
        txn.put(model.IP_ADDR_GROUPS, new)
        txn.commit()
        return self.get_ip_addr_group(data["id"])

    def delete_ip_addr_group(self, id: str) -> None:
        data, ver = self._user_ipag(id)
        txn = Txn(self.store)
        txn.seen(model.IP_ADDR_GROUPS, data, ver)
        users = self._rules_using(txn, ("ip_addr_group_src", "ip_addr_group_dst"), data["id"])
        if users:
            raise Conflict(f"IP address group {data['id']} is used by rules "
                           f"{', '.join(users)}: change them first")
        txn.delete(model.IP_ADDR_GROUPS, data["id"])
        txn.commit()

    def list_ip_addr_group_addresses(self, id: str) -> list[str]:
        return self.get_ip_addr_group(id)["addresses"]

    def add_ip_addr_group_address(self, id: str, body: Any) -> Data:
        """Add {address}; answers the group. 409 if it is already in it."""
        data, ver = self._user_ipag(id)
        body = v.body_object(body)
        v.check_fields(body, ("address",))
        addr = v.unicast_ipv4(v.require(body, "address"), "address")
        if addr in data.get("addresses", ()):
            raise Conflict(f"{addr} is already in IP address group {data['id']}", "address")
        txn = Txn(self.store)
        txn.seen(model.IP_ADDR_GROUPS, data, ver)
        data["addresses"] = list(data.get("addresses", ())) + [addr]
        txn.put(model.IP_ADDR_GROUPS, data)
        txn.commit()
        return self.get_ip_addr_group(data["id"])

    def remove_ip_addr_group_address(self, id: str, address: str) -> Data:
        data, ver = self._user_ipag(id)
        try:
            addr = v.unicast_ipv4(address, "address")
        except Invalid:
            addr = None
        if addr is None or addr not in data.get("addresses", ()):
            raise NotFound(f"{address[:64]} is not in IP address group {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.IP_ADDR_GROUPS, data, ver)
        data["addresses"] = [a for a in data["addresses"] if a != addr]
        txn.put(model.IP_ADDR_GROUPS, data)
        txn.commit()
        return self.get_ip_addr_group(data["id"])

    # ------------------------------------------------------ security groups
    @staticmethod
    def _sg_rule_out(sg_id: str, r: Data) -> Data:
        out = {f: r.get(f) for f in SG_RULE_FIELDS}
        out["security_group_id"] = sg_id
        out["ethertype"] = r.get("ethertype") or "IPv4"
        return out

    def _sg_out(self, data: Data, version: int) -> Data:
        out = self._out(data, version, SG_FIELDS)  # type: ignore[attr-defined]
        out["rules"] = [self._sg_rule_out(data["id"], r) for r in data.get("rules") or ()]
        out.update(sec.sg_ids(data["id"]))
        return out

    def list_security_groups(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._sg_out(d, ver) for d, ver in
                       self.store.list(model.SECURITY_GROUPS)
                       if tenant_id is None or d.get("tenant_id") == tenant_id),
                      key=lambda g: (g["name"] or "", g["id"]))

    def get_security_group(self, id: str) -> Data:
        return self._sg_out(*self._get(model.SECURITY_GROUPS, id))  # type: ignore

    def create_security_group(self, body: Any) -> Data:
        """A security group with Neutron's default rule (egress to anywhere, IPv4),
        its address group and its two chains, in one commit."""
        body = v.body_object(body)
        v.check_fields(body, ("id", "name", "tenant_id", "description"))
        data = {"name": v.string(body.get("name", ""), "name"),
                "tenant_id": v.string(body.get("tenant_id", ""), "tenant_id"),
                "description": v.string(body.get("description", ""), "description",
                                        v.DESCRIPTION_MAX),
                "rules": [{"id": v.new_id(), "direction": "egress", "ethertype": "IPv4",
                           "protocol": None, "port_range_min": None, "port_range_max": None,
                           "remote_ip_prefix": None, "remote_group_id": None}]}
        data["id"] = self._new_id(model.SECURITY_GROUPS, body)  # type: ignore[attr-defined]
        txn = Txn(self.store)
        txn.create(model.SECURITY_GROUPS, data)
        self._sync_sg(txn, data["id"])
        txn.commit()
        return self.get_security_group(data["id"])

    def update_security_group(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._get(model.SECURITY_GROUPS, id)  # type: ignore[attr-defined]
        v.check_fields(body, SG_FIELDS + SG_DERIVED + ("version",))
        cur = self._sg_out(data, ver)
        v.readonly(body, cur, ("id", "rules") + SG_DERIVED)
        new = dict(data)
        if "name" in body:
            new["name"] = v.string(body["name"], "name")
        if "tenant_id" in body:
            new["tenant_id"] = v.string(body["tenant_id"], "tenant_id")
        if "description" in body:
            new["description"] = v.string(body["description"], "description",
                                          v.DESCRIPTION_MAX)
        self._check_version(body, ver,  # type: ignore[attr-defined]
                            f"security group {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.SECURITY_GROUPS, data, ver)
        txn.put(model.SECURITY_GROUPS, new)
        self._sync_sg(txn, data["id"])
        txn.commit()
        return self.get_security_group(data["id"])

    def delete_security_group(self, id: str) -> None:
        """Refused while ports use the group or user rules use its address group.
        Rules of other groups whose remote group it is are deleted with it
        (Neutron's cascade), and all the chains are rewritten, in one commit."""
        data, ver = self._get(model.SECURITY_GROUPS, id)  # type: ignore[attr-defined]
        sid = data["id"]
        txn = Txn(self.store)
        txn.seen(model.SECURITY_GROUPS, data, ver)
        ports = sorted(p["id"] for p in txn.list(model.PORTS)
                       if sid in (p.get("security_group_ids") or ()))
        if ports:
            raise Conflict(f"security group {sid} is in use by ports {', '.join(ports)}: "
                           "remove it from them first")
        own = set(sec.sg_ids(sid).values())
        users = sorted(r["id"] for r in txn.list(model.RULES)
                       if not sec.is_generated(r["id"]) and
                       (r.get("ip_addr_group_src") in own or r.get("ip_addr_group_dst") in own
                        or r.get("jump_chain_id") in own))
        if users:
            raise Conflict(f"rules {', '.join(users)} use the address group or chains of "
                           f"security group {sid}: change them first")
        txn.delete(model.SECURITY_GROUPS, sid)
        for other in txn.list(model.SECURITY_GROUPS):
            kept = [r for r in other.get("rules") or () if r.get("remote_group_id") != sid]
            if len(kept) != len(other.get("rules") or ()):
                other["rules"] = kept
                txn.put(model.SECURITY_GROUPS, other)
                self._sync_sg(txn, other["id"])
        self._sync_sg(txn, sid)
        txn.commit()

    def list_security_group_rules(self, id: str) -> list[Data]:
        return self.get_security_group(id)["rules"]

    def get_security_group_rule(self, id: str, rule_id: str) -> Data:
        sg = self.get_security_group(id)
        rid = v.url_id(rule_id, "security group rule")
        for r in sg["rules"]:
            if r["id"] == rid:
                return r
        raise NotFound(f"security group {sg['id']} has no rule {rid}")

    @staticmethod
    def _sg_protocol(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, str):
            if value in sec.PROTOCOL_NAMES:
                return sec.PROTOCOL_NAMES[value]
            if re.fullmatch(r"[0-9]{1,3}", value) and int(value) <= 255:
                return int(value)
            raise Invalid("protocol must be tcp, udp, icmp, a number 0 to 255, or null",
                          "protocol")
        return v.integer(value, "protocol", 0, 255)

    def _sg_rule(self, txn: Txn, sg: Data, body: Any) -> Data:
        body = v.body_object(body)
        v.check_fields(body, SG_RULE_FIELDS[1:])
        if "security_group_id" in body and body["security_group_id"] != sg["id"]:
            raise Invalid("security_group_id is the group in the URL", "security_group_id")
        direction = v.enum(v.require(body, "direction"), "direction", sec.DIRECTIONS)
        if body.get("ethertype", "IPv4") != "IPv4":
            raise Invalid("ethertype must be IPv4 (IPv6 rules are not supported)", "ethertype")
        proto = self._sg_protocol(body.get("protocol"))
        lo, hi = body.get("port_range_min"), body.get("port_range_max")
        if (lo is None) != (hi is None):
            raise Invalid("port_range_min and port_range_max are given together",
                          "port_range_max" if hi is None else "port_range_min")
        if lo is not None:
            if proto in sec.PORT_PROTOCOLS:
                lo = v.integer(lo, "port_range_min", 1, 65535)
                hi = v.integer(hi, "port_range_max", 1, 65535)
                if lo > hi:
                    raise Invalid(f"port_range_max {hi} is below port_range_min {lo}",
                                  "port_range_max")
            elif proto == sec.PROTO_ICMP:
                lo = v.integer(lo, "port_range_min", 0, 255)  # ICMP type
                hi = v.integer(hi, "port_range_max", 0, 255)  # ICMP code
            else:
                raise Invalid("a port range needs protocol tcp, udp (ports) or icmp "
                              "(type and code)", "port_range_min")
        prefix = v.optional(body, "remote_ip_prefix", v.cidr)
        group = v.optional(body, "remote_group_id", v.uuid_str)
        if prefix is not None and group is not None:
            raise Invalid("give remote_ip_prefix or remote_group_id, not both",
                          "remote_group_id")
        if group is not None and group != sg["id"]:
            self._ref(txn, model.SECURITY_GROUPS, group, "remote_group_id", "security group")
        return {"id": v.new_id(), "direction": direction, "ethertype": "IPv4",
                "protocol": proto, "port_range_min": lo, "port_range_max": hi,
                "remote_ip_prefix": prefix, "remote_group_id": group}

    def add_security_group_rule(self, id: str, body: Any) -> Data:
        sg, ver = self._get(model.SECURITY_GROUPS, id)  # type: ignore[attr-defined]
        txn = Txn(self.store)
        txn.seen(model.SECURITY_GROUPS, sg, ver)
        r = self._sg_rule(txn, sg, body)
        for other in sg.get("rules") or ():
            if all(other.get(f) == r[f] for f in SG_RULE_IDENTITY):
                raise Conflict(f"security group {sg['id']} already has this rule "
                               f"({other['id']})")
        sg["rules"] = list(sg.get("rules") or ()) + [r]
        txn.put(model.SECURITY_GROUPS, sg)
        self._sync_sg(txn, sg["id"])
        if r["remote_group_id"] and r["remote_group_id"] != sg["id"]:
            # a concurrent delete of the remote group fails
            txn.touch(model.IP_ADDR_GROUPS, sec.sg_ipag_id(r["remote_group_id"]))
        txn.commit()
        return self.get_security_group_rule(sg["id"], r["id"])

    def delete_security_group_rule(self, id: str, rule_id: str) -> None:
        sg, ver = self._get(model.SECURITY_GROUPS, id)  # type: ignore[attr-defined]
        rid = v.url_id(rule_id, "security group rule")
        rules = list(sg.get("rules") or ())
        kept = [r for r in rules if r.get("id") != rid]
        if len(kept) == len(rules):
            raise NotFound(f"security group {sg['id']} has no rule {rid}")
        txn = Txn(self.store)
        txn.seen(model.SECURITY_GROUPS, sg, ver)
        sg["rules"] = kept
        txn.put(model.SECURITY_GROUPS, sg)
        self._sync_sg(txn, sg["id"])
        txn.commit()

    # ------------------------------------------------ generated objects sync
    @staticmethod
    def _reconcile_chain(txn: Txn, cid: str, desired: tuple[Data, list[Data]] | None) -> None:
        cur = txn.get(model.CHAINS, cid)
        want_rules = desired[1] if desired else []
        want_ids = {r["id"] for r in want_rules}
        for rid in (cur or {}).get("rule_ids", ()):
            if rid not in want_ids:
                txn.delete(model.RULES, rid)
        if desired is None:
            if cur is not None:
                txn.delete(model.CHAINS, cid)
            return
        for r in want_rules:
            txn.sync(model.RULES, r)
        txn.sync(model.CHAINS, desired[0])

    def _sync_sg(self, txn: Txn, sg_id: str, touch: bool = False) -> None:
        """Write the address group and chains of a security group as the staged
        state says (or delete them with the group). ``touch``: re-write the
        address group even if unchanged (a port joined: a concurrent delete of
        the group must fail)."""
        sg = txn.get(model.SECURITY_GROUPS, sg_id)
        ipag_id = sec.sg_ipag_id(sg_id)
        if sg is None:
            for d in sec.DIRECTIONS:
                self._reconcile_chain(txn, sec.sg_chain_id(sg_id, d), None)
            if txn.get(model.IP_ADDR_GROUPS, ipag_id) is not None:
                txn.delete(model.IP_ADDR_GROUPS, ipag_id)
            return
        members = [p for p in txn.list(model.PORTS)
                   if sg_id in (p.get("security_group_ids") or ())]
        ipag, chains = sec.sg_objects(sg, members)
        txn.sync(model.IP_ADDR_GROUPS, ipag)
        if touch:
            txn.touch(model.IP_ADDR_GROUPS, ipag_id)
        for chain, rules in chains:
            self._reconcile_chain(txn, chain["id"], (chain, rules))

    def _sync_port(self, txn: Txn, port_id: str) -> None:
        """Write a port's filter chains as its staged state says, and point its
        filters at them (or delete them and clear the filters)."""
        port = txn.get(model.PORTS, port_id)
        desired: dict[str, tuple[Data, list[Data]]] = {}
        if port is not None:
            tenant = ""
            if port.get("device_type", model.DEVICE_BRIDGE) == model.DEVICE_BRIDGE:
                tenant = (txn.get(model.BRIDGES, port["device_id"]) or {}).get("tenant_id", "")
            desired = {c["id"]: (c, rules) for c, rules in sec.port_objects(port, tenant)}
        for which in sec.PORT_CHAINS:
            cid = sec.port_chain_id(port_id, which)
            self._reconcile_chain(txn, cid, desired.get(cid))
        if port is None:
            return
        own = sec.port_filters(port)
        new = dict(port)
        for f, mine in zip(FILTERS, own, strict=True):
            if sec.port_managed(port):
                new[f] = mine
            elif new.get(f) == mine:
                new[f] = None
        if new != port:
            txn.put(model.PORTS, new)

    def _sync_port_security(self, txn: Txn, old: Data | None, new: Data | None) -> None:
        """After a port was created, changed or deleted (staged): its security
        groups' address groups and chains, and its own chains."""
        pid = (new or old or {})["id"]
        old_sgs = list((old or {}).get("security_group_ids") or ())
        new_sgs = list((new or {}).get("security_group_ids") or ())
        if old is None or new is None or old_sgs != new_sgs or \
                (old.get("fixed_ips") or []) != (new.get("fixed_ips") or []):
            for sid in dict.fromkeys(old_sgs + new_sgs):
                self._sync_sg(txn, sid, touch=sid not in old_sgs)
        if (old is not None and sec.port_managed(old)) or \
                (new is not None and sec.port_managed(new)):
            self._sync_port(txn, pid)

    def _port_security_fields(self, txn: Txn, body: dict[str, Any], new: Data,
                              old: Data | None) -> None:
        """mac, fixed_ips, security_group_ids, port_security_enabled,
        allowed_address_pairs and the filters of a port (400s and the 409s
        that depend only on the body and the referenced objects)."""
        secf = ("fixed_ips", "security_group_ids", "port_security_enabled",
                "allowed_address_pairs")
        for f, default in zip(secf, ([], [], False, []), strict=True):
            new.setdefault(f, copy.deepcopy(default))
        if new.get("device_type") == model.DEVICE_ROUTER:
            cur = {f: new[f] for f in secf}
            cur["allowed_address_pairs"] = self._pairs_out(new["allowed_address_pairs"])
            for f in secf:
                if f in body and v._norm(body[f]) != v._norm(cur[f]):
                    raise Invalid(f"{f} is for bridge ports (a router port's address is "
                                  "ip_address)", f)
        else:
            if "mac" in body:
                new["mac"] = v.optional(body, "mac", v.mac)
            if "fixed_ips" in body:
                new["fixed_ips"] = v.ipv4_list(body["fixed_ips"], "fixed_ips")
            if "security_group_ids" in body:
                new["security_group_ids"] = v.id_list(body["security_group_ids"],
                                                      "security_group_ids")
                for sid in new["security_group_ids"]:
                    self._ref(txn, model.SECURITY_GROUPS, sid, "security_group_ids",
                              "security group")
            if "port_security_enabled" in body:
                new["port_security_enabled"] = v.boolean(body["port_security_enabled"],
                                                         "port_security_enabled")
            if "allowed_address_pairs" in body:
                new["allowed_address_pairs"] = self._pairs(body["allowed_address_pairs"])
            if new["port_security_enabled"] and not new.get("mac"):
                raise Invalid("port security needs the port's mac",
                              "mac" if "mac" in body else "port_security_enabled")
            if new["allowed_address_pairs"] and not new["port_security_enabled"]:
                raise Invalid("allowed_address_pairs need port_security_enabled",
                              "allowed_address_pairs" if "allowed_address_pairs" in body
                              else "port_security_enabled")
        self._apply_filters(txn, body, new, old)

    @staticmethod
    def _pairs_out(pairs: Any) -> list[Data]:
        return [{"ip_address": p["ip_address"], "mac_address": p.get("mac_address")}
                for p in pairs or ()]

    @staticmethod
    def _pairs(value: Any) -> list[Data]:
        out = []
        for i, p in enumerate(v.a_list(value, "allowed_address_pairs")):
            where = f"allowed_address_pairs[{i}]."
            if not isinstance(p, dict):
                raise Invalid("allowed_address_pairs items must be objects",
                              "allowed_address_pairs")
            for k in p:
                if k not in ("ip_address", "mac_address"):
                    raise Invalid(f"unknown field {k!r}", where + k)
            if "ip_address" not in p:
                raise Invalid(f"{where}ip_address is required", where + "ip_address")
            ip = p["ip_address"]
            if isinstance(ip, str) and "/" in ip:
                ip = v.cidr(ip, where + "ip_address")
            else:
                ip = v.unicast_ipv4(ip, where + "ip_address")
            mac = p.get("mac_address")
            out.append({"ip_address": ip,
                        "mac_address": None if mac is None else v.mac(mac, where + "mac_address")})
        return v.unique(out, "allowed_address_pairs")

    def _check_port_conflicts(self, txn: Txn, body: dict[str, Any], new: Data,
                              old: Data | None) -> None:
        """409s of a bridge port: its MAC and fixed IPs are unique on the bridge;
        a protected port's filters are its own chains (not user chains)."""
        if new.get("device_type") == model.DEVICE_BRIDGE:
            changed = old is None or old.get("mac") != new.get("mac") or \
                (old.get("fixed_ips") or []) != new["fixed_ips"]
            if changed and (new.get("mac") or new["fixed_ips"]):
                for other in txn.list(model.PORTS):
                    if other["id"] == new["id"] or other.get("device_id") != new["device_id"]:
                        continue
                    if new.get("mac") and other.get("mac") == new["mac"]:
                        raise Conflict(f"MAC {new['mac']} is already used by port "
                                       f"{other['id']} of bridge {new['device_id']}", "mac")
                    both = set(new["fixed_ips"]) & set(other.get("fixed_ips") or ())
                    if both:
                        raise Conflict(f"{min(both)} is already a fixed IP of port "
                                       f"{other['id']} of bridge {new['device_id']}",
                                       "fixed_ips")
                txn.touch(model.BRIDGES, new["device_id"])  # serialises the uniqueness
        if not sec.port_managed(new):
            return
        for f, mine in zip(FILTERS, sec.port_filters(new), strict=True):
            if new.get(f) not in (None, mine):
                field = f if f in body else (
                    "security_group_ids" if "security_group_ids" in body
                    else "port_security_enabled")
                raise Conflict(f"port {new['id']} filters through chain {new[f]}, set by "
                               f"hand; security groups and port security need the port's "
                               f"own chains: set {f} to null in the same request", field)
