"""BGP under a real table, end to end: the gateway lab with GoBGP border
routers (topologies/gateways.py), the gateways' agents limited to
``LIMIT`` prefixes per peer. Border 1 announces more than the limit: the
status counts received / accepted / refused and the agent logs the overflow;
withdrawals make room and the refused prefixes are learned; an admin reset
of the session shows in the status (since, flaps, last error) and rewrites
no learned route (a ZooKeeper watcher counts every change); a border router
that connects first is accepted (the gateway listens), and the connection
refused before it shows as the last error."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from midoflow.bgp.names import namespace_name
from midoflow.store import paths
from topologies.gateways import UPLINKS, GatewayLab
from topologies.midocloud import wait_for as _wait_for

pytestmark = pytest.mark.e2e_bgp

LIMIT = 20
STALE = 15  # s: longer than GoBGP takes to come back after an admin reset
EXTRA = [f"198.18.{i}.0/24" for i in range(LIMIT + 5)]


@pytest.fixture(scope="module")
def lab(cloud_factory):
    gw_opts = {"bgp_max_prefixes": LIMIT, "bgp_stale_time": STALE}
    mc = cloud_factory(3, agent_options={"hosts": {"h2": gw_opts, "h3": gw_opts}})
    lab = GatewayLab(mc, border="gobgp", keepalive=1, hold=3)
    try:
        lab.start()
        lab.wait_sessions(timeout=60)
        _LAB[:] = [lab]
        yield lab
    finally:
        lab.stop()


def status(lab, i: int = 0) -> dict:
    return lab.mc.api.request("GET", f"/bgp_peers/{lab.peer_ids[i]}")["status"]


def learned(lab, i: int = 0) -> set[str]:
    """The destinations the provider router learned through uplink ``i``."""
    port = lab.uplink_ports[i]
    return {r["dst_cidr"] for r in lab.learned_routes() if r["next_hop_port"] == port}


def diagnosis(lab, i: int = 0) -> str:
    """What to look at when a session does not behave."""
    log = os.path.join(lab.gateways[i].rundir, "agent.log")
    with open(log) as f:
        tail = "".join(line for line in f.readlines()[-400:] if "bgp" in line.lower())[-4000:]
    try:
        nbrs = lab.borders[i].neighbors()
    except Exception as e:  # a stopped border router
        nbrs = f"({e})"
    lines = int(os.environ.get("BGP_LOG_LINES", "20"))
    return (f"status {status(lab, i)}; border neighbours {nbrs}\n"
            f"{lab.borders[i].log_tail(lines)}\n== agent log (BGP lines) ==\n{tail}")


def wait_for(pred, timeout: float, what: str):
    """midocloud's wait_for; on a timeout, the sessions' state and logs."""
    try:
        return _wait_for(pred, timeout, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{diagnosis(_LAB[0])}") from None


_LAB: list = []


def established(lab, i: int = 0):
    st = status(lab, i)
    return st if st["state"] == "established" else None


def test_over_the_limit_counted_logged_and_learned_when_room_frees_up(lab):
    border = lab.borders[0]
    wait_for(lambda: established(lab), 30, "session 1 established in the status")
    for p in EXTRA:
        border.add_network(p)
    # the default route and our 25 (and maybe our own range back through iBGP: filtered)
    st = wait_for(lambda: (lambda s: s if s.get("prefixes_received", 0) >= len(EXTRA) + 1
                           else None)(status(lab)), 30, "every prefix received by peer 1")
    assert (st["prefix_limit"], st["prefixes_accepted"]) == (LIMIT, LIMIT), st
    assert st["prefixes_refused"] == st["prefixes_received"] - LIMIT - st["prefixes_filtered"]
    assert st["prefixes_refused"] >= 5, st
    wait_for(lambda: len(learned(lab)) == LIMIT, 10, f"{LIMIT} routes learned via uplink 1")
    log = os.path.join(lab.gateways[0].rundir, "agent.log")
    with open(log) as f:
        assert f"prefix limit {LIMIT} reached" in f.read()
    refused = set(EXTRA) - learned(lab)
    assert len(refused) == st["prefixes_refused"]
    # withdraw as many accepted ones as were refused: every refused one is learned
    accepted = sorted(set(EXTRA) & learned(lab))[:len(refused)]
    for p in accepted:
        border.remove_network(p)
    wait_for(lambda: refused <= learned(lab) and not set(accepted) & learned(lab), 15,
             "the refused prefixes learned in place of the withdrawn ones")
    st = wait_for(lambda: (lambda s: s if s.get("prefixes_refused") == 0 else None)(
        status(lab)), 10, "no prefix refused any more")
    assert st["prefixes_accepted"] == len(learned(lab)) == LIMIT
    with open(log) as f:
        assert "refused prefix(es) accepted" in f.read()


def test_a_session_reset_shows_in_the_status_and_rewrites_no_route(lab):
    """Border 1's gobgpd restarted (about a second: GoBGP's own admin reset
    would idle 30 s). Its routes through uplink 1 must not move in the store."""
    before = wait_for(lambda: established(lab), 30, "session 1 established")
    # gateway 2 hears the same prefixes through border 2 (iBGP): settled too
    wait_for(lambda: (lambda s: s if s.get("prefixes_refused") == 0
                      and s.get("prefixes_accepted") == LIMIT else None)(status(lab, 1)), 20,
             "peer 2's table settled")
    routes = learned(lab)
    assert len(routes) == LIMIT
    uplink1 = lab.uplink_ports[0]
    seen: list[frozenset[str]] = []
    lock = threading.Lock()

    def on_children(names):
        with lock:
            seen.append(frozenset(n for n in names if f",{uplink1}," in n))

    lab.mc.store.watch_state_children(paths.learned_routes(lab.router), on_children)
    wait_for(lambda: seen, 5, "the watcher's first call")
    first = seen[0]
    assert len(first) == LIMIT
    t_reset = time.time()
    border = lab.borders[0]
    border.stop()
    border.start()
    back = wait_for(lambda: (lambda s: s if s["state"] == "established"
                             and s["since"] > t_reset else None)(status(lab)), 30,
                    "session 1 established again")
    assert back["flaps"] == before["flaps"] + 1, (before, back)
    assert back["last_error"] and back["last_error_at"] >= t_reset, back
    # the table announced again within the stale time: nothing rewritten
    wait_for(lambda: (lambda s: s if s["prefixes_stale"] == 0
                      and s["prefixes_accepted"] == LIMIT else None)(status(lab)), STALE,
             "the stale paths replaced by the announcements")
    assert learned(lab) == routes
    with lock:
        moved = [x for x in seen if x != first]
    assert not moved, f"learned routes via uplink 1 churned: {[len(x) for x in moved]}"


def test_a_border_router_that_connects_first_is_accepted(lab):
    """Connect-retry 60 s on both peers: after its first attempt fails the
    speaker waits a minute; a session up sooner was opened by the border."""
    border = lab.borders[0]
    border.stop()
    for pid in lab.peer_ids:
        lab.mc.api.request("PUT", f"/bgp_peers/{pid}", {"connect_retry": 60})
    try:
        st = wait_for(lambda: (lambda s: s if "refused" in (s.get("last_error") or "")
                               and s["state"] != "established" else None)(status(lab)), 20,
                      "the refused connection as peer 1's last error")
        assert st["last_error"].startswith("connection to 192.0.2.2 port 179 failed"), st
        t0 = time.monotonic()
        border.start()
        wait_for(lambda: established(lab), 20, "the session the border router opened")
        took = time.monotonic() - t0
        assert took < 30, took
        ns = namespace_name(lab.mc.host_ids[lab.gateways[0].name])
        ss = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tnH", "state", "established"],
                            capture_output=True, text=True, timeout=10).stdout
        assert f"{UPLINKS[0].ip}:179 " in ss, ss  # the border connected to our port 179
    finally:
        for pid in lab.peer_ids:
            lab.mc.api.request("PUT", f"/bgp_peers/{pid}", {"connect_retry": 1})
