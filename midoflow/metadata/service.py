"""The agent's metadata plumbing (eventlet; no os-ken): the OVS internal
port that holds 169.254.169.254, made in the namespace OVS runs in, and the
proxy's listening socket, opened inside that namespace, served by
``eventlet.wsgi`` in a green thread.

The port (``mfl-meta``) is an OVS ``internal`` interface of the integration
bridge with the fixed MAC ``METADATA_MAC``, 169.254.169.254/16, ARP off
(its kernel sends to a VM's link-local address without asking: the flows
rewrite the destination MAC anyway), no IPv6, TX checksum offload off (the
userspace datapath needs it, see DESIGN). Commands run through ``nsenter``
when OVS's namespace is another one; the socket is made there by setns
around ``socket()`` (``midoflow.bgp.link.socket_in``: it does not yield).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

import eventlet
import eventlet.wsgi
from eventlet.green import subprocess

from midoflow.bgp.link import netns_path, socket_in
from midoflow.metadata.addresses import METADATA_IP, NETWORK

LOG = logging.getLogger(__name__)

PORT_NAME = "mfl-meta"
LISTEN_PORT = 80
IP_FREEBIND = 15  # linux/in.h: bind before the address is on the interface
SOCKET_TIMEOUT = 30.0  # a VM that stops sending mid-request loses its request


class MetadataPortError(RuntimeError):
    pass


class Switch(Protocol):
    def add_port(self, name: str, external_ids: dict[str, str], timeout: float = 10,
                 **columns) -> None: ...

    def ofport(self, name: str) -> int: ...


def _run(netns: str, *cmd: str) -> str:
    argv = ["nsenter", f"--net={netns_path(netns)}", *cmd] if netns else list(cmd)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise MetadataPortError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def plug(switch: Switch, netns: str, mac: str, name: str = PORT_NAME,
         timeout: float = 10.0) -> int:
    """Make (or make again: idempotent) the metadata port; its ofport."""
    switch.add_port(name, {"midoflow-metadata": "true"}, type="internal")
    deadline = time.monotonic() + timeout
    while True:
        try:
            _run(netns, "ip", "link", "show", name)
            break
        except MetadataPortError:
            if time.monotonic() > deadline:
                raise MetadataPortError(f"OVS did not make the interface {name} within "
                                        f"{timeout:g} s") from None
            eventlet.sleep(0.05)
    try:
        _run(netns, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1")
    except MetadataPortError as e:
        LOG.debug("%s", e)
    _run(netns, "ip", "link", "set", name, "address", mac, "arp", "off", "up")
    _run(netns, "ip", "addr", "replace", f"{METADATA_IP}/{NETWORK.prefixlen}", "dev", name)
    try:
        _run(netns, "ethtool", "-K", name, "tx", "off")
    except MetadataPortError as e:
        LOG.warning("TX offload stays on for %s (TCP may fail on a userspace datapath): %s",
                    name, e)
    while switch.ofport(name) <= 0:
        if time.monotonic() > deadline:
            raise MetadataPortError(f"OVS gave {name} no OpenFlow port within {timeout:g} s")
        eventlet.sleep(0.05)
    return switch.ofport(name)


def listen(netns: str, port: int = LISTEN_PORT):
    """A green listening socket on 169.254.169.254:``port`` inside ``netns``
    ("" for ours)."""
    if netns:
        sock = socket_in(netns)
    else:
        from eventlet.green import socket as gsocket

        sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind((METADATA_IP, port))
    sock.listen(128)
    return sock


def serve(sock, app: Callable, max_clients: int = 256) -> None:
    """Serve ``app`` on ``sock`` until the green thread is killed."""
    eventlet.wsgi.server(sock, app, log_output=False, socket_timeout=SOCKET_TIMEOUT,
                         max_size=max_clients, debug=False)
