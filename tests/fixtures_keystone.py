"""The ``keystone_server`` fixture (session scope, one per pytest-xdist worker):
a real Keystone bootstrapped with the admin (``admin`` / its admin password,
project ``admin``), projects ``p1`` and ``p2`` with users ``p1user``/``p1pw``
and ``p2user``/``p2pw`` (role ``member``), and the service user ``midoflow``
(project ``service``, role ``service``) whose auth_token options are
``keystone_server.auth_conf``.

``MIDOFLOW_KEYSTONE_URL=http://HOST:PORT/v3`` with
``MIDOFLOW_KEYSTONE_ADMIN_PASSWORD`` uses a Keystone you started yourself
(``python -m midoflow.devenv.keystone start``); the users are added to it.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import running

USERS = {"p1user": ("p1", "p1pw"), "p2user": ("p2", "p2pw")}


def _populate(ks) -> None:
    for user, (project, password) in USERS.items():
        ks.add_project_user(project, user, password)
    ks.auth_conf = ks.service_user()


@pytest.fixture(scope="session")
def keystone_server(tmp_path_factory):
    from midoflow.devenv.keystone import Keystone, KeystoneError, KeystoneServer

    url = os.environ.get("MIDOFLOW_KEYSTONE_URL")
    if url:
        ks = Keystone(url, os.environ.get("MIDOFLOW_KEYSTONE_ADMIN_PASSWORD", "adminpw"))
        try:
            _populate(ks)
        except KeystoneError as e:
            pytest.fail(f"the Keystone at MIDOFLOW_KEYSTONE_URL={url}: {e}", pytrace=False)
        yield ks
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    server = KeystoneServer(tmp_path_factory.mktemp(f"keystone-{worker}"), quiet=False)
    with running(server, "Keystone", KeystoneError):
        try:
            _populate(server)
        except KeystoneError as e:
            pytest.fail(f"could not add Keystone's test projects and users: {e}", pytrace=False)
        yield server
