"""midoflow's host agents shown as Neutron network agents (``GET /v2.0/agents``).

Every host of the topology is one agent: ``alive`` is its liveness node in the
store (the agent's ephemeral registration), ``configurations`` what the agent
published there (tunnel IPs, whether OVS is connected).
"""

from __future__ import annotations

import datetime
from typing import Any

from midoflow import model
from midoflow.store import paths
from midoflow.store.base import Store

AGENT_TYPE = "Midoflow Agent"
BINARY = "midoflow-agent"


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def agent(host: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any]:
    """The Neutron agent of a host (``state``: its liveness data, None if down)."""
    state = state or {}
    started = _iso(state.get("started_at"))
    return {
        "id": host["id"], "agent_type": AGENT_TYPE, "binary": BINARY, "topic": "N/A",
        "host": host.get("name") or state.get("hostname") or host["id"],
        "alive": bool(state), "admin_state_up": True, "availability_zone": None,
        "description": host.get("description") or "",
        "configurations": {"tunnel_ips": dict(state.get("tunnel_ips") or {}),
                           "ovs_connected": bool(state.get("ovs_connected"))},
        # midoflow keeps no heartbeat: a live agent holds its session; started_at
        # is the best truth for all three
        "heartbeat_timestamp": started, "started_at": started, "created_at": started,
        "resources_synced": None,
    }


def list_agents(store: Store) -> list[dict[str, Any]]:
    return [agent(h, store.get_state(paths.host_alive(h["id"])))
            for h, _ in store.list(model.HOSTS)]


def get_agent(store: Store, agent_id: str) -> dict[str, Any] | None:
    for h, _ in store.list(model.HOSTS):
        if h["id"] == agent_id:
            return agent(h, store.get_state(paths.host_alive(h["id"])))
    return None
