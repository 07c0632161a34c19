"""Start and stop real Apache Cassandra 5.0 nodes (the jars of Maven Central's
``org.apache.cassandra:cassandra-all``, run on JDK 17) on loopback addresses,
for tests, the demo and by hand.

    with CassandraNode() as node:              # one node on 127.0.0.1
        store = CassandraFlowState([node.address], port=node.native_port, ...)
    with CassandraCluster(n=3) as cluster:     # three nodes on 127.0.0.1/.2/.3
        cluster.nodes[2].stop()

From a shell::

    python -m midoflow.devenv.cassandra jars           # resolve the jars (once)
    python -m midoflow.devenv.cassandra start [--nodes 3] [--dir D] [--port P] [--background]
    python -m midoflow.devenv.cassandra stop --dir D

The jars are resolved once by ``scripts/cassandra-jars.sh`` (Maven, from
``scripts/cassandra-pom.xml``) into ``.cache/cassandra/lib`` in the source tree
(or ``$MIDOFLOW_CASSANDRA_LIB``); ``make setup`` does it, and so does the first
start here when they are missing.

Nodes require a password (issue 11: the flow state is not an open door):
they start with ``PasswordAuthenticator`` and ``CassandraAuthorizer``; once a
node (or the whole cluster) serves CQL, :func:`setup_auth` logs in as the
well-known ``cassandra`` superuser, replicates ``system_auth`` to every node
(NetworkTopologyStrategy, RF = number of nodes, so a login survives a node
down), creates a superuser ``midoflow_admin`` and the store role ``midoflow``
(LOGIN, CREATE ON ALL KEYSPACES: it makes its keyspace on first use and owns
it from then on), each with a random password, then drops ``cassandra``.
``node.credentials`` is the store role's login, ``node.admin_credentials``
the admin's; both are also written, mode 0600, to ``credentials.ini`` and
``admin-credentials.ini`` in the node's (cluster's) folder, in the format of
:mod:`midoflow.store.credentials` (what an agent's ``credentials_file`` reads).
``auth=False`` starts an open node.

Every node started here is stopped at interpreter exit (atexit) and, unless
started with ``die_with_parent=False`` (``--background``), also dies with the
thread that started it (Linux ``PR_SET_PDEATHSIG``), so a killed test run
leaves no JVM behind. Nodes are configured for tests: one token each, no JMX,
no commit-log fsync, small heap, fast start (see :data:`TEST_JVM_FLAGS`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # cassandra.cluster imports its eventlet reactor (to detect monkey patching)
    # and eventlet announces its own deprecation on import: not ours to report.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import cassandra.cluster  # noqa: F401

from cassandra import (
    AlreadyExists,
    AuthenticationFailed,
    ConfigurationException,
    ConsistencyLevel,
    DriverException,
    InvalidRequest,
    OperationTimedOut,
    RequestValidationException,
    Unauthorized,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.protocol import ErrorMessage
from cassandra.query import SimpleStatement, tuple_factory

from midoflow.store.credentials import (
    CredentialsError,
    Login,
    generate_password,
    load_credentials,
    write_credentials,
)

JAVA_CANDIDATES = ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java",)
CASSANDRA_MAIN = "org.apache.cassandra.service.CassandraDaemon"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIB = REPO_ROOT / ".cache" / "cassandra" / "lib"
JARS_SCRIPT = REPO_ROOT / "scripts" / "cassandra-jars.sh"
JARS_POM = REPO_ROOT / "scripts" / "cassandra-pom.xml"
RESOLVED_STAMP = ".resolved"  # written by scripts/cassandra-jars.sh when the copy is complete
PID_FILE = "cassandra.pid"
LOG_FILE = "cassandra.log"
CLUSTER_NAME = "midoflow"
DEFAULT_HEAP = "512M"
DEFAULT_SUPERUSER = Login("cassandra", "cassandra")  # Cassandra's well-known default
STORE_ROLE = "midoflow"
ADMIN_ROLE = "midoflow_admin"
CREDENTIALS_FILE = "credentials.ini"  # the store role's login ([cassandra])
ADMIN_CREDENTIALS_FILE = "admin-credentials.ini"
DATACENTER = "datacenter1"  # in cassandra-rackdc.properties (SimpleSnitch's name too)
BAD_CREDENTIALS = 0x0100  # the native protocol's error code for a refused login
# The native protocol's codes of the errors the driver raises as its own classes.
_REQUEST_ERRORS = ((Unauthorized, 0x2100), (AlreadyExists, 0x2400),
                   (ConfigurationException, 0x2300), (InvalidRequest, 0x2200))

# Three evenly spaced Murmur3 tokens, one per node (num_tokens: 1).
TOKENS_3 = (-9223372036854775808, -3074457345618258603, 3074457345618258602)

# From Cassandra 5.0's conf/jvm17-server.options (JPMS): without them the
# daemon stops with "unable to access required classes" or
# InaccessibleObjectException. Modules this JVM lacks are skipped.
JPMS_FLAGS = (
    ("--add-exports", "java.base/jdk.internal.misc"),
    ("--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi"),
    ("--add-exports", "java.rmi/sun.rmi.registry"),
    ("--add-exports", "java.rmi/sun.rmi.server"),
    ("--add-exports", "java.sql/java.sql"),
    ("--add-exports", "java.base/java.lang.ref"),
    ("--add-exports", "jdk.unsupported/sun.misc"),
    ("--add-exports", "jdk.compiler/com.sun.tools.javac.file"),
    ("--add-exports", "jdk.attach/sun.tools.attach"),
    ("--add-opens", "java.base/java.lang.module"),
    ("--add-opens", "java.base/jdk.internal.loader"),
    ("--add-opens", "java.base/jdk.internal.ref"),
    ("--add-opens", "java.base/jdk.internal.reflect"),
    ("--add-opens", "java.base/jdk.internal.math"),
    ("--add-opens", "java.base/jdk.internal.module"),
    ("--add-opens", "java.base/jdk.internal.util.jar"),
    ("--add-opens", "jdk.management/com.sun.management.internal"),
    ("--add-opens", "java.base/sun.nio.ch"),
    ("--add-opens", "java.base/java.io"),
    ("--add-opens", "java.base/java.lang.reflect"),
    ("--add-opens", "jdk.compiler/com.sun.tools.javac"),
    ("--add-opens", "java.base/java.lang"),
    ("--add-opens", "java.base/java.util"),
    ("--add-opens", "java.base/java.nio"),
)

# Test-only start-up shortcuts (Cassandra's own test harness uses them): no
# gossip settle wait, no fsync of the commit log (a killed process loses
# nothing, a crashed machine would). Deliberately NOT
# ``cassandra.unsafesystem=true`` nor ``cassandra.test.flush_local_schema_changes
# =false``: with either, a node killed with SIGKILL comes back without the
# schema changes it had seen (the schema is loaded before the commit log is
# replayed), answering "keyspace ... does not exist" or INCOMPATIBLE_SCHEMA and
# dropping the replayed writes of those tables (seen here); and neither saved
# measurable start time.
TEST_JVM_FLAGS = (
    "-Dcassandra-foreground=yes",  # otherwise the daemon closes stdout/stderr
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.skip_sync=true",
    "-Dcassandra.libjemalloc=-",
    "-Dcassandra.ring_delay_ms=1000",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Djava.net.preferIPv4Stack=true",
    "-Djava.awt.headless=true",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)

# Password authentication, and what makes it survive a crashed node.
#
# Every request checks the role's permissions, and every login its password,
# against caches filled from system_auth (replicated to every node by
# setup_auth). Filling an entry that is missing (a node just restarted, a new
# table, an expired login) is a read done on the request's own clock. At
# Cassandra 5.0's default auth_read_consistency_level, LOCAL_QUORUM, that read
# goes to the node itself and one other replica picked in ring order; when
# that other one has just crashed and is not yet known to be down (the failure
# detector takes about 10 s) the read waits for the speculative retry or the
# read timeout (seconds), and the write behind it then fails at once with
# WriteTimeout "0 of 2 replicas answered": its 2 s had run out before its
# mutations were sent (seen here in the 3-node test when the seed was killed
# right after nodes 2 and 3 restarted with cold caches: the login role's
# system_auth partition lives on node 3, node 1, node 2 in ring order).
#
# What to configure in a production cluster, as done here:
# * system_auth replicated to every node of each datacenter (setup_auth);
# * auth_read_consistency_level: LOCAL_ONE, with a snitch that lists the node
#   itself first among the replicas (GossipingPropertyFileSnitch and the other
#   topology snitches do; SimpleSnitch keeps ring order and so may still pick
#   a dead peer): every node then answers logins and permission checks from
#   its own copy, whatever the other nodes do. This is what Cassandra did
#   before 4.1 for every role but the default superuser. The price: a change
#   of password or grant that a node missed while it was down is seen there
#   only once hints or a repair deliver it; writes stay at EACH_QUORUM (the
#   default auth_write_consistency_level), so with one node down they succeed;
# * auth_cache_warming_enabled: a starting node loads every role and
#   permission before it serves clients, so its first requests do not read;
# * roles and permissions kept 60 s and refreshed in the background every 2 s:
#   a refresh that waits on a dead replica serves the old entry meanwhile
#   (a REVOKE applies within about 2 s of the next use, as with the defaults).
AUTH_YAML: dict[str, object] = {
    "authenticator": "PasswordAuthenticator",
    "authorizer": "CassandraAuthorizer",
    "role_manager": "CassandraRoleManager",
    "auth_read_consistency_level": "LOCAL_ONE",
    "auth_write_consistency_level": "EACH_QUORUM",
    "auth_cache_warming_enabled": "true",
    "roles_validity": "60s", "roles_update_interval": "2s",
    "permissions_validity": "60s", "permissions_update_interval": "2s",
}
RACKDC_PROPERTIES = f"dc={DATACENTER}\nrack=rack1\n"

# INFO and up to stdout (cassandra.log); Cassandra's own DEBUG messages (slow
# queries, speculative retries, timeouts) to debug.log as a stock install does,
# written asynchronously, at most 50 MB.
LOGBACK_XML = """\
<configuration scan="false" debug="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter"><level>INFO</level></filter>
    <encoder>
      <pattern>%d{HH:mm:ss.SSS} %-5level [%thread] %logger{0}: %msg%n</pattern>
    </encoder>
  </appender>
  <appender name="DEBUGLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>${cassandra.logdir}/debug.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>${cassandra.logdir}/debug.log.%i</fileNamePattern>
      <minIndex>1</minIndex><maxIndex>1</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>25MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%d{HH:mm:ss.SSS} %-5level [%thread] %logger{0}: %msg%n</pattern>
    </encoder>
  </appender>
  <appender name="ASYNCDEBUGLOG" class="ch.qos.logback.classic.AsyncAppender">
    <queueSize>1024</queueSize>
    <discardingThreshold>0</discardingThreshold>
    <includeCallerData>false</includeCallerData>
    <appender-ref ref="DEBUGLOG"/>
  </appender>
  <logger name="org.apache.cassandra" level="DEBUG"/>
  <root level="INFO">
    <appender-ref ref="STDOUT"/>
    <appender-ref ref="ASYNCDEBUGLOG"/>
  </root>
</configuration>
"""


class CassandraError(RuntimeError):
    """A node could not be started; the message says what to do."""


# --------------------------------------------------------------------- helpers

_port_lock = threading.Lock()
_ports_given: set[int] = set()


def _bindable(addr: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def free_port(addresses: Sequence[str] = ("127.0.0.1",)) -> int:
    """A TCP port free now on every address in ``addresses`` (so three nodes on
    127.0.0.1/.2/.3 can share it) and not handed out before by this process."""
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((addresses[0], 0))
                port = s.getsockname()[1]
            if port in _ports_given:
                continue
            if all(_bindable(a, port) for a in addresses[1:]):
                _ports_given.add(port)
                return port
    raise CassandraError(f"no TCP port free on all of {', '.join(addresses)}")


@functools.lru_cache(maxsize=4)
def java_major(java: str) -> int | None:
    """The feature version of a java binary (17 for "17.0.15"), None if unknown."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def find_java(java: str | None = None) -> str:
    for cand in (java, os.environ.get("MIDOFLOW_JAVA"), *JAVA_CANDIDATES):
        if cand and os.access(cand, os.X_OK):
            major = java_major(cand)
            if major is not None and major not in (11, 17):
                raise CassandraError(
                    f"{cand} is Java {major}; Cassandra 5.0 runs on Java 11 or 17 only (on "
                    f"newer ones it stops with \"Setting a system-wide Policy object is not "
                    f"supported\"): install openjdk-17-jre-headless (`make setup`) or point "
                    f"MIDOFLOW_JAVA at a java 17 binary")
            return cand
    raise CassandraError(
        "JDK 17's java not found (Cassandra 5.0 runs on Java 11 or 17 only): run "
        "`make setup` (installs openjdk-17-jre-headless), or set MIDOFLOW_JAVA to a java 17 "
        "binary")


@functools.lru_cache(maxsize=4)
def java_modules(java: str) -> frozenset[str]:
    """The module names this JVM has (``java --list-modules``)."""
    try:
        out = subprocess.run([java, "--list-modules"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise CassandraError(f"{java} --list-modules failed ({e}): is it a working JDK 17?") \
            from e
    return frozenset(line.split("@", 1)[0].strip() for line in out.splitlines() if line.strip())


def jpms_flags(java: str) -> list[str]:
    have = java_modules(java)
    flags = []
    for opt, target in JPMS_FLAGS:
        if target.split("/", 1)[0] in have:
            flags.append(f"{opt}={target}=ALL-UNNAMED")
    return flags


def lib_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("MIDOFLOW_CASSANDRA_LIB") or DEFAULT_LIB)


def wanted_version() -> str | None:
    """The Cassandra version scripts/cassandra-pom.xml names (None without it)."""
    try:
        pom = JARS_POM.read_text()
    except OSError:
        return None
    m = re.search(r"<cassandra.version>\s*([^<\s]+)\s*</cassandra.version>", pom)
    return m.group(1) if m else None


def jars_resolved(lib: Path) -> bool:
    """The folder holds a complete copy, of the version the pom names."""
    try:
        have = (lib / RESOLVED_STAMP).read_text().strip()
    except OSError:
        return False
    want = wanted_version()
    return (want is None or have == want) and any(lib.glob(f"cassandra-all-{have}.jar"))


def ensure_jars(path: str | os.PathLike | None = None, *, resolve: bool = True,
                quiet: bool = False) -> Path:
    """The folder holding cassandra-all and its dependencies; runs
    ``scripts/cassandra-jars.sh`` (Maven) first if they are not there yet and
    ``resolve`` is true."""
    lib = lib_dir(path)
    if jars_resolved(lib):
        return lib
    if not resolve or not JARS_SCRIPT.exists():
        raise CassandraError(
            f"Cassandra jars not found in {lib}: run `make setup` or "
            "`bash scripts/cassandra-jars.sh` (resolves org.apache.cassandra:cassandra-all "
            "from Maven Central), or set "
            "MIDOFLOW_CASSANDRA_LIB to a folder holding them")
    _progress(f"jars not in {lib} yet: running {JARS_SCRIPT} ...", quiet)
    env = dict(os.environ, MIDOFLOW_CASSANDRA_LIB=str(lib))
    try:  # its progress lines go where ours do (pytest may have replaced sys.stderr)
        out: int | None = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        out = None
    res = subprocess.run(["bash", str(JARS_SCRIPT)], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL if quiet else out)
    if res.returncode != 0 or not jars_resolved(lib):
        raise CassandraError(
            f"{JARS_SCRIPT} failed (exit {res.returncode}): see its messages above; is Maven "
            "installed (`make setup`) and Maven Central reachable?")
    return lib


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _is_cassandra_process(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return CASSANDRA_MAIN.encode() in cmd


def _progress(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[cassandra] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------- CQL through cassandra-driver
# Each call is one short-lived driver session pinned to one node (that node
# coordinates the query), with schema and token metadata off: a probe, not a
# client. The consistency constants are the driver's ConsistencyLevel values.

CL_ONE, CL_QUORUM, CL_ALL = ConsistencyLevel.ONE, ConsistencyLevel.QUORUM, ConsistencyLevel.ALL


class CqlError(Exception):
    """The node answered with an error (code, message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code:#06x}: {message}")
        self.code = code
        self.message = message


def cql_query(host: str, port: int, query: str | Sequence[str], consistency: int = CL_ONE,
              timeout: float = 5.0, auth: Login | tuple[str, str] | None = None
              ) -> list[list[Any]]:
    """Run one CQL query (or several in turn, on one connection) with ``host``
    as coordinator, logged in as ``auth`` (user, password) if given; the rows
    of the last one (cells decoded by the driver: str, int, UUID ...). Raises
    OSError when the node does not answer, CqlError when it answers with an
    error (``BAD_CREDENTIALS`` when it refuses the login)."""
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]),
                               request_timeout=timeout, row_factory=tuple_factory)
    cluster = Cluster([host], port=port, protocol_version=4, connect_timeout=timeout,
                      control_connection_timeout=timeout,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                      schema_metadata_enabled=False, token_metadata_enabled=False,
                      auth_provider=PlainTextAuthProvider(*auth) if auth else None)
    try:
        session = cluster.connect()
        rows: Any = []
        for q in [query] if isinstance(query, str) else query:
            rows = session.execute(SimpleStatement(q, consistency_level=consistency))
        return [list(r) for r in rows]
    except ErrorMessage as e:  # the node's own error (unavailable, invalid query ...)
        raise CqlError(e.code, e.message) from e
    except RequestValidationException as e:  # the same, as the driver's own classes
        code = next((c for cls, c in _REQUEST_ERRORS if isinstance(e, cls)), 0x2000)
        raise CqlError(code, str(e)) from e
    except NoHostAvailable as e:
        errors = list(e.errors.values())
        if errors and isinstance(errors[0], AuthenticationFailed):
            raise CqlError(BAD_CREDENTIALS, str(errors[0])) from e
        if errors and isinstance(errors[0], ErrorMessage):
            raise CqlError(errors[0].code, errors[0].message) from e
        raise ConnectionError(f"Cassandra at {host}:{port} does not answer: {e}") from e
    except (OperationTimedOut, DriverException) as e:
        raise ConnectionError(f"Cassandra at {host}:{port}: {e}") from e
    finally:
        cluster.shutdown()


def release_version(host: str, port: int, timeout: float = 2.0,
                    auth: Login | tuple[str, str] | None = None) -> str | None:
    """The node's Cassandra version if it serves CQL now, else None; "" if it
    serves CQL but refuses the login ``auth`` (or requires one)."""
    try:
        rows = cql_query(host, port, "SELECT release_version FROM system.local",
                         timeout=timeout, auth=auth)
    except CqlError as e:
        return "" if e.code == BAD_CREDENTIALS else None
    except OSError:
        return None
    return rows[0][0] if rows and rows[0][0] is not None else None


def _cql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def setup_auth(coordinator: CassandraNode, n_nodes: int, store: Login, admin: Login,
               timeout: float = 120.0) -> None:
    """Make a fresh password-protected cluster safe (see the module doc):
    system_auth on every node, the admin and store roles with their
    passwords, the default ``cassandra`` superuser dropped. Idempotent (roles
    that exist keep their passwords: Cassandra 5 refuses a password change
    within 5 s of the last). ``coordinator`` runs the statements. A login the
    node checked in the last 2 s (``credentials_validity``) may still pass
    for that long after its role is dropped."""
    host, port = coordinator.address, coordinator.native_port
    statements = [
        f"ALTER KEYSPACE system_auth WITH replication = {{'class': "
        f"'NetworkTopologyStrategy', '{DATACENTER}': {n_nodes}}}",
        f"CREATE ROLE IF NOT EXISTS {ADMIN_ROLE} WITH PASSWORD = {_cql_text(admin.password)} "
        "AND SUPERUSER = true AND LOGIN = true",
        f"CREATE ROLE IF NOT EXISTS {store.user} WITH PASSWORD = "
        f"{_cql_text(store.password)} AND LOGIN = true",
        f"GRANT CREATE ON ALL KEYSPACES TO {store.user}",
    ]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    done = False
    while time.monotonic() < deadline:
        try:
            if not done:
                # the default superuser exists once a node's role manager made it
                # (superuser_setup_delay_ms=0); a rerun finds the admin instead
                for login in (DEFAULT_SUPERUSER, admin):
                    try:
                        cql_query(host, port, statements, timeout=30.0, auth=login)
                        break
                    except CqlError as e:
                        if e.code != BAD_CREDENTIALS:
                            raise
                        last = e
                else:
                    raise last or CqlError(BAD_CREDENTIALS, "no login")
                done = True
            # a new login as the admin: it must exist everywhere before the
            # default superuser goes
            cql_query(host, port, f"DROP ROLE IF EXISTS {DEFAULT_SUPERUSER.user}",
                      timeout=30.0, auth=admin)
            return
        except (CqlError, OSError) as e:
            last = e
            time.sleep(0.5)
    raise CassandraError(f"could not set up password authentication on {host}:{port} in "
                         f"{timeout:.0f} s ({last}): see {coordinator.log_path}")


# ------------------------------------------------------------------------ node

_live: set[CassandraNode] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        nodes = list(_live)
    for n in nodes:
        with contextlib.suppress(Exception):
            n.kill()


class CassandraNode:
    """One Cassandra process. Alone it is a one-node cluster on 127.0.0.1 with
    free ports; :class:`CassandraCluster` gives its nodes an ``address`` each,
    shared ports, the seed and a token."""

    def __init__(self, base_dir: str | os.PathLike | None = None, address: str = "127.0.0.1",
                 native_port: int | None = None, storage_port: int | None = None, *,
                 seeds: Sequence[str] | None = None, initial_token: int = TOKENS_3[0],
                 cluster_name: str = CLUSTER_NAME, heap: str = DEFAULT_HEAP,
                 java: str | None = None, lib: str | os.PathLike | None = None,
                 extra_yaml: dict[str, object] | None = None, die_with_parent: bool = True,
                 quiet: bool = True, auth: bool = True, setup: bool = True,
                 credentials: Login | None = None,
                 admin_credentials: Login | None = None) -> None:
        """``auth``: require passwords (module doc); ``setup``: set the roles
        up when first started (a cluster does it once for all its nodes);
        ``credentials``/``admin_credentials``: the logins to create (default:
        those of an earlier start in ``base_dir``, else random ones)."""
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="midoflow-cassandra-"))
        self.address = address
        self.native_port = native_port or free_port((address,))
        self.storage_port = storage_port or free_port((address,))
        self.seeds = list(seeds or [address])
        self.initial_token = initial_token
        self.cluster_name = cluster_name
        self.heap = heap
        self.java = java
        self.lib = lib
        self.extra_yaml = dict(extra_yaml or {})
        self.die_with_parent = die_with_parent
        self.quiet = quiet
        self.proc: subprocess.Popen | None = None
        self.started_in: float | None = None  # seconds the last start took
        self._log = None
        self._t_launch = 0.0
        self.auth = auth
        self.setup = setup
        # True once the roles exist (then probes log in as the admin)
        self.auth_ready = False
        self.credentials: Login | None = None
        self.admin_credentials: Login | None = None
        if auth:
            saved = _saved_logins(self.base_dir)
            if saved and credentials is None and admin_credentials is None:
                credentials, admin_credentials = saved
                self.auth_ready = True
            self.credentials = credentials or Login(STORE_ROLE, generate_password())
            self.admin_credentials = admin_credentials or Login(ADMIN_ROLE, generate_password())

    @property
    def probe_auth(self) -> Login | None:
        """The login the probes (readiness, :func:`cql_query` by tests) use."""
        if not self.auth:
            return None
        return self.admin_credentials if self.auth_ready else DEFAULT_SUPERUSER

    @property
    def credentials_path(self) -> Path:
        return self.base_dir / CREDENTIALS_FILE

    # ---- paths and config
    @property
    def hosts(self) -> str:
        return f"{self.address}:{self.native_port}"

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
        d = self.base_dir
        seeds = ",".join(f"{s}:{self.storage_port}" for s in self.seeds)
        conf: dict[str, object] = {
            "cluster_name": f"'{self.cluster_name}'",
            "num_tokens": 1,
            "initial_token": self.initial_token,
            "allocate_tokens_for_local_replication_factor": None,
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            # datacenter1/rack1 as SimpleSnitch said (RACKDC_PROPERTIES), but it sorts
            # the node itself first among a partition's replicas: see AUTH_YAML.
            "endpoint_snitch": "GossipingPropertyFileSnitch",
            "listen_address": self.address,
            "rpc_address": self.address,
            "storage_port": self.storage_port,
            "native_transport_port": self.native_port,
            "start_native_transport": "true",
            "auto_bootstrap": "false",
            "commitlog_sync": "periodic",
            "commitlog_sync_period": "10000ms",
            "commitlog_segment_size": "8MiB",
            "commitlog_directory": d / "commitlog",
            "hints_directory": d / "hints",
            "saved_caches_directory": d / "saved_caches",
            "cdc_raw_directory": d / "cdc_raw",
            "auto_snapshot": "false",
            "concurrent_compactors": 1,
            "phi_convict_threshold": 12,
            "write_request_timeout": "2000ms",
            "read_request_timeout": "5000ms",
            "max_hint_window": "3h",
            "hints_flush_period": "1000ms",
            "dynamic_snitch": "true",
        }
        if self.auth:
            conf.update(AUTH_YAML)
        conf.update(self.extra_yaml)
        lines = [f"{k}: {v}" for k, v in conf.items() if v is not None]
        lines += [
            "data_file_directories:",
            f"  - {d / 'data'}",
            "seed_provider:",
            "  - class_name: org.apache.cassandra.locator.SimpleSeedProvider",
            "    parameters:",
            f"      - seeds: \"{seeds}\"",
        ]
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        for sub in ("data", "commitlog", "hints", "saved_caches", "cdc_raw", "tmp", "triggers"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.base_dir / "logback.xml").write_text(LOGBACK_XML)
        # read by GossipingPropertyFileSnitch from the classpath (the base dir is on it)
        (self.base_dir / "cassandra-rackdc.properties").write_text(RACKDC_PROPERTIES)
        cfg = self.base_dir / "cassandra.yaml"
        cfg.write_text(self.config())
        return cfg

    def command(self) -> list[str]:
        java = find_java(self.java)
        lib = ensure_jars(self.lib, quiet=self.quiet)
        cfg = self.write_config()
        jamm = sorted(lib.glob("jamm-*.jar"))
        d = self.base_dir
        cmd = [
            java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-Xss256k",
            # C1 only: on 2 cores C2 compiling competes with start-up (measured: 6-7 s to
            # serve CQL instead of 14-15 s); plenty fast for tests.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC", "-XX:+UseThreadPriorities", "-XX:+PerfDisableSharedMem",
            "-XX:MaxDirectMemorySize=512M", "-XX:+CrashOnOutOfMemoryError",
            f"-XX:ErrorFile={d / 'hs_err_%p.log'}",
            *([f"-javaagent:{jamm[0]}"] if jamm else []),
            *jpms_flags(java), *TEST_JVM_FLAGS,
            f"-Dcassandra.config=file://{cfg}",
            f"-Dcassandra.storagedir={d}",
            f"-Dcassandra.logdir={d}",
            f"-Dcassandra.triggers_dir={d / 'triggers'}",
            f"-Dlogback.configurationFile=file://{d / 'logback.xml'}",
            f"-Djava.io.tmpdir={d / 'tmp'}",  # JNA and netty unpack native code here
            "-cp", f"{d}:{lib}/*", CASSANDRA_MAIN,
        ]
        return cmd

    # ---- lifecycle
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        """Start the JVM without waiting for it to serve. Call it from a thread
        that outlives the node (the node dies with it, PR_SET_PDEATHSIG)."""
        if self.running():
            return
        cmd = self.command()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log.write(f"\n==== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        self._t_launch = time.monotonic()
        preexec = None
        if self.die_with_parent:
            # util-linux's setpriv sets the death signal and execs java; it spares
            # a Python fork (which eventlet, imported by cassandra-driver, warns about).
            setpriv = shutil.which("setpriv")
            if setpriv:
                cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
            else:
                preexec = _set_pdeathsig
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.base_dir, preexec_fn=preexec, start_new_session=not self.die_with_parent)
        self.pid_path.write_text(f"{self.proc.pid}\n")
        with _live_lock:
            _live.add(self)

    def _log_tail(self, n: int = 8) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        keep = [ln for ln in lines if "ERROR" in ln or "Exception" in ln or "FATAL" in ln]
        return "\n".join((keep or lines)[-n:])

    def wait_ready(self, timeout: float = 180.0) -> str:
        """Wait until the node answers ``SELECT release_version FROM
        system.local`` (and, the first time, set up its roles); that version
        ("" when it serves CQL but refuses the probe's login)."""
        deadline = time.monotonic() + timeout
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            if not self.running():
                code = self.proc.returncode if self.proc else "?"
                tail = self._log_tail()
                raise CassandraError(
                    f"Cassandra {self.hosts} exited (code {code}) while starting: see "
                    f"{self.log_path}" + (f"; it ends with:\n{tail}" if tail else ""))
            version = release_version(self.address, self.native_port, auth=self.probe_auth)
            if version is not None:  # "": serves CQL, the login is not ready yet
                self.started_in = time.monotonic() - self._t_launch
                if self.auth and self.setup and not self.auth_ready:
                    self._setup_auth(max(30.0, deadline - time.monotonic()))
                    version = release_version(self.address, self.native_port,
                                              auth=self.probe_auth) or version
                return version
            if time.monotonic() - last_note > 10:
                _progress(f"waiting for {self.hosts} to serve CQL "
                          f"({time.monotonic() - self._t_launch:.0f} s; log {self.log_path}) ...",
                          self.quiet)
                last_note = time.monotonic()
            time.sleep(0.5)
        raise CassandraError(
            f"Cassandra {self.hosts} not serving CQL after {timeout:.0f} s: see {self.log_path}")

    def start(self, timeout: float = 180.0) -> CassandraNode:
        self.launch()
        try:
            version = self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        _progress(f"Cassandra {version or ''} serving CQL on {self.hosts} in "
                  f"{self.started_in:.1f} s (log {self.log_path})", self.quiet)
        return self

    def _setup_auth(self, timeout: float) -> None:
        setup_auth(self, 1, self.credentials, self.admin_credentials, timeout)
        _save_logins(self.base_dir, self.credentials, self.admin_credentials)
        self.auth_ready = True
        _progress(f"password authentication on: role {self.credentials.user}, credentials "
                  f"in {self.credentials_path}", self.quiet)

    def _reap(self, timeout: float) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
        with _live_lock:
            _live.discard(self)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the node drains and tells its peers it is shutting down),
        then SIGKILL if it has not exited within ``timeout``."""
        if self.running():
            self.proc.terminate()
        self._reap(timeout)

    def kill(self) -> None:
        """SIGKILL: the node dies without a goodbye, like a crashed host; its
        peers notice by the failure detector."""
        if self.running():
            self.proc.kill()
        self._reap(10.0)

    def restart(self, timeout: float = 180.0) -> CassandraNode:
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Kill, and remove the base dir if this object created it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> CassandraNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"CassandraNode({self.hosts}, pid={self.pid}, dir={self.base_dir})"


# --------------------------------------------------------------------- cluster


class CassandraCluster:
    """``n`` (1 to 3) nodes on 127.0.0.1, 127.0.0.2, ... sharing one native
    and one storage port, seed 127.0.0.1, one token each. ``nodes[i]`` can be
    stopped, killed and started again one by one."""

    def __init__(self, base_dir: str | os.PathLike | None = None, n: int = 3, *,
                 native_port: int | None = None, storage_port: int | None = None,
                 heap: str = DEFAULT_HEAP, java: str | None = None,
                 lib: str | os.PathLike | None = None, die_with_parent: bool = True,
                 quiet: bool = True, auth: bool = True) -> None:
        if not 1 <= n <= len(TOKENS_3):
            raise ValueError(f"1 to {len(TOKENS_3)} nodes, not {n}")
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="midoflow-cassandra-"))
        addresses = [f"127.0.0.{i + 1}" for i in range(n)]
        native_port = native_port or free_port(addresses)
        storage_port = storage_port or free_port(addresses)
        self.quiet = quiet
        self.auth = auth
        saved = _saved_logins(self.base_dir) if auth else None
        self.auth_ready = saved is not None
        store, admin = saved or (Login(STORE_ROLE, generate_password()),
                                 Login(ADMIN_ROLE, generate_password()))
        self.credentials: Login | None = store if auth else None
        self.admin_credentials: Login | None = admin if auth else None
        self.nodes = [
            CassandraNode(self.base_dir / f"node{i + 1}", addr, native_port, storage_port,
                          seeds=[addresses[0]], initial_token=TOKENS_3[i], heap=heap,
                          java=java, lib=lib, die_with_parent=die_with_parent, quiet=quiet,
                          auth=auth, setup=False, credentials=store, admin_credentials=admin)
            for i, addr in enumerate(addresses)
        ]
        for node in self.nodes:
            node.auth_ready = self.auth_ready

    @property
    def credentials_path(self) -> Path:
        return self.base_dir / CREDENTIALS_FILE

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    @property
    def native_port(self) -> int:
        return self.nodes[0].native_port

    @property
    def hosts(self) -> str:
        return ",".join(n.hosts for n in self.nodes)

    def start(self, timeout: float = 240.0) -> CassandraCluster:
        """Start the seed, wait for CQL, then the others together; then wait
        until every node sees every other one up (:meth:`wait_up`)."""
        t0 = time.monotonic()
        _progress(f"starting {len(self.nodes)} nodes in {self.base_dir} ...", self.quiet)
        try:
            self.nodes[0].start(timeout)
            for node in self.nodes[1:]:
                node.launch()
            for node in self.nodes[1:]:
                node.wait_ready(max(1.0, timeout - (time.monotonic() - t0)))
                _progress(f"{node.hosts} serving CQL in {node.started_in:.1f} s", self.quiet)
            self.wait_up(max(1.0, timeout - (time.monotonic() - t0)))
            if self.auth and not self.auth_ready:
                setup_auth(self.nodes[0], len(self.nodes), self.credentials,
                           self.admin_credentials, max(30.0, timeout - (time.monotonic() - t0)))
                _save_logins(self.base_dir, self.credentials, self.admin_credentials)
                self.auth_ready = True
                for node in self.nodes:
                    node.auth_ready = True
                self.wait_up(max(30.0, timeout - (time.monotonic() - t0)))
        except BaseException:
            self.kill()
            raise
        _progress(f"cluster {self.hosts} up in {time.monotonic() - t0:.1f} s"
                  + (f"; credentials in {self.credentials_path}" if self.auth else ""),
                  self.quiet)
        return self

    def start_nodes(self, nodes: Iterable[CassandraNode], timeout: float = 180.0) -> None:
        """(Re)start some nodes together and wait until the whole running
        cluster sees itself up."""
        t0 = time.monotonic()
        nodes = list(nodes)
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_ready(max(1.0, timeout - (time.monotonic() - t0)))
        self.wait_up(max(1.0, timeout - (time.monotonic() - t0)))

    def all_up(self) -> bool:
        """True when each node, as coordinator, finds every replica alive (a
        CL=ALL read over a keyspace replicated to all nodes, system_distributed
        with RF 3, succeeds from each) and all have the same schema version."""
        if any(not n.running() for n in self.nodes):
            return False
        query = "SELECT * FROM system_distributed.view_build_status LIMIT 1"
        versions = set()
        for n in self.nodes:
            try:
                rows = cql_query(n.address, n.native_port,
                                 [query, "SELECT schema_version FROM system.local"],
                                 consistency=CL_ALL, timeout=5.0, auth=n.probe_auth)
            except (OSError, CqlError):
                return False
            versions.add(rows[0][0] if rows else None)
        return len(versions) == 1 and None not in versions  # and they agree on the schema

    def wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            dead = [n for n in self.nodes if n.proc is not None and not n.running()]
            if dead:
                raise CassandraError(f"Cassandra {dead[0].hosts} exited: see {dead[0].log_path}")
            if self.all_up():
                return
            if time.monotonic() - last_note > 10:
                _progress("waiting for every node to see the others up ...", self.quiet)
                last_note = time.monotonic()
            time.sleep(0.5)
        raise CassandraError(
            f"the nodes of {self.hosts} do not all see each other up after {timeout:.0f} s: "
            f"see the logs in {self.base_dir}/node*/{LOG_FILE}")

    def stop(self) -> None:
        for n in self.nodes:
            if n.running():
                n.proc.terminate()
        for n in self.nodes:
            n.stop()

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> CassandraCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _saved_logins(d: Path) -> tuple[Login, Login] | None:
    """The (store, admin) logins an earlier start wrote in ``d``, if any."""
    try:
        store = load_credentials(d / CREDENTIALS_FILE).cassandra
        admin = load_credentials(d / ADMIN_CREDENTIALS_FILE).cassandra
    except CredentialsError:
        return None
    return (store, admin) if store and admin else None


def _save_logins(d: Path, store: Login, admin: Login) -> None:
    d.mkdir(parents=True, exist_ok=True)
    write_credentials(d / CREDENTIALS_FILE, cassandra=store)
    write_credentials(d / ADMIN_CREDENTIALS_FILE, cassandra=admin)


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
        if _is_cassandra_process(pid):
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        pf.unlink(missing_ok=True)
    deadline = time.monotonic() + 30
    for pid in stopped:
        while _is_cassandra_process(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _is_cassandra_process(pid):
            os.kill(pid, signal.SIGKILL)
    print(f"stopped {len(stopped)} Cassandra node(s) in {d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m midoflow.devenv.cassandra",
                                 description="Start or stop Cassandra 5.0 on loopback addresses.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("jars", help="resolve the Cassandra jars from Maven Central (once)")
    st = sub.add_parser("start", help="start one node or a cluster")
    st.add_argument("--nodes", type=int, default=1, metavar="N",
                    help="start N nodes (at most 3) on 127.0.0.1..N (default: 1)")
    st.add_argument("--dir", help="data, config and logs (default: a new temp dir)")
    st.add_argument("--port", type=int, help="CQL port (default: a free port)")
    st.add_argument("--heap", default=DEFAULT_HEAP, help=f"heap per node (default {DEFAULT_HEAP})")
    st.add_argument("--no-auth", action="store_true",
                    help="no password required (default: PasswordAuthenticator, see "
                    f"{CREDENTIALS_FILE} in --dir)")
    st.add_argument("--background", action="store_true",
                    help="leave the nodes running, write pid files, and return")
    sp = sub.add_parser("stop", help="stop nodes started with --background")
    sp.add_argument("--dir", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "stop":
        return _stop_dir(Path(args.dir))
    if args.cmd == "jars":
        try:
            print(ensure_jars())
        except CassandraError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="midoflow-cassandra-"))
    base.mkdir(parents=True, exist_ok=True)
    keep = {"die_with_parent": not args.background, "quiet": False, "heap": args.heap,
            "auth": not args.no_auth}
    try:
        if args.nodes > 1:
            c: CassandraNode | CassandraCluster = CassandraCluster(
                base, args.nodes, native_port=args.port, **keep)
        else:
            c = CassandraNode(base, native_port=args.port, **keep)
        c.start()
    except (CassandraError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    nodes = c.nodes if isinstance(c, CassandraCluster) else [c]
    print(c.hosts, flush=True)
    if args.background:
        with _live_lock:  # not ours to stop at exit any more
            for n in nodes:
                _live.discard(n)
        print(f"running in the background; stop with: python -m midoflow.devenv.cassandra "
              f"stop --dir {base}", file=sys.stderr)
        return 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print("[cassandra] running; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while not stop.wait(1.0):
            dead = [n for n in nodes if not n.running()]
            if dead:
                print(f"[cassandra] node {dead[0].hosts} exited: see {dead[0].log_path}",
                      file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
        print("[cassandra] stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
