"""What every declared kind's REST routes answer alike, driven by ``midoflow.kinds.KINDS``:
404 for an unknown or malformed id (before any 400 or 415), 415 for a body that is not
JSON, 400 for malformed JSON, an unknown field, a field not accepted at creation, a
changed read-only field or a malformed version, and an answer echoed back is a valid
PUT. Nothing is written by a refused request. A new kind gets every case by being
declared (one with required fields or a special parent needs an entry in ``BODIES``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from midoflow import model
from midoflow.kinds import KINDS
from midoflow.kinds import base as b
from midoflow.rest.app import make_app
from midoflow.store.memory import MemoryStore
from tests.unit.conftest import ApiClient, store_snapshot
from tests.unit.test_rest import _err

XS = ["missing", "not-a-uuid", "123", "%2e%2e"]
# Create bodies (and the parent to create under) where {} under the first parent is not
# enough. "uplink" is a router port with an address (BGP runs on it).
BODIES: dict[str, dict[str, Any]] = {
    model.HOSTS: {"name": "h"},
    model.TUNNEL_ZONES: {"name": "tz"},
    model.ROUTES: {"dst_cidr": "10.9.0.0/16", "type": model.ROUTE_BLACKHOLE},
    model.RULES: {"action": "accept"},
    model.BGP_PEERS: {"local_as": 64512, "peer_address": "203.0.113.1", "peer_as": 65000},
    model.BGP_NETWORKS: {"prefix": "198.51.100.0/24"},
    model.DHCP_SUBNETS: {"cidr": "10.0.0.0/24"},
    model.VIPS: {"address": "203.0.113.50", "protocol_port": 80},
    model.POOL_MEMBERS: {"address": "10.0.0.5", "protocol_port": 80},
}
UNDER = {model.BGP_PEERS: "uplink", model.BGP_NETWORKS: "uplink"}
# Create-body fields naming an object made before: {kind: {field: the made object's kind}}
REFS = {model.LOAD_BALANCERS: {"router_id": model.ROUTERS},
        model.POOLS: {"load_balancer_id": model.LOAD_BALANCERS},
        model.VIPS: {"load_balancer_id": model.LOAD_BALANCERS, "pool_id": model.POOLS},
        model.POOL_MEMBERS: {"pool_id": model.POOLS},
        model.HEALTH_MONITORS: {"pool_id": model.POOLS}}


def _body(kind: str, made: dict[str, dict]) -> dict[str, Any]:
    return dict(BODIES.get(kind, {}),
                **{f: made[k]["id"] for f, k in REFS.get(kind, {}).items()})


def _id() -> str:
    return str(uuid.uuid4())


def _create_path(kind: b.Kind, made: dict[str, dict]) -> str:
    if kind.top_create:
        return f"/v1/{kind.name}"
    parent = kind.parents[0][0]
    return f"/v1/{parent}/{made[UNDER.get(kind.name, parent)]['id']}/{kind.name}"


def _every_kind(api: ApiClient) -> dict[str, dict]:
    """One object of every kind (parents first), and the uplink port."""
    made: dict[str, dict] = {}
    todo = list(KINDS.values())
    while todo:
        kind = next(k for k in todo if (k.top_create or
                    UNDER.get(k.name, k.parents[0][0]) in made)
                    and set(REFS.get(k.name, {}).values()) <= set(made))
        made[kind.name] = api.ok("POST", _create_path(kind, made), _body(kind.name, made))
        todo.remove(kind)
        if kind.name == model.ROUTERS:
            made["uplink"] = api.ok("POST", f"/v1/routers/{made[kind.name]['id']}/ports",
                                    {"ip_address": "203.0.113.2", "prefix_len": 24})
    return made


@pytest.fixture
def world():
    store = MemoryStore()
    api = ApiClient(make_app(store))
    return api, store, _every_kind(api)


def _cases(build) -> list[Any]:
    return [pytest.param(k, *case, id=f"{k}-{'-'.join(map(str, case))}")
            for k in KINDS for case in build(KINDS[k])]


def _id_routes(kind: b.Kind) -> list[tuple[str, str]]:
    """The routes naming one object of the kind, or a parent it is created under."""
    routes = [("GET", f"/v1/{kind.name}/{{x}}"), ("DELETE", f"/v1/{kind.name}/{{x}}")]
    if kind.updatable:
        routes.append(("PUT", f"/v1/{kind.name}/{{x}}"))
    for parent, _ in kind.parents:
        routes += [("GET", f"/v1/{parent}/{{x}}/{kind.name}"),
                   ("POST", f"/v1/{parent}/{{x}}/{kind.name}")]
    return routes


@pytest.mark.parametrize(("kind", "method", "path", "x"), _cases(
    lambda k: [(m, p, x) for m, p in _id_routes(k) for x in XS]))
def test_unknown_or_malformed_id_is_404(world, kind, method, path, x):
    api, store, _ = world
    before = store_snapshot(store)
    url = path.replace("{x}", _id() if x == "missing" else x)
    resp = api.call(method, url, {"name": "n"}) if method in ("PUT", "POST") else \
        api.call(method, url)
    _err(resp, 404)
    assert store_snapshot(store) == before


@pytest.mark.parametrize(("kind", "method", "path"), _cases(
    lambda k: [(m, p) for m, p in _id_routes(k) if m in ("PUT", "POST")]))
def test_404_comes_before_400_and_415(world, kind, method, path):
    api, _, _ = world
    url = path.replace("{x}", _id())
    _err(api.call(method, url, raw=b"nope"), 404)
    _err(api.call(method, url, raw=b"{", content_type="text/plain"), 404)


def _writes(kind: b.Kind) -> list[tuple[str, str]]:
    """(method, which object): the create and, if any, the update of the kind."""
    return [("POST", "")] + ([("PUT", "")] if kind.updatable else [])


def _url(kind: str, method: str, made: dict[str, dict]) -> str:
    if method == "POST":
        return _create_path(KINDS[kind], made)
    return f"/v1/{kind}/{made[kind]['id']}"


@pytest.mark.parametrize(("kind", "method", "ctype"), _cases(
    lambda k: [(m, c) for m, _ in _writes(k)
               for c in ("text/plain", "application/x-www-form-urlencoded", None)]))
def test_a_body_that_is_not_json_is_415(world, kind, method, ctype):
    api, store, made = world
    before = store_snapshot(store)
    _err(api.call(method, _url(kind, method, made), raw=b'{"name": "n"}', content_type=ctype),
         415)
    assert store_snapshot(store) == before


@pytest.mark.parametrize(("kind", "method", "raw"), _cases(
    lambda k: [(m, r) for m, _ in _writes(k) for r in (b"{", b"", b"[]", b'"x"')]))
def test_malformed_json_is_400(world, kind, method, raw):
    api, store, made = world
    before = store_snapshot(store)
    _err(api.call(method, _url(kind, method, made), raw=raw), 400)
    assert store_snapshot(store) == before


def _bad_fields(kind: b.Kind) -> list[tuple[str, str, str]]:
    """(method, field, why) for each field a request may not carry or change."""
    out = [("POST", "no_such_field", "unknown"), ("POST", "id", "malformed")]
    out += [("POST", f.name, "not at creation") for f in kind.fields
            if not f.create and not f.computed]
    if kind.updatable:
        out += [("PUT", "no_such_field", "unknown")]
        out += [("PUT", name, "read-only") for name in kind.readonly]
    return out


def _changed(f: b.Field, current: Any) -> Any:
    """A well-formed value of the field's type, other than ``current``."""
    if f.type == b.UUID:
        return _id()
    if f.type == b.UUID_LIST:
        return [_id()]
    if f.type == b.ENUM:
        return next(c for c in f.choices if c != current)
    if f.type == b.INTEGER:
        return (f.lo or 0) + 1 if current is None else current + 1
    if f.type == b.INTERFACE:
        return "eth9"
    if f.type == b.IPV4:
        return "10.99.0.1"
    if f.type == b.IPV4_LIST:
        return ["10.99.0.1"]
    if f.type == b.CIDR:
        return "10.99.0.0/16"
    if f.type == b.OBJECT:
        return [{"host_id": _id(), "ip": "10.99.0.1"}]
    return f"{current}-changed"


@pytest.mark.parametrize(("kind", "method", "field", "why"), _cases(_bad_fields))
def test_a_field_the_request_may_not_carry_is_400_naming_it(world, kind, method, field, why):
    api, store, made = world
    k = KINDS[kind]
    if why == "unknown":
        value: Any = 1
    elif why == "malformed":
        value = "xyz"
    elif method == "POST":
        value = _changed(k.field(field), None)
    else:
        value = _changed(k.field(field), made[kind][field])
    body = dict(_body(kind, made), **{field: value})
    before = store_snapshot(store)
    message = _err(api.call(method, _url(kind, method, made), body), 400, field)["message"]
    assert store_snapshot(store) == before
    if why in ("unknown", "not at creation"):
        assert message == f"unknown field '{field}'"
    elif why == "read-only":
        frozen = k.field(field).frozen
        assert message == (f"{field} {frozen}" if frozen else f"{field} is read-only")


@pytest.mark.parametrize("value", ["1", True, 1.5, [1]])
@pytest.mark.parametrize("kind", [k.name for k in KINDS.values() if k.updatable])
def test_a_malformed_version_is_400(world, kind, value):
    api, store, made = world
    before = store_snapshot(store)
    message = _err(api.call("PUT", f"/v1/{kind}/{made[kind]['id']}", {"version": value}),
                   400, "version")["message"]
    assert message == "version must be an integer"
    assert store_snapshot(store) == before


@pytest.mark.parametrize("kind", [k.name for k in KINDS.values() if k.updatable])
def test_an_answer_echoed_back_is_a_valid_update(world, kind):
    api, _, made = world
    current = api.ok("GET", f"/v1/{kind}/{made[kind]['id']}")
    got = api.ok("PUT", f"/v1/{kind}/{made[kind]['id']}", current)
    assert got == dict(current, version=got["version"])


@pytest.mark.parametrize(("kind", "field"), [
    (k.name, name) for k in KINDS.values() if k.updatable for name in k.readonly
    if not k.field(name).nullable])
def test_a_read_only_field_sent_as_null_is_400(world, kind, field):
    """null is no echo of a field that is never null (the fuzzer found
    ``{"proxy_arp": null}`` accepted on a port stored without the field)."""
    api, store, made = world
    before = store_snapshot(store)
    _err(api.call("PUT", f"/v1/{kind}/{made[kind]['id']}", {field: None}), 400, field)
    assert store_snapshot(store) == before
