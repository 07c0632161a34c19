"""What the simulation may read of the world: a read-only topology view."""

from __future__ import annotations

from typing import Protocol

from midoflow.model import Bridge, Port


class TopologyView(Protocol):
    def port(self, port_id: str) -> Port | None: ...

    def bridge(self, bridge_id: str) -> Bridge | None: ...

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        """The port a MAC was learned on, from the replicated MAC table."""
        ...


class DictView:
    """A TopologyView over plain dicts: unit tests, tracing, benchmarks."""

    def __init__(
        self,
        ports: dict[str, Port] | None = None,
        bridges: dict[str, Bridge] | None = None,
        macs: dict[tuple[str, str], str] | None = None,
    ) -> None:
        self.ports = ports or {}
        self.bridges = bridges or {}
        self.macs = macs or {}

    def port(self, port_id: str) -> Port | None:
        return self.ports.get(port_id)

    def bridge(self, bridge_id: str) -> Bridge | None:
        return self.bridges.get(bridge_id)

    def mac_port(self, bridge_id: str, mac: str) -> str | None:
        return self.macs.get((bridge_id, mac))
