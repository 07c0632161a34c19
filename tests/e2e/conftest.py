"""End-to-end fixtures: whole clouds (real OVS per host, real agents, real
ZooKeeper), sharing the session's ZooKeeper server, each in its own chroot."""

from __future__ import annotations

import os

import pytest

if os.geteuid() != 0:  # namespaces and OVS need root
    pytest.exit("the end-to-end tests need root (network namespaces, OVS)", returncode=2)


@pytest.fixture(scope="module")
def cloud_factory(zk_server):
    from topologies.midocloud import MidoCloud

    clouds = []

    def make(n_hosts: int = 3, **kw) -> MidoCloud:
        mc = MidoCloud(n_hosts=n_hosts, zk_hosts=zk_server.hosts, **kw)
        clouds.append(mc)
        try:
            mc.start()
        except BaseException:
            mc.stop()
            raise
        return mc

    yield make
    for mc in clouds:
        mc.stop()
