"""Virtual L2 bridges; their ports are created under them (/bridges/{id}/ports)."""

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

KIND = Kind(
    name=model.BRIDGES, label="bridge", schema="Bridge",
    fields=(
        common_id(),
        tenant_field(),
        name_field(),
        Field("admin_state_up", BOOLEAN, default=True),
        Field("port_ids", UUID_LIST, default=[], create=False, update=False, ref=model.PORTS,
              on_delete=CLEAR,
              description="The bridge's ports (read-only; ports are created under the "
                          "bridge)"),
        *FILTER_FIELDS,
    ),
    tenant="tenant_id",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("TENANT", "tenant_id"),
             Column("STATE", "admin_state_up", "updown"), Column("PORTS", "port_ids", "count")),
    show=("id", "name", "tenant_id", "admin_state_up", "port_ids", "inbound_filter_id",
          "outbound_filter_id", "version"),
    update_note="Partial update; id and port_ids may be echoed unchanged.",
    delete_note="Refused (409) while the bridge has ports.",
)
