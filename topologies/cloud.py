"""A cloud on one machine: cloud hosts, VMs and an underlay, built with Mininet.

Each cloud host is a Mininet ``Node`` in its own network namespace running its
*own* Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath) with:

* ``br-phy`` (NORMAL) holding the host's underlay IP on its internal port and
  the veth to the underlay bridge;
* ``br-int`` (secure fail mode, OpenFlow 1.3) with ``vxlan0`` (ofport 1) and
  ``gre0`` (ofport 2), both ``remote_ip=flow key=flow``, and a controller
  ``unix:<rundir>/of.sock`` on which the host's agent (running in the ROOT
  namespace) listens.

VMs are Mininet ``Host``s linked to a cloud host; their host-side veth end is a
port of ``br-int``. The underlay is a plain Linux bridge in the root namespace
(no IP on it). Every name derives from a short unique prefix (``mfl`` + 4 hex
digits by default) so several clouds can run at once; ``scripts/cleanup.sh``
removes leftovers by the ``mfl`` prefix.

Typical use::

    with Cloud(n_hosts=2, subnet="10.10.0.0/24") as cloud:
        h1, h2 = cloud.hosts
        for h in cloud.hosts:
            start_agent(**cloud.host_info(h))   # your process, root namespace
        vm1 = cloud.add_vm(h1, "vm1", "192.168.1.1/24", "02:00:00:00:01:01", "port-1")
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from mininet.link import Link
from mininet.node import Host, Node

from topologies import links
from topologies.lifecycle import StartStop, wait_for

PROJECT_PREFIX = "mfl"  # every name this module creates starts with it


def unused_prefix(lead: str = PROJECT_PREFIX) -> str:
    """``lead`` + 4 random hex digits that no interface, named network namespace
    or ``/tmp`` directory on this machine starts with: labs running at the same
    time (the e2e shards, a demo beside the tests) must not share names."""
    import glob

    def in_use(p: str) -> bool:
        names = os.listdir("/sys/class/net")
        with contextlib.suppress(OSError):
            names += os.listdir("/var/run/netns")
        return any(n.startswith(p) for n in names) or bool(glob.glob(f"/tmp/{p}-*"))

    for _ in range(64):
        p = f"{lead}{secrets.token_hex(2)}"
        if not in_use(p):
            return p
    raise RuntimeError(f"no unused name prefix {lead}XXXX after 64 tries: remove leftover "
                       "labs with: make cleanup")
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
VXLAN_OFPORT = 1
GRE_OFPORT = 2
# The MTU the harness gives a statically configured VM (``add_vm`` with an
# address): the underlay's 1500 less VXLAN's 50, what DHCP tells a VM booted
# by DHCP (option 26). A VM made with ``ip=None`` keeps the kernel's default
# and takes its MTU from DHCP like a real instance (issue 12), so a DHCP
# server that forgets option 26 is seen, not papered over.
VM_MTU = 1450


class CloudError(RuntimeError):
    pass


def _run(cmd: list[str], check: bool = True, timeout: float = 30, env=None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise CloudError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _netns_inode(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _kill_netns_processes(inodes: set[str]) -> None:
    """SIGKILL every process whose network namespace is one of ``inodes``
    (daemons, iperf servers, shells): once they are gone the namespace, its
    veths and their peers disappear."""
    root = _netns_inode(1)
    inodes = {i for i in inodes if i and i != root}
    if not inodes:
        return
    for _ in range(3):
        victims = []
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != os.getpid() and _netns_inode(int(d)) in inodes:
                victims.append(int(d))
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _pidfile_kill(path: str, sig: int = signal.SIGKILL) -> None:
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.kill(pid, sig)
    except (OSError, ValueError):
        pass


def _wait(pred, timeout: float, what: str, interval: float = 0.02):
    return wait_for(pred, timeout, what, interval, CloudError)


class CloudHost(Node):
    """A cloud host: its own network namespace and its own OVS.

    ``underlay_ip`` is "A.B.C.D/len"; ``rundir`` is created by the caller (one
    per host, short path: unix socket paths are limited to 107 bytes).
    """

    def __init__(self, name: str, underlay_ip: str = "10.10.0.1/24", rundir: str = "",
                 **params):
        self.underlay_cidr = underlay_ip
        self.underlay_ip = underlay_ip.split("/")[0]
        self.rundir = rundir or tempfile.mkdtemp(prefix=f"{name}-")
        self.uplink = "uplink"  # veth to the underlay, inside this namespace
        self.vxlan_ofport = VXLAN_OFPORT
        self.gre_ofport = GRE_OFPORT
        self.ovs_running = False
        super().__init__(name, inNamespace=True, **params)

    # -- paths --------------------------------------------------------------
    @property
    def db_sock(self) -> str:
        return os.path.join(self.rundir, "db.sock")

    @property
    def db(self) -> str:
        """The OVSDB remote for ``ovs-vsctl --db=``."""
        return f"unix:{self.db_sock}"

    @property
    def of_sock(self) -> str:
        return os.path.join(self.rundir, "of.sock")

    @property
    def mgmt_sock(self) -> str:
        return os.path.join(self.rundir, "br-int.mgmt")

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(OVS_RUNDIR=self.rundir, OVS_LOGDIR=self.rundir, OVS_DBDIR=self.rundir,
                   OVS_SYSCONFDIR=self.rundir, OVS_PKGDATADIR="/usr/share/openvswitch")
        return env

    # -- commands -----------------------------------------------------------
    def ns_run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run a command inside this host's namespace (thread safe, unlike cmd())."""
        return _run(["mnexec", "-a", str(self.pid), *args], check=check, timeout=timeout,
                    env=self._env())

    def ovs_vsctl(self, *args: str, check: bool = True) -> str:
        return _run(["ovs-vsctl", f"--db={self.db}", "--timeout=20", *args], check=check,
                    env=self._env())

    def ovs_ofctl(self, *args: str, bridge: str = "br-int", check: bool = True) -> str:
        """``ovs-ofctl -O OpenFlow13 CMD <mgmt socket> ARGS``: the first arg is the
        command (e.g. ``add-flow``), the bridge is replaced by its mgmt socket."""
        cmd, *rest = args
        target = os.path.join(self.rundir, f"{bridge}.mgmt")
        return _run(["ovs-ofctl", "-O", "OpenFlow13", cmd, target, *rest], check=check,
                    env=self._env())

    def ovs_appctl(self, *args: str, check: bool = True) -> str:
        ctl = os.path.join(self.rundir, "ovs-vswitchd.ctl")
        return _run(["ovs-appctl", "-t", ctl, *args], check=check, env=self._env())

    def dump_flows(self, bridge: str = "br-int") -> list[str]:
        out = self.ovs_ofctl("dump-flows", bridge=bridge, check=False)
        return [ln.strip() for ln in out.splitlines() if "actions=" in ln]

    def ofport(self, iface: str, timeout: float = 10) -> int:
        """The ofport OVS assigned to ``iface`` (waits until it has one)."""
        def get():
            v = self.ovs_vsctl("--if-exists", "get", "Interface", iface, "ofport",
                               check=False).strip()
            return int(v) if v.lstrip("-").isdigit() and int(v) > 0 else None
        return _wait(get, timeout, f"an ofport for {iface} on {self.name}")

    # -- life cycle ---------------------------------------------------------
    def start_ovs(self) -> None:
        """ovsdb-server, ovs-vswitchd, br-phy and br-int; returns when ready."""
        os.makedirs(self.rundir, exist_ok=True)
        conf = os.path.join(self.rundir, "conf.db")
        if not os.path.exists(conf):
            _run(["ovsdb-tool", "create", conf, OVS_SCHEMA])
        r = self.rundir
        self.ns_run("ovsdb-server", conf, f"--remote=punix:{self.db_sock}",
                    f"--pidfile={r}/ovsdb-server.pid", f"--log-file={r}/ovsdb-server.log",
                    f"--unixctl={r}/ovsdb-server.ctl", "--detach", "--no-chdir")
        self.ovs_vsctl("--no-wait", "init")
        self.ns_run("ovs-vswitchd", self.db, f"--pidfile={r}/ovs-vswitchd.pid",
                    f"--log-file={r}/ovs-vswitchd.log", f"--unixctl={r}/ovs-vswitchd.ctl",
                    "--detach", "--no-chdir", "-vconsole:off")
        self.ovs_running = True
        ip = self.underlay_ip
        # One transaction: both bridges, the uplink, the tunnel ports, the controller.
        # max_backoff=1000 ms: OVS retries the (not yet listening) agent every second
        # instead of backing off to 8 s.
        self.ovs_vsctl(
            "--", "add-br", "br-phy",
            "--", "set", "Bridge", "br-phy", "datapath_type=netdev", "fail_mode=standalone",
            "--", "add-port", "br-phy", self.uplink,
            "--", "add-br", "br-int",
            "--", "set", "Bridge", "br-int", "datapath_type=netdev", "fail_mode=secure",
            "protocols=OpenFlow13", "other_config:disable-in-band=true",
            "--", "add-port", "br-int", "vxlan0",
            "--", "set", "Interface", "vxlan0", "type=vxlan", "options:remote_ip=flow",
            "options:key=flow", f"options:local_ip={ip}", f"ofport_request={VXLAN_OFPORT}",
            "--", "add-port", "br-int", "gre0",
            "--", "set", "Interface", "gre0", "type=gre", "options:remote_ip=flow",
            "options:key=flow", f"options:local_ip={ip}", f"ofport_request={GRE_OFPORT}",
            "--", "--id=@c", "create", "Controller", f"target=\"unix:{self.of_sock}\"",
            "max_backoff=1000", "connection_mode=out-of-band", "controller_queue_size=512",
            "--", "set", "Bridge", "br-int", "controller=@c",
        )
        # br-phy: the underlay IP on its internal port; tx offload off (userspace dp).
        self.ns_run("ip", "link", "set", "lo", "up")
        self.ns_run("ip", "link", "set", self.uplink, "up")
        _wait(lambda: self.ns_run("ip", "link", "show", "br-phy", check=False), 10,
              f"br-phy on {self.name}")
        self.ns_run("ip", "addr", "add", self.underlay_cidr, "dev", "br-phy")
        self.ns_run("ip", "link", "set", "br-phy", "up")
        for iface in (self.uplink, "br-phy", "br-int"):
            self.ns_run("ethtool", "-K", iface, "tx", "off", check=False)
        _wait(lambda: os.path.exists(self.mgmt_sock), 10, f"{self.mgmt_sock}")
        # OVS's conntrack drops non-last fragments below 1,200 bytes by
        # default: the agent lowers that itself when it connects
        # (midoflow.apps.ovsctl, through this control socket).
        self.vxlan_ofport = self.ofport("vxlan0")
        self.gre_ofport = self.ofport("gre0")

    def _pids(self) -> list[str]:
        return [os.path.join(self.rundir, f"{d}.pid") for d in ("ovs-vswitchd", "ovsdb-server")]

    def kill_ovs(self) -> None:
        """SIGKILL both OVS daemons: the host (its datapath) is dead."""
        for p in self._pids():
            _pidfile_kill(p, signal.SIGKILL)
        self.ovs_running = False

    def stop(self, deleteIntfs: bool = False) -> None:  # noqa: N803 (Mininet's name)
        inode = _netns_inode(self.pid) if self.shell and self.shell.poll() is None else None
        self.kill_ovs()
        with contextlib.suppress(Exception):
            super().stop(deleteIntfs=False)
        if inode:
            _kill_netns_processes({inode})


# The host-side end of a VM's veth is an ordinary kernel interface: with the
# userspace datapath OVS reads its frames through an AF_PACKET socket, and the
# host's own IP stack receives them too. These make the stack deaf to it (see
# notes/hostile-tenants.md); rp_filter alone was enough here, the others are
# defence in depth.
TAP_SYSCTLS = (
    ("net.ipv4.conf.{}.rp_filter", 1),           # no route back via the tap: all martians
    ("net.ipv4.conf.{}.arp_ignore", 8),          # answer no ARP for local addresses
    ("net.ipv4.conf.{}.forwarding", 0),          # never route what came in on it
    ("net.ipv4.conf.{}.drop_gratuitous_arp", 1),
    ("net.ipv4.conf.{}.accept_local", 0),
)


def deafen_tap(host: CloudHost, tap: str) -> None:
    """Make the host's IP stack ignore everything arriving on ``tap`` (a VM's
    port): no ARP answered for the host's underlay addresses, nothing relayed
    onto the underlay, no IPv6 chatter from the host onto the VM's wire (RS,
    MLD and DAD from the tap would reach the VM straight through the veth,
    bypassing OVS). Raises CloudError if an IPv4 setting cannot be applied."""
    host.ns_run("sysctl", "-qw", *(f"{k.format(tap)}={v}" for k, v in TAP_SYSCTLS))
    host.ns_run("sysctl", "-qw", f"net.ipv6.conf.{tap}.disable_ipv6=1", check=False)


class Cloud(StartStop):
    """N cloud hosts on a Linux-bridge underlay, plus VMs.

    ``prefix``: short (≤ 8 chars) unique name prefix, default ``mfl`` + 4 hex.
    ``subnet``: underlay subnet; host i gets the (i)th address (.1, .2, ...).
    ``hooks``: callables ``hook(cloud, host_info_dict)`` run after each host's OVS is
    ready (e.g. start that host's agent in the root namespace) — or call
    ``host_info`` yourself after ``start()``.
    """

    def __init__(self, n_hosts: int = 2, subnet: str = "10.10.0.0/24", prefix: str | None = None,
                 basedir: str | None = None, hooks=(), keep_rundir: bool | None = None,
                 parallel: bool = True):
        self.prefix = prefix or unused_prefix()
        if len(self.prefix) > 8 or not re.fullmatch(r"[a-z0-9]+", self.prefix):
            raise CloudError(f"prefix {self.prefix!r}: use ≤ 8 lowercase letters/digits")
        self.subnet = ipaddress.ip_network(subnet)
        if n_hosts < 1 or n_hosts > min(self.subnet.num_addresses - 2, 99):
            raise CloudError(f"n_hosts={n_hosts} does not fit subnet {subnet}")
        self.n_hosts = n_hosts
        self.basedir = basedir or tempfile.mkdtemp(prefix=f"{self.prefix}-", dir="/tmp")
        self.hooks = list(hooks)
        if keep_rundir is None:
            keep_rundir = bool(os.environ.get("MIDOFLOW_KEEP_RUNDIR"))
        self.keep_rundir = keep_rundir
        self.parallel = parallel
        self.underlay = f"{self.prefix}ul"
        self.hosts: list[CloudHost] = []
        self.vms: dict[str, Host] = {}
        self._tap_seq = 0
        self._procs: list[subprocess.Popen] = []
        self.agents: dict[str, subprocess.Popen] = {}  # host name -> root-ns process
        self._started = False
        self._stopped = False
        self.build_seconds: float | None = None
        atexit.register(self.stop)

    # -- context manager ----------------------------------------------------
    # -- building -----------------------------------------------------------
    def _root(self, *args: str, check: bool = True) -> str:
        return _run(list(args), check=check)

    def start(self) -> Cloud:
        if self._started:
            return self
        self._started = True
        t0 = time.monotonic()
        br = self.underlay
        links.add_bridge(br)
        self._root("ethtool", "-K", br, "tx", "off", check=False)
        addrs = list(self.subnet.hosts())
        for i in range(1, self.n_hosts + 1):
            rundir = os.path.join(self.basedir, f"h{i}")
            os.makedirs(rundir)
            cidr = f"{addrs[i - 1]}/{self.subnet.prefixlen}"
            h = CloudHost(f"{self.prefix}h{i}", underlay_ip=cidr, rundir=rundir)
            h.index = i
            self.hosts.append(h)
            ul = f"{self.prefix}u{i}"
            links.add_veth(ul, h.uplink, h.pid, master=br)
            self._root("ethtool", "-K", ul, "tx", "off", check=False)
        if self.parallel and len(self.hosts) > 1:
            errors: list[BaseException] = []

            def run(h):
                try:
                    h.start_ovs()
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
            threads = [threading.Thread(target=run, args=(h,)) for h in self.hosts]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        else:
            for h in self.hosts:
                h.start_ovs()
        self.prime_tunnel_neighbours()
        self.build_seconds = time.monotonic() - t0
        for h in self.hosts:
            for hook in self.hooks:
                hook(self, self.host_info(h))
        return self

    def prime_tunnel_neighbours(self) -> None:
        """Tell every OVS the underlay MAC of every other host.

        The userspace datapath resolves a tunnel's next hop from its own neighbour
        cache, filled only by snooping ARP on br-phy: a miss drops the packet (and
        once the cache is flushed or aged out it may not be re-learned while the
        kernel's ARP entry keeps the kernel from asking again). Static entries
        and the longest ageing make the overlay deterministic from packet one."""
        macs = {h: h.ns_run("cat", "/sys/class/net/br-phy/address").strip()
                for h in self.hosts if h.ovs_running}
        for h in macs:
            h.ovs_appctl("tnl/neigh/aging", "3600", check=False)
            for o, mac in macs.items():
                if o is not h:
                    h.ovs_appctl("tnl/neigh/set", "br-phy", o.underlay_ip, mac)

    def host(self, name_or_index) -> CloudHost:
        if isinstance(name_or_index, CloudHost):
            return name_or_index
        if isinstance(name_or_index, int):
            return self.hosts[name_or_index - 1]
        for h in self.hosts:
            if name_or_index in (h.name, f"h{h.index}"):
                return h
        raise KeyError(name_or_index)

    def host_info(self, h) -> dict:
        """Everything an agent for host ``h`` needs (it runs in the root namespace)."""
        h = self.host(h)
        return {
            "name": h.name,                  # e.g. mfl3fa2h1 (unique on this machine)
            "short_name": f"h{h.index}",
            "index": h.index,
            "rundir": h.rundir,              # logs and sockets live here
            "db": h.db,                      # "unix:<rundir>/db.sock" for ovs-vsctl --db
            "db_sock": h.db_sock,
            "of_sock": h.of_sock,            # the agent must LISTEN here (OVS connects)
            "of_listen": h.of_sock,          # same, named like AgentConfig.of_listen
            "mgmt_sock": h.mgmt_sock,        # ovs-ofctl target for br-int
            "bridge": "br-int",
            "underlay_ip": h.underlay_ip,    # == the agent's tunnel_ip
            "tunnel_ip": h.underlay_ip,
            "vxlan_port": "vxlan0",
            "gre_port": "gre0",
            "vxlan_ofport": h.vxlan_ofport,
            "gre_ofport": h.gre_ofport,
            "pid": h.pid,                    # a process in the host's netns (mnexec -a)
        }

    # -- agents (root namespace) ----------------------------------------------
    def write_agent_config(self, h, zookeeper: str, host_id: str | None = None,
                           path: str | None = None, **extra) -> str:
        """An ``[agent]`` INI for ``midoflow-agent --config`` (AgentConfig fields)."""
        info = self.host_info(h)
        fields = {
            "host_id": host_id or info["name"],
            "host_name": info["name"],
            "zookeeper": zookeeper,
            "ovsdb": info["db"],
            "tunnel_ip": info["tunnel_ip"],
            "bridge": info["bridge"],
            "vxlan_port": info["vxlan_port"],
            "gre_port": info["gre_port"],
            "of_listen": info["of_sock"],
            # the host's OVS lives in its own namespace: BGP links go there
            "ovs_netns": str(self.host(h).pid),
            **{k: str(v) for k, v in extra.items()},
        }
        path = path or os.path.join(info["rundir"], "agent.ini")
        with open(path, "w") as f:
            f.write("[agent]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()))
        return path

    def start_agent(self, h, cmd: list[str], env: dict | None = None,
                    log: str | None = None) -> subprocess.Popen:
        """Start ``cmd`` (the host's agent) in the ROOT namespace, output to
        ``<rundir>/agent.log``; killed by ``kill_agent`` and by ``stop()``."""
        h = self.host(h)
        self.kill_agent(h)
        log = log or os.path.join(h.rundir, "agent.log")
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
        self.agents[h.name] = p
        return p

    def start_agents(self, make_cmd, env: dict | None = None) -> dict[str, subprocess.Popen]:
        """``make_cmd(host_info) -> argv`` for every host; see ``start_agent``."""
        return {h.name: self.start_agent(h, make_cmd(self.host_info(h)), env=env)
                for h in self.hosts}

    def kill_agent(self, h, sig: int = signal.SIGKILL, timeout: float = 5) -> None:
        """Stop the host's agent (SIGKILL by default: a crash) and its children."""
        h = self.host(h)
        p = self.agents.pop(h.name, None)
        if p is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(h.of_sock)  # a stale listener socket would refuse OVS

    def wait_controller_connected(self, h, timeout: float = 20) -> None:
        """Until the host's br-int reports its controller connected (OVS refreshes
        ``is_connected`` in the database only about every 5 s)."""
        h = self.host(h)
        _wait(lambda: h.ovs_vsctl("--if-exists", "get", "Controller", ".", "is_connected",
                                  check=False).strip() == "true",
              timeout, f"{h.name}'s br-int to connect to {h.of_sock}", interval=0.2)

    # -- VMs ----------------------------------------------------------------
    def _attach(self, vm: Host, host: CloudHost, iface_id: str | None) -> None:
        ip, mac = vm.vm_ip, vm.vm_mac
        self._tap_seq += 1
        tap = f"tap{self._tap_seq}"
        tap_mac = "0e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        link = Link(vm, host, intfName1="eth0", intfName2=tap, addr1=mac, addr2=tap_mac)
        if not getattr(vm, "vm_dhcp", False):
            vm.setIP(ip, intf="eth0")
            vm.cmd(f"ip link set eth0 mtu {VM_MTU}")
        else:  # booted by DHCP: no address, the kernel's MTU, the link up
            vm.cmd("ip addr flush dev eth0; ip link set eth0 up")
        vm.cmd("ethtool -K eth0 tx off >/dev/null 2>&1")
        host.ns_run("ethtool", "-K", tap, "tx", "off", check=False)
        deafen_tap(host, tap)
        host.ns_run("ip", "link", "set", tap, "up")
        extra = ["--", "set", "Interface", tap, f"external_ids:attached-mac={mac}"]
        if iface_id:
            extra.append(f"external_ids:iface-id={iface_id}")
        host.ovs_vsctl("add-port", "br-int", tap, *extra)
        vm.cloud_host, vm.tap, vm.link, vm.iface_id = host, tap, link, iface_id
        vm.ofport = host.ofport(tap)

    def add_vm(self, host, name: str, ip: str | None, mac: str,
               iface_id: str | None = None) -> Host:
        """A VM (Mininet Host, own netns, eth0 with ``ip`` "A.B.C.D/len", MTU
        ``VM_MTU`` and ``mac``) plugged into ``host``'s br-int. ``ip=None``: eth0
        is up with no address and the kernel's MTU, for a DHCP client to
        configure (``topologies.dhcp_clients``; ``vm.vm_ip`` may be set from
        what it got: the VM stays ``vm.vm_dhcp``, and ``move_vm`` keeps its
        lease's address and MTU). Returns it; ``vm.ofport`` is its port there."""
        host = self.host(host)
        if name in self.vms:
            raise CloudError(f"VM {name} exists")
        if ip is not None and "/" not in ip:
            ip += "/24"
        vm = Host(f"{self.prefix}{name}"[:30], inNamespace=True)
        vm.vm_name, vm.vm_ip, vm.vm_mac = name, ip, mac
        vm.vm_dhcp = ip is None  # configured by a DHCP client, not by the harness
        self.vms[name] = vm
        self._attach(vm, host, iface_id)
        return vm

    def _detach(self, vm: Host) -> None:
        host: CloudHost = vm.cloud_host
        host.ovs_vsctl("--if-exists", "del-port", "br-int", vm.tap, check=False)
        with contextlib.suppress(Exception):
            host.ns_run("ip", "link", "del", vm.tap, check=False)
        for intf in list(vm.intfList()):
            if intf.name != "lo":
                vm.delIntf(intf)
        for intf in list(host.intfList()):
            if intf.name == vm.tap:
                host.delIntf(intf)
        vm.cloud_host = None

    def remove_vm(self, vm) -> None:
        vm = self.vms.pop(vm if isinstance(vm, str) else vm.vm_name)
        self._detach(vm)
        inode = _netns_inode(vm.pid)
        with contextlib.suppress(Exception):
            vm.stop()
        if inode:
            _kill_netns_processes({inode})
        if getattr(vm, "dhcp_dir", None):
            shutil.rmtree(vm.dhcp_dir, ignore_errors=True)

    def move_vm(self, vm, new_host, iface_id: str | None = None) -> Host:
        """Migrate: unplug from the old host's OVS, plug into ``new_host``'s, keeping
        the VM's namespace (and its processes), MAC and IP. The veth is recreated."""
        vm = self.vms[vm] if isinstance(vm, str) else vm
        iface_id = iface_id if iface_id is not None else vm.iface_id
        # A migrated VM keeps its configuration: the routes that went with the
        # old veth come back on the new one (a default gateway, say).
        routes = [r for r in vm.cmd("ip -4 route show").splitlines()
                  if r.strip() and " via " in r]
        # A VM booted by DHCP keeps its lease's address and MTU too.
        dynamic = [] if not vm.vm_dhcp else \
            re.findall(r"inet (\S+)", vm.cmd("ip -4 -o addr show dev eth0"))
        mtu = re.search(r"\bmtu (\d+)", vm.cmd("ip -o link show dev eth0"))
        self._detach(vm)
        self._attach(vm, self.host(new_host), iface_id)
        if vm.vm_dhcp:
            for cidr in dynamic:
                vm.cmd(f"ip addr add {cidr} dev eth0")
            if mtu:
                vm.cmd(f"ip link set eth0 mtu {mtu.group(1)}")
        for r in routes:
            vm.cmd(f"ip route replace {r.strip()}")
        return vm

    def popen(self, node: Node, cmd: list[str], **kw) -> subprocess.Popen:
        """A background process in ``node``'s namespace, killed by stop()."""
        p = node.popen(cmd, **kw)
        self._procs.append(p)
        return p

    # -- teardown -----------------------------------------------------------
    def stop(self) -> None:
        """Kill everything this cloud started; safe to call twice and on failure."""
        if self._stopped:
            return
        self._stopped = True
        for name in list(self.agents):
            with contextlib.suppress(Exception):
                self.kill_agent(name, sig=signal.SIGTERM, timeout=3)
        for p in self._procs:
            with contextlib.suppress(Exception):
                p.kill()
        nodes: list[Node] = [*self.vms.values(), *self.hosts]
        inodes = set()
        for n in nodes:
            if getattr(n, "shell", None) is not None and n.shell.poll() is None:
                inodes.add(_netns_inode(n.pid))
        for h in self.hosts:
            h.kill_ovs()
        for n in nodes:
            with contextlib.suppress(Exception):
                Node.terminate(n)
        _kill_netns_processes(inodes)
        for vm in self.vms.values():  # DHCP clients' lease/script dirs (dhcp_clients)
            if getattr(vm, "dhcp_dir", None):
                shutil.rmtree(vm.dhcp_dir, ignore_errors=True)
        for p in self._procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=2)
        for i in range(1, self.n_hosts + 1):
            with contextlib.suppress(links.LinkError):
                links.delete(f"{self.prefix}u{i}")
        with contextlib.suppress(links.LinkError):
            links.delete(self.underlay)
        if not self.keep_rundir:
            shutil.rmtree(self.basedir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


# -- helpers for tests and benchmarks ---------------------------------------

def ping(vm: Host, ip: str, count: int = 3, timeout: float = 1.0) -> tuple[int, int]:
    """(sent, received) from ``vm`` to ``ip``."""
    out = vm.cmd(f"ping -c {count} -i 0.2 -W {timeout} {ip}")
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
    return (int(m.group(1)), int(m.group(2))) if m else (count, 0)


def iperf_tcp(vm_a: Host, vm_b: Host, seconds: float = 2, port: int = 5201) -> float:
    """TCP throughput from ``vm_a`` to ``vm_b`` with iperf3, in Gbit/s."""
    ip_b = vm_b.vm_ip.split("/")[0] if hasattr(vm_b, "vm_ip") else vm_b.IP()
    server = vm_b.popen(["iperf3", "-s", "-1", "-p", str(port), "-B", ip_b])
    try:
        deadline = time.monotonic() + 5
        while f":{port}" not in vm_b.cmd(f"ss -ltnH 'sport = :{port}'"):
            if time.monotonic() > deadline:
                raise CloudError(f"iperf3 server did not start in {vm_b.name}")
            time.sleep(0.05)
        out = vm_a.cmd(f"iperf3 -J -c {ip_b} -p {port} -t {seconds} --connect-timeout 3000")
        try:
            res = json.loads(out[out.index("{"):])
        except ValueError as e:
            raise CloudError(f"iperf3 gave no JSON: {out[-400:]}") from e
        if "error" in res:
            raise CloudError(f"iperf3: {res['error']}")
        return res["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        with contextlib.suppress(Exception):
            server.kill()
            server.wait(timeout=2)


_WHOAMI_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
while True:
    c, a = s.accept()
    c.sendall(f"{a[0]}:{a[1]}\\n".encode())
    c.close()
"""
_WHOAMI_CLIENT = ("import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), "
                  "timeout=5); print(s.recv(64).decode().strip())")


def whoami_server(node, port: int) -> subprocess.Popen:
    """A TCP server in ``node`` that tells each client the address it came
    from ("ip:port"): what NAT did to it. Kill the returned process."""
    proc = node.popen(["python3", "-u", "-c", _WHOAMI_SERVER, str(port)])
    _wait(lambda: f":{port}" in node.cmd(f"ss -ltnH 'sport = :{port}'"), 5,
          f"a TCP server on port {port} in {node.name}")
    return proc


def whoami(node, ip: str, port: int) -> str:
    """Connect from ``node``: the "ip:port" the server saw, or the error text."""
    return node.cmd(f"python3 -c '{_WHOAMI_CLIENT}' {ip} {port}").strip()


def tunnel_key(vm: Host) -> int:
    """The static tunnel key naming a VM's port (used by install_static_l2_flows)."""
    return getattr(vm, "tun_key", 0)


def install_static_l2_flows(cloud: Cloud, vms: list[Host], encap: str = "vxlan",
                            base_key: int = 0x1000, table: int = 0,
                            priority: int = 100) -> dict[str, int]:
    """A static, controller-less L2 segment joining ``vms`` (the OVS baseline).

    Per VM port: unicast to a known MAC goes to the local port or, for a remote VM,
    sets tun_dst/tun_id (the key names the egress port) and outputs to the tunnel;
    broadcast/multicast is copied to every other member. Tunnel ingress delivers by
    key alone. Nothing else has a flow, so anything else is dropped (fail_mode
    secure). Returns {vm name: tunnel key}."""
    tun = {"vxlan": "vxlan_ofport", "gre": "gre_ofport"}[encap]
    keys = {}
    for i, vm in enumerate(vms):
        vm.tun_key = base_key + i
        keys[vm.vm_name] = vm.tun_key
    per_host: dict[CloudHost, list[str]] = {}

    def to(src_host: CloudHost, dst: Host) -> str:
        if dst.cloud_host is src_host:
            return f"output:{dst.ofport}"
        return (f"set_field:{dst.cloud_host.underlay_ip}->tun_dst,"
                f"set_field:{dst.tun_key}->tun_id,output:{getattr(src_host, tun)}")

    for vm in vms:
        h: CloudHost = vm.cloud_host
        flows = per_host.setdefault(h, [])
        others = [o for o in vms if o is not vm]
        for o in others:
            flows.append(f"table={table},priority={priority},in_port={vm.ofport},"
                         f"dl_dst={o.vm_mac},actions={to(h, o)}")
        bcast = ",".join(to(h, o) for o in others) or "drop"
        flows.append(f"table={table},priority={priority - 1},in_port={vm.ofport},"
                     f"dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions={bcast}")
        for host in {o.cloud_host for o in others} - {h}:
            per_host.setdefault(host, [])
        # Ingress from the tunnel, on this VM's host, by key alone.
        flows.append(f"table={table},priority={priority},in_port={getattr(h, tun)},"
                     f"tun_id={vm.tun_key},actions=output:{vm.ofport}")
    for h, flows in per_host.items():
        path = os.path.join(h.rundir, f"static-{encap}.flows")
        with open(path, "w") as f:
            f.write("\n".join(flows) + "\n")
        h.ovs_ofctl("add-flows", path)
    sync_datapath(cloud)
    return keys


def sync_datapath(cloud: Cloud) -> None:
    """Wait until every live host's datapath reflects its OpenFlow tables.

    ovs-ofctl returns once the OpenFlow table changed, but megaflows cached in
    the datapath (e.g. a drop cached while the table was empty) are revalidated
    asynchronously: without this the first packets after a change may still
    follow the old flows (seen as one lost ping under load)."""
    for h in cloud.hosts:
        if h.ovs_running:
            h.ovs_appctl("revalidator/purge", check=False)
            h.ovs_appctl("revalidator/wait", check=False)


def clear_flows(cloud: Cloud) -> None:
    for h in cloud.hosts:
        if h.ovs_running:
            h.ovs_ofctl("del-flows", check=False)
    sync_datapath(cloud)
