"""Chains of rules (rules are created under /chains/{id}/rules, in order).

Chains generated for security groups and protected ports (version-5 ids) are
visible but refused (409) for direct change: the chains family."""

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
    name=model.CHAINS, label="chain", schema="Chain",
    fields=(
        common_id(),
        name_field(schema={"type": "string"},  # generated names may be longer
                   description="Generated chains are named sg-<group name>-ingress/egress "
                               "and port-<port id>-inbound/outbound/anti-spoof"),
        tenant_field(),
        Field("rule_ids", UUID_LIST, default=[], create=False, update=False, ref=model.RULES,
              on_delete=CLEAR,
              description="The chain's rules in evaluation order (read-only; see "
                          "/chains/{id}/rules)"),
        Field("generated", BOOLEAN, computed=True, special=True,
              description="Written by the service for a security group or a port "
                          "(read-only)"),
    ),
    tenant="tenant_id",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("TENANT", "tenant_id"),
             Column("RULES", "rule_ids", "count"), Column("GENERATED", "generated")),
    show=("id", "name", "tenant_id", "generated", "rule_ids", "version"),
    update_note="Partial update; id, rule_ids and generated may be echoed unchanged.",
    delete_note="Refused (409) while a port, bridge or router filters through it or a rule "
                "of another chain jumps to it; its rules are deleted with it.",
)
