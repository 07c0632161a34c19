"""Tunnel zones: which hosts tunnel to each other, and how (members via /members)."""

from midoflow import model
from midoflow.kinds.base import ENUM, OBJECT, STRING, Column, Field, Kind, common_id

MEMBER = {"$ref": "#/components/schemas/Member"}

KIND = Kind(
    name=model.TUNNEL_ZONES, label="tunnel zone", schema="TunnelZone",
    fields=(
        common_id(),
        Field("name", STRING, required=True, min_len=1),
        Field("type", ENUM, default=model.TUNNEL_VXLAN, choices=model.TUNNEL_TYPES),
        # each member's host_id references a host: deleting the host is refused
        Field("members", OBJECT, default=[], update=False, special=True, ref=model.HOSTS,
              on_delete="refuse", schema={"type": "array", "items": MEMBER},
              description="Initial members; each host must exist and appear once"),
    ),
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("TYPE", "type"),
             Column("MEMBERS", "members", "count")),
    update_note="Partial update; id and members may be echoed unchanged (members change "
                "through /members).",
)
