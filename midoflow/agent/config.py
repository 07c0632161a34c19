"""The agent's configuration file (INI, section ``[agent]``)."""

from __future__ import annotations

import configparser
import socket
from dataclasses import dataclass

from netaddr import AddrFormatError, IPAddress


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    host_id: str
    zookeeper: str  # "host:port,..." or "memory"
    ovsdb: str  # e.g. unix:/run/openvswitch/db.sock
    tunnel_ip: str
    bridge: str = "br-int"
    host_name: str = ""
    idle_timeout: int = 60
    vxlan_port: str = "vxlan0"
    gre_port: str = "gre0"
    of_listen: str = "127.0.0.1:6653"  # or a unix socket path
    # Where flow state is filed for recovery: "local" (this process only) or
    # "cassandra:HOST[,HOST...][:PORT][/KEYSPACE]" (QUORUM writes).
    flow_state: str = "local"
    # The network namespace OVS runs in, when it is not the agent's (a pid or
    # a name in /var/run/netns): where the BGP links' OVS ends go.
    ovs_netns: str = ""
    # ZooKeeper session timeout (s): how long this host's ephemeral state
    # (ports, learned routes) outlives a dead agent. Gateways want it short.
    zk_session_timeout: float = 10.0
    # Per-port bounds against a hostile or broken VM (issue 9): MACs learned
    # from one port (frames from further new source MACs are dropped), flows
    # installed for traffic entering by one port (beyond it, packets are
    # forwarded one by one through the agent, under the port's packet-in
    # meter), and that meter: packet-ins per second and burst per port.
    max_macs_per_port: int = 64
    max_flows_per_port: int = 4096
    packet_in_rate: int = 1000
    packet_in_burst: int = 200
    # An uplink (an exterior port of a router: a gateway's link to the border)
    # carries every tenant's new north-south flows: its own, higher meter.
    uplink_packet_in_rate: int = 20000
    # Storm control: a VM port whose meter drops more than storm_factor times
    # its packet-in rate per second is cut off for storm_seconds (agent/storm.py).
    storm_factor: int = 5
    storm_seconds: int = 2

    @classmethod
    def load(cls, path: str) -> AgentConfig:
        cp = configparser.ConfigParser()
        if not cp.read(path):
            raise ConfigError(f"cannot read agent config {path}")
        if "agent" not in cp:
            raise ConfigError(f"{path}: no [agent] section")
        sec = cp["agent"]
        known = set(cls.__dataclass_fields__)
        unknown = set(sec) - known
        if unknown:
            raise ConfigError(f"{path}: unknown option(s) {', '.join(sorted(unknown))}")
        for req in ("host_id", "zookeeper", "ovsdb", "tunnel_ip"):
            if not sec.get(req):
                raise ConfigError(f"{path}: [agent] {req} is required")
        try:
            IPAddress(sec["tunnel_ip"], 4)
        except (AddrFormatError, ValueError):
            msg = f"{path}: tunnel_ip {sec['tunnel_ip']!r} is not an IPv4 address"
            raise ConfigError(msg) from None
        try:
            idle = int(sec.get("idle_timeout", "60"))
        except ValueError:
            msg = f"{path}: idle_timeout must be an integer number of seconds"
            raise ConfigError(msg) from None
        return cls(
            host_id=sec["host_id"],
            zookeeper=sec["zookeeper"],
            ovsdb=sec["ovsdb"],
            tunnel_ip=sec["tunnel_ip"],
            bridge=sec.get("bridge", "br-int"),
            host_name=sec.get("host_name", socket.gethostname()),
            idle_timeout=idle,
            vxlan_port=sec.get("vxlan_port", "vxlan0"),
            gre_port=sec.get("gre_port", "gre0"),
            of_listen=sec.get("of_listen", "127.0.0.1:6653"),
            flow_state=_flow_state(path, sec.get("flow_state", "local")),
            ovs_netns=sec.get("ovs_netns", "").strip(),
            zk_session_timeout=_seconds(path, sec, "zk_session_timeout", 10.0, 2.0, 600.0),
            max_macs_per_port=_count(path, sec, "max_macs_per_port", 64, 1, 1_000_000),
            max_flows_per_port=_count(path, sec, "max_flows_per_port", 4096, 1, 10_000_000),
            packet_in_rate=_count(path, sec, "packet_in_rate", 1000, 1, 10_000_000),
            packet_in_burst=_count(path, sec, "packet_in_burst", 200, 1, 10_000_000),
            uplink_packet_in_rate=_count(path, sec, "uplink_packet_in_rate", 20000, 1,
                                         10_000_000),
            storm_factor=_count(path, sec, "storm_factor", 5, 1, 1_000_000),
            storm_seconds=_count(path, sec, "storm_seconds", 2, 1, 3600),
        )

    def write(self, path: str) -> None:
        cp = configparser.ConfigParser()
        cp["agent"] = {k: str(v) for k, v in self.__dict__.items()}
        with open(path, "w") as f:
            cp.write(f)


def _seconds(path: str, sec, name: str, default: float, lo: float, hi: float) -> float:
    raw = sec.get(name, str(default))
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not lo <= v <= hi:
        raise ConfigError(f"{path}: {name} {raw!r}: give a number of seconds from {lo:g} "
                          f"to {hi:g}")
    return v


def _count(path: str, sec, name: str, default: int, lo: int, hi: int) -> int:
    raw = sec.get(name, str(default))
    try:
        v = int(raw)
    except ValueError:
        v = lo - 1
    if not lo <= v <= hi:
        raise ConfigError(f"{path}: {name} {raw!r}: give a whole number from {lo} to {hi}")
    return v


def _flow_state(path: str, spec: str) -> str:
    spec = spec.strip()
    if spec == "local":
        return spec
    if spec.startswith("cassandra:") and parse_cassandra(spec) is not None:
        return spec
    raise ConfigError(f"{path}: flow_state {spec!r}: use 'local' or "
                      "'cassandra:HOST[,HOST...][:PORT][/KEYSPACE]'")


def parse_cassandra(spec: str) -> tuple[list[str], int, str] | None:
    """"cassandra:h1,h2:9042/ks" -> (["h1", "h2"], 9042, "ks"); None if malformed."""
    rest = spec.removeprefix("cassandra:")
    rest, _, keyspace = rest.partition("/")
    hosts, port = rest, 9042
    if ":" in rest:
        hosts, _, p = rest.rpartition(":")
        if not p.isdigit() or not 0 < int(p) < 65536:
            return None
        port = int(p)
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    if not names or (keyspace and not keyspace.replace("_", "").isalnum()):
        return None
    return names, port, keyspace or "midoflow"
