"""Two-host worlds for the agent tests: hosts h1 (10.0.0.1) and h2
(10.0.0.2) in a VXLAN tunnel zone on one memory backend, the topologies the
tests lay over them, and agent cores started on them, each with its own
store session (as each host's agent has its own ZooKeeper session).

The fixtures that put these together are in ``tests/unit/conftest.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from midoflow.agent.clock import FakeClock
from midoflow.agent.config import AgentConfig
from midoflow.agent.core import AgentCore, Frames
from midoflow.apps import frames
from midoflow.store import paths
from midoflow.store.base import Create
from midoflow.store.memory import MemoryBackend, MemoryStore

HOSTS = ("h1", "h2")
TUNNEL_IPS = {"h1": "10.0.0.1", "h2": "10.0.0.2"}
TUNNELS = {"vxlan0": (1, None), "gre0": (2, None)}  # interfaces, as OVS reports them
BCAST = "ff:ff:ff:ff:ff:ff"
# VM MACs of the bridge worlds (l2_bridge, guarded_bridge)
M1, M2, M3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
# the SNAT world (snat_uplink): the VM, the router's ports, the upstream gateway
VM, RMAC, UPMAC, GW = "02:00:00:00:00:01", "02:aa:00:00:00:01", "02:aa:00:00:00:09", \
    "02:ee:00:00:00:01"
PUBLIC = "203.0.113.10"
# the routed world (two_subnets): its VMs, the router's ports, its fixed clock
VM1, VM2 = "02:00:00:00:01:01", "02:00:00:00:02:02"
R1, R2 = "02:aa:00:00:00:01", "02:aa:00:00:00:02"
NOW = 50_000.0


def cfg(host: str, **kw) -> AgentConfig:
    """The agent configuration of ``host`` (``kw``: limits and the like)."""
    return AgentConfig(host_id=host, zookeeper="memory", ovsdb="unix:/x",
                       tunnel_ip=TUNNEL_IPS[host], **kw)


def two_hosts(*objects: Create) -> MemoryStore:
    """The API's session of a new backend holding h1, h2, their tunnel zone
    and ``objects``."""
    api = MemoryStore(MemoryBackend())
    api.commit([
        *(Create("hosts", {"id": h, "name": h}) for h in HOSTS),
        Create("tunnel_zones", {"id": "z", "name": "z", "type": "vxlan", "members": [
            {"host_id": h, "ip": TUNNEL_IPS[h]} for h in HOSTS]}),
        *objects,
    ])
    return api


def agent(api: MemoryStore, host: str, config: dict | None = None, **kw) -> AgentCore:
    """An agent core of ``host`` in its own session of ``api``'s backend,
    started (host registered, topology cached), nothing bound yet.
    ``config``: configuration fields; ``kw``: AgentCore's own arguments (a
    FakeClock at the present time unless given)."""
    kw.setdefault("clock", FakeClock(wall=time.time(), mono=time.monotonic()))
    a = AgentCore(cfg(host, **(config or {})), MemoryStore(api.backend), **kw)
    a.start()
    return a


def bind(agents: dict[str, AgentCore], interfaces: dict[str, dict]) -> None:
    """Each host's bridge interfaces (name -> (ofport, iface-id)), in order."""
    for host, ifaces in interfaces.items():
        agents[host].set_interfaces(ifaces)


def learn_arp(api: MemoryStore, router: str, entries: dict[str, str]) -> None:
    """Router ARP entries (ip -> mac), learned now by some agent."""
    for ip, mac in entries.items():
        api.put_state(paths.arp_entry(router, ip, mac, time.time()), {})


def learn_macs(api: MemoryStore, bridge: str, entries: dict[str, str]) -> None:
    """Bridge MAC table entries (mac -> port id)."""
    for mac, port in entries.items():
        api.put_state(paths.mac_entry(bridge, mac, port), {})


class OsKenFrames(Frames):
    """The frames the agent app gives its core: os-ken's packet library."""

    def build(self, gen, original):
        return frames.build(gen, original)

    def parse(self, frame):
        return frames.parse(frame)


# ---- topologies -------------------------------------------------------------------
def l2_bridge() -> list[Create]:
    """Bridge b with ports p1, p2, p3 (tunnel keys 11, 12, 13)."""
    return [Create("bridges", {"id": "b", "name": "b", "port_ids": ["p1", "p2", "p3"]}),
            *(Create("ports", {"id": f"p{i}", "device_id": "b", "tunnel_key": 10 + i})
              for i in (1, 2, 3))]


def guarded_bridge() -> list[Create]:
    """Bridge b with p1 and p2; p2's VM accepts only replies (its outbound
    chain out2), and its connections are tracked (inbound chain in2)."""
    return [
        Create("chains", {"id": "in2", "rule_ids": ["fwd"]}),
        Create("chains", {"id": "out2", "rule_ids": ["ret", "deny"]}),
        Create("rules", {"id": "fwd", "chain_id": "in2", "action": "continue",
                         "match_forward_flow": True}),
        Create("rules", {"id": "ret", "chain_id": "out2", "action": "accept",
                         "match_return_flow": True}),
        Create("rules", {"id": "deny", "chain_id": "out2", "action": "drop"}),
        Create("bridges", {"id": "b", "port_ids": ["p1", "p2"]}),
        Create("ports", {"id": "p1", "device_id": "b", "tunnel_key": 11}),
        Create("ports", {"id": "p2", "device_id": "b", "tunnel_key": 12,
                         "inbound_filter_id": "in2", "outbound_filter_id": "out2"}),
    ]


def router_port(id: str, router: str, key: int, mac: str, ip: str, peer: str | None = None,
                prefix_len: int = 24) -> Create:
    """A router port; with ``peer``, an interior one linked to that port."""
    body = {"id": id, "device_id": router, "device_type": "router", "tunnel_key": key,
            "mac": mac, "ip_address": ip, "prefix_len": prefix_len}
    if peer is not None:
        body.update(type="interior", peer_id=peer)
    return Create("ports", body)


def bridge_link(id: str, bridge: str, key: int, peer: str) -> Create:
    """A bridge's interior port linked to router port ``peer``."""
    return Create("ports", {"id": id, "device_id": bridge, "tunnel_key": key,
                            "type": "interior", "peer_id": peer})


def provider_uplink(key: int) -> list[Create]:
    """Router r's uplink ``up`` (UPMAC, 198.51.100.1/24, tunnel key ``key``,
    default route via .254): SNAT to PUBLIC out of it (chain post), reverse
    SNAT of what comes in (chain pre; r must name both), PUBLIC blackholed."""
    return [
        Create("chains", {"id": "post", "rule_ids": ["snat"]}),
        Create("chains", {"id": "pre", "rule_ids": ["rev"]}),
        Create("rules", {"id": "snat", "chain_id": "post", "action": "snat",
                         "out_ports": ["up"], "nat_targets": [
                             {"addr_from": PUBLIC, "addr_to": PUBLIC, "port_from": 1024,
                              "port_to": 65535}]}),
        Create("rules", {"id": "rev", "chain_id": "pre", "action": "rev_snat"}),
        router_port("up", "r", key, UPMAC, "198.51.100.1"),
        Create("routes", {"id": "default", "router_id": "r", "dst_cidr": "0.0.0.0/0",
                          "next_hop_port": "up", "next_hop_gateway": "198.51.100.254"}),
        Create("routes", {"id": "nat-ip", "router_id": "r", "dst_cidr": f"{PUBLIC}/32",
                          "type": "blackhole"}),
    ]


def snat_uplink() -> list[Create]:
    """Bridge b (port vm, 192.168.1/24) on router r (port rb, MAC RMAC),
    whose uplink ``up`` (UPMAC, 198.51.100.1/24, default route via .254)
    SNATs to PUBLIC."""
    return [
        Create("bridges", {"id": "b", "port_ids": ["vm", "br"]}),
        Create("routers", {"id": "r", "port_ids": ["rb", "up"], "inbound_filter_id": "pre",
                           "outbound_filter_id": "post"}),
        Create("ports", {"id": "vm", "device_id": "b", "tunnel_key": 11}),
        bridge_link("br", "b", 12, "rb"),
        router_port("rb", "r", 13, RMAC, "192.168.1.1", peer="br"),
        *provider_uplink(14),
    ]


def two_subnets() -> list[Create]:
    """Bridges b1 (p1, 192.168.1/24) and b2 (p2, 192.168.2/24) on router r
    (ports r1 and r2, MACs R1 and R2)."""
    return [
        Create("bridges", {"id": "b1", "port_ids": ["p1", "b1r"]}),
        Create("bridges", {"id": "b2", "port_ids": ["p2", "b2r"]}),
        Create("routers", {"id": "r", "port_ids": ["r1", "r2"]}),
        Create("ports", {"id": "p1", "device_id": "b1", "tunnel_key": 11}),
        Create("ports", {"id": "p2", "device_id": "b2", "tunnel_key": 12}),
        bridge_link("b1r", "b1", 13, "r1"),
        bridge_link("b2r", "b2", 14, "r2"),
        router_port("r1", "r", 15, R1, "192.168.1.1", peer="b1r"),
        router_port("r2", "r", 16, R2, "192.168.2.1", peer="b2r"),
    ]


# ---- packets --------------------------------------------------------------------------
def tcp(src: str, dst: str, sport: int, dport: int, smac: str, dmac: str) -> dict:
    """Packet-in fields of a TCP segment (no TTL, no flags)."""
    return {"eth_src": smac, "eth_dst": dmac, "eth_type": 0x800, "ip_src": src, "ip_dst": dst,
            "ip_proto": 6, "tp_src": sport, "tp_dst": dport}


# ---- the campus: every kind of path at once --------------------------------------------
@dataclass(frozen=True)
class Vm:
    """A VM of the campus: its port, where that port is bound, its addresses
    and its subnet's gateway (the router port's MAC and address)."""

    port: str
    host: str
    ofport: int
    mac: str
    ip: str
    gw_mac: str
    gw_ip: str


# b1 (192.168.1/24): a and c on h1, b on h2; b2 (192.168.2/24): d on h2 behind
# a security group that admits TCP 22 only, e on h1. The router's uplink is
# bound on h1 (ofport 7) and SNATs to PUBLIC.
VM_A = Vm("p1", "h1", 5, "02:00:00:00:01:0a", "192.168.1.10", R1, "192.168.1.1")
VM_B = Vm("p2", "h2", 5, "02:00:00:00:01:0b", "192.168.1.20", R1, "192.168.1.1")
VM_C = Vm("p3", "h1", 6, "02:00:00:00:01:0c", "192.168.1.30", R1, "192.168.1.1")
VM_D = Vm("p4", "h2", 6, "02:00:00:00:02:0d", "192.168.2.40", R2, "192.168.2.1")
VM_E = Vm("p5", "h1", 8, "02:00:00:00:02:0e", "192.168.2.50", R2, "192.168.2.1")
CAMPUS_VMS = (VM_A, VM_B, VM_C, VM_D, VM_E)
UPLINK_OFPORT = 7
SG_PORT = 22  # the one TCP port VM_D's security group admits


def campus() -> list[Create]:
    """The objects of the campus (see VM_A … VM_E)."""
    key = {"p1": 21, "p2": 22, "p3": 23, "p4": 24, "p5": 25}
    return [
        # VM_D's outbound chain as a security group compiles (service/security.py)
        Create("chains", {"id": "p4-out", "rule_ids": ["p4-ret", "p4-arp", "p4-fwd", "p4-sg",
                                                       "p4-drop"]}),
        Create("chains", {"id": "sg-in", "rule_ids": ["sg-ssh"]}),
        Create("rules", {"id": "p4-ret", "chain_id": "p4-out", "action": "accept",
                         "match_return_flow": True}),
        Create("rules", {"id": "p4-arp", "chain_id": "p4-out", "action": "accept",
                         "eth_type": 0x806}),
        Create("rules", {"id": "p4-fwd", "chain_id": "p4-out", "action": "continue",
                         "match_forward_flow": True}),
        Create("rules", {"id": "p4-sg", "chain_id": "p4-out", "action": "jump",
                         "jump_chain_id": "sg-in"}),
        Create("rules", {"id": "p4-drop", "chain_id": "p4-out", "action": "drop"}),
        Create("rules", {"id": "sg-ssh", "chain_id": "sg-in", "action": "accept",
                         "eth_type": 0x800, "nw_proto": 6, "tp_dst": [SG_PORT, SG_PORT]}),
        Create("bridges", {"id": "b1", "name": "b1", "port_ids": ["p1", "p2", "p3", "b1r"]}),
        Create("bridges", {"id": "b2", "name": "b2", "port_ids": ["p4", "p5", "b2r"]}),
        Create("routers", {"id": "r", "name": "r", "port_ids": ["r1", "r2", "up"],
                           "inbound_filter_id": "pre", "outbound_filter_id": "post"}),
        *(Create("ports", {"id": p, "device_id": "b1", "tunnel_key": key[p]})
          for p in ("p1", "p2", "p3")),
        Create("ports", {"id": "p4", "device_id": "b2", "tunnel_key": key["p4"],
                         "outbound_filter_id": "p4-out"}),
        Create("ports", {"id": "p5", "device_id": "b2", "tunnel_key": key["p5"]}),
        bridge_link("b1r", "b1", 31, "r1"),
        bridge_link("b2r", "b2", 32, "r2"),
        router_port("r1", "r", 33, R1, "192.168.1.1", peer="b1r"),
        router_port("r2", "r", 34, R2, "192.168.2.1", peer="b2r"),
        *provider_uplink(35),
    ]


def campus_learned(api: MemoryStore) -> None:
    """Every VM's MAC in its bridge's table and the router's ARP table, and
    the upstream gateway's MAC: no packet of the campus waits or floods."""
    for vm in CAMPUS_VMS:
        learn_macs(api, "b1" if vm.gw_mac == R1 else "b2", {vm.mac: vm.port})
    learn_arp(api, "r", {"198.51.100.254": GW, **{vm.ip: vm.mac for vm in CAMPUS_VMS}})


def campus_interfaces(host: str) -> dict:
    """``host``'s bridge interfaces in the campus."""
    ifaces = {**TUNNELS, **{f"vm-{vm.port}": (vm.ofport, vm.port)
                            for vm in CAMPUS_VMS if vm.host == host}}
    if host == "h1":
        ifaces["uplink"] = (UPLINK_OFPORT, "up")
    return ifaces
