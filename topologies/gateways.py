"""The gateway lab: a cloud whose provider router has two uplinks on two
gateway hosts, each peering over BGP with its own border router (FRR or
GoBGP), both border routers on one upstream LAN with an "internet" host.

::

    h1 (compute): vm1 10.0.0.1 (SNAT), vm2 10.0.0.2 (floating IP .20)
    provider router: 10.0.0.254/24 | uplink1 192.0.2.1/30 (h2) | uplink2 192.0.2.5/30 (h3)
    border1 192.0.2.2 ── LAN 198.51.100.0/24 (.1) ── internet .100
    border2 192.0.2.6 ── LAN (.2)
    AS 64512 (cloud) ── AS 65000 (border1, border2: iBGP between them)

The cloud advertises 203.0.113.0/24 (SNAT address .10, floating IP .20)
from both gateways; the border routers send it a default route. The
uplinks form a stateful port group, so either gateway holds the NAT and
conntrack state of any connection. Used by the e2e tests, the demo and the
benchmarks; :meth:`GatewayLab.stop` undoes everything.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from topologies.midocloud import MidoCloud, wait_for

RANGE = "203.0.113.0/24"
SNAT_IP = "203.0.113.10"
FIP = "203.0.113.20"
CLOUD_AS = 64512
UPSTREAM_AS = 65000
LAN = "198.51.100.0/24"
INTERNET_IP = "198.51.100.100"


@dataclass(frozen=True)
class Uplink:
    name: str
    host_index: int  # cloud host that is this gateway
    ip: str  # the router port's address
    peer_ip: str  # the border router's address on the link
    lan_ip: str  # the border router's address on the upstream LAN
    mac: str
    peer_mac: str


UPLINKS = (
    Uplink("uplink1", 1, "192.0.2.1", "192.0.2.2", "198.51.100.1", "02:aa:00:00:01:01",
           "02:bb:00:00:01:02"),
    Uplink("uplink2", 2, "192.0.2.5", "192.0.2.6", "198.51.100.2", "02:aa:00:00:02:01",
           "02:bb:00:00:02:02"),
)


class GatewayLab:
    def __init__(self, mc: MidoCloud, border: str = "frr", keepalive: int = 1, hold: int = 3,
                 progress=None) -> None:
        if border not in ("frr", "gobgp"):
            raise ValueError("border must be 'frr' or 'gobgp'")
        if len(mc.hosts) < 3:
            raise ValueError("the gateway lab needs a cloud of at least 3 hosts")
        self.mc = mc
        self.kind = border
        self.keepalive, self.hold = keepalive, hold
        self.progress = progress or (lambda _m: None)
        self.upstream = None
        self.borders: list = []
        self.border_nodes: list = []
        self.uplink_ports: list[str] = []
        self.peer_ids: list[str] = []
        self.network_ids: list[str] = []
        self.router = self.bridge = None
        self.vm1 = self.vm2 = None
        self.gateways = [mc.hosts[u.host_index] for u in UPLINKS]
        self.compute = mc.hosts[0]

    # ---- build -------------------------------------------------------------
    def start(self) -> GatewayLab:
        from topologies.border import FrrRouter, GobgpRouter, Upstream

        mc = self.mc
        self.progress("provider router with two uplinks (gateways h2, h3), tenant network "
                      "10.0.0.0/24 on h1")
        self.router = mc.router("provider")
        self.bridge = mc.bridge("tenant")
        mc.attach(self.router, self.bridge, "10.0.0.254/24", "02:aa:00:00:00:fe")
        self.vm1 = mc.vm(self.compute, self.bridge, "vm1", "10.0.0.1/24", "02:00:00:00:00:01")
        self.vm2 = mc.vm(self.compute, self.bridge, "vm2", "10.0.0.2/24", "02:00:00:00:00:02")
        for vm in (self.vm1, self.vm2):
            vm.cmd("ip route add default via 10.0.0.254")
        for u in UPLINKS:
            self.uplink_ports.append(mc.router_port(self.router, f"{u.ip}/30", u.mac,
                                                    interior=False, name=u.name))
        # the floating-IP range lives here: what is not assigned is dropped
        mc.route(self.router, RANGE, type="blackhole")
        group = mc.api.request("POST", "/port_groups", {"name": "uplinks",
                                                        "stateful": True})["id"]
        for port in self.uplink_ports:
            mc.api.request("POST", f"/port_groups/{group}/ports", {"port_id": port})
        pre = mc.chain("provider-in", [
            {"action": "dnat", "nw_dst": f"{FIP}/32",
             "nat_targets": [{"addr_from": "10.0.0.2", "addr_to": "10.0.0.2"}]},
            {"action": "rev_snat"}])
        post = mc.chain("provider-out", [
            {"action": "snat", "out_ports": self.uplink_ports, "nw_src": "10.0.0.2/32",
             "nat_targets": [{"addr_from": FIP, "addr_to": FIP}]},
            {"action": "snat", "out_ports": self.uplink_ports, "nw_src": "10.0.0.0/24",
             "nat_targets": [{"addr_from": SNAT_IP, "addr_to": SNAT_IP, "port_from": 1024,
                              "port_to": 65535}]}])
        mc.api.request("PUT", f"/routers/{self.router}", {"inbound_filter_id": pre,
                                                          "outbound_filter_id": post})
        self.progress(f"upstream: LAN {LAN}, internet host {INTERNET_IP}, two {self.kind} "
                      f"border routers (AS {UPSTREAM_AS})")
        self.upstream = Upstream(mc.cloud.prefix, lan=LAN, internet_ip=INTERNET_IP)
        self.upstream.start()
        cls = FrrRouter if self.kind == "frr" else GobgpRouter
        for i, (u, port) in enumerate(zip(UPLINKS, self.uplink_ports, strict=True)):
            node = mc.external(self.gateways[i], port, f"border{i + 1}", f"{u.peer_ip}/30",
                               u.peer_mac)
            self.upstream.connect(node, f"{u.lan_ip}/24")
            self.border_nodes.append(node)
            r = cls(node, f"{mc.cloud.prefix}b{i + 1}", UPSTREAM_AS, u.lan_ip,
                    os.path.join(mc.workdir, f"border{i + 1}"))
            r.add_neighbor(u.ip, CLOUD_AS, keepalive=self.keepalive, hold=self.hold,
                           default_originate=True)
            other = UPLINKS[1 - i]
            r.add_neighbor(other.lan_ip, UPSTREAM_AS, keepalive=self.keepalive,
                           hold=self.hold, next_hop_self=True)
            self.borders.append(r)
        for r in self.borders:
            r.start()
        self.upstream.route_via(RANGE, [u.lan_ip for u in UPLINKS])
        self.progress("BGP: a peer and the range 203.0.113.0/24 on each uplink")
        for u, port in zip(UPLINKS, self.uplink_ports, strict=True):
            self.add_peer(port, u.peer_ip)
            self.network_ids.append(self.add_network(port, RANGE))
        return self

    def add_peer(self, port: str, peer_ip: str) -> str:
        pid = self.mc.api.request("POST", f"/ports/{port}/bgp_peers", {
            "local_as": CLOUD_AS, "peer_address": peer_ip, "peer_as": UPSTREAM_AS,
            "keepalive": self.keepalive, "hold_time": self.hold, "connect_retry": 1})["id"]
        self.peer_ids.append(pid)
        return pid

    def add_network(self, port: str, prefix: str) -> str:
        return self.mc.api.request("POST", f"/ports/{port}/bgp_networks",
                                   {"prefix": prefix})["id"]

    # ---- observation -------------------------------------------------------
    def wait_sessions(self, timeout: float = 60) -> float:
        """Every border router has its session to its gateway up; seconds taken."""
        t0 = time.monotonic()
        for u, r in zip(UPLINKS, self.borders, strict=True):
            r.wait_established(u.ip, timeout)
        return time.monotonic() - t0

    def wait_range_everywhere(self, prefix: str = RANGE, timeout: float = 30) -> None:
        """Both border routers carry ``prefix`` straight from their gateway."""
        for u, r in zip(UPLINKS, self.borders, strict=True):
            wait_for(lambda r=r, u=u: u.ip in r.rib().get(prefix, []), timeout,
                     f"{prefix} from gateway {u.ip} in {r.name}'s RIB")

    def learned_routes(self) -> list[dict]:
        return self.mc.api.request("GET", f"/routers/{self.router}/learned_routes")

    def wait_learned_default(self, n: int = 2, timeout: float = 30) -> list[dict]:
        return wait_for(lambda: (lambda rs: rs if len(
            [x for x in rs if x["dst_cidr"] == "0.0.0.0/0"]) >= n else None)(
            self.learned_routes()), timeout, f"{n} learned default routes on the provider "
            "router")

    def gateway_of_flow(self, match: str) -> int | None:
        """Which gateway (0 or 1) h1's flows matching ``match`` tunnel to."""
        for f in self.compute.dump_flows():
            if match in f:
                for i, gw in enumerate(self.gateways):
                    if f"{gw.underlay_ip}->tun_dst" in f:
                        return i
        return None

    def kill_gateway(self, i: int) -> None:
        """The gateway host dies as in a power cut: its OVS (the datapath) and
        its agent, SIGKILL, in that order, so nothing more leaves it (not
        even the FIN of the agent's BGP sessions: the border routers must
        notice by their hold timers)."""
        gw = self.gateways[i]
        gw.kill_ovs()
        self.mc.kill_agent(gw, 9)

    def stop(self) -> None:
        for r in self.borders:
            try:
                r.stop()
            except Exception:
                pass
        if self.upstream is not None:
            self.upstream.stop()


def ping_gaps(output: str) -> tuple[int, int, float]:
    """(sent, received, longest gap between replies in ms) of ``ping -D`` output."""
    stamps = [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", output, re.M)]
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
    sent, got = (int(m.group(1)), int(m.group(2))) if m else (0, len(stamps))
    gap = max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=0.0)
    return sent, got, round(gap * 1000, 1)
