"""DHCP subnets of a bridge (created under /bridges/{id}/dhcp_subnets): what the
agent of each VM's host answers DHCP with, for the bridge ports whose fixed
address lies in the subnet. Checks: the dhcp family (midoflow.service.dhcp)."""

from midoflow import model
from midoflow.kinds.base import (
    BOOLEAN,
    CASCADE,
    CIDR,
    INTEGER,
    IPV4,
    IPV4_LIST,
    OBJECT,
    STRING,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
)

DNS_SERVERS_MAX = 5
DOMAIN_NAME_MAX = 253

KIND = Kind(
    name=model.DHCP_SUBNETS, label="DHCP subnet", schema="DhcpSubnet",
    fields=(
        common_id(),
        Field("bridge_id", UUID, create=False, update=False, ref=model.BRIDGES,
              on_delete=CASCADE, description="The bridge whose VM ports the subnet serves"),
        Field("cidr", CIDR, required=True, update=False,
              description="The subnet, a.b.c.d/len with no host bits set (at most /30); it "
                          "may not overlap another DHCP subnet of the bridge (409)"),
        Field("gateway_ip", IPV4, nullable=True, default=None, special=True,
              description="The router (option 3) and the default route; a host address of "
                          "cidr; null: none"),
        Field("server_ip", IPV4, nullable=True, default=None, special=True,
              description="The DHCP server identifier (option 54) and the replies' source; "
                          "a host address of cidr; null: gateway_ip, else cidr's last host "
                          "address"),
        Field("dns_servers", IPV4_LIST, default=[], special=True,
              description=f"Up to {DNS_SERVERS_MAX} unicast IPv4 addresses (option 6)"),
        Field("domain_name", STRING, default="", special=True, max_len=DOMAIN_NAME_MAX,
              description="A DNS domain name (option 15), at most 253 characters; empty: "
                          "none"),
        Field("lease_time", INTEGER, default=86400, special=True,
              description=f"Seconds, {model.DHCP_LEASE_MIN} to {model.DHCP_LEASE_MAX}, or "
                          f"{model.DHCP_LEASE_INFINITE} for an infinite lease"),
        Field("host_routes", OBJECT, default=[], special=True,
              schema={"type": "array", "items": {"$ref": "#/components/schemas/HostRoute"}},
              description="Classless static routes (option 121) sent with the default route "
                          "via gateway_ip; each nexthop a host address of cidr"),
        Field("enabled", BOOLEAN, default=True,
              description="false: the agents do not answer DHCP for this subnet"),
    ),
    parents=((model.BRIDGES, "bridge_id"),),
    top_create=False,
    cli="dhcp-subnet",
    columns=(Column("ID", "id"), Column("BRIDGE", "bridge_id"), Column("CIDR", "cidr"),
             Column("GATEWAY", "gateway_ip"), Column("ENABLED", "enabled")),
    show=("id", "bridge_id", "cidr", "gateway_ip", "server_ip", "dns_servers", "domain_name",
          "lease_time", "host_routes", "enabled", "version"),
    create_note="400 naming the field for a bad value; 409 if cidr overlaps another DHCP "
                "subnet of the bridge.",
    update_note="Partial update of every field but cidr (id, bridge_id and cidr may be "
                "echoed unchanged), validated as on creation.",
    delete_note="Deleted with its bridge, in the same commit.",
)
