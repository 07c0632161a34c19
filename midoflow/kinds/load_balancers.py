"""Load balancers: balancing done by a router in the simulation, at each ingress
host (issue 14). Checks, the health port and cascades: midoflow.service.lb."""

from midoflow import model
from midoflow.kinds.base import (
    BOOLEAN,
    CIDR,
    DESCRIPTION_MAX,
    ENUM,
    REFUSE,
    STRING,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)

# What the load-balancing kinds share (pools, VIPs, members: imported from here)
OP_STATUSES = (model.OP_ONLINE, model.OP_OFFLINE, model.OP_ERROR, model.OP_NO_MONITOR,
               model.OP_DEGRADED)


def operating_status(doc: str) -> Field:
    return Field("operating_status", ENUM, computed=True, special=True, choices=OP_STATUSES,
                 description=doc)


def admin_state() -> Field:
    return Field("admin_state_up", BOOLEAN, default=True,
                 description="false: takes no new connections (established ones finish)")


def description_field() -> Field:
    return Field("description", STRING, default="", max_len=DESCRIPTION_MAX)


KIND = Kind(
    name=model.LOAD_BALANCERS, label="load balancer", schema="LoadBalancer",
    description="Layer-4 load balancers: the router balances the connections to its VIPs",
    fields=(
        common_id(),
        Field("router_id", UUID, required=True, update=False, ref=model.ROUTERS,
              on_delete=REFUSE,
              frozen="of a load balancer cannot be changed: create another one",
              description="The router that balances (its ports' networks hold the VIPs); "
                          "a router with a load balancer cannot be deleted (409)"),
        name_field(),
        tenant_field(),
        description_field(),
        admin_state(),
        Field("health_port_id", UUID, nullable=True, default=None, create=False,
              update=False, ref=model.PORTS, on_delete=REFUSE,
              description="The router's exterior port the elected agent checks the members "
                          "through (created and deleted with the load balancer)"),
        Field("health_cidr", CIDR, nullable=True, default=None, create=False, update=False,
              description=f"The health port's /30 of {model.HEALTH_NET} (the port has its "
                          "first address, the checker's namespace the second)"),
        operating_status("OFFLINE if admin down, else the worst of its pools'"),
    ),
    tenant="tenant_id",
    cli="load-balancer",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("ROUTER", "router_id"),
             Column("STATE", "admin_state_up", "updown"),
             Column("STATUS", "operating_status")),
    show=("id", "name", "tenant_id", "description", "router_id", "admin_state_up",
          "operating_status", "health_port_id", "health_cidr", "version"),
    create_note="400 if the router does not exist; creates the health port in the same "
                "commit (409 if the router has no free /30 of " + model.HEALTH_NET + ").",
    update_note="Partial update of name, description, tenant_id and admin_state_up; the "
                "read-only fields may be echoed unchanged.",
    delete_note="Refused (409) while it has VIPs or pools, unless ?cascade=true (then they "
                "go with it); its health port is deleted with it.",
)
