"""Protection counters (issue 9): what the per-port bounds refused, the
malformed frames by reason, and when the host state is worth publishing
again; plus the token bucket that rate-limits the ICMP errors a router sends."""

from __future__ import annotations

import logging

from midoflow.agent.clock import Clock
from midoflow.agent.config import AgentConfig

LOG = logging.getLogger(__name__)

# Host state (with the protection counters) is published at most this often
# when only counters changed.
PROTECTION_PUBLISH_SECONDS = 2.0
# The protection report names at most this many ports per limit (the worst).
PROTECTION_REPORT_PORTS = 20


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock  # read monotonic: a rate
        self.tokens: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        now = self.clock.mono()
        tokens, last = self.tokens.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self.tokens[key] = (tokens - 1.0 if ok else tokens, now)
        return ok


def _worst(per: dict[str, int]) -> dict[str, int]:
    top = sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(top[:PROTECTION_REPORT_PORTS])


class Protection:
    """Counters of refusals, shared with the core's ``stats``."""

    def __init__(self, cfg: AgentConfig, stats: dict, clock: Clock) -> None:
        self.cfg, self.stats, self.clock = cfg, stats, clock
        # What the per-port bounds refused: by kind, then by port.
        self.refused: dict[str, dict[str, int]] = {"mac_limit": {}, "flow_limit": {}}
        self.malformed_reasons: dict[str, int] = {}
        self._published_report: dict | None = None
        self._published_at = float("-inf")

    def note_malformed(self, reason: str) -> None:
        """A frame the parser refused (dropped: no flow, no state)."""
        self.stats["malformed"] += 1
        self.malformed_reasons[reason] = self.malformed_reasons.get(reason, 0) + 1

    def refuse(self, kind: str, port_id: str) -> None:
        """``kind``: mac_limit or flow_limit; logged once per port."""
        per = self.refused[kind]
        if port_id not in per:
            limit = self.cfg.max_macs_per_port if kind == "mac_limit" \
                else self.cfg.max_flows_per_port
            LOG.warning("port %s reached its %s (%d): %s", port_id, kind.replace("_", " "),
                        limit, "frames from further new source MACs are dropped"
                        if kind == "mac_limit" else "further flows are not installed")
        per[port_id] = per.get(port_id, 0) + 1
        self.stats[kind] = self.stats.get(kind, 0) + 1

    def report(self) -> dict:
        """For the host state (``midoflow status``): the worst ports of each
        limit, the malformed frames by reason, fragments dropped,
        packet-ins the meters dropped, and the DHCP server's counters."""
        metered = self.stats.get("metered_drops")
        storms = self.stats.get("storm_blocked")
        c = self.cfg
        return {
            "limits": {"max_macs_per_port": c.max_macs_per_port,
                       "max_flows_per_port": c.max_flows_per_port,
                       "packet_in_rate": c.packet_in_rate,
                       "packet_in_burst": c.packet_in_burst,
                       "uplink_packet_in_rate": c.uplink_packet_in_rate,
                       "storm_factor": c.storm_factor,
                       "storm_seconds": c.storm_seconds,
                       "packet_in_queue": c.packet_in_queue},
            "mac_limit": _worst(self.refused["mac_limit"]),
            "flow_limit": _worst(self.refused["flow_limit"]),
            "malformed": dict(sorted(self.malformed_reasons.items())),
            "fragments_dropped": self.stats.get("fragments_dropped", 0),
            "metered_drops": _worst(metered) if isinstance(metered, dict) else {},
            "storm_blocked": _worst(storms) if isinstance(storms, dict) else {},
            # packet-ins the agent's fair queue dropped, oldest first (fairqueue.py)
            "queue_drops": _worst(self.stats.get("queue_drops") or {}),
            # the agent's DHCP server (midoflow.agent.dhcp): answers and
            # refusals by kind (offer, ack, nak, decline, malformed...)
            "dhcp": {k[5:]: n for k, n in sorted(self.stats.items())
                     if k.startswith("dhcp_") and isinstance(n, int)},
        }

    def changed(self) -> bool:
        """Whether the report changed since last said so (at most every
        PROTECTION_PUBLISH_SECONDS): then the host state is published."""
        now = self.clock.mono()
        if now - self._published_at < PROTECTION_PUBLISH_SECONDS:
            return False
        report = self.report()
        if report == self._published_report:
            return False
        self._published_report, self._published_at = report, now
        return True
