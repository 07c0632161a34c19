"""The REST API as an os-ken app: ``osken-manager midoflow.apps.api`` (alone or
beside ``midoflow.apps.agent``).

Options (oslo.config, in the ``[DEFAULT]`` section of an osken-manager
``--config-file``):

* ``midoflow_zookeeper``: ZooKeeper ``host:port,...`` or ``memory``. Falls back
  to ``$MIDOFLOW_ZOOKEEPER``, then to the ``zookeeper`` of the agent config
  named by ``$MIDOFLOW_AGENT_CONFIG`` (how ``midoflow-agent --with-api`` runs it).
* ``midoflow_api_host`` / ``midoflow_api_port``: where to listen (127.0.0.1:8181).
* ``midoflow_auth``: ``keystone`` (default) or ``noauth`` (single-machine
  development; then the host must be a loopback address).
* ``midoflow_keystone_url``, ``midoflow_keystone_user`` (midoflow),
  ``midoflow_keystone_project`` (service), ``midoflow_keystone_password`` (or
  ``midoflow_keystone_password_file``), or ``midoflow_keystone_config``: an
  INI file with a ``[keystone_authtoken]`` section as in neutron.conf. Each
  falls back to its ``MIDOFLOW_KEYSTONE_*`` environment variable.

It serves both APIs: native ``/v1`` (admin role) and Neutron v2.0 (see
:mod:`midoflow.rest.auth`).

The app keeps no state of its own: every request goes to the store.
"""

from __future__ import annotations

import logging
import os

from os_ken import cfg
from os_ken.base import app_manager
from os_ken.lib import hub

LOG = logging.getLogger("midoflow.api")

CONF = cfg.CONF
OPTS = [
    cfg.StrOpt("midoflow_zookeeper", default="",
               help="ZooKeeper connection string host:port,... (or 'memory')"),
    cfg.StrOpt("midoflow_api_host", default="127.0.0.1", help="REST API listen address"),
    cfg.IntOpt("midoflow_api_port", default=8181, help="REST API listen port"),
    cfg.StrOpt("midoflow_auth", default="keystone", choices=("keystone", "noauth"),
               help="keystone: tokens validated by keystonemiddleware; noauth: none "
               "(single-machine development, loopback only)"),
    cfg.StrOpt("midoflow_keystone_url", default="",
               help="Keystone identity endpoint http://HOST:PORT/v3"),
    cfg.StrOpt("midoflow_keystone_user", default="", help="service user validating tokens"),
    cfg.StrOpt("midoflow_keystone_project", default="", help="its project"),
    cfg.StrOpt("midoflow_keystone_password", default="", secret=True, help="its password"),
    cfg.StrOpt("midoflow_keystone_password_file", default="",
               help="file whose first line is its password"),
    cfg.StrOpt("midoflow_keystone_config", default="",
               help="INI file with a [keystone_authtoken] section"),
    cfg.StrOpt("midoflow_store_credentials", default="",
               help="the stores' credentials file (mode 0600; default "
               "$MIDOFLOW_STORE_CREDENTIALS)"),
]


def register_opts(conf=CONF) -> None:
    for opt in OPTS:
        try:
            conf.register_opt(opt)
        except cfg.DuplicateOptError:
            pass  # registered already (by another midoflow app) with another definition


register_opts()


def zookeeper_spec(conf=CONF) -> str:
    spec = conf.midoflow_zookeeper or os.environ.get("MIDOFLOW_ZOOKEEPER", "")
    if spec:
        return spec
    path = os.environ.get("MIDOFLOW_AGENT_CONFIG")
    if path:
        from midoflow.agent.config import AgentConfig

        return AgentConfig.load(path).zookeeper
    raise SystemExit(
        "midoflow api: no store configured: set midoflow_zookeeper in the --config-file, "
        "or MIDOFLOW_ZOOKEEPER=host:port (or 'memory')"
    )


def auth_config(conf=CONF):
    """The :class:`midoflow.rest.auth.AuthConfig` the options ask for (SystemExit
    with the reason when they are incomplete or unsafe)."""
    from midoflow.rest.auth import AuthConfig, AuthConfigError

    try:
        auth = AuthConfig.load(
            conf.midoflow_auth, config_file=conf.midoflow_keystone_config or None,
            url=conf.midoflow_keystone_url or None, user=conf.midoflow_keystone_user or None,
            project=conf.midoflow_keystone_project or None,
            password=conf.midoflow_keystone_password or None,
            password_file=conf.midoflow_keystone_password_file or None)
        auth.check_listen(conf.midoflow_api_host)
    except AuthConfigError as e:
        raise SystemExit(f"midoflow api: {e} (options midoflow_auth and midoflow_keystone_* "
                         f"in the --config-file)") from None
    return auth


class MidoflowApi(app_manager.OSKenApp):
    """Serves both APIs (:func:`midoflow.rest.auth.make_root_app`) with
    eventlet.wsgi in a hub thread."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from midoflow.store.factory import make_store  # ZkStore imported lazily there

        self.spec = zookeeper_spec()
        self.auth = auth_config()
        self.host = CONF.midoflow_api_host
        self.port = CONF.midoflow_api_port
        from midoflow.store.credentials import CredentialsError, credentials_from_env
        from midoflow.store.factory import load_credentials

        try:
            creds = load_credentials(CONF.midoflow_store_credentials) \
                if CONF.midoflow_store_credentials else credentials_from_env()
        except CredentialsError as e:
            raise SystemExit(f"midoflow api: {e}") from None
        self.store = make_store(self.spec, handler="eventlet", credentials=creds)
        self.sock = None
        self.server_thread = None

    def start(self):
        super().start()
        import eventlet

        from midoflow.rest.server import serve

        self.sock = eventlet.listen((self.host, self.port))
        self.server_thread = hub.spawn(serve, self.store, sock=self.sock, auth=self.auth)
        self.threads.append(self.server_thread)
        LOG.info("midoflow API on http://%s:%d/v1 (store %s)", self.host, self.port, self.spec)
        # osken-manager waits on the thread start() returns: the server's.
        return self.server_thread

    def stop(self):
        if self.server_thread is not None:
            hub.kill(self.server_thread)
        try:
            super().stop()
        finally:
            if self.sock is not None:
                self.sock.close()
            self.store.close()
