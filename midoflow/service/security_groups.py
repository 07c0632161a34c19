"""Security groups (Neutron's) and their rules.

A change to a group or its rules rewrites, in the same commit, the address
group and chains it is compiled into (:mod:`.sync`, :mod:`.security`).
"""

from __future__ import annotations

import re
from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.service import body as gen
from midoflow.service import refs
from midoflow.service import security as sec
from midoflow.service import validate as v
from midoflow.service.context import Ctx, ref, sort_key
from midoflow.service.sync import sync_sg
from midoflow.service.txn import Txn
from midoflow.store.base import Data

SG_DERIVED = ("ip_addr_group_id", "ingress_chain_id", "egress_chain_id")
SG_RULE_FIELDS = ("id", "security_group_id", "direction", "ethertype", "protocol",
                  "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id")
# What makes two rules of a security group the same rule.
SG_RULE_IDENTITY = SG_RULE_FIELDS[2:]


@refs.special(model.SECURITY_GROUPS)
def _deleting_security_group(txn: Txn, group: Data) -> None:
    sid = group["id"]
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
    for other in txn.list(model.SECURITY_GROUPS):
        kept = [r for r in other.get("rules") or () if r.get("remote_group_id") != sid]
        if len(kept) != len(other.get("rules") or ()):
            other["rules"] = kept
            txn.put(model.SECURITY_GROUPS, other)
            sync_sg(txn, other["id"])
    sync_sg(txn, sid)


class SecurityGroups:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    # ------------------------------------------------------ security groups
    @staticmethod
    def _sg_rule_out(sg_id: str, r: Data) -> Data:
        out = {f: r.get(f) for f in SG_RULE_FIELDS}
        out["security_group_id"] = sg_id
        out["ethertype"] = r.get("ethertype") or "IPv4"
        return out

    def _sg_out(self, data: Data, version: int) -> Data:
        out = self.ctx.out(model.SECURITY_GROUPS, data, version)
        out["rules"] = [self._sg_rule_out(data["id"], r) for r in data.get("rules") or ()]
        out.update(sec.sg_ids(data["id"]))
        return out

    def list_security_groups(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._sg_out(d, ver)
                       for d, ver in self.ctx.listed(model.SECURITY_GROUPS, tenant_id)),
                      key=sort_key)

    def get_security_group(self, id: str) -> Data:
        return self._sg_out(*self.ctx.get(model.SECURITY_GROUPS, id))

    def create_security_group(self, body: Any) -> Data:
        """A security group with Neutron's default rule (egress to anywhere, IPv4),
        its address group and its two chains, in one commit."""
        body, data = gen.create(model.SECURITY_GROUPS, body)
        data["rules"] = [{"id": v.new_id(), "direction": "egress", "ethertype": "IPv4",
                          "protocol": None, "port_range_min": None, "port_range_max": None,
                          "remote_ip_prefix": None, "remote_group_id": None}]
        data["id"] = self.ctx.new_id(model.SECURITY_GROUPS, body)
        txn = Txn(self.store)
        txn.create(model.SECURITY_GROUPS, data)
        sync_sg(txn, data["id"])
        txn.commit()
        return self.get_security_group(data["id"])

    def update_security_group(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(model.SECURITY_GROUPS, id)
        cur = self._sg_out(data, ver)
        new = gen.update(model.SECURITY_GROUPS, body, data, shown=cur)
        v.readonly(body, cur, SG_DERIVED)
        self.ctx.check_version(body, ver, f"security group {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.SECURITY_GROUPS, data, ver)
        txn.put(model.SECURITY_GROUPS, new)
        sync_sg(txn, data["id"])
        txn.commit()
        return self.get_security_group(data["id"])

    def delete_security_group(self, id: str) -> None:
        """Refused while ports use the group or user rules use its address group.
        Rules of other groups whose remote group it is are deleted with it
        (Neutron's cascade), and all the chains are rewritten, in one commit."""
        self.ctx.delete(model.SECURITY_GROUPS, *self.ctx.get(model.SECURITY_GROUPS, id))

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
            ref(txn, model.SECURITY_GROUPS, group, "remote_group_id")
        return {"id": v.new_id(), "direction": direction, "ethertype": "IPv4",
                "protocol": proto, "port_range_min": lo, "port_range_max": hi,
                "remote_ip_prefix": prefix, "remote_group_id": group}

    def add_security_group_rule(self, id: str, body: Any) -> Data:
        sg, ver = self.ctx.get(model.SECURITY_GROUPS, id)
        txn = Txn(self.store)
        txn.seen(model.SECURITY_GROUPS, sg, ver)
        r = self._sg_rule(txn, sg, body)
        for other in sg.get("rules") or ():
            if all(other.get(f) == r[f] for f in SG_RULE_IDENTITY):
                raise Conflict(f"security group {sg['id']} already has this rule "
                               f"({other['id']})")
        sg["rules"] = list(sg.get("rules") or ()) + [r]
        txn.put(model.SECURITY_GROUPS, sg)
        sync_sg(txn, sg["id"])
        if r["remote_group_id"] and r["remote_group_id"] != sg["id"]:
            # a concurrent delete of the remote group fails
            txn.touch(model.IP_ADDR_GROUPS, sec.sg_ipag_id(r["remote_group_id"]))
        txn.commit()
        return self.get_security_group_rule(sg["id"], r["id"])

    def delete_security_group_rule(self, id: str, rule_id: str) -> None:
        sg, ver = self.ctx.get(model.SECURITY_GROUPS, id)
        rid = v.url_id(rule_id, "security group rule")
        rules = list(sg.get("rules") or ())
        kept = [r for r in rules if r.get("id") != rid]
        if len(kept) == len(rules):
            raise NotFound(f"security group {sg['id']} has no rule {rid}")
        txn = Txn(self.store)
        txn.seen(model.SECURITY_GROUPS, sg, ver)
        sg["rules"] = kept
        txn.put(model.SECURITY_GROUPS, sg)
        sync_sg(txn, sg["id"])
        txn.commit()
