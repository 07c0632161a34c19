"""Security groups expressed as chains: the translation, as pure functions over dicts.

MidoNet's Neutron plugin turned every security group and every protected port
into chains, rules and IP address groups; the simulation only knows chains.
This module computes, from a security group or a port (plain store dicts),
exactly the objects that must exist for it. The service writes them in the
same commit as the change that affects them (see
:func:`midoflow.service.sync.sync_sg` and ``sync_port``), and
the integrity checks compare the store against :func:`expected`.

Generated objects have version-5 UUIDs derived from their owner's id (users
cannot create objects with such ids), so "generated" is a property of the id.

Per security group ``SG`` (name ``N``):

* IP address group ``sg_ipag_id(SG)``, named ``sg-N``: the fixed IPs of every
  port that has ``SG``, sorted.
* Chains ``sg_chain_id(SG, "ingress")`` / ``"egress"``, named
  ``sg-N-ingress`` / ``sg-N-egress``: one ACCEPT rule per rule of that
  direction, in the group's order, with ``eth_type`` 0x0800 and: protocol as
  ``nw_proto``; a TCP/UDP port range as ``tp_dst`` [min, max]; an ICMP
  type/code as ``tp_src`` [type, type] and ``tp_dst`` [code, code];
  ``remote_ip_prefix`` as ``nw_src`` (ingress) or ``nw_dst`` (egress);
  ``remote_group_id`` as ``ip_addr_group_src`` (ingress) or
  ``ip_addr_group_dst`` (egress), the remote group's address group.

Per port ``P`` with security groups or port security (chains named
``port-P-inbound`` etc.; inbound is what comes FROM the VM):

* inbound: [JUMP anti-spoof, if port security] · ACCEPT ARP (eth_type 0x0806)
  · ACCEPT return flows · CONTINUE forward flows (tracks the connection) ·
  JUMP to each group's egress chain · DROP
* outbound: ACCEPT return flows · ACCEPT ARP · CONTINUE forward flows · JUMP to
  each group's ingress chain · DROP
* anti-spoof (port security only): RETURN for each allowed (MAC, IPv4 source)
  pair (the port's MAC with each fixed IP; each allowed address pair with its
  MAC, or the port's); RETURN ARP from each such pair (``eth_src`` the MAC,
  ``nw_src`` the address: the chains match an ARP frame's sender address,
  SPA, as ``nw_src``; the simulation itself drops an ARP frame of a protected
  port whose sender MAC is not its Ethernet source); then for each allowed
  MAC: RETURN an ARP probe (SPA 0.0.0.0, RFC 5227) from it, RETURN DHCP
  (UDP 68 -> 67 from 0.0.0.0) from it; then DROP. As Neutron's OVS firewall:
  no ARP that would claim another VM's address reaches a router or a neighbour.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import netaddr

from midoflow import model

Data = dict[str, Any]

# All generated ids are uuid5(NAMESPACE, "<what>:<owner id>[:...]").
NAMESPACE = model.GENERATED_NAMESPACE
ETH_IP = 0x0800
ETH_ARP = 0x0806
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTOCOL_NAMES = {"icmp": PROTO_ICMP, "tcp": PROTO_TCP, "udp": PROTO_UDP}
# Protocols whose port_range_min/max are L4 ports (Neutron: TCP, UDP, DCCP,
# SCTP, UDP-Lite); for ICMP they are type and code.
PORT_PROTOCOLS = (PROTO_TCP, PROTO_UDP, 33, 132, 136)
DIRECTIONS = ("ingress", "egress")
PORT_CHAINS = ("inbound", "outbound", "anti-spoof")

RULE_FIELDS = ("id", "chain_id", "action", "jump_chain_id", "in_ports", "out_ports",
               "port_group", "ip_addr_group_src", "ip_addr_group_dst", "eth_type", "eth_src",
               "eth_dst", "nw_src", "nw_dst", "nw_proto", "nw_tos", "tp_src", "tp_dst",
               "match_forward_flow", "match_return_flow", "fragment_policy", "invert",
               "nat_targets")
RULE_DEFAULTS: Data = {
    "jump_chain_id": None, "in_ports": [], "out_ports": [], "port_group": None,
    "ip_addr_group_src": None, "ip_addr_group_dst": None, "eth_type": None, "eth_src": None,
    "eth_dst": None, "nw_src": None, "nw_dst": None, "nw_proto": None, "nw_tos": None,
    "tp_src": None, "tp_dst": None, "match_forward_flow": False, "match_return_flow": False,
    "fragment_policy": model.FRAG_ANY, "invert": [], "nat_targets": [],
}


gen_id = model.generated_id


def is_generated(oid: Any) -> bool:
    """Whether an id is one the service derives (a version-5 UUID)."""
    try:
        return isinstance(oid, str) and uuid.UUID(oid).version == 5
    except ValueError:
        return False


def sg_ipag_id(sg_id: str) -> str:
    return gen_id("sg-ipag", sg_id)


def sg_chain_id(sg_id: str, direction: str) -> str:
    return gen_id("sg-chain", direction, sg_id)


port_chain_id = model.port_chain_id


def sg_ids(sg_id: str) -> dict[str, str]:
    """The generated objects of a security group, as shown in its JSON."""
    return {"ip_addr_group_id": sg_ipag_id(sg_id),
            "ingress_chain_id": sg_chain_id(sg_id, "ingress"),
            "egress_chain_id": sg_chain_id(sg_id, "egress")}


def rule(chain_id: str, key: str, action: str, **conds: Any) -> Data:
    """A complete rule dict (every field of model.Rule) with a derived id."""
    r = {"id": gen_id("rule", chain_id, key), "chain_id": chain_id, "action": action}
    r.update({k: (list(v) if isinstance(v, list) else v) for k, v in RULE_DEFAULTS.items()})
    r.update(conds)
    return r


def _ip_key(addr: str) -> int:
    return int(netaddr.IPAddress(addr))


# ------------------------------------------------------------ security groups
def sg_label(sg: Data) -> str:
    return sg.get("name") or sg["id"]


def sg_rule_to_rule(sg_id: str, chain_id: str, r: Data) -> Data:
    conds: Data = {"eth_type": ETH_IP}
    proto = r.get("protocol")
    if proto is not None:
        conds["nw_proto"] = proto
    lo, hi = r.get("port_range_min"), r.get("port_range_max")
    if lo is not None and hi is not None:
        if proto == PROTO_ICMP:
            conds["tp_src"] = [lo, lo]
            conds["tp_dst"] = [hi, hi]
        else:
            conds["tp_dst"] = [lo, hi]
    elif lo is not None and proto == PROTO_ICMP:
        conds["tp_src"] = [lo, lo]  # an ICMP type, any code (Neutron's type-only rule)
    ingress = r["direction"] == "ingress"
    if r.get("remote_ip_prefix"):
        conds["nw_src" if ingress else "nw_dst"] = r["remote_ip_prefix"]
    if r.get("remote_group_id"):
        conds["ip_addr_group_src" if ingress else "ip_addr_group_dst"] = \
            sg_ipag_id(r["remote_group_id"])
    return rule(chain_id, f"sg-rule:{sg_id}:{r['id']}", model.RULE_ACCEPT, **conds)


def sg_objects(sg: Data, members: Iterable[Data]) -> tuple[Data, list[tuple[Data, list[Data]]]]:
    """(address group, [(chain, rules), ...]) of a security group whose member
    ports are ``members``."""
    sid = sg["id"]
    addrs = sorted({ip for p in members for ip in p.get("fixed_ips") or ()}, key=_ip_key)
    ipag = {"id": sg_ipag_id(sid), "name": f"sg-{sg_label(sg)}",
            "tenant_id": sg.get("tenant_id", ""), "addresses": addrs}
    chains = []
    for direction in DIRECTIONS:
        cid = sg_chain_id(sid, direction)
        rules = [sg_rule_to_rule(sid, cid, r) for r in sg.get("rules") or ()
                 if r.get("direction") == direction]
        chain = {"id": cid, "name": f"sg-{sg_label(sg)}-{direction}",
                 "tenant_id": sg.get("tenant_id", ""), "rule_ids": [r["id"] for r in rules]}
        chains.append((chain, rules))
    return ipag, chains


# ---------------------------------------------------------------------- ports
def port_managed(port: Data) -> bool:
    """Whether the service keeps filter chains for the port."""
    return bool(port.get("security_group_ids")) or bool(port.get("port_security_enabled"))


def allowed_pairs(port: Data) -> list[tuple[str, str]]:
    """(MAC, IPv4 address or CIDR) the port may send from, in order, unique."""
    mac = port.get("mac")
    out: list[tuple[str, str]] = []
    for ip in port.get("fixed_ips") or ():
        if mac:
            out.append((mac, ip))
    for pair in port.get("allowed_address_pairs") or ():
        pmac = pair.get("mac_address") or mac
        if pmac:
            out.append((pmac, pair["ip_address"]))
    return list(dict.fromkeys(out))


def _host_cidr(ip: str) -> str:
    return ip if "/" in ip else f"{ip}/32"


def port_objects(port: Data, tenant_id: str = "") -> list[tuple[Data, list[Data]]]:
    """[(chain, rules), ...] the port needs: none for an unprotected port."""
    if not port_managed(port):
        return []
    pid = port["id"]
    ids = {w: port_chain_id(pid, w) for w in PORT_CHAINS}
    sgs = list(port.get("security_group_ids") or ())
    out = []

    def chain(which: str, rules: list[Data]) -> tuple[Data, list[Data]]:
        return ({"id": ids[which], "name": f"port-{pid}-{which}", "tenant_id": tenant_id,
                 "rule_ids": [r["id"] for r in rules]}, rules)

    cin = ids["inbound"]
    inbound = []
    if port.get("port_security_enabled"):
        inbound.append(rule(cin, "anti-spoof", model.RULE_JUMP,
                            jump_chain_id=ids["anti-spoof"]))
    inbound += [
        rule(cin, "arp", model.RULE_ACCEPT, eth_type=ETH_ARP),
        rule(cin, "return-flow", model.RULE_ACCEPT, match_return_flow=True),
        rule(cin, "forward-flow", model.RULE_CONTINUE, match_forward_flow=True),
    ]
    inbound += [rule(cin, f"sg:{s}", model.RULE_JUMP, jump_chain_id=sg_chain_id(s, "egress"))
                for s in sgs]
    inbound.append(rule(cin, "drop", model.RULE_DROP))
    out.append(chain("inbound", inbound))

    cout = ids["outbound"]
    outbound = [
        rule(cout, "return-flow", model.RULE_ACCEPT, match_return_flow=True),
        rule(cout, "arp", model.RULE_ACCEPT, eth_type=ETH_ARP),
        rule(cout, "forward-flow", model.RULE_CONTINUE, match_forward_flow=True),
    ]
    outbound += [rule(cout, f"sg:{s}", model.RULE_JUMP,
                      jump_chain_id=sg_chain_id(s, "ingress")) for s in sgs]
    outbound.append(rule(cout, "drop", model.RULE_DROP))
    out.append(chain("outbound", outbound))

    if port.get("port_security_enabled"):
        cas = ids["anti-spoof"]
        pairs = allowed_pairs(port)
        spoof = [rule(cas, f"ip:{m}:{ip}", model.RULE_RETURN, eth_src=m, eth_type=ETH_IP,
                      nw_src=_host_cidr(ip)) for m, ip in pairs]
        spoof += [rule(cas, f"arp:{m}:{ip}", model.RULE_RETURN, eth_src=m, eth_type=ETH_ARP,
                       nw_src=_host_cidr(ip)) for m, ip in pairs]
        macs = list(dict.fromkeys([port["mac"]] + [m for m, _ in pairs]))
        for m in macs:
            spoof.append(rule(cas, f"arp-probe:{m}", model.RULE_RETURN, eth_src=m,
                              eth_type=ETH_ARP, nw_src="0.0.0.0/32"))
            spoof.append(rule(cas, f"dhcp:{m}", model.RULE_RETURN, eth_src=m, eth_type=ETH_IP,
                              nw_src="0.0.0.0/32", nw_proto=PROTO_UDP, tp_src=[68, 68],
                              tp_dst=[67, 67]))
        spoof.append(rule(cas, "drop", model.RULE_DROP))
        out.append(chain("anti-spoof", spoof))
    return out


def port_filters(port: Data) -> tuple[str | None, str | None]:
    """(inbound, outbound) filter ids of a managed port."""
    return port_chain_id(port["id"], "inbound"), port_chain_id(port["id"], "outbound")


# ------------------------------------------------------------------ expected
def expected(models: Mapping[str, Mapping[str, Data]]) -> dict[tuple[str, str], Data]:
    """Every generated object the topology ``models`` (kind -> id -> dict) must
    hold, by (kind, id): what the integrity checks compare the store against."""
    ports = models.get(model.PORTS, {})
    bridges = models.get(model.BRIDGES, {})
    out: dict[tuple[str, str], Data] = {}

    def add(chains: list[tuple[Data, list[Data]]]) -> None:
        for chain, rules in chains:
            out[(model.CHAINS, chain["id"])] = chain
            for r in rules:
                out[(model.RULES, r["id"])] = r

    for sid, sg in models.get(model.SECURITY_GROUPS, {}).items():
        members = [p for p in ports.values() if sid in (p.get("security_group_ids") or ())]
        ipag, chains = sg_objects(sg, members)
        out[(model.IP_ADDR_GROUPS, ipag["id"])] = ipag
        add(chains)
    for p in ports.values():
        tenant = bridges.get(p.get("device_id"), {}).get("tenant_id", "")
        add(port_objects(p, tenant))
    return out


def port_filter_errors(models: Mapping[str, Mapping[str, Data]]) -> list[str]:
    """Managed ports must filter through their own chains; others through none of them."""
    errs = []
    for pid, p in models.get(model.PORTS, {}).items():
        want = port_filters(p)
        got = (p.get("inbound_filter_id"), p.get("outbound_filter_id"))
        if port_managed(p) and got != want:
            errs.append(f"port {pid} has security groups or port security but filters {got}")
        if not port_managed(p) and any(g in want for g in got if g):
            errs.append(f"port {pid} is unprotected but still filters through its own chains")
    return errs
