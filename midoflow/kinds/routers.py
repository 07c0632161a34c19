"""Virtual L3 routers; their ports (/routers/{id}/ports) and routes (/routers/{id}/routes)
are created under them. Router-port linking and overlap checks: the routers family."""

from midoflow import model
from midoflow.kinds.devices import device_kind

KIND = device_kind(model.ROUTERS, "router", "Router",
                   delete_note="Refused (409) while the router has ports; its routes are "
                               "deleted with it.")
