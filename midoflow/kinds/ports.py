"""Virtual ports of bridges and routers.

Created under their device (/bridges/{id}/ports: PortCreate; /routers/{id}/ports:
RouterPortCreate, with the port's address). Bindings (/ports/{id}/binding) and
links (/ports/{id}/link) change host_id/interface_name and peer_id; port
security compiles to generated chains (the security family)."""

from typing import Any

from midoflow import model
from midoflow.kinds.base import (
    BOOLEAN,
    CLEAR,
    ENUM,
    INTEGER,
    INTERFACE,
    IPV4,
    IPV4_LIST,
    MAC,
    OBJECT,
    REFUSE,
    STRING,
    UUID,
    UUID_LIST,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
)
from midoflow.kinds.bridges import MTU_MAX, MTU_MIN
from midoflow.kinds.filters import FILTER_FIELDS

PORT_TYPES = (model.PORT_EXTERIOR, model.PORT_INTERIOR)



def _set_elsewhere(name: str, type: str, **kw: Any) -> Field:
    """Null until a binding, a link or a router port's creation sets it; read-only."""
    return Field(name, type, nullable=True, default=None, create=False, update=False, **kw)


KIND = Kind(
    name=model.PORTS, label="port", schema="Port",
    fields=(
        common_id(),
        Field("device_id", UUID, create=False, update=False, ref="bridges|routers",
              on_delete=REFUSE),
        Field("device_type", ENUM, create=False, update=False, choices=model.DEVICE_TYPES),
        Field("type", ENUM, default=model.PORT_EXTERIOR, update=False, choices=PORT_TYPES),
        Field("admin_state_up", BOOLEAN, default=True),
        _set_elsewhere("host_id", UUID, ref=model.HOSTS, on_delete=REFUSE),
        _set_elsewhere("interface_name", INTERFACE),
        _set_elsewhere("peer_id", UUID, ref=model.PORTS, on_delete=CLEAR),
        name_field(),
        Field("tunnel_key", INTEGER, create=False, update=False, lo=model.TUNNEL_KEY_MIN,
              hi=model.STATE_TUNNEL_KEY,
              description="Names the port on the wire (VXLAN VNI / GRE key); read-only"),
        Field("mac", MAC, nullable=True, default=None, special=True,
              description="The port's MAC, lower-case: a router port's (fixed at creation), "
                          "or a bridge port's VM MAC (null until set; needed by port "
                          "security)"),
        _set_elsewhere("ip_address", IPV4, description="The router port's address on its "
                                                       "network (null for bridge ports); "
                                                       "read-only"),
        _set_elsewhere("prefix_len", INTEGER, lo=1, hi=32,
                       description="The router port's network prefix length (null for bridge "
                                   "ports); read-only"),
        Field("proxy_arp", IPV4_LIST, default=[], create=False, update=False,
              description="Router ports: more addresses the port answers ARP for with its "
                          "own MAC (a Neutron router's floating IPs, on its gateway port; "
                          "set by the Neutron translation); read-only"),
        *FILTER_FIELDS,
        Field("fixed_ips", IPV4_LIST, default=[], special=True,
              description="The VM's IPv4 addresses (bridge ports)"),
        Field("security_group_ids", UUID_LIST, default=[], special=True,
              ref=model.SECURITY_GROUPS, on_delete=REFUSE,
              description="The port's security groups, in order (bridge ports)"),
        Field("port_security_enabled", BOOLEAN, default=False, special=True,
              description="Anti-spoofing: the port may only send from its MAC and fixed IPs "
                          "and its allowed address pairs (bridge ports; needs mac)"),
        Field("allowed_address_pairs", OBJECT, default=[], special=True,
              schema={"type": "array", "items": {"$ref": "#/components/schemas/AddressPair"}},
              input_schema={"type": "array",
                            "items": {"$ref": "#/components/schemas/AddressPairIn"}}),
        Field("mtu", INTEGER, nullable=True, default=None, special=True, lo=MTU_MIN,
              hi=MTU_MAX,
              description=f"Router ports: the link's MTU, {MTU_MIN} to {MTU_MAX} (an uplink's "
                          "to the border; null: the agents' underlay_mtu, or for an interior "
                          "port its bridge's mtu). Bridge ports take their bridge's"),
        Field("extra_dhcp_opts", OBJECT, default=[], special=True,
              schema={"type": "array", "items": {"$ref": "#/components/schemas/ExtraDhcpOpt"}},
              description="Bridge ports: DHCP options for this VM only, added to or "
                          "replacing its subnet's (Neutron's extra_dhcp_opt)"),
        Field("instance_id", STRING, nullable=True, default=None, special=True,
              description="Bridge ports: the VM's instance (Neutron's device_id), what the "
                          "metadata service answers for; null: none"),
        Field("tenant_id", STRING, default="", special=True,
              description="Bridge ports: the VM's project (metadata's X-Tenant-ID)"),
        Field("hostname", STRING, default="", special=True, max_len=63,
              description="Bridge ports: the VM's host name (DHCP option 12, metadata), a "
                          "DNS label; empty: host-a-b-c-d from its first fixed IP"),
    ),
    parents=((model.BRIDGES, "device_id"), (model.ROUTERS, "device_id")),
    parent_create=((model.ROUTERS, "RouterPortCreate"),),  # with the port's address
    top_create=False,
    columns=(Column("ID", "id"), Column("DEVICE", "device_id"), Column("TYPE", "type"),
             Column("NAME", "name"), Column("STATE", "admin_state_up", "updown"),
             Column("HOST", "host_id"), Column("INTERFACE", "interface_name"),
             Column("PEER", "peer_id"), Column("ADDRESS", "ip_address", "port_address")),
    show=("id", "name", "type", "device_type", "device_id", "admin_state_up", "tunnel_key",
          "mac", "ip_address", "prefix_len", "proxy_arp", "host_id", "interface_name", "peer_id",
          "fixed_ips", "security_group_ids", "port_security_enabled",
          "allowed_address_pairs", "mtu", "extra_dhcp_opts", "instance_id", "tenant_id",
          "hostname", "inbound_filter_id", "outbound_filter_id", "version"),
    create_note="A bridge port. mac and fixed_ips are unique on the bridge (409); security "
                "groups must exist (400); port security needs mac and allowed address pairs "
                "need port security (400); filters cannot be user chains when the port has "
                "security groups or port security (409).",
    update_note="Partial update of name, admin_state_up and the filters, and for bridge ports "
                "mac, fixed_ips, security_group_ids, port_security_enabled, "
                "allowed_address_pairs, extra_dhcp_opts, instance_id, tenant_id and hostname, "
                "for router ports mtu (validated as on creation; the port's generated chains "
                "follow in the same commit). The other fields may be echoed unchanged "
                "(bindings and links change through /binding and /link; a router port's mac, "
                "ip_address and prefix_len are fixed at creation). To protect a port that "
                "filters through user chains, set its filters to null in the same request "
                "(409 otherwise).",
    delete_note="Deletes, in one commit, the routes through the port, its BGP peers and "
                "networks and its generated chains; unlinks its peer; removes it from its "
                "device and port groups. Refused (409) while a rule matches on it.",
)
