"""Prefixes an uplink's gateway advertises to its BGP peers (/ports/{id}/bgp_networks)."""

from midoflow import model
from midoflow.kinds.base import CASCADE, CIDR, UUID, Column, Field, Kind, common_id

KIND = Kind(
    name=model.BGP_NETWORKS, label="BGP network", schema="BgpNetwork",
    fields=(
        common_id(),
        Field("port_id", UUID, create=False, update=False, ref=model.PORTS, on_delete=CASCADE,
              description="The uplink port whose BGP peers the prefix is advertised to"),
        Field("prefix", CIDR, required=True, update=False, special=True,
              description="An IPv4 network a.b.c.d/len with no host bits set, not 0.0.0.0/0 "
                          "(a floating-IP range, a provider subnet)"),
    ),
    parents=((model.PORTS, "port_id"),),
    top_create=False,
    updatable=False,
    cli="bgp network",
    columns=(Column("ID", "id"), Column("PORT", "port_id"), Column("PREFIX", "prefix")),
)
