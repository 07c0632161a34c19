"""Names the gateway's BGP machinery gives to what it creates on a host
(shared by the agent and the tools that clean up after it)."""


def namespace_name(host_id: str) -> str:
    """The agent's BGP namespace, where its sessions' sockets live."""
    return "mbgp-" + host_id.replace("-", "")[:10]


def link_name(port_id: str) -> str:
    """The speaker's end of an uplink's BGP link (≤ 15 characters); the OVS
    end is this plus "p"."""
    return "mb" + port_id.replace("-", "")[:10]
