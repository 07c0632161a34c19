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
        )

    def write(self, path: str) -> None:
        cp = configparser.ConfigParser()
        cp["agent"] = {k: str(v) for k, v in self.__dict__.items()}
        with open(path, "w") as f:
            cp.write(f)
