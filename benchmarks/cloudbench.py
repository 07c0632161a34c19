"""Helpers shared by the cloud benchmarks (benchmarks/bench_l3_*.py).

Two halves:

* harness side (root namespace): the error type and ``main`` wrapper, a
  percentile summary, a two-network tenant router, VMs with a default route
  and a static neighbour entry for their gateway, deleting / counting the
  agent's simulated flows, running per-host commands in parallel;
* VM side (stdlib only, run as ``python -m benchmarks.cloudbench CMD ...``
  inside a VM's namespace):

  ``server PORT``
      accepts TCP connections on PORT and stays silent on them: after the
      handshake it only waits for the client's reset, so nothing travels from
      the server after its SYN/ACK;
  ``client``
      reads ``IP PORT`` lines on stdin; for each, opens a NEW TCP connection
      (a fresh ephemeral source port), times ``connect()`` (SYN -> SYN/ACK),
      closes it with a reset (SO_LINGER 0: no FIN exchange, no TIME_WAIT) and
      prints ``ok SECONDS`` or ``err REASON``;
  ``blast-ip IFACE SRC_MAC DST_MAC SRC_IP COUNT SECONDS RATE``
      sends IPv4/UDP frames from SRC_MAC/SRC_IP to DST_MAC (a router port)
      and COUNT distinct destination IPs 10.200.x.y (one routed flow each),
      cycled until SECONDS pass, paced at RATE frames/s; prints frames sent.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every flow the agent simulated carries this cookie prefix (FlowIndex.COOKIE_BASE).
SIM_COOKIE = "cookie=0x4d00000000000000/0xff00000000000000"
BLAST_NET = (10, 200)  # blast-ip destinations: 10.200.0.0/16


class BenchError(RuntimeError):
    pass


def logger(name: str):
    def log(msg: str) -> None:
        print(f"[{name}] {msg}", flush=True)
    return log


def run_main(name: str, run) -> int:
    """Root check, then ``run()``; any failure is one line on stderr and exit 1."""
    if os.geteuid() != 0:
        print(f"{name}: error: needs root (network namespaces, OVS)", file=sys.stderr)
        return 2
    try:
        run()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line, then a non-zero exit
        hint = "" if os.environ.get("MIDOFLOW_KEEP_RUNDIR") else \
            " (rerun with MIDOFLOW_KEEP_RUNDIR=1 to keep the cloud's logs)"
        print(f"{name}: error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return 1
    return 0


# ---- statistics -------------------------------------------------------------

def percentile(values, q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values, scale: float = 1.0, digits: int = 3) -> dict:
    """n, median, p90, p99, min, max of ``values`` times ``scale``."""
    xs = [v * scale for v in values]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": round(percentile(xs, 50), digits),
            "p90": round(percentile(xs, 90), digits), "p99": round(percentile(xs, 99), digits),
            "min": round(min(xs), digits), "max": round(max(xs), digits)}


# ---- harness side -------------------------------------------------------------

def parallel(fn, items) -> list:
    """``fn(item)`` for every item, each in its own thread; results in order.
    The first exception is raised again here."""
    items = list(items)
    out: list = [None] * len(items)
    errors: list[BaseException] = []

    def one(i, it):
        try:
            out[i] = fn(it)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)
    threads = [threading.Thread(target=one, args=(i, it)) for i, it in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def stop_agents_cleanly(mc, hosts=None, timeout: float = 20) -> None:
    """Stop the agents with SIGINT and wait until their ZooKeeper sessions are gone.

    osken-manager has no SIGTERM handler: SIGTERM kills the agent without
    closing its session, so its ephemeral state (host alive, active ports,
    learned MACs, router ARP entries) lingers for the session timeout and then
    vanishes under the agent started in its place (seen here: a router's ARP
    entry disappearing 10 s after a restart, in the middle of a measurement).
    SIGINT makes osken-manager close its apps, and the agent its session."""
    import signal

    hosts = list(hosts or mc.hosts)
    parallel(lambda h: mc.cloud.kill_agent(h, sig=signal.SIGINT, timeout=10), hosts)
    deadline = time.monotonic() + timeout
    for h in hosts:
        while mc.agent_alive(h) is not None:
            if time.monotonic() > deadline:
                raise BenchError(f"the stopped agent of {h.name} is still alive in ZooKeeper "
                                 f"after {timeout:.0f} s")
            time.sleep(0.05)


def flow_count(host, match: str) -> int:
    """Flows of ``host``'s br-int matching ``match`` (non-strict, as dump-flows)."""
    out = host.ovs_ofctl("dump-aggregate", match)
    m = re.search(r"flow_count=(\d+)", out)
    if not m:
        raise BenchError(f"cannot read the flow count of {host.name}: {out.strip()[:200]}")
    return int(m.group(1))


def del_sim_flows(host, match: str = "") -> None:
    """Delete the agent's simulated flows (all, or those also matching ``match``)."""
    spec = SIM_COOKIE + ("," + match if match else "")
    host.ovs_ofctl("del-flows", spec)


def purge_datapath(host) -> None:
    """Flush every datapath flow (megaflow cache) of the host's OVS, synchronously."""
    host.ovs_appctl("revalidator/purge")


class Tenant:
    """A router with two networks: ``b1`` 192.168.1.0/24 and ``b2``
    192.168.2.0/24 (router ports .1, MACs ``mac1``/``mac2``)."""

    def __init__(self, mc, name: str, t: int = 1) -> None:
        self.router = mc.router(f"{name}-r", name)
        self.b1 = mc.bridge(f"{name}-net1", name)
        self.b2 = mc.bridge(f"{name}-net2", name)
        self.mac1, self.mac2 = f"02:aa:00:00:{t:02x}:01", f"02:aa:00:00:{t:02x}:02"
        self.rp1 = mc.attach(self.router, self.b1, "192.168.1.1/24", self.mac1)
        self.rp2 = mc.attach(self.router, self.b2, "192.168.2.1/24", self.mac2)

    def gateway(self, bridge: str) -> tuple[str, str]:
        return ("192.168.1.1", self.mac1) if bridge == self.b1 else ("192.168.2.1", self.mac2)


def quiet_vm(vm) -> None:
    """No IPv6 chatter (router solicitations, MLD) from the VM: every frame a
    benchmark sees is one it sent on purpose."""
    vm.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 "
           "net.ipv6.conf.eth0.disable_ipv6=1")


def routed_vm(mc, tenant: Tenant, host, bridge: str, name: str, cidr: str, mac: str):
    """A VM on one of the tenant's networks, default route via the router, a
    permanent neighbour entry for it (no ARP traffic during a measurement)."""
    vm = mc.vm(host, bridge, name, cidr, mac)
    quiet_vm(vm)
    gw, gw_mac = tenant.gateway(bridge)
    vm.cmd(f"ip route add default via {gw}")
    vm.cmd(f"ip neigh replace {gw} lladdr {gw_mac} dev eth0 nud permanent")
    return vm


def wait_ping(vm, ip: str, what: str, timeout: float = 15) -> None:
    from topologies.cloud import ping

    deadline = time.monotonic() + timeout
    while ping(vm, ip, count=1, timeout=1.0)[1] != 1:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {vm.vm_name} cannot ping {ip} after {timeout:.0f} s")


def start_server(cloud, vm, port: int):
    """The silent TCP server in ``vm``; returns once it listens."""
    proc = cloud.popen(vm, [sys.executable, "-m", "benchmarks.cloudbench", "server", str(port)],
                       cwd=REPO, text=True)
    deadline = time.monotonic() + 10
    while f":{port}" not in vm.cmd(f"ss -ltnH 'sport = :{port}'"):
        if proc.poll() is not None:
            raise BenchError(f"the TCP server in {vm.vm_name} exited: "
                             f"{proc.stderr.read().strip()[-300:]}")
        if time.monotonic() > deadline:
            raise BenchError(f"the TCP server in {vm.vm_name} does not listen on {port}")
        time.sleep(0.05)
    return proc


class ConnectClient:
    """The connect-timing client running in a VM, driven line by line."""

    def __init__(self, cloud, vm) -> None:
        import subprocess

        self.vm = vm
        self.proc = cloud.popen(vm, [sys.executable, "-u", "-m", "benchmarks.cloudbench",
                                     "client"], cwd=REPO, text=True, stdin=subprocess.PIPE,
                                bufsize=1)

    def connect(self, ip: str, port: int) -> float | None:
        """Seconds the connect took, or None when it failed (timed out, refused)."""
        if self.proc.poll() is not None:
            raise BenchError(f"the connect client in {self.vm.vm_name} exited: "
                             f"{self.proc.stderr.read().strip()[-300:]}")
        self.proc.stdin.write(f"{ip} {port}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if not line:
            raise BenchError(f"the connect client in {self.vm.vm_name} died: "
                             f"{self.proc.stderr.read().strip()[-300:]}")
        return float(line[1]) if line[0] == "ok" else None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=3)
        except Exception:  # noqa: BLE001 - Cloud.stop() kills it anyway
            self.proc.kill()


# ---- VM side ------------------------------------------------------------------

def _server(port: int) -> int:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(256)
    while True:
        conn, _ = ls.accept()
        conn.settimeout(5)
        try:
            conn.recv(1)  # until the client's reset (or EOF): send nothing
        except OSError:
            pass
        conn.close()


def _client() -> int:
    linger0 = struct.pack("ii", 1, 0)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        ip, port = parts[0], int(parts[1])
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        s.settimeout(5)
        try:
            t0 = time.perf_counter()
            s.connect((ip, port))
            dt = time.perf_counter() - t0
            print(f"ok {dt:.9f}", flush=True)
        except OSError as e:
            print(f"err {type(e).__name__}", flush=True)
        finally:
            s.close()  # linger 0: a reset, nothing else on the wire
    return 0


def _blast_ip(iface: str, src_mac: str, dst_mac: str, src_ip: str, count: int,
              seconds: float, rate: float) -> int:
    from benchmarks.blaster import BURST, ipv4_udp

    s_mac = bytes.fromhex(src_mac.replace(":", ""))
    d_mac = bytes.fromhex(dst_mac.replace(":", ""))
    frames = []
    for i in range(count):
        dst = f"{BLAST_NET[0]}.{BLAST_NET[1]}.{(i >> 8) & 0xFF}.{i & 0xFF}"
        frames.append(d_mac + s_mac + b"\x08\x00" + ipv4_udp(src_ip, dst, bytes(18)))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sent = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        for i, f in enumerate(frames):
            try:
                sock.send(f)
                sent += 1
            except OSError:
                time.sleep(0.001)
            if rate and i % BURST == BURST - 1:
                now = time.monotonic()
                if now >= deadline:
                    break
                ahead = start + sent / rate - now
                if ahead > 0:
                    time.sleep(ahead)
    print(sent)
    return 0


def _vm_main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m benchmarks.cloudbench server PORT | client | "
              "blast-ip IFACE SRC_MAC DST_MAC SRC_IP COUNT SECONDS RATE", file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "server":
        return _server(int(args[0]))
    if cmd == "client":
        return _client()
    if cmd == "blast-ip":
        iface, smac, dmac, sip = args[:4]
        return _blast_ip(iface, smac, dmac, sip, int(args[4]), float(args[5]), float(args[6]))
    print(f"unknown command {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_vm_main(sys.argv[1:]))
