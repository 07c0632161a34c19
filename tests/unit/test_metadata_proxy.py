"""The metadata proxy against a real HTTP upstream on loopback (a Nova
stand-in that checks the signature), the built-in tree through it, bad
requests, the agent's config options and the flows' pipeline check."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest
import webob

from midoflow.agent.config import AgentConfig, ConfigError
from midoflow.apps import flowcheck
from midoflow.apps import pipeline as pl
from midoflow.metadata import signature, tree
from midoflow.metadata.proxy import MAX_BODY, MetadataProxy

SECRET = "s3cret"
INST = tree.Instance(port_id="port-1", instance_id="inst-1", tenant_id="t1",
                     hostname="vm1", local_ipv4="10.0.0.5")
PEER = "169.254.0.8"


class _Nova(http.server.BaseHTTPRequestHandler):
    seen: list = []  # noqa: RUF012

    def log_message(self, *a):
        pass

    def _answer(self, body=b""):
        h = self.headers
        type(self).seen.append((self.command, self.path, dict(h), body))
        if self.path.startswith("/slow"):
            threading.Event().wait(1)
        if not signature.valid(SECRET, h.get("X-Instance-ID", ""),
                               h.get("X-Instance-ID-Signature", "")):
            self.send_response(403)
            self.end_headers()
            self.wfile.write(b"Invalid proxy request signature.")
            return
        doc = json.dumps({"uuid": h["X-Instance-ID"], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(doc)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(doc)

    def do_GET(self):  # noqa: N802
        self._answer()

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self):  # noqa: N802
        self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))


@pytest.fixture
def nova():
    _Nova.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Nova)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _lookup(addr):
    return INST if addr == PEER else None


def _req(app, path, method="GET", peer=PEER, **kw):
    req = webob.Request.blank(path, method=method, remote_addr=peer, **kw)
    return req.get_response(app)


def test_forwarded_with_neutron_headers(nova):
    app = MetadataProxy(_lookup, nova, SECRET)
    resp = _req(app, "/openstack/latest/meta_data.json?x=1",
                headers={"X-Forwarded-For": "6.6.6.6", "X-Instance-ID": "forged"})
    assert resp.status_int == 200
    assert resp.json == {"uuid": "inst-1", "path": "/openstack/latest/meta_data.json?x=1"}
    _cmd, _path, h, _ = _Nova.seen[-1]
    assert h["X-Forwarded-For"] == "10.0.0.5" and h["X-Tenant-ID"] == "t1"
    assert h["X-Instance-ID"] == "inst-1"
    assert h["X-Instance-ID-Signature"] == signature.sign(SECRET, "inst-1")


def test_head_and_post_pass(nova):
    app = MetadataProxy(_lookup, nova + "/prefix/", SECRET)
    assert _req(app, "/latest", method="HEAD").status_int == 200
    resp = _req(app, "/openstack/latest/password", method="POST", body=b"pw")
    assert resp.status_int == 200 and resp.json["path"] == "/prefix/openstack/latest/password"
    assert _Nova.seen[-1][3] == b"pw"


def test_wrong_secret_is_the_upstreams_403(nova):
    resp = _req(MetadataProxy(_lookup, nova, "wrong"), "/openstack")
    assert resp.status_int == 403 and b"signature" in resp.body


def test_unreachable_upstream_is_502():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    app = MetadataProxy(_lookup, f"http://127.0.0.1:{port}", SECRET, timeout=2)
    resp = _req(app, "/openstack")
    assert resp.status_int == 502 and b"cannot be reached" in resp.body
    assert app.stats["upstream_errors"] == 1


def test_slow_upstream_is_504(nova):
    app = MetadataProxy(_lookup, nova, SECRET, timeout=0.3)
    resp = _req(app, "/slow")
    assert resp.status_int == 504 and b"did not answer within 0.3 s" in resp.body


def test_unknown_source_is_404(nova):
    app = MetadataProxy(_lookup, nova, SECRET)
    resp = _req(app, "/openstack", peer="169.254.9.9")
    assert resp.status_int == 404 and b"169.254.9.9" in resp.body
    assert _Nova.seen == []  # never forwarded
    assert app.stats["unknown_source"] == 1


def test_bad_methods_and_bodies(nova):
    app = MetadataProxy(_lookup, nova, SECRET)
    resp = _req(app, "/openstack", method="DELETE")
    assert resp.status_int == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
    big = _req(app, "/x", method="POST", body=b"x" * (MAX_BODY + 1))
    assert big.status_int == 413
    assert _Nova.seen == []


def test_builtin_tree_without_upstream():
    app = MetadataProxy(_lookup)
    resp = _req(app, "/openstack/latest/meta_data.json")
    assert resp.status_int == 200 and resp.content_type == "application/json"
    assert resp.json["uuid"] == "inst-1" and resp.json["hostname"] == "vm1"
    assert _req(app, "/latest/meta-data/local-ipv4").text == "10.0.0.5"
    assert _req(app, "/latest/user-data").status_int == 404
    assert _req(app, "/openstack/latest/password", method="POST").status_int == 405


def test_bad_upstream_refused():
    with pytest.raises(ValueError, match="http"):
        MetadataProxy(_lookup, "ftp://x")


# ---- the agent's options ---------------------------------------------------------
BASE = "[agent]\nhost_id = h\nzookeeper = memory\novsdb = unix:/x\ntunnel_ip = 10.0.0.1\n"


@pytest.mark.parametrize("value,ok", [
    ("", ""), ("http://nova:8775", "http://nova:8775"), ("https://n/md/", "https://n/md"),
    ("nova:8775", None), ("ftp://nova", None), ("http://", None), ("http://n:99999", None),
    ("http://n/?q=1", None)])
def test_metadata_upstream_option(tmp_path, value, ok):
    path = tmp_path / "a.ini"
    path.write_text(BASE + f"metadata_upstream = {value}\nmetadata_secret = s\n")
    if ok is None:
        with pytest.raises(ConfigError, match="metadata_upstream .*give the metadata service"):
            AgentConfig.load(str(path))
    else:
        cfg = AgentConfig.load(str(path))
        assert cfg.metadata_upstream == ok and cfg.metadata_secret == "s"
        assert cfg.metadata_enabled


def test_metadata_enabled_option(tmp_path):
    path = tmp_path / "a.ini"
    path.write_text(BASE + "metadata_enabled = maybe\n")
    with pytest.raises(ConfigError, match="metadata_enabled 'maybe': give true or false"):
        AgentConfig.load(str(path))
    path.write_text(BASE + "metadata_enabled = false\n")
    assert AgentConfig.load(str(path)).metadata_enabled is False


# ---- the flows -----------------------------------------------------------------------
def test_metadata_flows_pass_the_pipeline_check():
    dp = pl.OFFLINE
    msgs = [*pl.metadata_port_flows(dp, 9),
            *pl.metadata_steering_flows(dp, 9, "0a:a9:fe:a9:fe:fe", 5, "169.254.0.6",
                                        "10.0.0.5", "02:00:00:00:00:05"),
            *pl.delete_metadata_flows(dp, 5), *pl.delete_metadata_flows(dp)]
    assert [flowcheck.check(m) for m in msgs] == ["metadata"] * 4 + [None] * 3
    out, back, arp = msgs[1:4]
    assert dict(out.match.items())["tcp_dst"] == 80
    acts = {a.key: a.value for a in out.instructions[0].actions if hasattr(a, "key")}
    assert acts == {"ipv4_src": "169.254.0.6", "eth_dst": "0a:a9:fe:a9:fe:fe"}
    acts = {a.key: a.value for a in back.instructions[0].actions if hasattr(a, "key")}
    assert acts == {"ipv4_dst": "10.0.0.5", "eth_dst": "02:00:00:00:00:05"}
    assert out.priority > pl.PRIO_LOW_TTL and out.cookie == back.cookie == arp.cookie
