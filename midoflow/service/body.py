"""The generic part of request validation and output, driven by the kind declarations.

A create body is an object of known fields; each non-special field is checked
by its declared type and constraints (errors name the field, as
:mod:`~midoflow.service.validate` words them), defaults fill the rest. An
update body may also echo the read-only fields unchanged and the computed ones
(checked by type, then ignored). What a type cannot say is the kind's own code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from midoflow.errors import Invalid
from midoflow.kinds import KINDS
from midoflow.kinds import base as b
from midoflow.service import validate as v
from midoflow.store.base import Data

# Each field type's checker: (value, field name, declaration) -> canonical value.
_CHECKS: dict[str, Callable[[Any, str, b.Field], Any]] = {
    b.STRING: lambda x, n, f: v.string(x, n, f.max_len, f.min_len),
    b.BOOLEAN: lambda x, n, f: v.boolean(x, n),
    b.INTEGER: lambda x, n, f: v.integer(x, n, f.lo, f.hi),
    b.ENUM: lambda x, n, f: v.enum(x, n, f.choices),
    b.UUID: lambda x, n, f: v.uuid_str(x, n),
    b.IPV4: lambda x, n, f: v.unicast_ipv4(x, n),
    b.CIDR: lambda x, n, f: v.cidr(x, n),
    b.MAC: lambda x, n, f: v.mac(x, n),
    b.ASN: lambda x, n, f: v.asn(x, n),
    b.UUID_LIST: lambda x, n, f: v.id_list(x, n),
    b.IPV4_LIST: lambda x, n, f: v.ipv4_list(x, n),
    b.INTERFACE: lambda x, n, f: v.interface_name(x, n),
    b.OBJECT: lambda x, n, f: _object(x, n, f),
}


def _object(value: Any, name: str, f: b.Field) -> Any:
    if not isinstance(value, dict):
        raise Invalid(f"{name} must be an object{' or null' if f.nullable else ''}", name)
    return value


def check(f: b.Field, value: Any) -> Any:
    """One field's value, checked by its declaration (canonical form returned)."""
    if value is None and f.nullable:
        return None
    return _CHECKS[f.type](value, f.name, f)


def create(kind: str, body: Any) -> tuple[dict[str, Any], Data]:
    """(the body, the new object's declared fields): unknown fields refused, the
    required ones present, each non-special field checked, defaults for the rest.
    ``id`` and the special fields are left to the caller (special ones defaulted)."""
    k = KINDS[kind]
    body = v.body_object(body)
    v.check_fields(body, k.create_fields)
    data: Data = {}
    for f in k.fields:
        if f.computed or f.name == "id":
            continue
        if f.create and f.name in body:
            if not f.special:
                data[f.name] = check(f, body[f.name])
        elif f.create and f.required and not f.special:
            raise Invalid(f"{f.name} is required", f.name)
        elif f.has_default:
            data[f.name] = copy.deepcopy(f.default)
    return body, data


def readonly(kind: str, body: dict[str, Any], current: Data,
             names: tuple[str, ...] | None = None) -> None:
    """Read-only fields may be echoed unchanged; a different value is Invalid."""
    k = KINDS[kind]
    for name in k.readonly if names is None else names:
        f = k.field(name)
        if name not in body:
            continue
        if body[name] is None and not f.nullable:
            raise Invalid(f"{name} cannot be null (it is read-only: echo it unchanged or "
                          "leave it out)", name)
        # an object stored before the field existed holds its default
        have = current.get(name, f.default if f.has_default else None)
        if v._norm(body[name]) != v._norm(have):
            raise Invalid(f"{name} {f.frozen}" if f.frozen else f"{name} is read-only", name)


def update(kind: str, body: dict[str, Any], current: Data, shown: Data | None = None) -> Data:
    """``current`` with the body's changes of the non-special fields (a copy).
    Read-only fields are compared with ``shown`` (the answer) when given."""
    k = KINDS[kind]
    v.check_fields(body, k.output + ("version",) + tuple(f.name for f in k.extra_update))
    readonly(kind, body, current if shown is None else shown)
    new = dict(current)
    for f in k.fields:
        if f.name not in body or f.special:
            continue
        if f.computed:
            check(f, body[f.name])  # accepted when well-formed, and ignored
        elif f.update:
            new[f.name] = check(f, body[f.name])
    return new


def output(kind: str, data: Data, version: int) -> Data:
    """The answer: the stored fields in declared order, ``version``, then the computed
    fields (None here: the kind's code fills them in)."""
    k = KINDS[kind]
    out: Data = {}
    for f in k.fields:
        if f.computed:
            continue
        val = data.get(f.name, f.default if f.has_default else None)
        if f.type in (b.UUID_LIST, b.IPV4_LIST):
            val = list(val or ())
        elif f.type == b.OBJECT:
            val = copy.deepcopy(val)
        out[f.name] = val
    out["version"] = version
    for f in k.fields:
        if f.computed:
            out[f.name] = None
    return out
