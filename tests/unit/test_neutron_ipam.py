"""IPAM of Neutron subnets (pure): pools, their validation, allocation."""

from __future__ import annotations

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.neutron import errors as ne
from midoflow.neutron import ipam


def subnet(cidr: str = "10.0.0.0/24", gateway: str | None = "10.0.0.1",
           pools: list | None = None) -> dict:
    return {"id": "s", "network_id": "n", "cidr": cidr, "gateway_ip": gateway,
            "allocation_pools": ipam.default_pools(cidr, gateway) if pools is None else pools}


def test_default_pools_leave_out_network_broadcast_and_gateway():
    assert ipam.default_pools("10.0.0.0/24", "10.0.0.1") == [
        {"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert ipam.default_pools("10.0.0.0/24", "10.0.0.100") == [
        {"start": "10.0.0.1", "end": "10.0.0.99"}, {"start": "10.0.0.101", "end": "10.0.0.254"}]
    assert ipam.default_pools("10.0.0.0/24", None) == [{"start": "10.0.0.1", "end": "10.0.0.254"}]
    assert ipam.default_pools("10.0.0.0/30", "10.0.0.2") == [
        {"start": "10.0.0.1", "end": "10.0.0.1"}]


def test_allocation_takes_the_lowest_free_address_then_fails():
    s = subnet("10.0.0.0/29", "10.0.0.1")
    used: set[str] = set()
    got = []
    for _ in range(5):
        got.append(ipam.allocate(s, used))
        used.add(got[-1])
    assert got == [f"10.0.0.{i}" for i in range(2, 7)]
    with pytest.raises(ne.IpAddressGenerationFailure, match="No more IP addresses"):
        ipam.allocate(s, used)
    used.discard("10.0.0.4")
    assert ipam.allocate(s, used) == "10.0.0.4"


def test_requested_addresses():
    s = subnet()
    assert ipam.allocate(s, set(), "10.0.0.77") == "10.0.0.77"
    with pytest.raises(ne.IpAddressInUse, match="10.0.0.77 is in use"):
        ipam.allocate(s, {"10.0.0.77"}, "10.0.0.77")
    for bad in ("10.0.1.5", "10.0.0.0", "10.0.0.255"):
        with pytest.raises(ne.BadRequest, match="not a valid IP for the specified subnet"):
            ipam.allocate(s, set(), bad)
    # the gateway is the caller's business (a router interface takes it)
    assert ipam.allocate(s, set(), "10.0.0.1") == "10.0.0.1"


def test_pool_validation_errors():
    cidr = "10.0.0.0/24"
    with pytest.raises(ne.BadRequest, match="spans beyond the subnet cidr"):
        ipam.validate_pools(cidr, None, [{"start": "10.0.0.200", "end": "10.0.1.3"}])
    with pytest.raises(ne.BadRequest, match="spans beyond"):
        ipam.validate_pools(cidr, None, [{"start": "10.0.0.0", "end": "10.0.0.3"}])
    with pytest.raises(ne.BadRequest, match="is not valid"):
        ipam.validate_pools(cidr, None, [{"start": "10.0.0.9", "end": "10.0.0.3"}])
    with pytest.raises(ne.BadRequest, match="overlapping allocation pools"):
        ipam.validate_pools(cidr, None, [{"start": "10.0.0.2", "end": "10.0.0.9"},
                                         {"start": "10.0.0.9", "end": "10.0.0.20"}])
    with pytest.raises(ipam.GatewayConflictWithAllocationPools) as e:
        ipam.validate_pools(cidr, "10.0.0.5", [{"start": "10.0.0.2", "end": "10.0.0.9"}])
    assert e.value.status == 409
    assert ipam.validate_pools(cidr, "10.0.0.1", [
        {"start": "10.0.0.50", "end": "10.0.0.60"}, {"start": "10.0.0.2", "end": "10.0.0.9"}]) \
        == [{"start": "10.0.0.2", "end": "10.0.0.9"}, {"start": "10.0.0.50", "end": "10.0.0.60"}]
    with pytest.raises(ne.BadRequest, match="not a host address"):
        ipam.check_gateway(cidr, "10.0.0.255")


@st.composite
def subnets_with_pools(draw):
    """A /20 to /28 subnet, a gateway (or none) and random non-overlapping pools."""
    plen = draw(st.integers(20, 28))
    base = draw(st.integers(0, (1 << (32 - plen)) - 1)) << (32 - plen)
    net = netaddr.IPNetwork(f"{netaddr.IPAddress((10 << 24) | (base & 0xFFFFFF))}/{plen}")
    lo, hi = net.first + 1, net.last - 1
    cuts = sorted(draw(st.sets(st.integers(lo, hi), min_size=2, max_size=8)))
    pools = []
    for s, e in zip(cuts[::2], cuts[1::2], strict=False):
        pools.append({"start": str(netaddr.IPAddress(s)), "end": str(netaddr.IPAddress(e))})
    inside = [i for i in range(lo, hi + 1)
              if not any(int(netaddr.IPAddress(p["start"])) <= i <=
                         int(netaddr.IPAddress(p["end"])) for p in pools)]
    gw = draw(st.sampled_from(inside)) if inside and draw(st.booleans()) else None
    gateway = str(netaddr.IPAddress(gw)) if gw is not None else None
    return str(net.cidr), gateway, pools


@settings(max_examples=150, deadline=None)
@given(subnets_with_pools(), st.data())
def test_allocation_never_repeats_and_stays_in_the_pools(case, data):
    cidr, gw, pools = case
    pools = ipam.validate_pools(cidr, gw, pools)  # valid by construction
    s = subnet(cidr, gw, pools)
    size = sum(int(netaddr.IPAddress(p["end"])) - int(netaddr.IPAddress(p["start"])) + 1
               for p in pools)
    used: set[str] = set()
    for _ in range(min(size, 40)):
        if used and data.draw(st.booleans()):
            used.discard(data.draw(st.sampled_from(sorted(used))))
        ip = ipam.allocate(s, used)
        assert ip not in used
        assert ipam.in_pools(s, ip) and ip != gw
        assert netaddr.IPAddress(ip) in netaddr.IPNetwork(cidr)
        # it is the lowest free one
        free = [i for p in pools for i in range(int(netaddr.IPAddress(p["start"])),
                                                 int(netaddr.IPAddress(p["end"])) + 1)
                if str(netaddr.IPAddress(i)) not in used]
        assert int(netaddr.IPAddress(ip)) == min(free)
        used.add(ip)
    if size <= 40:
        with pytest.raises(ne.IpAddressGenerationFailure):
            ipam.allocate(s, set(str(netaddr.IPAddress(i)) for p in pools
                                 for i in range(int(netaddr.IPAddress(p["start"])),
                                                int(netaddr.IPAddress(p["end"])) + 1)))


@settings(max_examples=150, deadline=None)
@given(st.integers(16, 30), st.lists(st.tuples(st.integers(-20, 300), st.integers(-20, 300)),
                                     max_size=4), st.integers(-5, 300) | st.none())
def test_pool_validation_accepts_exactly_the_valid_pools(plen, spans, gw_off):
    """validate_pools accepts a set of pools iff each is inside the host addresses,
    start <= end, and none overlaps another or the gateway."""
    net = netaddr.IPNetwork(f"10.1.0.0/{plen}")
    pools = [{"start": str(netaddr.IPAddress(net.first + max(0, s))),
              "end": str(netaddr.IPAddress(net.first + max(0, e)))} for s, e in spans]
    gw = None if gw_off is None else str(netaddr.IPAddress(net.first + max(0, gw_off)))
    ints = [(int(netaddr.IPAddress(p["start"])), int(netaddr.IPAddress(p["end"])))
            for p in pools]
    ok = all(s <= e and net.first < s and e < net.last for s, e in ints)
    ok = ok and not any(a[0] <= b[1] and b[0] <= a[1]
                        for i, a in enumerate(ints) for b in ints[i + 1:])
    if gw is not None:
        g = int(netaddr.IPAddress(gw))
        ok = ok and not any(s <= g <= e for s, e in ints)
    if ok:
        out = ipam.validate_pools(str(net.cidr), gw, pools)
        assert sorted(map(str, out)) == sorted(map(str, pools))
    else:
        with pytest.raises(ne.NeutronError):
            ipam.validate_pools(str(net.cidr), gw, pools)
