"""The filter fields ports, bridges and routers share (chains applied in and out)."""

from midoflow import model
from midoflow.kinds.base import REFUSE, UUID, Field

FILTER_DOC = ("A chain applied to the packets entering the topology through the object "
              "(inbound) or leaving through it (outbound); an existing user chain, or null. "
              "A port protected by security groups or port security filters through its own "
              "generated chains (read-only).")
FILTER_FIELDS = tuple(
    Field(f, UUID, nullable=True, default=None, special=True, ref=model.CHAINS,
          on_delete=REFUSE, description=FILTER_DOC)
    for f in ("inbound_filter_id", "outbound_filter_id"))
FILTERS = tuple(f.name for f in FILTER_FIELDS)
