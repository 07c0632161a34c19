"""Routers forget what a Neutron port no longer says: when a port's addresses
or MAC go (port deleted, ``fixed_ips`` or ``mac_address`` updated) or an
address is taken (:func:`port_changed` with ``old`` None, for a created port),
the ARP entries the routers on its network learned that now point at the wrong
MAC are removed once the request has committed.

Why remove, not seed: the agents' router ARP tables hold what the data plane
proved (an ARP packet seen from that MAC); an entry written from the API would
claim a VM answers before it is even plugged, and would outlive the router
(only an agent's session takes its ephemeral entries with it). A removed entry
costs one ARP round trip on the next packet (the packet waits for the answer,
see :mod:`midoflow.agent.arphold`): every agent watching the table invalidates
the flows tagged with that (router, address) as for a changed entry, and the
next packet finds the new owner. MidoNet seeded its bridges' IP-to-MAC tables
from Neutron ports for ARP suppression instead; midoflow's bridges have none.

The removal runs after the commit (``op.after_commit``), from the routers and
ports the request staged: a request that fails or is retried removes nothing.
A removal that fails (the store unreachable) is logged, not raised: the
request has committed, and the agents' ARP refresh heals the entry later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from midoflow import model
from midoflow.neutron.base import Op, on_port_deleted
from midoflow.store import paths
from midoflow.store.base import Data, Store

LOG = logging.getLogger(__name__)


def _ips(port: Data | None) -> set[str]:
    return {f["ip_address"] for f in (port or {}).get("fixed_ips") or ()
            if f.get("ip_address")}


def _mac(port: Data | None) -> str:
    return ((port or {}).get("mac_address") or "").lower()


def is_stale(ip: str, mac: str, old: Data | None, new: Data | None) -> bool:
    """Whether a router's ARP entry ``ip -> mac`` on the port's network is wrong
    once a port changed from ``old`` to ``new`` (None: did not exist / deleted).

    An address the port now has must point at the port's MAC; an address the
    port gave up, and (when the port's MAC went) anything pointing at the old
    MAC (an allowed address pair, a squatter), points at nothing that exists."""
    mac = mac.lower()
    if ip in _ips(new):
        return mac != _mac(new)
    if old is None:
        return False
    if ip in _ips(old):
        return True
    return mac == _mac(old) and _mac(new) != mac


def routers_on(op: Op, network_id: str) -> set[str]:
    """The routers linked to the network's bridge (as staged): the Neutron
    routers' interfaces and gateways, and any router linked with the native
    API. Native links, as the agents see them; and a port delete has listed
    the native ports already (its reference checks)."""
    ports = {p["id"]: p for p in op.txn.scan(model.PORTS)}
    out = set()
    for p in ports.values():
        peer = ports.get(p.get("peer_id") or "") if p.get("device_id") == network_id else None
        if peer is not None and peer.get("device_type") == model.DEVICE_ROUTER:
            out.add(peer["device_id"])
    return out


def forget_stale(store: Store, routers: Iterable[str], old: Data | None,
                 new: Data | None) -> list[str]:
    """Remove the stale entries (:func:`is_stale`) from the routers' ARP tables;
    the removed entries' paths."""
    gone = []
    for rid in sorted(routers):
        table = paths.arp_table(rid)
        for name in store.list_state(table):
            entry = paths.parse_arp_entry(name)
            if entry and is_stale(entry[0], entry[1], old, new):
                store.delete_state(f"{table}/{name}")
                gone.append(f"{table}/{name}")
    return gone


def port_changed(op: Op, old: Data | None, new: Data | None) -> None:
    """Schedule, after this request's commit, the removal of the ARP entries
    the change of a Neutron port from ``old`` to ``new`` made stale."""
    if (_ips(old), _mac(old)) == (_ips(new), _mac(new)):
        return
    port = new or old
    if port is None:
        return
    routers = routers_on(op, port["network_id"])
    if not routers:
        return
    store = op.txn.store

    def run() -> None:
        try:
            for path in forget_stale(store, routers, old, new):
                LOG.info("router ARP entry %s removed: port %s changed", path, port["id"])
        except Exception as e:  # noqa: BLE001 (committed already: log, never fail)
            LOG.warning("cannot remove stale router ARP entries for port %s (they are "
                        "refreshed by traffic later): %s", port["id"], e)

    op.after_commit.append(run)


@on_port_deleted
def port_deleted(op: Op, port: Data) -> None:
    port_changed(op, port, None)
