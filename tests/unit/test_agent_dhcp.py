"""The agent answers DHCP itself, before simulation, out of the VM's port."""

import socket
import struct

from midoflow.agent.core import Output
from midoflow.apps import frames as wire
from midoflow.apps import pipeline as pl
from midoflow.apps.tables import DECISION_COOKIE
from midoflow.dhcp import codec, frames
from midoflow.dhcp.codec import DhcpMessage
from midoflow.sim.packet import Packet
from midoflow.store.base import Create, Update
from tests.unit import worlds
from tests.unit.fakeoftable import CONTROLLER, FakeOFTable

M1 = "02:00:00:00:00:01"
RMAC = "02:aa:00:00:00:01"


def world(**subnet):
    """Bridge b: p1 (10.0.0.5) on h1 ofport 5, p2 (10.0.0.6), p3 (no address),
    a router port 10.0.0.1 linked to it, DHCP subnet 10.0.0.0/24."""
    api = worlds.two_hosts(
        Create("routers", {"id": "r", "port_ids": ["rp"]}),
        Create("bridges", {"id": "b", "port_ids": ["p1", "p2", "p3", "bl"]}),
        Create("ports", {"id": "p1", "device_id": "b", "tunnel_key": 11,
                         "fixed_ips": ["10.0.0.5"], "hostname": "vm-one",
                         "extra_dhcp_opts": [{"opt_name": "bootfile-name",
                                              "opt_value": "pxelinux.0"},
                                             {"opt_name": "no-such", "opt_value": "1"}]}),
        Create("ports", {"id": "p2", "device_id": "b", "tunnel_key": 12,
                         "fixed_ips": ["10.0.0.6"]}),
        Create("ports", {"id": "p3", "device_id": "b", "tunnel_key": 13}),
        worlds.router_port("rp", "r", 20, RMAC, "10.0.0.1", peer="bl"),
        worlds.bridge_link("bl", "b", 21, "rp"),
        Create("dhcp_subnets", {"id": "s", "bridge_id": "b", "cidr": "10.0.0.0/24",
                                "gateway_ip": "10.0.0.1", "dns_servers": ["10.0.0.2"],
                                "host_routes": [{"destination": "172.16.0.0/16",
                                                 "nexthop": "10.0.0.254"}],
                                "lease_time": 600, **subnet}),
    )
    a = worlds.agent(api, "h1")
    a.set_interfaces({**worlds.TUNNELS, "vm1": (5, "p1"), "vm3": (6, "p3")})
    return api, a


def client_frame(kind: int, *opts, ciaddr: str = "0.0.0.0", mac: str = M1,
                 dst_ip: str = "255.255.255.255") -> bytes:
    msg = DhcpMessage(op=1, xid=99, chaddr=bytes.fromhex(mac.replace(":", "")), ciaddr=ciaddr,
                      options=((53, bytes((kind,))), *opts))
    payload = codec.build(msg)
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(ciaddr), socket.inet_aton(dst_ip))
    return b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) + b"\x08\x00" + ip + udp


def miss(a, frame: bytes, ofport: int = 5):
    return a.handle_miss(ofport, wire.parse(frame), frame)


def reply_of(decision) -> tuple[bytes, DhcpMessage]:
    (em,) = decision.emits
    return em.frame, codec.parse(frames.request_payload(em.frame))


def test_discover_is_answered_out_of_the_same_port_without_a_flow():
    _, a = world()
    before = a.stats["simulated"]
    d = miss(a, client_frame(codec.DISCOVER))
    assert d.install is False and d.actions == [] and a.stats["simulated"] == before
    assert d.emits[0].actions == [Output(5)]
    frame, r = reply_of(d)
    assert r.message_type == codec.OFFER and r.yiaddr == "10.0.0.5"
    assert frame[6:12] == bytes.fromhex(RMAC.replace(":", ""))  # the gateway's MAC
    assert r.ip_option(54) == "10.0.0.1" and r.option(26) == struct.pack("!H", 1450)
    assert r.option(12) == b"vm-one" and r.option(67) == b"pxelinux.0"
    assert r.option(121) == bytes([16, 172, 16, 10, 0, 0, 254, 0, 10, 0, 0, 1])
    assert a.stats["dhcp_offer"] == 1 and a.stats["dhcp_bad_option"] == 1


def test_request_for_another_ports_address_is_naked_then_its_own_acked():
    _, a = world()
    d = miss(a, client_frame(codec.REQUEST, (50, socket.inet_aton("10.0.0.6"))))
    frame, r = reply_of(d)
    assert r.message_type == codec.NAK and frame[:6] == b"\xff" * 6
    _, r = reply_of(miss(a, client_frame(codec.REQUEST, (50, socket.inet_aton("10.0.0.5")),
                                         (54, socket.inet_aton("10.0.0.1")))))
    assert r.message_type == codec.ACK and r.yiaddr == "10.0.0.5"
    assert a.stats["dhcp_nak"] == 1 and a.stats["dhcp_ack"] == 1


def test_the_bridge_mtu_and_changes_of_the_subnet_apply_at_once():
    api, a = world()
    b, v = api.get("bridges", "b")
    api.commit([Update("bridges", {**b, "mtu": 1400}, v)])
    _, r = reply_of(miss(a, client_frame(codec.DISCOVER)))
    assert r.option(26) == struct.pack("!H", 1400)
    s, v = api.get("dhcp_subnets", "s")
    api.commit([Update("dhcp_subnets", {**s, "enabled": False}, v)])
    d = miss(a, client_frame(codec.DISCOVER))  # no DHCP here now: simulated as today
    assert d.emits == [] and a.stats["dhcp_offer"] == 1 and d.actions  # flooded


def test_release_decline_and_garbage_are_counted_not_answered():
    _, a = world()
    assert miss(a, client_frame(codec.RELEASE, ciaddr="10.0.0.5")).emits == []
    assert miss(a, client_frame(codec.DECLINE)).emits == []
    bad = client_frame(codec.DISCOVER)
    bad = bad[:42 + 236] + b"\0\0\0\0" + bad[42 + 240:]  # the magic cookie broken
    d = miss(a, bad)
    assert d.emits == [] and d.install is False and d.actions == []
    assert (a.stats["dhcp_release"], a.stats["dhcp_decline"]) == (1, 1)
    assert a.malformed_reasons == {"dhcp_magic": 1}


def test_a_port_without_an_address_in_a_dhcp_subnet_is_simulated_as_today():
    _, a = world()
    d = miss(a, client_frame(codec.DISCOVER, mac="02:00:00:00:00:03"), 6)
    assert d.emits == [] and "dhcp_offer" not in a.stats and d.actions


def test_dhcp_always_reaches_the_agent_through_the_ports_meter_and_the_reply_leaves_by_it():
    """Even a wildcarded simulated flow of the VM (its MAC to broadcast) does
    not carry DHCP: the base flow above it sends UDP to 67 to table 2."""
    t = FakeOFTable().apply(pl.base_flows(pl.OFFLINE))
    t.apply(pl.classify_flows(pl.OFFLINE, 5, 11, [1]))
    flood = pl.Decision([Output(6)], frozenset({"eth_src", "eth_dst"}), frozenset(), None,
                        cookie=DECISION_COOKIE | 1,
                        packet=Packet(in_port="p1", eth_src=M1, eth_dst=worlds.BCAST))
    t.apply(pl.decision_messages(pl.OFFLINE, flood, 5, b"x", None, 30))
    pkt = {"in_port": 5, "eth_src": M1, "eth_dst": worlds.BCAST, "eth_type": 0x800,
           "ipv4_src": "0.0.0.0", "ipv4_dst": "255.255.255.255", "ip_proto": 17,
           "udp_src": 68, "udp_dst": 67, "nw_ttl": 64}
    trace = t.lookup(pkt)
    assert trace.ports == [CONTROLLER] and trace.meters == [5], trace
    assert (1, pl.PRIO_DHCP, 0) in trace.hits and pl.PRIO_DHCP > pl.PRIO_SIMULATED
    assert t.lookup({**pkt, "udp_dst": 53}).ports == [6]  # other UDP rides the flow
    _, a = world()
    d = miss(a, client_frame(codec.DISCOVER))
    msgs = pl.decision_messages(pl.OFFLINE, d, 5, client_frame(codec.DISCOVER), None, 30)
    assert not any(isinstance(m, pl.OFFLINE.ofproto_parser.OFPFlowMod) for m in msgs)
    (out,) = msgs
    assert [a.port for a in out.actions] == [5] and out.data == d.emits[0].frame


def test_extra_options_take_the_apis_names_and_server_ip_address_sets_siaddr():
    """The names the API accepts (the model's table) are the ones the agent
    encodes; "server-ip-address" is dnsmasq's next server (siaddr), not option 150."""
    api, a = world()
    p, v = api.get("ports", "p1")
    api.commit([Update("ports", {**p, "extra_dhcp_opts": [
        {"opt_name": "server-ip-address", "opt_value": "10.0.0.3"},
        {"opt_name": "static-route", "opt_value": "192.168.9.9,10.0.0.254"},
        {"opt_name": "tftp-server-address", "opt_value": "10.0.0.4"}]}, v)])
    _, r = reply_of(miss(a, client_frame(codec.DISCOVER)))
    assert r.siaddr == "10.0.0.3"
    assert r.option(33) == socket.inet_aton("192.168.9.9") + socket.inet_aton("10.0.0.254")
    assert r.option(150) == socket.inet_aton("10.0.0.4")


def test_a_subnet_without_gateway_gets_an_on_link_route_to_the_metadata_address():
    """No router, no default route: the VM still reaches 169.254.169.254 (its
    host's agent answers the ARP), as Neutron's isolated-network metadata."""
    _, a = world(gateway_ip=None, host_routes=[])
    _, r = reply_of(miss(a, client_frame(codec.DISCOVER)))
    assert r.option(3) is None
    assert r.option(121) == bytes([32, 169, 254, 169, 254, 0, 0, 0, 0])
    _, a = world(gateway_ip=None, host_routes=[])
    a.dhcp.metadata_route = False  # metadata_enabled = false: no such route
    _, r = reply_of(miss(a, client_frame(codec.DISCOVER)))
    assert r.option(121) is None


def arp_request(tpa: str, spa: str = "10.0.0.5", mac: str = M1) -> bytes:
    from midoflow.sim.result import Generated
    return wire.build(Generated("arp_request", "p1", (("eth_src", mac), ("ip_src", spa),
                                                      ("ip_dst", tpa))))


def test_the_server_address_no_router_holds_is_answered_so_renewals_reach_it():
    """Without a gateway the server is the subnet's last host address, which
    no router port holds: the agent answers its ARP (a renewal is unicast to
    the server) with the server's MAC, and the unicast renewal is ACKed."""
    _, a = world(gateway_ip=None, host_routes=[])
    a.frames = worlds.OsKenFrames()
    d = miss(a, arp_request("10.0.0.254"))
    assert d.install is False and d.actions == [] and len(d.emits) == 1
    reply = wire.parse(d.emits[0].frame)
    assert reply["arp_op"] == 2 and reply["arp_spa"] == "10.0.0.254"
    assert reply["arp_tpa"] == "10.0.0.5" and reply["eth_dst"] == M1
    server_mac = reply["arp_sha"]
    assert server_mac.startswith("fa:16:3e:") and d.emits[0].actions == [Output(5)]
    renew = client_frame(codec.REQUEST, ciaddr="10.0.0.5", dst_ip="10.0.0.254")
    renew = bytes.fromhex(server_mac.replace(":", "")) + renew[6:]
    frame, r = reply_of(miss(a, renew))
    assert r.message_type == codec.ACK and r.ip_option(54) == "10.0.0.254"
    assert frame[6:12] == bytes.fromhex(server_mac.replace(":", ""))
    assert a.stats["dhcp_server_arp"] == 1


def test_arp_for_a_router_held_server_address_is_left_to_the_router():
    _, a = world()  # the server is the gateway 10.0.0.1, a router port
    a.frames = worlds.OsKenFrames()
    d = miss(a, arp_request("10.0.0.1"))
    assert "dhcp_server_arp" not in a.stats
    assert [wire.parse(e.frame)["arp_sha"] for e in d.emits] == [RMAC]  # the router answers
