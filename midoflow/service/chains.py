"""Chains and their rules.

Every request is one commit through a :class:`~midoflow.service.txn.Txn`,
carrying the versions its checks read: a rule write updates (or touches) its
chain and touches every object it newly references (jump target, ports,
groups), so a concurrent delete of any of them fails instead of leaving a
dangling reference; the chains a jump-loop check walked are checked unchanged.

Generated chains and rules (version-5 ids, written for security groups and
protected ports by :mod:`.sync`) are visible but refused (409) for direct
modification; users cannot create objects with version-5 ids.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.kinds import KINDS
from midoflow.service import body as gen
from midoflow.service import refs
from midoflow.service import security as sec
from midoflow.service import validate as v
from midoflow.service.context import Ctx, generated, ref, sort_key
from midoflow.service.sync import filter_users
from midoflow.service.txn import Txn
from midoflow.store.base import Data

RULES = KINDS[model.RULES]
RULE_FIELDS = sec.RULE_FIELDS
REF_FIELDS = {  # rule field -> kind it references
    "port_group": model.PORT_GROUPS,
    "ip_addr_group_src": model.IP_ADDR_GROUPS,
    "ip_addr_group_dst": model.IP_ADDR_GROUPS,
}


def rule_data(data: Data) -> Data:
    """A stored rule with every field present (defaults for missing ones)."""
    out = {"id": data["id"], "chain_id": data.get("chain_id"), "action": data.get("action")}
    for f, default in sec.RULE_DEFAULTS.items():
        val = data.get(f, default)
        out[f] = copy.deepcopy(val)
    return out


def _is_set(rule: Data, cond: str) -> bool:
    val = rule.get(cond)
    return bool(val) if isinstance(val, list) else val is not None


def echo_generated(body: dict[str, Any], oid: str) -> None:
    """``generated`` is read-only: it may be echoed, with the object's own value."""
    if "generated" in body and v.boolean(body["generated"], "generated") != \
            sec.is_generated(oid):
        raise Invalid("generated is read-only", "generated")


@refs.special(model.CHAINS)
def _deleting_chain(txn: Txn, chain: Data) -> None:
    """Refused, in these words, while a filter names it or another chain jumps to it."""
    cid = chain["id"]
    users = filter_users(txn, cid)
    if users:
        raise Conflict(f"chain {cid} is the filter of {', '.join(sorted(users))}: "
                       "unset it there first")
    jumps = sorted(r["id"] for r in txn.list(model.RULES)
                   if r.get("jump_chain_id") == cid and r.get("chain_id") != cid)
    if jumps:
        raise Conflict(f"rules {', '.join(jumps)} jump to chain {cid}: delete them first")


class Chains:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    # -------------------------------------------------------------- chains
    def _chain_out(self, data: Data, version: int) -> Data:
        out = self.ctx.out(model.CHAINS, data, version)
        out["generated"] = sec.is_generated(data["id"])
        return out

    def list_chains(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._chain_out(d, ver)
                       for d, ver in self.ctx.listed(model.CHAINS, tenant_id)), key=sort_key)

    def get_chain(self, id: str) -> Data:
        return self._chain_out(*self.ctx.get(model.CHAINS, id))

    def create_chain(self, body: Any) -> Data:
        body, data = gen.create(model.CHAINS, body)
        data["id"] = self.ctx.user_id(model.CHAINS, body)
        txn = Txn(self.store)
        txn.create(model.CHAINS, data)
        txn.commit()
        return self.get_chain(data["id"])

    def update_chain(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(model.CHAINS, id)
        if sec.is_generated(data["id"]):
            raise generated(model.CHAINS, data["id"])
        new = gen.update(model.CHAINS, body, data)
        echo_generated(body, data["id"])
        self.ctx.check_version(body, ver, f"chain {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.CHAINS, data, ver)
        txn.put(model.CHAINS, new)
        txn.commit()
        return self.get_chain(data["id"])

    def delete_chain(self, id: str) -> None:
        """Refused while a port, bridge or router filters through it or a rule of
        another chain jumps to it; its rules are deleted with it (declared)."""
        data, ver = self.ctx.get(model.CHAINS, id)
        if sec.is_generated(data["id"]):
            raise generated(model.CHAINS, data["id"])
        self.ctx.delete(model.CHAINS, data, ver)

    # --------------------------------------------------------------- rules
    def _rule_out(self, data: Data, version: int) -> Data:
        out = rule_data(data)
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
        chain, _ = self.ctx.get(model.CHAINS, id)
        out = []
        for rid in chain.get("rule_ids", ()):
            try:
                out.append(self._rule_out(*self.store.get(model.RULES, rid)))
            except NotFound:
                continue
        return out

    def get_rule(self, id: str) -> Data:
        return self._rule_out(*self.ctx.get(model.RULES, id))

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
            ref(txn, model.CHAINS, target, "jump_chain_id")
        for f in ("in_ports", "out_ports"):
            for pid in rule[f]:
                ref(txn, model.PORTS, pid, f)
        for f, kind in REF_FIELDS.items():
            if rule[f]:
                ref(txn, kind, rule[f], f)
        if target:
            if target == rule["chain_id"]:
                raise Conflict("a rule cannot jump to its own chain", "jump_chain_id")
            if sec.is_generated(target):
                raise generated(model.CHAINS, target, "jump_chain_id")
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
                while (up := parent[path[-1]]) is not None:
                    path.append(up)
                raise Conflict(f"jumping to chain {target} would make a loop: "
                               f"{' -> '.join([rule['chain_id']] + path[::-1])}",
                               "jump_chain_id")
            for nxt in sorted(graph.get(c, ())):
                if nxt not in parent:
                    parent[nxt] = c
                    todo.append(nxt)

    def create_rule(self, chain_id: str, body: Any) -> Data:
        """A rule at ``position`` (1-based; default: last) of a user chain."""
        chain, cver = self.ctx.get(model.CHAINS, chain_id)
        if sec.is_generated(chain["id"]):
            raise generated(model.CHAINS, chain["id"])
        body = v.body_object(body)
        v.check_fields(body, RULES.create_fields)
        if "chain_id" in body and body["chain_id"] != chain["id"]:
            raise Invalid("chain_id is the chain in the URL", "chain_id")
        rule = rule_data({"id": "", "chain_id": chain["id"]})
        self._rule_fields(body, rule, creating=True)
        ids = list(chain.get("rule_ids", ()))
        pos = v.integer(body.get("position", len(ids) + 1), "position", 1, len(ids) + 1)
        txn = Txn(self.store)
        txn.seen(model.CHAINS, chain, cver)
        self._rule_refs(txn, rule, None)
        rule["id"] = self.ctx.user_id(model.RULES, body)
        ids.insert(pos - 1, rule["id"])
        txn.put(model.CHAINS, dict(chain, rule_ids=ids))
        txn.create(model.RULES, rule)
        txn.commit()
        return self.get_rule(rule["id"])

    def update_rule(self, id: str, body: Any) -> Data:
        """Partial update of a rule's action and conditions (validated as a whole),
        and optionally its position in its chain."""
        body = v.body_object(body)
        data, ver = self.ctx.get(model.RULES, id)
        if sec.is_generated(data["id"]):
            raise generated(model.RULES, data["id"])
        v.check_fields(body, RULES.output + ("version", "position"))
        v.readonly(body, data, ("id", "chain_id"))
        echo_generated(body, data["id"])
        old = rule_data(data)
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
        self.ctx.check_version(body, ver, f"rule {data['id']}")
        txn.put(model.RULES, new)
        if pos is not None:
            ids.insert(pos - 1, data["id"])
            txn.put(model.CHAINS, dict(chain, rule_ids=ids))
        else:
            txn.touch(model.CHAINS, chain["id"])  # serialises the rule writes of a chain
        txn.commit()
        return self.get_rule(data["id"])

    def delete_rule(self, id: str) -> None:
        data, ver = self.ctx.get(model.RULES, id)
        if sec.is_generated(data["id"]):
            raise generated(model.RULES, data["id"])
        self.ctx.delete(model.RULES, data, ver)  # its chain's rule_ids lose it (declared)
