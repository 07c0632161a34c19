"""The stores are not open doors (issue 11): ZooKeeper nodes carry a digest ACL
that only the holder of the deployment's secret passes, Cassandra requires the
midoflow role's password; the credentials file they come from must be private.

ZooKeeper tests use the session's server (tests/conftest.py), Cassandra tests
the session's node, which starts with PasswordAuthenticator and a midoflow
role (midoflow/devenv/cassandra.py)."""

from __future__ import annotations

import os
import uuid

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

from midoflow.agent.config import AgentConfig, ConfigError
from midoflow.errors import Unavailable
from midoflow.store.base import Create, Update
from midoflow.store.credentials import (
    CredentialsError,
    generate_password,
    load_credentials,
    write_credentials,
)
from midoflow.store.factory import make_store
from midoflow.store.zookeeper import ZkStore
from tests.store_contract import StoreContract, wait_until

pytestmark = pytest.mark.integration

USER = "midoflow"


def _client(hosts: str, auth: tuple[str, str] | None = None) -> KazooClient:
    c = KazooClient(hosts=hosts, timeout=5,
                    auth_data=[("digest", f"{auth[0]}:{auth[1]}")] if auth else None)
    c.start(timeout=5)
    return c


def _close(c: KazooClient) -> None:
    c.stop()
    c.close()


@pytest.fixture
def secret() -> tuple[str, str]:
    return (USER, generate_password())


@pytest.fixture
def secure_factory(zk_server, secret):
    """``factory(**kw)`` -> a ZkStore with the digest login on this test's
    root; the root is removed afterwards (by a client holding the secret)."""
    root = f"/t-auth-{uuid.uuid4().hex[:12]}"
    stores: list[ZkStore] = []

    def factory(**kw) -> ZkStore:
        kw.setdefault("root", root)
        kw.setdefault("auth", secret)
        s = ZkStore(zk_server.hosts, **kw)
        stores.append(s)
        return s

    factory.root = root
    yield factory
    for s in stores:
        s.close()
    c = _client(zk_server.hosts, secret)
    try:
        c.delete(root, recursive=True)
    finally:
        _close(c)


class TestZkStoreWithDigest(StoreContract):
    """The whole store contract holds with the digest login and ACL."""

    @pytest.fixture
    def store(self, secure_factory):
        return secure_factory()

    @pytest.fixture
    def new_session(self, secure_factory):
        return secure_factory


def _populate(store: ZkStore) -> list[str]:
    """Objects of every sort the store writes; their paths, root first."""
    store.commit([Create("bridges", {"id": "b1", "name": "red"})])
    store.put_state("state/hosts/h1", {"alive": True})  # ephemeral
    store.put_state("tables/bridges/b1/mac/aa", {"port": "p1"}, ephemeral=False)
    store.next_counter("vni")
    r = store.root
    return [r, f"{r}/models", f"{r}/models/bridges", f"{r}/models/bridges/b1", f"{r}/state",
            f"{r}/state/hosts", f"{r}/state/hosts/h1", f"{r}/tables/bridges/b1/mac/aa",
            f"{r}/counters", f"{r}/counters/vni"]


def _assert_locked_out(hosts: str, paths: list[str], auth: tuple[str, str] | None) -> None:
    """A client with ``auth`` (none, or a wrong digest) can neither read,
    list, write, delete, add children to, nor re-ACL any of ``paths``."""
    c = _client(hosts, auth)
    try:
        open_acl = list(OPEN_ACL_UNSAFE)
        for p in paths:
            assert c.exists(p) is not None, p  # exists is never ACL-checked
            for attempt in (lambda p=p: c.get(p), lambda p=p: c.get_children(p),
                            lambda p=p: c.set(p, b'{"id": "evil"}'),
                            lambda p=p: c.get_acls(p),
                            lambda p=p: c.set_acls(p, open_acl),
                            lambda p=p: c.create(f"{p}/evil", b"{}")):
                with pytest.raises(NoAuthError):
                    attempt()
        # deleting a leaf needs DELETE on its parent
        for p in paths:
            if p.endswith(("/b1", "/h1", "/aa", "/vni")):
                with pytest.raises(NoAuthError):
                    c.delete(p)
        assert not c.exists(f"{paths[0]}/evil")
    finally:
        _close(c)


def test_no_digest_no_access(secure_factory, zk_server, secret):
    store = secure_factory()
    paths = _populate(store)
    _assert_locked_out(zk_server.hosts, paths, None)
    _assert_locked_out(zk_server.hosts, paths, (USER, "not-" + secret[1]))
    # the store itself still sees everything as it wrote it
    assert store.get("bridges", "b1") == ({"id": "b1", "name": "red"}, 0)
    assert store.get_state("state/hosts/h1") == {"alive": True}
    assert store.next_counter("vni") == 2


def test_every_node_carries_only_the_digest_acl(secure_factory, zk_server, secret):
    store = secure_factory()
    paths = _populate(store)
    want = [make_digest_acl(*secret, all=True)]
    c = _client(zk_server.hosts, secret)
    try:
        for p in paths:
            assert c.get_acls(p)[0] == want, p
    finally:
        _close(c)
    assert store.health()["auth"] == "digest"


def test_store_without_the_secret_is_refused_with_the_reason(secure_factory, zk_server):
    secure_factory()  # makes the protected root
    with pytest.raises(Unavailable, match="give this process the store credentials file"):
        ZkStore(zk_server.hosts, root=secure_factory.root, timeout=5.0)
    with pytest.raises(Unavailable, match="protected by another secret"):
        ZkStore(zk_server.hosts, root=secure_factory.root, timeout=5.0,
                auth=(USER, generate_password()))


def test_session_expiry_keeps_the_digest(secure_factory, zk_server, secret):
    store = secure_factory()
    store.put_state("state/hosts/h1", {"name": "h1"})
    seen: list = []
    store.watch_kind("bridges", seen.append)
    old = store._client.client_id[0]
    evil = KazooClient(hosts=zk_server.hosts, client_id=store._client.client_id)
    evil.start(timeout=5)
    _close(evil)  # expires the store's session
    wait_until(lambda: store._client.client_id and store._client.client_id[0] != old
               and store.health()["connected"], timeout=15, what="a new session")
    wait_until(lambda: store.get_state("state/hosts/h1") == {"name": "h1"}, timeout=10,
               what="the ephemeral re-created")
    store.commit([Create("bridges", {"id": "b1"})])
    wait_until(lambda: seen and seen[-1] == ["b1"], what="the watch after the new session")
    r = store.root
    _assert_locked_out(zk_server.hosts, [f"{r}/state/hosts/h1", f"{r}/models/bridges/b1"],
                       None)


def test_replaced_client_keeps_the_digest(secure_factory, zk_server):
    """The watchdog's recovery (a new kazoo client) authenticates too."""
    store = secure_factory()
    store.put_state("state/hosts/h1", {"name": "h1"})
    seen: list = []
    store.watch_kind("bridges", seen.append)
    old = store._client
    store._replace_client(old)
    assert store._client is not old and store.recoveries == 1
    store.commit([Create("bridges", {"id": "b2"})])
    store.commit([Update("bridges", {"id": "b2", "v": 1}, 0)])
    wait_until(lambda: seen and seen[-1] == ["b2"], what="the re-armed watch")
    assert store.get_state("state/hosts/h1") == {"name": "h1"}
    _assert_locked_out(zk_server.hosts, [f"{store.root}/models/bridges/b2"], None)


def test_an_open_tree_is_secured_on_start(zk_store_factory, zk_server, secret):
    """Upgrade: a tree written without ACLs gets the digest ACL, every node,
    when a store holding the secret starts on it; its data is kept."""
    open_store = zk_store_factory()
    open_store.commit([Create("bridges", {"id": "b1"}), Create("ports", {"id": "p1"})])
    open_store.put_state("tables/bridges/b1/mac/aa", {"port": "p1"}, ephemeral=False)
    open_store.close()
    secured = ZkStore(zk_server.hosts, root=zk_store_factory.root, timeout=5.0, auth=secret)
    try:
        assert secured.get("ports", "p1") == ({"id": "p1"}, 0)
        r = zk_store_factory.root
        _assert_locked_out(zk_server.hosts, [r, f"{r}/models/bridges/b1",
                                             f"{r}/models/ports/p1",
                                             f"{r}/tables/bridges/b1/mac/aa"], None)
    finally:
        secured.close()
        c = _client(zk_server.hosts, secret)
        try:
            c.delete(zk_store_factory.root, recursive=True)
        finally:
            _close(c)


# ------------------------------------------------------------ credentials file


def test_credentials_file_round_trip_and_private(tmp_path, zk_server, secret):
    path = tmp_path / "store-credentials"
    cred = write_credentials(path, zookeeper=secret, cassandra=("midoflow", "pw2"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert tuple(cred.zookeeper) == secret and tuple(cred.cassandra) == ("midoflow", "pw2")
    assert secret[1] not in repr(cred)  # passwords are kept out of logs
    chroot = f"/t-cred-{uuid.uuid4().hex[:8]}"
    store = make_store(zk_server.hosts + chroot, credentials=str(path))
    try:
        assert store.health()["auth"] == "digest"
        store.commit([Create("bridges", {"id": "b1"})])
        # the chroot the store made is protected too
        _assert_locked_out(zk_server.hosts, [chroot, f"{chroot}/midoflow/models/bridges/b1"],
                           None)
    finally:
        store.close()
        c = _client(zk_server.hosts, secret)
        try:
            c.delete(chroot, recursive=True)
        finally:
            _close(c)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_readable_credentials_file_is_refused(tmp_path, mode):
    path = tmp_path / "store-credentials"
    write_credentials(path, zookeeper=(USER, "pw"))
    os.chmod(path, mode)
    with pytest.raises(CredentialsError, match=f"chmod 600 {path}"):
        load_credentials(path)


def test_a_credentials_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "store-credentials"
    write_credentials(path, zookeeper=(USER, "pw"))
    os.chown(path, 65534, 65534)  # neither this user (root here) nor root
    with pytest.raises(CredentialsError, match="belongs to uid 65534"):
        load_credentials(path)


@pytest.mark.parametrize("text, error", [
    ("[zookeeper]\nuser = a:b\npassword = x\n", "without ':'"),
    ("[zookeeper]\nuser = midoflow\n", "password is empty"),
    ("[zk]\nuser = midoflow\npassword = x\n", "unknown section"),
    ("", "no \\[zookeeper\\] nor \\[cassandra\\] section"),
])
def test_malformed_credentials_say_what_is_wrong(tmp_path, text, error):
    path = tmp_path / "store-credentials"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(CredentialsError, match=error):
        load_credentials(path)


def test_agent_config_checks_its_credentials_file(tmp_path):
    cred = tmp_path / "store-credentials"
    write_credentials(cred, zookeeper=(USER, "pw"))
    ini = tmp_path / "agent.ini"
    base = "[agent]\nhost_id=h\nzookeeper=memory\novsdb=unix:/x\ntunnel_ip=10.0.0.1\n"
    ini.write_text(base + f"credentials_file = {cred}\n")
    assert AgentConfig.load(str(ini)).credentials_file == str(cred)
    cred.chmod(0o644)
    with pytest.raises(ConfigError, match="credentials_file: .*chmod 600"):
        AgentConfig.load(str(ini))


# ------------------------------------------------------------------ Cassandra


@pytest.mark.cassandra
def test_cassandra_requires_the_midoflow_password(cassandra_server):
    from midoflow.devenv.cassandra import (
        BAD_CREDENTIALS,
        DEFAULT_SUPERUSER,
        CqlError,
        cql_query,
    )
    from midoflow.nat.flowstate import CONNTRACK, Entry, FlowStateUnavailable
    from midoflow.store.cassandra_flowstate import CassandraFlowState

    host, port = cassandra_server.address, cassandra_server.native_port
    login = cassandra_server.credentials
    assert login is not None, "the session's Cassandra node must require a password"

    def refused(auth) -> bool:
        try:
            cql_query(host, port, "SELECT release_version FROM system.local", auth=auth)
        except CqlError as e:
            return e.code == BAD_CREDENTIALS
        return False

    assert refused(None)  # no login at all
    # the well-known default superuser is gone (a login checked in the last
    # 2 s may be cached that long)
    wait_until(lambda: refused(DEFAULT_SUPERUSER), timeout=10,
               what="cassandra/cassandra to be refused")
    assert refused((login.user, "not-" + login.password))
    with pytest.raises(FlowStateUnavailable, match="requires a password"):
        CassandraFlowState([host], port, keyspace="t_noauth")
    with pytest.raises(FlowStateUnavailable, match=f"refused the login of role '{login.user}'"):
        CassandraFlowState([host], port, keyspace="t_noauth", auth=(login.user, "wrong"))
    # the store role is no superuser: it cannot make roles nor read the others'
    with pytest.raises(CqlError, match="(?i)unauthorized|permission"):
        cql_query(host, port, "CREATE ROLE evil WITH PASSWORD = 'x' AND LOGIN = true",
                  auth=login)
    with pytest.raises(CqlError, match="(?i)unauthorized|permission"):
        cql_query(host, port, "SELECT salted_hash FROM system_auth.roles", auth=login)

    ks = f"t_{uuid.uuid4().hex[:12]}"
    with CassandraFlowState([host], port, keyspace=ks, auth=login) as s:  # makes its keyspace
        s.save(["p-auth"], [Entry(CONNTRACK, "tcp:10.0.0.1:1>10.0.0.2:2")], ttl=60)
        assert s.load("p-auth") == [Entry(CONNTRACK, "tcp:10.0.0.1:1>10.0.0.2:2")]
        s.session.execute(f"DROP KEYSPACE {ks}", timeout=30)  # it owns what it made


@pytest.mark.cassandra
def test_agent_flow_state_logs_in_from_the_credentials_file(cassandra_server, tmp_path):
    """What an agent does with ``credentials_file``: make_flow_state with the
    file's [cassandra] login (the node wrote the file, mode 0600)."""
    from midoflow.nat.flowstate import NAT, Entry
    from midoflow.store.flowstate_factory import make_flow_state

    path = cassandra_server.credentials_path
    assert path is not None and os.stat(path).st_mode & 0o077 == 0
    ks = f"t_{uuid.uuid4().hex[:12]}"
    spec = f"cassandra:{cassandra_server.address}:{cassandra_server.native_port}/{ks}"
    fs = make_flow_state(spec, credentials=load_credentials(path))
    try:
        fs.save(["p-agent"], [Entry(NAT, "snat:k", "203.0.113.5:40000")], ttl=60)
        assert fs.load("p-agent") == [Entry(NAT, "snat:k", "203.0.113.5:40000")]
        fs._get().session.execute(f"DROP KEYSPACE {ks}", timeout=30)
    finally:
        fs.close()


def test_a_cloud_never_reuses_a_chroot_left_by_an_earlier_one(zk_server):
    """Clouds sharing one ZooKeeper (the e2e run) each get a chroot of their own:
    one left protected by an earlier cloud's secret under the same name prefix
    is passed over (CI once failed with NoAuth on such a collision)."""
    from topologies.midocloud import MidoCloud

    prefix = f"mflt{uuid.uuid4().hex[:4]}"
    other = ("midoflow", generate_password())
    c = _client(zk_server.hosts, other)
    try:
        c.create(f"/{prefix}", acl=[make_digest_acl(*other, all=True)])
        mc = object.__new__(MidoCloud)  # only what _new_chroot reads
        mc.zk_hosts = zk_server.hosts
        mc.cloud = type("C", (), {"prefix": prefix})()
        ours = ("midoflow", generate_password())
        mine = _client(zk_server.hosts, ours)
        try:
            chroot = mc._new_chroot(mine, ours)
            assert chroot.startswith(f"/{prefix}-")
            acls, _ = mine.get_acls(chroot)
            assert list(acls) == [make_digest_acl(*ours, all=True)]
            with pytest.raises(NoAuthError):
                c.get_children(chroot)
            mine.create(f"{chroot}/x")  # ours to use
        finally:
            mine.stop()
            mine.close()
    finally:
        c.stop()
        c.close()


def test_a_name_prefix_in_use_on_this_machine_is_not_chosen(monkeypatch):
    """A lab's names (interfaces, /tmp directories) must not collide with a lab
    running beside it."""
    import secrets as _secrets

    from topologies import cloud

    taken = "mflz" + "0a1b"
    d = f"/tmp/{taken}-x"
    os.makedirs(d, exist_ok=True)
    draws = iter(["0a1b", "0a1b", "7c7c"])
    monkeypatch.setattr(_secrets, "token_hex", lambda n: next(draws))
    try:
        assert cloud.unused_prefix("mflz") == "mflz7c7c"
    finally:
        os.rmdir(d)
