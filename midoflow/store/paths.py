"""Where agents publish state, as store state paths (MidoNet's layout)."""


def host_alive(host_id: str) -> str:
    """Ephemeral: the host's agent is running. Data: HostState as dict."""
    return f"state/hosts/{host_id}"


HOSTS_ALIVE = "state/hosts"


def port_active(port_id: str) -> str:
    """Ephemeral: the port is bound and up on a host. Data: {"host_id": ...}."""
    return f"state/ports/{port_id}"


PORTS_ACTIVE = "state/ports"


def mac_table(bridge_id: str) -> str:
    """Children named ``<mac>,<port_id>``: where each MAC was learned on the bridge.

    The entry lives in its name, as in MidoNet's replicated maps, so one
    children watch per bridge is enough to follow the whole table."""
    return f"tables/bridges/{bridge_id}/macs"


def mac_entry(bridge_id: str, mac: str, port_id: str) -> str:
    """Ephemeral, written by the agent of the host where the port is."""
    return f"{mac_table(bridge_id)}/{mac},{port_id}"


def parse_mac_entry(name: str) -> tuple[str, str] | None:
    """``"<mac>,<port_id>"`` -> (mac, port_id); None for a foreign name."""
    mac, sep, port_id = name.partition(",")
    return (mac, port_id) if sep and mac and port_id else None
