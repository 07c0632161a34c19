"""IP address groups for rules (one is generated per security group)."""

from midoflow import model
from midoflow.kinds.base import (
    BOOLEAN,
    IPV4_LIST,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)

KIND = Kind(
    name=model.IP_ADDR_GROUPS, label="IP address group", schema="IpAddrGroup",
    fields=(
        common_id(),
        name_field(schema={"type": "string"},  # generated names may be longer
                   description="A generated group (one per security group) is named "
                               "sg-<group name>"),
        tenant_field(),
        Field("addresses", IPV4_LIST, default=[], update=False,
              description="Unicast IPv4 addresses (read-only; see "
                          "/ip_addr_groups/{id}/addresses)"),
        Field("generated", BOOLEAN, computed=True, special=True,
              description="Kept by the service: the fixed IPs of a security group's member "
                          "ports (read-only)"),
    ),
    tenant="tenant_id",
    cli="ip-group",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("TENANT", "tenant_id"),
             Column("ADDRESSES", "addresses"), Column("GENERATED", "generated")),
    show=("id", "name", "tenant_id", "generated", "addresses", "version"),
    update_note="Partial update; id, addresses and generated may be echoed unchanged.",
    delete_note="Refused (409) while a rule matches on it.",
)
