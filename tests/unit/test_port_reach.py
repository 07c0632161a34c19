"""A port bound after a router asked for it by ARP is reached at once
(issue 13, goal 4): the ask is not held back by the 1 s retry interval."""

from __future__ import annotations

from midoflow.agent.arphold import ArpHold
from midoflow.agent.clock import FakeClock
from midoflow.agent.core import Tunnel
from midoflow.apps import frames
from tests.unit import worlds
from tests.unit.test_agent_routing import frame_of, ip_fields
from tests.unit.worlds import TUNNELS


def test_binding_seen_elsewhere_makes_the_router_ask_again_at_once():
    api = worlds.two_hosts(*worlds.two_subnets())
    replayed: list = []
    agents = {h: worlds.agent(api, h, frames=worlds.OsKenFrames(),
                              replay=lambda ofport, frame, h=h: replayed.append((h, ofport, frame)),
                              clock=FakeClock(wall=worlds.NOW))
              for h in worlds.HOSTS}
    h1, h2 = agents["h1"], agents["h2"]
    worlds.bind(agents, {"h1": {**TUNNELS, "vm1": (5, "p1")}, "h2": dict(TUNNELS)})
    f = ip_fields()
    # p2 is bound nowhere yet: the router asks, and the request reaches no one
    d = h1.handle_miss(5, f, frame_of(f))
    assert d.actions == [] and all(not e.actions for e in d.emits)
    d = h1.handle_miss(5, f, frame_of(f))  # asked within the second: not again
    assert d.emits == [] and len(h1.held[("r", "192.168.2.20")]) == 2
    # the VM's port is bound on h2: h1 sees it and simulates the held packets again
    worlds.bind(agents, {"h2": {**TUNNELS, "vm2": (5, "p2")}})
    assert h2.bindings == {"p2": 5}
    assert [(h, o) for h, o, _ in replayed] == [("h1", 5), ("h1", 5)]
    assert not h1.held.get(("r", "192.168.2.20")) and h1.stats["arp_retried"] == 2
    # ... and the first of them asks again at once, now tunnelled to h2
    _h, ofport, frame = replayed[0]
    d = h1.handle_miss(ofport, frames.parse(frame), frame)
    (req,) = d.emits
    assert req.actions == [Tunnel(12, "10.0.0.2", 1)]
    assert frames.parse(req.frame)["arp_tpa"] == "192.168.2.20"


def test_retry_forgets_the_asks_and_keeps_recovering_ports_waiting():
    clock, replayed = FakeClock(), []
    stats = {"arp_held": 0, "arp_expired": 0}
    hold = ArpHold(clock, lambda f, *a: f(*a), lambda o, fr: replayed.append((o, fr)), stats)
    assert hold.should_ask(("r", "10.0.0.9"))
    hold.hold(("r", "10.0.0.9"), 5, b"a")
    hold.hold(("recovering", "p"), 6, b"b")
    hold.asked[("recovering", "p")] = clock.mono()
    assert not hold.should_ask(("r", "10.0.0.9"))
    assert hold.retry() == 1 and replayed == [(5, b"a")]
    assert hold.should_ask(("r", "10.0.0.9"))  # asked again at once
    assert hold.held[("recovering", "p")] == [(clock.mono() + 3.0, 6, b"b")]
