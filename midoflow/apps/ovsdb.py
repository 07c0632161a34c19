"""Reading and preparing the local OVS through ovs-vsctl (green subprocess)."""

from __future__ import annotations

import json
import logging

from eventlet.green import subprocess

LOG = logging.getLogger(__name__)


class OvsError(RuntimeError):
    pass


def vsctl(db: str, *args: str, timeout: int = 10) -> str:
    cmd = ["ovs-vsctl", f"--db={db}", f"--timeout={timeout}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OvsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def _cell(v):
    """Decode one OVSDB JSON cell: ["map", [[k, v], ...]] / ["set", [...]] / scalar."""
    if isinstance(v, list) and len(v) == 2 and v[0] == "map":
        return {k: val for k, val in v[1]}
    if isinstance(v, list) and len(v) == 2 and v[0] == "set":
        return [_cell(x) for x in v[1]]
    return v


def list_interfaces(db: str, bridge: str) -> dict[str, tuple[int, str | None]]:
    """The bridge's interfaces: name -> (ofport, external_ids:iface-id)."""
    names = set(vsctl(db, "list-ifaces", bridge).split())
    out = json.loads(vsctl(db, "--format=json", "--columns=name,ofport,external_ids",
                           "list", "Interface"))
    result: dict[str, tuple[int, str | None]] = {}
    for row in out.get("data", []):
        name, ofport, ext = _cell(row[0]), _cell(row[1]), _cell(row[2])
        if name not in names:
            continue
        ofport = ofport if isinstance(ofport, int) else -1
        ext = ext if isinstance(ext, dict) else {}
        result[name] = (ofport, ext.get("iface-id"))
    return result


def ensure_tunnel_ports(db: str, bridge: str, local_ip: str, vxlan: str, gre: str) -> None:
    """One VXLAN and one GRE port; remote IP and key are set per flow."""
    for name, kind, req in ((vxlan, "vxlan", 1), (gre, "gre", 2)):
        vsctl(db, "--may-exist", "add-port", bridge, name, "--", "set", "Interface", name,
              f"type={kind}", "options:remote_ip=flow", "options:key=flow",
              f"options:local_ip={local_ip}", f"ofport_request={req}")
