"""Metadata through the agent: requests per second and median latency of
``GET http://169.254.169.254/openstack/latest/meta_data.json`` from one VM,
answered through the agent of its host (OVS steers it to the agent's proxy,
which signs it and forwards it to Nova), against the same VM calling the
upstream directly, same run.

One cloud host; the VM boots by DHCP (its gateway is a virtual router). The
upstream is the Nova stand-in (``python -m topologies.metadata``) run twice
as the same command: on 127.0.0.1 in the root namespace for the agent
(``metadata_upstream``; it checks the signature, as Nova does), and in a
second VM on the same network and host for the direct calls (no signature
to check: the VM has none), so the baseline crosses the same OVS as the
agent's path does, as a VM reaching a Nova metadata API on its network would.
The client (``topologies.metadata.measure_requests``) makes every request on
a NEW connection, as cloud-init and curl do, one after another; rounds
alternate the two paths, and every answer must be a 200.

Results: ``metadata_rate`` (requests/s through the agent) vs
``metadata_direct_rate``; ``metadata_latency`` (median ms) vs the direct
median. Knobs (env): METADATA_BENCH_REQUESTS (per round, default 200),
METADATA_BENCH_ROUNDS (default 3).

    .venv/bin/python -m benchmarks.bench_metadata      (root)
"""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.cloudbench import REPO, BenchError, logger, run_main
from benchmarks.common import report

NAME = "metadata_rate"
REQUESTS = int(os.environ.get("METADATA_BENCH_REQUESTS", "200"))
ROUNDS = int(os.environ.get("METADATA_BENCH_ROUNDS", "3"))
SECRET = "bench-secret"
INSTANCE, TENANT = "bench-instance", "bench-tenant"
VM_IP, VM_MAC = "10.0.0.5", "02:00:00:0e:0d:05"
VM_PORT = 8775  # the direct stand-in's, in the "nova" VM
NOVA_IP, NOVA_MAC = "10.0.0.9", "02:00:00:0e:0d:09"
PATH = "/openstack/latest/meta_data.json"

log = logger("bench_metadata")


def upstream(cmd_in, port: int, what: str, secret: str | None, host: str = "127.0.0.1"):
    """The stand-in on ``host``:``port`` (0: any free port) started by
    ``cmd_in(argv)``; the process, with its URL as ``proc.url``."""
    argv = [sys.executable, "-u", "-m", "topologies.metadata", "--host", host,
            "--port", str(port)]
    proc = cmd_in(argv + (["--secret", secret] if secret else []))
    line = proc.stdout.readline()
    if "serving" not in line:  # it exited: its output says why
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise BenchError(f"the Nova stand-in ({what}) did not start: {line!r} {err[-300:]}")
    proc.url = line.split()[-1]
    return proc


def measure(vm, url: str, n: int) -> dict:
    from topologies.metadata import measure_requests

    r = measure_requests(vm, url, n)
    if r["errors"] or r["codes"] != {"200": n}:
        raise BenchError(f"requests to {url}: {r['errors']} failed, answers {r['codes']} "
                         f"(all {n} must be 200)")
    return r


def run() -> None:
    import statistics

    from topologies.midocloud import MidoCloud

    nova = upstream(lambda argv: subprocess.Popen(
        argv, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        0, "root namespace", SECRET)
    procs: list[subprocess.Popen] = [nova]
    mc = MidoCloud(n_hosts=1, progress=log, agent_options={
        "metadata_upstream": nova.url, "metadata_secret": SECRET})
    res: dict[str, list[dict]] = {"agent": [], "direct": []}
    try:
        mc.start()
        br = mc.bridge("meta-bench")
        mc.attach(mc.router("meta-bench-r"), br, "10.0.0.1/24")  # the VM's default gateway
        mc.dhcp_subnet(br, "10.0.0.0/24", gateway="10.0.0.1")
        vm = mc.vm(1, br, "mv", VM_IP, VM_MAC, instance_id=INSTANCE, tenant_id=TENANT)
        direct = mc.vm(1, br, "nova", NOVA_IP, NOVA_MAC)
        procs.append(upstream(lambda argv: mc.cloud.popen(
            direct, argv, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
            VM_PORT, f"in {direct.vm_name}", None, host=NOVA_IP))
        urls = {"agent": f"http://169.254.169.254{PATH}",
                "direct": f"http://{NOVA_IP}:{VM_PORT}{PATH}"}
        for url in urls.values():  # warm-up: flows, ARP
            measure(vm, url, 5)
        log(f"{vm.vm_name} ({VM_IP}); {ROUNDS} round(s) of {REQUESTS} requests per path")
        for rnd in range(1, ROUNDS + 1):
            for name, url in urls.items():
                r = measure(vm, url, REQUESTS)
                res[name].append(r)
                log(f"  round {rnd}: {name}: {r['rps']:.0f} req/s, median "
                    f"{r['median_ms']:.2f} ms")
    finally:
        mc.stop()
        for p in procs:
            p.kill()
            p.wait(timeout=5)
    rate = {k: sum(r["n"] for r in v) / sum(r["seconds"] for r in v) for k, v in res.items()}
    lat = {k: statistics.median(r["median_ms"] for r in v) for k, v in res.items()}
    common = {"method": "sequential GETs of meta_data.json, each on a new TCP connection, from "
                        "one VM: to 169.254.169.254 through the agent of its host (OVS "
                        "steering, the agent's proxy, signed, forwarded to a Nova stand-in on "
                        "127.0.0.1 in the root namespace) vs to the same stand-in run in a "
                        "second VM on the same network and host; rounds alternate; latency: "
                        "the median of the rounds' medians",
              "requests_per_path": REQUESTS * ROUNDS, "rounds": ROUNDS,
              "agent_rate_per_s": round(rate["agent"], 1),
              "direct_rate_per_s": round(rate["direct"], 1),
              "agent_median_ms": round(lat["agent"], 3),
              "direct_median_ms": round(lat["direct"], 3),
              "rounds_detail": res}
    report(NAME, rate["agent"], "requests/s", "metadata_direct_rate", rate["direct"],
           extra=common)
    report("metadata_latency", lat["agent"], "ms", "metadata_direct_latency", lat["direct"],
           higher_is_better=False, extra=common)


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
