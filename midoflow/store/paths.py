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


def arp_table(router_id: str) -> str:
    """Children named ``<ip>,<mac>,<learned_at>``: the router's ARP table.

    Like the MAC table, an entry lives in its name (one children watch per
    router follows the whole table). ``learned_at`` is whole epoch seconds;
    a refresh writes a new name and removes the old one."""
    return f"tables/routers/{router_id}/arp"


def arp_entry(router_id: str, ip: str, mac: str, learned_at: float) -> str:
    """Ephemeral, written by the agent that saw the ARP packet."""
    return f"{arp_table(router_id)}/{ip},{mac},{int(learned_at)}"


def parse_arp_entry(name: str) -> tuple[str, str, float] | None:
    """``"<ip>,<mac>,<learned_at>"`` -> (ip, mac, learned_at); None for a foreign name."""
    parts = name.split(",")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        return parts[0], parts[1], float(parts[2])
    except ValueError:
        return None


def learned_routes(router_id: str) -> str:
    """Children named ``<dst>_<plen>,<gateway>,<port_id>,<weight>``: the routes
    the router's BGP speakers learned (one children watch follows them all).

    Each is ephemeral, written by the agent of the gateway host whose speaker
    holds the session: it goes with the session, or with the agent."""
    return f"tables/routers/{router_id}/learned_routes"


def learned_route_entry(router_id: str, dst_cidr: str, gateway: str, port_id: str,
                        weight: int) -> str:
    return f"{learned_routes(router_id)}/{dst_cidr.replace('/', '_')},{gateway},{port_id},{weight}"


def parse_learned_route(name: str) -> dict | None:
    """A learned route's entry name -> {"dst_cidr", "next_hop_gateway",
    "next_hop_port", "weight"}; None for a foreign name."""
    parts = name.split(",")
    if len(parts) != 4 or not all(parts):
        return None
    dst, gateway, port_id, weight = parts
    net, sep, plen = dst.rpartition("_")
    if not sep or not plen.isdigit() or not weight.isdigit():
        return None
    return {"dst_cidr": f"{net}/{plen}", "next_hop_gateway": gateway,
            "next_hop_port": port_id, "weight": int(weight)}


def bgp_peer_state(peer_id: str) -> str:
    """Ephemeral: the session of a configured BGP peer, written by the agent
    whose speaker holds it. Data: {"host_id", "state" ("idle", "connect",
    "established", ...), "since" (epoch s), "prefixes_received",
    "prefixes_advertised"}, and from the per-peer table (midoflow.bgp.table):
    "flaps", "last_error", "last_error_at", "prefixes_accepted",
    "prefixes_refused", "prefixes_filtered", "prefixes_stale", "prefix_limit"."""
    return f"state/bgp_peers/{peer_id}"


BGP_PEERS_STATE = "state/bgp_peers"


MEMBER_HEALTH = "state/lb/members"


def member_health(member_id: str) -> str:
    """Persistent (survives the checker): a pool member's health as the elected
    health checker last found it. Data: {"status": "ONLINE" | "ERROR",
    "since": epoch seconds, "host_id": the checker's host, "reason": text}.
    Written on a change only; deleted with the member (or when its pool loses
    its monitor)."""
    return f"{MEMBER_HEALTH}/{member_id}"


HEALTH_ELECTION = "state/lb/election"  # kazoo Election: one agent runs every check
