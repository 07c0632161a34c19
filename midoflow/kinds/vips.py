"""VIPs (Octavia's listeners): an address, protocol and port of a load balancer
whose connections go to a member of its pool."""

from midoflow import model
from midoflow.kinds.base import (
    CLEAR,
    ENUM,
    INTEGER,
    IPV4,
    REFUSE,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)
from midoflow.kinds.load_balancers import admin_state, description_field, operating_status

RECREATE = "of a VIP cannot be changed: create another VIP"

KIND = Kind(
    name=model.VIPS, label="VIP", schema="Vip",
    description="Virtual IPs (listeners) of load balancers",
    fields=(
        common_id(),
        Field("load_balancer_id", UUID, required=True, update=False,
              ref=model.LOAD_BALANCERS, on_delete=REFUSE, frozen=RECREATE,
              description="Its load balancer"),
        Field("address", IPV4, required=True, update=False, frozen=RECREATE,
              description="A host address inside the network of one of the router's ports "
                          "(not a port's own address)"),
        Field("protocol_port", INTEGER, required=True, update=False, lo=1, hi=65535,
              frozen=RECREATE,
              description="(address, protocol, protocol_port) is unique among the router's "
                          "VIPs (409)"),
        Field("pool_id", UUID, nullable=True, default=None, ref=model.POOLS,
              on_delete=CLEAR,
              description="A pool of the same load balancer and protocol, or null (no "
                          "answer)"),
        name_field(),
        tenant_field(),
        description_field(),
        Field("protocol", ENUM, default=model.LB_TCP, choices=model.LB_PROTOCOLS,
              update=False, frozen=RECREATE),
        Field("session_persistence", ENUM, nullable=True, default=None,
              choices=model.LB_PERSISTENCE,
              description="null: none; SOURCE_IP: a client stays on its member"),
        Field("persistence_timeout", INTEGER, default=360, lo=1, hi=86400,
              description="Seconds a client's member is remembered after its last "
                          "connection (SOURCE_IP)"),
        admin_state(),
        operating_status("OFFLINE if it or its load balancer is admin down, else its "
                         "pool's (OFFLINE without one)"),
    ),
    tenant="tenant_id",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("ADDRESS", "address"),
             Column("PROTOCOL", "protocol"), Column("PORT", "protocol_port"),
             Column("POOL", "pool_id"), Column("STATE", "admin_state_up", "updown"),
             Column("STATUS", "operating_status")),
    show=("id", "name", "tenant_id", "description", "load_balancer_id", "address",
          "protocol", "protocol_port", "pool_id", "session_persistence",
          "persistence_timeout", "admin_state_up", "operating_status", "version"),
    create_note="400 naming the field for a bad address or pool; 409 if the router already "
                "has a VIP at this address, protocol and port.",
    update_note="Partial update of pool_id, name, description, tenant_id, "
                "session_persistence, persistence_timeout and admin_state_up.",
)
