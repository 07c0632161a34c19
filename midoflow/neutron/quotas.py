"""Quota reads (``GET /v2.0/quotas...``). midoflow enforces no quota, so every
limit is -1 (unlimited): the truth, as Neutron shows an unlimited quota. The
used counts come from the stored Neutron objects."""

from __future__ import annotations

from collections import Counter
from typing import Any

from midoflow.store.base import Store

# Neutron quota resource name -> collection
RESOURCES = {"network": "networks", "subnet": "subnets", "port": "ports",
             "router": "routers", "floatingip": "floatingips",
             "security_group": "security-groups",
             "security_group_rule": "security-group-rules"}
UNLIMITED = -1


def limits() -> dict[str, int]:
    return dict.fromkeys(RESOURCES, UNLIMITED)


def used(store: Store, project_id: str) -> dict[str, int]:
    """How many objects of each resource ``project_id`` owns."""
    out = {}
    for res, coll in RESOURCES.items():
        counts = Counter(o.get("project_id") for o, _ in store.list(f"neutron.{coll}"))
        out[res] = counts.get(project_id, 0)
    return out


def details(store: Store, project_id: str) -> dict[str, Any]:
    return {res: {"limit": UNLIMITED, "used": n, "reserved": 0}
            for res, n in used(store, project_id).items()}
