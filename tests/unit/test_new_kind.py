"""A kind with no special rules is one declaration: CRUD over REST, its OpenAPI paths and
schemas, and CLI list/show, with nothing else written for it."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from midoflow import model
from midoflow.cli import kinds as cli_kinds
from midoflow.cli.base import COMMANDS, GROUPS
from midoflow.cli.client import Client
from midoflow.cli.main import main
from midoflow.kinds import KINDS
from midoflow.kinds import openapi as gen
from midoflow.kinds.base import (
    CASCADE,
    INTEGER,
    REFUSE,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)
from midoflow.rest.app import make_app
from midoflow.store.memory import MemoryStore
from tests.unit.conftest import ApiClient


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _Server(WSGIServer):
    daemon_threads = True

WIDGETS = Kind(
    name="widgets", label="widget", schema="Widget",
    fields=(
        common_id(),
        name_field(),
        tenant_field(),
        Field("size", INTEGER, default=1, lo=1, hi=10),
        Field("host_id", UUID, nullable=True, default=None, ref=model.HOSTS,
              on_delete=REFUSE),
    ),
    tenant="tenant_id",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("SIZE", "size")),
)
SPROCKETS = Kind(  # created under a widget, deleted with it
    name="sprockets", label="sprocket", schema="Sprocket",
    fields=(
        common_id(),
        Field("widget_id", UUID, create=False, update=False, ref="widgets", on_delete=CASCADE),
        name_field(),
    ),
    parents=(("widgets", "widget_id"),),
    top_create=False,
    columns=(Column("ID", "id"), Column("WIDGET", "widget_id")),
)


@pytest.fixture
def declared(monkeypatch):
    monkeypatch.setitem(KINDS, "widgets", WIDGETS)
    monkeypatch.setitem(KINDS, "sprockets", SPROCKETS)


@pytest.fixture
def api(declared):
    return ApiClient(make_app(MemoryStore()))


def test_rest_crud_from_the_declaration(api):
    host = api.ok("POST", "/v1/hosts", {"name": "h1"})
    w = api.ok("POST", "/v1/widgets", {"name": "w1", "tenant_id": "t1", "host_id": host["id"]})
    assert w == {"id": w["id"], "name": "w1", "tenant_id": "t1", "size": 1,
                 "host_id": host["id"], "version": w["version"]}
    api.ok("POST", "/v1/widgets", {"name": "w2", "tenant_id": "t2"})
    assert [x["name"] for x in api.ok("GET", "/v1/widgets")] == ["w1", "w2"]
    assert [x["name"] for x in api.ok("GET", "/v1/widgets?tenant_id=t2")] == ["w2"]
    w = api.ok("PUT", f"/v1/widgets/{w['id']}", {"size": 3, "id": w["id"]})
    assert w["size"] == 3
    assert api.ok("GET", f"/v1/widgets/{w['id']}") == w
    api.ok("DELETE", f"/v1/widgets/{w['id']}")
    assert api.call("GET", f"/v1/widgets/{w['id']}").status_int == 404


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"size": 11}, "size", "size must be at most 10"),
    ({"size": "big"}, "size", "size must be an integer"),
    ({"colour": "red"}, "colour", "unknown field 'colour'"),
    ({"host_id": "11111111-1111-4111-8111-111111111111"}, "host_id",
     "host 11111111-1111-4111-8111-111111111111 does not exist"),
])
def test_generic_validation_names_the_field(api, body, field, message):
    resp = api.call("POST", "/v1/widgets", body)
    assert resp.status_int == 400, resp.text
    assert resp.json["field"] == field
    assert resp.json["message"] == message


def test_read_only_fields_and_versions(api):
    w = api.ok("POST", "/v1/widgets", {})
    assert api.call("PUT", f"/v1/widgets/{w['id']}",
                    {"id": "22222222-2222-4222-8222-222222222222"}).json["message"] == \
        "id is read-only"
    assert api.call("PUT", f"/v1/widgets/{w['id']}",
                    {"size": 2, "version": w["version"] + 5}).status_int == 409


def test_parent_routes_and_cascade(api):
    w = api.ok("POST", "/v1/widgets", {"name": "w"})
    s = api.ok("POST", f"/v1/widgets/{w['id']}/sprockets", {"name": "s"})
    assert s["widget_id"] == w["id"]
    assert api.ok("GET", f"/v1/widgets/{w['id']}/sprockets") == [s]
    assert api.call("POST", "/v1/widgets/33333333-3333-4333-8333-333333333333/sprockets",
                    {}).status_int == 404
    resp = api.call("PUT", f"/v1/sprockets/{s['id']}", {"widget_id": w["id"][::-1]})
    assert (resp.status_int, resp.json["field"]) == (400, "widget_id")
    api.ok("DELETE", f"/v1/widgets/{w['id']}")
    assert api.ok("GET", "/v1/sprockets") == []


def test_refuse_names_the_referencing_objects(api):
    w = api.ok("POST", "/v1/widgets", {"name": "w"})
    s = api.ok("POST", f"/v1/widgets/{w['id']}/sprockets", {})
    # a declared REFUSE between two generic kinds
    monkey = Kind(name="sprockets", label="sprocket", schema="Sprocket",
                  fields=tuple(f if f.name != "widget_id" else Field(
                      "widget_id", UUID, create=False, update=False, ref="widgets",
                      on_delete=REFUSE) for f in SPROCKETS.fields),
                  parents=SPROCKETS.parents, top_create=False)
    KINDS["sprockets"] = monkey
    resp = api.call("DELETE", f"/v1/widgets/{w['id']}")
    assert resp.status_int == 409
    assert s["id"] in resp.json["message"] and "widget_id" in resp.json["message"]


def test_openapi_has_the_kind(declared):
    doc = gen.document()
    assert {"get", "put", "delete"} <= set(doc["paths"]["/v1/widgets/{id}"])
    assert set(doc["paths"]["/v1/widgets/{id}/sprockets"]) >= {"get", "post"}
    schema = doc["components"]["schemas"]["WidgetCreate"]["properties"]["size"]
    assert schema == {"type": "integer", "minimum": 1, "maximum": 10, "default": 1}


def test_cli_list_and_show(declared, monkeypatch, capsys):
    store = MemoryStore()
    server = make_server("127.0.0.1", 0, make_app(store), _Server, _Quiet)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    before, groups = list(COMMANDS), dict(GROUPS)
    try:
        monkeypatch.setenv("MIDOFLOW_API", f"http://127.0.0.1:{server.server_port}")
        Client(f"http://127.0.0.1:{server.server_port}").post("/widgets", {"name": "w1"})
        cli_kinds.register_all()
        capsys.readouterr()
        assert main(["widget", "list"]) == 0
        head, row = capsys.readouterr().out.splitlines()
        assert head.split() == ["ID", "NAME", "SIZE"] and row.split()[1:] == ["w1", "1"]
        assert main(["widget", "show", "w1"]) == 0
        out = capsys.readouterr().out
        assert [line.split(":")[0].strip() for line in out.splitlines()] == \
            ["id", "name", "tenant_id", "size", "host_id", "version"]
    finally:
        COMMANDS[:] = before
        GROUPS.clear()
        GROUPS.update(groups)
        server.shutdown()
        server.server_close()
