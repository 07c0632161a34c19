"""Fuzz the REST API from its own OpenAPI document (schemathesis 4.x).

The WSGI app runs in process on the memory store, reset before every case to a
small seeded topology. Generated UUIDs in paths and bodies are often swapped for
the seeded objects' ids, so the fuzzer reaches the real code paths (binding,
linking, membership, deletes with references) and not only 404s.

Checks: no 5xx, status codes / content types / bodies conform to the document,
schema-violating input is rejected, a request answered 4xx (and any GET or
trace) changed nothing, and no request, whatever its answer, breaks the
topology's referential integrity (device port lists, links, bindings, routes,
chains and their rules, filters, jump targets and loops, groups) or leaves the
chains generated for security groups and protected ports different from what
the groups and ports say.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from midoflow import model
from midoflow.rest.app import make_app
from midoflow.service import security as sec
from midoflow.store import paths
from midoflow.store.memory import MemoryBackend, MemoryStore

pytestmark = pytest.mark.fuzz

HOST1 = "11111111-1111-4111-8111-111111111111"
HOST2 = "22222222-2222-4222-8222-222222222222"
TZ1 = "33333333-3333-4333-8333-333333333333"
BR1 = "44444444-4444-4444-8444-444444444444"
BR2 = "55555555-5555-4555-8555-555555555555"
BR3 = "66666666-6666-4666-8666-666666666666"
P_BOUND = "77777777-7777-4777-8777-777777777777"
P_FREE = "88888888-8888-4888-8888-888888888888"
P_INT1 = "99999999-9999-4999-8999-999999999999"
P_INT2 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
P_INT3 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
RT1 = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"  # tenant router: 10.0.1.1/24 on br1, uplink
RT2 = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"  # provider router, linked to RT1
RT3 = "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"  # no ports, one blackhole route
RP_BR = "c1c1c1c1-c1c1-4c1c-8c1c-c1c1c1c1c1c1"  # RT1 interior, linked to P_INT1 (br1)
RP_UP = "c2c2c2c2-c2c2-4c2c-8c2c-c2c2c2c2c2c2"  # RT1 interior, linked to RP_DOWN (RT2)
RP_EXT = "c3c3c3c3-c3c3-4c3c-8c3c-c3c3c3c3c3c3"  # RT1 exterior, free
RP_DOWN = "d1d1d1d1-d1d1-4d1d-8d1d-d1d1d1d1d1d1"  # RT2 interior, linked to RP_UP
RP_GW = "d2d2d2d2-d2d2-4d2d-8d2d-d2d2d2d2d2d2"  # RT2 exterior, bound on HOST2 (uplink)
RO_DEF = "f1f1f1f1-f1f1-4f1f-8f1f-f1f1f1f1f1f1"  # RT1 0.0.0.0/0 via 169.254.0.2 on RP_UP
RO_BH = "f2f2f2f2-f2f2-4f2f-8f2f-f2f2f2f2f2f2"  # RT1 blackhole 192.0.2.0/24
RO_UP = "f3f3f3f3-f3f3-4f3f-8f3f-f3f3f3f3f3f3"  # RT2 0.0.0.0/0 via 203.0.113.254 on RP_GW
RO_T1 = "f4f4f4f4-f4f4-4f4f-8f4f-f4f4f4f4f4f4"  # RT2 10.0.1.0/24 via 169.254.0.1 on RP_DOWN
RO_RT3 = "f5f5f5f5-f5f5-4f5f-8f5f-f5f5f5f5f5f5"  # RT3 reject 198.51.100.0/24
P_SEC = "a1a1a1a1-a1a1-4a1a-8a1a-a1a1a1a1a1a1"  # br1 port: mac, fixed IP, SG1, port security
CH1 = "b1b1b1b1-b1b1-4b1b-8b1b-b1b1b1b1b1b1"  # RU1 accept tcp !10/8, RU2 jump CH2
CH2 = "b2b2b2b2-b2b2-4b2b-8b2b-b2b2b2b2b2b2"  # RU3 drop in P_FREE + PG1, RU4 dnat to IPG1
CH3 = "b3b3b3b3-b3b3-4b3b-8b3b-b3b3b3b3b3b3"  # empty; RT1 inbound and P_BOUND outbound filter
RU1 = "e1e1e1e1-e1e1-4e1e-8e1e-e1e1e1e1e1e1"
RU2 = "e2e2e2e2-e2e2-4e2e-8e2e-e2e2e2e2e2e2"
RU3 = "e3e3e3e3-e3e3-4e3e-8e3e-e3e3e3e3e3e3"
RU4 = "e4e4e4e4-e4e4-4e4e-8e4e-e4e4e4e4e4e4"
PG1 = "12121212-1212-4212-8212-121212121212"  # P_BOUND, P_FREE
IPG1 = "13131313-1313-4313-8313-131313131313"  # 10.1.0.1, 10.1.0.2
SG1 = "14141414-1414-4414-8414-141414141414"  # web: egress any, ssh from any, icmp from SG1
SG2 = "15151515-1515-4515-8515-151515151515"  # db: postgres from SG1; no ports
SGR = ["16161616-1616-4616-8616-16161616161" + str(i) for i in range(4)]
BGP1 = "17171717-1717-4717-8717-171717171717"  # RP_GW's peer 203.0.113.254, AS 65000
BN1 = "18181818-1818-4818-8818-181818181818"  # RP_GW advertises 198.18.0.0/24
KNOWN = [HOST1, HOST2, TZ1, BR1, BR2, BR3, P_BOUND, P_FREE, P_INT1, P_INT2, P_INT3,
         RT1, RT2, RT3, RP_BR, RP_UP, RP_EXT, RP_DOWN, RP_GW,
         RO_DEF, RO_BH, RO_UP, RO_T1, RO_RT3, P_SEC, CH1, CH2, CH3, RU1, RU2, RU3, RU4,
         PG1, IPG1, SG1, SG2, BGP1, BN1]
VM_MAC, VM2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _port(pid, bridge, key, type_=model.PORT_EXTERIOR, host=None, iface=None, peer=None):
    return {"id": pid, "device_id": bridge, "device_type": "bridge", "type": type_,
            "admin_state_up": True, "host_id": host, "interface_name": iface,
            "peer_id": peer, "name": f"port{key}", "tunnel_key": key}


def _rport(pid, router, key, mac, ip, plen, type_=model.PORT_INTERIOR, host=None, iface=None,
           peer=None):
    return dict(_port(pid, router, key, type_, host, iface, peer), device_type="router",
                mac=mac, ip_address=ip, prefix_len=plen)


def _route(rid, router, dst, port=None, gw=None, type_="normal", weight=100):
    return {"id": rid, "router_id": router, "dst_cidr": dst, "src_cidr": "0.0.0.0/0",
            "next_hop_port": port, "next_hop_gateway": gw, "weight": weight, "type": type_}


def _rule(rid, chain, action, **kw):
    r = sec.rule(chain, "x", action, **kw)
    r["id"] = rid
    return r


def _sg_rule(rid, direction, proto=None, lo=None, hi=None, prefix=None, group=None):
    return {"id": rid, "direction": direction, "ethertype": "IPv4", "protocol": proto,
            "port_range_min": lo, "port_range_max": hi, "remote_ip_prefix": prefix,
            "remote_group_id": group}


def seeded_backend() -> MemoryBackend:
    b = MemoryBackend()
    objs = {
        model.HOSTS: [{"id": HOST1, "name": "host1", "description": ""},
                      {"id": HOST2, "name": "host2", "description": "spare"}],
        model.TUNNEL_ZONES: [{"id": TZ1, "name": "tz", "type": "vxlan",
                              "members": [{"host_id": HOST1, "ip": "10.0.0.1"}]}],
        model.BRIDGES: [
            {"id": BR1, "name": "br1", "tenant_id": "t1", "admin_state_up": True,
             "port_ids": [P_BOUND, P_FREE, P_INT1, P_SEC]},
            {"id": BR2, "name": "br2", "tenant_id": "t2", "admin_state_up": True,
             "port_ids": [P_INT2, P_INT3]},
            {"id": BR3, "name": "br3", "tenant_id": "t1", "admin_state_up": False,
             "port_ids": []},
        ],
        model.PORTS: [
            dict(_port(P_BOUND, BR1, 1, host=HOST1, iface="tap0"), outbound_filter_id=CH3),
            dict(_port(P_SEC, BR1, 11), mac=VM_MAC, fixed_ips=["10.0.1.10"],
                 security_group_ids=[SG1], port_security_enabled=True,
                 allowed_address_pairs=[{"ip_address": "10.0.1.64/26", "mac_address": None}],
                 inbound_filter_id=sec.port_chain_id(P_SEC, "inbound"),
                 outbound_filter_id=sec.port_chain_id(P_SEC, "outbound")),
            _port(P_FREE, BR1, 2),
            _port(P_INT1, BR1, 3, model.PORT_INTERIOR, peer=RP_BR),
            _port(P_INT2, BR2, 4, model.PORT_INTERIOR),
            _port(P_INT3, BR2, 5, model.PORT_INTERIOR, peer=None),
            _rport(RP_BR, RT1, 6, "02:aa:00:00:01:01", "10.0.1.1", 24, peer=P_INT1),
            _rport(RP_UP, RT1, 7, "02:aa:00:00:01:02", "169.254.0.1", 30, peer=RP_DOWN),
            _rport(RP_EXT, RT1, 8, "02:aa:00:00:01:03", "172.16.0.1", 16,
                   model.PORT_EXTERIOR),
            _rport(RP_DOWN, RT2, 9, "02:aa:00:00:02:01", "169.254.0.2", 30, peer=RP_UP),
            _rport(RP_GW, RT2, 10, "02:aa:00:00:02:02", "203.0.113.1", 24,
                   model.PORT_EXTERIOR, host=HOST2, iface="uplink0"),
        ],
        model.ROUTERS: [
            {"id": RT1, "name": "tenant", "tenant_id": "t1", "admin_state_up": True,
             "port_ids": [RP_BR, RP_UP, RP_EXT], "inbound_filter_id": CH3},
            {"id": RT2, "name": "provider", "tenant_id": "", "admin_state_up": True,
             "port_ids": [RP_DOWN, RP_GW]},
            {"id": RT3, "name": "empty", "tenant_id": "t2", "admin_state_up": False,
             "port_ids": []},
        ],
        model.ROUTES: [
            _route(RO_DEF, RT1, "0.0.0.0/0", RP_UP, "169.254.0.2"),
            _route(RO_BH, RT1, "192.0.2.0/24", type_="blackhole"),
            _route(RO_UP, RT2, "0.0.0.0/0", RP_GW, "203.0.113.254"),
            _route(RO_T1, RT2, "10.0.1.0/24", RP_DOWN, "169.254.0.1", weight=10),
            _route(RO_RT3, RT3, "198.51.100.0/24", type_="reject"),
        ],
        model.CHAINS: [
            {"id": CH1, "name": "ch1", "tenant_id": "t1", "rule_ids": [RU1, RU2]},
            {"id": CH2, "name": "ch2", "tenant_id": "t1", "rule_ids": [RU3, RU4]},
            {"id": CH3, "name": "ch3", "tenant_id": "", "rule_ids": []},
        ],
        model.RULES: [
            _rule(RU1, CH1, "accept", eth_type=0x800, nw_proto=6, tp_dst=[80, 80],
                  nw_src="10.0.0.0/8", invert=["nw_src"]),
            _rule(RU2, CH1, "jump", jump_chain_id=CH2),
            _rule(RU3, CH2, "drop", in_ports=[P_FREE], port_group=PG1),
            _rule(RU4, CH2, "dnat", ip_addr_group_dst=IPG1,
                  nat_targets=[{"addr_from": "10.0.1.10", "addr_to": "10.0.1.10",
                                "port_from": 8080, "port_to": 8080}]),
        ],
        model.BGP_PEERS: [{"id": BGP1, "port_id": RP_GW, "local_as": 64512,
                           "peer_address": "203.0.113.254", "peer_as": 65000, "keepalive": 10,
                           "hold_time": 30, "connect_retry": 5, "name": "upstream"}],
        model.BGP_NETWORKS: [{"id": BN1, "port_id": RP_GW, "prefix": "198.18.0.0/24"}],
        model.PORT_GROUPS: [{"id": PG1, "name": "pg1", "tenant_id": "t1", "stateful": True,
                             "port_ids": [P_BOUND, P_FREE]}],
        model.IP_ADDR_GROUPS: [{"id": IPG1, "name": "ipg1", "tenant_id": "t1",
                                "addresses": ["10.1.0.1", "10.1.0.2"]}],
        model.SECURITY_GROUPS: [
            {"id": SG1, "name": "web", "tenant_id": "t1", "description": "",
             "rules": [_sg_rule(SGR[0], "egress"),
                       _sg_rule(SGR[1], "ingress", 6, 22, 22, prefix="0.0.0.0/0"),
                       _sg_rule(SGR[2], "ingress", 1, 8, 0, group=SG1)]},
            {"id": SG2, "name": "db", "tenant_id": "t1", "description": "",
             "rules": [_sg_rule(SGR[3], "ingress", 6, 5432, 5432, group=SG1)]},
        ],
    }
    models = {kind: {o["id"]: o for o in items} for kind, items in objs.items()}
    for (kind, _), o in sec.expected(models).items():
        objs.setdefault(kind, []).append(o)
    for kind, items in objs.items():
        for o in items:
            b.models[kind][o["id"]] = (o, 0)
    b.counters["tunnel_key"] = 11
    b.state[paths.host_alive(HOST1)] = (
        {"host_id": HOST1, "hostname": "host1", "tunnel_ips": {"vxlan": "10.0.0.1"},
         "ovs_connected": True, "started_at": 1.0}, None)
    b.state[paths.port_active(P_BOUND)] = ({"host_id": HOST1}, None)
    # Replicated tables the trace reads: a VM learned on br1, ARP entries on RT1.
    b.state[paths.mac_entry(BR1, VM_MAC, P_BOUND)] = ({}, None)
    b.state[paths.mac_entry(BR1, VM2_MAC, P_FREE)] = ({}, None)
    b.state[paths.arp_entry(RT1, "10.0.1.10", VM_MAC, 1e9)] = ({}, None)
    b.state[paths.arp_entry(RT1, "169.254.0.2", "02:aa:00:00:02:01", 4e9)] = ({}, None)
    return b


def snapshot(b: MemoryBackend) -> Any:
    # Shallow is enough: the memory store replaces stored objects on every write
    # and hands out copies, it never changes a stored dict in place.
    return ({k: dict(v) for k, v in b.models.items() if v}, dict(b.state))


STORE = MemoryStore(seeded_backend())
APP = make_app(STORE)
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", APP)


HOSTS = [HOST1, HOST2]
ROUTER_PORTS = [RP_BR, RP_UP, RP_EXT, RP_DOWN, RP_GW]
PORTS = [P_BOUND, P_FREE, P_INT1, P_INT2, P_INT3, P_SEC] + ROUTER_PORTS
GEN_CHAINS = [sec.sg_chain_id(SG1, "ingress"), sec.port_chain_id(P_SEC, "inbound")]
CHAINS = [CH1, CH2, CH3]
SGS = [SG1, SG2]
IPGS = [IPG1, sec.sg_ipag_id(SG1)]
POOLS = {"hosts": HOSTS, "tunnel_zones": [TZ1], "bridges": [BR1, BR2, BR3], "ports": PORTS,
         "routers": [RT1, RT2, RT3], "routes": [RO_DEF, RO_BH, RO_UP, RO_T1, RO_RT3],
         "chains": CHAINS + GEN_CHAINS,
         "rules": [RU1, RU2, RU3, RU4, sec.gen_id("rule", GEN_CHAINS[1], "drop")],
         "port_groups": [PG1], "ip_addr_groups": IPGS, "security_groups": SGS,
         "bgp_peers": [BGP1], "bgp_networks": [BN1]}
# Pools for path parameters other than the object's id, and for body fields.
PARAM_POOLS = {"host_id": HOSTS, "port_id": PORTS, "rule_id": SGR}
BODY_POOLS = {"host_id": HOSTS, "peer_id": PORTS, "in_port": PORTS,
              "next_hop_port": ROUTER_PORTS, "jump_chain_id": CHAINS + GEN_CHAINS,
              "inbound_filter_id": CHAINS + GEN_CHAINS[:1],
              "outbound_filter_id": CHAINS + GEN_CHAINS[:1], "port_group": [PG1],
              "ip_addr_group_src": IPGS, "ip_addr_group_dst": IPGS, "port_id": PORTS,
              "remote_group_id": SGS}
LIST_POOLS = {"in_ports": PORTS, "out_ports": PORTS, "security_group_ids": SGS}
# Values that pass the format checks and reach the deeper ones (overlap, host
# bits, gateway on the port's network, duplicates, the simulation's branches).
VALUES = {
    "peer_address": ["203.0.113.254", "203.0.113.9", "203.0.113.1", "203.0.113.255",
                     "10.0.1.20"],
    "prefix": ["198.18.1.0/24", "198.18.0.0/24", "0.0.0.0/0", "198.18.1.1/24"],
    "ip_address": ["10.0.1.7", "10.9.0.1", "172.16.5.5", "192.168.7.1", "10.9.0.0"],
    "dst_cidr": ["0.0.0.0/0", "10.0.1.0/24", "10.8.0.0/16", "192.0.2.0/24", "10.8.0.1/16"],
    "src_cidr": ["0.0.0.0/0", "10.0.1.0/24", "10.0.1.1/24"],
    "next_hop_gateway": ["169.254.0.2", "169.254.0.1", "10.0.1.20", "203.0.113.254",
                         "172.16.0.1"],
    "mac": ["02:aa:00:00:01:01", "02:AA:00:00:09:09", "01:00:5e:00:00:01"],
    "eth_src": [VM_MAC, VM2_MAC, "02:00:00:00:00:99"],
    "eth_dst": [VM_MAC, VM2_MAC, "02:aa:00:00:01:01", "ff:ff:ff:ff:ff:ff"],
    "ip_dst": ["10.0.1.10", "10.0.1.1", "8.8.8.8", "192.0.2.1", "169.254.0.2"],
    "ip_src": ["10.0.1.10", "203.0.113.7"],
    "arp_tpa": ["10.0.1.1", "10.0.1.10", "10.0.1.99"],
    "nw_src": ["10.0.0.0/8", "10.0.1.0/24", "10.0.0.1/8"],
    "nw_dst": ["0.0.0.0/0", "192.0.2.0/24"],
    "remote_ip_prefix": ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.1/8"],
    "address": ["10.1.0.1", "10.1.0.9", "224.0.0.1"],
}


def _hash(salt: str, value: Any) -> int:
    return int(hashlib.sha256((salt + repr(value)).encode()).hexdigest(), 16)


def _pick(value: Any, salt: str, pool: list[str]) -> Any:
    """Deterministically replace a generated UUID by a seeded id most of the time."""
    if not isinstance(value, str) or len(value) != 36:
        return value
    i = _hash(salt, value) % (len(pool) + 1)
    return pool[i] if i < len(pool) else value


def _pick_value(value: Any, field: str, salt: str) -> Any:
    """Replace a well-typed generated value by a meaningful one 3 times in 4."""
    pool = VALUES[field]
    if not isinstance(value, str):
        return value
    h = _hash(field + salt, value)
    return value if h % 4 == 0 else pool[(h // 4) % len(pool)]


# (next_hop_port, next_hop_gateway): valid for their router, and a few that are not.
HOPS = [(RP_UP, "169.254.0.2"), (RP_BR, "10.0.1.20"), (RP_BR, None), (RP_EXT, None),
        (RP_GW, "203.0.113.254"), (RP_DOWN, "169.254.0.1"), (RP_EXT, "10.0.1.20"),
        (RP_UP, "169.254.0.3"), (None, None)]
IP_KEYS = ("ip_src", "ip_dst", "ip_proto", "ip_ttl", "tp_src", "tp_dst")
ARP_KEYS = ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")


def _steer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Make a schema-valid body more often valid for the server too (only for
    positive cases: a negative case must stay invalid)."""
    salt = repr(sorted(body.items(), key=lambda kv: kv[0]))
    h = _hash("steer", salt)
    if path == "/v1/trace":
        ip = [k for k in IP_KEYS if k in body]
        arp = [k for k in ARP_KEYS if k in body]
        if ip and arp:  # a packet is one or the other
            for k in (arp if h % 2 else ip):
                del body[k]
        if "eth_type" in body and h % 5:
            del body["eth_type"]
        if ("tp_src" in body or "tp_dst" in body) and h % 3:
            body["ip_proto"] = (6, 17, 1)[h % 3]
            if body["ip_proto"] == 1:
                for k in ("tp_src", "tp_dst"):
                    if k in body:
                        body[k] %= 256
    elif "next_hop_port" in body or "next_hop_gateway" in body or "dst_cidr" in body:
        if h % 5:
            port, gw = HOPS[h % len(HOPS)]
            body["next_hop_port"], body["next_hop_gateway"] = port, gw
    elif "action" in body and h % 4:
        _steer_rule(body, h)
    for k, pool in LIST_POOLS.items():
        if isinstance(body.get(k), list):
            body[k] = list(dict.fromkeys(_pick(x, k, pool) for x in body[k]))
    for k in VALUES:
        if k in body:
            body[k] = _pick_value(body[k], k, salt)
    return body


def _steer_rule(body: dict[str, Any], h: int) -> None:
    """Make a rule body consistent more often (jump target, NAT targets, flows)."""
    action = body["action"]
    if action == "jump":
        body.setdefault("jump_chain_id", CHAINS[h % len(CHAINS)])
    else:
        body.pop("jump_chain_id", None)
    if action in ("dnat", "snat"):
        if not body.get("nat_targets"):
            body["nat_targets"] = [{"addr_from": "203.0.113.10", "port_from": 1024,
                                    "port_to": 65535}]
    else:
        body.pop("nat_targets", None)
    if body.get("match_forward_flow") and body.get("match_return_flow"):
        body["match_return_flow"] = False
    if isinstance(body.get("invert"), list):
        body["invert"] = [c for c in dict.fromkeys(body["invert"])
                          if body.get(c) not in (None, [])]


@schema.hook
def map_case(ctx, case):
    # Generated UUIDs repeat a lot: salt the picks with the body, which varies.
    salt = case.path + (repr(sorted(case.body.items(), key=repr))
                        if isinstance(case.body, dict) else "")
    if case.path_parameters:
        kind = case.path.split("/")[2]
        case.path_parameters = {
            k: (_pick_address(val) if k == "address" else
                _pick(val, k + salt, PARAM_POOLS.get(k) or POOLS.get(kind, KNOWN)))
            for k, val in case.path_parameters.items()
        }
    if isinstance(case.body, dict):
        body = dict(case.body)
        for k, pool in BODY_POOLS.items():
            if k in body:
                body[k] = _pick(body[k], k, pool)
        meta = getattr(case, "meta", None)
        if meta is None or not meta.generation.mode.is_negative:
            body = _steer(case.path, body)
            # an update body usually echoes the object's own id, a rule its parent's
            oid = (case.path_parameters or {}).get("id")
            if oid and _hash("echo", salt) % 4:
                if case.method.upper() == "PUT" and "id" in body:
                    body["id"] = oid
                for k in ("chain_id", "security_group_id"):
                    if k in body:
                        if case.path.endswith("/rules"):
                            body[k] = oid
                        else:
                            del body[k]
        case.body = body
    return case


def _pick_address(value: Any) -> Any:
    """An address of IPG1 two times in three."""
    if isinstance(value, str) and _hash("address", value) % 3:
        return "10.1.0.1"
    return value


def integrity_errors(b: MemoryBackend) -> list[str]:
    """Referential integrity of the topology: what no request may ever break."""
    m = {kind: {oid: d for oid, (d, _) in objs.items()} for kind, objs in b.models.items()}
    hosts, ports = m.get(model.HOSTS, {}), m.get(model.PORTS, {})
    devices = {model.DEVICE_BRIDGE: m.get(model.BRIDGES, {}),
               model.DEVICE_ROUTER: m.get(model.ROUTERS, {})}
    errs = []
    for dtype, devs in devices.items():
        for did, d in devs.items():
            for pid in d.get("port_ids", ()):
                p = ports.get(pid)
                if p is None or p["device_id"] != did or p.get("device_type", "bridge") != dtype:
                    errs.append(f"{dtype} {did} lists port {pid} that is not its own")
    for pid, p in ports.items():
        dev = devices.get(p.get("device_type", "bridge"), {}).get(p["device_id"])
        if dev is None or pid not in dev.get("port_ids", ()):
            errs.append(f"port {pid} is not listed by its device {p['device_id']}")
        if p.get("peer_id") and ports.get(p["peer_id"], {}).get("peer_id") != pid:
            errs.append(f"port {pid} is linked to {p['peer_id']}, which is not linked back")
        if p.get("host_id") and p["host_id"] not in hosts:
            errs.append(f"port {pid} is bound to a missing host {p['host_id']}")
    for zid, z in m.get(model.TUNNEL_ZONES, {}).items():
        for mem in z.get("members", ()):
            if mem["host_id"] not in hosts:
                errs.append(f"tunnel zone {zid} lists a missing host {mem['host_id']}")
    for rid, r in m.get(model.ROUTES, {}).items():
        if r["router_id"] not in devices[model.DEVICE_ROUTER]:
            errs.append(f"route {rid} belongs to a missing router {r['router_id']}")
        hop = r.get("next_hop_port")
        if hop and ports.get(hop, {}).get("device_id") != r["router_id"]:
            errs.append(f"route {rid} goes through {hop}, not a port of its router")
        if r.get("type") == "normal" and not hop:
            errs.append(f"normal route {rid} has no next_hop_port")
    for kind in (model.BGP_PEERS, model.BGP_NETWORKS):
        for oid, o in m.get(kind, {}).items():
            p = ports.get(o["port_id"])
            if p is None or p.get("device_type") != "router" or not p.get("ip_address"):
                errs.append(f"{kind} {oid} belongs to {o['port_id']}, not an uplink")
    return errs + chain_errors(m)


def chain_errors(m: dict[str, dict[str, Any]]) -> list[str]:
    """Chains, rules, filters, groups, security groups and what they generate."""
    chains, rules = m.get(model.CHAINS, {}), m.get(model.RULES, {})
    ports, sgs = m.get(model.PORTS, {}), m.get(model.SECURITY_GROUPS, {})
    pgs, ipags = m.get(model.PORT_GROUPS, {}), m.get(model.IP_ADDR_GROUPS, {})
    errs = []
    for cid, c in chains.items():
        ids = c.get("rule_ids", [])
        if len(set(ids)) != len(ids):
            errs.append(f"chain {cid} lists a rule twice")
        for rid in ids:
            if rules.get(rid, {}).get("chain_id") != cid:
                errs.append(f"chain {cid} lists rule {rid}, which is not its own")
    graph: dict[str, set[str]] = {}
    for rid, r in rules.items():
        if rid not in chains.get(r.get("chain_id"), {}).get("rule_ids", ()):
            errs.append(f"rule {rid} is not listed by its chain {r.get('chain_id')}")
        if r.get("jump_chain_id"):
            if r["jump_chain_id"] not in chains:
                errs.append(f"rule {rid} jumps to a missing chain {r['jump_chain_id']}")
            graph.setdefault(r["chain_id"], set()).add(r["jump_chain_id"])
        if (r.get("action") == "jump") != bool(r.get("jump_chain_id")):
            errs.append(f"rule {rid}: action {r.get('action')} with jump {r.get('jump_chain_id')}")
        for f in ("in_ports", "out_ports"):
            errs += [f"rule {rid} matches a missing port {p}" for p in r.get(f) or ()
                     if p not in ports]
        if r.get("port_group") and r["port_group"] not in pgs:
            errs.append(f"rule {rid} matches a missing port group")
        for f in ("ip_addr_group_src", "ip_addr_group_dst"):
            if r.get(f) and r[f] not in ipags:
                errs.append(f"rule {rid} matches a missing IP address group ({f})")
    for start in graph:  # no jump loops
        seen, todo = set(), [start]
        while todo:
            c = todo.pop()
            for nxt in graph.get(c, ()):
                if nxt == start:
                    errs.append(f"chain {start} reaches itself through jumps")
                elif nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    for kind in (model.PORTS, model.BRIDGES, model.ROUTERS):
        for oid, o in m.get(kind, {}).items():
            for f in ("inbound_filter_id", "outbound_filter_id"):
                if o.get(f) and o[f] not in chains:
                    errs.append(f"{kind} {oid} filters through a missing chain ({f})")
    for gid, g in pgs.items():
        errs += [f"port group {gid} lists a missing port {p}" for p in g.get("port_ids", ())
                 if p not in ports]
    for pid, p in ports.items():
        errs += [f"port {pid} has a missing security group {s}"
                 for s in p.get("security_group_ids") or () if s not in sgs]
    for sid, g in sgs.items():
        errs += [f"security group {sid} has a rule from a missing group"
                 for r in g.get("rules", ()) if r.get("remote_group_id") not in (None, *sgs)]
    # generated objects: exactly what the security groups and ports say
    want = sec.expected(m)
    for kind in (model.CHAINS, model.RULES, model.IP_ADDR_GROUPS):
        for oid, o in m.get(kind, {}).items():
            if sec.is_generated(oid) and want.get((kind, oid)) != o:
                errs.append(f"generated {kind} {oid} is stale or orphaned")
    errs += [f"generated {kind} {oid} is missing" for kind, oid in want
             if oid not in m.get(kind, {})]
    errs += sec.port_filter_errors(m)
    return errs


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
]


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
          database=None)
def test_api_from_openapi(case):
    STORE.backend = seeded_backend()
    before = snapshot(STORE.backend)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500, response.text
    _assert_no_traceback(response.text)
    if 400 <= response.status_code < 500:
        assert snapshot(STORE.backend) == before, (
            f"{case.method} {case.formatted_path} answered {response.status_code} "
            "but changed the store"
        )
    if case.path == "/v1/trace" or case.method.upper() == "GET":
        assert snapshot(STORE.backend) == before, (
            f"{case.method} {case.formatted_path} is read-only but changed the store")
    errs = integrity_errors(STORE.backend)
    assert not errs, f"{case.method} {case.formatted_path} broke the topology: {errs}"


def _assert_no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text and 'File "' not in text, text


# Hand-made hostile requests (issue 9): (method, raw target, body, extra environ, status).
_BIG = b'{"name": "' + b"x" * (1 << 20) + b'"}'
HOSTILE = [
    ("GET", "/v1/bridges/%ff", None, {}, 400),
    ("GET", "/v1/bridges?tenant_id=%ff", None, {}, 400),
    ("GET", f"/v1/ports/{P_BOUND}%c3%28", None, {}, 400),
    ("DELETE", f"/v1/tunnel_zones/{TZ1}/members/%fe%fe", None, {}, 400),
    ("GET", "/v1/ip_addr_groups?%ff%fe=1", None, {}, 400),
    ("GET", "/v1/chains", None, {"QUERY_STRING": "tenant_id=\xff"}, 400),
    ("POST", "/v1/bridges", b'{"name": "\xff"}', {}, 400),
    ("POST", "/v1/bridges", b'{"name": ', {}, 400),
    ("POST", "/v1/bridges", b"[" * 50000, {}, 400),
    ("PUT", f"/v1/bridges/{BR1}", b'{"name": Infinity}', {}, 400),
    ("POST", "/v1/bridges", b"{}", {"CONTENT_LENGTH": "1e3"}, 400),
    ("POST", "/v1/bridges", b"{}", {"CONTENT_TYPE": "application/json\xe9"}, 400),
    ("POST", "/v1/bridges", b"{}", {"CONTENT_TYPE": "application/json; charset=koi8-r"}, 415),
    ("POST", "/v1/bridges", _BIG, {}, 413),
    ("POST", "/v1/bridges", None, {"HTTP_TRANSFER_ENCODING": "chunked"}, 201),
    ("POST", "/v1/ip_addr_groups", None, {"HTTP_TRANSFER_ENCODING": "chunked",
                                          "wsgi.input": _BIG}, 413),
    ("POST", f"/v1/bridges/{BR1}/ports",
     b'{"fixed_ips": [' + b",".join(b'"10.%d.%d.%d"' % (i >> 16, (i >> 8) & 255, i & 255)
                                  for i in range(70000, 76000))
     + b'], "port_security_enabled": true, "security_group_ids": ["' + SG1.encode()
     + b'"], "mac": "02:00:00:00:00:77"}', {}, 413),
    ("POST", f"/v1/tunnel_zones/{TZ1}/members", b'{"host_id": "' + HOST2.encode()
     + b'", "ip": "10.0.0.1"}', {}, 409),
    ("POST", f"/v1/routers/{RT3}/ports",
     b'{"ip_address": "10.77.0.1", "prefix_len": 24, "mac": "02:aa:00:00:01:01"}', {}, 409),
    ("POST", "/v1/bridges", b'{"id": "' + BR1.encode() + b'"}', {}, 409),
]


@pytest.mark.parametrize("method,target,body,environ,status", HOSTILE,
                         ids=[f"{m} {t[:40]} {st}" for m, t, _, _, st in HOSTILE])
def test_hand_made_hostile_requests(method, target, body, environ, status):
    import io
    from urllib.parse import unquote_to_bytes

    import webob

    STORE.backend = seeded_backend()
    before = snapshot(STORE.backend)
    path, _, query = target.partition("?")
    req = webob.Request.blank("/", environ={"REQUEST_METHOD": method, "QUERY_STRING": query})
    req.environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
    environ = dict(environ)
    if environ.get("HTTP_TRANSFER_ENCODING") == "chunked":  # what the server de-chunked
        req.environ.pop("CONTENT_LENGTH", None)
        req.environ["wsgi.input"] = io.BytesIO(environ.pop("wsgi.input", b'{"name": "c"}'))
        req.environ["CONTENT_TYPE"] = "application/json"
    elif body is not None:
        req.environ.update({"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
                            "CONTENT_TYPE": "application/json"})
    req.environ.update(environ)
    resp = req.get_response(APP)
    _assert_no_traceback(resp.text)
    assert resp.status_int == status, resp.text[:300]
    assert resp.content_type == "application/json"
    if status >= 400:
        assert set(resp.json) <= {"error", "message", "field"} and resp.json["message"]
        assert snapshot(STORE.backend) == before
    assert not integrity_errors(STORE.backend)


def test_seed_is_consistent():
    assert integrity_errors(seeded_backend()) == []
