"""The REST API as an os-ken app: ``osken-manager midoflow.apps.api`` (alone or
beside ``midoflow.apps.agent``).

Options (oslo.config, in the ``[DEFAULT]`` section of an osken-manager
``--config-file``):

* ``midoflow_zookeeper``: ZooKeeper ``host:port,...`` or ``memory``. Falls back
  to ``$MIDOFLOW_ZOOKEEPER``, then to the ``zookeeper`` of the agent config
  named by ``$MIDOFLOW_AGENT_CONFIG`` (how ``midoflow-agent --with-api`` runs it).
* ``midoflow_api_host`` / ``midoflow_api_port``: where to listen (127.0.0.1:8181).

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


class MidoflowApi(app_manager.OSKenApp):
    """Serves :func:`midoflow.rest.app.make_app` with eventlet.wsgi in a hub thread."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from midoflow.store.factory import make_store  # ZkStore imported lazily there

        self.spec = zookeeper_spec()
        self.host = CONF.midoflow_api_host
        self.port = CONF.midoflow_api_port
        self.store = make_store(self.spec, handler="eventlet")
        self.sock = None
        self.server_thread = None

    def start(self):
        super().start()
        import eventlet

        from midoflow.rest.server import serve

        self.sock = eventlet.listen((self.host, self.port))
        self.server_thread = hub.spawn(serve, self.store, sock=self.sock)
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
