"""midoflow.apps.ovsctl: finding ovs-vswitchd's control socket, and what the
agent says when it cannot set OVS's fragment bound."""

from __future__ import annotations

from midoflow.apps import ovsctl


def test_the_control_socket_is_found_beside_the_ovsdb_socket(tmp_path):
    db = f"unix:{tmp_path}/db.sock"
    assert ovsctl.unixctl_path(db) is None  # nothing there
    (tmp_path / "ovs-vswitchd.pid").write_text("4242\n")
    assert ovsctl.unixctl_path(db) is None  # a pidfile without its socket
    (tmp_path / "ovs-vswitchd.4242.ctl").touch()
    assert ovsctl.unixctl_path(db) == f"{tmp_path}/ovs-vswitchd.4242.ctl"  # Debian's way
    (tmp_path / "ovs-vswitchd.ctl").touch()
    assert ovsctl.unixctl_path(db) == f"{tmp_path}/ovs-vswitchd.ctl"  # an explicit --unixctl
    assert ovsctl.unixctl_path(db, "/elsewhere.ctl") == "/elsewhere.ctl"  # configured
    assert ovsctl.unixctl_path("tcp:127.0.0.1:6640") is None


def test_a_failed_setting_says_what_to_do(tmp_path):
    assert "ovs_unixctl" in ovsctl.set_ipf_min_frag(None)
    why = ovsctl.set_ipf_min_frag(str(tmp_path / "no-such.ctl"))
    assert why is not None and "ipf-set-min-frag" in why
