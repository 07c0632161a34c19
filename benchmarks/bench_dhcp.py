"""DHCP lease time (ms, lower is better): from ``dhclient`` start to a
configured address in a VM, answered by the agent of the VM's host, against a
dnsmasq (as Neutron's DHCP agent runs it) serving the same VM on the same
bridge, same run.

Two cloud hosts (each its own userspace OVS, VXLAN between them). Bridge
10.0.0.0/24 with a midoflow DHCP subnet (gateway .1, MTU 1450, domain
``midoflow.test``). VM ``dv`` (10.0.0.5) on host 1 boots by ISC ``dhclient``
(``topologies.dhcp_clients``: our script configures the address, MTU and
routes in the VM's namespace only). The baseline's dnsmasq runs in a
namespace plugged into the SAME bridge on host 2, as on a network node
(``--dhcp-host`` for the VM's MAC and address, ``--dhcp-option-force=26,1450``,
domain ``dnsmasq.test``, lease and pid files in a temp dir); while it serves,
the midoflow DHCP subnet is disabled (``enabled: false``), so the agent
simulates the VM's DHCP packets like any others and floods them to dnsmasq.

Trials alternate midoflow / dnsmasq (both see the same noise); each starts
from an unconfigured eth0 and a fresh lease file, and checks who answered
(the domain name) and what was configured (address, MTU 1450); the time is
what ``dhclient`` took until its script had configured the address (the
``seconds`` of ``dhcp_clients``). Result: ``dhcp_lease_time`` (median of
DHCP_BENCH_TRIALS, 20 by default, per server) vs ``dnsmasq_lease_time``.

    .venv/bin/python -m benchmarks.bench_dhcp      (root)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from benchmarks.cloudbench import BenchError, logger, run_main, summary
from benchmarks.common import report

NAME = "dhcp_lease_time"
TRIALS = int(os.environ.get("DHCP_BENCH_TRIALS", "20"))
CIDR, MASK, GW = "10.0.0.0/24", "255.255.255.0", "10.0.0.1"
VM_IP, VM_MAC = "10.0.0.5", "02:00:00:0d:00:05"
DNSMASQ_IP, DNSMASQ_MAC = "10.0.0.2", "02:00:00:0d:00:02"
MTU = 1450
DOMAIN = {"midoflow": "midoflow.test", "dnsmasq": "dnsmasq.test"}

log = logger("bench_dhcp")


def start_dnsmasq(mc, ns, workdir: str):
    """dnsmasq serving the VM's address in ``ns`` (a namespace on the bridge);
    returns once it listens on port 67."""
    cmd = ["dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null",
           "--interface=eth0", "--bind-interfaces", "--dhcp-authoritative",
           f"--dhcp-range={CIDR.split('/')[0]},static,{MASK},86400",
           f"--dhcp-host={VM_MAC},{VM_IP}",
           f"--dhcp-option=option:router,{GW}",
           f"--dhcp-option=option:domain-name,{DOMAIN['dnsmasq']}",
           f"--dhcp-option-force=26,{MTU}",
           f"--pid-file={workdir}/dnsmasq.pid",
           f"--dhcp-leasefile={workdir}/dnsmasq.leases",
           f"--log-facility={workdir}/dnsmasq.log"]
    proc = mc.cloud.popen(ns, cmd, text=True)
    deadline = time.monotonic() + 10
    while ":67 " not in ns.cmd("ss -lunH 'sport = :67'") + " ":
        if proc.poll() is not None:
            raise BenchError(f"dnsmasq exited ({proc.returncode}): "
                             f"{proc.stderr.read().strip()[-300:]}")
        if time.monotonic() > deadline:
            raise BenchError("dnsmasq does not listen on UDP port 67 after 10 s")
        time.sleep(0.05)
    return proc


def set_enabled(mc, subnet_id: str, enabled: bool) -> None:
    mc.api.request("PUT", f"/dhcp_subnets/{subnet_id}", {"enabled": enabled})


def trial(vm, server: str) -> float | None:
    """One boot by dhclient: seconds to a configured address, or None when the
    other server answered (the agent had not yet seen the subnet's change)."""
    from topologies import dhcp_clients

    vm.cmd("ip addr flush dev eth0; ip route flush dev eth0")
    lease = dhcp_clients.dhclient(vm, timeout=10)
    try:
        if not lease or not lease.get("ip"):
            raise BenchError(f"{server}: dhclient got no lease in 10 s")
        if lease.get("domain") != DOMAIN[server]:
            return None
        if lease["ip"] != VM_IP or int(lease.get("mtu") or 0) != MTU:
            raise BenchError(f"{server}: dhclient configured {lease}, not {VM_IP} with "
                             f"MTU {MTU}")
        return float(lease["seconds"])
    finally:
        dhcp_clients.release(vm)


def run() -> None:
    from topologies.midocloud import MidoCloud

    mc = MidoCloud(n_hosts=2, tunnel="vxlan", progress=log)
    times: dict[str, list[float]] = {"midoflow": [], "dnsmasq": []}
    wrong = {"midoflow": 0, "dnsmasq": 0}
    workdir = tempfile.mkdtemp(prefix="bench-dhcp-")
    try:
        mc.start()
        h1, h2 = mc.hosts
        br = mc.bridge("dhcp-bench")
        sid = mc.dhcp_subnet(br, CIDR, gateway=GW, mtu=MTU, domain_name=DOMAIN["midoflow"])
        ns = mc.vm(h2, br, "dnsq", f"{DNSMASQ_IP}/24", DNSMASQ_MAC, dhcp=False)
        start_dnsmasq(mc, ns, workdir)
        vm = mc.vm(h1, br, "dv", VM_IP, VM_MAC, dhcp="dhclient")  # boots once: warm-up
        log(f"{vm.vm_name} on {h1.name}, dnsmasq in {ns.vm_name} on {h2.name}; "
            f"{TRIALS} dhclient boots per server, alternating")
        for i in range(TRIALS):
            for server in ("midoflow", "dnsmasq"):
                set_enabled(mc, sid, server == "midoflow")
                for _attempt in range(10):
                    t = trial(vm, server)
                    if t is not None:
                        break
                    wrong[server] += 1  # the change had not reached the agent yet
                else:
                    raise BenchError(f"{server} never answered after the subnet was "
                                     f"{'enabled' if server == 'midoflow' else 'disabled'}")
                times[server].append(t)
            log(f"  {i + 1}/{TRIALS}: midoflow {times['midoflow'][-1] * 1e3:.0f} ms, "
                f"dnsmasq {times['dnsmasq'][-1] * 1e3:.0f} ms")
    finally:
        mc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    s = {k: summary(v, 1e3, 1) for k, v in times.items()}
    report(NAME, s["midoflow"]["median"], "ms", "dnsmasq_lease_time", s["dnsmasq"]["median"],
           higher_is_better=False, extra={
               "method": "ISC dhclient in a VM namespace from start to a configured address "
                         "(its script run), answered by the agent of the VM's host vs by a "
                         "dnsmasq plugged into the same bridge on the other host (midoflow's "
                         "DHCP subnet disabled meanwhile: packets simulated and flooded); "
                         "alternating, same run",
               "trials": TRIALS, "midoflow_ms": s["midoflow"], "dnsmasq_ms": s["dnsmasq"],
               "retried_answered_by_the_other_server": wrong,
           })


def main() -> int:
    return run_main(NAME, run)


if __name__ == "__main__":
    sys.exit(main())
