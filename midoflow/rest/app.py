"""The midoflow REST API: a WSGI application (webob + routes) over TopologyService.

JSON in and out under ``/v1``: hosts, tunnel zones, bridges, routers, their
ports and routes, bindings and links, chains and rules, port groups, IP
address groups, security groups, BGP peers and networks of uplink ports (and
the routes BGP learned), and packet traces. Errors are
``{"error", "message", "field"}`` with 400/404/405/409/413/415/503; the
OpenAPI document describing all of it is ``openapi.yaml`` beside this file,
served at ``/v1/openapi.yaml`` and ``/v1/openapi.json``.

A client's mistake is never a 500 nor a traceback: the path, the query
string, the headers the API reads and the body are decoded strictly (400 for
bad UTF-8, bad percent-encoding, bad JSON), bodies are bounded (413 over
:data:`MAX_BODY`, chunked ones included), and a client that disconnects
mid-body costs one log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import routes
import webob

from midoflow.errors import Invalid, MidoflowError
from midoflow.kinds import KINDS
from midoflow.service.topology import TopologyService
from midoflow.store.base import Store
from midoflow.wsgibody import (  # noqa: F401 (MAX_BODY: the API's limit, read by tests)
    MAX_BODY,
    ClientGone,
    check_encoding,
    content_length,
    header,
    read_body,
    too_large,
)

LOG = logging.getLogger("midoflow.rest")

PREFIX = "/v1"
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


class HttpError(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}


@cache
def openapi_document() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))


def _json_response(status: int, body: Any = None, headers: dict | None = None) -> webob.Response:
    resp = webob.Response(status=status)
    if body is not None or status != 204:
        resp.content_type = "application/json"
        resp.charset = None
        resp.body = (json.dumps(body) + "\n").encode()
    else:
        resp.content_type = None
    for k, val in (headers or {}).items():
        resp.headers[k] = val
    return resp


def _error(status: int, error: str, message: str, field: str | None = None,
           headers: dict | None = None) -> webob.Response:
    body = {"error": error, "message": message}
    if field:
        body["field"] = field
    return _json_response(status, body, headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _flag(req: webob.Request, name: str) -> bool:
    """A boolean query parameter: absent is false."""
    value = req.GET.get(name, "false").lower()
    if value not in ("true", "false"):
        raise Invalid(f"?{name}= must be true or false, not {value[:20]!r}", name)
    return value == "true"


def read_json(req: webob.Request) -> Any:
    """The request's JSON body; HttpError (415), TooLarge (413) or Invalid (400)."""
    clen = content_length(req.environ)
    if clen is not None and clen > MAX_BODY:
        raise too_large()
    ctype = header(req.environ, "CONTENT_TYPE", "Content-Type") or ""
    media, _, params = ctype.partition(";")
    charset = params.strip().lower().replace(" ", "")
    if media.strip().lower() != "application/json" or charset not in (
            "", "charset=utf-8", 'charset="utf-8"'):
        raise HttpError(415, "UnsupportedMediaType",
                        "send the body as JSON (UTF-8) with Content-Type: application/json")
    raw = read_body(req.environ)
    if not raw.strip():
        raise Invalid("the request body is empty: a JSON object is expected")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"the request body is not valid UTF-8 (byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise Invalid(f"the request body is not valid JSON: {str(e)[:120]}") from None


def _safe_path(environ: dict) -> str:
    """The request path for a log line, whatever bytes it holds."""
    return repr(environ.get("PATH_INFO", ""))[1:-1][:200]


@dataclass(frozen=True)
class Crud:
    """What a generated handler does: ``op`` on ``kind``; ``tenant``: the list filter
    (a query parameter); ``check``: the service getter called first, so a missing
    object answers 404 before its body is read (400/413/415)."""

    op: str
    kind: str
    tenant: str | None = None
    check: str | None = None
    parent: str | None = None


_STATUS = {"list": 200, "list_under": 200, "get": 200, "update": 200, "create": 201,
           "create_under": 201, "delete": 204}


# (route name, path template, {method: handler name}) of what is not a kind's CRUD;
# :func:`kind_routes` adds the CRUD routes of every declared kind.
SPECIAL_ROUTES: list[tuple[str, str, dict[str, str]]] = [
    ("index", "", {"GET": "index"}),
    ("index_slash", "/", {"GET": "index"}),
    ("openapi_yaml", "/openapi.yaml", {"GET": "openapi_yaml"}),
    ("openapi_json", "/openapi.json", {"GET": "openapi_json"}),
    ("status", "/status", {"GET": "status"}),
    ("host_bindings", "/hosts/{id}/bindings", {"GET": "host_bindings"}),
    ("tz_members", "/tunnel_zones/{id}/members", {"GET": "list_members", "POST": "add_member"}),
    ("tz_member", "/tunnel_zones/{id}/members/{host_id}", {"DELETE": "remove_member"}),
    ("port_binding", "/ports/{id}/binding", {"PUT": "set_binding", "DELETE": "unbind_port"}),
    ("port_link", "/ports/{id}/link", {"PUT": "set_link", "DELETE": "unlink_port"}),
    ("router_learned_routes", "/routers/{id}/learned_routes",
     {"GET": "list_learned_routes"}),
    ("pg_ports", "/port_groups/{id}/ports", {"GET": "list_port_group_ports",
                                             "POST": "add_port_group_port"}),
    ("pg_port", "/port_groups/{id}/ports/{port_id}", {"DELETE": "remove_port_group_port"}),
    ("ipag_addrs", "/ip_addr_groups/{id}/addresses",
     {"GET": "list_ip_addr_group_addresses", "POST": "add_ip_addr_group_address"}),
    ("ipag_addr", "/ip_addr_groups/{id}/addresses/{address}",
     {"DELETE": "remove_ip_addr_group_address"}),
    ("sg_rules", "/security_groups/{id}/rules", {"GET": "list_security_group_rules",
                                                 "POST": "add_security_group_rule"}),
    ("sg_rule", "/security_groups/{id}/rules/{rule_id}",
     {"GET": "get_security_group_rule", "DELETE": "delete_security_group_rule"}),
    ("trace", "/trace", {"POST": "trace"}),
    ("pool_members_of_pool", "/pools/{id}/members", {"GET": "list_members_of_pool"}),
]
# Kinds whose DELETE takes ?cascade=true (what it refuses otherwise goes with it).
CASCADE_DELETE = ("load_balancers",)


def kind_routes() -> tuple[list[tuple[str, str, dict[str, str]]], dict[str, Crud]]:
    """The CRUD routes of every declared kind, and what each handler does.

    Handler names are the service's method names: ``list_hosts``, ``get_host``,
    ``create_host``, ...; under a parent ``list_bridge_ports`` and ``create_port``
    (``create_<parent>_<kind>`` where the parent has its own create schema)."""
    routes_: list[tuple[str, str, dict[str, str]]] = []
    crud: dict[str, Crud] = {}

    def add(name: str, path: str, ops: dict[str, tuple[str, Crud]]) -> None:
        routes_.append((name, path, {m: h for m, (h, _) in ops.items()}))
        crud.update(ops.values())

    for k in KINDS.values():
        one = k.name[:-1]
        coll = {"GET": (f"list_{k.name}", Crud("list", k.name, k.tenant))}
        if k.top_create:
            coll["POST"] = (f"create_{one}", Crud("create", k.name))
        add(k.name, f"/{k.name}", coll)
        item = {"GET": (f"get_{one}", Crud("get", k.name))}
        if k.updatable:
            item["PUT"] = (f"update_{one}", Crud("update", k.name, check=f"get_{one}"))
        item["DELETE"] = (f"delete_{one}", Crud("delete", k.name))
        add(one, f"/{k.name}/{{id}}", item)
        own_schema = dict(k.parent_create)
        for parent, _field in k.parents:
            p1 = parent[:-1]
            create = f"create_{p1}_{one}" if parent in own_schema else f"create_{one}"
            add(f"{p1}_{k.name}", f"/{parent}/{{id}}/{k.name}", {
                "GET": (f"list_{p1}_{k.name}", Crud("list_under", k.name, parent=parent)),
                "POST": (create, Crud("create_under", k.name, check=f"get_{p1}",
                                      parent=parent)),
            })
    return routes_, crud


# Path parameters besides the object's id.
PATH_PARAMS = ("id", "host_id", "port_id", "address", "rule_id")
ROUTES = SPECIAL_ROUTES + kind_routes()[0]


class Api:
    """The WSGI application."""

    def __init__(self, store: Store) -> None:
        self.service = TopologyService(store)
        self.mapper = routes.Mapper()
        self.mapper.minimization = False
        self.methods: dict[str, dict[str, str]] = {}
        kind_routes_, self.crud_ops = kind_routes()
        for name, path, methods in SPECIAL_ROUTES + kind_routes_:
            self.mapper.connect(name, PREFIX + path, route=name,
                                requirements={k: "[^/]+" for k in PATH_PARAMS})
            self.methods[name] = methods

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        method = str(environ.get("REQUEST_METHOD", "GET"))[:16]
        try:
            check_encoding(environ)
            resp = self.dispatch(webob.Request(environ))
        except HttpError as e:
            resp = _error(e.status, e.error, e.message, headers=e.headers)
        except ClientGone as e:
            LOG.warning("client gone mid-body on %s %s: %s", method, _safe_path(environ), e)
            resp = _error(400, "Invalid", f"incomplete request body: {e}")
        except MidoflowError as e:
            status = e.status if e.status in (400, 404, 409, 413, 503) else 500
            if status == 500:
                LOG.error("unexpected %s on %s %s: %s", type(e).__name__, method,
                          _safe_path(environ), e.message)
                resp = _error(500, "InternalError", "internal error; see the API log")
            else:
                resp = _json_response(status, e.to_dict())
        except Exception:
            LOG.exception("unexpected error on %s %s", method, _safe_path(environ))
            resp = _error(500, "InternalError", "internal error; see the API log")
        return resp(environ, start_response)

    def dispatch(self, req: webob.Request) -> webob.Response:
        path = req.path_info
        match = self.mapper.match(path) if path.startswith(PREFIX) else None
        if not match:
            return _error(404, "NotFound", f"no such resource: {path[:200]}")
        methods = self.methods[match["route"]]
        # HEAD is GET without the body (webob's Response drops it for HEAD).
        handler = methods.get("GET" if req.method == "HEAD" else req.method)
        if handler is None:
            allow = ", ".join(sorted(set(methods) | ({"HEAD"} if "GET" in methods else set())))
            return _error(405, "MethodNotAllowed",
                          f"{req.method} is not allowed here; allowed: {allow}",
                          headers={"Allow": allow})
        args = {k: val for k, val in match.items() if k in PATH_PARAMS}
        if handler in self.crud_ops:
            return self.crud(req, handler, self.crud_ops[handler], **args)
        return getattr(self, "h_" + handler)(req, **args)

    def crud(self, req: webob.Request, handler: str, what: Crud, **args: str) -> webob.Response:
        """A kind's CRUD request: the service method named like the handler."""
        if not hasattr(self.service, handler):
            return self.generic(req, what, **args)
        method = getattr(self.service, handler)
        if what.check:
            getattr(self.service, what.check)(args["id"])  # 404 before 400/415
        if what.op == "list":
            kw = {"tenant_id": req.GET.get(what.tenant)} if what.tenant else {}
            result = method(**kw)
        elif what.op == "create":
            result = method(read_json(req))
        elif what.op in ("update", "create_under"):
            result = method(args["id"], read_json(req))
        elif what.op == "delete" and what.kind in CASCADE_DELETE:
            result = method(args["id"], cascade=_flag(req, "cascade"))
        else:  # get, delete, list_under
            result = method(args["id"])
        return _json_response(_STATUS[what.op], None if what.op == "delete" else result)

    def generic(self, req: webob.Request, what: Crud, **args: str) -> webob.Response:
        """A kind with no special rules: its declaration's CRUD (service.kind)."""
        crud = self.service.kind(what.kind)
        if what.op == "list":
            result: Any = crud.list(req.GET.get(what.tenant) if what.tenant else None)
        elif what.op == "list_under":
            result = crud.list_under(what.parent or "", args["id"])
        elif what.op == "create":
            result = crud.create(read_json(req))
        elif what.op == "create_under":
            self.service.kind(what.parent or what.kind).get(args["id"])  # 404 first
            result = crud.create(read_json(req), what.parent, args["id"])
        elif what.op == "update":
            crud.get(args["id"])
            result = crud.update(args["id"], read_json(req))
        elif what.op == "delete":
            result = crud.delete(args["id"])
        else:
            result = crud.get(args["id"])
        return _json_response(_STATUS[what.op], None if what.op == "delete" else result)

    # ------------------------------------------------------------ handlers
    def h_index(self, req: webob.Request) -> webob.Response:
        return _json_response(200, {
            "name": "midoflow",
            "version": "v1",
            "resources": {
                "status": PREFIX + "/status",
                **{name: f"{PREFIX}/{name}" for name in KINDS},
                "trace": PREFIX + "/trace",
                "openapi": PREFIX + "/openapi.yaml",
            },
        })

    def h_openapi_yaml(self, req: webob.Request) -> webob.Response:
        resp = webob.Response(status=200, content_type="application/yaml")
        resp.charset = "utf-8"
        resp.body = OPENAPI_PATH.read_bytes()
        return resp

    def h_openapi_json(self, req: webob.Request) -> webob.Response:
        return _json_response(200, openapi_document())

    def h_status(self, req):
        return _json_response(200, self.service.status())

    # hosts
    def h_host_bindings(self, req, id):
        return _json_response(200, self.service.host_bindings(id))

    # tunnel zones
    def h_list_members(self, req, id):
        return _json_response(200, self.service.list_members(id))

    def h_add_member(self, req, id):
        self.service.get_tunnel_zone(id)
        return _json_response(201, self.service.add_member(id, read_json(req)))

    def h_remove_member(self, req, id, host_id):
        return _json_response(200, self.service.remove_member(id, host_id))

    # ports
    def h_set_binding(self, req, id):
        self.service.get_port(id)
        return _json_response(200, self.service.set_binding(id, read_json(req)))

    def h_unbind_port(self, req, id):
        return _json_response(200, self.service.unbind_port(id))

    def h_set_link(self, req, id):
        self.service.get_port(id)
        return _json_response(200, self.service.set_link(id, read_json(req)))

    def h_unlink_port(self, req, id):
        return _json_response(200, self.service.unlink_port(id))

    # port groups
    def h_list_port_group_ports(self, req, id):
        return _json_response(200, self.service.list_port_group_ports(id))

    def h_add_port_group_port(self, req, id):
        self.service.get_port_group(id)
        return _json_response(201, self.service.add_port_group_port(id, read_json(req)))

    def h_remove_port_group_port(self, req, id, port_id):
        return _json_response(200, self.service.remove_port_group_port(id, port_id))

    # IP address groups
    def h_list_ip_addr_group_addresses(self, req, id):
        return _json_response(200, self.service.list_ip_addr_group_addresses(id))

    def h_add_ip_addr_group_address(self, req, id):
        self.service.get_ip_addr_group(id)
        return _json_response(201, self.service.add_ip_addr_group_address(id, read_json(req)))

    def h_remove_ip_addr_group_address(self, req, id, address):
        return _json_response(200, self.service.remove_ip_addr_group_address(id, address))

    # security groups
    def h_list_security_group_rules(self, req, id):
        return _json_response(200, self.service.list_security_group_rules(id))

    def h_add_security_group_rule(self, req, id):
        self.service.get_security_group(id)
        return _json_response(201, self.service.add_security_group_rule(id, read_json(req)))

    def h_get_security_group_rule(self, req, id, rule_id):
        return _json_response(200, self.service.get_security_group_rule(id, rule_id))

    def h_delete_security_group_rule(self, req, id, rule_id):
        self.service.delete_security_group_rule(id, rule_id)
        return _json_response(204)

    # learned routes
    def h_list_learned_routes(self, req, id):
        return _json_response(200, self.service.list_learned_routes(id))

    # trace
    def h_list_members_of_pool(self, req, id):
        return _json_response(200, self.service.list_members_of_pool(id))

    def h_trace(self, req):
        return _json_response(200, self.service.trace(read_json(req)))


def make_app(store: Store) -> Api:
    """The WSGI application serving the API over ``store``."""
    return Api(store)


__all__ = ["make_app", "Api", "openapi_document"]
