"""An OVN 23.03 lab on the same kind of cloud midoflow's benchmarks use.

The cloud is :class:`topologies.cloud.Cloud` unchanged (each cloud host a
network namespace with its own userspace OVS, ``br-int`` and ``br-phy`` with
the underlay IP, VMs as Mininet hosts, a Linux-bridge underlay); OVN is then
laid over it instead of midoflow's agents:

* the Northbound and Southbound ``ovsdb-server`` and ``ovn-northd`` run in the
  root namespace, on unix sockets in the cloud's own run directory
  (``<basedir>/ovn``): the namespaces share the file system, so every host's
  ``ovn-controller`` reaches the SB database there;
* per cloud host, ``br-int`` is handed to OVN (the cloud's controller, its
  flow-based ``vxlan0``/``gre0`` ports and its OpenFlow 1.3-only setting are
  removed: ovn-controller speaks OpenFlow 1.5 and makes its own tunnels), the
  host's ``Open_vSwitch`` row gets ``system-id``, ``ovn-remote``,
  ``ovn-encap-type`` (geneve by default) and ``ovn-encap-ip`` (the underlay
  IP), and ``ovn-controller`` runs inside the host's namespace against the
  host's own OVS database, with ``OVS_RUNDIR`` pointing at the host's run
  directory (where ``br-int.mgmt`` is) and a private ``OVN_RUNDIR``;
* the logical topology is made with ``ovn-nbctl``: :meth:`OvnCloud.router`
  builds logical switches on one distributed logical router, and a VM is
  bound by ``external_ids:iface-id=<logical switch port>`` on its veth.

Debian's ``ovn-common`` needs ``/var/run/openvswitch`` and ``/var/run/ovn`` to
exist even when every path is given (its daemons exit otherwise): they are
created first. Every name comes from the cloud's prefix (``mfl`` + 4 hex
digits), every daemon is started by this module and stopped by
:meth:`OvnCloud.stop` (on exceptions and at exit too), and the run directory
is removed with the cloud's. Typical use::

    with OvnCloud(n_hosts=3) as oc:
        oc.router("r0", {"ls1": "10.0.1.1/24", "ls2": "10.0.2.1/24"})
        a = oc.vm(1, "ls1", "a", "10.0.1.10/24", "02:00:00:00:01:0a")
        b = oc.vm(2, "ls2", "b", "10.0.2.20/24", "02:00:00:00:02:14")
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Callable

from mininet.node import Host

from topologies.cloud import Cloud, CloudError, CloudHost
from topologies.lifecycle import StartStop, wait_for

NB_SCHEMA = "/usr/share/ovn/ovn-nb.ovsschema"
SB_SCHEMA = "/usr/share/ovn/ovn-sb.ovsschema"
# Geneve with OVN's option (8 bytes) costs 58 bytes over the inner frame's
# IP packet; the underlay's MTU is 1500.
OVN_VM_MTU = 1400


class OvnError(CloudError):
    pass


def _run(cmd: list[str], env: dict | None = None, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError as e:
        raise OvnError(f"{cmd[0]} not found: install OVN (apt-get install -y ovn-central "
                       f"ovn-host, or scripts/setup.sh)") from e
    except subprocess.TimeoutExpired as e:
        raise OvnError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise OvnError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _wait(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    return wait_for(pred, timeout, what, interval, OvnError)


def _kill_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


class OvnCloud(StartStop):
    """``n_hosts`` cloud hosts (own OVS each) run by OVN instead of midoflow.

    ``encap``: "geneve" (default) or "vxlan"; ``subnet``/``prefix`` as for
    :class:`~topologies.cloud.Cloud`; ``progress``: a callable for one-line
    progress messages.
    """

    def __init__(self, n_hosts: int = 3, subnet: str = "10.10.0.0/24",
                 prefix: str | None = None, encap: str = "geneve",
                 progress: Callable[[str], None] | None = None) -> None:
        if encap not in ("geneve", "vxlan"):
            raise OvnError(f"encap={encap!r}: use 'geneve' or 'vxlan'")
        self.n_hosts = n_hosts
        self.encap = encap
        self.progress = progress or (lambda _msg: None)
        self.cloud = Cloud(n_hosts=n_hosts, subnet=subnet, prefix=prefix)
        self.prefix = self.cloud.prefix
        self.dir = os.path.join(self.cloud.basedir, "ovn")
        self.hosts: list[CloudHost] = []
        self.vms: dict[str, Host] = {}
        self._pidfiles: list[str] = []
        self._stopped = False
        self.build_seconds: float | None = None
        atexit.register(self.stop)

    # ---- paths and commands -------------------------------------------------------
    @property
    def nb(self) -> str:
        return f"unix:{os.path.join(self.dir, 'nb.sock')}"

    @property
    def sb(self) -> str:
        return f"unix:{os.path.join(self.dir, 'sb.sock')}"

    def _env(self, rundir: str | None = None) -> dict:
        d = rundir or self.dir
        return {**os.environ, "OVN_RUNDIR": d, "OVN_LOGDIR": d, "OVN_DBDIR": d,
                "OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d}

    def nbctl(self, *args: str, wait: str | None = None) -> str:
        """``ovn-nbctl`` on this lab's NB database; ``wait``: "sb" or "hv"."""
        w = [f"--wait={wait}"] if wait else []
        return _run(["ovn-nbctl", f"--db={self.nb}", "--timeout=20", *w, *args],
                    env=self._env())

    def sbctl(self, *args: str) -> str:
        return _run(["ovn-sbctl", f"--db={self.sb}", "--timeout=20", *args], env=self._env())

    def controller_rundir(self, h: CloudHost) -> str:
        return os.path.join(h.rundir, "ovn")

    def controller_log(self, h) -> str:
        return os.path.join(self.controller_rundir(self.cloud.host(h)), "ovn-controller.log")

    # ---- life cycle ---------------------------------------------------------------
    def start(self) -> OvnCloud:
        t0 = time.monotonic()
        for d in ("/var/run/openvswitch", "/var/run/ovn"):
            os.makedirs(d, exist_ok=True)
        self.progress(f"building {self.n_hosts} cloud hosts (one OVS each, userspace datapath)")
        self.cloud.start()
        self.hosts = self.cloud.hosts
        os.makedirs(self.dir, exist_ok=True)
        self.progress("starting the OVN NB and SB databases and ovn-northd")
        self._start_central()
        self.progress(f"starting ovn-controller on every host ({self.encap})")
        for h in self.hosts:
            self._start_controller(h)
        _wait(self._chassis_ready, 30,
              f"{self.n_hosts} chassis in the SB database (logs: "
              f"{self.controller_log(self.hosts[0])})", interval=0.1)
        # every chassis has made its tunnels to the others
        for h in self.hosts:
            _wait(lambda h=h: self._tunnels(h) >= self.n_hosts - 1, 30,
                  f"{h.name}'s {self.encap} tunnels to the other chassis "
                  f"(log: {self.controller_log(h)})", interval=0.1)
        self.build_seconds = time.monotonic() - t0
        self.progress(f"OVN lab up in {self.build_seconds:.1f} s")
        return self

    def _daemon_ovsdb(self, name: str, schema: str) -> None:
        d = self.dir
        db = os.path.join(d, f"{name}.db")
        _run(["ovsdb-tool", "create", db, schema])
        pid = os.path.join(d, f"{name}.pid")
        _run(["ovsdb-server", db, f"--remote=punix:{d}/{name}.sock", f"--pidfile={pid}",
              f"--log-file={d}/{name}.log", f"--unixctl={d}/{name}.ctl", "--detach",
              "--no-chdir"], env=self._env())
        self._pidfiles.append(pid)

    def _start_central(self) -> None:
        self._daemon_ovsdb("nb", NB_SCHEMA)
        self._daemon_ovsdb("sb", SB_SCHEMA)
        d = self.dir
        pid = os.path.join(d, "ovn-northd.pid")
        _run(["ovn-northd", f"--ovnnb-db={self.nb}", f"--ovnsb-db={self.sb}",
              f"--pidfile={pid}", f"--log-file={d}/ovn-northd.log",
              f"--unixctl={d}/ovn-northd.ctl", "--detach", "--no-chdir"], env=self._env())
        self._pidfiles.append(pid)
        self.nbctl("--no-wait", "init")
        self.nbctl("sync", wait="sb")  # northd is up and wrote the SB

    def _start_controller(self, h: CloudHost) -> None:
        # br-int becomes OVN's: no midoflow controller, no flow-based tunnels,
        # every OpenFlow version (ovn-controller speaks 1.5).
        h.ovs_vsctl("del-controller", "br-int",
                    "--", "--if-exists", "del-port", "br-int", "vxlan0",
                    "--", "--if-exists", "del-port", "br-int", "gre0",
                    "--", "clear", "Bridge", "br-int", "protocols")
        h.ovs_ofctl("del-flows", check=False)
        h.ovs_vsctl("set", "Open_vSwitch", ".",
                    f"external_ids:system-id={h.name}",
                    f"external_ids:hostname={h.name}",
                    f"external_ids:ovn-remote=\"{self.sb}\"",
                    f"external_ids:ovn-encap-type={self.encap}",
                    f"external_ids:ovn-encap-ip={h.underlay_ip}",
                    "external_ids:ovn-bridge=br-int",
                    "external_ids:ovn-bridge-datapath-type=netdev",
                    "external_ids:ovn-remote-probe-interval=0",
                    "external_ids:ovn-openflow-probe-interval=0")
        rd = self.controller_rundir(h)
        os.makedirs(rd, exist_ok=True)
        pid = os.path.join(rd, "ovn-controller.pid")
        env = {**self._env(rd), "OVS_RUNDIR": h.rundir}
        _run(["mnexec", "-a", str(h.pid), "ovn-controller", h.db, f"--pidfile={pid}",
              f"--log-file={rd}/ovn-controller.log", "--detach", "--no-chdir"], env=env)
        self._pidfiles.append(pid)

    def _chassis_ready(self) -> bool:
        names = self.sbctl("--bare", "--columns=name", "list", "Chassis").split()
        return all(h.name in names for h in self.hosts)

    def _tunnels(self, h: CloudHost) -> int:
        out = h.ovs_vsctl("--bare", "--columns=type", "find", "Interface",
                          f"type={self.encap}", check=False)
        return len(out.split())

    def stop(self) -> None:
        """Kill every daemon this lab started and tear the cloud down; safe twice."""
        if self._stopped:
            return
        self._stopped = True
        for p in reversed(self._pidfiles):
            _kill_pidfile(p)
        with contextlib.suppress(Exception):
            self.cloud.stop()  # the namespaces, their OVS, the run directory
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    # ---- logical topology -----------------------------------------------------------
    def router(self, name: str, networks: dict[str, str]) -> dict[str, str]:
        """A distributed logical router ``name`` with one logical switch per
        entry of ``networks`` ({switch name: router address "A.B.C.D/len"}).
        Returns {switch: router port MAC}."""
        self.nbctl("lr-add", name)
        macs = {}
        for i, (ls, cidr) in enumerate(networks.items(), start=1):
            ipaddress.ip_interface(cidr)  # a clear error for a bad address
            mac = f"0a:00:00:00:{len(name) % 256:02x}:{i:02x}"
            lrp, rsp = f"{name}-{ls}", f"{ls}-{name}"
            self.nbctl("ls-add", ls,
                       "--", "lrp-add", name, lrp, mac, cidr,
                       "--", "lsp-add", ls, rsp,
                       "--", "lsp-set-type", rsp, "router",
                       "--", "lsp-set-addresses", rsp, "router",
                       "--", "lsp-set-options", rsp, f"router-port={lrp}")
            macs[ls] = mac
        self.nbctl("sync", wait="hv")
        return macs

    def lsp_add(self, ls: str, name: str, mac: str, ip: str, wait: str | None = None) -> None:
        """A logical switch port with addresses "MAC IP" (one ovn-nbctl call)."""
        self.nbctl("lsp-add", ls, name, "--", "lsp-set-addresses", name,
                   f"{mac} {ip.split('/')[0]}", wait=wait)

    def bind(self, vm: Host, lsp: str) -> None:
        """Bind ``vm``'s veth to logical switch port ``lsp`` (what Nova's VIF
        plugging does): ``external_ids:iface-id`` on the interface."""
        vm.cloud_host.ovs_vsctl("set", "Interface", vm.tap, f"external_ids:iface-id={lsp}")
        vm.iface_id = lsp

    def port_up(self, lsp: str) -> bool:
        return self.nbctl("get", "Logical_Switch_Port", lsp, "up").strip() == "true"

    def plug(self, host, name: str, ip: str, mac: str, gateway: str | None = None,
             gateway_mac: str | None = None) -> Host:
        """A VM on ``host`` whose veth is in br-int but bound to nothing yet
        (MTU ``OVN_VM_MTU``, default route via ``gateway``, a permanent
        neighbour entry for it when ``gateway_mac`` is given)."""
        vm = self.cloud.add_vm(host, name, ip, mac, iface_id=None)
        vm.cmd(f"ip link set eth0 mtu {OVN_VM_MTU}")
        vm.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
               "net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.eth0.disable_ipv6=1")
        if gateway:
            vm.cmd(f"ip route add default via {gateway}")
            if gateway_mac:
                vm.cmd(f"ip neigh replace {gateway} lladdr {gateway_mac} dev eth0 "
                       f"nud permanent")
        self.vms[name] = vm
        return vm

    def vm(self, host, ls: str, name: str, ip: str, mac: str, gateway: str | None = None,
           gateway_mac: str | None = None, wait: bool = True) -> Host:
        """A VM on logical switch ``ls``: its logical port ``<prefix>-<name>``,
        the veth plugged and bound; ``wait``: until OVN reports the port up
        and every chassis has its flows."""
        if ip is not None and "/" not in ip:
            ip += "/24"
        lsp = f"{self.prefix}-{name}"
        self.lsp_add(ls, lsp, mac, ip)
        vm = self.plug(host, name, ip, mac, gateway, gateway_mac)
        self.bind(vm, lsp)
        if wait:
            _wait(lambda: self.port_up(lsp), 20,
                  f"logical port {lsp} up (log: {self.controller_log(vm.cloud_host)})")
            self.nbctl("sync", wait="hv")
        return vm

    def security_group(self, name: str, lsps: list[str], ingress_tcp: tuple[int, ...] = (),
                       wait: bool = True) -> None:
        """A Neutron-style security group on logical ports ``lsps``, as
        networking-ovn writes it: a port group with stateful ACLs (OVN's
        ``allow-related``: conntrack in the datapath) letting out all IPv4,
        letting in TCP to ``ingress_tcp`` and replies, dropping all other IP.
        ``name``: letters, digits and underscores (a port group name)."""
        pg = f"@{name}"
        acls = [("to-lport", 1002, f"outport == {pg} && ip4 && tcp.dst == {p}",
                 "allow-related") for p in ingress_tcp]
        acls += [("to-lport", 1001, f"outport == {pg} && ip", "drop"),
                 ("from-lport", 1002, f"inport == {pg} && ip4", "allow-related"),
                 ("from-lport", 1001, f"inport == {pg} && ip", "drop")]
        args = ["pg-add", name, *lsps]
        for direction, prio, match, action in acls:
            args += ["--", "acl-add", name, direction, str(prio), match, action]
        self.nbctl(*args, wait="hv" if wait else None)

    def purge_datapaths(self) -> None:
        """Flush every host's datapath flow cache (megaflows), synchronously."""
        for h in self.hosts:
            h.ovs_appctl("revalidator/purge", check=False)


def main() -> int:
    """``python -m topologies.ovncloud``: the lab with a router, two VMs on
    different hosts and networks, a routed ping; Enter (or Ctrl-C) tears it down."""
    import sys

    from topologies.cloud import ping

    if os.geteuid() != 0:
        print("ovncloud: needs root (network namespaces, OVS)", file=sys.stderr)
        return 2
    try:
        with OvnCloud(n_hosts=3, progress=lambda m: print(f"[ovncloud] {m}", flush=True)) as oc:
            macs = oc.router("r0", {"ls1": "10.0.1.1/24", "ls2": "10.0.2.1/24"})
            a = oc.vm(1, "ls1", "a", "10.0.1.10/24", "02:00:00:00:01:0a", "10.0.1.1",
                      macs["ls1"])
            oc.vm(2, "ls2", "b", "10.0.2.20/24", "02:00:00:00:02:14", "10.0.2.1", macs["ls2"])
            sent, got = ping(a, "10.0.2.20", count=3)
            print(f"[ovncloud] a (10.0.1.10, {oc.hosts[0].name}) -> b (10.0.2.20, "
                  f"{oc.hosts[1].name}): {got}/{sent} replies")
            print(f"[ovncloud] ovn-nbctl --db={oc.nb} show; ovn-sbctl --db={oc.sb} show; "
                  f"a VM's shell: mnexec -a {a.pid} bash")
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input("[ovncloud] Enter tears the lab down ")
            return 0 if got == sent else 1
    except OvnError as e:
        print(f"ovncloud: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
