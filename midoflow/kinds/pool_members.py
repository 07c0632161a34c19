"""Members of a pool: the servers connections are balanced over."""

from midoflow import model
from midoflow.kinds.base import (
    CASCADE,
    INTEGER,
    IPV4,
    OBJECT,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)
from midoflow.kinds.load_balancers import admin_state, operating_status

RECREATE = "of a member cannot be changed: delete the member and create it again"

KIND = Kind(
    name=model.POOL_MEMBERS, label="pool member", schema="PoolMember",
    description="Members of pools (also listed under /pools/{id}/members)",
    fields=(
        common_id(),
        Field("pool_id", UUID, required=True, update=False, ref=model.POOLS,
              on_delete=CASCADE, frozen=RECREATE, description="Its pool"),
        Field("address", IPV4, required=True, update=False, frozen=RECREATE,
              description="The server's address"),
        Field("protocol_port", INTEGER, required=True, update=False, lo=1, hi=65535,
              frozen=RECREATE,
              description="(address, protocol_port) is unique in the pool (409)"),
        Field("weight", INTEGER, default=1, lo=0, hi=model.LB_WEIGHT_MAX,
              description="0: no new connections"),
        name_field(),
        tenant_field(),
        admin_state(),
        operating_status("OFFLINE if admin down; NO_MONITOR if its pool has no admin-up "
                         "health monitor or it was not checked yet; else its health"),
        Field("health", OBJECT, computed=True, special=True, nullable=True,
              schema={"$ref": "#/components/schemas/MemberHealth"},
              input_schema={"type": "object", "nullable": True,
                            "additionalProperties": True},
              description="What the elected health checker last found (null: never "
                          "checked)"),
    ),
    tenant="tenant_id",
    cli="member",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("POOL", "pool_id"),
             Column("ADDRESS", "address"), Column("PORT", "protocol_port"),
             Column("WEIGHT", "weight"), Column("STATE", "admin_state_up", "updown"),
             Column("STATUS", "operating_status")),
    show=("id", "name", "tenant_id", "pool_id", "address", "protocol_port", "weight",
          "admin_state_up", "operating_status", "health", "version"),
    create_note="400 if the pool does not exist; 409 if the pool already has a member at "
                "this address and port.",
    update_note="Partial update of weight, name, tenant_id and admin_state_up.",
    delete_note="Deleted with its pool; its health entry goes with it.",
)
