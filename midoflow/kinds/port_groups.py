"""Port groups: ports grouped for rules; a stateful group shares flow state."""

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

KIND = Kind(
    name=model.PORT_GROUPS, label="port group", schema="PortGroup",
    fields=(
        common_id(),
        name_field(),
        tenant_field(),
        Field("stateful", BOOLEAN, default=False,
              description="Its members all receive the flow state of connections through any "
                          "of them"),
        Field("port_ids", UUID_LIST, default=[], create=False, update=False, ref=model.PORTS,
              on_delete=CLEAR,
              description="The member ports (read-only; see /port_groups/{id}/ports)"),
    ),
    tenant="tenant_id",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("TENANT", "tenant_id"),
             Column("STATEFUL", "stateful"), Column("PORTS", "port_ids", "count")),
    update_note="Partial update; id and port_ids may be echoed unchanged.",
    delete_note="Refused (409) while a rule matches on it.",
)
