"""BGP sessions of uplink ports (created under /ports/{id}/bgp_peers).

Uplink, peer address and timer checks are code in the BGP family."""

from midoflow import model
from midoflow.kinds.base import (
    ASN,
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
)

# port_id and peer_address name the session
RECREATE = "of a BGP peer cannot be changed: delete the peer and create it again"

KIND = Kind(
    name=model.BGP_PEERS, label="BGP peer", schema="BgpPeer",
    fields=(
        common_id(),
        Field("port_id", UUID, create=False, update=False, ref=model.PORTS, on_delete=CASCADE,
              frozen=RECREATE,
              description="The uplink port (an exterior router port) the session runs on"),
        name_field(),
        Field("local_as", ASN, required=True),
        Field("peer_address", IPV4, required=True, update=False, special=True, frozen=RECREATE,
              description="The peer's unicast address on the port's network (not the "
                          "port's own address, nor the network or broadcast address when "
                          "the port's prefix_len is 30 or less)"),
        Field("peer_as", ASN, required=True),
        Field("keepalive", INTEGER, default=model.BGP_KEEPALIVE, lo=1, hi=21845, special=True,
              description="Seconds; keepalive * 3 must not exceed a non-zero hold_time"),
        Field("hold_time", INTEGER, default=model.BGP_HOLD_TIME, lo=0, hi=65535, special=True,
              description="Seconds, 0 (no keepalives) or 3 to 65535"),
        Field("connect_retry", INTEGER, default=model.BGP_CONNECT_RETRY, lo=1, hi=3600,
              special=True, description="Seconds between connection attempts"),
        Field("status", OBJECT, computed=True, special=True,
              schema={"$ref": "#/components/schemas/BgpPeerStatus"},
              input_schema={"type": "object", "additionalProperties": True}),
    ),
    parents=((model.PORTS, "port_id"),),
    top_create=False,
    cli="bgp peer",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("PORT", "port_id"),
             Column("PEER ADDRESS", "peer_address"), Column("PEER AS", "peer_as"),
             Column("LOCAL AS", "local_as"), Column("TIMERS", "keepalive", "bgp_timers"),
             Column("STATE", "status", "bgp_state"), Column("HOST", "status", "bgp_host"),
             Column("PREFIXES IN/OUT", "status", "bgp_prefixes")),
    show=("id", "name", "port_id", "local_as", "peer_address", "peer_as", "keepalive",
          "hold_time", "connect_retry", "status", "version"),
    update_note="Partial update of name, local_as, peer_as, keepalive, hold_time and "
                "connect_retry; id, port_id and peer_address may be echoed unchanged, status "
                "is read-only and ignored.",
)
