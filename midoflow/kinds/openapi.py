"""The OpenAPI document, generated from the kind declarations.

Each kind gives its schemas (``<Kind>``, ``<Kind>Create``, ``<Kind>Update``) and
its CRUD paths (collection, item, and the sub-collection under each parent).
What is not CRUD (the index, status, trace, bindings, links, members, learned
routes, shared components) is ``openapi_static.yaml`` beside this module.

Regenerate the checked-in copy after changing a declaration::

    python -m midoflow.kinds.openapi > midoflow/rest/openapi.yaml
"""

from __future__ import annotations

import copy
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from midoflow.kinds import KINDS
from midoflow.kinds import base as b

STATIC = Path(__file__).with_name("openapi_static.yaml")
MAC_PATTERN = "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
INTERFACE_PATTERN = r"^[^\s/]{1,15}$"
CIDR_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"
UUID = {"type": "string", "format": "uuid"}
IPV4 = {"type": "string", "format": "ipv4"}
VERSION = {"$ref": "#/components/schemas/Version"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _resp(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def field_schema(f: b.Field, request: bool = False, create: bool = False) -> dict[str, Any]:
    """A field's schema: as answered, or as a request body gives it."""
    s: dict[str, Any]
    given = f.input_schema if request and f.input_schema else f.schema if not request or \
        f.type == b.OBJECT else None
    if given is not None:
        s = copy.deepcopy(given)
    elif f.type == b.STRING:
        s = {"type": "string", "maxLength": f.max_len}
        if f.min_len:
            s["minLength"] = f.min_len
    elif f.type == b.BOOLEAN:
        s = {"type": "boolean"}
    elif f.type in (b.INTEGER, b.ASN):
        lo, hi = (1, 4294967295) if f.type == b.ASN else (f.lo, f.hi)
        s = {"type": "integer"}
        if lo is not None:
            s["minimum"] = lo
        if hi is not None:
            s["maximum"] = hi
    elif f.type == b.ENUM:
        s = {"type": "string", "enum": list(f.choices)}
    elif f.type == b.UUID:
        s = dict(UUID)
    elif f.type == b.IPV4:
        s = dict(IPV4)
    elif f.type == b.CIDR:
        s = {"type": "string", "pattern": CIDR_PATTERN}
    elif f.type == b.INTERFACE:
        s = {"type": "string", "pattern": INTERFACE_PATTERN}
    elif f.type == b.MAC:
        s = {"type": "string", "pattern": MAC_PATTERN}
    elif f.type == b.UUID_LIST:
        s = {"type": "array", "items": dict(UUID)}
    else:  # IPV4_LIST
        s = {"type": "array", "items": dict(IPV4)}
    if f.nullable and "$ref" not in s:
        s["nullable"] = True
    if create and f.has_default and f.type not in (b.UUID_LIST, b.IPV4_LIST, b.OBJECT) \
            and f.default is not None:
        s["default"] = f.default
    if f.description and "$ref" not in s:
        s["description"] = f.description
    return s


def schemas(k: b.Kind) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    props = {f.name: field_schema(f) for f in k.fields}
    props["version"] = VERSION
    out[k.schema] = {"type": "object", "additionalProperties": False,
                     "required": list(k.output) + ["version"], "properties": props}
    if k.top_create or k.parents:
        fields = [f for f in k.fields if f.create and not f.computed] + list(k.extra_create)
        create: dict[str, Any] = {"type": "object", "additionalProperties": False}
        required = [f.name for f in fields if f.required]
        if required:
            create["required"] = required
        if k.create_note:
            create["description"] = k.create_note
        create["properties"] = {f.name: field_schema(f, True, True) for f in fields}
        out[k.schema + "Create"] = create
    if k.updatable:
        upd: dict[str, Any] = {"type": "object", "additionalProperties": False}
        if k.update_note:
            upd["description"] = k.update_note
        props = {f.name: field_schema(f, True) for f in k.fields}
        props.update({f.name: field_schema(f, True) for f in k.extra_update})
        props["version"] = VERSION
        upd["properties"] = props
        out[k.schema + "Update"] = upd
    return out


def _ok(status: str, what: str, schema: dict[str, Any], *errors: str) -> dict[str, Any]:
    responses: dict[str, Any] = {
        status: {"description": what, "content": {"application/json": {"schema": schema}}}}
    for code in errors:
        responses[code] = _resp(_ERRORS[code])
    return responses


_ERRORS = {"400": "Invalid", "404": "NotFound", "409": "Conflict", "413": "TooLarge",
           "415": "UnsupportedMediaType", "503": "Unavailable"}
_BODY_ERRORS = ("400", "409", "413", "415", "503")


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def paths(k: b.Kind) -> dict[str, dict[str, Any]]:
    plural = k.label + "s"
    many = {"type": "array", "items": _ref(k.schema)}
    coll: dict[str, Any] = {"get": {"operationId": f"list{k.schema}s",
                                    "responses": _ok("200", f"All {plural}", many, "503")}}
    if k.tenant:
        coll["get"]["parameters"] = [{
            "name": k.tenant, "in": "query", "required": False,
            "description": f"Only the {plural} of this tenant", "schema": {"type": "string"}}]
    if k.top_create:
        coll["post"] = {"operationId": f"create{k.schema}", "requestBody": _body(
            k.schema + "Create"), "responses": _ok("201", f"The new {k.label}",
                                                   _ref(k.schema), *_BODY_ERRORS)}
    item: dict[str, Any] = {
        "parameters": [{"$ref": "#/components/parameters/Id"}],
        "get": {"operationId": f"get{k.schema}",
                "responses": _ok("200", f"The {k.label}", _ref(k.schema), "404", "503")},
    }
    if k.updatable:
        item["put"] = {"operationId": f"update{k.schema}",
                       "requestBody": _body(k.schema + "Update"),
                       "responses": _ok("200", f"The updated {k.label}", _ref(k.schema),
                                        "400", "404", "409", "413", "415", "503")}
    item["delete"] = {"operationId": f"delete{k.schema}",
                      "responses": {"204": {"description": "Deleted"}, "404": _resp("NotFound"),
                                    "409": _resp("Conflict"), "503": _resp("Unavailable")}}
    if k.delete_note:
        item["delete"]["description"] = k.delete_note
    out = {f"/v1/{k.name}": coll, f"/v1/{k.name}/{{id}}": item}
    special = dict(k.parent_create)
    for parent, _field in k.parents:
        p = KINDS[parent]
        out[f"/v1/{parent}/{{id}}/{k.name}"] = {
            "parameters": [{"$ref": "#/components/parameters/Id"}],
            "get": {"operationId": f"list{p.schema}{k.schema}s",
                    "responses": _ok("200", f"The {p.label}'s {plural}", many, "404", "503")},
            "post": {"operationId": f"create{p.schema}{k.schema}",
                     "requestBody": _body(special.get(parent, k.schema + "Create")),
                     "responses": _ok("201", f"The new {k.label}", _ref(k.schema), "400",
                                      "404", "409", "413", "415", "503")},
        }
    return out


@cache
def static() -> dict[str, Any]:
    return yaml.safe_load(STATIC.read_text(encoding="utf-8"))


def document() -> dict[str, Any]:
    doc = copy.deepcopy(static())
    for k in KINDS.values():
        for path, item in paths(k).items():
            if path in doc["paths"]:
                raise ValueError(f"{path} is both generated and in {STATIC.name}")
            doc["paths"][path] = item
        for name, schema in schemas(k).items():
            if name in doc["components"]["schemas"]:
                raise ValueError(f"schema {name} is both generated and in {STATIC.name}")
            doc["components"]["schemas"][name] = schema
    doc["paths"] = dict(sorted(doc["paths"].items()))
    doc["components"]["schemas"] = dict(sorted(doc["components"]["schemas"].items()))
    return doc


HEADER = ("# GENERATED by `python -m midoflow.kinds.openapi > midoflow/rest/openapi.yaml`\n"
          "# from midoflow/kinds/*.py and midoflow/kinds/openapi_static.yaml: edit those.\n")


class _Dumper(yaml.SafeDumper):
    """Block text for multi-line strings; flow style for collections of scalars."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    return HEADER + yaml.dump(document(), Dumper=_Dumper, sort_keys=False, width=96,
                              allow_unicode=True, default_flow_style=None)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
