"""The Octavia v2 API over HTTP: a WSGI application (webob), mounted under
:data:`midoflow.octavia.PREFIX` by :mod:`midoflow.rest.auth`.

``GET /`` is the versions document; ``/v2`` (and ``/v2.0``, where
python-octaviaclient goes) ``/lbaas/`` holds ``loadbalancers`` (with the
``/{id}/status`` tree), ``listeners``, ``pools`` (with ``/{id}/members``),
``healthmonitors`` and ``providers``; ``.../stats`` answers 501 (no
statistics are gathered: each host balances in its own flow state). JSON in and out in
Octavia's shapes; every error is ``{"faultcode", "faultstring",
"debuginfo"}`` with its status, never a traceback.

Who asks is the Neutron layer's :class:`midoflow.neutron.context.Context`
(keystonemiddleware's headers; with no-auth, the admin unless
``X-Project-Id``/``X-Roles`` say otherwise): a project sees its own objects,
another project's are 404, the admin sees all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import webob

from midoflow import errors as mf
from midoflow.neutron import errors as ne
from midoflow.neutron.base import Op
from midoflow.neutron.context import Context
from midoflow.neutron.service import NeutronService
from midoflow.octavia import errors as oe
from midoflow.octavia import native
from midoflow.octavia import resources as r
from midoflow.store.base import Store
from midoflow.wsgibody import ClientGone, check_encoding, read_body

LOG = logging.getLogger("midoflow.octavia")

VERSIONS = ("v2.0", "v2")
LIST_PARAMS = ("fields", "limit", "marker", "page_reverse", "sort", "sort_key", "sort_dir")
LIMIT_MAX = 1000


def json_response(status: int, body: Any = None, headers: dict | None = None
                  ) -> webob.Response:
    resp = webob.Response(status=status)
    if body is None:
        resp.content_type = None
    else:
        resp.content_type = "application/json"
        resp.charset = None
        resp.body = json.dumps(body).encode()
    for k, val in (headers or {}).items():
        resp.headers[k] = val
    return resp


def _octavia_error(e: Exception) -> oe.OctaviaError:
    """A Neutron or native error met on the way, as Octavia's."""
    status = getattr(e, "status", 500)
    message = getattr(e, "message", None) or str(e)
    if isinstance(e, mf.MidoflowError):
        status = (400 if isinstance(e, mf.Invalid) else 404 if isinstance(e, mf.NotFound)
                  else 409 if isinstance(e, mf.Conflict) else 413 if isinstance(e, mf.TooLarge)
                  else 503 if isinstance(e, mf.Unavailable) else 500)
    cls = {400: oe.BadRequest, 401: oe.Unauthorized, 403: oe.Forbidden, 404: oe.NotFound,
           409: oe.Conflict, 413: oe.TooLarge, 503: oe.Unavailable}.get(status)
    if cls is None:
        raise e
    return cls(message)


def _methods(allowed: dict[str, Callable[[], webob.Response]], method: str
             ) -> webob.Response:
    fn = allowed.get("GET" if method == "HEAD" else method)
    if fn is None:
        raise oe.MethodNotAllowed(method, sorted(allowed))
    return fn()


class OctaviaApi:
    """The WSGI application."""

    def __init__(self, store: Store, *, noauth: bool = False,
                 neutron: NeutronService | None = None) -> None:
        self.store = store
        self.noauth = noauth
        self.neutron = neutron if neutron is not None else NeutronService(store)

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        method = str(environ.get("REQUEST_METHOD", "GET"))[:16]
        try:
            check_encoding(environ)
            resp = self.dispatch(webob.Request(environ))
        except oe.OctaviaError as e:
            resp = self.error(e)
        except ClientGone as e:
            resp = self.error(oe.BadRequest(f"Malformed request body: incomplete ({e})"))
        except (ne.NeutronError, mf.MidoflowError) as e:
            try:
                resp = self.error(_octavia_error(e))
            except Exception:  # noqa: BLE001
                LOG.error("unexpected %s on %s %s: %s", type(e).__name__, method,
                          _safe(environ), e)
                resp = self.error(oe.OctaviaError("internal error; see the API server's log"))
        except Exception:
            LOG.exception("unexpected error on %s %s", method, _safe(environ))
            resp = self.error(oe.OctaviaError("internal error; see the API server's log"))
        return resp(environ, start_response)

    @staticmethod
    def error(e: oe.OctaviaError) -> webob.Response:
        headers = {"Allow": ", ".join(e.allow)} if isinstance(e, oe.MethodNotAllowed) else {}
        return json_response(e.status, e.to_dict(), headers)

    def context(self, req: webob.Request) -> Context:
        if self.noauth:
            return Context.from_noauth_environ(req.environ)
        ctx = Context.from_environ(req.environ)
        if ctx is None:
            raise oe.Unauthorized("Authentication required: send a valid Keystone token in "
                                  "X-Auth-Token")
        return ctx

    # ---------------------------------------------------------------- routing
    def dispatch(self, req: webob.Request) -> webob.Response:
        parts = [p for p in req.path_info.split("/") if p]
        if not parts:
            return _methods({"GET": lambda: self.versions(req)}, req.method)
        if parts[0] not in VERSIONS:
            raise oe.NotFound("The resource could not be found: the Octavia API is under "
                              "/v2/lbaas")
        if len(parts) == 1:
            return _methods({"GET": lambda: self.versions(req)}, req.method)
        if parts[1] != "lbaas" or len(parts) < 3:
            raise oe.NotFound("The resource could not be found: the Octavia API is under "
                              "/v2/lbaas")
        ctx = self.context(req)
        head, tail = parts[2], parts[3:]
        if head == "providers" and not tail:
            return _methods({"GET": lambda: json_response(200, {"providers": [{
                "name": r.PROVIDER, "description": "midoflow: distributed layer-4 "
                "balancing in the virtual routers"}]})}, req.method)
        if head not in r.COLLECTIONS or head == r.MEMBERS:
            raise oe.NotFound(f"The resource could not be found: no collection {head!r}")
        if head == r.POOLS and len(tail) >= 2 and tail[1] == r.MEMBERS:
            return self.members(req, ctx, tail[0], tail[2:])
        if head == r.LOADBALANCERS and len(tail) == 2 and tail[1] in ("status", "stats"):
            return _methods({"GET": lambda: self.lb_extra(ctx, tail[0], tail[1])},
                            req.method)
        if head == r.LISTENERS and len(tail) == 2 and tail[1] == "stats":
            return _methods({"GET": lambda: self.stats(ctx, r.LISTENERS, tail[0])},
                            req.method)
        if len(tail) > 1:
            raise oe.NotFound("The resource could not be found.")
        return self.collection(req, ctx, head, tail[0] if tail else None)

    def versions(self, req: webob.Request) -> webob.Response:
        base = req.application_url
        return json_response(200, {"versions": [
            {"id": "v2.0", "status": "SUPPORTED", "updated": "2016-12-11T00:00:00Z",
             "links": [{"href": f"{base}/v2.0/", "rel": "self"}]},
            {"id": "v2", "status": "CURRENT", "updated": "2024-01-01T00:00:00Z",
             "links": [{"href": f"{base}/v2/", "rel": "self"}]}]})

    # ---------------------------------------------------------------- running
    def run(self, ctx: Context, fn: Callable[[Op], Any]) -> Any:
        """``fn`` staged and committed once (retried on a lost race)."""
        def staged(op: Op) -> Any:
            out = fn(op)
            native.forget_health_after_commit(op)
            return out
        return self.neutron.run(ctx, staged)

    def read(self, ctx: Context, fn: Callable[[Op], Any]) -> Any:
        return self.neutron.read(ctx, fn)

    def shown(self, ctx: Context, coll: str, oid: str, status: int = 200) -> webob.Response:
        def fn(op: Op) -> Any:
            rec, nat = r.find(op, coll, oid)
            return r.view(op, coll, rec, nat)
        return json_response(status, {r.RESOURCE[coll]: self.read(ctx, fn)})

    def collection(self, req: webob.Request, ctx: Context, coll: str, oid: str | None
                   ) -> webob.Response:
        create = {r.LOADBALANCERS: r.create_loadbalancer, r.LISTENERS: r.create_listener,
                  r.POOLS: r.create_pool, r.HEALTHMONITORS: r.create_healthmonitor}[coll]
        update = {r.LOADBALANCERS: r.update_loadbalancer, r.LISTENERS: r.update_listener,
                  r.POOLS: r.update_pool, r.HEALTHMONITORS: r.update_healthmonitor}[coll]
        if oid is None:
            def post() -> webob.Response:
                body = self.json_body(req)
                rec = self.run(ctx, lambda op: create(op, body))
                return self.shown(ctx, coll, rec["id"], 201)
            return _methods({"GET": lambda: self.listing(req, ctx, coll),
                             "POST": post}, req.method)

        def put() -> webob.Response:
            body = self.json_body(req)
            self.run(ctx, lambda op: update(op, oid, body))
            return self.shown(ctx, coll, oid)

        def delete() -> webob.Response:
            if coll == r.LOADBALANCERS:
                cascade = _flag(req.GET.get("cascade"), "cascade")
                self.run(ctx, lambda op: r.delete_loadbalancer(op, oid, cascade))
            else:
                fn = {r.LISTENERS: r.delete_listener, r.POOLS: r.delete_pool,
                      r.HEALTHMONITORS: r.delete_healthmonitor}[coll]
                self.run(ctx, lambda op: fn(op, oid))
            return json_response(204)
        return _methods({"GET": lambda: self.shown(ctx, coll, oid), "PUT": put,
                         "DELETE": delete}, req.method)

    def members(self, req: webob.Request, ctx: Context, pool_id: str, tail: list[str]
                ) -> webob.Response:
        if len(tail) > 1:
            raise oe.NotFound("The resource could not be found.")

        def show(mid: str, status: int = 200) -> webob.Response:
            def fn(op: Op) -> Any:
                rec, nat = r.member_in(op, pool_id, mid)
                return r.view(op, r.MEMBERS, rec, nat)
            return json_response(status, {"member": self.read(ctx, fn)})

        if not tail:
            def post() -> webob.Response:
                body = self.json_body(req)
                rec = self.run(ctx, lambda op: r.create_member(op, pool_id, body))
                return show(rec["id"], 201)

            def listing() -> webob.Response:
                self.read(ctx, lambda op: r.find(op, r.POOLS, pool_id))
                return self.listing(req, ctx, r.MEMBERS, pool_id=pool_id)
            return _methods({"GET": listing, "POST": post}, req.method)
        mid = tail[0]

        def put() -> webob.Response:
            body = self.json_body(req)
            self.run(ctx, lambda op: r.update_member(op, pool_id, mid, body))
            return show(mid)

        def delete() -> webob.Response:
            self.run(ctx, lambda op: r.delete_member(op, pool_id, mid))
            return json_response(204)
        return _methods({"GET": lambda: show(mid), "PUT": put, "DELETE": delete}, req.method)

    def lb_extra(self, ctx: Context, oid: str, what: str) -> webob.Response:
        if what == "stats":
            return self.stats(ctx, r.LOADBALANCERS, oid)

        def fn(op: Op) -> Any:
            rec, nat = r.find(op, r.LOADBALANCERS, oid)
            lb = r.view(op, r.LOADBALANCERS, rec, nat)
            pools = {}
            for p in lb["pools"]:
                found = r.pair(op, r.POOLS, p["id"])
                if found is None:
                    continue
                pv = r.view(op, r.POOLS, *found)
                members = [r.view(op, r.MEMBERS, *m) for m in
                           (r.pair(op, r.MEMBERS, x["id"]) for x in pv["members"]) if m]
                hm = r.pair(op, r.HEALTHMONITORS, pv["healthmonitor_id"] or "")
                pools[p["id"]] = {
                    **_brief(pv), "members": [{**_brief(m), "address": m["address"],
                                               "protocol_port": m["protocol_port"]}
                                              for m in members],
                    **({"health_monitor": {**_brief(r.view(op, r.HEALTHMONITORS, *hm)),
                                           "type": hm[1]["type"]}} if hm else {})}
            listeners = []
            for lst in lb["listeners"]:
                found = r.pair(op, r.LISTENERS, lst["id"])
                if found is None:
                    continue
                lv = r.view(op, r.LISTENERS, *found)
                listeners.append({**_brief(lv), "pools": [
                    pools[lv["default_pool_id"]]] if lv["default_pool_id"] in pools else []})
            return {"statuses": {"loadbalancer": {**_brief(lb), "listeners": listeners,
                                                  "pools": list(pools.values())}}}
        return json_response(200, self.read(ctx, fn))

    def stats(self, ctx: Context, coll: str, oid: str) -> webob.Response:
        self.read(ctx, lambda op: r.find(op, coll, oid))
        raise oe.NotImplementedHere(
            "Statistics are not gathered: each host balances in its own flow state. Count "
            "connections with the agents' /metrics or `midoflow trace` instead")

    # ---------------------------------------------------------------- listing
    def listing(self, req: webob.Request, ctx: Context, coll: str,
                pool_id: str | None = None) -> webob.Response:
        def fn(op: Op) -> list[dict]:
            return [r.view(op, coll, rec, nat) for rec, nat in r.scan(op, coll)
                    if pool_id is None or nat.get("pool_id") == pool_id]
        items = sorted(self.read(ctx, fn), key=lambda o: (o.get("created_at") or "", o["id"]))
        params = list(req.GET.items())
        for key, want in params:
            if key in LIST_PARAMS:
                continue
            items = [o for o in items if key in o and _matches(o[key], want, key)]
        limit = req.GET.get("limit")
        marker = req.GET.get("marker")
        if marker is not None:
            ids = [o["id"] for o in items]
            if marker not in ids:
                raise oe.NotFound(f"{r.LABEL[coll]} {marker} (the marker) not found.")
            items = items[ids.index(marker) + 1:]
        links = []
        if limit is not None:
            n = _int_param(limit, "limit")
            if n and len(items) > n:
                items = items[:n]
                q = [(k, val) for k, val in params if k != "marker"]
                q.append(("marker", items[-1]["id"]))
                links.append({"rel": "next", "href": f"{req.path_url}?{urlencode(q)}"})
        fields = [f for val in req.GET.getall("fields") for f in val.split(",") if f]
        if fields:
            items = [{k: o[k] for k in o if k in fields or k == "id"} for o in items]
        body: dict[str, Any] = {coll: items}
        if links:
            body[f"{coll}_links"] = links
        return json_response(200, body)

    # ---------------------------------------------------------------- bodies
    def json_body(self, req: webob.Request) -> Any:
        ctype = (req.environ.get("CONTENT_TYPE") or "").strip()
        media = ctype.partition(";")[0].strip().lower()
        if media not in ("", "application/json"):
            raise oe.BadRequest(f"Invalid content type {ctype[:80]}: send JSON with "
                                "Content-Type: application/json")
        raw = read_body(req.environ)
        if not raw.strip():
            raise oe.BadRequest("Missing request body: a JSON object is expected")
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as e:
            raise oe.BadRequest(f"Malformed request body: not UTF-8 (byte {e.start})") from None
        except (ValueError, RecursionError) as e:
            raise oe.BadRequest(f"Malformed request body: {str(e)[:120]}") from None


def _brief(o: dict) -> dict:
    return {"id": o["id"], "name": o.get("name") or "",
            "provisioning_status": o["provisioning_status"],
            "operating_status": o["operating_status"]}


def _matches(have: Any, want: str, key: str) -> bool:
    if key == "tags":
        return all(t in (have or []) for t in want.split(","))
    if isinstance(have, bool):
        return str(have).lower() == want.strip().lower()
    if isinstance(have, list):
        return any(isinstance(x, dict) and x.get("id") == want for x in have)
    return ("" if have is None else str(have)) == want


def _int_param(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise oe.BadRequest(f"Invalid {name} {value[:40]!r}: give a whole number") from None
    if n < 0:
        raise oe.BadRequest(f"Invalid {name} {n}: give 0 or more")
    return min(n, LIMIT_MAX)


def _flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    low = value.strip().lower()
    if low in ("true", "1", "yes", ""):
        return True
    if low in ("false", "0", "no"):
        return False
    raise oe.BadRequest(f"Invalid {name} {value[:40]!r}: give true or false")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _safe(environ: dict) -> str:
    return repr(environ.get("PATH_INFO", ""))[1:-1][:200]


def make_octavia_app(store: Store, *, noauth: bool = False,
                     neutron: NeutronService | None = None) -> OctaviaApi:
    """The Octavia API over ``store`` (``neutron``: the Neutron API's service,
    for the VIP ports; ``noauth``: see the module doc)."""
    return OctaviaApi(store, noauth=noauth, neutron=neutron)


__all__ = ["OctaviaApi", "make_octavia_app"]
