"""The BGP link: how the speaker's TCP session reaches the uplink's wire.

The speaker runs in the agent process and opens ordinary sockets. For each
uplink with BGP peers the agent makes a veth pair: one end (``mb<port>``)
stays in the agent's network namespace and carries the uplink router port's
MAC and address; the other (``mb<port>p``) is plugged into the host's OVS
(moved first into OVS's namespace when that is another one, as in the lab
where every cloud host has its own). Flows on the integration bridge (see
:func:`midoflow.apps.pipeline.bgp_link_flows`) pass BGP (TCP port 179) and
ARP for the port's address between the uplink and the link, so the session
shares the fate of the data path: kill the gateway's OVS and the peer's
hold timer runs out, as it would for a real box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from eventlet.green import subprocess

from midoflow.apps import ovsdb

LOG = logging.getLogger(__name__)


class LinkError(RuntimeError):
    pass


@dataclass(frozen=True)
class LinkSpec:
    port_id: str
    mac: str
    ip: str
    prefix_len: int

    @property
    def name(self) -> str:
        """The agent-side end (≤ 15 characters, the kernel's limit)."""
        return "mb" + self.port_id.replace("-", "")[:10]

    @property
    def ovs_name(self) -> str:
        return self.name + "p"


def netns_path(netns: str) -> str:
    """``ovs_netns`` as a path: a pid (the lab's per-host namespaces) or the
    name of a namespace in /var/run/netns."""
    return f"/proc/{netns}/ns/net" if netns.isdigit() else f"/var/run/netns/{netns}"


def _run(cmd: list[str], netns: str | None = None, check: bool = True) -> str:
    if netns:
        cmd = ["nsenter", f"--net={netns_path(netns)}", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise LinkError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def create(spec: LinkSpec, db: str, bridge: str, ovs_netns: str | None = None) -> None:
    """Make (or remake) the link for ``spec``; idempotent. ``ovs_netns``: the
    namespace OVS runs in when it is not ours (a pid or a name)."""
    remove(spec, db, bridge)
    a, b = spec.name, spec.ovs_name
    _run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    try:
        if ovs_netns:
            _run(["ip", "link", "set", b, "netns", ovs_netns])
        for args in (["sysctl", "-qw", f"net.ipv6.conf.{b}.disable_ipv6=1"],
                     ["ethtool", "-K", b, "tx", "off"],  # userspace datapath: see DESIGN
                     ["ip", "link", "set", b, "up"]):
            _run(args, ovs_netns, check=args[0] == "ip")
        for args in (["sysctl", "-qw", f"net.ipv6.conf.{a}.disable_ipv6=1"],
                     ["ethtool", "-K", a, "tx", "off"],
                     ["ip", "link", "set", a, "address", spec.mac],
                     ["ip", "addr", "replace", f"{spec.ip}/{spec.prefix_len}", "dev", a],
                     ["ip", "link", "set", a, "up"]):
            _run(args, check=args[0] == "ip")
        ovsdb.vsctl(db, "--may-exist", "add-port", bridge, b, "--", "set", "Interface", b,
                    f"external_ids:midoflow-bgp-link={spec.port_id}")
    except (LinkError, ovsdb.OvsError):
        remove(spec, db, bridge)
        raise


def remove(spec: LinkSpec, db: str, bridge: str) -> None:
    try:
        ovsdb.vsctl(db, "--if-exists", "del-port", bridge, spec.ovs_name)
    except ovsdb.OvsError as e:
        LOG.debug("removing %s from OVS: %s", spec.ovs_name, e)
    if exists(spec.name):
        _run(["ip", "link", "del", spec.name], check=False)


def ofport(db: str, spec: LinkSpec) -> int:
    try:
        out = ovsdb.vsctl(db, "get", "Interface", spec.ovs_name, "ofport").strip()
        return int(out) if out.lstrip("-").isdigit() else -1
    except ovsdb.OvsError:
        return -1
