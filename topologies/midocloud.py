"""A whole midoflow cloud on this machine: ZooKeeper, the REST API, cloud
hosts (each its own OVS in a network namespace) with their agents, VMs.

Used by the demo, the end-to-end tests and the benchmarks. Everything it
starts is stopped by :meth:`MidoCloud.stop` (also on exceptions and at exit).
Several clouds can share one ZooKeeper: each uses its own chroot.

The stores are protected as in production (issue 11): each cloud makes a
random ZooKeeper digest secret, writes the store credentials file (mode 0600)
into its workdir with it (and with the Cassandra login given, for agents
whose flow state is in Cassandra), creates its chroot with the digest ACL,
and gives the file to every agent (``credentials_file``) and the secret to
the API's store. ``store_auth=False`` runs open stores.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import netaddr
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError
from kazoo.security import make_digest_acl

from midoflow.cli.client import ApiError, Client
from midoflow.store import paths
from midoflow.store.credentials import Login, StoreCredentials, generate_password, write_credentials
from midoflow.store.zookeeper import ZkStore
from topologies.cloud import Cloud, CloudHost
from topologies.lifecycle import StartStop, wait_for

HOST_NS = uuid.UUID("6d69646f-666c-6f77-0000-000000000000")


def host_uuid(name: str) -> str:
    """A stable host id for a cloud host name."""
    return str(uuid.uuid5(HOST_NS, name))


def _agent_bin() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "midoflow-agent")
    return exe if os.path.exists(exe) else shutil.which("midoflow-agent") or exe


def _free_port() -> int:
    """A loopback TCP port free now (for an agent's metrics)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



class MidoCloud(StartStop):
    def __init__(
        self,
        n_hosts: int = 3,
        zk_hosts: str | None = None,
        subnet: str = "10.10.0.0/24",
        prefix: str | None = None,
        tunnel: str = "vxlan",
        progress: Callable[[str], None] | None = None,
        agent_args: tuple[str, ...] = (),
        flow_state: str = "local",
        agent_options: dict | None = None,
        store_auth: bool = True,
        cassandra_credentials: Login | tuple[str, str] | None = None,
    ) -> None:
        """``store_auth``: protect the cloud's ZooKeeper chroot with a digest
        secret of its own (module doc); ``cassandra_credentials``: the login
        the agents use for a ``cassandra:`` flow state."""
        self.n_hosts = n_hosts
        self.subnet = subnet
        self.prefix = prefix
        self.tunnel = tunnel
        self.progress = progress or (lambda _msg: None)
        self.agent_args = agent_args
        self.flow_state = flow_state  # the agents' flow_state option
        # more agent config options, for all hosts ({"zk_session_timeout": 3})
        # or per host name ({"h1": {...}}) under the key "hosts"
        self.agent_options = dict(agent_options or {})
        self.zk_hosts = zk_hosts
        self.zk = None  # our own server, when none was given
        self.cloud: Cloud | None = None
        self.store: ZkStore | None = None
        self.api_server = None
        self.api: Client | None = None
        self.hosts: list[CloudHost] = []
        self.host_ids: dict[str, str] = {}
        self.metrics_ports: dict[str, int] = {}  # host name -> its agent's metrics port
        self.zone_id: str | None = None
        self.workdir = tempfile.mkdtemp(prefix="midocloud-")
        self.credentials: StoreCredentials | None = None
        if store_auth or cassandra_credentials:
            self.credentials = write_credentials(
                os.path.join(self.workdir, "store-credentials"),
                zookeeper=Login("midoflow", generate_password()) if store_auth else None,
                cassandra=cassandra_credentials)
        self._stopped = False
        atexit.register(self.stop)

    # ---- lifecycle ----------------------------------------------------------
    def _new_chroot(self, zk: KazooClient, login) -> str:
        """Create this cloud's chroot, one no other cloud has used: ``/<prefix>``, or
        that with a random suffix when a cloud that stopped earlier left it in a
        shared ZooKeeper (it may be protected by another secret)."""
        acl = [make_digest_acl(*login, all=True)] if login else None
        chroot = f"/{self.cloud.prefix}"
        for _ in range(16):
            try:
                zk.create(chroot, acl=acl, makepath=True)
                return chroot
            except NodeExistsError:
                chroot = f"/{self.cloud.prefix}-{secrets.token_hex(3)}"
        raise RuntimeError(f"ZooKeeper at {self.zk_hosts}: no free chroot /{self.cloud.prefix}-*")

    def start(self) -> MidoCloud:
        t0 = time.monotonic()
        if self.zk_hosts is None:
            from midoflow.devenv.zookeeper import ZooKeeperServer

            self.progress("starting ZooKeeper")
            self.zk = ZooKeeperServer(os.path.join(self.workdir, "zk")).start()
            self.zk_hosts = self.zk.hosts
        self.progress(f"building {self.n_hosts} cloud hosts (one OVS each, userspace datapath)")
        self.cloud = Cloud(n_hosts=self.n_hosts, subnet=self.subnet, prefix=self.prefix)
        self.cloud.start()
        self.hosts = self.cloud.hosts
        login = self.credentials.zookeeper if self.credentials else None
        zk = KazooClient(hosts=self.zk_hosts, timeout=10,
                         auth_data=[("digest", f"{login.user}:{login.password}")] if login
                         else None)
        zk.start(timeout=15)
        try:
            chroot = self._new_chroot(zk, login)
        finally:
            zk.stop()
            zk.close()
        self.zk_spec = self.zk_hosts + chroot
        self.zk_auth = tuple(login) if login else None  # for more ZkStores on zk_spec
        self.store = ZkStore(self.zk_spec, auth=self.zk_auth)
        from midoflow.rest.server import serve_in_thread

        self.api_server = serve_in_thread(self.store)
        self.api = Client(self.api_server.url)
        self.progress(f"REST API at {self.api_server.url}; starting one agent per host")
        for h in self.hosts:
            self.start_agent(h)
        self.wait_agents()
        self.zone_id = self.api.request("POST", "/tunnel_zones", {
            "name": f"{self.cloud.prefix}-{self.tunnel}", "type": self.tunnel})["id"]
        for h in self.hosts:
            self.api.request("POST", f"/tunnel_zones/{self.zone_id}/members",
                             {"host_id": self.host_ids[h.name], "ip": h.underlay_ip})
        self.progress(f"cloud up in {time.monotonic() - t0:.1f} s")
        return self

    def start_agent(self, h: CloudHost) -> None:
        hid = self.host_ids.setdefault(h.name, host_uuid(h.name))
        opts = {k: v for k, v in self.agent_options.items() if k != "hosts"}
        per_host = self.agent_options.get("hosts") or {}
        opts.update(per_host.get(h.name) or per_host.get(f"h{h.index}") or {})
        if self.credentials is not None:
            opts.setdefault("credentials_file", self.credentials.path)
        # Prometheus metrics (midoflow.apps.metrics): self.metrics_url(h)
        opts.setdefault("metrics_port", self.metrics_ports.setdefault(h.name, _free_port()))
        cfg = self.cloud.write_agent_config(h, zookeeper=self.zk_spec, host_id=hid,
                                            flow_state=self.flow_state, **opts)
        cmd = [_agent_bin(), "--config", cfg, *self.agent_args]
        self.cloud.start_agent(h, cmd)

    def metrics_url(self, h: CloudHost) -> str:
        """Where the host's agent serves its Prometheus metrics."""
        return f"http://127.0.0.1:{self.metrics_ports[self.cloud.host(h).name]}/metrics"

    def kill_agent(self, h: CloudHost, sig: int = 9) -> None:
        self.cloud.kill_agent(h, sig=sig)

    def agent_alive(self, h: CloudHost) -> dict | None:
        return self.store.get_state(paths.host_alive(self.host_ids[h.name]))

    def wait_agents(self, hosts=None, timeout: float = 60) -> None:
        for h in hosts or self.hosts:
            wait_for(lambda h=h: (self.agent_alive(h) or {}).get("ovs_connected"), timeout,
                     f"the agent of {h.name} to connect to its OVS "
                     f"(log: {os.path.join(h.rundir, 'agent.log')})")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.cloud is not None:
            self.cloud.stop()
            # gateway agents' BGP namespaces (a killed agent leaves its own)
            from pyroute2 import netns

            from midoflow.bgp.names import namespace_name

            for hid in self.host_ids.values():
                ns = namespace_name(hid)
                if ns in netns.listnetns():
                    with contextlib.suppress(OSError):
                        netns.remove(ns)
        if self.api_server is not None:
            self.api_server.stop()
        if self.store is not None:
            try:
                self.store.close()
            except Exception:
                pass
        if self.zk is not None:
            self.zk.stop()
        if not os.environ.get("MIDOFLOW_KEEP_RUNDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- topology -------------------------------------------------------------
    def bridge(self, name: str, tenant: str = "") -> str:
        return self.api.request("POST", "/bridges", {"name": name, "tenant_id": tenant})["id"]

    def port(self, bridge_id: str, name: str = "") -> str:
        return self.api.request("POST", f"/bridges/{bridge_id}/ports",
                                {"name": name} if name else {})["id"]

    def port_host(self, port_id: str) -> str | None:
        s = self.store.get_state(paths.port_active(port_id))
        return s.get("host_id") if s else None

    def vm(self, host, bridge_id: str, name: str, ip: str, mac: str, wait: bool = True,
           dhcp: str | bool | None = None, boot: bool = True, **port):
        """A VM on ``host``: a new port on the bridge, bound by OVSDB iface-id.

        ``dhcp``: None boots the VM by DHCP with udhcpc, as a cloud's
        instance boots: when the bridge has no DHCP subnet containing ``ip``
        one is made first (``ip``'s network, no gateway: the test adds the
        routes it wants); a disabled subnet, or ``wait=False`` (the port may
        not be bound yet), configures it statically. "udhcpc" or "dhclient"
        boots it with that client; False configures it statically (address
        and the network's MTU set by the harness). A VM booted by DHCP has
        a port with ``fixed_ips=[ip]`` and ``mac``, no static address, route
        or MTU, and ``vm.lease`` (what the client configured, see
        ``topologies.dhcp_clients``); its port is waited for whatever
        ``wait`` says (the agent answers DHCP only for a port bound to it).
        ``boot=False``: such a VM is left unconfigured, for the caller's own
        client. ``port``: more fields of the port (instance_id, tenant_id,
        hostname, extra_dhcp_opts)."""
        h = self.cloud.host(host)
        client = self._dhcp_client(bridge_id, ip, dhcp if wait or dhcp is not None else False)
        if not client:
            pid = self.api.request("POST", f"/bridges/{bridge_id}/ports",
                                   {"name": name, **port})["id"] if port \
                else self.port(bridge_id, name)
            vm = self.cloud.add_vm(h, name, ip, mac, iface_id=pid)
            vm.port_id = pid
            if wait:
                self.wait_port(pid, h)
            return vm
        addr = ip.split("/")[0]
        pid = self.api.request("POST", f"/bridges/{bridge_id}/ports", {
            "name": name, "mac": mac, "fixed_ips": [addr], **port})["id"]
        vm = self.cloud.add_vm(h, name, None, mac, iface_id=pid)
        vm.port_id = pid
        self.wait_port(pid, h)
        if boot:
            self.boot(vm, client, expect=addr)
        return vm

    def boot(self, vm, client: str = "udhcpc", expect: str | None = None,
             timeout: float = 10) -> dict:
        """Run the DHCP ``client`` ("udhcpc" or "dhclient") in ``vm``: what it
        configured (``vm.lease``; ``vm.vm_ip`` becomes "address/prefix").
        Raises TimeoutError, naming the agent's log, when no lease came, and
        RuntimeError when the lease is not ``expect``."""
        from topologies import dhcp_clients

        run = {"udhcpc": dhcp_clients.udhcpc, "dhclient": dhcp_clients.dhclient}[client]
        try:
            lease = run(vm, timeout=int(timeout))
        except dhcp_clients.DhcpClientError as e:
            log = os.path.join(vm.cloud_host.rundir, "agent.log")
            raise TimeoutError(f"{client} in {vm.vm_name} got no lease in {timeout:g} s "
                               f"(the agent's log: {log}): {e}") from e
        if expect and lease["ip"] != expect:
            raise RuntimeError(f"{client} in {vm.vm_name} leased {lease['ip']}, not its "
                               f"port's fixed address {expect}")
        vm.lease = lease
        vm.vm_ip = f"{lease['ip']}/{lease['prefix']}"
        return lease

    def _dhcp_client(self, bridge_id: str, ip: str, dhcp: str | bool | None) -> str | None:
        if dhcp is False:
            return None
        if dhcp not in (None, True, "udhcpc", "dhclient"):
            raise ValueError(f"dhcp={dhcp!r}: use None, False, 'udhcpc' or 'dhclient'")
        if dhcp is None:
            addr = netaddr.IPAddress(ip.split("/")[0])
            covering = [s for s in self.dhcp_subnets(bridge_id)
                        if addr in netaddr.IPNetwork(s["cidr"])]
            if not covering:
                net = netaddr.IPNetwork(ip if "/" in ip else f"{ip}/24")
                if net.prefixlen > 30:  # no room for a DHCP subnet: static
                    return None
                try:
                    self.dhcp_subnet(bridge_id, str(net.cidr))
                except ApiError as e:  # made meanwhile by another VM's creation
                    if e.status != 409:
                        raise
            elif not any(s.get("enabled", True) for s in covering):
                return None
        return "udhcpc" if dhcp in (None, True) else dhcp

    # ---- DHCP -------------------------------------------------------------------
    def dhcp_subnet(self, bridge_id: str, cidr: str, gateway: str | None = None,
                    dns: tuple[str, ...] = (), routes: tuple[tuple[str, str], ...] = (),
                    mtu: int | None = None, **kw) -> str:
        """DHCP served by the agents on the bridge for ``cidr``: router
        ``gateway``, DNS servers ``dns``, host routes ``routes`` ((destination,
        nexthop) pairs); ``mtu`` sets the bridge's (the network's) MTU, which
        DHCP announces. ``kw``: more fields (domain_name, lease_time,
        server_ip, enabled). Returns the subnet's id."""
        if mtu is not None:
            self.api.request("PUT", f"/bridges/{bridge_id}", {"mtu": mtu})
        body = {"cidr": cidr, "dns_servers": list(dns),
                "host_routes": [{"destination": d, "nexthop": n} for d, n in routes], **kw}
        if gateway:
            body["gateway_ip"] = gateway
        return self.api.request("POST", f"/bridges/{bridge_id}/dhcp_subnets", body)["id"]

    def dhcp_subnets(self, bridge_id: str) -> list[dict]:
        """The bridge's DHCP subnets ([] from an API without them)."""
        try:
            return self.api.request("GET", f"/bridges/{bridge_id}/dhcp_subnets") or []
        except ApiError as e:
            if e.status == 404:  # no such collection (or bridge: the port POST says)
                return []
            raise

    def wait_port(self, port_id: str, h: CloudHost, timeout: float = 20) -> None:
        hid = self.host_ids[h.name]
        wait_for(lambda: self.port_host(port_id) == hid, timeout,
                 f"port {port_id} to become active on {h.name}")

    # ---- routers ----------------------------------------------------------------
    def router(self, name: str, tenant: str = "") -> str:
        return self.api.request("POST", "/routers", {"name": name, "tenant_id": tenant})["id"]

    def router_port(self, router_id: str, cidr: str, mac: str | None = None,
                    interior: bool = True, name: str = "") -> str:
        """A port of the router with address ``cidr`` ("192.168.1.1/24")."""
        ip, plen = cidr.split("/")
        body = {"ip_address": ip, "prefix_len": int(plen),
                "type": "interior" if interior else "exterior"}
        if mac:
            body["mac"] = mac
        if name:
            body["name"] = name
        return self.api.request("POST", f"/routers/{router_id}/ports", body)["id"]

    def link(self, port_a: str, port_b: str) -> None:
        self.api.request("PUT", f"/ports/{port_a}/link", {"peer_id": port_b})

    def attach(self, router_id: str, bridge_id: str, cidr: str, mac: str | None = None) -> str:
        """Plug the router into the bridge with address ``cidr``: a router port
        linked to a new interior bridge port. Returns the router port."""
        rp = self.router_port(router_id, cidr, mac)
        bp = self.api.request("POST", f"/bridges/{bridge_id}/ports", {"type": "interior"})["id"]
        self.link(rp, bp)
        return rp

    def route(self, router_id: str, dst: str, port: str | None = None,
              gateway: str | None = None, **kw) -> str:
        body = {"dst_cidr": dst, **kw}
        if port:
            body["next_hop_port"] = port
        if gateway:
            body["next_hop_gateway"] = gateway
        return self.api.request("POST", f"/routers/{router_id}/routes", body)["id"]

    def external(self, host, router_port_id: str, name: str, ip: str, mac: str,
                 routes: tuple[tuple[str, str], ...] = ()):
        """The outside world: a namespace no one configured as a VM, wired to
        ``host``'s OVS as the interface the router's exterior port
        ``router_port_id`` is bound to (an uplink). ``routes``: (prefix, via)
        static routes of the outside host, e.g. the floating-IP range."""
        h = self.cloud.host(host)
        ext = self.cloud.add_vm(h, name, ip, mac, iface_id=router_port_id)
        ext.port_id = router_port_id
        for prefix, via in routes:
            ext.cmd(f"ip route add {prefix} via {via}")
        self.wait_port(router_port_id, h)
        return ext

    def chain(self, name: str, rules: list[dict] = (), tenant: str = "") -> str:
        """A chain with ``rules`` (bodies of POST /chains/{id}/rules) in order."""
        cid = self.api.request("POST", "/chains", {"name": name, "tenant_id": tenant})["id"]
        for r in rules:
            self.api.request("POST", f"/chains/{cid}/rules", r)
        return cid
