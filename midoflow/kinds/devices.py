"""What bridges and routers share: a tenant's named device holding ports
created under it, with the two filter fields."""

from midoflow import model
from midoflow.kinds.base import (
    BOOLEAN,
    CLEAR,
    UUID_LIST,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)
from midoflow.kinds.filters import FILTER_FIELDS


def device_kind(name: str, label: str, schema: str, delete_note: str,
                extra: tuple[Field, ...] = ()) -> Kind:
    """``extra``: the fields only this kind of device has (after the filters)."""
    return Kind(
        name=name, label=label, schema=schema,
        fields=(
            common_id(),
            tenant_field(),
            name_field(),
            Field("admin_state_up", BOOLEAN, default=True),
            Field("port_ids", UUID_LIST, default=[], create=False, update=False,
                  ref=model.PORTS, on_delete=CLEAR,
                  description=f"The {label}'s ports (read-only; ports are created under the "
                              f"{label})"),
            *FILTER_FIELDS,
            *extra,
        ),
        tenant="tenant_id",
        columns=(Column("ID", "id"), Column("NAME", "name"), Column("TENANT", "tenant_id"),
                 Column("STATE", "admin_state_up", "updown"),
                 Column("PORTS", "port_ids", "count")),
        show=("id", "name", "tenant_id", "admin_state_up", "port_ids", "inbound_filter_id",
              "outbound_filter_id", *(f.name for f in extra), "version"),
        update_note="Partial update; id and port_ids may be echoed unchanged.",
        delete_note=delete_note,
    )
