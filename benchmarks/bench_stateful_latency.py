"""First-packet latency of a NEW TCP connection through conntrack + SNAT, and
the share of it spent on the flow-state push and on Cassandra, against the
plain routed path, all measured in the same run, interleaved.

Three cloud hosts (each its own userspace OVS, VXLAN) and one Cassandra 5.0
node. The provider router and its chains are bench_stateful_rate's: tenant
network 192.168.50.0/24, uplink bound on host 1 to an external namespace
(198.51.100.254) running a silent TCP server; inbound filter ``[rev_snat,
accept return flows of 192.168.50.8/29]`` (tracks each new connection of
those VMs), outbound ``[snat 192.168.50.8/29 to 203.0.113.10 out of the
uplink]``. Four VMs, four variants:

* ``a`` 192.168.50.11 on host 2, whose agent runs with
  ``flow_state=cassandra:...`` (headline): SNAT path; the SYN is simulated at
  host 2 (conntrack entry, NAT binding, a state push to host 1 sent before the
  packet, the state buffered for Cassandra), the SYN/ACK at host 1 (rev_snat);
* ``b`` 192.168.50.12 on host 3, whose agent was restarted with
  ``flow_state=local``: the same SNAT path, no Cassandra;
* ``c2`` 192.168.50.21 on host 2 and ``c3`` 192.168.50.22 on host 3: outside
  the NATed /29, plain routing to the external host and back (no NAT, no
  state); ``c`` (the baseline) pools both.

Each VM times ``connect()`` (SYN -> SYN/ACK) of a NEW connection to the
external host (cloudbench's client: fresh source port, closed with a reset).
Before every sample the agents' simulated flows are deleted on all three
hosts and their datapath caches purged (as bench_l3_latency's ``cold``
variant), so the SYN and the SYN/ACK each take a table miss; a sample counts
only if the ingress host and host 1 then hold a freshly simulated flow for
it. The variants take turns sample by sample (a, b, c2, c3, a, ...), with a
short pause after each so that state filed behind one connection is written
before the next is timed.

Is the Cassandra write on the packet's path? The agent files flow state
behind the packet: it buffers it per port and writes every 50 ms (or 256
entries). We check it three ways: (1) a - b; (2) for every ``a`` sample, the
WRITETIME of its NAT row (the agent's client-side timestamp of the write)
against the moment the SYN was sent and the connect time: a write issued
after the SYN/ACK came back cannot have delayed it; (3) a phase with the
Cassandra JVM stopped (SIGSTOP) in which ``a`` and ``b`` go on: a write on
the path would stall the connect; then SIGCONT and the rows written during
the stall must land.

Results: ``stateful_first_packet_latency`` (median ms of ``a``) vs
``routed_first_packet_latency`` (median of ``c``); extra: medians and p99 of
every variant, push+conntrack share (b - c) / a, Cassandra share (a - b) / a
with bootstrap 95% intervals of the differences. Run: ``.venv/bin/python -m
benchmarks.bench_stateful_latency`` (root). Knobs (env): STATEFUL_LAT_SAMPLES
(per variant), STATEFUL_LAT_STALL_SAMPLES.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

from benchmarks.bench_stateful_rate import (
    EXT,
    KEYSPACE,
    PUBLIC,
    NatTopo,
    agent_problems,
    cassandra_rows,
    flow_state_spec,
    log_count,
    start_cassandra,
    wait_cassandra,
)
from benchmarks.cloudbench import (
    SIM_COOKIE,
    BenchError,
    ConnectClient,
    flow_count,
    logger,
    parallel,
    percentile,
    purge_datapath,
    run_main,
    start_server,
    stop_agents_cleanly,
    summary,
    wait_ping,
)
from benchmarks.common import report

NAME = "stateful_first_packet_latency"
BASELINE = "routed_first_packet_latency"
SAMPLES = int(os.environ.get("STATEFUL_LAT_SAMPLES", "50"))
STALL_SAMPLES = int(os.environ.get("STATEFUL_LAT_STALL_SAMPLES", "12"))
STALL_MAX_SECONDS = 6.0  # well under the driver's 10 s request timeout
PAUSE = 0.06  # after each sample: longer than the agent's 50 ms flush period
PORT = 5556
MAX_BAD = 0.2
SAVE_FAILED = "cannot file flow state"

log = logger(NAME)


class Variant:
    def __init__(self, key: str, vm, host, natted: bool) -> None:
        self.key, self.vm, self.host, self.natted = key, vm, host, natted
        self.ip = vm.vm_ip.split("/")[0]
        self.client = None
        self.times: list[float] = []
        self.starts: list[float] = []  # wall time each recorded connect began

    @property
    def return_dst(self) -> str:
        return PUBLIC if self.natted else self.ip


class Bad:
    def __init__(self) -> None:
        self.failed = 0
        self.not_simulated = 0
        self.retried_delete = 0


def _clear(h) -> int:
    h.ovs_ofctl("del-flows", SIM_COOKIE)
    purge_datapath(h)
    return flow_count(h, SIM_COOKIE)


def clear_all(hosts, bad: Bad) -> None:
    """Delete every simulated flow on every host and purge the datapaths."""
    for _ in range(3):
        if not any(parallel(_clear, hosts)):
            return
        bad.retried_delete += 1
    raise BenchError("simulated flows keep coming back after deletion (stray traffic?)")


def simulated(v: Variant, h1) -> bool:
    checks = [(v.host, f"{SIM_COOKIE},ip,nw_dst={EXT}"),
              (h1, f"{SIM_COOKIE},ip,nw_dst={v.return_dst}")]
    return all(parallel(lambda hm: flow_count(*hm), checks))


def sample(v: Variant, hosts, bad: Bad, into: list[float] | None = None) -> None:
    clear_all(hosts, bad)
    t_wall = time.time()
    t = v.client.connect(EXT, PORT)
    if t is None:
        bad.failed += 1
    elif not simulated(v, hosts[0]):
        bad.not_simulated += 1
    else:
        (v.times if into is None else into).append(t)
        if into is None:
            v.starts.append(t_wall)
    time.sleep(PAUSE)


def restart_with_local_state(mc, h) -> None:
    """Host ``h``'s agent again, with ``flow_state=local``."""
    stop_agents_cleanly(mc, [h])
    spec, mc.flow_state = mc.flow_state, "local"
    try:
        mc.start_agent(h)
    finally:
        mc.flow_state = spec
    mc.wait_agents([h])


def wait_filed(cass, v: Variant, what: str, timeout: float = 60) -> None:
    """New connections from ``v`` until one of them is in Cassandra (the agent
    connects on first use; after a failure it drops what it had for 5 s)."""
    deadline = time.monotonic() + timeout
    while not cassandra_rows(cass, v.vm.port_id)["rows"]:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: no flow state of {v.vm.vm_name} reached Cassandra in "
                             f"{timeout:.0f} s (see {v.host.rundir}/agent.log)")
        v.client.connect(EXT, PORT)
        time.sleep(0.5)


def write_lags(cass, v: Variant, since: float) -> list[tuple[float, float]]:
    """(seconds from the SYN to the write of its NAT row, connect time) per
    recorded sample of ``v`` whose row was found."""
    from midoflow.devenv.cassandra import CqlError, cql_query

    try:
        rows = cql_query(cass.address, cass.native_port,
                         f"SELECT kind, WRITETIME(value) FROM {KEYSPACE}.flow_state "
                         f"WHERE port_id = '{v.vm.port_id}'", timeout=15,
                         auth=cass.admin_credentials)
    except (CqlError, OSError) as e:
        raise BenchError(f"cannot read the flow-state table: {e}") from None
    wts = sorted(wt / 1e6 for kind, wt in rows  # WRITETIME: microseconds
                 if kind == "nat" and wt and wt / 1e6 >= since - 1)
    out = []
    for start, dt in zip(v.starts, v.times, strict=True):
        later = [w for w in wts if start - 0.002 <= w < start + 0.3]
        if later:
            out.append((later[0] - start, dt))
    return out


def boot_ci(xs: list[float], ys: list[float], n: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of median(xs) - median(ys)."""
    rng = random.Random(7)
    diffs = sorted(percentile(rng.choices(xs, k=len(xs)), 50)
                   - percentile(rng.choices(ys, k=len(ys)), 50) for _ in range(n))
    return percentile(diffs, 2.5), percentile(diffs, 97.5)


def run() -> None:
    from topologies.midocloud import MidoCloud

    cass = None
    mc = None
    stopped_jvm = False
    bad = Bad()
    stall: dict[str, list[float]] = {"a": [], "b": []}
    res: dict = {}
    try:
        t_start = time.monotonic()
        cass = start_cassandra(log)
        mc = MidoCloud(n_hosts=3, tunnel="vxlan", progress=log, flow_state=flow_state_spec(cass),
                       cassandra_credentials=cass.credentials)
        mc.start()
        h1, h2, h3 = mc.hosts
        log(f"restarting {h3.name}'s agent with flow_state=local")
        restart_with_local_state(mc, h3)
        topo = NatTopo(mc)
        ext = topo.external(h1)
        start_server(mc.cloud, ext, PORT)
        vs = [Variant("a", topo.vm(h2, "sla", "192.168.50.11", "02:00:00:5f:01:0b"), h2, True),
              Variant("b", topo.vm(h3, "slb", "192.168.50.12", "02:00:00:5f:01:0c"), h3, True),
              Variant("c2", topo.vm(h2, "slc2", "192.168.50.21", "02:00:00:5f:01:15"), h2, False),
              Variant("c3", topo.vm(h3, "slc3", "192.168.50.22", "02:00:00:5f:01:16"), h3,
                      False)]
        a, b = vs[0], vs[1]
        topo.set_stateful(True)
        wait_cassandra(cass, log)
        for v in vs:
            wait_ping(v.vm, EXT, f"variant {v.key}", timeout=20)
            v.client = ConnectClient(mc.cloud, v.vm)
            for _ in range(3):
                if v.client.connect(EXT, PORT) is None:
                    raise BenchError(f"{v.vm.vm_name} cannot connect to {EXT}:{PORT} "
                                     f"(ping works)")
        wait_filed(cass, a, "warm-up")
        hosts = mc.hosts
        problems0 = sum(agent_problems(h) for h in hosts)
        failed0 = log_count(h2, SAVE_FAILED)
        log(f"ready in {time.monotonic() - t_start:.0f} s: a (SNAT, Cassandra) on {h2.name}, "
            f"b (SNAT, local state) on {h3.name}, c2/c3 (routed) on {h2.name}/{h3.name}, "
            f"external host on {h1.name}; {SAMPLES} samples per variant, interleaved")

        t_main = time.time()
        t0 = time.monotonic()
        for i in range(SAMPLES):
            for v in vs:
                sample(v, hosts, bad)
            if (i + 1) % 10 == 0 or i + 1 == SAMPLES:
                med = {v.key: summary(v.times, 1e3).get("median", 0) for v in vs}
                log(f"  {i + 1}/{SAMPLES}: medians a {med['a']:.2f} b {med['b']:.2f} "
                    f"c2 {med['c2']:.2f} c3 {med['c3']:.2f} ms ({time.monotonic() - t0:.0f} s)")
        lags = write_lags(cass, a, t_main)

        log(f"Cassandra stopped (SIGSTOP) for up to {STALL_MAX_SECONDS:.0f} s: a and b go on")
        t_stall = time.time()
        failed_before = bad.failed
        os.kill(cass.pid, signal.SIGSTOP)
        stopped_jvm = True
        t0 = time.monotonic()
        for _ in range(STALL_SAMPLES):
            if time.monotonic() - t0 > STALL_MAX_SECONDS:
                break
            sample(a, hosts, bad, into=stall["a"])
            sample(b, hosts, bad, into=stall["b"])
        stall_s = time.monotonic() - t0
        stall_failed = bad.failed - failed_before
        os.kill(cass.pid, signal.SIGCONT)
        stopped_jvm = False
        t0 = time.monotonic()
        landed = 0
        while time.monotonic() - t0 < 15:
            landed = cassandra_rows(cass, a.vm.port_id, t_stall)["kinds"].get("nat", 0)
            if landed >= len(stall["a"]):
                break
            time.sleep(0.5)
        log(f"  stalled {stall_s:.1f} s: a median "
            f"{summary(stall['a'], 1e3).get('median', 0):.2f} ms over {len(stall['a'])} "
            f"connects, b {summary(stall['b'], 1e3).get('median', 0):.2f} ms; after SIGCONT "
            f"{landed} of a's connections filed in {time.monotonic() - t0:.1f} s")

        res = {
            "b_port_rows_in_cassandra": cassandra_rows(cass, b.vm.port_id)["rows"],
            "stall_seconds": round(stall_s, 2),
            "stall_rows_landed_after_resume": landed,
            "stall_connections_failed": stall_failed,
            "agent_errors_logged": sum(agent_problems(h) for h in hosts) - problems0,
            "cassandra_writes_failed_logged": log_count(h2, SAVE_FAILED) - failed0,
        }
        total = sum(len(v.times) for v in vs) + len(stall["a"]) + len(stall["b"])
        if bad.failed + bad.not_simulated > MAX_BAD * (total + bad.failed + bad.not_simulated):
            raise BenchError(f"{bad.failed} connections failed and {bad.not_simulated} were "
                             f"not simulated, of {total + bad.failed + bad.not_simulated}; "
                             f"see the agents' logs")
        for v in vs:
            if len(v.times) < SAMPLES // 2:
                raise BenchError(f"only {len(v.times)} good samples for variant {v.key}")
        if res["b_port_rows_in_cassandra"]:
            raise BenchError(f"{h3.name}'s agent filed b's state in Cassandra: it should run "
                             f"with flow_state=local")
        log(f"measured in {time.monotonic() - t_start:.0f} s; tearing down")
    finally:
        try:
            if cass is not None and stopped_jvm:
                os.kill(cass.pid, signal.SIGCONT)
            if mc is not None:
                mc.stop()
        finally:
            if cass is not None:
                cass.cleanup()

    ta, tb = vs[0].times, vs[1].times
    tc = vs[2].times + vs[3].times
    ma, mb, mcc = (percentile(x, 50) * 1e3 for x in (ta, tb, tc))
    ci_ab = [round(x * 1e3, 3) for x in boot_ci(ta, tb)]
    ci_bc = [round(x * 1e3, 3) for x in boot_ci(tb, tc)]
    during = sum(1 for lag, dt in lags if lag < dt)
    lag_ms = [lag * 1e3 for lag, _ in lags]
    s = {k: summary(x, 1e3) for k, x in (("a", ta), ("b", tb), ("c", tc), ("c2", vs[2].times),
                                         ("c3", vs[3].times), ("a_cassandra_stopped", stall["a"]),
                                         ("b_while_cassandra_stopped", stall["b"]))}
    stalled = s["a_cassandra_stopped"].get("median", float("nan"))
    blocked = res["stall_connections_failed"] > 0 or not stall["a"] or stalled > 2 * ma
    if blocked:
        verdict = (f"the Cassandra write IS on the packet's path: with the Cassandra JVM "
                   f"stopped, {res['stall_connections_failed']} connects failed and the rest "
                   f"took a median {stalled:.2f} ms (vs {ma:.2f} ms)")
    else:
        verdict = (f"the Cassandra write is not on the packet's path: with the Cassandra JVM "
                   f"stopped the connects went on (median {stalled:.2f} ms vs {ma:.2f} ms, "
                   f"none failed) and {res['stall_rows_landed_after_resume']} of their "
                   f"{len(stall['a'])} rows landed only after it resumed")
        if lag_ms:
            verdict += (f"; the agent issued each write a median {percentile(lag_ms, 50):.1f} ms "
                        f"after the SYN was sent, {during} of {len(lags)} before the SYN/ACK "
                        f"was back (those share the CPU with it, nothing more); a - b = "
                        f"{ma - mb:+.2f} ms (95% interval {ci_ab[0]:+.2f} .. {ci_ab[1]:+.2f})")
    log(verdict)
    report(NAME, ma, "ms", BASELINE, mcc, higher_is_better=False, extra={
        "method": "TCP connect() (SYN -> SYN/ACK) of new connections from VMs on hosts 2 and "
                  "3 to an external host behind the provider router's uplink on host 1; "
                  "all simulated flows deleted and datapaths purged before each; variants "
                  "interleaved sample by sample: a = conntrack + SNAT, agent with "
                  "flow_state=cassandra (one Cassandra 5.0 node); b = the same, agent with "
                  "flow_state=local; c = plain routing (VMs outside the NATed /29, on both "
                  "hosts); headline median of a vs median of c",
        "a_snat_cassandra_ms": s["a"],
        "b_snat_local_state_ms": s["b"],
        "c_routed_ms": s["c"],
        "c2_routed_host2_ms": s["c2"],
        "c3_routed_host3_ms": s["c3"],
        "push_conntrack_share": round((mb - mcc) / ma, 3),
        "cassandra_share": round((ma - mb) / ma, 3),
        "a_minus_b_ms": round(ma - mb, 3),
        "a_minus_b_ci95_ms": ci_ab,
        "b_minus_c_ms": round(mb - mcc, 3),
        "b_minus_c_ci95_ms": ci_bc,
        "cassandra_write_issued_after_syn_ms": summary(lag_ms, 1, 2) if lag_ms else None,
        "cassandra_writes_issued_before_synack": during,
        "cassandra_writes_matched": len(lags),
        "a_with_cassandra_stopped_ms": s["a_cassandra_stopped"],
        "b_while_cassandra_stopped_ms": s["b_while_cassandra_stopped"],
        "cassandra_on_packet_path": blocked,
        "verdict": verdict,
        "connections_failed": bad.failed,
        "connections_not_simulated_discarded": bad.not_simulated,
        "flow_deletions_retried": bad.retried_delete,
        **res,
    })


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
