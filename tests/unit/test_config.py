"""The agent's config loader: every option declared once, checked on load."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from midoflow.agent.config import AgentConfig, ConfigError

BASE = "[agent]\nhost_id=h\nzookeeper=memory\novsdb=unix:/x\ntunnel_ip=10.0.0.1\n"


def load(tmp_path, extra: str = "") -> AgentConfig:
    """BASE with ``extra``'s options added or (same name) replacing BASE's."""
    names = {ln.split("=")[0] for ln in extra.splitlines()}
    kept = [ln for ln in BASE.splitlines(keepends=True) if ln.split("=")[0] not in names]
    path = tmp_path / "agent.ini"
    path.write_text("".join(kept) + extra)
    return AgentConfig.load(str(path))


def test_a_minimal_file_gets_the_declared_defaults(tmp_path):
    c = load(tmp_path)
    for f in dataclasses.fields(AgentConfig):
        if f.default is dataclasses.MISSING or f.name == "host_name":
            continue
        assert getattr(c, f.name) == f.default, f.name
    assert c.host_name == socket.gethostname()
    assert (c.idle_timeout, c.bridge, c.fast_restart, c.zk_session_timeout) == \
        (60, "br-int", True, 10.0)


def test_values_are_converted(tmp_path):
    c = load(tmp_path, "idle_timeout=30\nzk_session_timeout=3\nfast_restart=false\n"
                       "ovs_netns= 1234 \nflow_state=cassandra:127.0.0.1:9042/ks\n"
                       "host_name=box\n")
    assert (c.idle_timeout, c.zk_session_timeout, c.fast_restart, c.ovs_netns) == \
        (30, 3.0, False, "1234")
    assert (c.flow_state, c.host_name) == ("cassandra:127.0.0.1:9042/ks", "box")


@pytest.mark.parametrize("extra, message", [
    ("bogus=1\n", "unknown option.s. bogus"),
    ("tunnel_ip=nope\n", "tunnel_ip 'nope' is not an IPv4 address"),
    ("idle_timeout=soon\n", "idle_timeout must be an integer number of seconds"),
    ("zk_session_timeout=1\n", "zk_session_timeout '1': give a number of seconds from 2 to 600"),
    ("storm_seconds=0\n", "storm_seconds '0': give a whole number from 1 to 3600"),
    ("flow_state=redis:x\n", "flow_state 'redis:x': use 'local' or 'cassandra:"),
    ("fast_restart=maybe\n", "fast_restart 'maybe': give true or false"),
])
def test_bad_values_say_what_to_write(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, extra)


def test_required_options_and_section(tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text(BASE.replace("ovsdb=unix:/x\n", "ovsdb=\n"))
    with pytest.raises(ConfigError, match=r"\[agent\] ovsdb is required"):
        AgentConfig.load(str(path))
    path.write_text("[other]\n")
    with pytest.raises(ConfigError, match="no .agent. section"):
        AgentConfig.load(str(path))
    with pytest.raises(ConfigError, match="cannot read agent config"):
        AgentConfig.load(str(tmp_path / "missing.ini"))


def test_write_then_load_gives_the_same_config(tmp_path):
    c = dataclasses.replace(load(tmp_path, "fast_restart=no\nmax_flows_per_port=7\n"),
                            host_name="x")
    path = tmp_path / "again.ini"
    c.write(str(path))
    assert AgentConfig.load(str(path)) == c


def test_credentials_file_must_be_private(tmp_path):
    cred = tmp_path / "store-credentials"
    cred.write_text("[zookeeper]\nuser = midoflow\npassword = s3cret\n")
    cred.chmod(0o600)
    assert load(tmp_path, f"credentials_file = {cred}\n").credentials_file == str(cred)
    assert load(tmp_path).credentials_file == ""  # open stores (development)
    cred.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load(tmp_path, f"credentials_file = {cred}\n")
    with pytest.raises(ConfigError, match="cannot read the store credentials file"):
        load(tmp_path, f"credentials_file = {tmp_path / 'nope'}\n")
