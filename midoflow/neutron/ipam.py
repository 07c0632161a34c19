"""IP address management of IPv4 subnets: allocation pools and allocation (pure).

A subnet is the Neutron dict (``cidr``, ``gateway_ip``, ``allocation_pools``
as ``[{"start", "end"}]``, ``network_id``). The addresses in use are given by
the caller, read in the same transaction as the allocation is committed in,
so two requests racing for one address cannot both commit it.
"""

from __future__ import annotations

import netaddr

from midoflow.neutron import errors as ne


class GatewayConflictWithAllocationPools(ne.Conflict): ...


def _usable(net: netaddr.IPNetwork) -> tuple[int, int]:
    """First and last address a host may have: not the network nor the broadcast
    address (a /31 or /32 has no such addresses to spare)."""
    if net.prefixlen >= 31:
        return net.first, net.last
    return net.first + 1, net.last - 1


def pool(first: int, last: int) -> dict[str, str]:
    return {"start": str(netaddr.IPAddress(first, 4)), "end": str(netaddr.IPAddress(last, 4))}


def default_pools(cidr: str, gateway_ip: str | None) -> list[dict[str, str]]:
    """The cidr less the network, broadcast and gateway addresses."""
    net = netaddr.IPNetwork(cidr)
    lo, hi = _usable(net)
    if gateway_ip is None or not lo <= int(netaddr.IPAddress(gateway_ip)) <= hi:
        return [pool(lo, hi)]
    gw = int(netaddr.IPAddress(gateway_ip))
    out = []
    if lo < gw:
        out.append(pool(lo, gw - 1))
    if gw < hi:
        out.append(pool(gw + 1, hi))
    return out


def check_gateway(cidr: str, gateway_ip: str) -> None:
    """400 unless the gateway is a host address of the cidr."""
    net = netaddr.IPNetwork(cidr)
    lo, hi = _usable(net)
    if not lo <= int(netaddr.IPAddress(gateway_ip)) <= hi:
        raise ne.BadRequest(f"Invalid input for gateway_ip. Reason: Gateway IP {gateway_ip} is "
                            f"not a host address of subnet {cidr}.")


def validate_pools(cidr: str, gateway_ip: str | None,
                   pools: list[dict[str, str]]) -> list[dict[str, str]]:
    """Pools (already IPv4-checked) sorted by start: each inside the cidr's host
    addresses, start <= end, not overlapping another or the gateway."""
    net = netaddr.IPNetwork(cidr)
    lo, hi = _usable(net)
    spans = []
    for p in pools:
        s, e = int(netaddr.IPAddress(p["start"])), int(netaddr.IPAddress(p["end"]))
        text = f"{p['start']}-{p['end']}"
        if s > e:
            raise ne.BadRequest(f"The allocation pool {text} is not valid: its start is "
                                "after its end.")
        if s < lo or e > hi:
            raise ne.BadRequest(f"The allocation pool {text} spans beyond the subnet cidr "
                                f"{cidr} (its host addresses are "
                                f"{netaddr.IPAddress(lo, 4)}-{netaddr.IPAddress(hi, 4)}).")
        spans.append((s, e, text))
    spans.sort()
    for (_, e1, t1), (s2, _, t2) in zip(spans, spans[1:], strict=False):
        if s2 <= e1:
            raise ne.BadRequest(f"Found overlapping allocation pools: {t1} and {t2}.")
    if gateway_ip is not None:
        gw = int(netaddr.IPAddress(gateway_ip))
        for s, e, text in spans:
            if s <= gw <= e:
                raise GatewayConflictWithAllocationPools(
                    f"Gateway ip {gateway_ip} conflicts with allocation pool {text}.")
    return [pool(s, e) for s, e, _ in spans]


def in_subnet(subnet: dict, ip: str) -> bool:
    """Whether ``ip`` is a host address of the subnet."""
    net = netaddr.IPNetwork(subnet["cidr"])
    lo, hi = _usable(net)
    return lo <= int(netaddr.IPAddress(ip)) <= hi


def in_pools(subnet: dict, ip: str) -> bool:
    i = int(netaddr.IPAddress(ip))
    return any(int(netaddr.IPAddress(p["start"])) <= i <= int(netaddr.IPAddress(p["end"]))
               for p in subnet.get("allocation_pools") or ())


def allocate(subnet: dict, used: set[str], ip: str | None = None) -> str:
    """An address of the subnet that is not in ``used``.

    ``ip`` given: that address, if it is a host address of the subnet (400
    otherwise; it may lie outside the pools, as in Neutron, and may be the
    gateway: the caller refuses that for ports other than a router's) and not
    used (``IpAddressInUse``). Else the lowest free address of the pools, or
    ``IpAddressGenerationFailure`` when they are exhausted."""
    net_id = subnet.get("network_id", "")
    if ip is not None:
        if netaddr.IPAddress(ip).version != 4 or not in_subnet(subnet, ip):
            raise ne.InvalidInput(f"IP address {ip} is not a valid IP for the specified "
                                  f"subnet {subnet.get('id', '')} ({subnet['cidr']}).")
        if ip in used:
            raise ne.IpAddressInUse(f"Unable to complete operation for network {net_id}. "
                                    f"The IP address {ip} is in use.")
        return ip
    taken = {int(netaddr.IPAddress(u)) for u in used}
    if subnet.get("gateway_ip"):
        taken.add(int(netaddr.IPAddress(subnet["gateway_ip"])))
    for p in sorted(subnet.get("allocation_pools") or (),
                    key=lambda p: int(netaddr.IPAddress(p["start"]))):
        i, end = int(netaddr.IPAddress(p["start"])), int(netaddr.IPAddress(p["end"]))
        while i <= end and i in taken:
            i += 1
        if i <= end:
            return str(netaddr.IPAddress(i, 4))
    raise ne.IpAddressGenerationFailure(f"No more IP addresses available on network "
                                        f"{net_id}.")


def overlaps(a: str, b: str) -> bool:
    na, nb = netaddr.IPNetwork(a), netaddr.IPNetwork(b)
    return na.first <= nb.last and nb.first <= na.last
