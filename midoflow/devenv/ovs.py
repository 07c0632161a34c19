"""A private Open vSwitch for tests and benchmarks: its own ovsdb-server and
ovs-vswitchd in a temporary directory, vswitchd in a network namespace of its
own (``unshare -n``), so the ports it makes touch nothing of the host's.

    with PrivateOvs() as ovs:
        ovs.vsctl("add-br", "br-t", "--", "set", "Bridge", "br-t", "datapath_type=netdev")
        ... OvsdbMonitor(ovs.remote, "br-t") ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class OvsStartError(RuntimeError):
    """OVS could not be started; the message says what to do."""


class PrivateOvs:
    def __init__(self, rundir: str | None = None) -> None:
        self.rundir = rundir or tempfile.mkdtemp(prefix="mfl-ovs-")
        self._own_dir = rundir is None
        self.sock = os.path.join(self.rundir, "db.sock")
        self.remote = f"unix:{self.sock}"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(OVS_RUNDIR=self.rundir, OVS_LOGDIR=self.rundir, OVS_DBDIR=self.rundir,
                   OVS_SYSCONFDIR=self.rundir, OVS_PKGDATADIR="/usr/share/openvswitch")
        return env

    def _run(self, *cmd: str) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self._env(), timeout=30)
        if proc.returncode != 0:
            raise OvsStartError(f"{' '.join(cmd)}: {proc.stderr.strip()} (logs in {self.rundir})")
        return proc.stdout

    def vsctl(self, *args: str) -> str:
        return self._run("ovs-vsctl", f"--db={self.remote}", "--timeout=20", *args)

    def start_db(self) -> None:
        """ovsdb-server (again, on the same database after :meth:`kill_db`)."""
        conf = os.path.join(self.rundir, "conf.db")
        if not os.path.exists(conf):
            if not shutil.which("ovsdb-server"):
                raise OvsStartError("ovsdb-server not found: apt-get install openvswitch-switch")
            self._run("ovsdb-tool", "create", conf, SCHEMA)
        r = self.rundir
        self._run("ovsdb-server", conf, f"--remote=punix:{self.sock}",
                  f"--pidfile={r}/ovsdb-server.pid", f"--log-file={r}/ovsdb-server.log",
                  f"--unixctl={r}/ovsdb-server.ctl", "--detach", "--no-chdir")

    def start(self) -> PrivateOvs:
        self.start_db()
        self.vsctl("--no-wait", "init")
        r = self.rundir
        self._run("unshare", "-n", "ovs-vswitchd", self.remote, f"--pidfile={r}/ovs-vswitchd.pid",
                  f"--log-file={r}/ovs-vswitchd.log", f"--unixctl={r}/ovs-vswitchd.ctl",
                  "--detach", "--no-chdir", "-vconsole:off")
        return self

    def _kill(self, daemon: str) -> None:
        """SIGKILL (a dead process holds no lock: a new one may start at once)."""
        pidfile = os.path.join(self.rundir, f"{daemon}.pid")
        try:
            pid = int(open(pidfile).read().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def kill_db(self) -> None:
        """Stop ovsdb-server (its database file stays)."""
        self._kill("ovsdb-server")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock)

    def stop(self) -> None:
        """Kill both daemons (a throwaway instance: nothing to save) and, if
        the directory was ours, remove it."""
        self._kill("ovs-vswitchd")
        self._kill("ovsdb-server")
        if self._own_dir:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def __enter__(self) -> PrivateOvs:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
