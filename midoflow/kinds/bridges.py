"""Virtual L2 bridges; their ports are created under them (/bridges/{id}/ports)."""

from midoflow import model
from midoflow.kinds.devices import device_kind

KIND = device_kind(model.BRIDGES, "bridge", "Bridge",
                   delete_note="Refused (409) while the bridge has ports.")
