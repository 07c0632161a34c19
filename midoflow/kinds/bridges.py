"""Virtual L2 bridges; their ports are created under them (/bridges/{id}/ports)."""

from midoflow import model
from midoflow.kinds.base import INTEGER, Field
from midoflow.kinds.devices import device_kind

# An IPv4 link's MTU: at least 68 (RFC 791), at most a jumbo frame's payload.
MTU_MIN, MTU_MAX = 68, 9000

KIND = device_kind(
    model.BRIDGES, "bridge", "Bridge",
    delete_note="Refused (409) while the bridge has ports; its DHCP subnets are deleted "
                "with it, in the same commit.",
    extra=(Field("mtu", INTEGER, nullable=True, default=None, lo=MTU_MIN, hi=MTU_MAX,
                 description=f"The network's MTU, {MTU_MIN} to {MTU_MAX}: what DHCP tells "
                             "its VMs (option 26) and what routers fragment to towards it; "
                             "null: the agents' default_mtu (underlay_mtu less "
                             "tunnel_overhead, 1450 for VXLAN over 1500)"),),
)
