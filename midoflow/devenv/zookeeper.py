"""Start and stop real ZooKeeper servers (Debian's ``zookeeper`` package, JDK 17)
on loopback ports, for tests, the demo and by hand.

    with ZooKeeperServer() as zk:             # one standalone server
        store = ZkStore(zk.hosts)
    with ZooKeeperEnsemble(n=3) as ens:       # three servers, one quorum
        ens.servers[0].kill()

From a shell::

    python -m midoflow.devenv.zookeeper start [--ensemble 3] [--dir D] [--port P] [--background]
    python -m midoflow.devenv.zookeeper stop --dir D

Every server started here is stopped at interpreter exit (atexit) and, unless
started with ``die_with_parent=False`` (``--background``), also dies with the
process that started it (Linux ``PR_SET_PDEATHSIG``), so a killed test run
leaves no java process behind.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

JAVA_CANDIDATES = ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java",)
ZK_JAR_DIR = Path("/usr/share/java")
ZK_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
PID_FILE = "zookeeper.pid"
LOG_FILE = "zookeeper.log"


class ZooKeeperError(RuntimeError):
    """A server could not be started; the message says what to do."""


# --------------------------------------------------------------------- helpers

_port_lock = threading.Lock()
_ports_given: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before by
    this process. The kernel picks it from the ephemeral range, so parallel
    test runs (other processes) do not clash in practice."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise ZooKeeperError("no free TCP port on 127.0.0.1")


def find_java(java: str | None = None) -> str:
    for cand in (java, os.environ.get("MIDOFLOW_JAVA"), *JAVA_CANDIDATES, shutil.which("java")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise ZooKeeperError(
        "java not found: run `make setup` (installs openjdk-17-jre-headless), "
        "or set MIDOFLOW_JAVA to a java 17 binary")


def zk_classpath() -> str:
    jar = ZK_JAR_DIR / "zookeeper.jar"
    if not jar.exists():
        raise ZooKeeperError(
            f"{jar} not found: run `make setup` (installs Debian's zookeeper package)")
    # zookeeper.jar's manifest lists its dependencies; add a logger so the log
    # file says something useful.
    cp = [str(jar)]
    simple = ZK_JAR_DIR / "slf4j-simple.jar"
    if simple.exists():
        cp.append(str(simple))
    return ":".join(cp)


def four_letter(port: int, cmd: str = "srvr", timeout: float = 1.0,
                host: str = "127.0.0.1") -> str:
    """Send a four-letter-word command; '' if the server does not answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(cmd.encode())
            chunks = []
            while True:
                b = s.recv(4096)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def server_mode(port: int, timeout: float = 1.0) -> str | None:
    """leader / follower / standalone, or None if not serving."""
    for line in four_letter(port, "srvr", timeout).splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _is_zk_process(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return ZK_MAIN.encode() in cmd


def _progress(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[zookeeper] {msg}", file=sys.stderr, flush=True)


_live: set[ZooKeeperServer] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for s in servers:
        with contextlib.suppress(Exception):
            s.kill()


# ---------------------------------------------------------------------- server


class ZooKeeperServer:
    """One ZooKeeper server process: standalone, or a member of an ensemble
    when ``peers`` ({myid: (quorum_port, election_port)}) is given."""

    def __init__(self, base_dir: str | os.PathLike | None = None, client_port: int | None = None,
                 *, myid: int | None = None,
                 peers: dict[int, tuple[int, int]] | None = None,
                 tick_time: int = 500, heap: str = "256m", java: str | None = None,
                 die_with_parent: bool = True, quiet: bool = True) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="midoflow-zk-"))
        self.client_port = client_port or free_port()
        self.myid = myid
        self.peers = peers
        self.tick_time = tick_time
        self.heap = heap
        self.java = java
        self.die_with_parent = die_with_parent
        self.quiet = quiet
        self.proc: subprocess.Popen | None = None
        self._log = None

    # ---- paths and config
    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / LOG_FILE

    @property
    def pid_path(self) -> Path:
        return self.base_dir / PID_FILE

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def config(self) -> str:
        lines = [
            f"tickTime={self.tick_time}",
            "initLimit=10",
            "syncLimit=4",
            f"dataDir={self.data_dir}",
            f"clientPort={self.client_port}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=*",
            "maxClientCnxns=0",
            "autopurge.purgeInterval=0",
        ]
        if self.peers:
            for sid, (qport, eport) in sorted(self.peers.items()):
                lines.append(f"server.{sid}=127.0.0.1:{qport}:{eport}")
            lines.append("quorumListenOnAllIPs=false")
            lines.append("cnxTimeout=1000")
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.peers:
            (self.data_dir / "myid").write_text(f"{self.myid}\n")
        cfg = self.base_dir / "zoo.cfg"
        cfg.write_text(self.config())
        return cfg

    # ---- lifecycle
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        """Start the JVM without waiting for it to serve."""
        if self.running():
            return
        java = find_java(self.java)
        cp = zk_classpath()
        cfg = self.write_config()
        cmd = [
            java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Xshare:auto", "-Djava.awt.headless=true",
            "-Dzookeeper.fastleader.minNotificationInterval=100",
            "-Dzookeeper.fastleader.maxNotificationInterval=1000",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
            "-cp", cp, ZK_MAIN, str(cfg),
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log.write(f"\n==== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.base_dir, preexec_fn=_set_pdeathsig if self.die_with_parent else None,
            start_new_session=not self.die_with_parent)
        self.pid_path.write_text(f"{self.proc.pid}\n")
        with _live_lock:
            _live.add(self)

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait until the server serves clients; its mode (standalone, leader,
        follower)."""
        deadline = time.monotonic() + timeout
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            if not self.running():
                raise ZooKeeperError(
                    f"ZooKeeper on port {self.client_port} exited (code "
                    f"{self.proc.returncode if self.proc else '?'}): see {self.log_path}")
            mode = server_mode(self.client_port, timeout=0.5)
            if mode:
                return mode
            if time.monotonic() - last_note > 3:
                _progress(f"waiting for port {self.client_port} to serve ...", self.quiet)
                last_note = time.monotonic()
            time.sleep(0.05)
        raise ZooKeeperError(
            f"ZooKeeper on port {self.client_port} not serving after {timeout:.0f} s: "
            f"see {self.log_path}")

    def start(self, timeout: float = 30.0) -> ZooKeeperServer:
        t0 = time.monotonic()
        self.launch()
        try:
            mode = self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        _progress(f"{mode} serving on {self.hosts} in {time.monotonic() - t0:.1f} s "
                  f"(log {self.log_path})", self.quiet)
        return self

    def _reap(self, timeout: float) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
        with _live_lock:
            _live.discard(self)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.running():
            self.proc.terminate()
        self._reap(timeout)

    def kill(self) -> None:
        """SIGKILL: the server dies without a goodbye, like a crashed host."""
        if self.running():
            self.proc.kill()
        self._reap(5.0)

    def restart(self, timeout: float = 30.0) -> ZooKeeperServer:
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop, and remove the base dir if this object created it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def mode(self) -> str | None:
        return server_mode(self.client_port) if self.running() else None

    def __enter__(self) -> ZooKeeperServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"ZooKeeperServer({self.hosts}, pid={self.pid}, dir={self.base_dir})"


# -------------------------------------------------------------------- ensemble


class ZooKeeperEnsemble:
    """``n`` servers on loopback ports forming one quorum. ``servers[i]`` are
    :class:`ZooKeeperServer` objects (myid ``i + 1``) that can be killed and
    restarted one by one."""

    def __init__(self, base_dir: str | os.PathLike | None = None, n: int = 3,
                 client_ports: Iterable[int] | None = None, *, tick_time: int = 500,
                 heap: str = "256m", java: str | None = None, die_with_parent: bool = True,
                 quiet: bool = True) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="midoflow-zk-ens-"))
        ports = list(client_ports) if client_ports else [free_port() for _ in range(n)]
        if len(ports) != n:
            raise ValueError(f"{n} servers need {n} client ports, got {len(ports)}")
        peers = {i + 1: (free_port(), free_port()) for i in range(n)}
        self.quiet = quiet
        self.servers = [
            ZooKeeperServer(self.base_dir / f"zk{i + 1}", ports[i], myid=i + 1, peers=peers,
                            tick_time=tick_time, heap=heap, java=java,
                            die_with_parent=die_with_parent, quiet=quiet)
            for i in range(n)
        ]

    @property
    def hosts(self) -> str:
        return ",".join(s.hosts for s in self.servers)

    def start(self, timeout: float = 60.0) -> ZooKeeperEnsemble:
        t0 = time.monotonic()
        _progress(f"starting {len(self.servers)} servers in {self.base_dir} ...", self.quiet)
        try:
            for s in self.servers:
                s.launch()
            modes = [s.wait_ready(max(1.0, timeout - (time.monotonic() - t0)))
                     for s in self.servers]
        except BaseException:
            self.kill()
            raise
        _progress(f"ensemble {self.hosts} serving in {time.monotonic() - t0:.1f} s "
                  f"({', '.join(modes)})", self.quiet)
        return self

    def wait_quorum(self, timeout: float = 30.0) -> list[str | None]:
        """Wait until every running server serves; their modes."""
        deadline = time.monotonic() + timeout
        for s in self.servers:
            if s.running():
                s.wait_ready(max(0.5, deadline - time.monotonic()))
        return self.modes()

    def modes(self) -> list[str | None]:
        return [s.mode() for s in self.servers]

    def leader(self) -> ZooKeeperServer | None:
        for s in self.servers:
            if s.mode() == "leader":
                return s
        return None

    def stop(self) -> None:
        for s in self.servers:
            if s.running():
                s.proc.terminate()
        for s in self.servers:
            s.stop()

    def kill(self) -> None:
        for s in self.servers:
            s.kill()

    def restart(self, timeout: float = 60.0) -> ZooKeeperEnsemble:
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ZooKeeperEnsemble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


# ------------------------------------------------------------------------- CLI


def _stop_dir(d: Path) -> int:
    pids = sorted(d.glob(PID_FILE)) + sorted(d.glob(f"*/{PID_FILE}"))
    if not pids:
        print(f"no {PID_FILE} under {d}: nothing to stop", file=sys.stderr)
        return 1
    stopped = []
    for pf in pids:
        try:
            pid = int(pf.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _is_zk_process(pid):
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        pf.unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    for pid in stopped:
        while _is_zk_process(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_zk_process(pid):
            os.kill(pid, signal.SIGKILL)
    print(f"stopped {len(stopped)} ZooKeeper server(s) in {d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m midoflow.devenv.zookeeper",
                                 description="Start or stop ZooKeeper on loopback ports.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="start one server or an ensemble")
    st.add_argument("--ensemble", type=int, default=0, metavar="N",
                    help="start N servers forming one quorum (default: one standalone)")
    st.add_argument("--dir", help="data, config and logs (default: a new temp dir)")
    st.add_argument("--port", type=int, help="client port (ensemble: of the first server, "
                    "the others follow); default: free ports")
    st.add_argument("--background", action="store_true",
                    help="leave the servers running, write pid files, and return")
    sp = sub.add_parser("stop", help="stop servers started with --background")
    sp.add_argument("--dir", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "stop":
        return _stop_dir(Path(args.dir))

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="midoflow-zk-"))
    base.mkdir(parents=True, exist_ok=True)
    keep = {"die_with_parent": not args.background, "quiet": False}
    if args.ensemble > 1:
        ports = [args.port + i for i in range(args.ensemble)] if args.port else None
        zk: ZooKeeperServer | ZooKeeperEnsemble = ZooKeeperEnsemble(
            base, args.ensemble, ports, **keep)
    else:
        zk = ZooKeeperServer(base, args.port, **keep)
    try:
        zk.start()
    except ZooKeeperError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(zk.hosts, flush=True)
    if args.background:
        servers = zk.servers if isinstance(zk, ZooKeeperEnsemble) else [zk]
        with _live_lock:  # not ours to stop at exit any more
            for s in servers:
                _live.discard(s)
        print(f"running in the background; stop with: python -m midoflow.devenv.zookeeper "
              f"stop --dir {base}", file=sys.stderr)
        return 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print("[zookeeper] running; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while not stop.wait(1.0):
            servers = zk.servers if isinstance(zk, ZooKeeperEnsemble) else [zk]
            dead = [s for s in servers if not s.running()]
            if dead:
                print(f"[zookeeper] server {dead[0].hosts} exited: see {dead[0].log_path}",
                      file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        zk.stop()
        print("[zookeeper] stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
