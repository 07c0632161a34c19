"""Security groups (Neutron's): compiled by the service into an address group of
their members' fixed IPs and one chain per direction (:mod:`midoflow.service.security`).
Rules are added and removed through /security_groups/{id}/rules."""

from midoflow import model
from midoflow.kinds.base import (
    DESCRIPTION_MAX,
    OBJECT,
    STRING,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)


def _derived(name: str, doc: str) -> Field:
    return Field(name, UUID, computed=True, special=True, description=doc)


KIND = Kind(
    name=model.SECURITY_GROUPS, label="security group", schema="SecurityGroup",
    fields=(
        common_id(),
        name_field(),
        tenant_field(),
        Field("description", STRING, default="", max_len=DESCRIPTION_MAX),
        # a rule's remote_group_id references a group: deleting it deletes those rules
        Field("rules", OBJECT, create=False, update=False, special=True,
              ref=model.SECURITY_GROUPS, on_delete="cascade",
              schema={"type": "array",
                      "items": {"$ref": "#/components/schemas/SecurityGroupRule"}},
              description="The group's rules (read-only; see /security_groups/{id}/rules)"),
        _derived("ip_addr_group_id", "The generated address group of its member ports' "
                                     "fixed IPs"),
        _derived("ingress_chain_id", "The generated chain of its ingress rules"),
        _derived("egress_chain_id", "The generated chain of its egress rules"),
    ),
    tenant="tenant_id",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("TENANT", "tenant_id"),
             Column("RULES", "rules", "count"), Column("DESCRIPTION", "description")),
    show=("id", "name", "tenant_id", "description", "ip_addr_group_id", "ingress_chain_id",
          "egress_chain_id", "version"),
    update_note="Partial update; the read-only fields may be echoed unchanged.",
    delete_note="Refused (409) while ports use the group or user rules use its address group "
                "or chains; rules of other groups naming it as remote group are deleted with "
                "it.",
)
