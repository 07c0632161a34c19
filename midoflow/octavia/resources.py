"""The Octavia collections, one module each (:mod:`.loadbalancers`,
:mod:`.listeners`, :mod:`.pools`, :mod:`.members`, :mod:`.healthmonitors`,
sharing :mod:`.common`): what the WSGI application calls."""

from __future__ import annotations

from midoflow.neutron.base import Op
from midoflow.octavia.common import (
    COLLECTIONS,
    HEALTHMONITORS,
    LABEL,
    LISTENERS,
    LOADBALANCERS,
    MEMBERS,
    POOLS,
    PROVIDER,
    RESOURCE,
    find,
    pair,
    scan,
)
from midoflow.octavia.healthmonitors import (
    create_healthmonitor,
    delete_healthmonitor,
    update_healthmonitor,
    view_healthmonitor,
)
from midoflow.octavia.listeners import (
    create_listener,
    delete_listener,
    update_listener,
    view_listener,
)
from midoflow.octavia.loadbalancers import (
    create_loadbalancer,
    delete_loadbalancer,
    update_loadbalancer,
    view_loadbalancer,
)
from midoflow.octavia.members import (
    create_member,
    delete_member,
    member_in,
    update_member,
    view_member,
)
from midoflow.octavia.pools import create_pool, delete_pool, update_pool, view_pool
from midoflow.store.base import Data

__all__ = ["COLLECTIONS", "HEALTHMONITORS", "LABEL", "LISTENERS", "LOADBALANCERS", "MEMBERS",
           "POOLS", "PROVIDER", "RESOURCE", "create_healthmonitor", "create_listener",
           "create_loadbalancer", "create_member", "create_pool", "delete_healthmonitor",
           "delete_listener", "delete_loadbalancer", "delete_member", "delete_pool", "find",
           "member_in", "pair", "scan", "update_healthmonitor", "update_listener",
           "update_loadbalancer", "update_member", "update_pool", "view"]

VIEWS = {LOADBALANCERS: view_loadbalancer, LISTENERS: view_listener, POOLS: view_pool,
         MEMBERS: view_member, HEALTHMONITORS: view_healthmonitor}


def view(op: Op, coll: str, rec: Data, nat: Data) -> Data:
    """What a GET answers for one object."""
    return VIEWS[coll](op, rec, nat)
