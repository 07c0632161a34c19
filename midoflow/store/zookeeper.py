"""The Store on ZooKeeper (kazoo).

Layout under ``root`` (default ``/midoflow``)::

    {root}/models/{kind}/{id}    JSON object; its version is the znode version
    {root}/counters/{name}       the last value given, as decimal text
    {root}/{path}                state (``state/...``, ``tables/...``): JSON

:meth:`ZkStore.commit` is one ZooKeeper multi-op transaction. While the
session is not connected (no quorum, servers unreachable) every call raises
:class:`~midoflow.errors.Unavailable` at once instead of waiting for the
connection to come back; when it comes back (same session, or a new one after
the old expired) this store re-creates the ephemeral state it published, and
the watches keep firing (kazoo re-arms its recipes).

``handler="eventlet"`` runs kazoo on eventlet green threads (inside
``osken-manager``), with a cheaper select, read-ahead and results
(:mod:`midoflow.store.zk_eventlet`); the default uses real threads. Either
way kazoo's connection sends queued requests in batches
(:mod:`midoflow.store.zk_send`).

Two guards keep a busy API answering (issue 9):

* kazoo wakes its connection loop with one byte per request on a socket pair.
  Under eventlet, when that pair's buffer is full (hundreds of requests queued
  by concurrent lists) a second green thread writing it gets eventlet's
  "Second simultaneous write" RuntimeError; kazoo swallows it, leaving the
  request queued without its byte, and from then on every request waits for
  a later one to push it out: every call times out while the session looks
  healthy. Calls into kazoo are therefore serialised by a lock here.
* A watchdog: a call that gets no answer while the session is CONNECTED fails
  (503) and triggers a recovery: the connection loop is woken, and if a probe
  still gets no answer the kazoo client is replaced by a new one (a fresh
  session: watches are re-armed, ephemeral state re-created).

Access control (issue 11): with ``auth=(user, password)`` the store
authenticates by ZooKeeper's digest scheme on every session (replacement
clients included) and creates every node (root, models, state, counters,
ephemerals, intermediate nodes) with one ACL, ``digest:user:<hash>`` with all
permissions and nothing for anyone else: a client without the secret gets
NoAuth on reading, writing, deleting or re-ACLing them (only ``exists`` and
the servers' four-letter words stay open, as ZooKeeper never checks them).
A root made before (an upgrade from an open tree) is secured on start:
:func:`secure_tree` sets the ACL on every node below it, the root last, so a
root that carries it means the whole tree does. A store without ``auth``
works as before (single-machine development); against a protected tree it
fails with :class:`~midoflow.errors.Unavailable` saying which credentials to
give.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)
from kazoo.protocol.paths import _prefix_root
from kazoo.protocol.serialization import GetChildren, GetData
from kazoo.protocol.serialization import Transaction as TransactionRequest
from kazoo.protocol.states import KeeperState
from kazoo.recipe.election import Election as KazooElection
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.retry import KazooRetry
from kazoo.security import ACL, make_digest_acl

from midoflow.errors import Conflict, Invalid, NotFound, Unavailable
from midoflow.model import KINDS
from midoflow.store.base import (
    ZK_MAX_BUFFER,
    Check,
    Create,
    Data,
    Delete,
    Election,
    Op,
    Store,
    Update,
    check_txn_size,
    encode,
    too_large,
)
from midoflow.store.zk_send import batch_sends

log = logging.getLogger(__name__)

_FOLLOW_CHUNK = 2000  # first reads of a batch of followers in flight at once
_UNAVAILABLE = (ConnectionLoss, SessionExpiredError, ConnectionClosedError,
                OperationTimeoutError)


_encode = encode


def _decode(raw: bytes | None) -> Data | None:
    """None for a missing node or one that holds nothing (an intermediate
    node made by ``makepath``)."""
    if not raw:
        return None
    return json.loads(raw)


def _make_handler(handler: Any):
    if handler == "threading":
        from kazoo.handlers.threading import SequentialThreadingHandler

        return SequentialThreadingHandler()
    if handler == "eventlet":
        from midoflow.store.zk_eventlet import FastEventletHandler

        return FastEventletHandler()
    if isinstance(handler, str):
        raise Invalid(f"unknown kazoo handler {handler!r}: use threading or eventlet",
                      "handler")
    return handler  # a kazoo handler instance


def _check_name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise Invalid(f"{what} must be a non-empty string without '/': {value!r}", what)
    return value


class ZkStore(Store):
    def __init__(self, hosts: str, root: str = "/midoflow", handler: Any = "threading",
                 timeout: float = 10.0, *, op_timeout: float = 5.0,
                 connect_timeout: float | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        """``timeout``: the ZooKeeper session timeout (ephemeral state of a
        dead client goes after it); ``op_timeout``: the longest one call waits
        for its answer before raising Unavailable; ``connect_timeout``: how
        long the first connection may take (default ``timeout``); ``auth``:
        the digest login (user, password) that owns every node (module doc)."""
        root = "/" + root.strip("/")
        if root == "/":
            raise Invalid("root must not be '/'", "root")
        self.hosts = hosts
        self.root = root
        self.timeout = timeout
        self.op_timeout = op_timeout
        self._closed = False
        self._started = False
        self._state = "LOST"
        self._session_id: int | None = None
        self._handler_spec = handler
        self.connect_timeout = connect_timeout or timeout
        self._auth_data: list[tuple[str, str]] = []
        self.acl: list[ACL] | None = None
        if auth is not None:
            user, password = auth
            _check_name("user", user)
            if ":" in user or not password:
                raise Invalid("ZooKeeper digest auth needs a user without ':' and a password",
                              "auth")
            self._auth_data = [("digest", f"{user}:{password}")]
            self.acl = [make_digest_acl(user, password, all=True)]
            self.auth_user: str | None = user
        else:
            self.auth_user = None
        self._client = self._new_client()
        h = self._client.handler
        self._lock = h.rlock_object()
        # state path -> encoded data, for the ephemerals this store published
        self._ephemerals: dict[str, bytes] = {}
        self._kinds_ready: set[str] = set()
        # (arm(client), ended()) of every watch, re-armed on a replacement client
        self._watches: list[_Watch] = []
        self._elections: list[_ZkElection] = []
        self._recovering = False
        self.recoveries = 0  # kazoo clients replaced by the watchdog
        # held while a batch of followers (below) delivers its first values
        self._follow_lock = h.rlock_object()
        self._followers: list[_Follower] = []
        self._was_connected = True
        try:
            self._start_client(self._client)
        except Unavailable:
            self._closed = True
            raise
        self._state = "CONNECTED"
        self._session_id = self._client.client_id[0] if self._client.client_id else None
        self._started = True
        try:
            if self.acl is not None:
                self._secure_root()
            for kind in KINDS:
                self._ensure_kind(kind)
            self._ensure(f"{self.root}/counters")
        except BaseException:
            self.close()
            raise

    # ---- connection ---------------------------------------------------------
    def _new_client(self) -> KazooClient:
        spec = self._handler_spec
        if not isinstance(spec, str) and hasattr(self, "_client"):
            spec = type(spec)()  # a replacement gets a handler of its own
        h = _make_handler(spec)
        client = KazooClient(
            hosts=self.hosts, timeout=self.timeout, handler=h,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=1.5, max_delay=1.0,
                                        sleep_func=h.sleep_func),
            command_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=1.5, max_delay=1.0,
                                     sleep_func=h.sleep_func),
            # sent again by kazoo on every (re)connection of this session
            auth_data=list(self._auth_data) or None, default_acl=self.acl,
        )
        _serialise_calls(client, h.lock_object(), self.op_timeout)
        batch_sends(client)
        client.add_listener(lambda state: self._on_state(client, state))
        return client

    def _start_client(self, client: KazooClient) -> None:
        try:
            client.start(timeout=self.connect_timeout)
        except Exception as e:  # the handler's timeout exception, socket errors
            _discard(client)
            raise Unavailable(
                f"cannot connect to ZooKeeper at {self.hosts} ({type(e).__name__}: {e}); is "
                "it running? start one with: python -m midoflow.devenv.zookeeper start") from e

    def _on_state(self, client: KazooClient, state: str) -> None:
        # Called on kazoo's connection thread: must not block.
        if client is not self._client:
            return  # a client the watchdog replaced
        self._state = state
        if state == KazooState.CONNECTED and self._started and not self._closed:
            self._client.handler.spawn(self._restore_ephemerals)
            if not self._was_connected:  # a watch may have been lost meanwhile
                self._client.handler.spawn(self._refresh_followers, client)
        self._was_connected = state == KazooState.CONNECTED
        if state != KazooState.CONNECTED and not self._closed:
            log.warning("ZooKeeper session %s at %s", state, self.hosts)

    def _unavailable(self, why: str = "") -> Unavailable:
        if self._closed:
            return Unavailable(f"ZooKeeper store at {self.hosts} is closed")
        return Unavailable(f"ZooKeeper has no quorum / unreachable: {self.hosts} "
                           f"(session {self._state}{'; ' + why if why else ''})")

    def _denied(self) -> Unavailable:
        if self.acl is None:
            return Unavailable(
                f"ZooKeeper at {self.hosts} refuses access to {self.root} (NoAuth): the tree is "
                "protected by a digest ACL; give this process the store credentials file "
                "(agent config credentials_file, API --store-credentials or "
                "MIDOFLOW_STORE_CREDENTIALS)")
        return Unavailable(
            f"ZooKeeper at {self.hosts} refuses user {self.auth_user!r} access to {self.root} "
            "(NoAuth): the tree is protected by another secret; give every midoflow process "
            "the same store credentials file")

    def _secure_root(self) -> None:
        """Set our ACL on an existing tree that lacks it (module doc)."""
        try:
            acls, _ = self._op("get_acls", self.root)
        except NoNodeError:
            return  # made below, with the ACL
        if list(acls) == self.acl:
            return
        try:
            n = secure_tree(self._client, self.root, self.acl)
        except NoAuthError as e:
            raise self._denied() from e
        except KazooException as e:
            raise self._unavailable(f"securing {self.root}: {type(e).__name__}") from e
        log.warning("ZooKeeper: %s was not protected: digest ACL of user %s set on %d nodes",
                    self.root, self.auth_user, n)

    def _call(self, async_result) -> Any:
        """Wait for one kazoo async call, at most ``op_timeout``; a call that gets
        no answer while the session is CONNECTED starts the watchdog."""
        client = self._client
        try:
            return async_result.get(timeout=self.op_timeout)
        except NoAuthError as e:
            raise self._denied() from e
        except _UNAVAILABLE as e:
            raise self._unavailable(type(e).__name__) from e
        except client.handler.timeout_exception as e:
            if self._state == KazooState.CONNECTED and not self._closed:
                self._start_recovery(client)
            raise self._unavailable(f"no answer in {self.op_timeout} s") from e

    # ---- watchdog -------------------------------------------------------------
    def _start_recovery(self, client: KazooClient) -> None:
        with self._lock:
            if self._recovering or client is not self._client:
                return
            self._recovering = True
        log.warning("ZooKeeper call unanswered for %.1f s on a CONNECTED session at %s: "
                    "recovering", self.op_timeout, self.hosts)
        client.handler.spawn(self._recover, client)

    def _recover(self, client: KazooClient) -> None:
        """Wake the connection loop; if a probe still gets no answer, replace the
        kazoo client by a new one (a fresh session)."""
        try:
            _wake(client)
            probe = min(self.op_timeout, 2.0)
            try:
                client.exists_async(self.root).get(timeout=probe)
                log.warning("ZooKeeper answers again after waking kazoo's connection loop")
                return
            except Exception as e:  # timeout, connection loss: make a new session
                log.warning("ZooKeeper probe failed (%s): replacing the kazoo client",
                            type(e).__name__)
            while not self._closed:
                try:
                    self._replace_client(client)
                    return
                except Exception as e:
                    log.warning("could not replace the kazoo client: %s; retrying", e)
                    client.handler.sleep_func(1.0)
        finally:
            with self._lock:
                self._recovering = False

    def _replace_client(self, old: KazooClient) -> None:
        new = self._new_client()
        self._start_client(new)
        with self._lock:
            if self._closed:
                _discard(new)
                return
            self._client = new
            self._state = KazooState.CONNECTED
            watches = [w for w in self._watches if not w.ended]
            self._watches = watches
        self.recoveries += 1
        old.handler.spawn(_discard, old)
        for w in watches:
            try:
                w.arm(new)
            except Exception as e:  # keep going: the others still matter
                log.warning("could not re-arm a watch on the new ZooKeeper session: %s", e)
        self._restore_ephemerals()
        log.warning("ZooKeeper: new kazoo client and session 0x%x; %d watches re-armed",
                    (new.client_id or (0,))[0], len(watches))

    def _op(self, name: str, *args: Any, **kw: Any) -> Any:
        """Run ``client.<name>_async(*args)`` if connected; Unavailable if not."""
        if self._closed or self._state != KazooState.CONNECTED:
            raise self._unavailable()
        return self._call(getattr(self._client, name + "_async")(*args, **kw))

    def _ensure(self, path: str) -> None:
        try:
            self._op("create", path, b"", makepath=True)
        except NodeExistsError:
            pass

    def _ensure_kind(self, kind: str) -> str:
        path = f"{self.root}/models/{_check_name('kind', kind)}"
        if kind not in self._kinds_ready:
            self._ensure(path)
            self._kinds_ready.add(kind)
        return path

    def _restore_ephemerals(self) -> None:
        """After a reconnection: make sure every ephemeral this store published
        exists and belongs to the current session."""
        cid = self._client.client_id
        new_session = cid is not None and cid[0] != self._session_id
        if cid is not None:
            self._session_id = cid[0]
        with self._lock:
            items = list(self._ephemerals.items())
        restored = 0
        for path, value in items:
            try:
                if self._write_state(self._state_path(path), value, True, only_if_lost=True):
                    restored += 1
            except Exception as e:  # keep going; logged for the operator
                log.warning("could not re-create ephemeral %s: %s", path, e)
        if restored or new_session:
            log.info("ZooKeeper %s session: re-created %d of %d ephemeral nodes",
                     "new" if new_session else "same", restored, len(items))

    # ---- models -------------------------------------------------------------
    def _model_path(self, kind: str, id: Any) -> str:
        return f"{self.root}/models/{_check_name('kind', kind)}/{_check_name('id', id)}"

    def get(self, kind: str, id: str) -> tuple[Data, int]:
        try:
            raw, stat = self._op("get", self._model_path(kind, id))
        except NoNodeError:
            raise NotFound(f"{kind} {id} not found") from None
        return _decode(raw) or {}, stat.version

    def list(self, kind: str) -> list[tuple[Data, int]]:
        path = f"{self.root}/models/{_check_name('kind', kind)}"
        try:
            ids = self._op("get_children", path)
        except NoNodeError:
            return []
        if self._state != KazooState.CONNECTED:
            raise self._unavailable()
        pending = [self._client.get_async(f"{path}/{i}") for i in sorted(ids)]
        out = []
        for res in pending:
            try:
                raw, stat = self._call(res)
            except NoNodeError:  # deleted meanwhile
                continue
            out.append((_decode(raw) or {}, stat.version))
        return out

    def commit(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        check_txn_size(ops)
        t = self._client.transaction()
        for op in ops:
            if isinstance(op, Create | Update):
                oid = op.data.get("id") if isinstance(op.data, dict) else None
                if not oid:
                    raise Invalid("object has no id", "id")
                path = self._model_path(op.kind, oid)
                if isinstance(op, Create):
                    self._ensure_kind(op.kind)
                    t.create(path, _encode(op.data))
                else:
                    t.set_data(path, _encode(op.data), -1 if op.version is None else op.version)
            elif isinstance(op, Delete):
                t.delete(self._model_path(op.kind, op.id),
                         -1 if op.version is None else op.version)
            elif isinstance(op, Check):
                t.check(self._model_path(op.kind, op.id), op.version)
            else:
                raise Invalid(f"not a store operation: {op!r}")
        size = len(TransactionRequest(t.operations).serialize())
        if size > ZK_MAX_BUFFER - 4096:  # the estimate above should have caught it
            raise too_large(size, ZK_MAX_BUFFER - 4096)
        if self._closed or self._state != KazooState.CONNECTED:
            raise self._unavailable()
        try:
            results = self._call(t.commit_async())
        except (NodeExistsError, BadVersionError, NoNodeError, NotEmptyError) as e:
            # the whole multi failed without per-op results
            raise self._commit_error(ops[0], e) if len(ops) == 1 else \
                Conflict(f"transaction failed: {type(e).__name__}") from None
        except KazooException as e:
            raise Conflict(f"transaction failed: {type(e).__name__}") from None
        if any(isinstance(res, NoAuthError) for res in results):
            raise self._denied()
        for op, res in zip(ops, results, strict=False):
            if isinstance(res, Exception) and not isinstance(
                    res, RolledBackError | RuntimeInconsistency):
                raise self._commit_error(op, res)
        for res in results:  # an error we could not attribute to one op
            if isinstance(res, Exception) and not isinstance(res, RolledBackError):
                raise Conflict(f"transaction failed: {type(res).__name__}")

    @staticmethod
    def _commit_error(op: Op, err: Exception) -> Exception:
        oid = op.data.get("id") if isinstance(op, Create | Update) else op.id
        what = f"{op.kind} {oid}"
        if isinstance(err, NodeExistsError):
            return Conflict(f"{what} already exists")
        if isinstance(err, BadVersionError):
            return Conflict(f"{what} changed meanwhile (stale version)")
        if isinstance(err, NoNodeError):
            return NotFound(f"{what} not found")
        if isinstance(err, NotEmptyError):
            return Conflict(f"{what} has children")
        return Conflict(f"{what}: {type(err).__name__}")

    def next_counter(self, name: str) -> int:
        path = f"{self.root}/counters/{_check_name('counter', name)}"
        while True:
            try:
                raw, stat = self._op("get", path)
            except NoNodeError:
                try:
                    self._op("create", path, b"1", makepath=True)
                    return 1
                except NodeExistsError:
                    continue
            value = int(raw or b"0") + 1
            try:
                self._op("set", path, str(value).encode(), stat.version)
                return value
            except (BadVersionError, NoNodeError):
                continue

    def _add_watch(self, arm: Callable[[KazooClient, _Watch], Any]) -> None:
        w = _Watch(self, arm)
        with self._lock:
            self._watches.append(w)
        w.arm(self._client)

    def watch_kind(self, kind: str, cb: Callable[[list[str]], Any]) -> None:
        path = self._ensure_kind(kind)
        self._require_connected()

        def arm(client, w):
            ChildrenWatch(client, path, w.wrap(client, lambda children: cb(sorted(children))))

        self._add_watch(arm)

    def watch_object(self, kind: str, id: str, cb: Callable[[Data | None, int], Any]) -> None:
        path = self._model_path(kind, id)
        self._require_connected()

        def on_data(raw, stat, event=None):
            if stat is None:
                cb(None, -1)
                return False
            return cb(_decode(raw) or {}, stat.version)

        self._add_watch(lambda client, w: DataWatch(client, path, w.wrap(client, on_data)))

    # ---- pipelined watches (issue 13: an agent loading 10,000 objects) ------
    def watch_objects(self, kind: str, ids: Sequence[str],
                      cb_of: Callable[[str], Callable[[Data | None, int], Any]]) -> None:
        def follower(oid: str) -> _Follower:
            cb = cb_of(oid)

            def on_data(raw, stat):
                if stat is None:
                    cb(None, -1)
                    return False
                return cb(_decode(raw) or {}, stat.version)

            return _Follower(self, self._model_path(kind, oid), False, on_data)

        self._ensure_kind(kind)
        self._follow_many([follower(i) for i in ids])

    def watch_states(self, paths: Sequence[str],
                     cb_of: Callable[[str], Callable[[Data | None], Any]]) -> None:
        def follower(path: str) -> _Follower:
            cb = cb_of(path)
            return _Follower(self, self._state_path(path), False,
                             lambda raw, stat: cb(_decode(raw) if stat is not None else None))

        self._follow_many([follower(p) for p in paths])

    def watch_states_children(self, paths: Sequence[str],
                              cb_of: Callable[[str], Callable[[list[str]], Any]]) -> None:
        self._follow_many([_Follower(self, self._state_path(p), True, cb_of(p))
                           for p in paths])

    def _follow_many(self, followers: list[_Follower]) -> None:
        """Send every follower's first read at once, then deliver the answers
        in order, here, before returning (as the recipes' constructors do)."""
        if not followers:
            return
        self._require_connected()
        with self._lock:
            self._followers.extend(followers)
            self._watches.extend(followers)
        # In chunks, the next one sent before the answers of this one are
        # handled: the pipe stays full, and the agent's peak memory low (a
        # request and its answer weigh about 1 KB until handled).
        with self._follow_lock:
            client = self._client
            chunks = [followers[i:i + _FOLLOW_CHUNK]
                      for i in range(0, len(followers), _FOLLOW_CHUNK)]
            sent = self._send_chunk(client, chunks[0])
            for nxt in (*chunks[1:], None):
                following = self._send_chunk(client, nxt) if nxt else None
                self._handle_chunk(client, sent)
                sent = following

    def _send_chunk(self, client: KazooClient, chunk: list[_Follower]) -> list:
        return _send_all(client, [(f, *f.make_request(client)) for f in chunk],
                         self.op_timeout)

    def _handle_chunk(self, client: KazooClient, pending: list) -> None:
        # ZooKeeper answers a session's requests in order: once the last
        # is in, all are (one wait, not one wake-up per answer)
        for _f, res in (pending[-1], *pending):
            if res.ready():
                continue
            try:
                res.get(timeout=self.op_timeout)
            except client.handler.timeout_exception as e:
                if self._state == KazooState.CONNECTED and not self._closed:
                    self._start_recovery(client)
                raise self._unavailable(f"no answer in {self.op_timeout} s") from e
            except Exception:  # noqa: S110 - handled by f.handle from the result
                pass
        for f, res in pending:
            f.handle(client, res)

    def _refresh_followers(self, client: KazooClient) -> None:
        """Read every follower again (pipelined) after a reconnection: a new
        session has none of the old one's watches."""
        with self._lock:
            live = [f for f in self._followers if not f.ended]
            self._followers = live
        for i in range(0, len(live), _FOLLOW_CHUNK):
            if client is not self._client or self._closed:
                return
            for f, res in self._send_chunk(client, live[i:i + _FOLLOW_CHUNK]):
                res.rawlink(lambda r, f=f: f.handle(client, r))

    def _require_connected(self) -> None:
        if self._closed or self._state != KazooState.CONNECTED:
            raise self._unavailable()

    # ---- state --------------------------------------------------------------
    def _state_path(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise Invalid(f"bad state path {path!r}", "path")
        return f"{self.root}/{'/'.join(parts)}"

    def _write_state(self, zpath: str, value: bytes, ephemeral: bool,
                     only_if_lost: bool = False) -> bool:
        """Create or overwrite; an ephemeral owned by another session (or a
        persistent node where an ephemeral is wanted, and the reverse) is
        replaced. With ``only_if_lost``, an ephemeral of ours is left alone.
        True if something was written."""
        for _ in range(10):
            try:
                stat = self._op("exists", zpath)
                if stat is None:
                    self._op("create", zpath, value, ephemeral=ephemeral, makepath=True)
                    return True
                cid = self._client.client_id
                want_owner = (cid[0] if cid else -1) if ephemeral else 0
                if stat.ephemeralOwner != want_owner:
                    # Replaced in one transaction: a watcher never sees it gone
                    # (an agent taking over its predecessor's ports keeps the
                    # other hosts' flows to them).
                    t = self._client.transaction()
                    t.delete(zpath, stat.version)
                    t.create(zpath, value, ephemeral=ephemeral)
                    res = self._call(t.commit_async())
                    if any(isinstance(r, NoAuthError) for r in res):
                        raise self._denied()
                    if any(isinstance(r, NotEmptyError) for r in res):
                        raise NotEmptyError()
                    if not any(isinstance(r, Exception) for r in res):
                        return True
                    continue
                if only_if_lost:
                    return False
                self._op("set", zpath, value, stat.version)
                return True
            except (NodeExistsError, NoNodeError, BadVersionError):
                continue
            except NotEmptyError:
                raise Conflict(f"state {zpath} has children: cannot make it ephemeral") from None
            except NoChildrenForEphemeralsError:
                raise Conflict(f"state {zpath}: its parent is ephemeral") from None
        raise Conflict(f"state {zpath} keeps changing under us")

    def put_state(self, path: str, data: Data, ephemeral: bool = True) -> None:
        value = _encode(data)
        self._write_state(self._state_path(path), value, ephemeral)
        key = "/".join(p for p in path.split("/") if p)
        with self._lock:
            if ephemeral:
                self._ephemerals[key] = value
            else:
                self._ephemerals.pop(key, None)

    def claim_state(self, path: str, data: Data) -> bool:
        value = _encode(data)
        zpath = self._state_path(path)
        key = "/".join(p for p in path.split("/") if p)
        try:
            self._op("create", zpath, value, ephemeral=True, makepath=True)
        except NodeExistsError:
            stat = self._op("exists", zpath)
            cid = self._client.client_id
            if stat is None or not cid or stat.ephemeralOwner != cid[0]:
                return False
        with self._lock:
            self._ephemerals[key] = value
        return True

    def get_state(self, path: str) -> Data | None:
        try:
            raw, _ = self._op("get", self._state_path(path))
        except NoNodeError:
            return None
        return _decode(raw)

    def delete_state(self, path: str) -> None:
        zpath = self._state_path(path)
        key = zpath[len(self.root) + 1:]
        with self._lock:
            for p in [p for p in self._ephemerals if p == key or p.startswith(key + "/")]:
                del self._ephemerals[p]
        self._delete_tree(zpath)

    STATE_BATCH = 500  # nodes per multi (each entry is small: well under the 1 MB limit)

    def put_states(self, items: Sequence[tuple[str, Data]], ephemeral: bool = True) -> None:
        """New state nodes in one multi per chunk (BGP's learned routes: a
        watcher of their parent sees one change, not one per route). A chunk
        the server refuses (a node exists already, say) is written node by
        node with :meth:`put_state`."""
        items = [(p, self._state_path(p), _encode(d)) for p, d in items]
        for parent in sorted({z.rsplit("/", 1)[0] for _, z, _ in items}):
            self._ensure(parent)
        for i in range(0, len(items), self.STATE_BATCH):
            chunk = items[i:i + self.STATE_BATCH]
            self._require_connected()
            t = self._client.transaction()
            for _, zpath, value in chunk:
                t.create(zpath, value, ephemeral=ephemeral)
            try:
                res = self._call(t.commit_async())
            except (NodeExistsError, NoNodeError, KazooException):
                res = None
            if res is None or any(isinstance(r, Exception) for r in res):
                for path, _, value in chunk:
                    self.put_state(path, _decode(value), ephemeral)
                continue
            with self._lock:
                for path, _, value in chunk:
                    key = "/".join(x for x in path.split("/") if x)
                    if ephemeral:
                        self._ephemerals[key] = value
                    else:
                        self._ephemerals.pop(key, None)

    def delete_states(self, paths: Sequence[str]) -> None:
        """Leaf state nodes deleted in one multi per chunk (node by node with
        :meth:`delete_state` if the server refuses a chunk: one was gone)."""
        zpaths = [(p, self._state_path(p)) for p in paths]
        with self._lock:
            for _, zpath in zpaths:
                self._ephemerals.pop(zpath[len(self.root) + 1:], None)
        for i in range(0, len(zpaths), self.STATE_BATCH):
            chunk = zpaths[i:i + self.STATE_BATCH]
            self._require_connected()
            t = self._client.transaction()
            for _, zpath in chunk:
                t.delete(zpath)
            try:
                res = self._call(t.commit_async())
            except (NoNodeError, NotEmptyError, KazooException):
                res = None
            if res is None or any(isinstance(r, Exception) for r in res):
                for path, _ in chunk:
                    self.delete_state(path)

    def _delete_tree(self, zpath: str) -> None:
        for _ in range(10):
            try:
                children = self._op("get_children", zpath)
            except NoNodeError:
                return
            for c in children:
                self._delete_tree(f"{zpath}/{c}")
            try:
                self._op("delete", zpath)
                return
            except NoNodeError:
                return
            except NotEmptyError:  # a child appeared meanwhile
                continue
        raise Conflict(f"state {zpath} keeps getting new children: not deleted")

    def list_state(self, path: str) -> list[str]:
        try:
            return sorted(self._op("get_children", self._state_path(path)))
        except NoNodeError:
            return []

    def watch_state_children(self, path: str, cb: Callable[[list[str]], Any]) -> None:
        zpath = self._state_path(path)
        self._ensure(zpath)
        self._require_connected()
        self._add_watch(lambda client, w: _ChildrenFollower(
            client, zpath, w.wrap(client, cb)).start())

    def watch_state(self, path: str, cb: Callable[[Data | None], Any]) -> None:
        zpath = self._state_path(path)
        self._require_connected()

        def on_data(raw, stat, event=None):
            return cb(_decode(raw) if stat is not None else None)

        self._add_watch(lambda client, w: DataWatch(client, zpath, w.wrap(client, on_data)))

    # ---- lifecycle ----------------------------------------------------------
    def health(self) -> Data:
        state = "CLOSED" if self._closed else str(self._state)
        d: Data = {"backend": "zookeeper", "connected": state == "CONNECTED", "state": state,
                   "hosts": self.hosts, "root": self.root,
                   "auth": "digest" if self.acl is not None else "none"}
        if state == "CONNECTED":
            cid = self._client.client_id
            if cid:
                d["session_id"] = f"0x{cid[0]:x}"
            try:
                peer = self._client._connection._socket.getpeername()[:2]
                d["server"] = f"{peer[0]}:{peer[1]}"
                with socket.create_connection(peer, timeout=1.0) as s:
                    s.sendall(b"srvr")
                    out = b""
                    while chunk := s.recv(4096):
                        out += chunk
                for line in out.decode(errors="replace").splitlines():
                    if line.startswith("Mode:"):
                        d["server_mode"] = line.split(":", 1)[1].strip()
            except (OSError, AttributeError, KazooException):
                pass
        return d

    # ---- leader election ----------------------------------------------------
    def elect(self, path: str, identifier: str, on_lead: Callable[[], Any],
              on_lose: Callable[[], Any]) -> Election:
        """kazoo's Election recipe (a Lock: ephemeral sequential nodes under
        ``path``), contended for again after every loss, on whichever kazoo
        client this store has then (see :class:`_ZkElection`)."""
        if self._closed:
            raise self._unavailable()
        e = _ZkElection(self, self._state_path(path), identifier, on_lead, on_lose)
        with self._lock:
            self._elections.append(e)
        e.start()
        return e

    def election_leader(self, path: str) -> str | None:
        self._require_connected()
        zpath = self._state_path(path)
        try:
            contenders = KazooElection(self._client, zpath).contenders()
        except NoNodeError:
            return None
        except _UNAVAILABLE as e:
            raise self._unavailable(str(e)) from e
        return contenders[0] if contenders else None

    def close(self) -> None:
        if self._closed:
            return
        for e in list(self._elections):
            e.cancel()  # given up now: another contender takes over at once
        self._closed = True
        with self._lock:
            self._ephemerals.clear()
            self._watches.clear()
        try:
            self._client.stop()
        finally:
            self._client.close()


def secure_tree(client: KazooClient, path: str, acl: list[ACL]) -> int:
    """Set ``acl`` on ``path`` and every node below it, children first (so a
    node that has it means its subtree does); the number of nodes set. The
    client must be allowed to change the ACLs (ADMIN): an open tree, or one
    already protected by this client's digest. Nodes that vanish meanwhile
    are skipped."""
    count = 0
    try:
        children = client.get_children(path)
    except NoNodeError:
        return 0
    for c in children:
        count += secure_tree(client, f"{path.rstrip('/')}/{c}", acl)
    try:
        client.set_acls(path, acl)
    except NoNodeError:
        return count
    return count + 1


class _Watch:
    """One watch of the store: armed on the current kazoo client, re-armed on
    a replacement. A callback that returned False ends it for good; callbacks
    from a replaced client end its watch there."""

    def __init__(self, store: ZkStore, arm: Callable[[KazooClient, _Watch], Any]) -> None:
        self.store = store
        self._arm = arm
        self.ended = False

    def arm(self, client: KazooClient) -> None:
        self._arm(client, self)

    def wrap(self, client: KazooClient, cb: Callable) -> Callable:
        def wrapped(*args, **kw):
            if self.ended or client is not self.store._client:
                return False
            result = cb(*args, **kw)
            if result is False:
                self.ended = True
            return result

        return wrapped


def _serialise_calls(client: KazooClient, lock: Any, timeout: float) -> None:
    """One caller at a time into kazoo's request queue (see the module doc). A
    caller that cannot get the lock within ``timeout`` fails its call."""
    real = client._call

    def _call(request, async_object):
        if not lock.acquire(True, timeout):
            async_object.set_exception(OperationTimeoutError(
                "kazoo's request queue is blocked"))
            return False
        try:
            return real(request, async_object)
        finally:
            lock.release()

    client._call = _call
    client._mfl_call_lock = lock  # for _send_all


def _send_all(client: KazooClient, items: list[tuple[Any, Any, Any]],
              timeout: float) -> list[tuple[Any, Any]]:
    """kazoo's ``_call`` for many ``(key, request, async result)``: queued
    together and the connection loop woken by one write for all, where
    ``_call`` writes one byte per request, and each write hands the GIL to the
    connection thread (most of the time of a 10,000-object load). Returns
    [(key, async result)]."""
    lock = getattr(client, "_mfl_call_lock", None)
    if lock is None or client._state != KeeperState.CONNECTED or not lock.acquire(True, timeout):
        for _key, req, res in items:  # kazoo sets the errors
            client._call(req, res)
        return [(key, res) for key, _req, res in items]
    try:
        client._queue.extend((req, res) for _key, req, res in items)
        try:
            sock = client._connection._write_sock
            for i in range(0, len(items), 4096):
                sock.sendall(b"\0" * min(4096, len(items) - i))
        except Exception:  # closed meanwhile
            for _key, _req, res in items:
                if not res.ready():
                    res.set_exception(ConnectionClosedError("Connection has been closed"))
    finally:
        lock.release()
    return [(key, res) for key, _req, res in items]


def _wake(client: KazooClient) -> None:
    """Write one wake-up byte per queued request to kazoo's connection loop, as
    long as the socket takes them without blocking (extra ones are drained)."""
    conn = client._connection
    ws = getattr(conn, "_write_sock", None)
    if ws is None:
        return
    for _ in range(len(client._queue)):
        try:
            if not client.handler.select([], [ws], [], 0)[1]:
                return
            ws.send(b"\0")
        except Exception:  # closed meanwhile
            return


def _discard(client: KazooClient) -> None:
    """Stop and close a kazoo client, whatever state it is in."""
    try:
        client.stop()
    except Exception as e:
        log.debug("stopping a replaced kazoo client: %s", e)
    try:
        client.close()
    except Exception as e:
        log.debug("closing a replaced kazoo client: %s", e)


class _ChildrenFollower:
    """Follows the children of a path even when the path is deleted and made
    again (kazoo's ChildrenWatch ends when its node goes): a DataWatch on the
    path notices deletion (children -> []) and re-creation (a new
    ChildrenWatch). The callback sees each distinct sorted list once."""

    def __init__(self, client: KazooClient, zpath: str, cb: Callable[[list[str]], Any]):
        self.client = client
        self.zpath = zpath
        self.cb = cb
        self.lock = client.handler.rlock_object()
        self.prior: list[str] | None = None
        self.stopped = False
        self.cw: ChildrenWatch | None = None

    def start(self) -> None:
        self._watch_children()
        if not self.stopped:
            DataWatch(self.client, self.zpath, self._on_node)

    def _deliver(self, children: list[str]) -> Any:
        with self.lock:
            if self.stopped:
                return False
            children = sorted(children)
            if children == self.prior:
                return None
            self.prior = children
            if self.cb(children) is False:
                self.stopped = True
                return False
            return None

    def _watch_children(self) -> None:
        with self.lock:
            if self.stopped or (self.cw is not None and not self.cw._stopped):
                return
            try:
                self.cw = ChildrenWatch(self.client, self.zpath, self._deliver)
            except NoNodeError:
                self.cw = None

    def _on_node(self, raw, stat, event=None) -> Any:
        if self.stopped:
            return False
        if stat is None:
            return self._deliver([])
        if self.cw is None or self.cw._stopped:
            self.client.handler.spawn(self._watch_children)
        return None


class _Follower:
    """A watch on one node's data (``children=False``: ``on_value(raw, stat)``,
    stat None while the node is missing) or its children (``on_value(sorted
    names)``, [] while it is missing), without kazoo's recipes: their
    constructors read synchronously, one round trip each, where a batch of
    followers sends all its first reads at once (:meth:`ZkStore._follow_many`).
    A missing node is followed by an exists watch until it comes (back);
    each distinct value is delivered once; ``on_value`` returning False ends
    the follower. Duck-types :class:`_Watch` for the watchdog's re-arming."""

    __slots__ = ("store", "zpath", "children", "on_value", "ended", "_prior")

    def __init__(self, store: ZkStore, zpath: str, children: bool,
                 on_value: Callable[..., Any]) -> None:
        self.store = store
        self.zpath = zpath
        self.children = children
        self.on_value = on_value
        self.ended = False
        self._prior: Any = None  # last delivered: mzxid / children list / "missing"

    def make_request(self, client: KazooClient) -> tuple[Any, Any]:
        """(kazoo request, its async result): a read that leaves a watch."""
        path = _prefix_root(client.chroot, self.zpath)
        req = GetChildren(path, self._on_event) if self.children else \
            GetData(path, self._on_event)
        return req, client.handler.async_result()

    def arm(self, client: KazooClient) -> None:
        req, res = self.make_request(client)
        client._call(req, res)
        res.rawlink(lambda r: self.handle(client, r))

    def _on_event(self, _event) -> None:
        client = self.store._client
        if not self.ended and not self.store._closed:
            try:
                self.arm(client)
            except Exception as e:  # closing meanwhile: the reconnection re-reads
                log.debug("cannot re-read %s: %s", self.zpath, e)

    def handle(self, client: KazooClient, res) -> None:
        """Deliver the answer of one read (called once it is ready)."""
        if self.ended or client is not self.store._client:
            return
        with self.store._follow_lock:
            try:
                value = res.get(block=False)
            except NoNodeError:
                value = None
            except Exception as e:  # connection lost: re-read on reconnection
                log.debug("reading %s: %s", self.zpath, type(e).__name__)
                return
            if value is None:
                if self._prior == "missing":
                    return
                self._prior = "missing"
                r = self.on_value([]) if self.children else self.on_value(None, None)
                if r is not False:  # notice its (re)creation
                    client.exists_async(self.zpath, watch=self._on_event).rawlink(
                        lambda er: self._created(client, er))
            elif self.children:
                names = sorted(value)
                if names == self._prior:
                    return
                self._prior = names
                r = self.on_value(names)
            else:
                raw, stat = value
                if isinstance(self._prior, int) and stat.mzxid <= self._prior:
                    return
                self._prior = stat.mzxid
                r = self.on_value(raw, stat)
            if r is False:
                self.ended = True

    def _created(self, client: KazooClient, res) -> None:
        try:
            stat = res.get(block=False)
        except Exception:
            return
        if stat is not None and not self.ended:  # created before the watch was set
            self.arm(client)


class _ZkElection(Election):
    """One contender: a thread (green under eventlet) that runs kazoo's
    Election on the store's current client. As leader it waits until it is
    cancelled, the store closes, the session is LOST (expired: another may
    lead already) or the client is replaced, then calls ``on_lose`` and
    releases the lock; it contends again unless cancelled. While the session
    is only SUSPENDED it keeps leading: its lock node lives until the session
    expires, and the store refuses writes meanwhile."""

    POLL = 0.5  # seconds between checks of the leader's conditions

    def __init__(self, store: ZkStore, zpath: str, identifier: str,
                 on_lead: Callable[[], Any], on_lose: Callable[[], Any]) -> None:
        self.store, self.zpath, self.identifier = store, zpath, identifier
        self.on_lead, self.on_lose = on_lead, on_lose
        h = store._client.handler
        self._mutex = h.lock_object()
        self._wake = h.event_object()
        self._sleep = h.sleep_func
        self._spawn = h.spawn
        self._leading = False
        self.cancelled = False
        self._recipe: KazooElection | None = None

    @property
    def leading(self) -> bool:
        return self._leading

    def start(self) -> None:
        self._spawn(self._run)

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self._wake.set()
        recipe = self._recipe
        if recipe is not None:
            try:
                recipe.cancel()
            except Exception as e:  # a client already stopped
                log.debug("cancelling the election at %s: %s", self.zpath, e)
        self._lost()
        with self.store._lock:
            if self in self.store._elections:
                self.store._elections.remove(self)

    def _done(self) -> bool:
        return self.cancelled or self.store._closed

    def _run(self) -> None:
        while not self._done():
            client = self.store._client
            if client.state != KazooState.CONNECTED:
                self._sleep(0.2)
                continue
            self._recipe = KazooElection(client, self.zpath, self.identifier)
            try:
                self._recipe.run(self._lead, client)
            except Exception as e:  # the session went while contending or releasing
                log.info("election at %s: %s; contending again", self.zpath, e)
                self._sleep(0.5)
            finally:
                self._lost()

    def _lead(self, client: KazooClient) -> None:
        lost = []

        def listener(state: str) -> None:
            if state == KazooState.LOST:
                lost.append(state)
                self._wake.set()

        client.add_listener(listener)
        try:
            with self._mutex:
                if self._done():
                    return
                self._leading = True
                self._wake.clear()
            log.info("election at %s: %s leads", self.zpath, self.identifier)
            try:
                self.on_lead()
            except Exception:
                log.exception("the leader's on_lead failed")
            while not (self._done() or lost or client is not self.store._client):
                self._wake.wait(self.POLL)
            self._lost()
        finally:
            client.remove_listener(listener)

    def _lost(self) -> None:
        with self._mutex:
            was, self._leading = self._leading, False
        if was:
            log.info("election at %s: %s no longer leads", self.zpath, self.identifier)
            try:
                self.on_lose()
            except Exception:
                log.exception("the leader's on_lose failed")
