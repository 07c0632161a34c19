"""Parsing the store endpoints an agent is configured with (no driver imported)."""

from __future__ import annotations


def parse_cassandra(spec: str) -> tuple[list[str], int, str] | None:
    """"cassandra:h1,h2:9042/ks" -> (["h1", "h2"], 9042, "ks"); None if malformed."""
    rest = spec.removeprefix("cassandra:")
    rest, _, keyspace = rest.partition("/")
    hosts, port = rest, 9042
    if ":" in rest:
        hosts, _, p = rest.rpartition(":")
        if not p.isdigit() or not 0 < int(p) < 65536:
            return None
        port = int(p)
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    if not names or (keyspace and not keyspace.replace("_", "").isalnum()):
        return None
    return names, port, keyspace or "midoflow"
