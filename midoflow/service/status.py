"""The cloud's status (store health, each host's liveness and limits) and packet traces."""

from __future__ import annotations

from typing import Any

from midoflow.service import trace as tracing
from midoflow.service import validate as v
from midoflow.service.context import Ctx
from midoflow.service.hosts import Hosts
from midoflow.store import paths
from midoflow.store.base import Data


class Status:
    def __init__(self, ctx: Ctx, hosts: Hosts) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.hosts = hosts

    def trace(self, body: Any) -> Data:
        """Simulate a packet through the topology as it is now; changes nothing."""
        return tracing.trace(self.store, body)

    def status(self) -> Data:
        hosts = []
        seen = set()
        for h in self.hosts.list_hosts():
            seen.add(h["id"])
            hosts.append(status_host(h["id"], h["name"], h["state"]))
        for hid in self.store.list_state(paths.HOSTS_ALIVE):
            if hid not in seen and v.UUID_RE.fullmatch(hid):
                state = self.store.get_state(paths.host_alive(hid))
                if state is not None:
                    hosts.append(status_host(hid, str(state.get("hostname") or ""), state))
        return {"store": self.store.health(), "hosts": hosts}


def status_host(hid: str, name: str, state: Data | None) -> Data:
    state = state if isinstance(state, dict) else None
    ips = (state or {}).get("tunnel_ips") or {}
    return {
        "id": hid,
        "name": name,
        "alive": state is not None,
        "ovs_connected": bool((state or {}).get("ovs_connected", False)),
        "tunnel_ips": {str(k): str(val) for k, val in ips.items()} if isinstance(ips, dict)
        else {},
        # what the agent's per-port bounds refused (issue 9), as it published it
        "protection": prot if isinstance(prot := (state or {}).get("protection"), dict) else {},
    }
