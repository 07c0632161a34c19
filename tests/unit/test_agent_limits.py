"""Per-port bounds of the agent against a hostile VM (issue 9): learned MACs,
installed flows, later IP fragments, malformed frames, and how they show in
the host state and `midoflow status`."""

import dataclasses

import pytest

from midoflow.agent.config import AgentConfig, ConfigError
from midoflow.agent.core import AgentCore, Tunnel
from midoflow.cli.status import format_status
from midoflow.service.topology import _status_host
from midoflow.store import paths
from tests.unit.worlds import BCAST, M1, M2


def udp(src_mac: str, dst_mac: str, sport: int, dport: int = 53, **kw) -> dict:
    f = {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": 0x800, "ip_src": "10.0.0.11",
         "ip_dst": "10.0.0.12", "ip_proto": 17, "ip_ttl": 64, "ip_tos": 0,
         "tp_src": sport, "tp_dst": dport}
    f.update(kw)
    return f


def bind_h1(a: AgentCore) -> AgentCore:
    a.set_interfaces({"vxlan0": (1, None), "vm1": (5, "p1"), "vm3": (6, "p3")})
    return a


def test_config_validates_the_limits(tmp_path):
    path = tmp_path / "agent.ini"
    base = "[agent]\nhost_id=h\nzookeeper=memory\novsdb=unix:/x\ntunnel_ip=10.0.0.1\n"
    path.write_text(base)
    c = AgentConfig.load(str(path))
    assert (c.max_macs_per_port, c.max_flows_per_port, c.packet_in_rate) == (64, 4096, 1000)
    path.write_text(base + "max_macs_per_port=0\n")
    with pytest.raises(ConfigError, match="max_macs_per_port '0': give a whole number"):
        AgentConfig.load(str(path))
    path.write_text(base + "packet_in_rate=lots\n")
    with pytest.raises(ConfigError, match="packet_in_rate"):
        AgentConfig.load(str(path))


def test_new_source_macs_beyond_the_limit_are_dropped_and_not_learned(limits_world):
    api, make = limits_world
    a = bind_h1(make("h1", max_macs_per_port=4))
    macs = [f"02:aa:00:00:00:{i:02x}" for i in range(10)]
    decisions = [a.handle_miss(5, udp(m, M2, 1000 + i)) for i, m in enumerate(macs)]
    learned = [n for n in api.list_state(paths.mac_table("b")) if n.endswith(",p1")]
    assert len(learned) == 4
    assert all(d.actions == [Tunnel(12, "10.0.0.2", 1)] for d in decisions[:4])
    refused = decisions[4:]
    assert all(d.actions == [] and not d.install for d in refused)
    assert a.refused["mac_limit"] == {"p1": 6}
    # MACs already learned keep working; another port is not affected
    assert a.handle_miss(5, udp(macs[0], M2, 2000)).actions == [Tunnel(12, "10.0.0.2", 1)]
    assert a.handle_miss(6, udp("02:bb:00:00:00:01", M2, 1)).actions == \
        [Tunnel(12, "10.0.0.2", 1)]


def test_flows_beyond_the_per_port_limit_are_forwarded_but_not_installed(limits_world):
    _, make = limits_world
    a = bind_h1(make("h1", max_flows_per_port=5))
    a.handle_miss(5, udp(M1, BCAST, 1))
    # each miss is a new flow for the index (OVS would see packets that miss)
    ds = [a.handle_miss(5, udp(M1, M2, 3000 + i)) for i in range(8)]
    assert [d.install for d in ds] == [True] * 4 + [False] * 4
    assert a.flows.count("p1") == 5
    assert all(d.actions == [Tunnel(12, "10.0.0.2", 1)] for d in ds)  # still forwarded
    assert a.refused["flow_limit"] == {"p1": 4}


def test_flow_limit_counts_per_ingress_port_and_frees_on_removal(limits_world):
    _, make = limits_world
    a = bind_h1(make("h1", max_flows_per_port=2))
    d1 = a.handle_miss(5, udp(M1, BCAST, 1))
    d2 = a.handle_miss(5, udp(M1, M2, 2))
    d3 = a.handle_miss(5, udp(M1, "02:00:00:00:00:09", 3))
    assert (d1.install, d2.install, d3.install) == (True, True, False)
    assert a.refused["flow_limit"] == {"p1": 1}
    assert a.handle_miss(6, udp("02:00:00:00:00:03", M2, 4)).install  # p3 has its own
    a.flow_removed(d1.cookie)  # idle timeout: room again
    assert a.flows.count("p1") == 1
    assert a.handle_miss(5, udp(M1, "02:00:00:00:00:09", 3)).install


def test_later_fragments_follow_their_first_or_are_dropped(limits_world):
    _, make = limits_world
    a = bind_h1(make("h1"))
    a.handle_miss(5, udp(M1, BCAST, 1))
    later = udp(M1, M2, None, None, tp_src=None, tp_dst=None, ip_frag=2, ip_id=77)
    orphan = a.handle_miss(5, later)
    assert orphan.actions == [] and not orphan.install
    assert a.stats["fragments_dropped"] == 1
    first = a.handle_miss(5, udp(M1, M2, 5000, ip_frag=1, ip_id=77))
    assert first.actions == [Tunnel(12, "10.0.0.2", 1)] and not first.install
    simulated = a.stats["simulated"]
    follow = a.handle_miss(5, later)
    assert follow.actions == first.actions and not follow.install
    assert a.stats["simulated"] == simulated  # never simulated on its own
    # another datagram's fragment, or the same one entering by another port: dropped
    assert a.handle_miss(5, {**later, "ip_id": 78}).actions == []
    assert a.handle_miss(6, {**later, "eth_src": "02:00:00:00:00:03"}).actions == []


def test_later_fragment_of_a_denied_first_fragment_is_dropped(limits_world):
    api, make = limits_world
    a = bind_h1(make("h1"))
    port, v = api.get("ports", "p2")
    port["admin_state_up"] = False
    from midoflow.store.base import Update
    api.commit([Update("ports", port, v)])
    a.handle_miss(5, udp(M1, BCAST, 1))
    assert a.handle_miss(5, udp(M1, M2, 5000, ip_frag=1, ip_id=9)).actions == []
    later = udp(M1, M2, None, None, tp_src=None, tp_dst=None, ip_frag=2, ip_id=9)
    assert a.handle_miss(5, later).actions == []


def test_protection_report_reaches_host_state_and_status(limits_world):
    api, make = limits_world
    a = bind_h1(make("h1", max_macs_per_port=1))
    a.handle_miss(5, udp(M1, M2, 1))
    a.handle_miss(5, udp("02:aa:00:00:00:01", M2, 2))
    a.note_malformed("tcp_options")
    a.note_malformed("tcp_options")
    a.note_malformed("runt")
    assert a.maybe_publish()
    state = api.get_state(paths.host_alive("h1"))
    prot = state["protection"]
    assert prot["mac_limit"] == {"p1": 1}
    assert prot["malformed"] == {"runt": 1, "tcp_options": 2}
    assert prot["limits"]["max_macs_per_port"] == 1
    assert not a.maybe_publish()  # unchanged (and too soon): no write
    text = format_status({"store": {"connected": True},
                          "hosts": [_status_host("h1", "h1", state)]})
    assert "h1: port p1: 1 frame(s) from new source MACs dropped (limit 1 MACs per port)" \
        in text
    assert "3 malformed frame(s) dropped (runt 1, tcp_options 2)" in text


def test_status_without_protection_block_still_renders():
    text = format_status({"store": {"connected": True},
                          "hosts": [_status_host("h9", "h9", None)]})
    assert "limits:" not in text and "h9" in text


def test_malformed_counts_also_in_stats(limits_world):
    _, make = limits_world
    a = make("h1")
    before = a.stats["malformed"]
    a.note_malformed("ip_header")
    assert a.stats["malformed"] == before + 1
    assert a.malformed_reasons == {"ip_header": 1}
    assert dataclasses.asdict(a.cfg)["max_flows_per_port"] == 4096


def test_a_frame_of_another_ethertype_gets_a_flow_naming_it(limits_world):
    """An IPv6 (or LLC) frame is parsed as Ethernet only: its flow must not
    match IPv4 or ARP between the same MACs (it would carry or drop them)."""
    _, make = limits_world
    a = bind_h1(make("h1"))
    a.handle_miss(5, udp(M1, BCAST, 1))
    d = a.handle_miss(5, {"eth_src": M1, "eth_dst": M2, "eth_type": 0x86DD})
    assert d.install and "eth_type" in d.match_fields
    ip = a.handle_miss(5, udp(M1, M2, 7))
    assert ip.install and "eth_type" not in ip.match_fields  # plain L2: MACs only


def test_mac_limit_counts_entries_written_but_not_yet_seen_through_the_watch(limits_world):
    """Between the store write and the watch that fills the cache, a learned
    MAC must still count against the port's limit."""
    _, make = limits_world
    a = bind_h1(make("h1", max_macs_per_port=3))
    for i in range(3):
        assert a.handle_miss(5, udp(f"02:aa:00:00:00:{i:02x}", M2, i)).actions != []
    a.cache.macs.clear()  # as if the watch had not delivered the entries yet
    d = a.handle_miss(5, udp("02:aa:00:00:00:99", M2, 9))
    assert d.actions == [] and a.refused["mac_limit"] == {"p1": 1}
    # a MAC learned here that has since moved to another port does not count
    a.cache.macs[("b", "02:aa:00:00:00:02")] = "p2"
    assert a.handle_miss(5, udp("02:aa:00:00:00:98", M2, 10)).actions != []
    # an unbound port starts again from nothing
    a.set_interfaces({"vxlan0": (1, None), "vm3": (6, "p3")})
    assert "p1" not in a.port_macs


def test_status_shows_each_agents_dhcp_answers():
    state = {"protection": {"dhcp": {"ack": 3, "nak": 1, "offer": 3}}}
    text = format_status({"store": {"connected": True},
                          "hosts": [_status_host("h1", "h1", state),
                                    _status_host("h2", "h2", {"protection": {}})]})
    assert "dhcp:   what each host's agent answered" in text
    assert "        h1: ack 3, nak 1, offer 3" in text and "h2: " not in text


def test_the_dhcp_counters_reach_the_published_report(limits_world):
    _, make = limits_world
    a = make("h1")
    a.stats["dhcp_offer"] = 2
    a.stats["dhcp_nak"] = 1
    assert a.protection_report()["dhcp"] == {"nak": 1, "offer": 2}
