"""Real DHCP clients in a VM's namespace, with OUR configuration script:
ISC ``dhclient`` and busybox ``udhcpc`` (Debian packages).

The script (written into a temp dir per VM, run by the client inside the
VM's netns) configures eth0's address, MTU, default route and classless
(RFC 3442) or host routes in that netns only, and writes what it got as
JSON into the temp dir. Lease, pid and config files live there too:
nothing outside it is written (Mininet hosts share the filesystem, so the
Debian scripts, which rewrite /etc/resolv.conf, are never used).

``dhclient(vm)`` / ``udhcpc(vm)`` return what was configured:
``{"ip", "prefix", "mtu", "routers", "routes", "dns", "domain", "lease", "server",
"seconds", "output"}`` (``seconds``: from the client's start to the configured
address; ``output``: the client's log), or raise
``DhcpClientError`` with the client's output. ``release(vm)`` ends it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time

CLIENT_DIR_PREFIX = "mfl-dhcp-"

_SCRIPT = r'''#!{python}
"""midoflow's DHCP client script: configure eth0 in this netns, record it."""
import json, os, subprocess, sys, time

IP = {ip!r}
OUT = {out!r}
DEV = os.environ.get("interface") or "eth0"


def ip(*args):
    subprocess.run([IP, *args], check=False, capture_output=True)


def prefix_of(mask):
    return sum(bin(int(x)).count("1") for x in mask.split("."))


def rfc3442(text):
    """dhclient's rfc3442 option as decimal octets: (cidr, router) pairs."""
    b = [int(x) for x in text.replace(",", " ").split()]
    out, i = [], 0
    while i < len(b):
        plen = b[i]; n = (plen + 7) // 8
        dst = b[i + 1:i + 1 + n] + [0] * (4 - n)
        gw = b[i + 1 + n:i + 5 + n]
        out.append(("%d.%d.%d.%d/%d" % (*dst, plen), "%d.%d.%d.%d" % tuple(gw)))
        i += 5 + n
    return out


def gather():
    e = os.environ
    if len(sys.argv) > 1 and sys.argv[1] in ("bound", "renew"):  # udhcpc
        r = e.get("staticroutes", "").split()
        return {{"ip": e.get("ip"), "prefix": int(e.get("mask") or prefix_of(e["subnet"])),
                "mtu": int(e["mtu"]) if e.get("mtu") else None,
                "routers": e.get("router", "").split(),
                "routes": [list(p) for p in zip(r[::2], r[1::2])],
                "dns": e.get("dns", "").split(), "domain": e.get("domain", ""),
                "lease": int(e.get("lease") or 0), "server": e.get("serverid")}}
    if e.get("reason") in ("BOUND", "RENEW", "REBIND", "REBOOT"):  # dhclient
        return {{"ip": e.get("new_ip_address"), "prefix": prefix_of(e["new_subnet_mask"]),
                "mtu": int(e["new_interface_mtu"]) if e.get("new_interface_mtu") else None,
                "routers": e.get("new_routers", "").split(),
                "routes": [list(p) for p in rfc3442(
                    e.get("new_rfc3442_classless_static_routes", ""))],
                "dns": e.get("new_domain_name_servers", "").split(),
                "domain": e.get("new_domain_name", ""),
                "lease": int(e.get("new_dhcp_lease_time") or 0),
                "server": e.get("new_dhcp_server_identifier")}}
    return None


def main():
    got = gather()
    event = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("reason", "")
    with open(os.path.join(OUT, "events"), "a") as f:
        f.write(event + "\n")
    if event in ("deconfig", "PREINIT"):
        ip("link", "set", DEV, "up")
        return
    if event in ("EXPIRE", "FAIL", "RELEASE", "STOP", "leasefail", "nak"):
        ip("addr", "flush", "dev", DEV)
        return
    if got is None:
        return
    if got["mtu"]:
        ip("link", "set", DEV, "mtu", str(got["mtu"]))
    ip("addr", "flush", "dev", DEV)
    ip("addr", "add", "%s/%d" % (got["ip"], got["prefix"]), "broadcast", "+", "dev", DEV)
    ip("link", "set", DEV, "up")
    routes = got["routes"]
    if not routes and got["routers"]:
        routes = [["0.0.0.0/0", got["routers"][0]]]
    for dst, gw in routes:
        dst = "default" if dst.endswith("/0") else dst
        if gw == "0.0.0.0":
            ip("route", "replace", dst, "dev", DEV, "scope", "link")
        else:
            ip("route", "replace", dst, "via", gw, "dev", DEV)
    got["configured_at"] = time.time()
    tmp = os.path.join(OUT, "lease.json.tmp")
    with open(tmp, "w") as f:
        json.dump(got, f)
    os.replace(tmp, os.path.join(OUT, "lease.json"))


main()
'''

_DHCLIENT_CONF = """\
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
timeout {timeout};
retry 1;
initial-interval 1;
backoff-cutoff 2;
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,
        host-name, interface-mtu, rfc3442-classless-static-routes;
"""


class DhcpClientError(RuntimeError):
    pass


def _workdir(vm) -> str:
    d = getattr(vm, "dhcp_dir", None)
    if d is None or not os.path.isdir(d):
        d = tempfile.mkdtemp(prefix=CLIENT_DIR_PREFIX)
        vm.dhcp_dir = d
    script = os.path.join(d, "script")
    ip_bin = shutil.which("ip") or "/usr/sbin/ip"
    with open(script, "w") as f:
        f.write(_SCRIPT.format(python=sys.executable, ip=ip_bin, out=d))
    os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR)
    lease = os.path.join(d, "lease.json")
    if os.path.exists(lease):
        os.unlink(lease)
    return d


def _result(vm, d: str, t0: float, out: str) -> dict:
    path = os.path.join(d, "lease.json")
    if not os.path.exists(path):
        raise DhcpClientError(f"{vm.name}: the DHCP client configured nothing; its output:\n"
                              f"{out.strip()}")
    with open(path) as f:
        got = json.load(f)
    got["seconds"] = round(got.pop("configured_at") - t0, 3)
    got["output"] = out  # the client's own log (dhclient -v: DHCPNAK and the like)
    return got


def dhclient(vm, timeout: int = 10, lease_file: str | None = None) -> dict:
    """ISC dhclient once (``-1``) on the VM's eth0; it stays running (to
    renew) until ``release(vm)``. ``lease_file``: a dhclient.leases text to
    start from (a client that remembers a lease: INIT-REBOOT)."""
    d = _workdir(vm)
    conf = os.path.join(d, "dhclient.conf")
    with open(conf, "w") as f:
        f.write(_DHCLIENT_CONF.format(timeout=timeout))
    leases = os.path.join(d, "dhclient.leases")
    if lease_file is not None:
        with open(leases, "w") as f:
            f.write(lease_file)
    vm.dhcp_client = "dhclient"
    t0 = time.time()
    out = vm.cmd(f"dhclient -1 -v -cf {conf} -sf {d}/script -pf {d}/dhclient.pid "
                 f"-lf {leases} eth0 2>&1")
    return _result(vm, d, t0, out)


def udhcpc(vm, timeout: int = 10) -> dict:
    """busybox udhcpc in the foreground, quitting once bound (``-q``)."""
    d = _workdir(vm)
    vm.dhcp_client = "udhcpc"
    tries = max(1, timeout)
    t0 = time.time()
    out = vm.cmd(f"udhcpc -i eth0 -s {d}/script -O mtu -O staticroutes -n -q -f "
                 f"-t {tries} -T 1 -A 1 2>&1")
    return _result(vm, d, t0, out)


def release(vm) -> None:
    """Stop the VM's client (dhclient: DHCPRELEASE, then it exits), flush
    eth0 and remove the temp dir."""
    d = getattr(vm, "dhcp_dir", None)
    if d is None:
        return
    if getattr(vm, "dhcp_client", None) == "dhclient":
        vm.cmd(f"dhclient -r -cf {d}/dhclient.conf -sf {d}/script -pf {d}/dhclient.pid "
               f"-lf {d}/dhclient.leases eth0 >/dev/null 2>&1")
        pidfile = os.path.join(d, "dhclient.pid")
        if os.path.exists(pidfile):  # -r normally ends it; never leave one behind
            with open(pidfile) as f:
                pid = f.read().strip()
            if pid.isdigit():
                vm.cmd(f"kill {pid} 2>/dev/null")
    vm.cmd("ip addr flush dev eth0")
    shutil.rmtree(d, ignore_errors=True)
    vm.dhcp_dir = None
