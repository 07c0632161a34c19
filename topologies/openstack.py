"""OpenStack over a midoflow cloud: a real Keystone, midoflow's API behind
keystonemiddleware registered as the ``network`` service in Keystone's
catalog, and the UNMODIFIED ``openstack`` CLI run as admin or as a project's
user. Used by the Neutron end-to-end tests, the demo and the benchmarks.

    lab = OpenStackLab(mc, keystone, show=print).start()
    net = lab.os("p1user", "network", "create", "demo-net")   # parsed -f json
    lab.stop()

:class:`SeedWalkthrough` is the seed's Neutron DVR walk-through (external
network, project networks, a router with a gateway and two interfaces, a
security group, three ports bound to three hosts, a floating IP) as
``openstack`` commands, step by step, keeping what each returned.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# user name -> (project, password); the keystone_server fixture and the demo
# create these (admin comes from Keystone's bootstrap)
PROJECT_USERS: dict[str, tuple[str, str]] = {"p1user": ("p1", "p1pw"),
                                             "p2user": ("p2", "p2pw")}
# commands whose output `-f json` formats (the rest print nothing)
_FORMATTED = ("create", "show", "list")


class OpenStackError(RuntimeError):
    """An ``openstack`` command that exited non-zero: the command, its exit code
    and what it said."""

    def __init__(self, cmd: str, rc: int, stdout: str, stderr: str) -> None:
        super().__init__(f"`{cmd}` exited {rc}: {stderr.strip() or stdout.strip()}")
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr


def openstack_bin() -> str:
    """The ``openstack`` CLI of this Python environment (``make setup`` installs it)."""
    exe = os.path.join(os.path.dirname(sys.executable), "openstack")
    found = exe if os.path.exists(exe) else shutil.which("openstack")
    if not found:
        raise OpenStackError("openstack", 127, "", "the openstack CLI is not installed in "
                             "this environment: run `make setup` (python-openstackclient)")
    return found


class OpenStackLab:
    """midoflow's API with Keystone auth over ``mc.store``, in Keystone's catalog,
    and the openstack CLI as its users."""

    def __init__(self, mc, keystone, *, show: Callable[[str], None] | None = None,
                 users: dict[str, tuple[str, str]] | None = None) -> None:
        self.mc = mc
        self.keystone = keystone
        self.show = show
        self.users = dict(PROJECT_USERS if users is None else users)
        self.server = None
        self.envs: dict[str, dict[str, str]] = {}
        self.calls = 0  # openstack commands run
        self.cli_seconds = 0.0  # their total wall time

    def start(self) -> OpenStackLab:
        from midoflow.rest.auth import AuthConfig
        from midoflow.rest.server import serve_in_thread

        self.server = serve_in_thread(self.mc.store,
                                      auth=AuthConfig.keystone(self.keystone.service_user()))
        try:
            self.keystone.register_network_endpoint(self.server.url)
            self.keystone.register_load_balancer_endpoint(self.server.url + "/load-balancer")
            self.envs["admin"] = dict(self.keystone.admin_env())
            for user, (project, password) in self.users.items():
                self.keystone.add_project_user(project, user, password)
                self.envs[user] = dict(self.keystone.env(user, password, project))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> OpenStackLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    # ---- the CLI ------------------------------------------------------------------
    def env(self, user: str) -> dict[str, str]:
        """The process environment for ``user``'s commands (their OS_* only)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(self.envs[user])
        return env

    def _run(self, user: str, args: Sequence[str], fmt: str | None) -> tuple[str, Any]:
        typed = f"({user}) $ openstack {shlex.join(args)}"
        argv = [openstack_bin(), *args]
        if fmt is None and any(a in _FORMATTED for a in args[:4]):
            fmt = "json"
        if fmt:
            argv += ["-f", fmt]
        t = time.monotonic()
        p = subprocess.run(argv, env=self.env(user), capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
        self.calls += 1
        self.cli_seconds += time.monotonic() - t
        if p.returncode != 0:
            raise OpenStackError(typed, p.returncode, p.stdout, p.stderr)
        out: Any = p.stdout
        if fmt == "json":
            out = json.loads(p.stdout) if p.stdout.strip() else None
        elif fmt == "value":
            out = p.stdout.strip()
        return typed, out

    def os(self, user: str, *args: str, fmt: str | None = None) -> Any:
        """Run ``openstack ARGS`` as ``user``: the parsed ``-f json`` output for
        create/show/list (``fmt="value"``: the text), None for commands that
        print nothing. Raises :class:`OpenStackError` on a non-zero exit."""
        try:
            typed, out = self._run(user, args, fmt)
        except OpenStackError as e:
            self._print(e.cmd)
            raise
        self._print(typed)
        return out

    def os_fails(self, user: str, *args: str) -> OpenStackError:
        """Run a command that must fail; its error (exit code, stderr). Raises
        AssertionError, with the output, if it succeeded."""
        try:
            typed, out = self._run(user, args, None)
        except OpenStackError as e:
            self._print(e.cmd + "   # refused: " + _last_line(e.stderr))
            return e
        self._print(typed)
        raise AssertionError(f"`{typed}` succeeded but must fail; it printed {out!r}")

    def parallel(self, calls: Sequence[tuple[str, Sequence[str]]]) -> list[Any]:
        """Independent commands ``[(user, args), ...]`` at once (each CLI run costs
        about a second of start-up); their outputs in order."""
        with ThreadPoolExecutor(max_workers=min(4, len(calls)) or 1) as pool:
            futures = [pool.submit(self._run, user, list(args), None) for user, args in calls]
            results = []
            for f in futures:
                typed, out = f.result()
                self._print(typed)
                results.append(out)
        return results

    def refusals(self, calls: Sequence[tuple[str, Sequence[str]]]) -> list[OpenStackError]:
        """Independent commands that must all fail, at once; their errors in order.
        Raises AssertionError naming any that succeeded."""
        def attempt(user: str, args: Sequence[str]):
            try:
                return self._run(user, list(args), None)
            except OpenStackError as e:
                return e
        with ThreadPoolExecutor(max_workers=min(4, len(calls)) or 1) as pool:
            results = list(pool.map(lambda c: attempt(*c), calls))
        passed = []
        for r in results:
            if isinstance(r, OpenStackError):
                self._print(r.cmd + "   # refused: " + _last_line(r.stderr))
            else:
                self._print(r[0])
                passed.append(r[0])
        if passed:
            raise AssertionError(f"these must fail but succeeded: {passed}")
        return results

    def _print(self, line: str) -> None:
        if self.show is not None:
            self.show(line)

    # ---- VMs ------------------------------------------------------------------------
    def plug(self, host, name: str, port: dict, cidr: str, gateway: str | None = None,
             mtu: int | None = None, wait: bool = True, dhcp: str | None = "udhcpc"):
        """A VM for the Neutron ``port`` (as the CLI showed it) on ``host``: a
        namespace whose interface has the port's MAC and ``iface-id=<port id>``
        (what Nova's OVS plugging does), up with no address, that boots by
        DHCP (``dhcp``: "udhcpc" or "dhclient") from the port's subnet as an
        instance does: it must lease the port's fixed address in ``cidr``,
        with ``gateway`` (and ``mtu``, when given) from DHCP; ``vm.lease`` is
        what the client configured. ``dhcp=None`` (a port on a subnet without
        DHCP, like the outside world's): the harness sets the address, the
        MTU ``mtu`` and a default route via ``gateway`` itself, and waits for
        the port only when ``wait``."""
        h = self.mc.cloud.host(host)
        ip = fixed_ip(port)
        plen = cidr.split("/")[1]
        vm = self.mc.cloud.add_vm(h, name, None if dhcp else f"{ip}/{plen}",
                                  port["mac_address"], iface_id=port["id"])
        vm.port_id = port["id"]
        vm.ip = ip
        if dhcp:
            self.mc.wait_port(port["id"], h)  # the agent answers DHCP for known ports
            lease = self.mc.boot(vm, dhcp, expect=ip)
            expected = (("prefix", str(lease.get("prefix")), plen),
                        ("routers", (lease.get("routers") or [None])[0], gateway),
                        ("mtu", str(lease.get("mtu")), str(mtu) if mtu else None))
            wrong = {k: (got, want) for k, got, want in expected
                     if want is not None and got != want}
            if wrong:
                raise OpenStackError(f"{dhcp} in {name}", 1, "",
                                     f"DHCP configured {wrong} (got, wanted) for port "
                                     f"{port['id']}")
            return vm
        if mtu:
            vm.cmd(f"ip link set eth0 mtu {mtu}")
        if gateway:
            vm.cmd(f"ip route add default via {gateway}")
        if wait:
            self.mc.wait_port(port["id"], h)
        return vm


def fixed_ip(port: dict) -> str:
    """The first fixed IP address of a port as the CLI prints it in JSON."""
    ips = port["fixed_ips"]
    if isinstance(ips, str):  # an older formatter: "ip_address='..', subnet_id='..'"
        return ips.split("ip_address='")[1].split("'")[0]
    return ips[0]["ip_address"]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class SeedWalkthrough:
    """The seed's Neutron DVR walk-through as ``openstack`` commands (admin
    makes the external network; p1user the rest; the ports are bound to the
    cloud's hosts). Each step keeps the CLI's output in :attr:`out` by name."""

    EXT_CIDR, EXT_GW = "172.24.4.0/24", "172.24.4.1"
    # the internet namespace: its port's address on ext-net; it also holds the
    # external subnet's gateway address (it is the upstream router) and a
    # server address beyond it, reached through the routers' default route
    INTERNET_IP, SERVER_IP = "172.24.4.10", "198.51.100.1"
    POOL = ("172.24.4.100", "172.24.4.200")
    NETS = (("demo-net", "demo-subnet", "10.0.0.0/24", "10.0.0.1"),
            ("demo-net2", "demo-subnet2", "10.0.1.0/24", "10.0.1.1"))
    # port name, network index, address, host index (1-based)
    PORTS = (("vm1-port", 0, "10.0.0.11", 1), ("vm2-port", 0, "10.0.0.12", 2),
             ("vm3-port", 1, "10.0.1.13", 3))

    def __init__(self, lab: OpenStackLab, user: str = "p1user", vm_prefix: str = "") -> None:
        self.lab = lab
        self.user = user
        self.vm_prefix = vm_prefix  # VM names: vm1..vm3, internet, after this prefix
        self.out: dict[str, Any] = {}
        self.vms: dict[str, Any] = {}

    def hostname(self, index: int) -> str:
        """What the agent of host ``index`` registers as its name (binding:host_id)."""
        return self.lab.mc.hosts[index - 1].name

    def external_network(self) -> None:
        lab = self.lab
        self.out["ext-net"] = lab.os("admin", "network", "create", "--external",
                                     "--provider-network-type", "vxlan", "ext-net")
        self.out["ext-subnet"] = lab.os(
            "admin", "subnet", "create", "--network", "ext-net", "--subnet-range",
            self.EXT_CIDR, "--gateway", self.EXT_GW, "--no-dhcp", "--allocation-pool",
            f"start={self.POOL[0]},end={self.POOL[1]}", "ext-subnet")

    def project_networks(self) -> None:
        lab, u = self.lab, self.user
        nets = lab.parallel([(u, ("network", "create", net)) for net, _, _, _ in self.NETS])
        for (net, _, _, _), out in zip(self.NETS, nets, strict=True):
            self.out[net] = out
        subnets = lab.parallel([(u, ("subnet", "create", "--network", net, "--subnet-range",
                                     cidr, "--gateway", gw, sub))
                                for net, sub, cidr, gw in self.NETS])
        for (_, sub, _, _), out in zip(self.NETS, subnets, strict=True):
            self.out[sub] = out

    def router(self) -> None:
        lab, u = self.lab, self.user
        # `--distributed` is admin-only (Neutron's policy): admin makes the project's router
        self.out["demo-router"] = lab.os("admin", "router", "create", "--distributed",
                                         "--project", lab.users[u][0], "demo-router")
        lab.os(u, "router", "set", "--external-gateway", "ext-net", "demo-router")
        for _, sub, _, _ in self.NETS:
            lab.os(u, "router", "add", "subnet", "demo-router", sub)
        self.out["demo-router"] = lab.os(u, "router", "show", "demo-router")

    def security_group(self) -> None:
        lab, u = self.lab, self.user
        self.out["demo-sg"] = lab.os(u, "security", "group", "create", "demo-sg")
        ssh, icmp = lab.parallel([
            (u, ("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port",
                 "22", "demo-sg")),
            (u, ("security", "group", "rule", "create", "--protocol", "icmp", "demo-sg"))])
        self.out["rule-ssh"], self.out["rule-icmp"] = ssh, icmp

    def ports(self) -> None:
        """The ports created by the project's user, then bound to their hosts by
        admin (``--host`` is binding:host_id: admin's or Nova's in Neutron's
        policy, as Nova binds the port of a server a user boots)."""
        lab, u = self.lab, self.user
        calls = []
        for name, net, ip, _host in self.PORTS:
            calls.append((u, ("port", "create", "--network", self.NETS[net][0], "--fixed-ip",
                              f"subnet={self.NETS[net][1]},ip-address={ip}",
                              "--security-group", "demo-sg", name)))
        lab.parallel(calls)
        lab.parallel([("admin", ("port", "set", "--host", self.hostname(host), name))
                      for name, _, _, host in self.PORTS])
        shown = lab.parallel([("admin", ("port", "show", name)) for name, *_ in self.PORTS])
        for (name, _, _, _), out in zip(self.PORTS, shown, strict=True):
            self.out[name] = out

    def floating_ip(self) -> None:
        lab, u = self.lab, self.user
        fip = lab.os(u, "floating", "ip", "create", "ext-net")
        lab.os(u, "floating", "ip", "set", "--port", "vm1-port", fip["floating_ip_address"])
        self.out["fip"] = lab.os(u, "floating", "ip", "show", fip["id"])

    def internet_port(self) -> None:
        """The outside world's port on ext-net (admin), on host 1, without port
        security: it is not a VM of the cloud, and also answers for the
        external gateway address (a port may not take a subnet's gateway)."""
        self.out["internet-port"] = self.lab.os(
            "admin", "port", "create", "--network", "ext-net", "--fixed-ip",
            f"ip-address={self.INTERNET_IP}", "--no-security-group",
            "--disable-port-security", "--host", self.hostname(1), "internet-port")

    def plug_vms(self) -> None:
        """Plug vm1..vm3, booted by DHCP from their subnets (address, gateway
        and the network's MTU), and the internet namespace (configured by
        hand: ext-subnet has no DHCP) into their hosts."""
        mtu = self.out["demo-net"].get("mtu")
        for name, net, _ip, host in self.PORTS:
            _, _, cidr, gw = self.NETS[net]
            vm = name.split("-")[0]
            self.vms[vm] = self.lab.plug(host, self.vm_prefix + vm, self.out[name], cidr, gw,
                                         mtu)
        inet = self.lab.plug(1, self.vm_prefix + "internet", self.out["internet-port"],
                             self.EXT_CIDR, dhcp=None)
        inet.cmd(f"ip addr add {self.EXT_GW}/24 dev eth0; "
                 f"ip addr add {self.SERVER_IP}/32 dev lo")
        self.vms["internet"] = inet

    def build(self) -> SeedWalkthrough:
        """Every step in order (the demo's path)."""
        self.external_network()
        self.project_networks()
        self.router()
        self.security_group()
        self.ports()
        self.floating_ip()
        self.internet_port()
        self.plug_vms()
        return self
