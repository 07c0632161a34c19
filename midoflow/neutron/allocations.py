"""The allocation index of a network: the MACs and IPv4 addresses taken on it.

One store object per network, kind ``neutron.allocations``, id = the network id::

    {"id": <network id>, "macs": {mac: port_id}, "ips": {subnet_id: {ip: owner_id}}}

(owners: Neutron ports, and floating IPs on an external network). ``ips`` has a
key for every subnet of the network, so it also names the network's subnets.
It is written in the same commit as the network, its subnets, its ports and
floating IPs, by every request that allocates or releases an address or a MAC
on the network: reading it replaces a scan of every port and floating IP in
the cloud, and its version is the serialisation point of allocations on one
network (of two requests that read it, the second to commit loses the race and
is re-run by the service, reading the winner's allocation).

Size: ZooKeeper refuses a node over 1 MB (``jute.maxbuffer``). A port with one
address costs about 120 bytes here (~120 KB for 1,000 ports), so a network holds
some 5,000 ports before the index reaches :data:`MAX_BYTES`; a fully allocated
/16 (65,000 addresses) would not fit. Sharding per subnet would not help (the
MACs are per network), so a request that would grow the index past
:data:`MAX_BYTES` is refused with a 409 that says so, before the store would
refuse the commit.

Upgrade: a network created before the index existed gets one built from a scan
of its ports, floating IPs and subnets on first use (staged as a create: two
requests building it concurrently race like any other write).
"""

from __future__ import annotations

import json

from midoflow.neutron import errors as ne
from midoflow.neutron.base import Op, kind_of
from midoflow.neutron.ipam import in_subnet
from midoflow.store.base import Data

KIND = kind_of("allocations")
MAX_BYTES = 700_000


def empty(net_id: str) -> Data:
    return {"id": net_id, "macs": {}, "ips": {}}


def build(net_id: str, ports: list[Data], fips: list[Data], subnets: list[Data]) -> Data:
    """The index as the Neutron objects say (all of a kind may be given: those of
    other networks are ignored)."""
    idx = empty(net_id)
    subs = [s for s in subnets if s.get("network_id") == net_id]
    for s in subs:
        idx["ips"][s["id"]] = {}
    for p in ports:
        if p.get("network_id") == net_id:
            _claim_port(idx, p)
    for f in fips:
        addr = f.get("floating_ip_address")
        if addr and f.get("floating_network_id") == net_id:
            sub = next((s for s in subs if in_subnet(s, addr)), None)
            if sub is not None:
                idx["ips"][sub["id"]][addr] = f["id"]
    return idx


def _cache(op: Op) -> dict[str, Data]:
    return op.__dict__.setdefault("_allocations", {})


def load(op: Op, net_id: str) -> Data:
    """The network's index as staged in this request (the working copy: change
    it, then :func:`save`). Built from a scan if the network has none yet."""
    cache = _cache(op)
    if net_id in cache:
        return cache[net_id]
    idx = op.txn.get(KIND, net_id)
    if idx is None:
        if op.get("networks", net_id) is None:
            raise ne.NetworkNotFound(f"Network {net_id} could not be found.")
        idx = build(net_id, op.scan("ports"), op.scan("floatingips"), op.scan("subnets"))
        op.txn.create(KIND, idx)
    else:
        op.txn.check(KIND, net_id)  # a request that only reads it still serialises
    cache[net_id] = idx
    return idx


def save(op: Op, idx: Data) -> None:
    """Stage the working copy (409 if it would outgrow a ZooKeeper node)."""
    size = len(json.dumps(idx, separators=(",", ":")))
    if size > MAX_BYTES:
        raise ne.Conflict(f"Network {idx['id']} has too many allocations for its index "
                          f"({len(idx['macs'])} ports, {size} bytes, at most {MAX_BYTES}): "
                          "create further ports on another network")
    op.txn.put(KIND, idx)


def create(op: Op, net_id: str) -> None:
    """A new network's empty index."""
    idx = empty(net_id)
    _cache(op)[net_id] = idx
    op.txn.create(KIND, idx)


def drop(op: Op, net_id: str) -> None:
    """The network is deleted: its index goes with it (read first, so a
    concurrent allocation on the network makes this commit fail)."""
    load(op, net_id)
    _cache(op).pop(net_id, None)
    op.txn.delete(KIND, net_id)


# ------------------------------------------------------------------ reads
def used(op: Op, net_id: str, subnet_id: str) -> set[str]:
    return set(load(op, net_id)["ips"].get(subnet_id) or ())


def macs(op: Op, net_id: str) -> dict[str, str]:
    return load(op, net_id)["macs"]


def subnet_ids(op: Op, net_id: str) -> list[str]:
    return list(load(op, net_id)["ips"])


# ------------------------------------------------------------------ changes
def _claim_port(idx: Data, port: Data) -> None:
    if port.get("mac_address"):
        idx["macs"][port["mac_address"]] = port["id"]
    for f in port.get("fixed_ips") or ():
        idx["ips"].setdefault(f["subnet_id"], {})[f["ip_address"]] = port["id"]


def _release_port(idx: Data, port: Data) -> None:
    if idx["macs"].get(port.get("mac_address")) == port["id"]:
        del idx["macs"][port["mac_address"]]
    for f in port.get("fixed_ips") or ():
        ips = idx["ips"].get(f["subnet_id"]) or {}
        if ips.get(f["ip_address"]) == port["id"]:
            del ips[f["ip_address"]]


def port_changed(op: Op, old: Data | None, new: Data | None) -> None:
    """A port was created (``old`` None), changed, or deleted (``new`` None)."""
    idx = load(op, (new or old or {})["network_id"])
    if old is not None:
        _release_port(idx, old)
    if new is not None:
        _claim_port(idx, new)
    save(op, idx)


def claim_ip(op: Op, net_id: str, subnet_id: str, ip: str, owner_id: str) -> None:
    """A floating IP's address."""
    idx = load(op, net_id)
    idx["ips"].setdefault(subnet_id, {})[ip] = owner_id
    save(op, idx)


def release_ip(op: Op, net_id: str, ip: str, owner_id: str) -> None:
    idx = load(op, net_id)
    for ips in idx["ips"].values():
        if ips.get(ip) == owner_id:
            del ips[ip]
    save(op, idx)


def subnet_added(op: Op, net_id: str, subnet_id: str) -> None:
    idx = load(op, net_id)
    idx["ips"].setdefault(subnet_id, {})
    save(op, idx)


def subnet_removed(op: Op, net_id: str, subnet_id: str) -> None:
    idx = load(op, net_id)
    idx["ips"].pop(subnet_id, None)
    save(op, idx)
