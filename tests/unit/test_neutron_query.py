"""Neutron list queries (midoflow.neutron.query): pure, no store."""

from __future__ import annotations

import urllib.parse
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midoflow.neutron import errors as ne
from midoflow.neutron import query

URL = "http://h/v2.0/ports"


def _nf(marker: str) -> ne.NeutronError:
    return ne.PortNotFound(f"Port {marker} could not be found.")


def run(items, qs: str):
    params = urllib.parse.parse_qsl(qs, keep_blank_values=True)
    return query.run(items, query.parse(params), collection="ports", url=URL, params=params,
                     not_found=_nf)


def ids(page):
    return [o["id"] for o in page]


PORTS = [
    {"id": "a", "name": "web", "admin_state_up": True, "mtu": 1450, "device_id": None,
     "tags": ["red", "blue"], "security_groups": ["sg1"],
     "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}], "router:external": False},
    {"id": "b", "name": "db", "admin_state_up": False, "mtu": 1500, "device_id": "vm1",
     "tags": ["red"], "security_groups": [],
     "fixed_ips": [{"subnet_id": "s2", "ip_address": "10.0.1.5"},
                   {"subnet_id": "s1", "ip_address": "10.0.0.6"}], "router:external": True},
    {"id": "c", "name": "web", "admin_state_up": True, "mtu": 1450, "device_id": "vm2",
     "tags": [], "security_groups": ["sg1", "sg2"], "fixed_ips": [], "router:external": False},
]


@pytest.mark.parametrize("qs,want", [
    ("", ["a", "b", "c"]),
    ("name=web", ["a", "c"]),
    ("name=web&name=db", ["a", "b", "c"]),
    ("name=web&admin_state_up=False", []),
    ("admin_state_up=false", ["b"]),
    ("admin_state_up=1", ["a", "c"]),
    ("admin_state_up=True&admin_state_up=0", ["a", "b", "c"]),
    ("router:external=True", ["b"]),
    ("mtu=1500", ["b"]),
    ("device_id=", ["a"]),
    ("security_groups=sg2", ["c"]),
    ("fixed_ips=ip_address%3D10.0.0.5", ["a"]),
    ("fixed_ips=subnet_id%3Ds1", ["a", "b"]),
    # one fixed IP must satisfy both
    ("fixed_ips=subnet_id%3Ds2&fixed_ips=ip_address%3D10.0.0.6", []),
    ("fixed_ips=subnet_id%3Ds1&fixed_ips=ip_address%3D10.0.0.6", ["b"]),
    ("fixed_ips=ip_address_substr%3D0.1.", ["b"]),
    ("no_such_attribute=x", ["a", "b", "c"]),
    ("tags=red", ["a", "b"]),
    ("tags=red,blue", ["a"]),
    ("tags-any=blue,green", ["a"]),
    ("not-tags=red,blue", ["b", "c"]),
    ("not-tags-any=red", ["c"]),
    ("tags=red&not-tags-any=blue", ["b"]),
])
def test_filters(qs, want):
    page, links = run(PORTS, qs)
    assert ids(page) == want
    assert links == []


def test_fields_keeps_only_those_in_the_order_asked():
    page, _ = run(PORTS, "fields=name&fields=id&fields=nope")
    assert page[0] == {"name": "web", "id": "a"}
    assert list(page[0]) == ["name", "id"]
    assert query.project(PORTS[0], ["mtu"]) == {"mtu": 1450}
    assert query.project(PORTS[0], []) is PORTS[0]


@pytest.mark.parametrize("qs,want", [
    ("sort_key=name", ["b", "a", "c"]),
    ("sort_key=name&sort_dir=desc", ["a", "c", "b"]),
    ("sort_key=mtu&sort_dir=desc&sort_key=id&sort_dir=desc", ["b", "c", "a"]),
    ("sort_key=device_id", ["a", "b", "c"]),  # None first
    ("sort_key=security_groups&sort_dir=asc", ["b", "a", "c"]),
])
def test_sorting(qs, want):
    assert ids(run(PORTS, qs)[0]) == want


@pytest.mark.parametrize("qs,message", [
    ("limit=-1", "Limit must be an integer 0 or greater"),
    ("limit=ten", "Limit must be an integer 0 or greater"),
    ("sort_key=name&sort_dir=up", "invalid value for sort_dirs"),
    ("sort_key=name&sort_dir=asc&sort_dir=desc", "sort_keys and sort_dirs must be same"),
    ("sort_key=bogus", "invalid attribute for sort_keys"),
    ("sort_key=limit", "invalid attribute for sort_keys"),
    ("sort_key=tags", "invalid attribute for sort_keys"),
    ("page_reverse=maybe", "cannot be converted to boolean"),
    ("admin_state_up=yes", "cannot be converted to boolean"),
    ("fixed_ips=10.0.0.5", "Invalid input for fixed_ips"),
])
def test_bad_values_are_400(qs, message):
    with pytest.raises(ne.BadRequest, match=message):
        run(PORTS, qs)


def test_unknown_marker_is_the_collections_404():
    with pytest.raises(ne.PortNotFound):
        run(PORTS, "marker=zzz")


def test_pages_and_links_as_neutron():
    page, links = run(PORTS, "limit=2&name=web")
    assert ids(page) == ["a", "c"]  # a full page: next and previous links
    rels = {lk["rel"]: urllib.parse.parse_qs(urllib.parse.urlsplit(lk["href"]).query)
            for lk in links}
    assert rels["next"] == {"limit": ["2"], "name": ["web"], "marker": ["c"]}
    assert rels["previous"] == {"limit": ["2"], "name": ["web"], "marker": ["a"],
                                "page_reverse": ["True"]}
    assert links[0]["href"].startswith(URL + "?")
    # the next page is empty and has no links: clients stop there
    assert run(PORTS, "limit=2&name=web&marker=c") == ([], [])
    # a short forward page: previous only
    page, links = run(PORTS, "limit=2&marker=b")
    assert ids(page) == ["c"] and [lk["rel"] for lk in links] == ["previous"]
    # backwards from the last one
    page, links = run(PORTS, "limit=1&marker=c&page_reverse=True")
    assert ids(page) == ["b"] and [lk["rel"] for lk in links] == ["next", "previous"]
    page, links = run(PORTS, "limit=5&marker=b&page_reverse=true")
    assert ids(page) == ["a"] and [lk["rel"] for lk in links] == ["next"]
    # a marker that the filters exclude still positions the page
    assert ids(run(PORTS, "name=web&marker=b")[0]) == ["c"]
    # limit=0: no limit, no links
    assert run(PORTS, "limit=0")[1] == []


@st.composite
def objects(draw):
    n = draw(st.integers(0, 25))
    out = []
    for _ in range(n):
        out.append({"id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
                    "name": draw(st.sampled_from(["a", "b", "c", ""])),
                    "size": draw(st.one_of(st.none(), st.integers(0, 3))),
                    "up": draw(st.booleans()),
                    "tags": draw(st.lists(st.sampled_from(["x", "y", "z"]), unique=True))})
    uniq = {o["id"]: o for o in out}
    return list(uniq.values())


@settings(max_examples=150, deadline=None)
@given(objects(), st.integers(1, 6), st.sampled_from(["name", "size", "up", "id"]),
       st.sampled_from(["asc", "desc"]), st.sampled_from(["", "name=a&name=c", "up=true",
                                                           "tags-any=x", "not-tags=x,y"]))
def test_following_next_links_visits_each_match_once_in_order(items, limit, key, direction,
                                                               filt):
    base = f"sort_key={key}&sort_dir={direction}" + (f"&{filt}" if filt else "")
    everything, _ = run(items, base)
    seen, qs = [], f"{base}&limit={limit}"
    for _ in range(len(items) + 2):
        page, links = run(items, qs)
        assert len(page) <= limit
        seen += ids(page)
        nxt = [lk["href"] for lk in links if lk["rel"] == "next"]
        if not nxt:
            break
        qs = urllib.parse.urlsplit(nxt[0]).query
    else:
        pytest.fail("pagination never ended")
    assert seen == ids(everything)
    # and walking back from the end with previous links gives the same, reversed
    if seen:
        back, qs = [], f"{base}&limit={limit}&marker={seen[-1]}&page_reverse=True"
        for _ in range(len(items) + 2):
            page, links = run(items, qs)
            back = ids(page) + back
            prev = [lk["href"] for lk in links if lk["rel"] == "previous"]
            if not prev or not page:
                break
            qs = urllib.parse.urlsplit(prev[0]).query
        assert back == seen[:-1]
