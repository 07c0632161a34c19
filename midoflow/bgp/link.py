"""The BGP link: how the speaker's TCP sessions reach the uplink's wire.

The speaker runs in the agent process, but its sockets live in a network
namespace of their own (``mbgp-<host>``, one per agent, like MidoNet's BGP
namespaces): nothing of the uplink's addressing ever touches the host's
own routing table. For each uplink with BGP peers the agent makes a veth
pair: one end (``mb<port>``) goes into that namespace with the uplink router
port's MAC and address; the other (``mb<port>p``) is plugged into the host's
OVS (moved first into OVS's namespace when that is another one, as in the
lab where every cloud host has its own). Flows on the integration bridge
(:func:`midoflow.apps.pipeline.bgp_link_flows`) pass BGP (TCP port 179) and
ARP for the port's address between the uplink and the link, so a session
shares the fate of the data path: kill the gateway's OVS and the peer's
hold timer runs out, as it would for a real box.

:func:`socket_in` makes a socket inside the namespace (setns around
``socket()``; it does not yield, so no other green thread runs meanwhile).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
from dataclasses import dataclass

from eventlet.green import subprocess

from midoflow.apps import ovsdb
from midoflow.bgp.names import link_name, namespace_name

__all__ = ["LinkSpec", "LinkError", "create", "remove", "ofport", "socket_in",
           "namespace_name", "ensure_namespace", "remove_namespace"]

LOG = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


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
        """The speaker's end (≤ 15 characters, the kernel's limit)."""
        return link_name(self.port_id)

    @property
    def ovs_name(self) -> str:
        return self.name + "p"


def netns_path(netns: str) -> str:
    """A namespace as a path: a pid (the lab's per-host namespaces) or a name
    in /var/run/netns."""
    return f"/proc/{netns}/ns/net" if netns.isdigit() else f"/var/run/netns/{netns}"


def _run(cmd: list[str], netns: str | None = None, check: bool = True) -> str:
    if netns:
        cmd = ["nsenter", f"--net={netns_path(netns)}", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise LinkError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def ensure_namespace(name: str) -> None:
    if not os.path.exists(netns_path(name)):
        _run(["ip", "netns", "add", name])
    _run(["ip", "link", "set", "lo", "up"], name)


def remove_namespace(name: str) -> None:
    if os.path.exists(netns_path(name)):
        _run(["ip", "netns", "del", name], check=False)


def create(spec: LinkSpec, db: str, bridge: str, bgp_netns: str,
           ovs_netns: str | None = None) -> None:
    """Make (or remake) the link for ``spec``; idempotent. ``bgp_netns``: the
    speaker's namespace (a name); ``ovs_netns``: the namespace OVS runs in
    when it is not ours (a pid or a name)."""
    remove(spec, db, bridge, bgp_netns)
    ensure_namespace(bgp_netns)
    a, b = spec.name, spec.ovs_name
    _run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    try:
        _run(["ip", "link", "set", a, "netns", bgp_netns])
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
            _run(args, bgp_netns, check=args[0] == "ip")
        ovsdb.vsctl(db, "--may-exist", "add-port", bridge, b, "--", "set", "Interface", b,
                    f"external_ids:midoflow-bgp-link={spec.port_id}")
    except (LinkError, ovsdb.OvsError):
        remove(spec, db, bridge, bgp_netns)
        raise


def remove(spec: LinkSpec, db: str, bridge: str, bgp_netns: str) -> None:
    try:
        ovsdb.vsctl(db, "--if-exists", "del-port", bridge, spec.ovs_name)
    except ovsdb.OvsError as e:
        LOG.debug("removing %s from OVS: %s", spec.ovs_name, e)
    for ns in (bgp_netns, None):  # a half-made link may still be in ours
        if ns is None or os.path.exists(netns_path(ns)):
            _run(["ip", "link", "del", spec.name], ns, check=False)


def ofport(db: str, spec: LinkSpec) -> int:
    try:
        out = ovsdb.vsctl(db, "get", "Interface", spec.ovs_name, "ofport").strip()
        return int(out) if out.lstrip("-").isdigit() else -1
    except ovsdb.OvsError:
        return -1


def socket_in(netns: str, family: int = socket.AF_INET, type_: int = socket.SOCK_STREAM):
    """A (green) socket created inside the namespace ``netns``."""
    from eventlet.green import socket as gsocket

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path(netns), os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            return gsocket.socket(family, type_)
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # never stay there
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)
