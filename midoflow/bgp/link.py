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

Namespaces, links and addresses are handled through pyroute2 (netlink);
:func:`socket_in` makes a socket inside the namespace (setns around
``socket()``; it does not yield, so no other green thread runs meanwhile).
The OVS side (adding the port, its ofport) is the :class:`Switch` the agent
passes in (:class:`midoflow.apps.ovsdb.OvsdbMonitor`): this package knows no
OVSDB.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from eventlet.green import subprocess
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from midoflow.bgp.names import link_name, namespace_name

__all__ = ["LinkSpec", "LinkError", "Switch", "create", "remove", "ofport", "socket_in",
           "namespace_name", "ensure_namespace", "remove_namespace"]

LOG = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class LinkError(RuntimeError):
    pass


class Switch(Protocol):
    """What a link needs of the local OVS bridge."""

    def add_port(self, name: str, external_ids: dict[str, str]) -> None: ...

    def del_port(self, name: str) -> None: ...

    def ofport(self, name: str) -> int: ...


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


@contextlib.contextmanager
def _entered(netns: str) -> Iterator[None]:
    """This thread inside ``netns`` for the block (which must not yield)."""
    pr_netns.pushns()
    try:
        pr_netns.setns(netns_path(netns), flags=0)  # flags=0: never create it
        yield
    finally:
        pr_netns.popns()


@contextlib.contextmanager
def _iproute(netns: str | None) -> Iterator[IPRoute]:
    """An IPRoute acting in ``netns`` (None: ours): its netlink socket is made there."""
    if netns:
        with _entered(netns):
            ipr = IPRoute()
    else:
        ipr = IPRoute()
    try:
        yield ipr
    except NetlinkError as e:
        raise LinkError(f"netlink in {netns or 'the host namespace'}: {e}") from e
    finally:
        ipr.close()


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _tune(name: str, netns: str | None) -> None:
    """No IPv6 on ``name``; TX checksum offload off (the userspace datapath
    needs it: see DESIGN). Best effort, like the sysctl/ethtool it replaces:
    ethtool's offload flags stay a command (pyroute2's ethtool API has no
    "tx" group)."""
    try:
        if netns:
            with _entered(netns):  # /proc/sys/net is the namespace of who opens it
                _disable_ipv6(name)
        else:
            _disable_ipv6(name)
    except OSError as e:
        LOG.debug("disable_ipv6 on %s: %s", name, e)
    cmd = ["ethtool", "-K", name, "tx", "off"]
    if netns:
        cmd = ["nsenter", f"--net={netns_path(netns)}", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        LOG.debug("%s: %s", " ".join(cmd), proc.stderr.strip())


def _disable_ipv6(name: str) -> None:
    with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
        f.write("1")


def ensure_namespace(name: str) -> None:
    """The named namespace, made if missing: this thread unshares into a new
    one, pyroute2 bind-mounts it under /var/run/netns, and the thread goes
    back (pyroute2's own ``create`` forks: a forked eventlet process runs the
    agent's green threads in the child, against the parent's sockets)."""
    if not os.path.exists(netns_path(name)):
        pr_netns.pushns()
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            pr_netns.attach(name, "thread-self")
        except OSError as e:
            raise LinkError(f"cannot create network namespace {name}: {e}") from e
        finally:
            pr_netns.popns()
    with _iproute(name) as ipr:
        ipr.link("set", index=_index(ipr, "lo"), state="up")


def remove_namespace(name: str) -> None:
    if os.path.exists(netns_path(name)):
        try:
            pr_netns.remove(name)
        except OSError as e:
            LOG.warning("cannot remove network namespace %s: %s", name, e)


def _move(ipr: IPRoute, name: str, netns: str) -> None:
    fd = os.open(netns_path(netns), os.O_RDONLY)
    try:
        ipr.link("set", index=_index(ipr, name), net_ns_fd=fd)
    finally:
        os.close(fd)


def create(spec: LinkSpec, switch: Switch, bgp_netns: str,
           ovs_netns: str | None = None) -> None:
    """Make (or remake) the link for ``spec``; idempotent. ``bgp_netns``: the
    speaker's namespace (a name); ``ovs_netns``: the namespace OVS runs in
    when it is not ours (a pid or a name)."""
    remove(spec, switch, bgp_netns)
    ensure_namespace(bgp_netns)
    a, b = spec.name, spec.ovs_name
    try:
        with _iproute(None) as ipr:
            ipr.link("add", ifname=a, kind="veth", peer=b)
            _move(ipr, a, bgp_netns)
            if ovs_netns:
                _move(ipr, b, ovs_netns)
        _tune(b, ovs_netns)
        with _iproute(ovs_netns) as ipr:
            ipr.link("set", index=_index(ipr, b), state="up")
        _tune(a, bgp_netns)
        with _iproute(bgp_netns) as ipr:
            idx = _index(ipr, a)
            ipr.link("set", index=idx, address=spec.mac)
            ipr.addr("replace", index=idx, address=spec.ip, prefixlen=spec.prefix_len)
            ipr.link("set", index=idx, state="up")
        switch.add_port(b, {"midoflow-bgp-link": spec.port_id})
    except Exception:
        remove(spec, switch, bgp_netns)
        raise


def remove(spec: LinkSpec, switch: Switch, bgp_netns: str) -> None:
    try:
        switch.del_port(spec.ovs_name)
    except Exception as e:
        LOG.debug("removing %s from OVS: %s", spec.ovs_name, e)
    for ns in (bgp_netns, None):  # a half-made link may still be in ours
        if ns is not None and not os.path.exists(netns_path(ns)):
            continue
        try:
            with _iproute(ns) as ipr:
                idx = _index(ipr, spec.name)
                if idx is not None:
                    ipr.link("del", index=idx)  # and its peer with it
        except LinkError as e:
            LOG.debug("removing %s: %s", spec.name, e)


def ofport(switch: Switch, spec: LinkSpec) -> int:
    return switch.ofport(spec.ovs_name)


def socket_in(netns: str, family: int = socket.AF_INET, type_: int = socket.SOCK_STREAM):
    """A (green) socket created inside the namespace ``netns``."""
    from eventlet.green import socket as gsocket

    with _entered(netns):
        return gsocket.socket(family, type_)
