"""The agent's configuration file (INI, section ``[agent]``).

Each option is declared once, as a field of :class:`AgentConfig`: its default
(none: the option is required) and, in the field's metadata, how a value read
from the file is checked and converted. :meth:`AgentConfig.load` walks the
fields; nothing else repeats a default.
"""

from __future__ import annotations

import configparser
import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from netaddr import AddrFormatError, IPAddress

from midoflow.store.credentials import CredentialsError, load_credentials
from midoflow.store.endpoints import parse_cassandra


class ConfigError(ValueError):
    pass


# The smallest network MTU the agent's defaults may leave (every IPv4 host
# must accept 576-byte datagrams).
MIN_NETWORK_MTU = 576


# (path, option name, raw text) -> value; raises ConfigError saying what to write.
Parser = Callable[[str, str, str], Any]


def _text(_path: str, _name: str, raw: str) -> str:
    return raw


def _stripped(_path: str, _name: str, raw: str) -> str:
    return raw.strip()


def _ipv4(path: str, name: str, raw: str) -> str:
    try:
        IPAddress(raw, 4)
    except (AddrFormatError, ValueError):
        raise ConfigError(f"{path}: {name} {raw!r} is not an IPv4 address") from None
    return raw


def _integer(path: str, name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        msg = f"{path}: {name} must be an integer number of seconds"
        raise ConfigError(msg) from None


def _count(lo: int, hi: int) -> Parser:
    def parse(path: str, name: str, raw: str) -> int:
        try:
            v = int(raw)
        except ValueError:
            v = lo - 1
        if not lo <= v <= hi:
            raise ConfigError(f"{path}: {name} {raw!r}: give a whole number from {lo} to {hi}")
        return v
    return parse


def _seconds(lo: float, hi: float) -> Parser:
    def parse(path: str, name: str, raw: str) -> float:
        try:
            v = float(raw)
        except ValueError:
            v = float("nan")
        if not lo <= v <= hi:
            raise ConfigError(f"{path}: {name} {raw!r}: give a number of seconds from {lo:g} "
                              f"to {hi:g}")
        return v
    return parse


def _boolean(path: str, name: str, raw: str) -> bool:
    v = configparser.ConfigParser.BOOLEAN_STATES.get(raw.strip().lower())
    if v is None:
        raise ConfigError(f"{path}: {name} {raw!r}: give true or false")
    return v


def _flow_state(path: str, name: str, raw: str) -> str:
    spec = raw.strip()
    if spec == "local":
        return spec
    if spec.startswith("cassandra:") and parse_cassandra(spec) is not None:
        return spec
    raise ConfigError(f"{path}: {name} {spec!r}: use 'local' or "
                      "'cassandra:HOST[,HOST...][:PORT][/KEYSPACE]'")


def _credentials_file(path: str, name: str, raw: str) -> str:
    """A readable, private store credentials file (checked now, so a bad one
    stops the agent at start with the reason)."""
    cred = raw.strip()
    if cred:
        try:
            load_credentials(cred)
        except CredentialsError as e:
            raise ConfigError(f"{path}: {name}: {e}") from None
    return cred


def _upstream_url(path: str, name: str, raw: str) -> str:
    """Empty, or an http(s) URL with a host (the Nova metadata API)."""
    url = raw.strip()
    if not url:
        return url
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok \
            or parts.query or parts.fragment:
        raise ConfigError(f"{path}: {name} {url!r}: give the metadata service's URL, e.g. "
                          f"http://nova-api:8775 (or leave it empty for the built-in answers)")
    return url.rstrip("/")


def _opt(default: Any = dataclasses.MISSING, parse: Parser = _text,
         missing: Callable[[], Any] | None = None) -> Any:
    """A config option: its default (none: required), how the file's text
    becomes its value, and (``missing``) a default computed at load time that
    only the file reader applies."""
    return dataclasses.field(default=default, metadata={"parse": parse, "missing": missing})


@dataclass(frozen=True)
class AgentConfig:
    host_id: str = _opt()
    zookeeper: str = _opt()  # "host:port,..." or "memory"
    ovsdb: str = _opt()  # e.g. unix:/run/openvswitch/db.sock
    tunnel_ip: str = _opt(parse=_ipv4)
    bridge: str = _opt("br-int")
    # A file that names none gets the machine's host name.
    host_name: str = _opt("", missing=socket.gethostname)
    idle_timeout: int = _opt(60, _integer)
    vxlan_port: str = _opt("vxlan0")
    gre_port: str = _opt("gre0")
    of_listen: str = _opt("127.0.0.1:6653")  # or a unix socket path
    # Where flow state is filed for recovery: "local" (this process only) or
    # "cassandra:HOST[,HOST...][:PORT][/KEYSPACE]" (QUORUM writes).
    flow_state: str = _opt("local", _flow_state)
    # The store credentials file (midoflow/store/credentials.py; mode 0600):
    # its [zookeeper] login owns the topology nodes (digest ACL), its
    # [cassandra] login is the flow-state role. Empty: open stores (development).
    credentials_file: str = _opt("", _credentials_file)
    # The network namespace OVS runs in, when it is not the agent's (a pid or
    # a name in /var/run/netns): where the BGP links' OVS ends go.
    ovs_netns: str = _opt("", _stripped)
    # ovs-vswitchd's control socket (ovs-appctl -t), for the datapath
    # settings OpenFlow cannot make (midoflow.apps.ovsctl). Empty: the one
    # beside the OVSDB socket (ovs-vswitchd.ctl or ovs-vswitchd.<pid>.ctl).
    ovs_unixctl: str = _opt("", _stripped)
    # ZooKeeper session timeout (s): how long this host's ephemeral state
    # (ports, learned routes) outlives a dead agent. Gateways want it short.
    zk_session_timeout: float = _opt(10.0, _seconds(2.0, 600.0))
    # BGP (gateway hosts): prefixes learned per peer (more are refused, kept,
    # and learned when the peer's withdrawals make room), and how long a
    # dropped session's routes are kept as stale so a short reset rewrites
    # nothing (0: they go at once, as before).
    bgp_max_prefixes: int = _opt(1000, _count(1, 1_000_000))
    bgp_stale_time: float = _opt(10.0, _seconds(0.0, 3600.0))
    # Per-port bounds against a hostile or broken VM (issue 9): MACs learned
    # from one port (frames from further new source MACs are dropped), flows
    # installed for traffic entering by one port (beyond it, packets are
    # forwarded one by one through the agent, under the port's packet-in
    # meter), and that meter: packet-ins per second and burst per port.
    max_macs_per_port: int = _opt(64, _count(1, 1_000_000))
    max_flows_per_port: int = _opt(4096, _count(1, 10_000_000))
    packet_in_rate: int = _opt(1000, _count(1, 10_000_000))
    packet_in_burst: int = _opt(200, _count(1, 10_000_000))
    # An uplink (an exterior port of a router: a gateway's link to the border)
    # carries every tenant's new north-south flows: its own, higher meter.
    uplink_packet_in_rate: int = _opt(20000, _count(1, 10_000_000))
    # Storm control: a VM port whose meter drops more than storm_factor times
    # its packet-in rate per second is cut off for storm_seconds (agent/storm.py).
    storm_factor: int = _opt(5, _count(1, 1_000_000))
    storm_seconds: int = _opt(2, _count(1, 3600))
    # The agent's packet-in queue (agent/fairqueue.py, issue 13): packet-ins
    # waiting per port before the oldest is dropped; served round robin by
    # port, flow state and ARP replies first. packet_in_fair false: simulate
    # each packet-in in os-ken's event handler, in arrival order (the old way).
    packet_in_queue: int = _opt(256, _count(1, 1_000_000))
    packet_in_fair: bool = _opt(True, _boolean)
    # Proactive flows (agent/proactive.py, issue 13): per bound port, at most
    # this many stateless flows (to MACs learned on its bridge, to addresses
    # its routers resolved) simulated and installed before their first
    # packet, so a new connection makes no controller trip. They count toward
    # max_flows_per_port and take at most half of it (the rest stays for the
    # port's reactive flows): a host holds at most this many times its bound
    # ports. 0: off, every flow waits for its first packet (the old way).
    proactive_flows: int = _opt(64, _count(0, 1_000_000))
    # Security groups in OVS (agent/sgflows.py, issue 13): a protected port's
    # security groups are enforced by its own host's OVS connection tracking
    # (ct(), a zone per port, static flows in tables 4 and 5), not simulated:
    # its connections need no agent trip and no flow state. Each host
    # publishes its value in its state: another host's simulation leaves a
    # port's groups to the port's host only when that host says it enforces
    # them (hosts may differ, e.g. while a cloud changes it host by host).
    # false: simulated chains and replicated conntrack (the old way).
    sg_conntrack: bool = _opt(True, _boolean)
    # Fast restart: a (re)connecting agent keeps the flows OVS holds, checks
    # each against the topology and removes only the stale ones. false: wipe
    # every flow and meter and simulate everything again (the old behaviour).
    fast_restart: bool = _opt(True, _boolean)
    # MTU (issue 12): the underlay's link MTU (an uplink's, unless the port
    # sets its own) and what the tunnel encapsulation costs (50: VXLAN over
    # IPv4). A network's MTU defaults to the difference (default_mtu), which
    # DHCP tells the VMs and the routers fragment to.
    underlay_mtu: int = _opt(1500, _count(576, 9000))
    tunnel_overhead: int = _opt(50, _count(0, 200))

    # Metadata (issue 12): VMs reach http://169.254.169.254/ through this
    # agent (midoflow/metadata/). metadata_upstream: the Nova metadata API
    # ("http://HOST:8775"), answered from a built-in tree when empty;
    # metadata_secret: Nova's metadata_proxy_shared_secret (signs X-Instance-ID).
    metadata_enabled: bool = _opt(True, _boolean)
    # Load-balancer health checks (issue 14): take part in the election of
    # the agent that runs every health monitor (midoflow/apps/healthcheck.py).
    health_checks: bool = _opt(True, _boolean)
    metadata_upstream: str = _opt("", _upstream_url)
    metadata_secret: str = _opt("", _text)
    # Prometheus metrics (issue 13, midoflow/apps/metrics.py): served at
    # http://metrics_host:metrics_port/metrics; 0 (the default): not served.
    metrics_port: int = _opt(0, _count(0, 65535))
    metrics_host: str = _opt("127.0.0.1", _stripped)

    @property
    def default_mtu(self) -> int:
        return self.underlay_mtu - self.tunnel_overhead

    @classmethod
    def load(cls, path: str) -> AgentConfig:
        cp = configparser.ConfigParser()
        if not cp.read(path):
            raise ConfigError(f"cannot read agent config {path}")
        if "agent" not in cp:
            raise ConfigError(f"{path}: no [agent] section")
        sec = cp["agent"]
        fields = dataclasses.fields(cls)
        unknown = set(sec) - {f.name for f in fields}
        if unknown:
            raise ConfigError(f"{path}: unknown option(s) {', '.join(sorted(unknown))}")
        for f in fields:
            if f.default is dataclasses.MISSING and not sec.get(f.name):
                raise ConfigError(f"{path}: [agent] {f.name} is required")
        values: dict[str, Any] = {}
        for f in fields:
            raw = sec.get(f.name)
            if raw is not None:
                values[f.name] = f.metadata["parse"](path, f.name, raw)
            elif f.metadata["missing"] is not None:
                values[f.name] = f.metadata["missing"]()
        cfg = cls(**values)
        if cfg.default_mtu < MIN_NETWORK_MTU:
            raise ConfigError(f"{path}: underlay_mtu {cfg.underlay_mtu} less tunnel_overhead "
                              f"{cfg.tunnel_overhead} leaves {cfg.default_mtu} for the VMs: "
                              f"raise underlay_mtu or lower tunnel_overhead so at least "
                              f"{MIN_NETWORK_MTU} remain")
        return cfg

    def write(self, path: str) -> None:
        cp = configparser.ConfigParser()
        cp["agent"] = {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}
        with open(path, "w") as f:
            cp.write(f)
