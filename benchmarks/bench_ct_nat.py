"""What SNAT in the datapath (OVS ``ct(commit,nat(src=...))``) would give, and
whether this machine's OVS can be trusted with it.

Issue 13, goal 2: new SNAT connections per second >= 0.8 x the stateless
routed rate. midoflow's SNAT is simulated by the agent (a controller trip and
a state push per connection: about 0.08 x for short TCP connections); 0.8 x
needs NAT in the datapath. This benchmark measures that ceiling without the
agent, on a lab of its own: a private ovsdb-server + ovs-vswitchd (userspace
``netdev`` datapath) in network namespace ``mfbctn-x`` with its run directory
``/tmp/mfbctn-run``, bridge ``mfbctn0``, a client namespace ``mfbctn-a``
(10.0.0.1, default route via 10.0.0.254) and a server namespace ``mfbctn-b``
(192.168.0.2, the router side 192.168.0.1), each joined to the bridge by a
veth. Hand-written flows route between them (both MACs rewritten):

* ``plain``: no conntrack (the stateless routed baseline);
* ``ct``: ``ct(commit,zone=5)`` forward, ``ct(zone=5,table=1)`` back, only
  +est/+rel replies pass (what OVS-enforced security groups cost);
* ``ct_nat``: ``ct(commit,zone=5,nat(src=192.168.0.1:1024-2047))`` forward
  (inline, no recirculation), ``ct(zone=5,nat,table=1)`` back, with a zone
  timeout policy of 1 s for tcp_time_wait/fin_wait/close (else the 1,024
  NAT ports stay held by TIME_WAIT entries for ~30 s).

Load (rate rounds): sequential short TCP connections (connect, the server sends 10 bytes
and closes first, the client reads to EOF and closes), the client in its
namespace on kernel-chosen source ports, a new server port per round, flows
replaced and conntrack flushed between rounds; rounds alternate the modes,
each mode reports its best round. Headline: ``ct_nat_connection_rate`` vs
``plain_routed_connection_rate`` (ratio), with ct/plain and ct_nat/ct. The
timeout policy is set for zone 5 during the rate rounds of ct as well (it
only shortens closing states).

The reuse probe looks for the defect: 300 connections whose client binds
its source port from a pool of 20 (SO_REUSEADDR), so new connections meet
OVS's TIME_WAIT entries of earlier ones. Through ``ct_nat`` OVS 3.1.0
(Debian 12's 3.1.0-2+deb12u1) can lose such connections and log
``conntrack|INFO|Missing parent conn``: seen in a lab that had run NAT load
on the same server port before (38 of 300 lost); in this module's fresh lab
the short probe usually passes, and the sustained probe below is what fails
(see there). Upstream fixed this in OVS
3.1.3 / 3.2.3 / 3.3.0 (commit 1116459b3 "conntrack: Remove nat_conn
introducing key directionality", which also removes the assertion
``conn->conn_type == CT_CONN_TYPE_DEFAULT``, conntrack.c:1063, seen aborting
ovs-vswitchd under OVN's stateful ACLs). We count failed connections
(connect/recv timeout 1 s), new "Missing parent conn" lines in the lab's
ovs-vswitchd log and whether ovs-vswitchd is still alive; any failure or
such line in the NAT probe prints the verdict "unsafe". Re-run it on a newer
OVS to see whether datapath NAT became safe.

The sustained probe (last; CT_NAT_SUSTAIN_SECONDS, 25 s, quick 12 s): new
connections on kernel-chosen ports for that long, through ``ct`` and then
through ``ct_nat``. On 3.1.0 a NAT port stays taken after its connection
expired (with the 1 s policy it leaves ``dpctl/dump-conntrack`` after 1 s)
until the conntrack sweeper removes the connection: ``conn_expired()`` is
false for the reverse ``nat_conn`` entry that the port-uniqueness lookup
finds, the structure commit 1116459b3 removes. Measured by hand here: 800
connections, then new ones 3 s later: 17 of 241 failed; 39 s later: 17 of
42 failed; 70 s later: 5 of 400. So a 1,024-port range is used up in a
fraction of a second and then sustains a few dozen connections per second
("Unable to NAT due to tuple space exhaustion" in the log), whatever the
timeouts. By hand (not in this module: it takes about a minute), 800
random-port connections then reuse and random load on one server port with
the default timeouts produced "Missing parent conn" lines once the first
connections' 30 s TIME_WAIT expired before the sweep: a reply matched the
stale reverse entry of an expired connection and was dropped as invalid.

Run (root): ``.venv/bin/python -m benchmarks.bench_ct_nat``. Knobs (env):
CT_NAT_CONNECTIONS (connections per round, default 800: under the 1,024 NAT
ports), CT_NAT_ROUNDS (3), MIDOFLOW_BENCH_QUICK=1 (300 connections, 1
round). Exits 0 whatever it measured; 2 if the lab could not be built.
The lab's client and server run as ``python -m benchmarks.bench_ct_nat
client|server ...`` inside the namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = "ct_nat_connection_rate"
BASELINE = "plain_routed_connection_rate"
QUICK = os.environ.get("MIDOFLOW_BENCH_QUICK", "") not in ("", "0") \
    or os.environ.get("BENCH_QUICK", "") not in ("", "0")
CONNECTIONS = int(os.environ.get("CT_NAT_CONNECTIONS", "300" if QUICK else "800"))
ROUNDS = int(os.environ.get("CT_NAT_ROUNDS", "3" if QUICK else "5"))
REUSE_CONNECTIONS, REUSE_POOL, REUSE_TIMEOUT = 300, 20, 1.0
RATE_TIMEOUT = 2.0  # per connection in the rate rounds
# The sustained probe: new connections (kernel's ports) through ct_nat for this long.
SUSTAIN_SECONDS = float(os.environ.get("CT_NAT_SUSTAIN_SECONDS", "12" if QUICK else "25"))
CLIENT_DEADLINE = 45.0  # a client stops after this many seconds, whatever it reached

PREFIX = "mfbctn"
NS_OVS, NS_CLIENT, NS_SERVER = f"{PREFIX}-x", f"{PREFIX}-a", f"{PREFIX}-b"
NAMESPACES = (NS_CLIENT, NS_SERVER, NS_OVS)
RUN = Path(f"/tmp/{PREFIX}-run")
BRIDGE = f"{PREFIX}0"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
ZONE = 5
CLIENT_IP, CLIENT_MAC = "10.0.0.1", "02:00:00:00:00:0a"
CLIENT_GW, CLIENT_GW_MAC = "10.0.0.254", "02:00:00:00:00:fe"
SERVER_IP, SERVER_MAC = "192.168.0.2", "02:00:00:00:00:0b"
ROUTER_IP, ROUTER_MAC = "192.168.0.1", "02:00:00:00:00:fd"
NAT_RANGE = f"{ROUTER_IP}:1024-2047"
FIRST_SERVER_PORT = 8080
MISSING_PARENT = "Missing parent conn"
EXHAUSTED = "Unable to NAT due to tuple space exhaustion"

PLAIN, CT, CT_NAT = "plain", "ct", "ct_nat"
MODES = (PLAIN, CT, CT_NAT)

_TO_SERVER = f"set_field:{ROUTER_MAC}->eth_src,set_field:{SERVER_MAC}->eth_dst,output:2"
_TO_CLIENT = f"set_field:{CLIENT_GW_MAC}->eth_src,set_field:{CLIENT_MAC}->eth_dst,output:1"
_REPLIES = [f"table=1,priority=10,ct_state=+trk+est,ip,actions={_TO_CLIENT}",
            f"table=1,priority=10,ct_state=+trk+rel,ip,actions={_TO_CLIENT}",
            "table=1,priority=1,actions=drop"]
FLOWS = {
    PLAIN: [f"table=0,priority=10,in_port=1,ip,actions={_TO_SERVER}",
            f"table=0,priority=10,in_port=2,ip,actions={_TO_CLIENT}"],
    CT: [f"table=0,priority=10,in_port=1,ip,actions=ct(commit,zone={ZONE}),{_TO_SERVER}",
         f"table=0,priority=10,in_port=2,ip,actions=ct(zone={ZONE},table=1)", *_REPLIES],
    CT_NAT: [f"table=0,priority=10,in_port=1,ip,"
             f"actions=ct(commit,zone={ZONE},nat(src={NAT_RANGE})),{_TO_SERVER}",
             f"table=0,priority=10,in_port=2,ip,actions=ct(zone={ZONE},nat,table=1)",
             *_REPLIES],
}


class LabError(Exception):
    pass


def progress(msg: str) -> None:
    print(msg, flush=True)


# ---- the lab ------------------------------------------------------------------------

def _env() -> dict:
    return {**os.environ, "OVS_RUNDIR": str(RUN), "OVS_DBDIR": str(RUN),
            "OVS_LOGDIR": str(RUN)}


def run(args: list[str], ns: str | None = None, check: bool = True,
        timeout: float = 30) -> str:
    if ns:
        args = ["ip", "netns", "exec", ns, *args]
    try:
        p = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout} s: {' '.join(args)}") from None
    if check and p.returncode != 0:
        raise LabError(f"failed ({p.returncode}): {' '.join(args)}: "
                       f"{(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def vsctl(*args: str, check: bool = True) -> str:
    return run(["ovs-vsctl", f"--db=unix:{RUN}/db.sock", "--timeout=20", *args], check=check)


def ofctl(*args: str) -> str:
    return run(["ovs-ofctl", "-O", "OpenFlow13", *args[:1], f"unix:{RUN}/{BRIDGE}.mgmt",
                *args[1:]])


def appctl(*args: str, check: bool = True) -> str:
    return run(["ovs-appctl", "-t", f"{RUN}/vs.ctl", *args], check=check)


def existing_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = {ln.split()[0] for ln in out.splitlines() if ln.strip()}
    return [ns for ns in NAMESPACES if ns in names]


def _pid(name: str) -> int | None:
    try:
        return int((RUN / name).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def vswitchd_alive() -> bool:
    return _alive(_pid("vs.pid"))


def teardown() -> None:
    """Both daemons (by their pidfiles), the namespaces, the run directory.
    Touches nothing else."""
    for name in ("vs.pid", "ovsdb.pid"):
        pid = _pid(name)
        if not _alive(pid):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in existing_namespaces():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    shutil.rmtree(RUN, ignore_errors=True)


def preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("must run as root (network namespaces, OVS daemons)")
    missing = [b for b in ("ip", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
                           "ovs-ofctl", "ovs-appctl", "ethtool") if shutil.which(b) is None]
    if missing:
        raise LabError(f"missing {', '.join(missing)}: apt-get install openvswitch-switch "
                       "iproute2 ethtool")
    if not Path(SCHEMA).exists():
        raise LabError(f"no OVS schema at {SCHEMA}: apt-get install openvswitch-common")
    if existing_namespaces() or RUN.exists():
        progress(f"cleaning what a crashed run left: {existing_namespaces()} {RUN}")
        teardown()
        if existing_namespaces() or RUN.exists():
            raise LabError(f"namespaces {existing_namespaces()} or {RUN} left by an earlier "
                           "run could not be removed; remove them by hand "
                           f"(ip netns del ...; rm -rf {RUN})")


def build() -> None:
    RUN.mkdir(parents=True)
    for ns in NAMESPACES:
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "set", "lo", "up"], ns=ns)
        run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=ns, check=False)
        run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], ns=ns, check=False)
    run(["ovsdb-tool", "create", f"{RUN}/conf.db", SCHEMA])
    run(["ovsdb-server", f"{RUN}/conf.db", f"--remote=punix:{RUN}/db.sock",
         f"--pidfile={RUN}/ovsdb.pid", f"--log-file={RUN}/ovsdb.log",
         f"--unixctl={RUN}/ovsdb.ctl", "--detach", "--no-chdir"], ns=NS_OVS)
    vsctl("--no-wait", "init")
    run(["ovs-vswitchd", f"unix:{RUN}/db.sock", f"--pidfile={RUN}/vs.pid",
         f"--log-file={RUN}/vs.log", f"--unixctl={RUN}/vs.ctl", "--detach", "--no-chdir",
         "-vconsole:off"], ns=NS_OVS, timeout=60)
    run(["ip", "link", "add", f"{PREFIX}-a0", "netns", NS_CLIENT, "type", "veth",
         "peer", "name", f"{PREFIX}-a1", "netns", NS_OVS])
    run(["ip", "link", "add", f"{PREFIX}-b0", "netns", NS_SERVER, "type", "veth",
         "peer", "name", f"{PREFIX}-b1", "netns", NS_OVS])
    vsctl("add-br", BRIDGE, "--", "set", "Bridge", BRIDGE, "datapath_type=netdev",
          "fail_mode=secure", "protocols=OpenFlow13",
          "--", "add-port", BRIDGE, f"{PREFIX}-a1", "--", "set", "Interface", f"{PREFIX}-a1",
          "ofport_request=1",
          "--", "add-port", BRIDGE, f"{PREFIX}-b1", "--", "set", "Interface", f"{PREFIX}-b1",
          "ofport_request=2")
    # The netdev datapath record the zone timeout policy hangs on.
    vsctl("--", "--id=@m", "create", "Datapath", "datapath_version=0",
          "--", "set", "Open_vSwitch", ".", "datapaths:netdev=@m")
    for dev in (f"{PREFIX}-a1", f"{PREFIX}-b1"):
        run(["ip", "link", "set", dev, "up"], ns=NS_OVS)
        run(["ethtool", "-K", dev, "tx", "off"], ns=NS_OVS, check=False)
    for ns, dev, ip, mac in ((NS_CLIENT, f"{PREFIX}-a0", f"{CLIENT_IP}/24", CLIENT_MAC),
                             (NS_SERVER, f"{PREFIX}-b0", f"{SERVER_IP}/24", SERVER_MAC)):
        run(["ip", "link", "set", dev, "address", mac, "up"], ns=ns)
        run(["ethtool", "-K", dev, "tx", "off"], ns=ns, check=False)
        run(["ip", "addr", "add", ip, "dev", dev], ns=ns)
    run(["ip", "route", "add", "default", "via", CLIENT_GW], ns=NS_CLIENT)
    run(["ip", "neigh", "replace", CLIENT_GW, "lladdr", CLIENT_GW_MAC, "dev", f"{PREFIX}-a0",
         "nud", "permanent"], ns=NS_CLIENT)
    # plain and ct keep the client's address: the server routes it back
    run(["ip", "route", "add", "10.0.0.0/24", "via", ROUTER_IP], ns=NS_SERVER)
    run(["ip", "neigh", "replace", ROUTER_IP, "lladdr", ROUTER_MAC, "dev", f"{PREFIX}-b0",
         "nud", "permanent"], ns=NS_SERVER)


def set_mode(mode: str) -> None:
    """Replace the bridge's flows with the mode's, flush conntrack."""
    path = RUN / "flows"
    path.write_text("\n".join(FLOWS[mode]) + "\n")
    ofctl("replace-flows", str(path))
    appctl("dpctl/flush-conntrack")


def set_timeout_policy(on: bool) -> None:
    vsctl("del-zone-tp", "netdev", f"zone={ZONE}", check=False)
    if on:
        vsctl("add-zone-tp", "netdev", f"zone={ZONE}", "tcp_time_wait=1", "tcp_fin_wait=1",
              "tcp_close=1")


def log_lines(text: str) -> int:
    """Lines of the lab's ovs-vswitchd log holding ``text`` (OVS rate-limits
    these messages: a lower bound)."""
    try:
        with open(RUN / "vs.log", errors="replace") as f:
            return sum(text in ln for ln in f)
    except OSError:
        return 0


def missing_parent_lines() -> int:
    return log_lines(MISSING_PARENT)


def vs_log_tail(words=("EMER", "ERR", "assert")) -> list[str]:
    try:
        lines = (RUN / "vs.log").read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln[-300:] for ln in lines if any(w in ln for w in words)][-5:]


def conntrack_entries() -> int:
    out = appctl("dpctl/dump-conntrack", f"zone={ZONE}", check=False)
    return sum(1 for ln in out.splitlines() if ln.strip())


# ---- the load -----------------------------------------------------------------------

def _module(ns: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-u", "-m",
                             "benchmarks.bench_ct_nat", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    def __init__(self, port: int) -> None:
        self.proc = _module(NS_SERVER, "server", str(port))
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            _stop(self.proc)
            raise LabError(f"the server in {NS_SERVER} did not start: {line!r} "
                           f"{self.proc.stderr.read().strip()[-300:]}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        _stop(self.proc)


def client(port: int, n: int, pool: int, timeout: float, pause: float = 0.0,
           deadline: float = CLIENT_DEADLINE) -> dict:
    """Runs the client in the client namespace; its result."""
    proc = _module(NS_CLIENT, "client", str(port), str(n), str(pool), str(timeout),
                   str(deadline), str(pause))
    try:
        out, err = proc.communicate(timeout=deadline + 30)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise LabError("the client did not finish") from None
    finally:
        _stop(proc)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LabError(f"the client failed: {err.strip()[-400:]}") from None


class Ports:
    """A new server port per round: the server's TIME_WAIT sockets of a
    round never meet the next one's connections."""

    def __init__(self) -> None:
        self.next = FIRST_SERVER_PORT

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def rate_round(mode: str, ports: Ports) -> dict:
    set_mode(mode)
    port = ports.take()
    with Server(port):
        r = client(port, CONNECTIONS, 0, RATE_TIMEOUT)
    r["server_port"] = port
    r["ct_entries_after"] = conntrack_entries()
    if mode == CT_NAT:
        dp = appctl("dpctl/dump-flows", check=False)
        r["datapath_ct_timeout"] = "timeout=" in dp
    r["vswitchd_alive"] = vswitchd_alive()
    return r


def reuse_probe(mode: str, ports: Ports, n: int = REUSE_CONNECTIONS, pool: int = REUSE_POOL,
                deadline: float = CLIENT_DEADLINE) -> dict:
    set_mode(mode)
    port = ports.take()
    before, exhausted = missing_parent_lines(), log_lines(EXHAUSTED)
    with Server(port):
        r = client(port, n, pool, REUSE_TIMEOUT, deadline=deadline)
    r["server_port"] = port
    r["missing_parent_lines"] = missing_parent_lines() - before
    r["nat_exhausted_lines"] = log_lines(EXHAUSTED) - exhausted
    r["vswitchd_alive"] = vswitchd_alive()
    if not r["vswitchd_alive"]:
        r["vswitchd_log"] = vs_log_tail()
    return r


# ---- the namespaces' side --------------------------------------------------------------

def serve(port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1024)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"x" * 10)
        except OSError:
            pass
        c.close()  # the server closes first: its side holds TIME_WAIT


def connect_loop(port: int, n: int, pool: int, timeout: float, deadline_s: float,
                 pause: float = 0.0) -> None:
    """n sequential connections (connect, read to EOF, close); pool > 0: bind
    the source port from 40000.. (pool ports, SO_REUSEADDR), else the
    kernel's choice. Prints one JSON line."""
    ok = failed = 0
    errors: dict[str, int] = {}
    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    attempted = 0
    for i in range(n):
        if time.perf_counter() > deadline:
            break
        attempted += 1
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.settimeout(timeout)
        try:
            if pool:
                c.bind((CLIENT_IP, 40000 + i % pool))
            c.connect((SERVER_IP, port))
            got = 0
            while True:
                b = c.recv(100)
                if not b:
                    break
                got += len(b)
            if got != 10:
                raise OSError(f"short read {got}")
            ok += 1
        except OSError as e:
            failed += 1
            key = type(e).__name__ if isinstance(e, socket.timeout) else str(e)[:60]
            errors[key] = errors.get(key, 0) + 1
        finally:
            c.close()
        if pause:
            time.sleep(pause)
    dt = time.perf_counter() - t0
    print(json.dumps({"attempted": attempted, "ok": ok, "failed": failed,
                      "seconds": round(dt, 3), "rate": round(ok / dt, 1) if dt else 0.0,
                      "errors": errors}), flush=True)


# ---- the benchmark -------------------------------------------------------------------

def ovs_version() -> str:
    try:
        return subprocess.run(["ovs-vswitchd", "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "?"


def _line(label: str, r: dict) -> str:
    s = (f"{label:<14} {r['rate']:8.1f} conn/s  ok {r['ok']}/{r['attempted']}  "
         f"failed {r['failed']}  {r['seconds']:.2f} s")
    if "missing_parent_lines" in r:
        s += f"  'Missing parent conn' +{r['missing_parent_lines']}"
    if r.get("nat_exhausted_lines"):
        s += f"  'tuple space exhaustion' +{r['nat_exhausted_lines']}"
    if r.get("errors"):
        s += f"  errors {r['errors']}"
    if not r.get("vswitchd_alive", True):
        s += "  OVS-VSWITCHD DIED"
    return s


def measure() -> dict:
    ports = Ports()
    rounds: dict[str, list[dict]] = {m: [] for m in MODES}
    reuse: dict[str, dict] = {}
    # ct's probe first, without the timeout policy (it only shortens TIME_WAIT)
    set_timeout_policy(False)
    r = reuse_probe(CT, ports)
    reuse[CT] = r
    progress(_line("reuse ct", r))
    set_timeout_policy(True)
    for i in range(ROUNDS):
        order = MODES if i % 2 == 0 else MODES[::-1]
        for mode in order:
            r = rate_round(mode, ports)
            rounds[mode].append(r)
            progress(_line(f"{mode} #{i + 1}", r))
            if not r["vswitchd_alive"]:
                raise LabError("ovs-vswitchd died during the rate rounds: "
                               f"{vs_log_tail()}")
    # last: they may kill ovs-vswitchd
    r = reuse_probe(CT_NAT, ports)
    reuse[CT_NAT] = r
    progress(_line("reuse ct_nat", r))
    sustained = sustained_ct = None
    if SUSTAIN_SECONDS > 0 and r["vswitchd_alive"]:
        # kernel-chosen ports (pool 0), as many as fit in SUSTAIN_SECONDS, 1 s timeout;
        # ct first (no port range: the contrast), ct_nat last
        sustained_ct = reuse_probe(CT, ports, n=10**7, pool=0, deadline=SUSTAIN_SECONDS)
        progress(_line(f"sustained ct {SUSTAIN_SECONDS:g}s", sustained_ct))
        sustained = reuse_probe(CT_NAT, ports, n=10**7, pool=0, deadline=SUSTAIN_SECONDS)
        progress(_line(f"sustained ct_nat {SUSTAIN_SECONDS:g}s", sustained))
    return {"rounds": rounds, "reuse": reuse, "sustained": sustained,
            "sustained_ct": sustained_ct}


def summarize(res: dict, version: str) -> None:
    from benchmarks.common import report

    best = {m: max(res["rounds"][m], key=lambda r: r["rate"]) for m in MODES}
    rate = {m: best[m]["rate"] for m in MODES}

    def ratio(a: str, b: str) -> float:
        return round(rate[a] / rate[b], 4) if rate[b] else float("nan")

    nat, ct, sus = res["reuse"][CT_NAT], res["reuse"][CT], res["sustained"]
    problems = []
    if nat["failed"]:
        problems.append(f"reuse probe: {nat['failed']}/{nat['attempted']} connections failed")
    if nat["missing_parent_lines"]:
        problems.append(f"reuse probe: {nat['missing_parent_lines']} 'Missing parent conn' lines")
    if not nat["vswitchd_alive"]:
        problems.append("ovs-vswitchd died in the reuse probe")
    rate_failures = sum(r["failed"] for r in res["rounds"][CT_NAT])
    if rate_failures:
        problems.append(f"{rate_failures} failures in the ct_nat rate rounds")
    if sus is not None:
        if sus["failed"] or sus["missing_parent_lines"] or not sus["vswitchd_alive"]:
            problems.append(
                f"sustained {SUSTAIN_SECONDS:g} s: {sus['failed']}/{sus['attempted']} failed, "
                f"{sus['ok'] / sus['seconds']:.0f} conn/s, "
                f"{sus['nat_exhausted_lines']} 'tuple space exhaustion' and "
                f"{sus['missing_parent_lines']} 'Missing parent conn' lines"
                + ("" if sus["vswitchd_alive"] else ", ovs-vswitchd died"))
    if problems:
        verdict = f"unsafe: datapath NAT on {version}: {'; '.join(problems)}"
    else:
        verdict = (f"safe: datapath NAT on {version} passed the reuse probe "
                   f"({nat['ok']}/{nat['attempted']} ok, no 'Missing parent conn')"
                   + ("" if sus is None else
                      f" and {SUSTAIN_SECONDS:g} s of sustained load "
                      f"({sus['ok'] / sus['seconds']:.0f} conn/s, no failure)"))
    if ct["failed"] or ct["missing_parent_lines"]:
        verdict += (f"; NOTE the reuse probe also failed without NAT ({ct['failed']} "
                    "failed): the probe itself may be at fault")
    progress(f"ratios: ct/plain {ratio(CT, PLAIN):.3f}  ct_nat/plain "
             f"{ratio(CT_NAT, PLAIN):.3f}  ct_nat/ct {ratio(CT_NAT, CT):.3f}")
    report(NAME, rate[CT_NAT], "conn/s", BASELINE, rate[PLAIN], extra={
        "method": "sequential short TCP connections (server sends 10 bytes and closes "
                  "first), client and server in their own namespaces routed by a private "
                  "userspace OVS (netdev datapath) with hand-written flows; best round per "
                  f"mode; ct_nat: ct(commit,zone={ZONE},nat(src={NAT_RANGE})) with a 1 s "
                  "TIME_WAIT/FIN_WAIT/CLOSE zone timeout policy",
        "ovs_version": version,
        "connections_per_round": CONNECTIONS,
        "rounds_per_mode": ROUNDS,
        "quick": QUICK,
        "ct_rate": rate[CT],
        "ratio_ct_vs_plain": ratio(CT, PLAIN),
        "ratio_ct_nat_vs_plain": ratio(CT_NAT, PLAIN),
        "ratio_ct_nat_vs_ct": ratio(CT_NAT, CT),
        "failures": {m: best[m]["failed"] for m in MODES},
        "datapath_ct_timeout_policy_seen": best[CT_NAT].get("datapath_ct_timeout"),
        "reuse_probe_connections": REUSE_CONNECTIONS,
        "reuse_probe_pool": REUSE_POOL,
        "reuse_ct_failed": ct["failed"],
        "reuse_ct_missing_parent_lines": ct["missing_parent_lines"],
        "reuse_ct_nat_failed": nat["failed"],
        "reuse_ct_nat_attempted": nat["attempted"],
        "reuse_ct_nat_missing_parent_lines": nat["missing_parent_lines"],
        "reuse_ct_nat_vswitchd_alive": nat["vswitchd_alive"],
        "sustained_seconds": SUSTAIN_SECONDS,
        "sustained_ct_nat_rate": round(sus["ok"] / sus["seconds"], 1) if sus else None,
        "sustained_ct_rate": (round(res["sustained_ct"]["ok"] / res["sustained_ct"]["seconds"], 1)
                              if res["sustained_ct"] else None),
        "sustained_ct_nat_failed": sus["failed"] if sus else None,
        "sustained_ct_nat_missing_parent_lines": sus["missing_parent_lines"] if sus else None,
        "sustained_ct_nat_exhausted_lines": sus["nat_exhausted_lines"] if sus else None,
        "sustained_ct_nat_vswitchd_alive": sus["vswitchd_alive"] if sus else None,
        "datapath_nat_safe": not problems,
        "verdict": verdict,
        "upstream_fix": "OVS 3.1.3 / 3.2.3 / 3.3.0: commit 1116459b3 'conntrack: Remove "
                        "nat_conn introducing key directionality'",
        "rounds": res["rounds"],
        "reuse": res["reuse"],
        "sustained": sus,
        "sustained_ct": res["sustained_ct"],
    })
    progress(f"VERDICT {verdict}")


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    version = ovs_version()
    progress(f"{NAME}: {version}, {CONNECTIONS} connections x {ROUNDS} rounds per mode, "
             f"reuse probe {REUSE_CONNECTIONS} connections over {REUSE_POOL} source ports")
    try:
        preflight()
    except LabError as e:
        print(f"cannot build the lab: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        t0 = time.monotonic()
        try:
            build()
        except LabError as e:
            print(f"cannot build the lab: {e} (root and Open vSwitch with the userspace "
                  f"datapath are needed; logs in {RUN}, removed on exit)",
                  file=sys.stderr, flush=True)
            return 2
        progress(f"lab up in {time.monotonic() - t0:.1f} s")
        try:
            res = measure()
        except LabError as e:
            print(f"measurement failed: {e}", file=sys.stderr, flush=True)
            return 1
        summarize(res, version)
        return 0
    finally:
        teardown()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "client":
        connect_loop(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                     float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]))
    else:
        sys.exit(main())
