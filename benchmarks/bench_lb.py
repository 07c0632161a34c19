"""Layer-4 load balancing (issue 14): new connections per second and
keep-alive requests per second through a VIP with three members, each
against the same client reaching one member directly, in the same run.

The lab is ``topologies/lblab.py`` on a 3-host MidoCloud: router ``r``, the
client ``c`` (host 2) on 10.81.0.0/24, members m1-m3 (hosts 1-3, each an
HTTP/1.1 server answering its name) on 10.80.0.0/24, VIP 10.80.0.100:80
(TCP pool, round robin). Direct (the baseline): ``c`` to the same server
process in m1 on a port no pool uses (10.80.0.11:8080) across the same
router, a stateless routed path (wildcarded flows: after the first packet no
connection reaches an agent). Through the VIP every new connection is
simulated at ``c``'s host (the balancer picks a member and DNATs the
connection: a NAT binding pushed to the member's host, exact flows) and its
reply at the member's host (the binding restores the VIP). Also measured,
in ``extra`` only: new connections straight to m1's POOL port (10.80.0.11:80):
once a pool holds a member, replies from its pool port are checked for a
balancer's binding, so each such connection is simulated too.

* ``lb_new_connection_rate``: WORKERS threads in ``c`` each opening a new
  connection, sending ``GET /`` (HTTP/1.0) and reading the answer, for
  SECONDS; completed connections per second (best round);
* ``lb_keepalive_request_rate``: WORKERS keep-alive connections sending
  requests back to back for SECONDS; answers per second (best round).

Rounds alternate VIP and direct so both see the same machine load; the
pool-port rounds come after them all (see the comment in ``run``). The
per-port bounds against hostile VMs (packet-in meter, flow limit) are lifted,
as in bench_stateful_rate: this measures the agent, not the policer.

Run: ``.venv/bin/python -m benchmarks.bench_lb`` (root). Knobs (env):
``LB_BENCH_QUICK=1`` (one short round: about a minute in all),
``LB_BENCH_SECONDS``, ``LB_BENCH_ROUNDS``, ``LB_BENCH_WORKERS``.
"""

from __future__ import annotations

import os

from benchmarks.cloudbench import BenchError, logger, run_main
from benchmarks.common import report

NAME_CONN = "lb_new_connection_rate"
NAME_KA = "lb_keepalive_request_rate"
QUICK = os.environ.get("LB_BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("LB_BENCH_SECONDS", "3" if QUICK else "6"))
ROUNDS = int(os.environ.get("LB_BENCH_ROUNDS", "1" if QUICK else "3"))
WORKERS = int(os.environ.get("LB_BENCH_WORKERS", "8"))
UNBOUNDED = {"packet_in_rate": 10_000_000, "packet_in_burst": 1_000_000,
             "max_flows_per_port": 10_000_000, "max_macs_per_port": 1_000_000}

log = logger("bench_lb")


def _best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["ok"] / r["seconds"])


def run() -> None:
    from topologies.lblab import OTHER_PORT, PORT, VIP, LbLab, wait_answers
    from topologies.midocloud import MidoCloud

    with MidoCloud(3, progress=log, agent_options=UNBOUNDED) as mc:
        lab = LbLab(mc, progress=log).build()
        m1 = lab.addr["m1"]
        lab.build_lb()
        wait_answers(lab, "c", 30, "the VIP to answer the client")
        paths = {"conn-rate": (("vip", VIP, PORT), ("direct", m1, OTHER_PORT)),
                 "ka-rate": (("vip", VIP, PORT), ("direct", m1, OTHER_PORT))}
        results: dict[str, dict[str, list[dict]]] = {
            mode: {path: [] for path, _, _ in ps} for mode, ps in paths.items()}
        # Straight to the pool port last: its exact reply flows (m1:80 -> c:P,
        # 60 s idle) would meet later VIP connections from the same source
        # port P sent to m1, whose SYN-ACK would leave untranslated before the
        # pushed binding removes the flow (a 1 s SYN retransmit each).
        rounds = [[(mode, path, ip, port) for mode, ps in paths.items()
                   for path, ip, port in ps] for _ in range(ROUNDS)]
        results["conn-rate"]["direct_pool_port"] = []
        rounds += [[("conn-rate", "direct_pool_port", m1, PORT)] for _ in range(ROUNDS)]
        for i, batch in enumerate(rounds):
            for mode, path, ip, port in batch:
                    r = lab.rate("c", mode, ip, SECONDS, WORKERS, port=port)
                    results[mode][path].append(r)
                    rate = r["ok"] / r["seconds"]
                    log(f"round {i % ROUNDS + 1}/{ROUNDS} {mode} {path}: {rate:.0f}/s "
                        f"({r['ok']} ok, {r['err']} failed {dict(r['errors'])}, by member "
                        f"{dict(r['hits'])})")
        lab.stop()
    lab.remove_health_namespaces()
    for mode, name, unit, what in (
            ("conn-rate", NAME_CONN, "conn/s", "direct_member_connection_rate"),
            ("ka-rate", NAME_KA, "req/s", "direct_member_keepalive_request_rate")):
        vip, direct = _best(results[mode]["vip"]), _best(results[mode]["direct"])
        if not vip["ok"] or not direct["ok"]:
            raise BenchError(f"{mode}: no answer (VIP {vip}, direct {direct})")
        spread = dict(vip["hits"])
        if mode == "conn-rate" and len(spread) < 3:
            raise BenchError(f"new connections to the VIP did not reach all three members: "
                             f"{spread}")
        extra = {"seconds": SECONDS, "rounds": ROUNDS, "workers": WORKERS,
                 "vip_by_member": spread, "vip_failed": vip["err"],
                 "direct_failed": direct["err"]}
        for path, runs in results[mode].items():
            extra[f"rounds_{path}"] = [round(r["ok"] / r["seconds"], 1) for r in runs]
        report(name, vip["ok"] / vip["seconds"], unit, what, direct["ok"] / direct["seconds"],
               extra=extra)


if __name__ == "__main__":
    raise SystemExit(run_main("bench_lb", run))
