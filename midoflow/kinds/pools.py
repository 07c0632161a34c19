"""Pools of a load balancer: the members a VIP's connections are spread over."""

from midoflow import model
from midoflow.kinds.base import (
    ENUM,
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

KIND = Kind(
    name=model.POOLS, label="pool", schema="Pool",
    description="Pools of load-balancer members",
    fields=(
        common_id(),
        Field("load_balancer_id", UUID, required=True, update=False,
              ref=model.LOAD_BALANCERS, on_delete=REFUSE,
              frozen="of a pool cannot be changed: create another pool",
              description="Its load balancer"),
        name_field(),
        tenant_field(),
        description_field(),
        Field("protocol", ENUM, default=model.LB_TCP, choices=model.LB_PROTOCOLS,
              update=False, frozen="of a pool cannot be changed: create another pool",
              description="The VIPs using the pool must have the same protocol"),
        Field("lb_method", ENUM, default=model.LB_ROUND_ROBIN, choices=model.LB_METHODS,
              description="ROUND_ROBIN (weights ignored), WEIGHTED_ROUND_ROBIN or "
                          "LEAST_CONNECTIONS (fewest active connections per weight, as the "
                          "ingress host sees them)"),
        admin_state(),
        operating_status("OFFLINE if admin down, ERROR if every member is, DEGRADED if "
                         "some are, else ONLINE"),
    ),
    tenant="tenant_id",
    columns=(Column("ID", "id"), Column("NAME", "name"),
             Column("LOAD BALANCER", "load_balancer_id"), Column("PROTOCOL", "protocol"),
             Column("METHOD", "lb_method"), Column("STATE", "admin_state_up", "updown"),
             Column("STATUS", "operating_status")),
    show=("id", "name", "tenant_id", "description", "load_balancer_id", "protocol",
          "lb_method", "admin_state_up", "operating_status", "version"),
    create_note="400 if the load balancer does not exist.",
    update_note="Partial update of name, description, tenant_id, lb_method and "
                "admin_state_up.",
    delete_note="Its members and health monitor are deleted with it; VIPs using it are "
                "left without a pool (pool_id null).",
)
