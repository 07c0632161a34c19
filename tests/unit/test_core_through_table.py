"""The glue chain, honestly: a real AgentCore (two hosts on the memory store,
the campus of tests/unit/worlds.py) answers table misses; its decisions
become OpenFlow messages through ``pipeline.decision_messages`` and its
binding changes classify flows through ``pipeline.classify_flows``, as
apps/agent.py sends them (``_process``, ``_bindings_changed``,
``_delete_cookies``), applied to a FakeOFTable per host. Then the SAME packet
looked up in the table must go where the simulation said, rewritten as it
said, without reaching the controller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import arp, ethernet, ipv4, packet, tcp, udp

from midoflow.agent.core import BindingChange, Decision, Output, Tunnel
from midoflow.apps import frames
from midoflow.apps import pipeline as pl
from midoflow.model import STATE_TUNNEL_KEY
from midoflow.nat.conntrack import TCP_FIN, TCP_RST
from midoflow.sim.packet import ETH_ARP, ETH_IP, PROTO_TCP, PROTO_UDP
from midoflow.store.base import Delete, Update
from midoflow.store.memory import MemoryStore
from tests.unit import worlds
from tests.unit.fakeoftable import CONTROLLER, FakeOFTable, Trace
from tests.unit.worlds import GW, PUBLIC, R1, R2, SG_PORT, UPLINK_OFPORT, UPMAC, Vm

DP = pl.OFFLINE
IDLE = 30
VXLAN = worlds.TUNNELS["vxlan0"][0]
A, B, C, D, E = worlds.VM_A, worlds.VM_B, worlds.VM_C, worlds.VM_D, worlds.VM_E
TUNNEL_FIELDS = ("tunnel_id", "tun_ipv4_dst")


# ---- frames and the switch's view of them -----------------------------------------------
def frame(f: dict[str, Any]) -> bytes:
    """The Ethernet frame of simulation-style fields (eth_*, ip_*, tp_*,
    tcp_flags, arp_*; other ethertypes get a few bytes of payload)."""
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=f["eth_dst"], src=f["eth_src"],
                                     ethertype=f["eth_type"]))
    if f["eth_type"] == ETH_IP:
        p.add_protocol(ipv4.ipv4(src=f["ip_src"], dst=f["ip_dst"], proto=f["ip_proto"],
                                 ttl=f.get("ip_ttl", 64), tos=f.get("ip_tos", 0)))
        if f["ip_proto"] == PROTO_TCP:
            p.add_protocol(tcp.tcp(src_port=f["tp_src"], dst_port=f["tp_dst"],
                                   bits=f.get("tcp_flags", 0x10)))
        elif f["ip_proto"] == PROTO_UDP:
            p.add_protocol(udp.udp(src_port=f["tp_src"], dst_port=f["tp_dst"]))
    elif f["eth_type"] == ETH_ARP:
        p.add_protocol(arp.arp(opcode=f["arp_op"], src_mac=f["arp_sha"], src_ip=f["arp_spa"],
                               dst_mac=f.get("arp_tha", "00:00:00:00:00:00"),
                               dst_ip=f["arp_tpa"]))
    else:
        p.add_protocol(b"\x60" + bytes(45))
    p.serialize()
    return bytes(p.data)


_OF_NAMES = {"ip_src": "ipv4_src", "ip_dst": "ipv4_dst", "ip_ttl": "nw_ttl"}
_TP = {PROTO_TCP: ("tcp_src", "tcp_dst"), PROTO_UDP: ("udp_src", "udp_dst")}


def switch_view(ofport: int, data: bytes) -> dict[str, Any]:
    """The fields OVS matches a frame entering by ``ofport`` on, from the
    agent's own parser (so parser and flow matches are checked together)."""
    f = frames.parse(data)
    out: dict[str, Any] = {"in_port": ofport}
    for k, v in f.items():
        if k in ("eth_src", "eth_dst", "eth_type", "ip_proto", "tcp_flags") or \
                k.startswith("arp_"):
            out[k] = v
        elif k in _OF_NAMES:
            out[_OF_NAMES[k]] = v
        elif k == "ip_tos":
            out["ip_dscp"], out["ip_ecn"] = v >> 2, v & 3
        elif k in ("tp_src", "tp_dst") and f.get("ip_proto") in _TP:
            out[_TP[f["ip_proto"]][k == "tp_dst"]] = v
        elif k == "ip_frag":
            out["ip_frag"] = 1 if v == 1 else 3  # NXM: a fragment; a later one
    return out


def tcp_from(vm: Vm, dst_ip: str, sport: int, dport: int, *, to_mac: str | None = None,
             flags: int = 0x10, ttl: int = 64) -> dict[str, Any]:
    """A TCP segment from ``vm``: to ``to_mac`` (its gateway when None)."""
    return {"eth_src": vm.mac, "eth_dst": to_mac or vm.gw_mac, "eth_type": ETH_IP,
            "ip_src": vm.ip, "ip_dst": dst_ip, "ip_proto": PROTO_TCP, "ip_ttl": ttl,
            "tp_src": sport, "tp_dst": dport, "tcp_flags": flags}


# ---- hosts: an agent core wired to its switch as apps/agent.py wires it ------------------
class Host:
    """One host: its agent core, and the fake switch its messages go to."""

    def __init__(self, api: MemoryStore, name: str) -> None:
        self.table = FakeOFTable().apply(pl.base_flows(DP))
        self.classified: dict[str, tuple[int, int]] = {}
        self.deleted: set[int] = set()
        self.core = worlds.agent(api, name, frames=worlds.OsKenFrames(),
                                 on_invalidate=self._delete_cookies,
                                 on_bindings=self._bindings_changed)

    def _delete_cookies(self, cookies: set[int]) -> None:
        self.deleted |= cookies
        self.table.apply([pl.delete_cookie(DP, c) for c in cookies])

    def _bindings_changed(self, change: BindingChange) -> None:
        for pid in change.removed:
            old = self.classified.pop(pid, None)
            if old:
                self.table.apply(pl.unclassify_flows(DP, *old))
        keys = self.core.tunnel_keys()
        tunnels = sorted(self.core.tunnel_ofports.values())
        for pid, ofport in change.added.items():
            if pid not in keys:
                continue
            old = self.classified.pop(pid, None)
            if old:
                self.table.apply(pl.unclassify_flows(DP, *old))
            self.classified[pid] = (ofport, keys[pid])
            self.table.apply(pl.classify_flows(DP, ofport, keys[pid], tunnels))

    def miss(self, ofport: int, data: bytes, copy: bool = False
             ) -> tuple[Decision | None, list]:
        """A packet-in, as ``_process`` handles it: the decision, and the
        messages sent for it (applied to the table)."""
        decision = self.core.handle_miss(ofport, frames.parse(data), data, copy)
        if decision is None:
            return None, []
        msgs = pl.decision_messages(DP, decision, ofport, data, None, IDLE)
        for m in msgs:
            if isinstance(m, DP.ofproto_parser.OFPFlowMod) and m.priority == pl.PRIO_SIMULATED:
                self.core.flow_replaced(tuple(sorted(m.match.items())), decision.cookie)
        self.table.apply(msgs)
        return decision, msgs

    def lookup(self, ofport: int, data: bytes) -> Trace:
        return self.table.lookup(switch_view(ofport, data))


@dataclass
class Campus:
    """The API's store session and the two hosts."""

    api: MemoryStore
    h1: Host
    h2: Host


def build_campus() -> Campus:
    """The campus, each host's switch classified as its bindings came."""
    api = worlds.two_hosts(*worlds.campus())
    hosts = {h: Host(api, h) for h in worlds.HOSTS}
    for name, host in hosts.items():
        host.core.set_interfaces(worlds.campus_interfaces(name))
    worlds.campus_learned(api)
    return Campus(api, **hosts)


@pytest.fixture
def campus() -> Campus:
    return build_campus()


# ---- what a decision says should happen ---------------------------------------------------
def expected(d: Decision, pkt: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Where ``d`` sends the switch's packet ``pkt`` and how it leaves: the
    rewrites, then each output (a tunnel's with its key and remote IP)."""
    out = dict(pkt)
    tp = _TP.get(pkt.get("ip_proto"))
    for r in d.rewrites:
        if r.field in ("eth_src", "eth_dst"):
            out[r.field] = r.value
        elif r.field == "ttl":
            out["nw_ttl"] -= int(r.value)
        elif r.field in ("ip_src", "ip_dst"):
            out["ipv4_" + r.field[3:]] = r.value
        elif r.field in ("tp_src", "tp_dst") and tp:
            out[tp[r.field == "tp_dst"]] = int(r.value)
    return [(a.ofport, {**out, "tunnel_id": a.key, "tun_ipv4_dst": a.remote_ip})
            if isinstance(a, Tunnel) else (a.ofport, dict(out)) for a in d.actions]


def left(trace: Trace, tunnels: set[int]) -> list[tuple[Any, dict[str, Any]]]:
    """The trace's outputs, tunnel metadata kept only where a tunnel takes it."""
    return [(o.port, o.pkt if o.port in tunnels else
             {k: v for k, v in o.pkt.items() if k not in TUNNEL_FIELDS}) for o in trace.outputs]


def _key(outs):
    return sorted((str(p), sorted((k, str(v)) for k, v in pk.items())) for p, pk in outs)


def assert_as_decided(host: Host, ofport: int, data: bytes, d: Decision) -> Trace:
    """The packet, looked up again, leaves as ``d`` says, not by the controller."""
    tr = host.lookup(ofport, data)
    assert CONTROLLER not in tr.ports, f"{d.result and d.result.reason}: {tr}"
    tunnels = set(host.core.tunnel_ofports.values())
    assert _key(left(tr, tunnels)) == _key(expected(d, switch_view(ofport, data)))
    return tr


def first_packet(host: Host, ofport: int, f: dict[str, Any]) -> tuple[Decision, bytes]:
    """A new packet: it misses (reaches the agent through its port's meter),
    is simulated and its messages applied; its packet-out leaves as decided."""
    data = frame(f)
    miss = host.lookup(ofport, data)
    assert miss.ports == [CONTROLLER] and miss.meters == [ofport], miss
    d, msgs = host.miss(ofport, data)
    assert d is not None
    outs = [m for m in msgs if isinstance(m, DP.ofproto_parser.OFPPacketOut)
            and m.in_port == ofport]
    if d.actions:
        (po,) = outs
        view = {k: v for k, v in switch_view(ofport, data).items() if k != "in_port"}
        tunnels = set(host.core.tunnel_ofports.values())
        assert _key(left(host.table.packet_out(po, view), tunnels)) == \
            _key(expected(d, switch_view(ofport, data)))
    return d, data


def delivered(host: Host, out: dict[str, Any]) -> Trace:
    """A tunnelled packet arriving at ``host``'s VXLAN port."""
    return host.table.lookup({**out, "in_port": VXLAN})


# ---- the paths --------------------------------------------------------------------------
def test_l2_between_two_vms_of_one_host(campus):
    h1 = campus.h1
    d, data = first_packet(h1, A.ofport, tcp_from(A, C.ip, 1000, 80, to_mac=C.mac))
    assert d.install and d.actions == [Output(C.ofport)]
    tr = assert_as_decided(h1, A.ofport, data, d)
    assert tr.out(C.ofport) == switch_view(A.ofport, data) | {"in_port": A.ofport}
    # the flow matches what the decision read, no more: another segment of
    # the same pair goes too, and a frame to another MAC is simulated afresh
    other = frame(tcp_from(A, C.ip, 2000, 443, to_mac=C.mac))
    assert h1.lookup(A.ofport, other).ports == [C.ofport]
    assert h1.lookup(A.ofport, frame(tcp_from(A, B.ip, 1, 2, to_mac=B.mac))).ports == \
        [CONTROLLER]


def test_to_a_vm_on_another_host_through_the_tunnel(campus):
    h1, h2 = campus.h1, campus.h2
    d, data = first_packet(h1, A.ofport, tcp_from(A, B.ip, 1000, 80, to_mac=B.mac))
    assert d.actions == [Tunnel(22, "10.0.0.2", VXLAN)]
    out = assert_as_decided(h1, A.ofport, data, d).out(VXLAN)
    seen = h2.core.stats["packet_in"]
    tr = delivered(h2, out)
    assert tr.ports == [B.ofport] and tr.out(B.ofport)["eth_dst"] == B.mac
    assert h2.core.stats["packet_in"] == seen  # simulated once, at the ingress host


def test_routed_across_the_router_rewrites_macs_and_decrements_the_ttl(campus):
    h1 = campus.h1
    d, data = first_packet(h1, A.ofport, tcp_from(A, E.ip, 1000, 80))
    assert d.install and d.actions == [Output(E.ofport)]
    out = assert_as_decided(h1, A.ofport, data, d).out(E.ofport)
    assert (out["eth_src"], out["eth_dst"], out["nw_ttl"]) == (R2, E.mac, 63)
    assert (out["ipv4_src"], out["ipv4_dst"]) == (A.ip, E.ip)
    # low TTLs still reach the agent (the router must answer them)
    assert h1.lookup(A.ofport, frame(tcp_from(A, E.ip, 1000, 80, ttl=3))).ports == \
        [CONTROLLER]


def test_snat_through_the_uplink_and_the_reply_translated_back(campus):
    h1, h2 = campus.h1, campus.h2
    d, data = first_packet(h2, B.ofport, tcp_from(B, "8.8.8.8", 40000, 80))
    assert d.actions == [Tunnel(35, "10.0.0.1", VXLAN)]  # straight to the uplink's host
    out = assert_as_decided(h2, B.ofport, data, d).out(VXLAN)
    port = out["tcp_src"]
    assert (out["ipv4_src"], out["eth_src"], out["eth_dst"]) == (PUBLIC, UPMAC, GW)
    assert out["nw_ttl"] == 63 and port != 0
    # the NAT binding went to h1 first, by a packet-out the switch tunnels
    (push,) = d.pushes
    state = h2.table.packet_out(pl.packet_out(DP, pl.output_actions(DP, push.actions),
                                              push.frame), {}).out(VXLAN)
    assert state["tunnel_id"] == STATE_TUNNEL_KEY
    assert h1.table.lookup({**state, "in_port": VXLAN}).ports == [CONTROLLER]
    assert h1.core.receive_state(push.frame) >= 1
    assert delivered(h1, out).ports == [UPLINK_OFPORT]
    # the reply: reverse NAT at h1, back to the VM's host
    reply = {"eth_src": GW, "eth_dst": UPMAC, "eth_type": ETH_IP, "ip_src": "8.8.8.8",
             "ip_dst": PUBLIC, "ip_proto": PROTO_TCP, "ip_ttl": 60, "tp_src": 80,
             "tp_dst": port, "tcp_flags": 0x12}
    r, rdata = first_packet(h1, UPLINK_OFPORT, reply)
    assert r.actions == [Tunnel(22, "10.0.0.2", VXLAN)]
    back = assert_as_decided(h1, UPLINK_OFPORT, rdata, r).out(VXLAN)
    assert (back["ipv4_dst"], back["tcp_dst"], back["eth_dst"], back["eth_src"]) == \
        (B.ip, 40000, B.mac, R1)
    assert delivered(h2, back).ports == [B.ofport]
    # exact 5-tuple flows: another connection is simulated afresh
    assert h2.lookup(B.ofport, frame(tcp_from(B, "8.8.8.8", 40001, 80))).ports == [CONTROLLER]


def test_a_security_group_admits_its_port_and_drops_another(campus):
    h1, h2 = campus.h1, campus.h2
    ssh, ssh_data = first_packet(h1, A.ofport, tcp_from(A, D.ip, 1000, SG_PORT))
    assert ssh.actions == [Tunnel(24, "10.0.0.2", VXLAN)]
    out = assert_as_decided(h1, A.ofport, ssh_data, ssh).out(VXLAN)
    assert delivered(h2, out).ports == [D.ofport]
    web, web_data = first_packet(h1, A.ofport, tcp_from(A, D.ip, 1000, 80))
    assert web.actions == [] and web.install
    tr = assert_as_decided(h1, A.ofport, web_data, web)
    assert tr.dropped and tr.hits[-1] == (1, pl.PRIO_SIMULATED, web.cookie)
    # a tracked connection's flow is its 5-tuple: another source port misses
    assert h1.lookup(A.ofport, frame(tcp_from(A, D.ip, 1001, SG_PORT))).ports == [CONTROLLER]


def conns(host: Host) -> list:
    """The connections ``host``'s agent tracks (conntrack entries)."""
    return list(host.core.state.tables.ct._conns.values())


def copy_in(host: Host, ofport: int, tr: Trace, data: bytes) -> tuple[Decision | None, list]:
    """The close flow's copy of ``data`` in ``tr`` handed to the agent as
    ``_packet_in`` hands it (its packet-in's table and cookie say it is a
    copy)."""
    (table, _prio, cookie) = tr.hits[-1]
    assert pl.close_copy(table, cookie)
    assert tr.out(CONTROLLER) == switch_view(ofport, data)  # unmodified
    return host.miss(ofport, data, copy=True)


@pytest.mark.parametrize("flag", [TCP_FIN, TCP_RST])
def test_a_tracked_connections_fin_and_rst_are_forwarded_and_copied_to_the_agent(campus,
                                                                                  flag):
    h1, h2 = campus.h1, campus.h2
    ssh, ssh_data = first_packet(h1, A.ofport, tcp_from(A, D.ip, 1000, SG_PORT))
    assert ssh.uses  # a security group: tracked
    for push in ssh.pushes:
        h2.core.receive_state(push.frame)
    close = frame(tcp_from(A, D.ip, 1000, SG_PORT, flags=flag | 0x10))
    tr = h1.lookup(A.ofport, close)
    # the close flow: a copy through the port's meter, then the connection's own path
    assert tr.ports == [CONTROLLER, VXLAN] and tr.meters == [A.ofport]
    assert tr.hits[-1] == (1, pl.PRIO_TCP_CLOSE, ssh.cookie)
    assert tr.out(CONTROLLER) == switch_view(A.ofport, close)
    assert tr.out(VXLAN) == {**h1.lookup(A.ofport, ssh_data).out(VXLAN),
                             "tcp_flags": flag | 0x10}
    # the egress host delivers it by key: the FIN reaches D once, before any close push
    assert delivered(h2, tr.out(VXLAN)).ports == [D.ofport]
    assert not any(c.closing or c.fin_fwd or c.fin_ret for c in conns(h2))
    flows = {(e.priority, str(e.match)) for e in h1.table.flows()}
    d, msgs = copy_in(h1, A.ofport, tr, close)
    # the agent closes the connection and tells h2, and never forwards the copy
    assert d is not None and not d.install and d.actions == [] and d.pushes
    assert [m for m in msgs if isinstance(m, DP.ofproto_parser.OFPPacketOut)] == \
        [m for m in msgs if m.in_port == DP.ofproto.OFPP_CONTROLLER]  # pushes only
    assert len(msgs) == len(d.pushes)
    assert {(e.priority, str(e.match)) for e in h1.table.flows()} == flows  # no flow
    assert h1.core.stats["close_copies"] == 1
    (mine,) = conns(h1)
    assert mine.closing if flag == TCP_RST else mine.fin_fwd
    for push in d.pushes:  # after the segment itself: h2 records the same close
        h2.core.receive_state(push.frame)
    (theirs,) = conns(h2)
    assert theirs.closing if flag == TCP_RST else theirs.fin_fwd
    assert h1.lookup(A.ofport, ssh_data).ports == [VXLAN]  # the connection's flow holds


@pytest.mark.parametrize("flag", [TCP_FIN, TCP_RST])
def test_an_untracked_connections_fin_and_rst_follow_its_flow_in_the_datapath(campus, flag):
    h1 = campus.h1
    routed, r_data = first_packet(h1, A.ofport, tcp_from(A, E.ip, 1000, 80))
    assert routed.install and not routed.uses
    close = frame(tcp_from(A, E.ip, 1000, 80, flags=flag | 0x10))
    tr = h1.lookup(A.ofport, close)
    assert CONTROLLER not in tr.ports and (1, pl.PRIO_SIMULATED, routed.cookie) in tr.hits
    assert tr.ports == h1.lookup(A.ofport, r_data).ports != []


def test_a_tracked_flows_close_flows_go_with_it(campus):
    h1 = campus.h1
    ssh, _ = first_packet(h1, A.ofport, tcp_from(A, D.ip, 1000, SG_PORT))
    assert len([e for e in h1.table.flows(1) if e.cookie == ssh.cookie]) == 3  # + FIN, RST
    h1._delete_cookies({ssh.cookie})
    assert ssh.cookie not in h1.table.cookies()


def test_deleting_a_port_deletes_exactly_the_flows_through_it(campus):
    h1, api = campus.h1, campus.api
    to_b, b_data = first_packet(h1, A.ofport, tcp_from(A, B.ip, 1000, 80, to_mac=B.mac))
    to_c, c_data = first_packet(h1, A.ofport, tcp_from(A, C.ip, 1000, 80, to_mac=C.mac))
    routed, r_data = first_packet(h1, A.ofport, tcp_from(A, E.ip, 1000, 80))
    bridge, v = api.get("bridges", "b1")
    bridge["port_ids"] = ["p1", "p3", "b1r"]
    h1.deleted.clear()
    api.commit([Delete("ports", "p2"), Update("bridges", bridge, v)])
    assert h1.deleted == {to_b.cookie} and to_b.cookie not in h1.table.cookies()
    assert {to_c.cookie, routed.cookie} <= h1.table.cookies()
    assert h1.lookup(A.ofport, b_data).ports == [CONTROLLER]  # simulated again
    assert_as_decided(h1, A.ofport, c_data, to_c)
    assert_as_decided(h1, A.ofport, r_data, routed)
    again, _ = h1.miss(A.ofport, b_data)
    assert set(again.actions) == {Output(C.ofport)}  # B's MAC is unknown now: b1 floods


def test_deleting_a_rule_deletes_the_flows_its_chain_decided(campus):
    h1, api = campus.h1, campus.api
    ssh, ssh_data = first_packet(h1, A.ofport, tcp_from(A, D.ip, 1000, SG_PORT))
    web, web_data = first_packet(h1, A.ofport, tcp_from(A, D.ip, 1000, 80))
    to_c, c_data = first_packet(h1, A.ofport, tcp_from(A, C.ip, 1000, 80, to_mac=C.mac))
    chain, v = api.get("chains", "sg-in")
    chain["rule_ids"] = []
    h1.deleted.clear()
    api.commit([Delete("rules", "sg-ssh"), Update("chains", chain, v)])
    assert h1.deleted == {ssh.cookie, web.cookie}
    assert not {ssh.cookie, web.cookie} & h1.table.cookies() and to_c.cookie in h1.table.cookies()
    assert h1.lookup(A.ofport, ssh_data).ports == [CONTROLLER]
    assert_as_decided(h1, A.ofport, c_data, to_c)
    now, _ = h1.miss(A.ofport, frame(tcp_from(A, D.ip, 1002, SG_PORT)))
    assert now.actions == []  # the group admits nothing any more


# ---- the property: the table answers as the simulation decides -----------------------
def _packet(draw) -> tuple[Vm, dict[str, Any]]:
    """A packet from one of the campus VMs to another (or to the internet,
    dst None): TCP, UDP, another ethertype, or an ARP request."""
    src = draw(st.sampled_from(worlds.CAMPUS_VMS))
    dst = draw(st.sampled_from([*(vm for vm in worlds.CAMPUS_VMS if vm != src), None]))
    kind = draw(st.sampled_from(["tcp", "udp", "other", "arp"]))
    same = dst is not None and dst.gw_mac == src.gw_mac
    dst_ip = dst.ip if dst is not None else "8.8.8.8"
    dst_mac = dst.mac if same else src.gw_mac
    if kind == "arp":
        return src, {"eth_src": src.mac, "eth_dst": worlds.BCAST, "eth_type": ETH_ARP,
                     "arp_op": 1, "arp_sha": src.mac, "arp_spa": src.ip,
                     "arp_tpa": dst.ip if same else src.gw_ip}
    if kind == "other":  # IPv6 or the like: switched on MACs only
        return src, {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": 0x86DD}
    ports = st.sampled_from([SG_PORT, 80, 40000])  # few: later packets meet earlier flows
    return src, {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": ETH_IP,
                 "ip_src": src.ip, "ip_dst": dst_ip,
                 "ip_proto": PROTO_TCP if kind == "tcp" else PROTO_UDP,
                 "ip_ttl": draw(st.sampled_from([64, 64, 64, pl.LOW_TTL, pl.LOW_TTL - 1, 2])),
                 "tp_src": draw(ports), "tp_dst": draw(ports),
                 "tcp_flags": draw(st.sampled_from([0x02, 0x10, 0x10, 0x10, 0x11, 0x04]))}


def always_to_agent(f: dict[str, Any]) -> bool:
    """What the pipeline sends to the agent whatever flows it holds: a TTL
    below LOW_TTL (routers answer it). (A TCP FIN or RST is never installed;
    a tracked flow's close flows forward it and copy it to the agent.)"""
    return f["eth_type"] == ETH_IP and f["ip_ttl"] < pl.LOW_TTL


packets = st.lists(st.composite(_packet)(), min_size=1, max_size=16)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(packets)
def test_for_any_packet_between_the_vms_the_table_answers_as_the_simulation(seq):
    """Each packet of a random sequence is looked up first: one that reaches
    a flow installed for an earlier packet must be treated as the simulation
    would treat it now (the flow's match covers what the decision depended
    on); one that reaches the controller is simulated, its messages applied,
    and looked up again: the table now answers as the decision says (a
    tunnelled copy is delivered by the egress host's table to the port its
    key names) unless the decision was not to be installed (then the packet
    still reaches the agent)."""
    world = build_campus()
    by_ip = {worlds.TUNNEL_IPS[h]: getattr(world, h) for h in worlds.HOSTS}
    for vm, f in seq:
        host, data = getattr(world, vm.host), frame(f)
        tr = host.lookup(vm.ofport, data)
        if tr.ports[:1] == [CONTROLLER] and pl.close_copy(*tr.hits[-1][::2]):
            # a tracked FIN or RST: forwarded as the simulation would now,
            # its copy only closes the connection
            would = host.core.dry_decision(vm.ofport, frames.parse(data))
            tunnels = set(host.core.tunnel_ofports.values())
            forwarded = Trace(outputs=tr.outputs[1:])
            assert _key(left(forwarded, tunnels)) == \
                _key(expected(would, switch_view(vm.ofport, data)))
            d, msgs = host.miss(vm.ofport, data, copy=True)
            assert d is not None and not d.actions and not d.install and not d.emits
            assert len(msgs) == len(d.pushes)
            continue
        if CONTROLLER not in tr.ports:
            would = host.core.dry_decision(vm.ofport, frames.parse(data))
            assert would is not None
            tunnels = set(host.core.tunnel_ofports.values())
            assert _key(left(tr, tunnels)) == _key(expected(would, switch_view(vm.ofport, data))), \
                (f, would.result and would.result.reason)
            continue
        d, _ = host.miss(vm.ofport, data)
        assert d is not None
        if not d.install or always_to_agent(f):
            assert host.lookup(vm.ofport, data).ports == [CONTROLLER]
            continue
        for o in assert_as_decided(host, vm.ofport, data, d).outputs:
            if "tun_ipv4_dst" in o.pkt:  # the egress host delivers by key alone
                peer = by_ip[o.pkt["tun_ipv4_dst"]]
                (ofport,) = [of for of, key in peer.classified.values()
                             if key == o.pkt["tunnel_id"]]
                assert delivered(peer, o.pkt).ports == [ofport]
