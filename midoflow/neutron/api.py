"""The Neutron Networking API v2.0 over HTTP: a WSGI application (webob).

``GET /`` is the versions document, ``/v2.0/...`` the resources: the
collections registered with :mod:`midoflow.neutron.service` (networks,
subnets, ports, routers, floatingips, security-groups, security-group-rules),
their tags and actions, extensions, agents and quotas. JSON in and out in
Neutron's shapes (``{"network": {...}}``, ``{"networks": [...],
"networks_links": [...]}``); every error is ``{"NeutronError": {"type",
"message", "detail"}}`` with its status, never a traceback. A ``.json`` suffix
on the path (old clients) is accepted and ignored.

Who asks: keystonemiddleware's ``auth_token`` (``delay_auth_decision``) runs
in front and puts the identity in the headers; an unconfirmed identity is 401.
With ``noauth`` (single-machine development, tests) every request is the
admin's, unless it carries ``X-Project-Id`` and/or ``X-Roles``: then it acts as
that project (default ``admin``) with those roles (default ``member``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import webob

from midoflow import errors as mf
from midoflow.neutron import agents as agents_mod
from midoflow.neutron import attrs, query
from midoflow.neutron import errors as ne
from midoflow.neutron import extensions as ext
from midoflow.neutron import quotas as quotas_mod
from midoflow.neutron.context import Context
from midoflow.neutron.service import COLLECTIONS, NeutronService, kind_of
from midoflow.store.base import Store
from midoflow.wsgibody import ClientGone, check_encoding, read_body

LOG = logging.getLogger("midoflow.neutron.api")

VERSION = "v2.0"
TAG_MAX = 60


class MalformedRequestBody(ne.BadRequest):
    @property
    def type(self) -> str:
        return "MalformedRequestBody"


class InvalidContentType(ne.BadRequest):
    @property
    def type(self) -> str:
        return "InvalidContentType"


class HTTPNotFound(ne.NotFound):
    def __init__(self, message: str = "The resource could not be found.") -> None:
        super().__init__(message)


class HTTPMethodNotAllowed(ne.NeutronError):
    status = 405

    def __init__(self, method: str, allow: list[str]) -> None:
        super().__init__(f"The method {method} is not allowed for this resource; "
                         f"allowed: {', '.join(allow)}")
        self.allow = allow


class HTTPRequestEntityTooLarge(ne.NeutronError):
    status = 413


class TagNotFound(ne.NotFound): ...


INTERNAL = ("Request Failed: internal server error while processing your request.")


def json_response(status: int, body: Any = None, headers: dict | None = None
                  ) -> webob.Response:
    resp = webob.Response(status=status)
    if body is None:
        resp.content_type = None
    else:
        resp.content_type = "application/json"
        resp.charset = None
        resp.body = json.dumps(body).encode()
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def error_response(e: ne.NeutronError, headers: dict | None = None) -> webob.Response:
    headers = dict(headers or {})
    if isinstance(e, HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(e.allow)
    return json_response(e.status, e.to_dict(), headers)


def _native_error(e: mf.MidoflowError) -> ne.NeutronError:
    if isinstance(e, mf.TooLarge):
        return HTTPRequestEntityTooLarge(e.message)
    if isinstance(e, mf.Invalid):
        return ne.BadRequest(e.message)
    if isinstance(e, mf.Unavailable):
        return ne.ServiceUnavailable(e.message)
    if isinstance(e, mf.NotFound):
        return HTTPNotFound(e.message)
    if isinstance(e, mf.Conflict):
        return ne.Conflict(e.message)
    raise e


def _methods(allowed: dict[str, Callable[[], webob.Response]], method: str
             ) -> webob.Response:
    fn = allowed.get("GET" if method == "HEAD" else method)
    if fn is None:
        raise HTTPMethodNotAllowed(method, sorted(allowed))
    return fn()


class NeutronApi:
    """The WSGI application."""

    def __init__(self, store: Store, *, noauth: bool = False,
                 service: NeutronService | None = None) -> None:
        self.store = store
        self.noauth = noauth
        self.service = service if service is not None else NeutronService(store)

    # --------------------------------------------------------------- plumbing
    def __call__(self, environ: dict, start_response: Callable) -> Any:
        method = str(environ.get("REQUEST_METHOD", "GET"))[:16]
        try:
            check_encoding(environ)
            resp = self.dispatch(webob.Request(environ))
        except ne.NeutronError as e:
            if e.status >= 500 and not isinstance(e, ne.ServiceUnavailable):
                LOG.error("%s on %s %s: %s", e.type, method, _safe(environ), e.message)
            resp = error_response(e)
        except ClientGone as e:
            LOG.warning("client gone mid-body on %s %s: %s", method, _safe(environ), e)
            resp = error_response(MalformedRequestBody(f"Malformed request body: "
                                                       f"incomplete ({e})"))
        except mf.MidoflowError as e:
            try:
                resp = error_response(_native_error(e))
            except mf.MidoflowError:
                LOG.error("unexpected %s on %s %s: %s", type(e).__name__, method,
                          _safe(environ), e.message)
                resp = error_response(_internal())
        except Exception:
            LOG.exception("unexpected error on %s %s", method, _safe(environ))
            resp = error_response(_internal())
        return resp(environ, start_response)

    def context(self, req: webob.Request) -> Context:
        if self.noauth:
            return Context.from_noauth_environ(req.environ)
        ctx = Context.from_environ(req.environ)
        if ctx is None:
            raise ne.NotAuthorized("Authentication required: send a valid Keystone token "
                                   "in X-Auth-Token")
        return ctx

    def dispatch(self, req: webob.Request) -> webob.Response:
        path = req.path_info
        if path.endswith(".json"):
            path = path[:-5]
        parts = [p for p in path.split("/") if p]
        if not parts:
            return _methods({"GET": lambda: self.versions(req)}, req.method)
        if parts[0] != VERSION:
            raise HTTPNotFound()
        ctx = self.context(req)
        rest = parts[1:]
        if not rest:
            return _methods({"GET": lambda: self.resources(req)}, req.method)
        head, tail = rest[0], rest[1:]
        if head == "extensions":
            return self.extensions(req, tail)
        if head == "agents":
            return self.agents(req, ctx, tail)
        if head == "quotas":
            return self.quotas(req, ctx, tail)
        if head not in COLLECTIONS:
            raise HTTPNotFound()
        return self.collection(req, ctx, head, tail)

    # --------------------------------------------------------------- documents
    def versions(self, req: webob.Request) -> webob.Response:
        return json_response(200, {"versions": [{
            "id": VERSION, "status": "CURRENT",
            "links": [{"href": f"{req.application_url}/{VERSION}/", "rel": "self"}]}]})

    def resources(self, req: webob.Request) -> webob.Response:
        base = f"{req.application_url}/{VERSION}"
        return json_response(200, {"resources": [
            {"name": h.resource, "collection": name,
             "links": [{"href": f"{base}/{name}", "rel": "self"}]}
            for name, h in sorted(COLLECTIONS.items())]})

    def extensions(self, req: webob.Request, tail: list[str]) -> webob.Response:
        names = frozenset(COLLECTIONS)
        if not tail:
            return _methods({"GET": lambda: json_response(
                200, {"extensions": ext.extensions(names)})}, req.method)
        if len(tail) > 1:
            raise HTTPNotFound()
        one = ext.extension(tail[0], names)
        if one is None:
            raise HTTPNotFound(f"Extension with alias {tail[0]} does not exist")
        return _methods({"GET": lambda: json_response(200, {"extension": one})}, req.method)

    # --------------------------------------------------------------- agents
    def agents(self, req: webob.Request, ctx: Context, tail: list[str]) -> webob.Response:
        if len(tail) > 1:
            raise HTTPNotFound()

        def check() -> None:
            if not ctx.is_admin:
                rule = "get_agent"
                raise ne.PolicyNotAuthorized(f"rule:{rule} is disallowed by policy")

        def listing() -> webob.Response:
            check()
            return self.listing(req, "agents", agents_mod.list_agents(self.store),
                                lambda m: ne.NotFound(f"Agent {m} could not be found."))

        def show() -> webob.Response:
            check()
            a = agents_mod.get_agent(self.store, tail[0])
            if a is None:
                raise ne.NotFound(f"Agent {tail[0]} could not be found.")
            return json_response(200, {"agent": query.project(a, _fields(req))})
        return _methods({"GET": show if tail else listing}, req.method)

    # --------------------------------------------------------------- quotas
    def quotas(self, req: webob.Request, ctx: Context, tail: list[str]) -> webob.Response:
        def project(pid: str) -> str:
            if pid != ctx.project_id and not ctx.is_admin:
                raise ne.PolicyNotAuthorized("rule:get_quota is disallowed by policy")
            return pid

        if not tail:
            def listing() -> webob.Response:
                if not ctx.is_admin:
                    raise ne.PolicyNotAuthorized("rule:get_quota is disallowed by policy")
                # only projects with non-default quotas are listed: none (no quota is set)
                return json_response(200, {"quotas": []})
            return _methods({"GET": listing}, req.method)
        if tail == ["tenant"]:
            return _methods({"GET": lambda: json_response(
                200, {"tenant": {"tenant_id": ctx.project_id}})}, req.method)
        if tail == ["project"]:
            return _methods({"GET": lambda: json_response(
                200, {"project": {"project_id": ctx.project_id}})}, req.method)
        if len(tail) == 1 or len(tail) == 2 and tail[1] == "default":
            return _methods({"GET": lambda: json_response(
                200, {"quota": quotas_mod.limits() if project(tail[0]) else {}})}, req.method)
        if len(tail) == 2 and tail[1] == "details":
            return _methods({"GET": lambda: json_response(
                200, {"quota": quotas_mod.details(self.store, project(tail[0]))})}, req.method)
        raise HTTPNotFound()

    # --------------------------------------------------------------- collections
    def collection(self, req: webob.Request, ctx: Context, name: str, tail: list[str]
                   ) -> webob.Response:
        svc = self.service
        h = COLLECTIONS[name]
        res = h.resource
        if not tail:
            return _methods({
                "GET": lambda: self.listing(req, name, svc.list(ctx, name),
                                            lambda m: h.not_found(_nf(res, m))),
                "POST": lambda: json_response(201, {res: svc.create(
                    ctx, name, self.body(req, name, res, create=True))}),
            }, req.method)
        oid = tail[0]
        if len(tail) == 1:
            return _methods({
                "GET": lambda: json_response(200, {res: query.project(
                    svc.get(ctx, name, oid), _fields(req))}),
                "PUT": lambda: json_response(200, {res: svc.update(
                    ctx, name, oid, self.body(req, name, res))}),
                "DELETE": lambda: _deleted(svc.delete(ctx, name, oid)),
            }, req.method)
        if tail[1] == "tags" and len(tail) <= 3:
            return self.tags(req, ctx, name, oid, tail[2] if len(tail) == 3 else None)
        if len(tail) == 2 and tail[1] in h.actions:
            return _methods({"PUT": lambda: json_response(200, svc.action(
                ctx, name, oid, tail[1], self.action_body(req)))}, req.method)
        raise HTTPNotFound()

    def listing(self, req: webob.Request, name: str, items: list[dict],
                not_found: Callable[[str], ne.NeutronError]) -> webob.Response:
        params = list(req.GET.items())
        q = query.parse(params)
        key = name.replace("-", "_")
        page, links = query.run(items, q, collection=key, url=req.path_url, params=params,
                                not_found=not_found)
        body: dict[str, Any] = {key: page}
        if links:
            body[f"{key}_links"] = links
        return json_response(200, body)

    # --------------------------------------------------------------- tags
    def tags(self, req: webob.Request, ctx: Context, name: str, oid: str, tag: str | None
             ) -> webob.Response:
        svc = self.service

        def change(fn: Callable[[list[str]], list[str]]) -> list[str]:
            def staged(op: Any) -> list[str]:
                obj = svc.find(op, name, oid)
                tags = sorted(set(fn(list(obj.get("tags") or ()))))
                if tags != obj.get("tags"):  # a change bumps the revision, as in Neutron
                    obj["tags"] = tags
                    op.txn.put(kind_of(name), attrs.stamp_update(obj))
                return tags
            return svc.run(ctx, staged)

        if tag is None:
            def replace() -> webob.Response:
                body = self.json_body(req)
                if not isinstance(body, dict) or set(body) != {"tags"}:
                    raise ne.BadRequest("Invalid input: the body must be {\"tags\": [...]}")
                tags = _check_tags(body["tags"])
                return json_response(200, {"tags": change(lambda _old: tags)})
            return _methods({
                "GET": lambda: json_response(200, {"tags": sorted(
                    svc.get(ctx, name, oid).get("tags") or [])}),
                "PUT": replace,
                "DELETE": lambda: _deleted(change(lambda _old: [])),
            }, req.method)
        _check_tags([tag])

        def show() -> webob.Response:
            if tag not in (svc.get(ctx, name, oid).get("tags") or ()):
                raise TagNotFound(_tag_nf(tag, name, oid))
            return json_response(204)

        def remove() -> webob.Response:
            def fn(old: list[str]) -> list[str]:
                if tag not in old:
                    raise TagNotFound(_tag_nf(tag, name, oid))
                return [t for t in old if t != tag]
            change(fn)
            return json_response(204)
        return _methods({
            "GET": show,
            "PUT": lambda: _created(change(lambda old: [*old, tag])),
            "DELETE": remove,
        }, req.method)

    # --------------------------------------------------------------- bodies
    def json_body(self, req: webob.Request) -> Any:
        """The request's JSON (Content-Type application/json or none)."""
        ctype = (req.environ.get("CONTENT_TYPE") or "").strip()
        media, _, params = ctype.partition(";")
        charset = params.strip().lower().replace(" ", "").replace('"', "")
        if media.strip().lower() not in ("", "application/json") or charset not in (
                "", "charset=utf-8"):
            raise InvalidContentType(f"Invalid content type {ctype[:80]}: send the body as "
                                     "JSON (UTF-8) with Content-Type: application/json")
        raw = read_body(req.environ)
        if not raw.strip():
            raise ne.BadRequest("Resource body required")
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as e:
            raise MalformedRequestBody(f"Malformed request body: not valid UTF-8 (byte "
                                       f"{e.start})") from None
        except (ValueError, RecursionError) as e:
            raise MalformedRequestBody(f"Malformed request body: {str(e)[:120]}") from None

    def body(self, req: webob.Request, name: str, res: str, *, create: bool = False
             ) -> dict[str, Any]:
        """The attributes of ``{"<resource>": {...}}``."""
        body = self.json_body(req)
        plural = name.replace("-", "_")
        if create and isinstance(body, dict) and isinstance(body.get(plural), list):
            raise ne.BadRequest("bulk create is not supported; create one at a time")
        if not isinstance(body, dict):
            raise ne.BadRequest("Body contains invalid data: a JSON object "
                                f"{{\"{res}\": {{...}}}} is expected")
        if res not in body:
            raise ne.BadRequest(f"Unable to find '{res}' in request body")
        extra = sorted(k for k in body if k != res)
        if extra:
            raise ne.BadRequest("Unrecognized attribute(s) "
                                + ", ".join(f"'{k}'" for k in extra))
        if not isinstance(body[res], dict):
            raise ne.BadRequest("Body contains invalid data: "
                                f"'{res}' must be a JSON object")
        return body[res]

    def action_body(self, req: webob.Request) -> dict[str, Any]:
        body = self.json_body(req)
        if not isinstance(body, dict):
            raise ne.BadRequest("Body contains invalid data: a JSON object is expected")
        return body


# ------------------------------------------------------------------ helpers
class _InternalError(ne.NeutronError):
    status = 500

    @property
    def type(self) -> str:
        return "HTTPInternalServerError"


def _internal() -> ne.NeutronError:
    return _InternalError(INTERNAL)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _fields(req: webob.Request) -> list[str]:
    return [f for v in req.GET.getall("fields") for f in v.split(",") if f]


def _nf(res: str, oid: str) -> str:
    return f"{res.replace('_', ' ').capitalize()} {oid} could not be found."


def _tag_nf(tag: str, name: str, oid: str) -> str:
    return f"Tag {tag} could not be found for {name} {oid}."


def _check_tags(tags: Any) -> list[str]:
    if not isinstance(tags, list):
        raise ne.BadRequest(f"Invalid input for tags. Reason: '{str(tags)[:60]}' is not a "
                            "list.")
    for t in tags:
        if not isinstance(t, str) or not t:
            raise ne.BadRequest(f"Invalid input for tags. Reason: '{str(t)[:60]}' is not a "
                                "valid tag (a non-empty string).")
        if len(t) > TAG_MAX:
            raise ne.BadRequest(f"Invalid input for tags. Reason: '{t[:40]}...' exceeds "
                                f"maximum length of {TAG_MAX}.")
        if "," in t or "/" in t:
            raise ne.BadRequest(f"Invalid input for tags. Reason: '{t}' contains ',' or "
                                "'/'.")
    return list(tags)


def _deleted(_: Any) -> webob.Response:
    return json_response(204)


def _created(_: Any) -> webob.Response:
    return json_response(201)


def _safe(environ: dict) -> str:
    return repr(environ.get("PATH_INFO", ""))[1:-1][:200]


def make_neutron_app(store: Store, *, noauth: bool = False,
                     service: NeutronService | None = None) -> NeutronApi:
    """The Neutron API over ``store`` (``noauth``: no Keystone, see the module doc)."""
    return NeutronApi(store, noauth=noauth, service=service)


__all__ = ["make_neutron_app", "NeutronApi"]
