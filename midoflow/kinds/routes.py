"""Routes of a router (created under /routers/{id}/routes); hop checks: routers family."""

from midoflow import model
from midoflow.kinds.base import (
    CASCADE,
    CIDR,
    ENUM,
    INTEGER,
    IPV4,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
)

KIND = Kind(
    name=model.ROUTES, label="route", schema="Route",
    fields=(
        common_id(),
        Field("router_id", UUID, create=False, update=False, ref=model.ROUTERS,
              on_delete=CASCADE),
        Field("dst_cidr", CIDR, required=True, update=False),
        Field("src_cidr", CIDR, default="0.0.0.0/0", update=False,
              description="Default 0.0.0.0/0 (any source)"),
        Field("next_hop_port", UUID, nullable=True, default=None, ref=model.PORTS,
              on_delete=CASCADE, description="A port of this router; required for type "
                                             "normal"),
        Field("next_hop_gateway", IPV4, nullable=True, default=None,
              description="The next router's address, on next_hop_port's network; null or "
                          "absent when the destination is on that port's link"),
        Field("weight", INTEGER, default=model.ROUTE_DEFAULT_WEIGHT, lo=0, hi=65535,
              description="Lower wins among routes of equal prefix length; equal weights "
                          "share (ECMP)"),
        Field("type", ENUM, default=model.ROUTE_NORMAL, choices=model.ROUTE_TYPES,
              description="normal forwards to next_hop_port; blackhole drops silently; "
                          "reject drops and answers ICMP unreachable"),
    ),
    parents=((model.ROUTERS, "router_id"),),
    top_create=False,
    columns=(Column("ID", "id"), Column("DESTINATION", "dst_cidr"),
             Column("SOURCE", "src_cidr", "not_any"), Column("TYPE", "type"),
             Column("NEXT HOP PORT", "next_hop_port"), Column("GATEWAY", "next_hop_gateway"),
             Column("WEIGHT", "weight")),
    show=("id", "router_id", "dst_cidr", "src_cidr", "type", "next_hop_port",
          "next_hop_gateway", "weight", "version"),
    update_note="Partial update of weight, type, next_hop_port and next_hop_gateway; id, "
                "router_id, dst_cidr and src_cidr may be echoed unchanged.",
)
