"""Commands for chains, rules, port groups, IP address groups and security groups."""

from __future__ import annotations

import argparse
import re

from midoflow import model
from midoflow.cli import render
from midoflow.cli.base import Context, UsageError, arg, command, exclusive, group
from midoflow.cli.columns import PROTOCOL_NAMES, PROTOCOLS, columns, range_text, show_order
from midoflow.cli.common import IF_VERSION, _deleted
from midoflow.cli.render import col
from midoflow.model import FRAG_POLICIES, RULE_ACTIONS, RULE_CONDITIONS, RULE_JUMP

ETH_TYPES = {"ip": 0x0800, "ipv4": 0x0800, "arp": 0x0806}
_IP = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"


# ------------------------------------------------------------------ parsing
def parse_range(value: str, flag: str) -> list[int]:
    """``80`` -> [80, 80]; ``80-90`` -> [80, 90] (the API checks the bounds)."""
    m = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", value)
    if not m:
        raise UsageError(f"{flag} wants PORT or LOW-HIGH, e.g. 80 or 1024-65535, not {value!r}")
    lo = int(m.group(1))
    return [lo, int(m.group(2)) if m.group(2) else lo]


def parse_protocol(value: str, flag: str = "--nw-proto") -> int:
    if value.lower() in PROTOCOLS:
        return PROTOCOLS[value.lower()]
    if value.isascii() and value.isdigit():
        return int(value)
    raise UsageError(f"{flag} wants tcp, udp, icmp or a protocol number, not {value!r}")


def parse_eth_type(value: str) -> int:
    if value.lower() in ETH_TYPES:
        return ETH_TYPES[value.lower()]
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f"--eth-type wants ip, arp or a number (e.g. 0x0800), not {value!r}") \
            from None


def parse_nat_target(value: str) -> dict:
    """``ADDR[-ADDR][:PORT[-PORT]]`` -> a NAT target."""
    m = re.fullmatch(rf"({_IP})(?:-({_IP}))?(?::([0-9]{{1,5}})(?:-([0-9]{{1,5}}))?)?", value)
    if not m:
        raise UsageError("--nat-target wants ADDRESS[-ADDRESS][:PORT[-PORT]], e.g. "
                         f"203.0.113.5 or 203.0.113.5-203.0.113.9:1024-65535, not {value!r}")
    lo, hi, plo, phi = m.groups()
    target: dict = {"addr_from": lo, "addr_to": hi or lo}
    if plo is not None:
        target["port_from"] = int(plo)
        target["port_to"] = int(phi) if phi is not None else int(plo)
    return target


# ------------------------------------------------------------------- chains
group("chain", "rule chains: the filters of ports, bridges and routers (chains named sg-* "
      "and port-* are generated from security groups and port security)")

CHAIN_COLS = columns(model.CHAINS)
CHAIN_ORDER = show_order(model.CHAINS)
RULE_COLS = columns(model.RULES)
RULE_ORDER = show_order(model.RULES)


def chain_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("chains", ref, "chain")


@command("chain", "list", "list chains", [
    arg("--tenant", help="only this tenant's chains"),
    arg("--user", action="store_true", help="hide the generated chains"),
])
def chain_list(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get("/chains", tenant_id=a.tenant)
    if a.user:
        rows = [c for c in rows if not c.get("generated")]
    ctx.emit(rows, lambda rs: render.table(rs, CHAIN_COLS))


@command("chain", "show", "show one chain and its rules", [arg("chain", help="chain id or name")])
def chain_show(ctx: Context, a: argparse.Namespace) -> None:
    cid = chain_id(ctx, a.chain)
    obj = ctx.client.get(f"/chains/{cid}")
    if ctx.json:
        ctx.emit(obj)
        return
    rules = ctx.client.get(f"/chains/{cid}/rules")
    text = render.details(obj, CHAIN_ORDER)
    if rules:
        text += "\n\n" + _rules_table(rules)
    ctx.out(text)


def _rules_table(rules: list[dict]) -> str:
    rows = [dict(r, position=i) for i, r in enumerate(rules, 1)]
    return render.table(rows, RULE_COLS)


@command("chain", "create", "create a chain", [
    arg("--name", required=True),
    arg("--tenant", help="owning tenant id"),
])
def chain_create(ctx: Context, a: argparse.Namespace) -> None:
    body = {"name": a.name}
    if a.tenant is not None:
        body["tenant_id"] = a.tenant
    ctx.emit(ctx.client.post("/chains", body), lambda o: render.details(o, CHAIN_ORDER))


@command("chain", "update", "rename a chain or change its tenant", [
    arg("chain", help="chain id or name"),
    arg("--name"),
    arg("--tenant", dest="tenant_id"),
    IF_VERSION,
])
def chain_update(ctx: Context, a: argparse.Namespace) -> None:
    body = {k: getattr(a, k) for k in ("name", "tenant_id") if getattr(a, k) is not None}
    if not body:
        raise UsageError("nothing to update: give at least one of --name, --tenant")
    if a.version is not None:
        body["version"] = a.version
    obj = ctx.client.put(f"/chains/{chain_id(ctx, a.chain)}", body)
    ctx.emit(obj, lambda o: render.details(o, CHAIN_ORDER))


@command("chain", "delete", "delete a chain and its rules (it must not be in use)",
         [arg("chain", help="chain id or name")])
def chain_delete(ctx: Context, a: argparse.Namespace) -> None:
    cid = chain_id(ctx, a.chain)
    ctx.client.delete(f"/chains/{cid}")
    _deleted(ctx, "chain", cid)


@command("chain", "rules", "a chain's rules, in order", [arg("chain", help="chain id or name")])
def chain_rules(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/chains/{chain_id(ctx, a.chain)}/rules")
    ctx.emit(rows, _rules_table)


# -------------------------------------------------------------------- rules
group("rule", "rules of chains")

RULE_ARGS = [
    arg("--action", choices=RULE_ACTIONS, help="what a matching packet gets (default jump "
        "with --jump)"),
    arg("--jump", metavar="CHAIN", help="the chain to jump to (id or name)"),
    arg("--position", type=int, metavar="N", help="1-based place in the chain (default last)"),
    arg("--in-port", action="append", metavar="PORT", help="entered through this port "
        "(repeatable)"),
    arg("--out-port", action="append", metavar="PORT", help="leaves through this port "
        "(repeatable)"),
    arg("--port-group", metavar="GROUP", help="entered through a port of this port group"),
    arg("--src-group", metavar="GROUP", help="source address in this IP address group"),
    arg("--dst-group", metavar="GROUP", help="destination address in this IP address group"),
    arg("--eth-type", help="ip, arp or a number (e.g. 0x0800)"),
    arg("--eth-src", metavar="MAC"),
    arg("--eth-dst", metavar="MAC"),
    arg("--nw-src", metavar="CIDR", help="source network, e.g. 10.0.0.0/8"),
    arg("--nw-dst", metavar="CIDR", help="destination network"),
    arg("--nw-proto", metavar="PROTO", help="tcp, udp, icmp or a number"),
    arg("--nw-tos", type=int, metavar="TOS"),
    arg("--tp-src", metavar="PORT[-PORT]", help="source port(s), or the ICMP type"),
    arg("--tp-dst", metavar="PORT[-PORT]", help="destination port(s), or the ICMP code"),
    exclusive(
        arg("--forward-flow", action="store_true", help="only the first direction of a "
            "connection"),
        arg("--return-flow", action="store_true", help="only replies of a tracked connection"),
    ),
    arg("--fragment-policy", choices=FRAG_POLICIES),
    arg("--invert", action="append", choices=RULE_CONDITIONS, metavar="CONDITION",
        help="invert this condition (repeatable), e.g. nw_src"),
    arg("--nat-target", action="append", metavar="ADDR[-ADDR][:PORT[-PORT]]",
        help="dnat/snat target (repeatable), e.g. 203.0.113.5:1024-65535"),
]


def rule_body(ctx: Context, a: argparse.Namespace) -> dict:
    action = a.action
    if a.jump is not None:
        if action not in (None, RULE_JUMP):
            raise UsageError(f"--jump makes a jump rule: drop --action {action}")
        action = RULE_JUMP
    if action is None:
        raise UsageError("give --action (or --jump CHAIN)")
    body: dict = {"action": action}
    if a.jump is not None:
        body["jump_chain_id"] = chain_id(ctx, a.jump)
    if a.position is not None:
        body["position"] = a.position
    if a.in_port:
        body["in_ports"] = [ctx.client.resolve("ports", p, "port") for p in a.in_port]
    if a.out_port:
        body["out_ports"] = [ctx.client.resolve("ports", p, "port") for p in a.out_port]
    if a.port_group is not None:
        body["port_group"] = port_group_id(ctx, a.port_group)
    if a.src_group is not None:
        body["ip_addr_group_src"] = ip_group_id(ctx, a.src_group)
    if a.dst_group is not None:
        body["ip_addr_group_dst"] = ip_group_id(ctx, a.dst_group)
    if a.eth_type is not None:
        body["eth_type"] = parse_eth_type(a.eth_type)
    for f in ("eth_src", "eth_dst", "nw_src", "nw_dst", "nw_tos", "fragment_policy"):
        if getattr(a, f) is not None:
            body[f] = getattr(a, f)
    if a.nw_proto is not None:
        body["nw_proto"] = parse_protocol(a.nw_proto)
    if a.tp_src is not None:
        body["tp_src"] = parse_range(a.tp_src, "--tp-src")
    if a.tp_dst is not None:
        body["tp_dst"] = parse_range(a.tp_dst, "--tp-dst")
    if a.forward_flow:
        body["match_forward_flow"] = True
    if a.return_flow:
        body["match_return_flow"] = True
    if a.invert:
        body["invert"] = list(dict.fromkeys(a.invert))
    if a.nat_target:
        body["nat_targets"] = [parse_nat_target(t) for t in a.nat_target]
    return body


def rule_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("rules", ref, "rule")


@command("rule", "create", "add a rule to a chain", [arg("chain", help="chain id or name"),
                                                      *RULE_ARGS])
def rule_create(ctx: Context, a: argparse.Namespace) -> None:
    cid = chain_id(ctx, a.chain)
    obj = ctx.client.post(f"/chains/{cid}/rules", rule_body(ctx, a))
    ctx.emit(obj, lambda o: render.details(o, RULE_ORDER))


@command("rule", "list", "a chain's rules, in order", [arg("chain", help="chain id or name")])
def rule_list(ctx: Context, a: argparse.Namespace) -> None:
    chain_rules(ctx, a)


@command("rule", "show", "show one rule", [arg("rule", help="rule id")])
def rule_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/rules/{rule_id(ctx, a.rule)}")
    ctx.emit(obj, lambda o: render.details(o, RULE_ORDER))


@command("rule", "delete", "delete a rule", [arg("rule", help="rule id")])
def rule_delete(ctx: Context, a: argparse.Namespace) -> None:
    rid = rule_id(ctx, a.rule)
    ctx.client.delete(f"/rules/{rid}")
    _deleted(ctx, "rule", rid)


# -------------------------------------------------------------- port groups
group("port-group", "groups of ports, for rules (a stateful group shares flow state)")

PG_COLS = columns(model.PORT_GROUPS)
PG_ORDER = show_order(model.PORT_GROUPS)


def port_group_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("port_groups", ref, "port group")


@command("port-group", "list", "list port groups", [arg("--tenant")])
def pg_list(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get("/port_groups", tenant_id=a.tenant)
    ctx.emit(rows, lambda rs: render.table(rs, PG_COLS))


@command("port-group", "show", "show one port group", [arg("group", help="id or name")])
def pg_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/port_groups/{port_group_id(ctx, a.group)}")
    ctx.emit(obj, lambda o: render.details(o, PG_ORDER))


@command("port-group", "create", "create a port group", [
    arg("--name", required=True),
    arg("--tenant"),
    arg("--stateful", action="store_true", help="members share the flow state of connections"),
])
def pg_create(ctx: Context, a: argparse.Namespace) -> None:
    body: dict = {"name": a.name, "stateful": a.stateful}
    if a.tenant is not None:
        body["tenant_id"] = a.tenant
    ctx.emit(ctx.client.post("/port_groups", body), lambda o: render.details(o, PG_ORDER))


@command("port-group", "update", "change a port group", [
    arg("group", help="id or name"),
    arg("--name"),
    arg("--tenant", dest="tenant_id"),
    exclusive(arg("--stateful", dest="stateful", action="store_const", const=True),
              arg("--stateless", dest="stateful", action="store_const", const=False)),
    IF_VERSION,
])
def pg_update(ctx: Context, a: argparse.Namespace) -> None:
    body = {k: getattr(a, k) for k in ("name", "tenant_id", "stateful")
            if getattr(a, k) is not None}
    if not body:
        raise UsageError("nothing to update: give at least one of --name, --tenant, "
                         "--stateful, --stateless")
    if a.version is not None:
        body["version"] = a.version
    obj = ctx.client.put(f"/port_groups/{port_group_id(ctx, a.group)}", body)
    ctx.emit(obj, lambda o: render.details(o, PG_ORDER))


@command("port-group", "delete", "delete a port group", [arg("group", help="id or name")])
def pg_delete(ctx: Context, a: argparse.Namespace) -> None:
    gid = port_group_id(ctx, a.group)
    ctx.client.delete(f"/port_groups/{gid}")
    _deleted(ctx, "port group", gid)


@command("port-group", "ports", "the ports of a port group", [arg("group", help="id or name")])
def pg_ports(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/port_groups/{port_group_id(ctx, a.group)}/ports")
    ctx.emit(rows, lambda rs: render.table(rs, columns(model.PORTS)))


@command("port-group", "add-port", "add a port to a port group", [
    arg("group", help="id or name"),
    arg("--port", required=True, help="port id or name"),
])
def pg_add_port(ctx: Context, a: argparse.Namespace) -> None:
    gid = port_group_id(ctx, a.group)
    pid = ctx.client.resolve("ports", a.port, "port")
    obj = ctx.client.post(f"/port_groups/{gid}/ports", {"port_id": pid})
    ctx.emit(obj, f"added port {pid} to port group {gid}")


@command("port-group", "remove-port", "remove a port from a port group", [
    arg("group", help="id or name"),
    arg("--port", required=True, help="port id or name"),
])
def pg_remove_port(ctx: Context, a: argparse.Namespace) -> None:
    gid = port_group_id(ctx, a.group)
    pid = ctx.client.resolve("ports", a.port, "port")
    obj = ctx.client.delete(f"/port_groups/{gid}/ports/{pid}")
    ctx.emit(obj, f"removed port {pid} from port group {gid}")


# ------------------------------------------------------- IP address groups
group("ip-group", "IP address groups, for rules (sg-* groups are generated from security "
      "groups)")

IPG_COLS = columns(model.IP_ADDR_GROUPS)
IPG_ORDER = show_order(model.IP_ADDR_GROUPS)


def ip_group_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("ip_addr_groups", ref, "IP address group")


@command("ip-group", "list", "list IP address groups", [arg("--tenant")])
def ipg_list(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get("/ip_addr_groups", tenant_id=a.tenant)
    ctx.emit(rows, lambda rs: render.table(rs, IPG_COLS))


@command("ip-group", "show", "show one IP address group", [arg("group", help="id or name")])
def ipg_show(ctx: Context, a: argparse.Namespace) -> None:
    obj = ctx.client.get(f"/ip_addr_groups/{ip_group_id(ctx, a.group)}")
    ctx.emit(obj, lambda o: render.details(o, IPG_ORDER))


@command("ip-group", "create", "create an IP address group", [
    arg("--name", required=True),
    arg("--tenant"),
    arg("--address", action="append", metavar="IP", help="an address (repeatable)"),
])
def ipg_create(ctx: Context, a: argparse.Namespace) -> None:
    body: dict = {"name": a.name, "addresses": a.address or []}
    if a.tenant is not None:
        body["tenant_id"] = a.tenant
    ctx.emit(ctx.client.post("/ip_addr_groups", body), lambda o: render.details(o, IPG_ORDER))


@command("ip-group", "update", "rename an IP address group or change its tenant", [
    arg("group", help="id or name"),
    arg("--name"),
    arg("--tenant", dest="tenant_id"),
    IF_VERSION,
])
def ipg_update(ctx: Context, a: argparse.Namespace) -> None:
    body = {k: getattr(a, k) for k in ("name", "tenant_id") if getattr(a, k) is not None}
    if not body:
        raise UsageError("nothing to update: give at least one of --name, --tenant")
    if a.version is not None:
        body["version"] = a.version
    obj = ctx.client.put(f"/ip_addr_groups/{ip_group_id(ctx, a.group)}", body)
    ctx.emit(obj, lambda o: render.details(o, IPG_ORDER))


@command("ip-group", "delete", "delete an IP address group", [arg("group", help="id or name")])
def ipg_delete(ctx: Context, a: argparse.Namespace) -> None:
    gid = ip_group_id(ctx, a.group)
    ctx.client.delete(f"/ip_addr_groups/{gid}")
    _deleted(ctx, "IP address group", gid)


@command("ip-group", "add-address", "add an address to an IP address group", [
    arg("group", help="id or name"),
    arg("--address", required=True, metavar="IP"),
])
def ipg_add(ctx: Context, a: argparse.Namespace) -> None:
    gid = ip_group_id(ctx, a.group)
    obj = ctx.client.post(f"/ip_addr_groups/{gid}/addresses", {"address": a.address})
    ctx.emit(obj, f"added {a.address} to IP address group {gid}")


@command("ip-group", "remove-address", "remove an address from an IP address group", [
    arg("group", help="id or name"),
    arg("--address", required=True, metavar="IP"),
])
def ipg_remove(ctx: Context, a: argparse.Namespace) -> None:
    gid = ip_group_id(ctx, a.group)
    obj = ctx.client.delete(f"/ip_addr_groups/{gid}/addresses/{a.address}")
    ctx.emit(obj, f"removed {a.address} from IP address group {gid}")


# --------------------------------------------------------- security groups
group("security-group", "Neutron security groups (kept as generated chains); attach them "
      "with 'port update --security-group'")

SG_COLS = columns(model.SECURITY_GROUPS)
SG_ORDER = show_order(model.SECURITY_GROUPS)


def _sg_proto(r: dict) -> str:
    p = r.get("protocol")
    return "any" if p is None else PROTOCOL_NAMES.get(p, str(p))


def _sg_ports(r: dict) -> str | None:
    lo, hi = r.get("port_range_min"), r.get("port_range_max")
    if lo is None:
        return None
    if r.get("protocol") == PROTOCOLS["icmp"]:
        return f"type {lo} code {hi}"
    return range_text([lo, hi])


SG_RULE_COLS = [
    col("ID", "id"),
    col("DIRECTION", "direction"),
    col("ETHERTYPE", "ethertype"),
    col("PROTOCOL", _sg_proto),
    col("PORTS", _sg_ports),
    col("REMOTE", lambda r: r.get("remote_ip_prefix") or
        (f"group {r['remote_group_id']}" if r.get("remote_group_id") else "any")),
]


def sg_id(ctx: Context, ref: str) -> str:
    return ctx.client.resolve("security_groups", ref, "security group")


@command("security-group", "list", "list security groups", [arg("--tenant")])
def sg_list(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get("/security_groups", tenant_id=a.tenant)
    ctx.emit(rows, lambda rs: render.table(rs, SG_COLS))


def _sg_text(obj: dict) -> str:
    head = {k: v for k, v in obj.items() if k != "rules"}
    text = render.details(head, SG_ORDER)
    if obj.get("rules"):
        text += "\n\n" + render.table(obj["rules"], SG_RULE_COLS)
    return text


@command("security-group", "show", "show a security group and its rules",
         [arg("group", help="id or name")])
def sg_show(ctx: Context, a: argparse.Namespace) -> None:
    ctx.emit(ctx.client.get(f"/security_groups/{sg_id(ctx, a.group)}"), _sg_text)


@command("security-group", "create", "create a security group (with Neutron's default "
         "rule: egress to anywhere)", [
    arg("--name", required=True),
    arg("--tenant"),
    arg("--description"),
])
def sg_create(ctx: Context, a: argparse.Namespace) -> None:
    body: dict = {"name": a.name}
    if a.tenant is not None:
        body["tenant_id"] = a.tenant
    if a.description is not None:
        body["description"] = a.description
    ctx.emit(ctx.client.post("/security_groups", body), _sg_text)


@command("security-group", "update", "change a security group", [
    arg("group", help="id or name"),
    arg("--name"),
    arg("--tenant", dest="tenant_id"),
    arg("--description"),
    IF_VERSION,
])
def sg_update(ctx: Context, a: argparse.Namespace) -> None:
    body = {k: getattr(a, k) for k in ("name", "tenant_id", "description")
            if getattr(a, k) is not None}
    if not body:
        raise UsageError("nothing to update: give at least one of --name, --tenant, "
                         "--description")
    if a.version is not None:
        body["version"] = a.version
    ctx.emit(ctx.client.put(f"/security_groups/{sg_id(ctx, a.group)}", body), _sg_text)


@command("security-group", "delete", "delete a security group (no port may use it)",
         [arg("group", help="id or name")])
def sg_delete(ctx: Context, a: argparse.Namespace) -> None:
    gid = sg_id(ctx, a.group)
    ctx.client.delete(f"/security_groups/{gid}")
    _deleted(ctx, "security group", gid)


@command("security-group", "rules", "a security group's rules", [arg("group", help="id or name")])
def sg_rules(ctx: Context, a: argparse.Namespace) -> None:
    rows = ctx.client.get(f"/security_groups/{sg_id(ctx, a.group)}/rules")
    ctx.emit(rows, lambda rs: render.table(rs, SG_RULE_COLS))


@command("security-group", "rule-add", "allow traffic to (ingress) or from (egress) the "
         "group's ports", [
    arg("group", help="id or name"),
    arg("--direction", required=True, choices=("ingress", "egress")),
    arg("--protocol", help="tcp, udp, icmp or a number (default: any)"),
    arg("--port", metavar="PORT[-PORT]", help="TCP/UDP destination port(s)"),
    arg("--icmp-type", type=int, metavar="TYPE"),
    arg("--icmp-code", type=int, metavar="CODE"),
    exclusive(
        arg("--remote-ip", metavar="CIDR", help="from/to this network only"),
        arg("--remote-group", metavar="GROUP", help="from/to the ports of this security "
            "group only"),
    ),
    arg("--ethertype", default="IPv4", help="IPv4 (the only one supported)"),
])
def sg_rule_add(ctx: Context, a: argparse.Namespace) -> None:
    gid = sg_id(ctx, a.group)
    body: dict = {"direction": a.direction, "ethertype": a.ethertype}
    if a.protocol is not None:
        body["protocol"] = parse_protocol(a.protocol, "--protocol")
    if a.port is not None and (a.icmp_type is not None or a.icmp_code is not None):
        raise UsageError("--port is for TCP/UDP, --icmp-type/--icmp-code for ICMP: not both")
    if a.port is not None:
        body["port_range_min"], body["port_range_max"] = parse_range(a.port, "--port")
    if (a.icmp_type is None) != (a.icmp_code is None):
        raise UsageError("give --icmp-type and --icmp-code together")
    if a.icmp_type is not None:
        body["port_range_min"], body["port_range_max"] = a.icmp_type, a.icmp_code
    if a.remote_ip is not None:
        body["remote_ip_prefix"] = a.remote_ip
    if a.remote_group is not None:
        body["remote_group_id"] = sg_id(ctx, a.remote_group)
    obj = ctx.client.post(f"/security_groups/{gid}/rules", body)
    ctx.emit(obj, lambda o: render.details(o))


@command("security-group", "rule-delete", "delete a rule of a security group", [
    arg("group", help="id or name"),
    arg("rule", help="rule id"),
])
def sg_rule_delete(ctx: Context, a: argparse.Namespace) -> None:
    gid = sg_id(ctx, a.group)
    ctx.client.delete(f"/security_groups/{gid}/rules/{a.rule}")
    _deleted(ctx, "security group rule", a.rule)
