"""Fuzz the Neutron API from its OpenAPI document (schemathesis 4.x) over HTTP.

A real server (wsgiref in a thread, as rest/server.py's BackgroundServer) serves
``make_neutron_app(store, noauth=True)`` over a ZooKeeper store seeded once per
module with a small cloud: an external network and subnet, a project network,
subnet and port, a router with a gateway and an interface, a security group
with a rule, a floating IP. Generated UUIDs in paths and bodies are often
swapped for the seeded ids, so the fuzzer reaches the handlers' deeper checks
and not only 404s.

One case in three acts as an ordinary project. Checks: no 5xx, status codes
and content types as documented, every 4xx in Neutron's format
``{"NeutronError": {"type", "message", "detail"}}``, no traceback in any body;
and at the end, no Neutron or native object left
dangling (a port without its network, a native port without its bridge).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import Counter, defaultdict
from typing import Any
from wsgiref.simple_server import make_server

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks as st_checks

from midoflow import model
from midoflow.neutron import openapi
from midoflow.neutron.api import make_neutron_app
from midoflow.neutron.context import Context
from midoflow.rest.app import MAX_BODY
from midoflow.rest.server import _QuietHandler, _ThreadingWSGIServer

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]  # a real ZooKeeper

schema = schemathesis.openapi.from_path(str(openapi.PATH))
STATUSES: defaultdict[str, Counter] = defaultdict(Counter)
SEED: dict[str, list[str]] = {}
RESEEDS = [0]  # collection -> seeded ids (filled by the fixture)
BODY_POOLS = {"network_id": "networks", "floating_network_id": "networks",
              "subnet_id": "subnets", "port_id": "ports", "router_id": "routers",
              "security_group_id": "security-groups", "remote_group_id": "security-groups"}
VALUES = {
    "cidr": ["10.0.9.0/24", "10.0.0.0/24", "203.0.113.0/24", "10.0.9.1/24"],
    "ip_address": ["10.0.0.50", "10.0.0.1", "203.0.113.77", "10.9.9.9"],
    "gateway_ip": ["10.0.9.1", "10.0.0.1", None],
    "floating_ip_address": ["203.0.113.78", "203.0.113.1", "10.0.0.5"],
    "fixed_ip_address": ["10.0.0.10", "10.0.0.11", None],
    "mac_address": ["fa:16:3e:00:00:01", "fa:16:3e:00:00:0a", "01:00:5e:00:00:01"],
    "remote_ip_prefix": ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.1/8"],
    "protocol": ["tcp", "udp", "icmp", 6, None],
}


def _hash(salt: str, value: Any) -> int:
    return int(hashlib.sha256((salt + repr(value)).encode()).hexdigest(), 16)


def _pick(value: Any, salt: str, pool: list[str]) -> Any:
    """A seeded id instead of a generated one most of the time."""
    if not pool or not isinstance(value, str):
        return value
    i = _hash(salt, value) % (len(pool) + 1)
    return pool[i] if i < len(pool) else value


def _steer(inner: dict[str, Any], salt: str) -> None:
    for k, coll in BODY_POOLS.items():
        if k in inner:
            inner[k] = _pick(inner[k], k + salt, SEED.get(coll, []))
    for k, pool in VALUES.items():
        if k in inner and _hash(k + salt, inner[k]) % 4:
            inner[k] = pool[_hash(salt, k) % len(pool)]
    for f in inner.get("fixed_ips") or () if isinstance(inner.get("fixed_ips"), list) else ():
        if isinstance(f, dict) and "subnet_id" in f:
            f["subnet_id"] = _pick(f["subnet_id"], "fs" + salt, SEED.get("subnets", []))
    info = inner.get("external_gateway_info")
    if isinstance(info, dict) and "network_id" in info:
        info["network_id"] = _pick(info["network_id"], "gw" + salt, SEED.get("networks", []))


def steer_case(case) -> None:
    """Seeded ids and meaningful values in a positive case (done in the test, so
    it applies to the cases of every schemathesis phase)."""
    salt = case.path + repr(case.body) + repr(case.query) + repr(case.path_parameters)
    parts = case.path.split("/")
    if case.path_parameters and len(parts) > 2:
        coll = parts[2]
        params = dict(case.path_parameters)
        if "id" in params:
            params["id"] = _pick(params["id"], "id" + salt, SEED.get(coll, []))
        if "project_id" in params and _hash("p", salt) % 2:
            params["project_id"] = "admin"
        case.path_parameters = params
    # one case in three as an ordinary project (no-auth mode's headers): 404 for
    # the admin's objects, 403 for admin-only attributes and agents
    if _hash("who", salt) % 3 == 0:
        case.headers = {**(case.headers or {}), "X-Project-Id": "p1", "X-Roles": "member"}
    # negative cases too: they are not checked for rejection (negative_data_rejection
    # is not among the checks), only for a clean answer
    if isinstance(case.body, dict):
        body = dict(case.body)
        for v in body.values():
            if isinstance(v, dict):
                _steer(v, salt)
        if any(k in body for k in BODY_POOLS):
            _steer(body, salt)
        case.body = body


def _drop_root(hosts: str, root: str) -> None:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts, timeout=5)
    try:
        client.start(timeout=5)
        client.delete(root, recursive=True)
    finally:
        client.stop()
        client.close()


def _seed(svc, again: bool = False) -> None:
    ctx = Context.admin()
    n = RESEEDS[0] = RESEEDS[0] + 1 if again else 0
    ext = svc.create(ctx, "networks", {"name": "ext", "router:external": True})
    esub = svc.create(ctx, "subnets", {"network_id": ext["id"], "ip_version": 4,
                                       "cidr": "203.0.113.0/24"})
    net = svc.create(ctx, "networks", {"name": "net"})
    sub = svc.create(ctx, "subnets", {"network_id": net["id"], "ip_version": 4,
                                      "cidr": f"10.{n}.0.0/24"})
    port = svc.create(ctx, "ports", {"network_id": net["id"], "name": "vm",
                                     "fixed_ips": [{"ip_address": f"10.{n}.0.10"}]})
    sg = svc.create(ctx, "security-groups", {"name": "web"})
    rule = svc.create(ctx, "security-group-rules", {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22})
    router = svc.create(ctx, "routers", {"name": "r", "external_gateway_info": {
        "network_id": ext["id"]}})
    svc.action(ctx, "routers", router["id"], "add_router_interface", {"subnet_id": sub["id"]})
    fip = svc.create(ctx, "floatingips", {"floating_network_id": ext["id"],
                                          "port_id": port["id"]})
    SEED.update({"networks": [ext["id"], net["id"]], "subnets": [esub["id"], sub["id"]],
                 "ports": [port["id"]], "routers": [router["id"]],
                 "security-groups": [sg["id"]], "security-group-rules": [rule["id"]],
                 "floatingips": [fip["id"]]})


@pytest.fixture(scope="module")
def server(zk_server):
    from midoflow.store.zookeeper import ZkStore

    root = f"/t-{uuid.uuid4().hex[:12]}"
    store = ZkStore(zk_server.hosts, root=root, timeout=10.0)
    httpd = None
    try:
        app = make_neutron_app(store, noauth=True)
        _seed(app.service)
        httpd = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                            handler_class=_QuietHandler)
        t = threading.Thread(target=httpd.serve_forever, name="neutron-fuzz", daemon=True)
        t.start()
        host, port = httpd.server_address[:2]
        yield store, f"http://{host}:{port}", app.service
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        store.close()
        _drop_root(zk_server.hosts, root)


@pytest.fixture(autouse=True)
def seeded(server):
    """The seed again (new objects) before an operation's cases when an earlier
    operation deleted part of it."""
    store, _, svc = server
    have = {coll: {o["id"] for o, _ in store.list(f"neutron.{coll}")} for coll in SEED}
    if any(not set(ids) <= have[coll] for coll, ids in SEED.items()):
        _seed(svc, again=True)


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
          database=None, phases=[Phase.explicit, Phase.generate])
def test_neutron_api_from_openapi(case, server):
    _store, url, _svc = server
    steer_case(case)
    response = case.call(base_url=url, timeout=10)
    STATUSES[f"{case.method.upper()} {case.path}"][response.status_code] += 1
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500, response.text
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, text
    if 400 <= response.status_code < 500:
        e = response.json()["NeutronError"]
        assert set(e) == {"type", "message", "detail"} and e["message"], e


def test_zz_nothing_dangles_after_fuzzing(server):
    """Runs after the fuzz cases (name order within the module)."""
    store, _, _svc = server
    for op, counts in sorted(STATUSES.items()):
        print(op, dict(counts))
    print("reseeded", RESEEDS[0], "times")
    nets = {o["id"] for o, _ in store.list("neutron.networks")}
    subnets = {o["id"]: o for o, _ in store.list("neutron.subnets")}
    bridges = {o["id"] for o, _ in store.list(model.BRIDGES)}
    errs = [f"subnet {s} on a missing network" for s, o in subnets.items()
            if o["network_id"] not in nets]
    for p, _ in store.list("neutron.ports"):
        if p["network_id"] not in nets:
            errs.append(f"neutron port {p['id']} on a missing network")
        errs += [f"neutron port {p['id']} on a missing subnet" for f in p.get("fixed_ips", ())
                 if f["subnet_id"] not in subnets]
    for p, _ in store.list(model.PORTS):
        if p.get("device_type", "bridge") == "bridge" and p["device_id"] not in bridges:
            errs.append(f"native port {p['id']} on a missing bridge")
    errs += [f"network {n} has no bridge" for n in nets if n not in bridges]
    assert not errs, errs


# just over the limit: the server stops reading at 1 MiB + 1 byte and answers,
# while the little that is left still fits the socket buffers (no broken pipe)
_BIG = b'{"network": {"name": "' + b"x" * MAX_BODY + b'"}}'
HOSTILE = [  # (method, target, body, headers, status)
    ("POST", "/v2.0/networks", b'{"network": ', {}, 400),
    ("POST", "/v2.0/networks", b'{"network": {"name": Infinity}}', {}, 400),
    ("POST", "/v2.0/networks", b'{"network": {}}', {"Content-Type": "text/xml"}, 400),
    ("POST", "/v2.0/networks", None, {"Content-Length": str(3 << 20)}, 413),  # no body sent
    ("POST", "/v2.0/networks", _BIG, {"Transfer-Encoding": "chunked"}, 413),
    ("POST", "/v2.0/networks", b'{"network": {"name": "chunked"}}',
     {"Transfer-Encoding": "chunked"}, 201),
    ("GET", "/v2.0/networks/%ff", None, {}, 400),
    ("GET", "/v2.0/networks?name=%ff%fe", None, {}, 400),
    ("GET", "/v2.0/networks?limit=-5", None, {}, 400),
    ("GET", "/v2.0/networks?marker=" + "0" * 36, None, {}, 404),
    ("PATCH", "/v2.0/networks", b"{}", {}, 405),
    ("GET", "/v2.0/../etc/passwd", None, {}, 404),
]


@pytest.mark.parametrize("method,target,body,headers,status", HOSTILE,
                         ids=[f"{m} {t[:30]} {s}" for m, t, _, _, s in HOSTILE])
def test_hostile_requests_over_http(server, method, target, body, headers, status):
    import http.client
    import json

    _store, url, _svc = server
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        hdrs = {"Content-Type": "application/json", **headers}
        if body is None and "Content-Length" in headers:  # announced, never sent
            conn.putrequest(method, target)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
        elif body is not None and headers.get("Transfer-Encoding") == "chunked":
            conn.putrequest(method, target)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            for i in range(0, len(body), 65536):
                piece = body[i:i + 65536]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, target, body=body, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == status, text[:300]
    assert "Traceback" not in text
    if status >= 400:
        e = json.loads(text)["NeutronError"]
        assert set(e) == {"type", "message", "detail"} and e["message"]
