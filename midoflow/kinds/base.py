"""The vocabulary of resource-kind declarations.

A :class:`Kind` lists its :class:`Field` s in output order. From it the service
takes its output field lists and the generic part of request validation
(:mod:`midoflow.service.body`), the REST app its CRUD routes, the OpenAPI
generator (:mod:`midoflow.kinds.openapi`) its schemas and paths, and the CLI
its list columns and show order. Rules no field type expresses (security
groups compiled to chains, BGP checks, router-port linking, route hops) stay
as code next to the kind, in its service family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAME_MAX = 255
DESCRIPTION_MAX = 1024

# Field types. Each has one validator (midoflow.service.body) and one OpenAPI schema.
STRING = "string"  # text, max_len / min_len
BOOLEAN = "boolean"
INTEGER = "integer"  # lo / hi
ENUM = "enum"  # choices
UUID = "uuid"
IPV4 = "ipv4"  # a unicast IPv4 address
CIDR = "cidr"  # an IPv4 network with no host bits set
MAC = "mac"  # a unicast MAC address
ASN = "asn"  # an AS number, 1 to 4294967295
UUID_LIST = "uuid_list"  # distinct UUIDs
IPV4_LIST = "ipv4_list"  # distinct unicast IPv4 addresses
INTERFACE = "interface"  # a host interface name: 1 to 15 characters, no spaces or '/'
OBJECT = "object"  # checked by the kind's own code; the schema is given
TYPES = (STRING, BOOLEAN, INTEGER, ENUM, UUID, IPV4, CIDR, MAC, ASN, UUID_LIST, IPV4_LIST,
         INTERFACE, OBJECT)

# What deleting a referenced object does to the objects referencing it: every delete,
# built-in or generic, applies it in its commit (midoflow.service.refs).
REFUSE = "refuse"  # 409 while a reference exists
CASCADE = "cascade"  # the referencing objects are deleted with it
CLEAR = "clear"  # the reference is removed from the referencing object

_NONE = object()


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    required: bool = False  # in a create body
    default: Any = _NONE  # stored when a create body omits the field
    nullable: bool = False
    create: bool = True  # may be given at creation
    update: bool = True  # may be changed by PUT (else read-only: echoed unchanged only)
    computed: bool = False  # not stored: the service adds it to the output
    special: bool = False  # checked by the kind's own code, not the generic validator
    choices: tuple[Any, ...] = ()
    lo: int | None = None
    hi: int | None = None
    min_len: int = 0
    max_len: int = NAME_MAX
    ref: str | None = None  # the kind it references
    on_delete: str | None = None  # REFUSE / CASCADE / CLEAR (what deleting the ref does)
    description: str = ""
    frozen: str = ""  # why a read-only field cannot change (its 400 says so)
    # OpenAPI schema as answered (required for OBJECT; else derived from the type) and
    # as a request gives it, when different
    schema: dict[str, Any] | None = None
    input_schema: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"field {self.name}: unknown type {self.type!r}")
        if self.type == OBJECT and self.schema is None:
            raise ValueError(f"field {self.name}: an object field needs its schema")

    @property
    def has_default(self) -> bool:
        return self.default is not _NONE


@dataclass(frozen=True)
class Column:
    """A CLI list column: a header, the field it shows, and how (``fmt`` names a
    formatter of :mod:`midoflow.cli.columns`: "count", "updown", ...; None: as is)."""

    header: str
    field: str
    fmt: str | None = None


@dataclass(frozen=True)
class Kind:
    name: str  # the store kind and the URL collection (model.HOSTS ...)
    label: str  # for messages: "host", "tunnel zone"
    schema: str  # OpenAPI schema name: "Host"
    fields: tuple[Field, ...]
    columns: tuple[Column, ...] = ()
    tenant: str | None = None  # the tenant field (list filter ?tenant_id=)
    # (kind, field): created under that parent's URL, listed there too
    parents: tuple[tuple[str, str], ...] = ()
    # (parent kind, schema): the create body there when not <schema>Create
    parent_create: tuple[tuple[str, str], ...] = ()
    top_create: bool = True  # POST /<name> creates (False: created under a parent)
    updatable: bool = True  # PUT /<name>/{id}
    description: str = ""  # what the kind is (OpenAPI)
    delete_note: str = ""  # what a DELETE refuses or takes along (OpenAPI)
    update_note: str = ""  # the description of the Update schema
    create_note: str = ""  # the description of the Create schema
    extra_create: tuple[Field, ...] = ()  # accepted at creation only (rule position)
    extra_update: tuple[Field, ...] = ()  # accepted in a PUT only
    show: tuple[str, ...] = ()  # CLI show order (default: the output fields)
    cli: str = ""  # the CLI command group (default: "port-group" for port_groups)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    @property
    def output(self) -> tuple[str, ...]:
        """The answer's fields in order (``version`` follows them)."""
        return tuple(f.name for f in self.fields)

    @property
    def stored(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if not f.computed)

    @property
    def create_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.create and not f.computed) + \
            tuple(f.name for f in self.extra_create)

    @property
    def readonly(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if not f.update and not f.computed)

    @property
    def cli_group(self) -> str:
        return self.cli or self.name[:-1].replace("_", "-")

    @property
    def show_order(self) -> tuple[str, ...]:
        return self.show or self.output + ("version",)

    @property
    def refs(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.ref)


def common_id() -> Field:
    return Field("id", UUID, update=False, description="")


def name_field(**kw: Any) -> Field:
    return Field("name", STRING, default="", **kw)


def tenant_field() -> Field:
    return Field("tenant_id", STRING, default="")
