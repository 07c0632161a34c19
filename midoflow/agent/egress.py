"""Where a simulation's egress ports are: a local ofport, or a tunnel to the
host the port is active on; and which hosts get a connection's flow state."""

from __future__ import annotations

from midoflow.agent.bindings import Bindings
from midoflow.agent.cache import TopologyCache, host_tag
from midoflow.agent.decision import Decision, Emit, Output, Tunnel
from midoflow.model import STATE_TUNNEL_KEY, TUNNEL_GRE, conntrack_enforced
from midoflow.sim.result import Result, port_tag


class Egress:
    def __init__(self, host_id: str, cache: TopologyCache, ports: Bindings) -> None:
        self.host_id, self.cache, self.ports = host_id, cache, ports

    def _tunnel_to(self, host: str) -> tuple[str, int] | None:
        """(remote tunnel IP, local tunnel ofport) to reach ``host``."""
        route = self.cache.tunnel_to(self.host_id, host)
        if route is None:
            return None
        ofport = self.ports.tunnel_ofports.get("gre" if route[1] == TUNNEL_GRE else "vxlan")
        return None if ofport is None else (route[0], ofport)

    def translate(self, result: Result) -> Decision:
        """The datapath actions (and the tags of where they lead) of a result."""
        actions: list[Output | Tunnel] = []
        tags = set(result.tags)
        bound = self.ports.bound
        for pid in result.out_ports:
            tags.add(port_tag(pid))
            port = self.cache.ports.get(pid)
            if pid in bound:
                ofport = bound[pid]
                ct = port is not None and self.cache.sg_conntrack \
                    and conntrack_enforced(port, "outbound")
                actions.append(Output(ofport, ofport if ct else 0))
                continue
            host = self.cache.port_hosts.get(pid)
            if port is None or host is None:
                continue  # not bound anywhere: its activation invalidates this flow
            tags.add(host_tag(host))
            if host == self.host_id:
                continue  # stale state of ours: the binding table is the truth here
            via = self._tunnel_to(host)
            if via is not None:
                actions.append(Tunnel(port.tunnel_key, *via))
        return Decision(actions, result.match_fields, frozenset(tags), result,
                        rewrites=result.rewrites if actions else ())

    def state_ports(self, result: Result, in_port: str | None = None) -> set[str]:
        """Ports whose hosts may see this connection again: the egress ports,
        and every member of a stateful port group that the ingress or an
        egress port is in (gateway uplinks: with ECMP upstream, the next
        packet of either direction may arrive at another gateway)."""
        ports = set(result.out_ports)
        seen = ports | ({in_port} if in_port else set())
        for g in self.cache.port_groups.values():
            if g.stateful and seen & set(g.port_ids):
                ports |= set(g.port_ids)
        return ports

    def to_every_host(self, frame: bytes) -> list[Emit]:
        """A flow-state message for every other host alive."""
        return self._to(frame, self.cache.host_state)

    def to_hosts(self, frame: bytes, ports) -> list[Emit]:
        """A flow-state message for the hosts of these ports (not this one)."""
        return self._to(frame, {self.cache.port_hosts.get(p) for p in ports})

    def _to(self, frame: bytes, hosts) -> list[Emit]:
        out = []
        for host in sorted(h for h in hosts if h and h != self.host_id):
            via = self._tunnel_to(host)
            if via is not None:
                out.append(Emit(frame, [Tunnel(STATE_TUNNEL_KEY, *via)]))
        return out
