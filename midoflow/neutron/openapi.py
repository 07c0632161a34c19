"""The OpenAPI 3 description of the Neutron subset served (``openapi.yaml``).

Generated: the attributes each collection accepts come from its module's
``CREATE``/``UPDATE`` declarations, their types from :data:`TYPES`, so the
document follows the code. ``python -m midoflow.neutron.openapi`` rewrites the
checked-in file; a unit test fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

PATH = Path(__file__).with_name("openapi.yaml")

UUID = {"type": "string", "format": "uuid"}
STR = {"type": "string", "maxLength": 255}
NSTR = {"type": ["string", "null"], "maxLength": 255}
BOOL = {"type": "boolean"}
NINT = {"type": ["integer", "null"]}
IP = {"type": "string"}
NIP = {"type": ["string", "null"]}
HOP = {"type": "object", "properties": {"destination": IP, "nexthop": IP},
       "required": ["destination", "nexthop"], "additionalProperties": False}
TYPES: dict[str, dict[str, Any]] = {
    "name": STR, "description": STR, "project_id": STR, "tenant_id": STR,
    "admin_state_up": BOOL, "shared": BOOL, "router:external": BOOL, "is_default": BOOL,
    "port_security_enabled": BOOL, "enable_dhcp": BOOL, "distributed": BOOL, "ha": BOOL,
    "stateful": BOOL, "use_default_subnetpool": BOOL,
    "mtu": {"type": "integer"},
    "provider:network_type": {"type": "string", "enum": ["vxlan", "gre", "local", "flat",
                                                         "vlan"]},
    "provider:physical_network": NSTR, "provider:segmentation_id": NINT,
    "availability_zone_hints": {"type": "array", "items": STR},
    "network_id": UUID, "subnet_id": UUID, "port_id": {"type": ["string", "null"]},
    "floating_network_id": UUID, "security_group_id": UUID,
    "remote_group_id": {"type": ["string", "null"]}, "subnetpool_id": NSTR,
    "segment_id": NSTR, "flavor_id": NSTR,
    "cidr": IP, "ip_version": {"type": "integer", "enum": [4, 6]}, "gateway_ip": NIP,
    "allocation_pools": {"type": "array", "items": {
        "type": "object", "properties": {"start": IP, "end": IP},
        "required": ["start", "end"], "additionalProperties": False}},
    "dns_nameservers": {"type": "array", "items": IP},
    "host_routes": {"type": "array", "items": HOP},
    "routes": {"type": "array", "items": HOP},
    "ipv6_address_mode": NSTR, "ipv6_ra_mode": NSTR,
    "service_types": {"type": "array", "items": STR},
    "mac_address": {"type": "string"},
    "fixed_ips": {"type": "array", "items": {
        "type": "object", "properties": {"ip_address": IP, "subnet_id": UUID},
        "additionalProperties": False}},
    "device_id": STR, "device_owner": STR,
    "security_groups": {"type": "array", "items": UUID},
    "allowed_address_pairs": {"type": "array", "items": {
        "type": "object", "properties": {"ip_address": IP, "mac_address": {"type": "string"}},
        "required": ["ip_address"], "additionalProperties": False}},
    "binding:host_id": STR, "binding:vnic_type": {"type": "string"},
    "binding:profile": {"type": "object"},
    "extra_dhcp_opts": {"type": "array", "items": {"type": "object"}},
    "external_gateway_info": {"type": ["object", "null"], "properties": {
        "network_id": UUID, "enable_snat": BOOL,
        "external_fixed_ips": {"type": "array", "items": {
            "type": "object", "properties": {"ip_address": IP, "subnet_id": UUID},
            "additionalProperties": False}}},
        "additionalProperties": False},
    "floating_ip_address": IP, "fixed_ip_address": NIP,
    "direction": {"type": "string", "enum": ["ingress", "egress"]},
    "ethertype": {"type": "string", "enum": ["IPv4", "IPv6"]},
    "protocol": {"type": ["string", "integer", "null"]},
    "port_range_min": NINT, "port_range_max": NINT, "remote_ip_prefix": NIP,
    "remote_address_group_id": NSTR,
}
# collection -> (resource, module, create attrs, update attrs, required on create)
_DECL = {
    "networks": ("network", "networks", "CREATE", "UPDATE", ()),
    "subnets": ("subnet", "subnets", "CREATE", "UPDATE", ("network_id", "cidr",
                                                           "ip_version")),
    "ports": ("port", "ports", "CREATE", "UPDATE", ("network_id",)),
    "routers": ("router", "routers", "CREATE", "UPDATE", ()),
    "floatingips": ("floatingip", "floatingips", "CREATE", "UPDATE",
                    ("floating_network_id",)),
    "security-groups": ("security_group", "security_groups", "SG_CREATE", "SG_UPDATE", ()),
    "security-group-rules": ("security_group_rule", "security_groups", "RULE_CREATE", None,
                             ("security_group_id", "direction")),
}
ACTIONS = {"routers": {
    "add_router_interface": {"subnet_id": UUID, "port_id": UUID},
    "remove_router_interface": {"subnet_id": UUID, "port_id": UUID},
    "add_extraroutes": {"router": {"type": "object", "properties": {
        "routes": TYPES["routes"]}, "required": ["routes"], "additionalProperties": False}},
    "remove_extraroutes": {"router": {"type": "object", "properties": {
        "routes": TYPES["routes"]}, "required": ["routes"], "additionalProperties": False}},
}}
ERROR = {"type": "object", "required": ["NeutronError"], "properties": {"NeutronError": {
    "type": "object", "required": ["type", "message", "detail"],
    "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                   "detail": {"type": "string"}}}}}
ERRORS = (400, 401, 403, 404, 409, 413, 503)
LIST_PARAMS = [
    {"name": "fields", "in": "query", "schema": {"type": "string"}},
    {"name": "sort_key", "in": "query", "schema": {"type": "string"}},
    {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "marker", "in": "query", "schema": {"type": "string"}},
    {"name": "page_reverse", "in": "query", "schema": {"type": "boolean"}},
    {"name": "name", "in": "query", "schema": {"type": "string"}},
    {"name": "tags", "in": "query", "schema": {"type": "string"}},
    {"name": "tags-any", "in": "query", "schema": {"type": "string"}},
    {"name": "not-tags", "in": "query", "schema": {"type": "string"}},
    {"name": "not-tags-any", "in": "query", "schema": {"type": "string"}},
]
TAG = {"type": "string", "minLength": 1, "maxLength": 60, "pattern": "^[^,/]+$"}


def _attrs(names: tuple[str, ...]) -> dict[str, Any]:
    return {n: TYPES.get(n, {}) for n in names}


def _wrapped(key: str, inner: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "additionalProperties": False,
            "properties": {key: inner}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(ok: int, schema: dict[str, Any] | None, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {str(ok): {"description": "success"}}
    if schema is not None:
        out[str(ok)]["content"] = {"application/json": {"schema": schema}}
    for e in errors or ERRORS:
        out[str(e)] = {"$ref": "#/components/responses/Error"}
    return out


def _id_param(name: str = "id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _collection(paths: dict[str, Any], coll: str) -> None:
    import importlib

    res, modname, create, update, required = _DECL[coll]
    mod = importlib.import_module(f"midoflow.neutron.{modname}")
    key = coll.replace("-", "_")
    obj = {"type": "object", "properties": {"id": {"type": "string"}}}  # fields= may drop id
    one = _wrapped(res, obj)
    many = {"type": "object", "required": [key], "properties": {
        key: {"type": "array", "items": obj},
        f"{key}_links": {"type": "array", "items": {"type": "object"}}}}
    create_attrs = {"type": "object", "additionalProperties": False,
                    "properties": _attrs(getattr(mod, create)), "required": list(required)}
    paths[f"/v2.0/{coll}"] = {
        "get": {"operationId": f"list_{key}", "parameters": LIST_PARAMS,
                "responses": _responses(200, many)},
        "post": {"operationId": f"create_{res}", "requestBody": _body(_wrapped(
            res, create_attrs)), "responses": _responses(201, one)},
    }
    item: dict[str, Any] = {
        "parameters": [_id_param()],
        "get": {"operationId": f"show_{res}", "parameters": [
            {"name": "fields", "in": "query", "schema": {"type": "string"}}],
                "responses": _responses(200, one)},
        "delete": {"operationId": f"delete_{res}", "responses": _responses(204, None)},
    }
    if update:
        item["put"] = {"operationId": f"update_{res}", "requestBody": _body(_wrapped(
            res, {"type": "object", "additionalProperties": False,
                  "properties": _attrs(getattr(mod, update))})),
            "responses": _responses(200, one)}
    paths[f"/v2.0/{coll}/{{id}}"] = item
    tags = {"type": "object", "required": ["tags"], "additionalProperties": False,
            "properties": {"tags": {"type": "array", "items": TAG}}}
    paths[f"/v2.0/{coll}/{{id}}/tags"] = {
        "parameters": [_id_param()],
        "get": {"operationId": f"list_{res}_tags", "responses": _responses(200, tags)},
        "put": {"operationId": f"replace_{res}_tags", "requestBody": _body(tags),
                "responses": _responses(200, tags)},
        "delete": {"operationId": f"delete_{res}_tags", "responses": _responses(204, None)},
    }
    tag_param = {"name": "tag", "in": "path", "required": True, "schema": TAG}
    paths[f"/v2.0/{coll}/{{id}}/tags/{{tag}}"] = {
        "parameters": [_id_param(), tag_param],
        "get": {"operationId": f"check_{res}_tag", "responses": _responses(204, None)},
        "put": {"operationId": f"add_{res}_tag", "responses": _responses(201, None)},
        "delete": {"operationId": f"remove_{res}_tag", "responses": _responses(204, None)},
    }
    for action, props in ACTIONS.get(coll, {}).items():
        paths[f"/v2.0/{coll}/{{id}}/{action}"] = {
            "parameters": [_id_param()],
            "put": {"operationId": f"{action}", "requestBody": _body({
                "type": "object", "additionalProperties": False, "properties": props}),
                "responses": _responses(200, {"type": "object"})}}


def document() -> dict[str, Any]:
    any_obj = {"type": "object"}
    paths: dict[str, Any] = {
        "/": {"get": {"operationId": "versions", "security": [],
                      "responses": _responses(200, {"type": "object", "required": ["versions"]},
                                              404)}},
        "/v2.0": {"get": {"operationId": "resources", "responses": _responses(
            200, {"type": "object", "required": ["resources"]}, 401)}},
        "/v2.0/extensions": {"get": {"operationId": "list_extensions", "responses":
                                     _responses(200, {"type": "object",
                                                      "required": ["extensions"]}, 401)}},
        "/v2.0/extensions/{alias}": {"parameters": [_id_param("alias")], "get": {
            "operationId": "show_extension", "responses": _responses(
                200, _wrapped("extension", any_obj), 401, 404)}},
        "/v2.0/agents": {"get": {"operationId": "list_agents", "parameters": LIST_PARAMS,
                                 "responses": _responses(200, {
                                     "type": "object", "required": ["agents"]})}},
        "/v2.0/agents/{id}": {"parameters": [_id_param()], "get": {
            "operationId": "show_agent", "responses": _responses(200, _wrapped("agent",
                                                                             any_obj))}},
        "/v2.0/quotas": {"get": {"operationId": "list_quotas", "responses": _responses(
            200, {"type": "object", "required": ["quotas"]}, 401, 403)}},
        "/v2.0/quotas/tenant": {"get": {"operationId": "quota_tenant", "responses":
                                        _responses(200, _wrapped("tenant", any_obj), 401)}},
        "/v2.0/quotas/{project_id}": {"parameters": [_id_param("project_id")], "get": {
            "operationId": "show_quota", "responses": _responses(
                200, _wrapped("quota", any_obj), 401, 403)}},
        "/v2.0/quotas/{project_id}/details": {"parameters": [_id_param("project_id")], "get": {
            "operationId": "show_quota_details", "responses": _responses(
                200, _wrapped("quota", any_obj), 401, 403)}},
    }
    for coll in _DECL:
        _collection(paths, coll)
    return {
        "openapi": "3.1.0",
        "info": {"title": "midoflow: Neutron Networking API v2.0 (subset)",
                 "version": "2.0",
                 "description": "The Neutron API served by midoflow (midoflow/neutron/api.py)."
                                " Generated by midoflow/neutron/openapi.py."},
        "components": {
            "schemas": {"Error": ERROR},
            "responses": {"Error": {"description": "an error, in Neutron's format",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/Error"}}}}},
            "securitySchemes": {"keystone": {"type": "apiKey", "in": "header",
                                             "name": "X-Auth-Token"}}},
        "security": [{"keystone": []}],
        "paths": paths,
    }


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    return yaml.dump(document(), Dumper=_NoAliases, sort_keys=False, width=100)


def main() -> int:
    PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
