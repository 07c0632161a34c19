"""ovs-vswitchd's control socket (``ovs-appctl``): the datapath settings the
agent needs and OpenFlow cannot make.

OVS's conntrack reassembles IPv4 fragments and drops non-last ones below
1,200 bytes by default; the security groups in OVS (``sg_conntrack``) send
every fragment of a protected port through it, and a router's split of a
1,500-byte packet onto a 1,450-byte network makes two of about 740
(``midoflow.agent.fragments``). So the agent lowers the bound to OVS's
lowest, 400, at every connection to its switch (a restarted ovs-vswitchd
forgets it).
"""

from __future__ import annotations

import logging
import os

from eventlet.green import subprocess

LOG = logging.getLogger(__name__)

IPF_MIN_FRAG = 400  # OVS's lowest bound (ipf.c)


def unixctl_path(ovsdb: str, configured: str = "") -> str | None:
    """The ovs-vswitchd control socket: ``configured``, else the one beside
    the OVSDB socket (``ovs-vswitchd.ctl``, or ``ovs-vswitchd.<pid>.ctl``
    from its pidfile, as Debian's packages run it); None when not found."""
    if configured:
        return configured
    if not ovsdb.startswith("unix:"):
        return None
    rundir = os.path.dirname(ovsdb[len("unix:"):])
    plain = os.path.join(rundir, "ovs-vswitchd.ctl")
    if os.path.exists(plain):
        return plain
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    path = os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")
    return path if os.path.exists(path) else None


def set_ipf_min_frag(ctl: str | None, size: int = IPF_MIN_FRAG) -> str | None:
    """Set OVS's smallest accepted IPv4 fragment; None when done, else why
    not (the agent logs it: fragments below 1,200 bytes to protected ports
    are then dropped by OVS)."""
    if ctl is None:
        return ("no ovs-vswitchd control socket found beside the OVSDB socket: "
                "set ovs_unixctl in the agent's configuration")
    cmd = ["ovs-appctl", "-t", ctl, "dpctl/ipf-set-min-frag", "v4", str(size)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)}: {e}"
    if proc.returncode != 0:
        return f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}"
    return None
