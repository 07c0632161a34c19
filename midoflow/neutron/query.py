"""Neutron's list queries, PURE: filters, ``fields=``, sorting, ``limit``/
``marker`` pagination with ``<collection>_links``, tag filters.

The HTTP layer parses the query string once (:func:`parse`) and runs it over
the visible objects of a collection (:func:`run`): one filtering pass, one
sort, one slice. Semantics follow Neutron's API layer:

* ``?name=a&name=b``: OR within an attribute, AND across attributes; a filter
  on an attribute the objects do not have is ignored (Neutron without strict
  filter validation). Booleans accept ``True/true/1/False/false/0``; a list
  attribute matches when one of its items does; ``fixed_ips=ip_address=X``,
  ``fixed_ips=subnet_id=Y`` and ``fixed_ips=ip_address_substr=Z`` match ports
  having one fixed IP that satisfies them all.
* ``tags`` (all of), ``tags-any``, ``not-tags`` (not all of), ``not-tags-any``
  (none of): comma-separated, repeatable.
* ``sort_key``/``sort_dir`` pairs (``id`` is always the last key, so the order
  is total); ``limit`` (0: no limit), ``marker`` (an id: the page starts after
  it, 404 if it is not a visible object), ``page_reverse``; ``fields``: only
  those attributes are returned.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from midoflow.neutron import errors as ne

Data = dict[str, Any]

# Query parameters that are not attribute filters.
RESERVED = frozenset({"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse",
                      "tags", "tags-any", "not-tags", "not-tags-any", "verbose"})
TAG_PARAMS = ("tags", "tags-any", "not-tags", "not-tags-any")
TRUE = frozenset({"true", "1"})
FALSE = frozenset({"false", "0"})
FIXED_IP_KEYS = ("ip_address", "subnet_id", "ip_address_substr")


@dataclass
class Query:
    filters: dict[str, list[str]] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    sorts: list[tuple[str, bool]] = field(default_factory=list)  # (key, ascending)
    limit: int = 0  # 0: no limit
    marker: str | None = None
    page_reverse: bool = False
    tags: dict[str, set[str]] = field(default_factory=dict)  # param -> tags


def to_bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ne.BadRequest(f"Invalid input for {name}. Reason: '{value}' cannot be converted "
                        "to boolean.")


def parse(params: Iterable[tuple[str, str]]) -> Query:
    """The query of a list request; BadRequest (400) for a bad value."""
    q = Query()
    keys: list[str] = []
    dirs: list[str] = []
    for name, value in params:
        if name == "fields":
            q.fields.extend(f for f in value.split(",") if f)
        elif name == "sort_key":
            keys.append(value)
        elif name == "sort_dir":
            dirs.append(value)
        elif name == "limit":
            q.limit = _limit(value)
        elif name == "marker":
            q.marker = value
        elif name == "page_reverse":
            q.page_reverse = to_bool(value, "page_reverse")
        elif name in TAG_PARAMS:
            q.tags.setdefault(name, set()).update(t for t in value.split(",") if t)
        elif name == "verbose":
            continue
        else:
            q.filters.setdefault(name, []).append(value)
    if dirs and len(dirs) != len(keys):
        raise ne.BadRequest("The number of sort_keys and sort_dirs must be same")
    for d in dirs:
        if d not in ("asc", "desc"):
            raise ne.BadRequest(f"{d} is invalid value for sort_dirs, valid value is "
                                "'asc' and 'desc'")
    for k in keys:
        if not k or k in RESERVED:
            raise ne.BadRequest(f"'{k}' is an invalid attribute for sort_keys")
    q.sorts = [(k, (dirs[i] if dirs else "asc") == "asc") for i, k in enumerate(keys)]
    if "fixed_ips" in q.filters:
        for v in q.filters["fixed_ips"]:
            k, eq, _ = v.partition("=")
            if not eq or k not in FIXED_IP_KEYS:
                raise ne.BadRequest(f"Invalid input for fixed_ips. Reason: '{v}' is not "
                                    "ip_address=<ip>, subnet_id=<id> or "
                                    "ip_address_substr=<text>.")
    return q


def _limit(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ne.BadRequest(f"Limit must be an integer 0 or greater and not '{value}'")
    return n


# ------------------------------------------------------------------ filters
def _value_matches(have: Any, wanted: list[str], name: str) -> bool:
    if isinstance(have, bool):
        return any(to_bool(w, name) is have for w in wanted)
    if have is None:
        return any(w in ("", "None") for w in wanted)
    if isinstance(have, int | float):
        return str(have) in wanted
    if isinstance(have, str):
        return have in wanted
    if isinstance(have, list):
        return any(_value_matches(x, wanted, name) for x in have
                   if not isinstance(x, dict | list))
    return True  # a dict-valued attribute cannot be filtered on: ignored


def _fixed_ips_filter(wanted: list[str]) -> Callable[[Data], bool]:
    want: dict[str, list[str]] = {}
    for v in wanted:
        k, _, val = v.partition("=")
        want.setdefault(k, []).append(val)

    def ok(port: Data) -> bool:
        for f in port.get("fixed_ips") or ():
            if ("ip_address" in want and f.get("ip_address") not in want["ip_address"]
                    or "subnet_id" in want and f.get("subnet_id") not in want["subnet_id"]):
                continue
            if "ip_address_substr" in want and not any(
                    s in (f.get("ip_address") or "") for s in want["ip_address_substr"]):
                continue
            return True
        return False
    return ok


def matcher(q: Query) -> Callable[[Data], bool]:
    """Whether an object passes the query's filters and tag filters."""
    fixed = _fixed_ips_filter(q.filters["fixed_ips"]) if "fixed_ips" in q.filters else None
    plain = [(k, v) for k, v in q.filters.items() if k != "fixed_ips"]
    tags_all = q.tags.get("tags")
    tags_any = q.tags.get("tags-any")
    not_all = q.tags.get("not-tags")
    not_any = q.tags.get("not-tags-any")

    def ok(obj: Data) -> bool:
        for k, wanted in plain:
            if k in obj and not _value_matches(obj[k], wanted, k):
                return False
        if fixed is not None and "fixed_ips" in obj and not fixed(obj):
            return False
        if q.tags:
            have = set(obj.get("tags") or ())
            if tags_all and not tags_all <= have or tags_any and not tags_any & have:
                return False
            if not_all and not_all <= have or not_any and not_any & have:
                return False
        return True
    return ok


# ------------------------------------------------------------------ sorting
def _rank(v: Any) -> tuple:
    """A sort key for any JSON value (None first, as SQL's NULLS FIRST ascending)."""
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, int | float):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, list):
        return (4, tuple(_rank(x) for x in v))
    return (5, json.dumps(v, sort_keys=True, default=str))


class _Desc:
    """Reverses the order of a sort key component."""

    __slots__ = ("k",)

    def __init__(self, k: tuple) -> None:
        self.k = k

    def __lt__(self, other: _Desc) -> bool:
        return other.k < self.k

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and other.k == self.k

    def __hash__(self) -> int:
        return hash(self.k)


def sort_key(sorts: list[tuple[str, bool]]) -> Callable[[Data], tuple]:
    keys = list(sorts)
    if not any(k == "id" for k, _ in keys):
        keys.append(("id", True))
    return lambda o: tuple(_rank(o.get(k)) if asc else _Desc(_rank(o.get(k)))
                           for k, asc in keys)


# ------------------------------------------------------------------ paging
def run(items: list[Data], q: Query, *, collection: str, url: str,
        params: list[tuple[str, str]],
        not_found: Callable[[str], ne.NeutronError]) -> tuple[list[Data], list[Data]]:
    """(the page, its ``<collection>_links``) of ``items`` (the visible objects).

    ``url``: the request's URL without query; ``params``: its query parameters
    (for the links); ``not_found(marker)``: the error for a marker that is not
    a visible object."""
    known: set[str] = set()
    for o in items[:1]:
        known.update(o)
    for k, _ in q.sorts:
        if items and k not in known:
            raise ne.BadRequest(f"'{k}' is an invalid attribute for sort_keys")
    ok = matcher(q)
    key = sort_key(q.sorts)
    marker_obj = None
    if q.marker is not None:
        marker_obj = next((o for o in items if o.get("id") == q.marker), None)
        if marker_obj is None:
            raise not_found(q.marker)
    selected = [o for o in items if ok(o)]
    selected.sort(key=key)
    if marker_obj is not None:
        mk = key(marker_obj)
        if q.page_reverse:
            selected = [o for o in selected if key(o) < mk]
        else:
            selected = [o for o in selected if mk < key(o)]
    if q.limit:
        selected = selected[-q.limit:] if q.page_reverse else selected[:q.limit]
    links = _links(selected, q, collection, url, params)
    if q.fields:
        wanted = dict.fromkeys(q.fields)
        selected = [{k: o[k] for k in wanted if k in o} for o in selected]
    return selected, links


def _href(url: str, params: list[tuple[str, str]], marker: str, reverse: bool) -> str:
    kept = [(k, v) for k, v in params if k not in ("marker", "page_reverse")]
    kept.append(("marker", marker))
    if reverse:
        kept.append(("page_reverse", "True"))
    return url + "?" + urllib.parse.urlencode(kept)


def _links(page: list[Data], q: Query, collection: str, url: str,
           params: list[tuple[str, str]]) -> list[Data]:
    """Neutron's get_pagination_links: ``next`` unless a forward page came back
    short, ``previous`` unless a reverse page did."""
    if not q.limit or not page:
        return []
    links = []
    if not (len(page) < q.limit and not q.page_reverse):
        links.append({"rel": "next", "href": _href(url, params, page[-1]["id"], False)})
    if not (len(page) < q.limit and q.page_reverse):
        links.append({"rel": "previous", "href": _href(url, params, page[0]["id"], True)})
    return links


def project(obj: Data, fields: list[str]) -> Data:
    """``fields=`` on one object (GET of an item)."""
    if not fields:
        return obj
    return {k: obj[k] for k in dict.fromkeys(fields) if k in obj}
