"""The Neutron v2.0 HTTP layer (midoflow.neutron.api) over the memory store."""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from wsgiref.simple_server import make_server

import pytest
import webob

from midoflow import errors as mf
from midoflow import model
from midoflow.neutron import extensions as ext
from midoflow.neutron import openapi
from midoflow.neutron.api import make_neutron_app
from midoflow.neutron.service import COLLECTIONS, NeutronService
from midoflow.rest.app import MAX_BODY
from midoflow.store import paths
from midoflow.store.memory import MemoryBackend, MemoryStore

ALL = {"networks", "subnets", "ports", "routers", "floatingips", "security-groups",
       "security-group-rules"}
P1 = {"X-Project-Id": "p1", "X-Roles": "member"}
P2 = {"X-Project-Id": "p2", "X-Roles": "member"}


@pytest.fixture
def store():
    return MemoryStore(MemoryBackend())


@pytest.fixture
def app(store):
    return make_neutron_app(store, noauth=True)


def call(app, method, path, body=None, *, raw=None, ctype="application/json", headers=None,
         environ=None):
    req = webob.Request.blank(path, method=method, headers=headers or {})
    if body is not None or raw is not None:
        data = raw if raw is not None else json.dumps(body).encode()
        req.body = data
        if ctype is None:
            req.environ.pop("CONTENT_TYPE", None)
        else:
            req.environ["CONTENT_TYPE"] = ctype
    req.environ.update(environ or {})
    resp = req.get_response(app)
    assert "Traceback" not in resp.text
    return resp


def err(resp, status, type_=None):
    assert resp.status_int == status, resp.text
    assert resp.content_type == "application/json"
    e = resp.json["NeutronError"]
    assert set(e) == {"type", "message", "detail"} and e["message"]
    if type_:
        assert e["type"] == type_, e
    return e


def net(app, name="n1", headers=None, **kw):
    r = call(app, "POST", "/v2.0/networks", {"network": {"name": name, **kw}}, headers=headers)
    assert r.status_int == 201, r.text
    return r.json["network"]


# ----------------------------------------------------------------- documents
def test_versions_and_resources(app):
    r = call(app, "GET", "/")
    assert r.status_int == 200
    assert r.json == {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
        {"href": "http://localhost/v2.0/", "rel": "self"}]}]}
    for path in ("/v2.0", "/v2.0/"):
        r = call(app, "GET", path)
        assert r.status_int == 200
        got = {x["collection"]: x for x in r.json["resources"]}
        assert set(got) == ALL
        assert got["security-groups"]["name"] == "security_group"
        assert got["ports"]["links"] == [{"href": "http://localhost/v2.0/ports", "rel": "self"}]


def test_all_collections_are_registered():
    NeutronService(MemoryStore(MemoryBackend()))
    assert set(COLLECTIONS) == ALL


def test_extensions_list_and_show(app):
    r = call(app, "GET", "/v2.0/extensions")
    aliases = {e["alias"] for e in r.json["extensions"]}
    assert {"external-net", "router", "security-group", "binding", "tags", "agent"} - aliases \
        == {"tags"}
    for e in r.json["extensions"]:
        assert set(e) == {"alias", "name", "description", "updated", "links"}
    assert call(app, "GET", "/v2.0/extensions/router.json").json["extension"]["alias"] == "router"
    err(call(app, "GET", "/v2.0/extensions/lbaas"), 404)
    err(call(app, "POST", "/v2.0/extensions", {}), 405, "HTTPMethodNotAllowed")
    # an extension needing a collection that is not served is not listed
    assert "router" not in {e["alias"] for e in ext.extensions(frozenset({"networks"}))}


def test_extensions_claim_only_attributes_that_exist(app):
    n = net(app)
    for attr in ("router:external", "mtu", "provider:network_type", "tags", "description",
                 "revision_number", "created_at", "updated_at", "project_id",
                 "port_security_enabled"):
        assert attr in n, attr
    call(app, "POST", "/v2.0/subnets", {"subnet": {"network_id": n["id"], "ip_version": 4,
                                                   "cidr": "10.0.0.0/24"}})
    p = call(app, "POST", "/v2.0/ports", {"port": {"network_id": n["id"]}}).json["port"]
    for attr in ("binding:host_id", "binding:vif_type", "port_security_enabled",
                 "allowed_address_pairs", "security_groups"):
        assert attr in p, attr
    ext_net = net(app, "ext", **{"router:external": True})
    call(app, "POST", "/v2.0/subnets", {"subnet": {"network_id": ext_net["id"],
                                                   "ip_version": 4, "cidr": "203.0.113.0/24"}})
    rt = call(app, "POST", "/v2.0/routers", {"router": {"name": "r", "external_gateway_info": {
        "network_id": ext_net["id"], "enable_snat": False}}}).json["router"]
    assert rt["distributed"] is True  # dvr
    assert rt["external_gateway_info"]["enable_snat"] is False  # ext-gw-mode
    route = {"destination": "192.0.2.0/24", "nexthop": "203.0.113.254"}
    r = call(app, "PUT", f"/v2.0/routers/{rt['id']}/add_extraroutes",
             {"router": {"routes": [route]}})  # extraroute
    assert r.status_int == 200 and r.json["router"]["routes"] == [route], r.text


def test_openapi_document_is_up_to_date():
    assert openapi.PATH.read_text(encoding="utf-8") == openapi.render(), (
        "midoflow/neutron/openapi.yaml is stale: run python -m midoflow.neutron.openapi")


# ----------------------------------------------------------------- who asks
def test_noauth_is_admin_unless_headers_say_a_project(app):
    n = net(app, "admins")
    assert n["project_id"] == "admin"
    err(call(app, "GET", f"/v2.0/networks/{n['id']}", headers=P1), 404, "NetworkNotFound")
    mine = net(app, "mine", headers=P1)
    assert mine["project_id"] == "p1"
    names = {x["name"] for x in call(app, "GET", "/v2.0/networks", headers=P1).json["networks"]}
    assert names == {"mine"}
    err(call(app, "POST", "/v2.0/networks", {"network": {"router:external": True}},
             headers=P1), 403, "PolicyNotAuthorized")


def test_keystone_mode_401_and_confirmed_identity(store):
    app = make_neutron_app(store)
    assert call(app, "GET", "/").status_int == 200  # the version document is public
    # (keystonemiddleware's auth_token adds WWW-Authenticate to every 401 it passes)
    r = call(app, "GET", "/v2.0/networks", environ={"HTTP_X_IDENTITY_STATUS": "Invalid"})
    err(r, 401, "NotAuthorized")
    ok = {"HTTP_X_IDENTITY_STATUS": "Confirmed", "HTTP_X_PROJECT_ID": "p1",
          "HTTP_X_ROLES": "member,reader"}
    assert call(app, "GET", "/v2.0/networks", environ=ok).json == {"networks": []}
    # the noauth headers mean nothing with auth on
    err(call(app, "GET", "/v2.0/networks", headers=P1), 401)


# ----------------------------------------------------------------- CRUD
def test_crud_with_and_without_json_suffix(app):
    n = net(app)
    nid = n["id"]
    assert call(app, "GET", f"/v2.0/networks/{nid}.json").json["network"] == n
    r = call(app, "GET", f"/v2.0/networks/{nid}?fields=name&fields=mtu")
    assert r.json == {"network": {"name": "n1", "mtu": n["mtu"]}}
    r = call(app, "PUT", f"/v2.0/networks/{nid}.json", {"network": {"name": "n2"}})
    assert r.status_int == 200 and r.json["network"]["name"] == "n2"
    assert r.json["network"]["revision_number"] == n["revision_number"] + 1
    assert [x["id"] for x in call(app, "GET", "/v2.0/networks.json").json["networks"]] == [nid]
    r = call(app, "DELETE", f"/v2.0/networks/{nid}")
    assert r.status_int == 204 and r.body == b""
    err(call(app, "GET", f"/v2.0/networks/{nid}"), 404, "NetworkNotFound")
    err(call(app, "DELETE", f"/v2.0/networks/{nid}"), 404, "NetworkNotFound")


def test_name_probe_is_a_clean_404(app):
    net(app, "web")
    e = err(call(app, "GET", "/v2.0/networks/web"), 404, "NetworkNotFound")
    assert "web" in e["message"]
    assert len(call(app, "GET", "/v2.0/networks?name=web").json["networks"]) == 1
    err(call(app, "GET", "/v2.0/security-groups/default"), 404)


@pytest.mark.parametrize("path", ["/v3", "/v2.0/bridges", "/v2.0/networks/x/y/z",
                                  "/v2.0/routers/x/explode", "/favicon.ico", "/v2.0/quotas/a/b"])
def test_unknown_urls_are_404(app, path):
    err(call(app, "GET", path), 404)


def test_wrong_method_is_405_with_allow(app):
    r = call(app, "PATCH", "/v2.0/networks")
    err(r, 405, "HTTPMethodNotAllowed")
    assert r.headers["Allow"] == "GET, POST"
    assert call(app, "DELETE", "/v2.0/agents").headers["Allow"] == "GET"
    assert call(app, "GET", "/v2.0/routers/x/add_router_interface").headers["Allow"] == "PUT"


@pytest.mark.parametrize("raw,ctype,message", [
    (b'{"network": ', "application/json", "Malformed request body"),
    (b'{"network": {"name": NaN}}', "application/json", "Malformed request body"),
    (b'{"network": {"name": "\xff"}}', "application/json", "not valid UTF-8"),
    (b"[" * 50000, "application/json", "Malformed request body"),
    (b"", "application/json", "Resource body required"),
    (b'{"name": "x"}', "application/json", "Unable to find 'network' in request body"),
    (b'{"network": []}', "application/json", "Body contains invalid data"),
    (b'[1]', "application/json", "Body contains invalid data"),
    (b'{"network": {}, "x": 1}', "application/json", "Unrecognized attribute(s) 'x'"),
    (b'{"network": {"colour": "red"}}', "application/json", "Unrecognized attribute(s) 'colour'"),
    (b'{"networks": [{}, {}]}', "application/json", "bulk create is not supported"),
    (b'{"network": {}}', "text/plain", "Invalid content type"),
    (b'{"network": {}}', "application/json; charset=latin-1", "Invalid content type"),
])
def test_bad_bodies_are_400(app, store, raw, ctype, message):
    e = err(call(app, "POST", "/v2.0/networks", raw=raw, ctype=ctype), 400)
    assert message in e["message"]
    assert store.list("neutron.networks") == []


def test_body_without_content_type_is_json(app):
    r = call(app, "POST", "/v2.0/networks", {"network": {"name": "x"}}, ctype=None)
    assert r.status_int == 201


def test_body_over_the_limit_is_413(app):
    big = b'{"network": {"name": "' + b"x" * MAX_BODY + b'"}}'
    err(call(app, "POST", "/v2.0/networks", raw=big), 413, "HTTPRequestEntityTooLarge")
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(big)}
    req = webob.Request.blank("/v2.0/networks", method="POST", environ=chunked)
    req.environ.pop("CONTENT_LENGTH", None)
    req.environ["CONTENT_TYPE"] = "application/json"
    err(req.get_response(app), 413)


@pytest.mark.parametrize("target", ["/v2.0/networks/%ff", "/v2.0/networks?name=%ff"])
def test_bad_encoding_is_400(app, target):
    path, _, qs = target.partition("?")
    req = webob.Request.blank("/", environ={"QUERY_STRING": qs})
    req.environ["PATH_INFO"] = urllib.parse.unquote_to_bytes(path).decode("latin-1")
    err(req.get_response(app), 400)


class _Broken(NeutronService):
    def __init__(self, store, exc):
        super().__init__(store)
        self.exc = exc

    def list(self, ctx, collection):
        raise self.exc


def test_unexpected_errors_are_a_clean_500_and_unavailable_503(store, caplog):
    app = make_neutron_app(store, noauth=True, service=_Broken(store, RuntimeError("boom")))
    e = err(call(app, "GET", "/v2.0/networks"), 500, "HTTPInternalServerError")
    assert e["message"] == ("Request Failed: internal server error while processing your "
                            "request.")
    assert "boom" not in e["message"] and "boom" in caplog.text
    app = make_neutron_app(store, noauth=True,
                           service=_Broken(store, mf.Unavailable("lost quorum")))
    err(call(app, "GET", "/v2.0/networks"), 503, "ServiceUnavailable")


# ----------------------------------------------------------------- lists
def test_filters_paging_and_links_over_http(app):
    ids = sorted(net(app, f"n{i}", shared=(i % 2 == 0))["id"] for i in range(5))
    r = call(app, "GET", "/v2.0/networks?shared=True&fields=id")
    assert len(r.json["networks"]) == 3 and all(set(x) == {"id"} for x in r.json["networks"])
    seen, url, pages = [], "/v2.0/networks?limit=2&fields=id", 0
    while url:
        r = call(app, "GET", url)
        pages += 1
        seen += [x["id"] for x in r.json["networks"]]
        nxt = [lk["href"] for lk in r.json.get("networks_links", []) if lk["rel"] == "next"]
        url = nxt[0].removeprefix("http://localhost") if nxt else None
    assert seen == ids and pages == 3
    r = call(app, "GET", "/v2.0/networks?limit=2&sort_key=name&sort_dir=desc")
    assert [x["name"] for x in r.json["networks"]] == ["n4", "n3"]
    err(call(app, "GET", "/v2.0/networks?marker=nope"), 404, "NetworkNotFound")
    err(call(app, "GET", "/v2.0/networks?sort_key=colour"), 400)
    err(call(app, "GET", "/v2.0/networks?limit=-2"), 400)


# ----------------------------------------------------------------- tags
def test_tags_api(app, store):
    n = net(app)
    nid = n["id"]
    base = f"/v2.0/networks/{nid}/tags"
    r = call(app, "PUT", base, {"tags": ["b", "a"]})
    assert r.status_int == 200 and r.json == {"tags": ["a", "b"]}
    r = call(app, "PUT", f"{base}/c")
    assert r.status_int == 201
    assert call(app, "GET", base).json == {"tags": ["a", "b", "c"]}
    assert call(app, "GET", f"{base}/c").status_int == 204
    err(call(app, "GET", f"{base}/z"), 404, "TagNotFound")
    assert call(app, "DELETE", f"{base}/a").status_int == 204
    err(call(app, "DELETE", f"{base}/a"), 404, "TagNotFound")
    shown = call(app, "GET", f"/v2.0/networks/{nid}").json["network"]
    assert shown["tags"] == ["b", "c"]
    assert shown["revision_number"] == n["revision_number"] + 3  # 3 changes: put, add, remove
    call(app, "PUT", f"{base}/b")  # already there: no change
    assert call(app, "GET", f"/v2.0/networks/{nid}").json["network"]["revision_number"] == \
        shown["revision_number"]
    assert [n["id"] for n in call(app, "GET", "/v2.0/networks?tags=b,c").json["networks"]] \
        == [nid]
    assert call(app, "GET", "/v2.0/networks?not-tags-any=c").json["networks"] == []
    assert call(app, "DELETE", base).status_int == 204
    assert call(app, "GET", base).json == {"tags": []}
    for bad in ({"tags": ["x" * 61]}, {"tags": ["a,b"]}, {"tags": "a"}, {"tags": [1]},
                {"tag": ["a"]}):
        err(call(app, "PUT", base, bad), 400)
    err(call(app, "PUT", f"{base}/{'y' * 61}"), 400)
    err(call(app, "PUT", "/v2.0/networks/nope/tags/a"), 404, "NetworkNotFound")
    err(call(app, "GET", base, headers=P1), 404, "NetworkNotFound")


# ----------------------------------------------------------------- actions
def test_router_interface_actions(app):
    nid = net(app)["id"]
    sub = call(app, "POST", "/v2.0/subnets", {"subnet": {
        "network_id": nid, "ip_version": 4, "cidr": "10.1.0.0/24"}}).json["subnet"]
    rid = call(app, "POST", "/v2.0/routers", {"router": {"name": "r"}}).json["router"]["id"]
    r = call(app, "PUT", f"/v2.0/routers/{rid}/add_router_interface",
             {"subnet_id": sub["id"]})
    assert r.status_int == 200, r.text
    assert r.json["subnet_id"] == sub["id"] and r.json["id"] == rid
    err(call(app, "DELETE", f"/v2.0/routers/{rid}"), 409)
    r = call(app, "PUT", f"/v2.0/routers/{rid}/remove_router_interface",
             {"subnet_id": sub["id"]})
    assert r.status_int == 200, r.text
    err(call(app, "PUT", f"/v2.0/routers/{rid}/add_router_interface", raw=b"[]"), 400)
    err(call(app, "PUT", f"/v2.0/networks/{nid}/add_router_interface", {}), 404)


# ----------------------------------------------------------------- agents
def test_agents_are_midoflow_hosts(store, app):
    h1, h2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    store.backend.models[model.HOSTS][h1] = ({"id": h1, "name": "host1", "description": ""}, 0)
    store.backend.models[model.HOSTS][h2] = ({"id": h2, "name": "host2", "description": ""}, 0)
    store.backend.state[paths.host_alive(h1)] = (
        {"host_id": h1, "hostname": "host1", "tunnel_ips": {"vxlan": "10.0.0.1"},
         "ovs_connected": True, "started_at": 1.7e9}, None)
    agents = {a["host"]: a for a in call(app, "GET", "/v2.0/agents").json["agents"]}
    assert set(agents) == {"host1", "host2"}
    a1 = agents["host1"]
    assert (a1["id"], a1["alive"], a1["agent_type"], a1["binary"], a1["admin_state_up"]) == (
        h1, True, "Midoflow Agent", "midoflow-agent", True)
    assert a1["configurations"] == {"tunnel_ips": {"vxlan": "10.0.0.1"}, "ovs_connected": True}
    assert a1["started_at"] == "2023-11-14 22:13:20"
    assert agents["host2"]["alive"] is False and agents["host2"]["heartbeat_timestamp"] is None
    r = call(app, "GET", "/v2.0/agents?alive=false&fields=host")
    assert r.json == {"agents": [{"host": "host2"}]}
    assert call(app, "GET", f"/v2.0/agents/{h1}").json["agent"]["host"] == "host1"
    err(call(app, "GET", "/v2.0/agents/nope"), 404)
    err(call(app, "GET", "/v2.0/agents", headers=P1), 403, "PolicyNotAuthorized")
    err(call(app, "GET", f"/v2.0/agents/{h1}", headers=P1), 403, "PolicyNotAuthorized")


# ----------------------------------------------------------------- quotas
def test_quotas_are_unlimited_with_used_counts(app):
    net(app, "a", headers=P1)
    net(app, "b", headers=P1)
    net(app, "c", headers=P2)
    r = call(app, "GET", "/v2.0/quotas/p1", headers=P1)
    assert r.json["quota"]["network"] == -1 and set(r.json["quota"].values()) == {-1}
    d = call(app, "GET", "/v2.0/quotas/p1/details.json", headers=P1).json["quota"]
    assert d["network"] == {"limit": -1, "used": 2, "reserved": 0}
    assert d["port"]["used"] == 0
    assert call(app, "GET", "/v2.0/quotas/p2/details").json["quota"]["network"]["used"] == 1
    assert call(app, "GET", "/v2.0/quotas/tenant", headers=P2).json == {
        "tenant": {"tenant_id": "p2"}}
    assert call(app, "GET", "/v2.0/quotas").json == {"quotas": []}
    err(call(app, "GET", "/v2.0/quotas/p1", headers=P2), 403, "PolicyNotAuthorized")
    err(call(app, "GET", "/v2.0/quotas/p1/details", headers=P2), 403)
    err(call(app, "GET", "/v2.0/quotas", headers=P2), 403)
    err(call(app, "PUT", "/v2.0/quotas/p1", {"quota": {"network": 5}}), 405)


# ----------------------------------------------------------------- a real client
def test_openstacksdk_pages_filters_and_finds_by_name(app):
    """The unmodified SDK (as the openstack CLI uses it, OS_AUTH_TYPE=none) over
    loopback: name lookups (GET by name must 404 first), marker pagination to an
    empty page, sorting, tags."""
    import openstack

    from midoflow.rest.server import _QuietHandler, _ThreadingWSGIServer

    httpd = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                        handler_class=_QuietHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        host, port = httpd.server_address[:2]
        conn = openstack.connect(auth_type="none", endpoint=f"http://{host}:{port}")
        n = conn.network.create_network(name="net1")
        conn.network.create_subnet(network_id=n.id, cidr="10.0.0.0/24", ip_version=4)
        for i in range(5):
            conn.network.create_port(network_id=n.id, name=f"p{i}")
        assert sorted(p.name for p in conn.network.ports(limit=2)) == [f"p{i}" for i in range(5)]
        assert [p.name for p in conn.network.ports(limit=2, sort_key="name", sort_dir="desc")] \
            == ["p4", "p3", "p2", "p1", "p0"]
        assert conn.network.find_network("net1").id == n.id
        assert conn.network.find_network("nope") is None
        conn.network.add_tag(n, "blue")
        assert conn.network.get_network(n.id).tags == ["blue"]
        assert [x.id for x in conn.network.networks(tags="blue")] == [n.id]
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)
