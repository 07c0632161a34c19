"""Hosts: one per agent. ``alive`` and ``state`` come from the agent's ephemeral record."""

from midoflow import model
from midoflow.kinds.base import (
    BOOLEAN,
    DESCRIPTION_MAX,
    OBJECT,
    STRING,
    Column,
    Field,
    Kind,
    common_id,
)

KIND = Kind(
    name=model.HOSTS, label="host", schema="Host",
    fields=(
        common_id(),
        Field("name", STRING, required=True, min_len=1),
        Field("description", STRING, default="", max_len=DESCRIPTION_MAX),
        Field("alive", BOOLEAN, computed=True,
              description="The host's agent is running (read-only)"),
        Field("state", OBJECT, computed=True, nullable=True,
              schema={"type": "object", "nullable": True, "additionalProperties": True},
              description="What the live agent publishes about the host, null when down "
                          "(read-only)"),
    ),
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("ALIVE", "alive", "alive"),
             Column("DESCRIPTION", "description")),
    update_note="Partial update. id may be echoed unchanged; alive and state are computed "
                "and ignored; version makes the update conditional.",
    delete_note="Refused (409) while ports are bound to the host or it is in a tunnel zone.",
)
