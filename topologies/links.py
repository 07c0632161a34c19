"""Links in the root network namespace through netlink (pyroute2), not by
running ``ip``: the underlay bridges and the veths that plug Mininet nodes
into them. Inside a node's namespace the topologies still run ``ip`` through
Mininet (``mnexec``): a netlink socket there would need a forked helper
process (pyroute2's NetNS) in a test process full of threads."""

from __future__ import annotations

import contextlib

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

ENODEV = 19


class LinkError(RuntimeError):
    """A link could not be made; the message says which and why."""


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LinkError(f"no link named {name} in the root namespace")
    return found[0]


def add_bridge(name: str) -> None:
    """A Linux bridge, up, with no STP, no forwarding delay and no netfilter
    calls (iptables must not see the underlay's bridged frames)."""
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
        except NetlinkError as e:
            raise LinkError(f"cannot create bridge {name}: {e} (a leftover of an earlier "
                            f"run? `make clean` removes them)") from e
        idx = _index(ipr, name)
        # only with br_netfilter loaded: the kernel refuses them otherwise, harmlessly
        with contextlib.suppress(NetlinkError):
            ipr.link("set", index=idx, kind="bridge", br_nf_call_iptables=0,
                     br_nf_call_arptables=0)
        ipr.link("set", index=idx, state="up")


def add_veth(name: str, peer: str, peer_pid: int, master: str) -> None:
    """A veth pair: ``name`` in the root namespace, enslaved to the bridge
    ``master`` and up; ``peer`` moved into the network namespace of process
    ``peer_pid`` (a Mininet node's shell), left down."""
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind="veth",
                     peer={"ifname": peer, "net_ns_pid": peer_pid})
        except NetlinkError as e:
            raise LinkError(f"cannot create veth {name} <-> {peer} (pid {peer_pid}): {e}") from e
        ipr.link("set", index=_index(ipr, name), master=_index(ipr, master), state="up")


def delete(name: str) -> None:
    """Remove a link of the root namespace if it is there (its veth peer goes
    with it)."""
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as e:
            if e.code != ENODEV:
                raise LinkError(f"cannot delete link {name}: {e}") from e
