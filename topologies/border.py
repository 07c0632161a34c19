"""Real border routers (FRR, GoBGP) and an upstream "internet", for lab clouds.

::

    internet host ns (lan0 198.51.100.100/24)
         |  LAN: a Linux bridge in the root namespace (<prefix>lan)
    border1 ns (lan0 .1, eth0 uplink)      border2 ns (lan0 .2, eth0 uplink)
         |  uplink eth0: made by someone else (e.g. a VM port on a gateway host's OVS)

* :class:`Upstream` builds the LAN bridge and the internet host (a Mininet
  ``Host``) and plugs other nodes into the LAN (:meth:`Upstream.connect`). The
  internet host reaches the cloud by a static ECMP route
  (:meth:`Upstream.route_via`, what the gateway lab uses: robust, no moving
  parts; with iBGP + next-hop-self between the border routers a border router
  that lost its gateway still forwards over the LAN to the other one), or learns
  it by BGP from the border routers (:meth:`Upstream.start_bgp`: FRR with
  maximum-paths in the internet namespace). Either way
  ``fib_multipath_hash_policy=1`` spreads flows over the paths by L4 ports.
* :class:`FrrRouter`: zebra + bgpd of Debian's FRR 8.4 inside a node's
  namespace. Every path (config, pid files, vty sockets, zserv socket, logs)
  is under the router's ``workdir``, so any number run at once: FRR's
  ``-N pathspace`` would put them under ``/etc/frr/<ns>`` and
  ``/var/run/frr/<ns>`` instead. The daemons run as root (``-u root -g frrvty``),
  so the workdir may sit in a private (0700) directory. zebra programs the
  namespace's kernel FIB.
* :class:`GobgpRouter`: the same interface with gobgpd 3.10 (TOML config,
  gRPC on 127.0.0.1:<api_port> inside the namespace, queried with
  ``gobgp -j``). gobgpd's zebra client cannot talk to FRR 8.4's zebra (see
  ``notes/border-routers.md``: gobgpd assumes 20-byte interface names in
  ZAPI 6 messages, FRR >= 8.3 sends 16 and gobgpd panics; with
  ``software-name = "frr7"`` it survives but sends FRR 7.0 message numbers),
  so a small FIB sync thread polls ``gobgp -j global rib`` and mirrors the
  multipath set of each learned prefix into the kernel with
  ``ip route replace ... proto bgp`` (ECMP) and deletes what went away.

Every router's queries parse JSON: ``neighbors()`` -> ``{ip: state}`` (lowercase
FSM state), ``rib()`` -> ``{prefix: [next hop of every path]}``, ``fib()`` ->
``{prefix: [next hops]}`` from ``ip -j route`` in the namespace; the ``wait_*``
methods poll them and raise :class:`TimeoutError` naming what they waited for
and the last state seen. ``stop()`` is idempotent, registered atexit and works
after a partial start.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mininet.node import Host

from topologies import links
from topologies.cloud import _kill_netns_processes, _netns_inode, unused_prefix
from topologies.lifecycle import StartStop

FRR_DIR = "/usr/lib/frr"
UNIX_PATH_MAX = 107
GOBGP_STATES = {0: "unknown", 1: "idle", 2: "connect", 3: "active", 4: "opensent",
                5: "openconfirm", 6: "established"}


class BorderError(RuntimeError):
    pass


# -- helpers -----------------------------------------------------------------

def _run(cmd: list[str], check: bool = True, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BorderError(f"{' '.join(cmd)} did not finish in {timeout} s") from e
    if check and proc.returncode != 0:
        raise BorderError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                          f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def ns_run(node, *args: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command in ``node``'s network namespace (thread safe, unlike
    Mininet's ``node.cmd``)."""
    return _run(["mnexec", "-a", str(node.pid), *args], check=check, timeout=timeout)


def _net(prefix: str) -> str:
    """Canonical "A.B.C.D/len" ("default" -> 0.0.0.0/0, a bare address -> /32)."""
    if prefix == "default":
        return "0.0.0.0/0"
    return str(ipaddress.ip_network(prefix, strict=False))


def kernel_routes(node, *selector: str) -> dict[str, list[str]]:
    """``{prefix: [gateways]}`` of the IPv4 main table of ``node``'s namespace
    (``ip -j route show [selector]``); connected routes have no gateway ([])."""
    out = ns_run(node, "ip", "-4", "-j", "route", "show", *selector, check=False)
    try:
        routes = json.loads(out or "[]")
    except ValueError:
        return {}
    fib: dict[str, list[str]] = {}
    for r in routes:
        if r.get("type", "unicast") != "unicast":
            continue
        hops = [h["gateway"] for h in r.get("nexthops", []) if h.get("gateway")]
        if not hops and r.get("gateway"):
            hops = [r["gateway"]]
        fib.setdefault(_net(r["dst"]), []).extend(hops)
    return {p: sorted(set(h)) for p, h in fib.items()}


def _wait(pred: Callable[[], tuple[bool, object]], timeout: float, what: str,
          interval: float = 0.05) -> float:
    """Poll ``pred() -> (done, state)``; seconds waited, or TimeoutError with the
    last state seen."""
    t0 = time.monotonic()
    last: object = None
    while True:
        try:
            done, last = pred()
        except BorderError as e:
            done, last = False, f"error: {e}"
        if done:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; "
                               f"last seen: {last}")
        time.sleep(interval)


def _pids_with(needle: str, names: Iterable[str]) -> list[int]:
    """Processes whose command line contains ``needle`` and whose program is one
    of ``names`` (finds our daemons even when a pid file is missing)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0].decode(errors="replace")) in names \
                and needle.encode() in b" ".join(argv):
            found.append(int(d))
    return found


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _terminate(pids: list[int], grace: float = 2.0) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) daemon cannot exit
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _router_sysctls(node) -> None:
    """A router forwards, does not drop asymmetric (ECMP) traffic, and hashes
    flows over ECMP paths by their L4 ports."""
    ns_run(node, "ip", "link", "set", "lo", "up", check=False)
    for key, val in (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"),
                     ("net.ipv4.conf.default.rp_filter", "0"),
                     ("net.ipv4.fib_multipath_hash_policy", "1")):
        ns_run(node, "sysctl", "-qw", f"{key}={val}", check=False)


@dataclass
class Neighbor:
    ip: str
    remote_as: int
    keepalive: int = 1
    hold: int = 3
    default_originate: bool = False
    next_hop_self: bool = False
    connect_retry: int = 1


# -- the common part of both routers ------------------------------------------

class _Router(StartStop):
    kind = "router"

    def __init__(self, node, name: str, asn: int, router_id: str, workdir: str):
        self.node = node
        self.name = name
        self.asn = int(asn)
        self.router_id = str(ipaddress.IPv4Address(router_id))
        self.workdir = os.path.abspath(workdir)
        self.neighbors_conf: dict[str, Neighbor] = {}
        self.networks: list[str] = []
        self.running = False
        self._stopped = False
        self._launched = False  # daemons were started in the node's namespace
        self.started_at: float | None = None  # time.monotonic() when start() returned

    # configuration --------------------------------------------------------
    def add_neighbor(self, ip: str, remote_as: int, keepalive: int = 1, hold: int = 3,
                     default_originate: bool = False, next_hop_self: bool = False) -> None:
        """A BGP neighbor (configure before ``start()``). ``hold`` is 0 or >= 3
        (FRR's minimum); keepalive 1 / hold 3 are the fastest timers."""
        if self.running:
            raise BorderError(f"{self.name}: add neighbors before start()")
        if hold and (hold < 3 or keepalive >= hold or keepalive < 1):
            raise BorderError(f"{self.name}: timers keepalive={keepalive} hold={hold}: "
                              "need hold >= 3 and 1 <= keepalive < hold")
        ip = str(ipaddress.IPv4Address(ip))
        self.neighbors_conf[ip] = Neighbor(ip, int(remote_as), int(keepalive), int(hold),
                                           bool(default_originate), bool(next_hop_self))

    def add_network(self, prefix: str) -> None:
        """Originate ``prefix`` (also while running: advertised at once)."""
        prefix = _net(prefix)
        if prefix not in self.networks:
            self.networks.append(prefix)
        if self.running:
            self._network(prefix, add=True)

    def remove_network(self, prefix: str) -> None:
        """Stop originating ``prefix`` (withdrawn at once while running)."""
        prefix = _net(prefix)
        if prefix in self.networks:
            self.networks.remove(prefix)
        if self.running:
            self._network(prefix, add=False)

    def _network(self, prefix: str, add: bool) -> None:
        raise NotImplementedError

    # queries ----------------------------------------------------------------
    def neighbors(self) -> dict[str, str]:
        raise NotImplementedError

    def rib(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def fib(self) -> dict[str, list[str]]:
        """``{prefix: [next hops]}`` of the namespace's kernel main table."""
        return kernel_routes(self.node)

    def wait_established(self, ip: str, timeout: float = 30) -> float:
        """Until the session with ``ip`` is established; returns seconds waited."""
        def pred():
            state = self.neighbors().get(ip, "absent")
            return state == "established", state
        return _wait(pred, timeout, f"{self.kind} {self.name}: BGP session with {ip} "
                     "established", interval=0.05)

    def wait_rib(self, prefix: str, nexthops: set[str] | None, timeout: float = 10) -> float:
        """Until the RIB holds ``prefix`` with exactly these next hops (over all
        its paths); ``None``: until ``prefix`` is absent. Returns seconds waited."""
        return self._wait_table(self.rib, "RIB", prefix, nexthops, timeout)

    def wait_fib(self, prefix: str, nexthops: set[str] | None, timeout: float = 10) -> float:
        """Like :meth:`wait_rib`, for the kernel FIB of the namespace."""
        return self._wait_table(self.fib, "FIB", prefix, nexthops, timeout)

    def _wait_table(self, table, label, prefix, nexthops, timeout) -> float:
        prefix = _net(prefix)
        want = None if nexthops is None else set(nexthops)

        def pred():
            have = table().get(prefix)
            if want is None:
                return have is None, have
            return have is not None and set(have) == want, have
        what = (f"{prefix} absent from" if want is None
                else f"{prefix} via {sorted(want)} in") + f" {self.name}'s {label}"
        return _wait(pred, timeout, what, interval=0.05)

    def log_tail(self, lines: int = 30) -> str:
        raise NotImplementedError

    # life cycle -------------------------------------------------------------
    def _prepare_workdir(self) -> None:
        atexit.register(self.stop)  # unregistered by stop()
        os.makedirs(self.workdir, exist_ok=True)
        longest = os.path.join(self.workdir, "zserv.api")
        if len(longest) > UNIX_PATH_MAX - 8:
            raise BorderError(f"{self.name}: workdir {self.workdir} is too long for unix "
                              "socket paths (keep it under ~90 characters)")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} AS{self.asn} {self.router_id}>"


# -- FRR -------------------------------------------------------------------------

class FrrRouter(_Router):
    """zebra + bgpd (FRR 8.4) in ``node``'s namespace, everything under ``workdir``.

    ``FrrRouter(node, name, asn, router_id, workdir)``, then :meth:`add_neighbor`,
    :meth:`add_network`, :meth:`start`. Config: ``no bgp ebgp-requires-policy``,
    ``no bgp network import-check``, ``bgp bestpath as-path multipath-relax``,
    ``maximum-paths 8`` (and ibgp), graceful restart off (a dead peer's routes
    go at once, not after a restart timer), per neighbor ``timers K H``,
    ``timers connect 1``, ``advertisement-interval 0``, ``default-originate`` /
    ``next-hop-self`` when asked.
    """

    kind = "FRR"

    def __init__(self, node, name: str, asn: int, router_id: str, workdir: str):
        super().__init__(node, name, asn, router_id, workdir)
        self.conf_path = os.path.join(self.workdir, "frr.conf")

    # files ------------------------------------------------------------------
    def _p(self, leaf: str) -> str:
        return os.path.join(self.workdir, leaf)

    def config_text(self) -> str:
        lines = ["frr defaults traditional", f"hostname {self.name}", "!",
                 f"router bgp {self.asn}",
                 f" bgp router-id {self.router_id}",
                 " bgp log-neighbor-changes",
                 " no bgp ebgp-requires-policy",
                 " no bgp network import-check",
                 " no bgp default ipv4-unicast",
                 " bgp graceful-restart-disable",
                 " bgp bestpath as-path multipath-relax"]
        for n in self.neighbors_conf.values():
            lines += [f" neighbor {n.ip} remote-as {n.remote_as}",
                      f" neighbor {n.ip} timers {n.keepalive} {n.hold}",
                      f" neighbor {n.ip} timers connect {n.connect_retry}",
                      f" neighbor {n.ip} advertisement-interval 0"]
        lines += [" !", " address-family ipv4 unicast"]
        lines += [f"  network {p}" for p in self.networks]
        for n in self.neighbors_conf.values():
            lines.append(f"  neighbor {n.ip} activate")
            if n.default_originate:
                lines.append(f"  neighbor {n.ip} default-originate")
            if n.next_hop_self:
                lines.append(f"  neighbor {n.ip} next-hop-self")
        lines += ["  maximum-paths 8", "  maximum-paths ibgp 8", " exit-address-family",
                  "exit", "!", ""]
        return "\n".join(lines)

    def _daemon_argv(self, daemon: str, conf: str) -> list[str]:
        return [os.path.join(FRR_DIR, daemon), "-d", "-u", "root", "-g", "frrvty",
                "-P", "0",  # no TCP vty: the unix socket under workdir is enough
                "-f", conf, "-i", self._p(f"{daemon}.pid"), "-z", self._p("zserv.api"),
                "--vty_socket", self.workdir,
                "--log", f"file:{self._p(daemon + '.log')}", "--log-level", "info"]

    def _pid(self, daemon: str) -> int | None:
        try:
            with open(self._p(f"{daemon}.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    @property
    def pid(self) -> int | None:
        """bgpd's pid (the BGP speaker)."""
        return self._pid("bgpd")

    # commands -------------------------------------------------------------
    def vtysh(self, *commands: str, check: bool = True, timeout: float = 15) -> str:
        """``vtysh -c C1 -c C2 ...`` against this instance (its vty sockets),
        run inside the namespace."""
        argv = ["vtysh", "--vty_socket", self.workdir]
        for c in commands:
            argv += ["-c", c]
        return ns_run(self.node, *argv, check=check, timeout=timeout)

    def _json(self, command: str):
        out = self.vtysh(command)
        try:
            return json.loads(out)
        except ValueError as e:
            raise BorderError(f"{self.name}: {command!r} gave no JSON: {out[:300]!r}") from e

    def configure(self, *commands: str) -> str:
        """Apply config commands inside ``router bgp`` / ``address-family ipv4
        unicast``, e.g. ``configure("no network 203.0.113.0/24")``."""
        return self.vtysh("configure terminal", f"router bgp {self.asn}",
                          "address-family ipv4 unicast", *commands, "end")

    def _network(self, prefix: str, add: bool) -> None:
        out = self.configure(("" if add else "no ") + f"network {prefix}")
        if "%" in out:
            raise BorderError(f"{self.name}: network {prefix}: {out.strip()}")

    # queries ----------------------------------------------------------------
    def neighbors(self) -> dict[str, str]:
        data = self._json("show bgp neighbors json")
        return {ip: str(v.get("bgpState", "unknown")).lower() for ip, v in data.items()
                if isinstance(v, dict)}

    def rib(self) -> dict[str, list[str]]:
        """Every path of every IPv4 prefix: ``{prefix: [next hop of each path]}``
        (0.0.0.0 for a locally originated network)."""
        data = self._json("show bgp ipv4 unicast json")
        rib: dict[str, list[str]] = {}
        for prefix, paths in (data.get("routes") or {}).items():
            hops = []
            for path in paths:
                nh = [h.get("ip") for h in path.get("nexthops", []) if h.get("ip")]
                hops.append(nh[0] if nh else "0.0.0.0")
            rib[_net(prefix)] = sorted(set(hops))
        return rib

    def log_tail(self, lines: int = 30) -> str:
        return "".join(f"== {d}.log ==\n{_tail(self._p(d + '.log'), lines)}"
                       for d in ("bgpd", "zebra"))

    # life cycle -------------------------------------------------------------
    def start(self) -> FrrRouter:
        if self.running:
            return self
        self._stopped = False
        self._prepare_workdir()
        with open(self.conf_path, "w") as f:
            f.write(self.config_text())
        with open(self._p("zebra.conf"), "w") as f:
            f.write(f"hostname {self.name}\n")
        _router_sysctls(self.node)
        # a stale instance of ours (same workdir) would hold the sockets
        _terminate(_pids_with(self.workdir + "/", ("zebra", "bgpd")))
        for leaf in ("zserv.api", "zebra.vty", "bgpd.vty", "zebra.pid", "bgpd.pid"):
            with contextlib.suppress(OSError):
                os.unlink(self._p(leaf))
        dry = subprocess.run([os.path.join(FRR_DIR, "bgpd"), "-C", "-u", "root", "-g",
                              "frrvty", "-f", self.conf_path, "--log", "stdout"],
                             capture_output=True, text=True, timeout=20)
        if dry.returncode != 0:
            raise BorderError(f"{self.name}: FRR rejects {self.conf_path}: "
                              f"{(dry.stdout + dry.stderr).strip()[-800:]}")
        self._launched = True
        try:
            ns_run(self.node, *self._daemon_argv("zebra", self._p("zebra.conf")))
            _wait(lambda: (os.path.exists(self._p("zserv.api")), None), 10,
                  f"{self.name}: zebra's socket {self._p('zserv.api')}")
            ns_run(self.node, *self._daemon_argv("bgpd", self.conf_path))
            _wait(lambda: (self.pid is not None and self._bgpd_answers(), None), 10,
                  f"{self.name}: bgpd answering on {self.workdir}/bgpd.vty")
        except (BorderError, TimeoutError) as e:
            raise BorderError(f"{e}\n{self.log_tail(15)}") from e
        self.running = True
        self.started_at = time.monotonic()
        return self

    def _bgpd_answers(self) -> bool:
        out = self.vtysh("show bgp summary json", check=False)
        return out.lstrip().startswith("{")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal bgpd (the speaker) only: SIGKILL = a crash, SIGSTOP = a hang."""
        pid = self.pid
        if pid is None:
            raise BorderError(f"{self.name}: bgpd is not running")
        os.kill(pid, sig)

    def stop(self) -> None:
        """Stop bgpd and zebra (zebra removes its routes from the kernel)."""
        if self._stopped:
            return
        self._stopped = True
        self.running = False
        pids = [p for p in (self._pid("bgpd"), self._pid("zebra")) if p]
        pids += [p for p in _pids_with(self.workdir + "/", ("zebra", "bgpd")) if p not in pids]
        _terminate(pids)
        # a zebra killed hard leaves its routes behind; the namespace may be gone
        if self._launched and _alive(getattr(self.node, "pid", None)):
            ns_run(self.node, "ip", "route", "flush", "proto", "bgp", check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


# -- GoBGP -------------------------------------------------------------------------

def _toml_str(v: str) -> str:
    return json.dumps(v)


class GobgpRouter(_Router):
    """gobgpd 3.10 in ``node``'s namespace; the same interface as FrrRouter.

    gRPC API on ``127.0.0.1:api_port`` inside the namespace. Default route
    origination: 0.0.0.0/0 is added to the global RIB when some neighbor has
    ``default_originate``, and a global export policy rejects it towards every
    other neighbor (GoBGP has no per-neighbor default-originate). next-hop-self:
    the same export policy sets ``next-hop self`` for those neighbors. The
    kernel FIB is kept by :class:`_FibSync` (``fib_sync_interval`` s polling).
    """

    kind = "GoBGP"

    def __init__(self, node, name: str, asn: int, router_id: str, workdir: str,
                 api_port: int = 50051, fib_sync_interval: float = 0.2):
        super().__init__(node, name, asn, router_id, workdir)
        self.api_port = int(api_port)
        self.conf_path = os.path.join(self.workdir, "gobgpd.toml")
        self.log_path = os.path.join(self.workdir, "gobgpd.log")
        self.proc: subprocess.Popen | None = None
        self.fib_sync_interval = fib_sync_interval
        self.fibsync: _FibSync | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    # config -----------------------------------------------------------------
    def config_text(self) -> str:
        nbrs = list(self.neighbors_conf.values())
        dflt = [n.ip for n in nbrs if n.default_originate]
        no_dflt = [n.ip for n in nbrs if not n.default_originate]
        nhs = [n.ip for n in nbrs if n.next_hop_self]
        out = ["[global.config]", f"  as = {self.asn}",
               f"  router-id = {_toml_str(self.router_id)}", "  port = 179",
               "[global.use-multiple-paths.config]", "  enabled = true"]
        statements: list[list[str]] = []
        # An EMPTY neighbor set matches every neighbor in GoBGP: only emit the
        # sets that have members.
        if dflt and no_dflt:
            out += ["[[defined-sets.prefix-sets]]", '  prefix-set-name = "default-route"',
                    "  [[defined-sets.prefix-sets.prefix-list]]",
                    '    ip-prefix = "0.0.0.0/0"',
                    "[[defined-sets.neighbor-sets]]", '  neighbor-set-name = "no-default"',
                    f"  neighbor-info-list = {json.dumps(no_dflt)}"]
            statements.append([
                '    name = "default-only-where-asked"',
                "    [policy-definitions.statements.conditions.match-prefix-set]",
                '      prefix-set = "default-route"',
                "    [policy-definitions.statements.conditions.match-neighbor-set]",
                '      neighbor-set = "no-default"',
                "    [policy-definitions.statements.actions]",
                '      route-disposition = "reject-route"'])
        if nhs:
            out += ["[[defined-sets.neighbor-sets]]", '  neighbor-set-name = "next-hop-self"',
                    f"  neighbor-info-list = {json.dumps(nhs)}"]
            statements.append([
                '    name = "next-hop-self"',
                "    [policy-definitions.statements.conditions.match-neighbor-set]",
                '      neighbor-set = "next-hop-self"',
                "    [policy-definitions.statements.actions.bgp-actions]",
                '      set-next-hop = "self"'])
        if statements:
            out += ["[[policy-definitions]]", '  name = "border-export"']
            for st in statements:
                out += ["  [[policy-definitions.statements]]", *st]
            out += ["[global.apply-policy.config]", '  export-policy-list = ["border-export"]',
                    '  default-export-policy = "accept-route"']
        for n in nbrs:
            out += ["[[neighbors]]", "  [neighbors.config]",
                    f"    neighbor-address = {_toml_str(n.ip)}", f"    peer-as = {n.remote_as}",
                    "  [neighbors.timers.config]",
                    f"    hold-time = {n.hold}", f"    keepalive-interval = {n.keepalive}",
                    f"    connect-retry = {n.connect_retry}",
                    # after an admin reset only (default 30 s); after any other
                    # session loss gobgpd idles a fixed 5 s (HoldTimeIdle)
                    "    idle-hold-time-after-reset = 1",
                    "  [[neighbors.afi-safis]]", "    [neighbors.afi-safis.config]",
                    '      afi-safi-name = "ipv4-unicast"']
        return "\n".join(out) + "\n"

    # commands -----------------------------------------------------------------
    def gobgp(self, *args: str, check: bool = True, timeout: float = 10) -> str:
        """``gobgp -p <api_port> ARGS`` inside the namespace."""
        return ns_run(self.node, "gobgp", "-u", "127.0.0.1", "-p", str(self.api_port), *args,
                      check=check, timeout=timeout)

    def _json(self, *args: str, timeout: float = 10):
        out = self.gobgp("-j", *args, timeout=timeout)
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError as e:
            raise BorderError(f"{self.name}: gobgp {' '.join(args)} gave no JSON: "
                              f"{out[:300]!r}") from e

    def _network(self, prefix: str, add: bool) -> None:
        # origin IGP, like FRR's network statement and default-originate: paths
        # from both kinds of border router then tie for ECMP at the receiver
        if add:
            self.gobgp("global", "rib", "-a", "ipv4", "add", prefix, "origin", "igp")
        else:
            self.gobgp("global", "rib", "-a", "ipv4", "del", prefix)

    # queries --------------------------------------------------------------------
    def neighbors(self) -> dict[str, str]:
        peers = self._json("neighbor") or []
        res = {}
        for p in peers:
            ip = (p.get("conf") or {}).get("neighbor_address") \
                or (p.get("state") or {}).get("neighbor_address")
            st = (p.get("state") or {}).get("session_state", 0)
            if isinstance(st, str):
                st = st.lower().removeprefix("session_state_")
            else:
                st = GOBGP_STATES.get(int(st), str(st))
            if ip:
                res[ip] = st
        return res

    def raw_rib(self, timeout: float = 10) -> dict[str, list[dict]]:
        """``gobgp -j global rib -a ipv4`` as parsed: ``{prefix: [path]}``."""
        data = self._json("global", "rib", "-a", "ipv4", timeout=timeout)
        return data if isinstance(data, dict) else {}

    def rib(self) -> dict[str, list[str]]:
        """Every path of every IPv4 prefix: ``{prefix: [next hop of each path]}``
        (0.0.0.0 for a locally originated one)."""
        return {_net(p): sorted({_path_nexthop(x) for x in paths})
                for p, paths in self.raw_rib().items()}

    def log_tail(self, lines: int = 30) -> str:
        s = f"== gobgpd.log ==\n{_tail(self.log_path, lines)}"
        if self.fibsync is not None and self.fibsync.errors:
            s += "== FIB sync ==\n" + "\n".join(self.fibsync.errors[-lines:]) + "\n"
        return s

    # life cycle -----------------------------------------------------------------
    def start(self) -> GobgpRouter:
        if self.running:
            return self
        self._stopped = False
        self._prepare_workdir()
        with open(self.conf_path, "w") as f:
            f.write(self.config_text())
        dry = subprocess.run(["gobgpd", "-d", "-f", self.conf_path, "-t", "toml"],
                             capture_output=True, text=True, timeout=20)
        if dry.returncode != 0:
            raise BorderError(f"{self.name}: gobgpd rejects {self.conf_path}: "
                              f"{(dry.stdout + dry.stderr).strip()[-800:]}")
        _router_sysctls(self.node)
        _terminate(_pids_with(self.conf_path, ("gobgpd",)))
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["mnexec", "-a", str(self.node.pid), "gobgpd", "-f", self.conf_path,
                 "-t", "toml", "-p", "-l", "info", "--pprof-disable",
                 "--api-hosts", f"127.0.0.1:{self.api_port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        with open(os.path.join(self.workdir, "gobgpd.pid"), "w") as f:
            f.write(f"{self.proc.pid}\n")

        def up():
            if self.proc.poll() is not None:
                raise TimeoutError(f"{self.name}: gobgpd exited ({self.proc.returncode})")
            return self.gobgp("-j", "global", check=False).lstrip().startswith("{"), None
        try:
            _wait(up, 10, f"{self.name}: gobgpd's API on 127.0.0.1:{self.api_port}")
            if any(n.default_originate for n in self.neighbors_conf.values()):
                self._network("0.0.0.0/0", add=True)
            for p in self.networks:
                self._network(p, add=True)
        except (BorderError, TimeoutError) as e:
            raise BorderError(f"{e}\n{self.log_tail(15)}") from e
        self.fibsync = _FibSync(self, self.fib_sync_interval)
        self.fibsync.start()
        self.running = True
        self.started_at = time.monotonic()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal gobgpd: SIGKILL = a crash (the FIB sync then flushes the
        routes, as zebra does for a dead client), SIGSTOP = a hang."""
        if self.pid is None:
            raise BorderError(f"{self.name}: gobgpd is not running")
        os.kill(self.pid, sig)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.running = False
        if self.fibsync is not None:
            self.fibsync.stop()
        pids = [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []
        pids += [p for p in _pids_with(self.conf_path, ("gobgpd",)) if p not in pids]
        _terminate(pids)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=2)
        if self.fibsync is not None:
            self.fibsync.flush()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _attr(path: dict, t: int) -> dict | None:
    for a in path.get("attrs", []):
        if a.get("type") == t:
            return a
    return None


def _path_nexthop(path: dict) -> str:
    a = _attr(path, 3) or _attr(path, 14) or {}
    nh = a.get("nexthop") or ""
    if not nh and a.get("nexthops"):
        nh = a["nexthops"][0]
    return nh or "0.0.0.0"


def _is_local(path: dict) -> bool:
    src = path.get("neighbor-ip") or path.get("source-id") or ""
    return src in ("", "<nil>", "0.0.0.0") or _path_nexthop(path) == "0.0.0.0"


def _path_rank(path: dict, ibgp_peers: frozenset[str] = frozenset()) -> tuple:
    """What must tie for two paths to share an ECMP route, in BGP decision
    order: local-pref, AS path length (multipath-relax: not its contents),
    origin, MED, eBGP over iBGP."""
    lp = (_attr(path, 5) or {}).get("value", 100)
    as_len = 0
    for seg in (_attr(path, 2) or {}).get("as_paths", []):
        as_len += 1 if seg.get("segment_type") in (1, 3) else len(seg.get("asns", []))
    origin = (_attr(path, 1) or {}).get("value", 0)
    med = (_attr(path, 4) or {}).get("metric", 0)
    return (-lp, as_len, origin, med, path.get("neighbor-ip") in ibgp_peers)


def multipath_nexthops(paths: list[dict], ibgp_peers: Iterable[str] = ()) -> list[str]:
    """The next hops a FIB should use for a prefix, from ``gobgp -j global rib``
    paths: the best path and every learned path tying with it (see
    :func:`_path_rank`); [] when the best path is our own."""
    ibgp = frozenset(ibgp_peers)
    learned = [p for p in paths if not _is_local(p)]
    best = next((p for p in paths if p.get("best")), None)
    if best is None:
        best = min(learned, key=lambda p: _path_rank(p, ibgp), default=None)
    if best is None or _is_local(best):
        return []
    rank = _path_rank(best, ibgp)
    return sorted({_path_nexthop(p) for p in learned if _path_rank(p, ibgp) == rank})


class _FibSync(threading.Thread):
    """Mirror GoBGP's learned routes into the namespace's kernel FIB.

    Every ``interval`` s: ``gobgp -j global rib`` -> per prefix the multipath
    next hops (:func:`multipath_nexthops`) -> diff against the kernel's
    ``proto bgp`` routes -> ``ip route replace P proto bgp metric 20 nexthop via
    A nexthop via B`` / ``ip route del``. When gobgpd stops answering for a
    second the routes are flushed (as zebra does when its client dies).
    """

    def __init__(self, router: GobgpRouter, interval: float = 0.2):
        super().__init__(name=f"fibsync-{router.name}", daemon=True)
        self.router = router
        self.interval = interval
        self._halt = threading.Event()
        self.errors: list[str] = []
        self.syncs = 0
        self.last_change: float | None = None

    def _err(self, msg: str) -> None:
        self.errors.append(f"{time.strftime('%H:%M:%S')} {msg}")
        del self.errors[:-100]

    def desired(self) -> dict[str, list[str]]:
        r = self.router
        ibgp = [ip for ip, n in r.neighbors_conf.items() if n.remote_as == r.asn]
        return {_net(p): hops for p, paths in r.raw_rib(timeout=2).items()
                if (hops := multipath_nexthops(paths, ibgp))}

    def sync_once(self, desired: dict[str, list[str]]) -> None:
        node = self.router.node
        actual = kernel_routes(node, "proto", "bgp")
        for prefix, hops in desired.items():
            if actual.get(prefix) == hops:
                continue
            via = (["via", hops[0]] if len(hops) == 1
                   else [w for h in hops for w in ("nexthop", "via", h)])
            try:
                ns_run(node, "ip", "route", "replace", prefix, "proto", "bgp", "metric", "20",
                       *via, timeout=5)
                self.last_change = time.monotonic()
            except BorderError as e:
                self._err(str(e))
        for prefix in actual.keys() - desired.keys():
            ns_run(node, "ip", "route", "del", prefix, "proto", "bgp", check=False, timeout=5)
            self.last_change = time.monotonic()

    def run(self) -> None:
        failing_since = None
        while not self._halt.is_set():
            proc = self.router.proc
            want = None
            if proc is not None and proc.poll() is not None:
                if not self.errors or "exited" not in self.errors[-1]:
                    self._err(f"gobgpd exited ({proc.returncode}): flushing its routes")
                want = {}  # dead, not slow: flush at once
            else:
                try:
                    want = self.desired()
                    failing_since = None
                except BorderError as e:
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since >= 1.0:
                        self._err(f"gobgpd not answering, flushing its routes: {e}")
                        want = {}
            if want is not None:
                self._sync_or_log(want)
            self._halt.wait(self.interval)

    def _sync_or_log(self, want: dict[str, list[str]]) -> None:
        try:
            self.sync_once(want)
            self.syncs += 1
        except Exception as e:  # noqa: BLE001 (the namespace may be going away)
            self._err(f"sync: {e}")

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def flush(self) -> None:
        node = self.router.node
        if _alive(getattr(node, "pid", None)):
            ns_run(node, "ip", "route", "flush", "proto", "bgp", check=False)


# -- the upstream LAN and the internet host --------------------------------------

class Upstream(StartStop):
    """The LAN of the border routers (a Linux bridge in the root namespace) and
    an "internet" host on it.

    ``prefix``: unique short name prefix (<= 8 lowercase letters/digits; ``mfl``
    + 4 hex by default) -- the bridge is ``<prefix>lan``, the root ends of the
    veths ``<prefix>l<n>``, the host ``<prefix>inet``.
    """

    def __init__(self, prefix: str | None = None, lan: str = "198.51.100.0/24",
                 internet_ip: str = "198.51.100.100", workdir: str | None = None):
        self.prefix = prefix or unused_prefix()
        if len(self.prefix) > 8 or not re.fullmatch(r"[a-z0-9]+", self.prefix):
            raise BorderError(f"prefix {self.prefix!r}: use <= 8 lowercase letters/digits")
        self.lan = ipaddress.ip_network(lan)
        self.internet_ip = str(ipaddress.IPv4Address(internet_ip))
        self.bridge = f"{self.prefix}lan"
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"{self.prefix}-up-", dir="/tmp")
        self.internet: Host | None = None
        self.internet_router: FrrRouter | None = None
        self.veths: list[str] = []  # root-namespace ends
        self._seq = 0
        self._made_bridge = False
        self._started = False
        self._stopped = False
        atexit.register(self.stop)

    def start(self) -> Upstream:
        if self._started:
            return self
        self._started = True
        br = self.bridge
        links.add_bridge(br)
        self._made_bridge = True
        _run(["ethtool", "-K", br, "tx", "off"], check=False)
        self.internet = Host(f"{self.prefix}inet", inNamespace=True)
        ns_run(self.internet, "ip", "link", "set", "lo", "up")
        self.connect(self.internet, f"{self.internet_ip}/{self.lan.prefixlen}", intf="lan0")
        # spread flows over ECMP routes by their ports (L4 hash), not by address pair
        ns_run(self.internet, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
        return self

    def connect(self, node, ip_cidr: str, intf: str = "lan0") -> str:
        """Plug ``node`` (a Mininet node) into the LAN as ``intf`` with address
        ``ip_cidr`` ("A.B.C.D/len"; /len defaults to the LAN's). Returns ``intf``."""
        if not self._started:
            raise BorderError("Upstream.start() first")
        if "/" not in ip_cidr:
            ip_cidr = f"{ip_cidr}/{self.lan.prefixlen}"
        self._seq += 1
        root_end = f"{self.prefix}l{self._seq}"
        links.add_veth(root_end, intf, node.pid, master=self.bridge)
        self.veths.append(root_end)
        _run(["ethtool", "-K", root_end, "tx", "off"], check=False)
        ns_run(node, "ethtool", "-K", intf, "tx", "off", check=False)
        ns_run(node, "ip", "addr", "add", ip_cidr, "dev", intf)
        ns_run(node, "ip", "link", "set", intf, "up")
        return intf

    def route_via(self, prefix: str, nexthops: list[str]) -> None:
        """A static (ECMP when several) route on the internet host:
        ``ip route replace PREFIX nexthop via A nexthop via B``."""
        if not nexthops:
            raise BorderError("route_via needs at least one next hop")
        hops = [w for h in nexthops for w in ("nexthop", "via", str(h))]
        ns_run(self.internet, "ip", "route", "replace", _net(prefix), *hops)

    def start_bgp(self, neighbors: dict[str, int], asn: int = 65100,
                  router_id: str | None = None, keepalive: int = 1,
                  hold: int = 3) -> FrrRouter:
        """Let the internet host learn routes by BGP instead: FRR (maximum-paths
        8, multipath-relax, its zebra programs the FIB) peering with
        ``{border router LAN address: its AS}``. Returns the started router
        (also ``self.internet_router``; stopped by :meth:`stop`)."""
        r = FrrRouter(self.internet, f"{self.prefix}inet", asn, router_id or self.internet_ip,
                      os.path.join(self.workdir, "internet-frr"))
        for ip, remote_as in neighbors.items():
            r.add_neighbor(ip, remote_as, keepalive=keepalive, hold=hold)
        self.internet_router = r
        r.start()
        return r

    def ping(self, ip: str, count: int = 3, timeout: float = 1.0) -> tuple[int, int]:
        """(sent, received) pinging ``ip`` from the internet host."""
        out = ns_run(self.internet, "ping", "-n", "-c", str(count), "-i", "0.2", "-W",
                     str(timeout), ip, check=False, timeout=count * (timeout + 1) + 5)
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        return (int(m.group(1)), int(m.group(2))) if m else (count, 0)

    def stop(self) -> None:
        """Remove everything this made (idempotent; also after a partial start)."""
        if self._stopped:
            return
        self._stopped = True
        if self.internet_router is not None:
            with contextlib.suppress(Exception):
                self.internet_router.stop()
        if self.internet is not None:
            inode = None
            if self.internet.shell is not None and self.internet.shell.poll() is None:
                inode = _netns_inode(self.internet.pid)
            with contextlib.suppress(Exception):
                self.internet.terminate()
            if inode:
                _kill_netns_processes({inode})
        for v in [*self.veths, *([self.bridge] if self._made_bridge else [])]:
            with contextlib.suppress(links.LinkError):
                links.delete(v)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
