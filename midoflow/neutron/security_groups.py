"""Neutron security groups and security group rules, each group translated into
one native security group (same id, IPv4 rules embedded) whose address group
and chains the native staging helpers keep in step (midoflow.service.sync)."""

from __future__ import annotations

import uuid
from typing import Any

from midoflow import model
from midoflow.neutron import attrs as a
from midoflow.neutron import errors as ne
from midoflow.neutron import translate_l2 as tr
from midoflow.neutron.base import Collection, Op, kind_of, owns, register
from midoflow.neutron.context import Context
from midoflow.service import refs
from midoflow.service.sync import sync_sg
from midoflow.store.base import Data

SG_KIND = kind_of("security-groups")
RULE_KIND = kind_of("security-group-rules")
# The per-project default group has an id derived from the project: two requests
# creating it at once cannot make two (the second commit fails and is retried).
DEFAULT_NS = uuid.UUID("5b0b8d0e-7c1f-4e52-9a55-3d2a1f0c8e47")
DEFAULT = "default"
SG_CREATE = ("name", "description", "stateful", "project_id", "tenant_id")
SG_UPDATE = ("name", "description", "stateful")
RULE_CREATE = ("security_group_id", "direction", "ethertype", "protocol", "port_range_min",
               "port_range_max", "remote_ip_prefix", "remote_group_id",
               "remote_address_group_id", "description", "project_id", "tenant_id")
RULE_READONLY = a.STANDARD + ("normalized_cidr", "belongs_to_default_sg")
# Protocols whose port range is an L4 port range, and ICMP's (type/code).
PORT_PROTOCOLS = (6, 17, 33, 132, 136)
ICMP_PROTOCOLS = (1, 58)
# What makes two rules of a group the same rule.
IDENTITY = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max",
            "remote_ip_prefix", "remote_group_id")


def default_id(project_id: str) -> str:
    return str(uuid.uuid5(DEFAULT_NS, project_id))


def rules_of(op: Op, sg_id: str) -> list[Data]:
    return sorted((r for r in op.scan("security-group-rules")
                   if r.get("security_group_id") == sg_id),
                  key=lambda r: (r.get("created_at") or "", r["id"]))


def write_native(op: Op, sg_id: str) -> None:
    """Stage the native group as the Neutron group and rules say, with its chains."""
    sg = op.get("security-groups", sg_id)
    native = tr.sg_to_native(sg, rules_of(op, sg_id))
    op.txn.sync(model.SECURITY_GROUPS, native)
    sync_sg(op.txn, sg_id)


def _rule(sg: Data, direction: str, ethertype: str, remote_group_id: str | None = None,
          **kw: Any) -> Data:
    r = {"id": a.new_id(), "security_group_id": sg["id"], "direction": direction,
         "ethertype": ethertype, "protocol": None, "port_range_min": None,
         "port_range_max": None, "remote_ip_prefix": None, "normalized_cidr": None,
         "remote_group_id": remote_group_id, "remote_address_group_id": None,
         "description": "", "belongs_to_default_sg": sg.get("name") == DEFAULT}
    r.update(kw)
    return a.stamp_new(r, sg["project_id"])


def _new_group(op: Op, sg_id: str, project_id: str, name: str, description: str,
               *, default: bool) -> Data:
    sg = {"id": sg_id, "name": name, "description": description, "stateful": True}
    a.stamp_new(sg, project_id)
    op.txn.create(SG_KIND, sg)
    rules = [_rule(sg, "egress", "IPv4"), _rule(sg, "egress", "IPv6")]
    if default:
        rules += [_rule(sg, "ingress", "IPv4", sg_id), _rule(sg, "ingress", "IPv6", sg_id)]
    for r in rules:
        op.txn.create(RULE_KIND, r)
    write_native(op, sg_id)
    return sg


def ensure_default(op: Op, project_id: str) -> str:
    """The id of the project's ``default`` group, staged with Neutron's four
    default rules if it does not exist yet."""
    sid = default_id(project_id)
    if op.get("security-groups", sid) is None:
        _new_group(op, sid, project_id, DEFAULT, "Default security group", default=True)
    return sid


def find_group(op: Op, sg_id: Any, attr: str = "security_group_id") -> Data:
    sid = a.uuid_str(sg_id, attr)
    sg = op.get("security-groups", sid)
    if sg is None or not owns(op.ctx, sg):
        raise ne.SecurityGroupNotFound(f"Security group {sid} does not exist")
    return sg


class SecurityGroups(Collection):
    name = "security-groups"
    resource = "security_group"
    not_found = ne.SecurityGroupNotFound

    def prepare_list(self, op: Op) -> None:
        """A project's first list creates its default group, as Neutron does."""
        ensure_default(op, op.ctx.project_id)

    def create(self, op: Op, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, SG_CREATE, a.STANDARD + ("security_group_rules",))
        pid = a.owner(op.ctx, body, self.resource)
        name = a.string(body.get("name", "") or "", "name")
        if name == DEFAULT:
            raise ne.Conflict("Default security group already exists: the name 'default' is "
                              "reserved for the project's own default group")
        if not a.boolean(body.get("stateful", True), "stateful"):
            raise a.invalid("stateful", "stateless security groups are not supported")
        ensure_default(op, pid)  # Neutron makes the project's default group first
        return _new_group(op, a.new_id(), pid, name,
                          a.string(body.get("description", "") or "", "description",
                                   a.DESCRIPTION_MAX), default=False)

    def update(self, op: Op, obj: Data, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, SG_UPDATE, a.STANDARD + ("security_group_rules", "project_id",
                                                     "tenant_id"), post=False)
        new = dict(obj)
        if "name" in body:
            new["name"] = a.string(body["name"] or "", "name")
            if obj["name"] == DEFAULT and new["name"] != DEFAULT:
                raise ne.Conflict("Updating default security group not allowed: its name "
                                  "stays 'default'")
            if new["name"] == DEFAULT and obj["name"] != DEFAULT:
                raise ne.Conflict("The name 'default' is reserved for the project's default "
                                  "security group")
        if "description" in body:
            new["description"] = a.string(body["description"] or "", "description",
                                          a.DESCRIPTION_MAX)
        if "stateful" in body and not a.boolean(body["stateful"], "stateful"):
            raise a.invalid("stateful", "stateless security groups are not supported")
        if new == obj:
            return obj
        a.stamp_update(new)
        op.txn.put(self.kind, new)
        write_native(op, obj["id"])
        return new

    def delete(self, op: Op, obj: Data) -> None:
        sid = obj["id"]
        if obj.get("name") == DEFAULT and not op.ctx.is_admin:
            raise ne.Conflict("Insufficient rights for removing default security group.")
        if any(sid in (p.get("security_groups") or ()) for p in op.scan("ports")):
            raise ne.SecurityGroupInUse(f"Security Group {sid} in use.")
        touched = set()
        for r in list(op.scan("security-group-rules")):
            if r.get("security_group_id") == sid:
                op.txn.delete(RULE_KIND, r["id"])
            elif r.get("remote_group_id") == sid:
                op.txn.delete(RULE_KIND, r["id"])
                touched.add(r["security_group_id"])
        op.txn.delete(self.kind, sid)
        for other in sorted(touched):
            if op.get("security-groups", other) is not None:
                write_native(op, other)
        if op.txn.get(model.SECURITY_GROUPS, sid) is not None:
            refs.delete(op.txn, model.SECURITY_GROUPS, sid)

    def view(self, op_or_none: Op | None, obj: Data) -> Data:
        out = dict(obj)
        out["security_group_rules"] = ([dict(r) for r in rules_of(op_or_none, obj["id"])]
                                       if op_or_none is not None else [])
        return out


def _protocol(value: Any) -> str | None:
    if value is None or value == "any":
        return None
    if isinstance(value, str) and value.lower() in tr.PROTOCOLS:
        return value.lower()
    if isinstance(value, int | str) and not isinstance(value, bool) and \
            str(value).isdigit() and 0 <= int(value) <= 255:
        return str(int(value))
    names = sorted(tr.PROTOCOLS)
    raise ne.BadRequest(f"Security group rule protocol {value} not supported. Only protocol "
                        f"values {names} and integer representations [0 to 255] are "
                        "supported.")


def _port_range(proto: str | None, lo: Any, hi: Any) -> tuple[int | None, int | None]:
    if lo is None and hi is None:
        return None, None
    if proto is None:
        raise ne.BadRequest("Must also specify protocol if port range is given.")
    num = tr.protocol_number(proto)
    lo = None if lo is None else a.integer(lo, "port_range_min", 0, 65535)
    hi = None if hi is None else a.integer(hi, "port_range_max", 0, 65535)
    if num in ICMP_PROTOCOLS:
        for v, what in ((lo, "type (port-range-min)"), (hi, "code (port-range-max)")):
            if v is not None and v > 255:
                raise ne.BadRequest(f"Invalid value for ICMP {what} {v}. It must be 0 to 255.")
        if lo is None:
            raise ne.BadRequest(f"ICMP code (port-range-max) {hi} is provided but ICMP type "
                                "(port-range-min) is missing.")
        return lo, hi
    if num not in PORT_PROTOCOLS:
        raise ne.BadRequest(f"Invalid protocol {proto} for port range, only supported for "
                            "TCP, UDP, UDPLITE, SCTP and DCCP.")
    if lo == 0 or hi == 0:
        raise ne.BadRequest("Invalid value for port 0: a port range is 1 to 65535.")
    if lo is None or hi is None or lo > hi:
        raise ne.BadRequest("For TCP/UDP protocols, port_range_min must be <= "
                            "port_range_max (both given, 1 to 65535).")
    return lo, hi


def _prefix(value: Any, ethertype: str) -> str | None:
    if value is None:
        return None
    version = 4 if ethertype == "IPv4" else 6
    if isinstance(value, str) and "/" not in value:
        value = f"{value}/{32 if version == 4 else 128}"
    prefix = a.cidr(value, "remote_ip_prefix", None, strict=False)
    if (":" in prefix) != (version == 6):
        raise ne.BadRequest(f"Conflicting value ethertype {ethertype} for CIDR {value}")
    return prefix


def _identity(rule: Data) -> dict[str, Any]:
    """What makes two rules the same (Neutron's duplicate check: protocol by
    number, an any-address prefix as no prefix)."""
    key = {f: rule.get(f) for f in IDENTITY}
    key["protocol"] = tr.protocol_number(key["protocol"])
    if key["remote_ip_prefix"] in ("0.0.0.0/0", "::/0"):
        key["remote_ip_prefix"] = None
    return key


class SecurityGroupRules(Collection):
    name = "security-group-rules"
    resource = "security_group_rule"
    not_found = ne.SecurityGroupRuleNotFound

    def visible(self, ctx: Context, obj: Data, op: Op) -> bool:
        if ctx.is_admin or obj.get("project_id") == ctx.project_id:
            return True
        sg = op.get("security-groups", obj.get("security_group_id", ""))
        return sg is not None and sg.get("project_id") == ctx.project_id

    def create(self, op: Op, body: Any) -> Data:
        body = a.body_of(body, self.resource)
        a.check_known(body, RULE_CREATE, RULE_READONLY)
        if "security_group_id" not in body:
            raise a.invalid("security_group_id", "security_group_id is required")
        sg = find_group(op, body["security_group_id"])
        a.owner(op.ctx, body, self.resource)
        if "direction" not in body:
            raise a.invalid("direction", "direction is required")
        direction = a.one_of(body["direction"], "direction", ("ingress", "egress"))
        ethertype = a.one_of(body.get("ethertype", "IPv4") or "IPv4", "ethertype",
                             ("IPv4", "IPv6"))
        proto = _protocol(body.get("protocol"))
        lo, hi = _port_range(proto, body.get("port_range_min"), body.get("port_range_max"))
        prefix = _prefix(body.get("remote_ip_prefix"), ethertype)
        remote = body.get("remote_group_id")
        if remote is not None:
            if prefix is not None:
                raise ne.BadRequest("Only remote_ip_prefix or remote_group_id may be "
                                    "provided.")
            remote = find_group(op, remote, "remote_group_id")["id"]
            if remote != sg["id"]:
                op.txn.touch(SG_KIND, remote)  # a concurrent delete of it fails
        if body.get("remote_address_group_id") is not None:
            raise a.invalid("remote_address_group_id", "address groups are not supported")
        r = _rule(sg, direction, ethertype, remote, protocol=proto, port_range_min=lo,
                  port_range_max=hi, remote_ip_prefix=prefix, normalized_cidr=prefix,
                  description=a.string(body.get("description", "") or "", "description",
                                       a.DESCRIPTION_MAX))
        key = _identity(r)
        for other in rules_of(op, sg["id"]):
            if _identity(other) == key:
                raise ne.SecurityGroupRuleExists(f"Security group rule already exists. Rule "
                                                 f"id is {other['id']}.")
        op.txn.create(self.kind, r)
        op.txn.touch(SG_KIND, sg["id"])  # serialises the duplicate check per group
        write_native(op, sg["id"])
        return r

    def delete(self, op: Op, obj: Data) -> None:
        sg = op.get("security-groups", obj["security_group_id"])
        if sg is not None and not (op.ctx.is_admin or sg.get("project_id") ==
                                   op.ctx.project_id):
            raise a.policy("delete", self.resource)
        op.txn.delete(self.kind, obj["id"])
        if sg is not None:
            op.txn.touch(SG_KIND, sg["id"])
            write_native(op, sg["id"])


register(SecurityGroups())
register(SecurityGroupRules())
