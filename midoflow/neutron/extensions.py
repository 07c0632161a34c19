"""The Neutron API extensions midoflow really implements (``GET /v2.0/extensions``).

An alias is listed only when what it names works: each entry says which
collection it needs, and is listed only when that collection is registered.
Clients (openstacksdk, Horizon, Nova) decide what to show or send from this
list, so it must never claim more than is served.
"""

from __future__ import annotations

from typing import Any

UPDATED = "2026-12-01T00:00:00-00:00"

# (alias, name, description, the collection it needs or None)
# Not listed: filter-validation (unknown filters are ignored, not 400).
ALL: list[tuple[str, str, str, str | None]] = [
    ("agent", "agent", "The agent management extension: midoflow's host agents, "
     "listed and shown (admin only).", None),
    ("quotas", "Quota management support", "Expose functions for quotas management per "
     "project (read: midoflow enforces no quota, every limit is -1).", None),
    ("quota_details", "Quota details management support", "Expose functions for quotas "
     "usage statistics per project (GET /v2.0/quotas/<project>/details).", None),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id "
     "field is enabled.", None),
    ("pagination", "Pagination support", "Extension that indicates that pagination is "
     "enabled.", None),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled.",
     None),
    ("fields", "Fields support", "Extension that indicates that the fields parameter is "
     "honoured.", None),
    ("standard-attr-tag", "Tag support for resources with standard attribute", "Enables "
     "to set tag on resources with standard attribute.", "networks"),
    ("standard-attr-description", "standard-attr-description", "Extension to add "
     "descriptions to standard attributes", "networks"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display "
     "the revision number of neutron resources.", "networks"),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at "
     "fields to all Neutron resources that have Neutron standard attributes.", "networks"),
    ("external-net", "Neutron external network", "Adds external network attribute to "
     "network resource.", "networks"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource.",
     "networks"),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical "
     "networks", "networks"),
    ("port-security", "Port Security", "Provides port security", "ports"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external "
     "application", "ports"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs",
     "ports"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "Extra options configuration for "
     "DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, "
     "server-ip-address, bootfile-name); served by the agent of the port's host (IPv4).",
     "ports"),
    ("security-group", "security-group", "The security groups extension.",
     "security-groups"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between "
     "L2 Neutron networks and access to external networks via a NAT gateway.", "routers"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the "
     "router abstraction for specifying whether SNAT should occur on the external "
     "gateway", "routers"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router",
     "routers"),
    ("dvr", "Distributed Virtual Router", "Enables configuration of Distributed Virtual "
     "Routers (every midoflow router is distributed).", "routers"),
]


def extensions(collections: set[str] | frozenset[str]) -> list[dict[str, Any]]:
    """The extensions served, given the registered collections."""
    return [{"alias": alias, "name": name, "description": desc, "updated": UPDATED,
             "links": []}
            for alias, name, desc, needs in ALL if needs is None or needs in collections]


def extension(alias: str, collections: set[str] | frozenset[str]) -> dict[str, Any] | None:
    return next((e for e in extensions(collections) if e["alias"] == alias), None)
