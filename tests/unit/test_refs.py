"""A new kind referencing built-in kinds: every delete, built-in or generic, applies its
declared on-delete rule (refuse, cascade, clear) in the same commit, recursively, and a
concurrent change of a referencing object makes that commit fail."""

from __future__ import annotations

import dataclasses

import pytest

from midoflow import model
from midoflow.kinds import KINDS
from midoflow.kinds.base import (
    CASCADE,
    CLEAR,
    REFUSE,
    UUID,
    UUID_LIST,
    Field,
    Kind,
    common_id,
    name_field,
)
from midoflow.rest.app import make_app
from midoflow.store.base import Update
from midoflow.store.memory import MemoryStore
from tests.unit.conftest import ApiClient, FlakyStore, store_snapshot
from tests.unit.test_rest_kinds import _every_kind

RULES = (REFUSE, CASCADE, CLEAR)


def gadgets(target: str, rule: str, name: str = "gadgets") -> Kind:
    """A kind with one reference and one list of references to ``target``."""
    return Kind(
        name=name, label=name[:-1], schema=name.capitalize()[:-1],
        fields=(
            common_id(),
            name_field(),
            Field("thing_id", UUID, nullable=True, default=None, ref=target, on_delete=rule),
            Field("thing_ids", UUID_LIST, default=[], ref=target, on_delete=rule),
        ),
    )


class World:
    """The API over a memory store (``flaky.before_commit``: a concurrent writer)."""

    def __init__(self) -> None:
        self.mem = MemoryStore()
        self.flaky = FlakyStore(self.mem)
        self.api = ApiClient(make_app(self.flaky))

    def target(self, kind: str) -> dict:
        """A deletable object of a built-in kind (a port of its own bridge)."""
        if kind == model.PORTS:
            br = self.api.ok("POST", "/v1/bridges", {})
            return self.api.ok("POST", f"/v1/bridges/{br['id']}/ports", {})
        return self.api.ok("POST", f"/v1/{kind}", {})

    def gadget(self, **body) -> dict:
        return self.api.ok("POST", "/v1/gadgets", body)

    def exists(self, kind: str, oid: str) -> bool:
        return self.api.call("GET", f"/v1/{kind}/{oid}").status_int == 200


def declare(monkeypatch, *kinds: Kind) -> World:
    for k in kinds:
        monkeypatch.setitem(KINDS, k.name, k)
    return World()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("target", [model.PORTS, model.BRIDGES, model.ROUTERS])
def test_built_in_delete_applies_the_declared_rule(monkeypatch, target, rule):
    w = declare(monkeypatch, gadgets(target, rule))
    obj, other = w.target(target), w.target(target)
    one = w.gadget(name="one", thing_id=obj["id"])
    many = w.gadget(name="many", thing_ids=[other["id"], obj["id"]])
    unrelated = w.gadget(name="unrelated", thing_id=other["id"])
    before = store_snapshot(w.mem)

    resp = w.api.call("DELETE", f"/v1/{target}/{obj['id']}")

    if rule == REFUSE:
        assert resp.status_int == 409, resp.text
        assert resp.json["message"] == (
            f"{KINDS[target].label} {obj['id']} is referenced by gadgets {one['id']} "
            "(thing_id): change them first")
        assert store_snapshot(w.mem) == before  # nothing written
        return
    assert resp.status_int == 204, resp.text
    assert not w.exists(target, obj["id"])
    assert w.api.ok("GET", f"/v1/gadgets/{unrelated['id']}") == unrelated
    if rule == CASCADE:
        assert not w.exists("gadgets", one["id"]) and not w.exists("gadgets", many["id"])
    else:
        got = w.api.ok("GET", f"/v1/gadgets/{one['id']}")
        assert (got["thing_id"], got["version"]) == (None, one["version"] + 1)
        assert w.api.ok("GET", f"/v1/gadgets/{many['id']}")["thing_ids"] == [other["id"]]


@pytest.mark.parametrize("rule", [CASCADE, CLEAR])
@pytest.mark.parametrize("target", [model.PORTS, model.BRIDGES, model.ROUTERS])
def test_a_concurrent_change_of_the_referencing_object_fails_the_delete(
        monkeypatch, target, rule):
    w = declare(monkeypatch, gadgets(target, rule))
    obj = w.target(target)
    g = w.gadget(name="g", thing_id=obj["id"])
    # between the delete's reads and its commit, another request renames the gadget
    w.flaky.before_commit = lambda: w.api.ok("PUT", f"/v1/gadgets/{g['id']}",
                                             {"name": "renamed"})
    resp = w.api.call("DELETE", f"/v1/{target}/{obj['id']}")
    assert resp.status_int == 409, resp.text
    assert w.exists(target, obj["id"])
    got = w.api.ok("GET", f"/v1/gadgets/{g['id']}")
    assert (got["name"], got["thing_id"]) == ("renamed", obj["id"])


@pytest.mark.parametrize("target", [model.PORTS, model.BRIDGES, model.ROUTERS])
def test_a_reference_created_meanwhile_fails_a_refused_delete(monkeypatch, target):
    w = declare(monkeypatch, gadgets(target, REFUSE))
    obj = w.target(target)
    made = []
    w.flaky.before_commit = lambda: made.append(w.gadget(thing_id=obj["id"]))
    resp = w.api.call("DELETE", f"/v1/{target}/{obj['id']}")
    assert resp.status_int == 409, resp.text
    assert w.exists(target, obj["id"]) and w.exists("gadgets", made[0]["id"])


def test_cascades_recurse_through_special_deletes(monkeypatch):
    """Deleting a port deletes the routes through it (declared on routes); a kind
    cascading on routes goes too, and one cascading on that kind after it."""
    w = declare(monkeypatch, gadgets(model.ROUTES, CASCADE),
                gadgets("gadgets", CASCADE, name="widgets"))
    r = w.api.ok("POST", "/v1/routers", {})
    up = w.api.ok("POST", f"/v1/routers/{r['id']}/ports",
                  {"ip_address": "203.0.113.2", "prefix_len": 24})
    rt = w.api.ok("POST", f"/v1/routers/{r['id']}/routes",
                  {"dst_cidr": "0.0.0.0/0", "next_hop_port": up["id"],
                   "next_hop_gateway": "203.0.113.1"})
    g = w.gadget(thing_id=rt["id"])
    wid = w.api.ok("POST", "/v1/widgets", {"thing_id": g["id"]})
    w.api.ok("DELETE", f"/v1/ports/{up['id']}")
    assert [w.exists(k, o["id"]) for k, o in
            ((model.ROUTES, rt), ("gadgets", g), ("widgets", wid))] == [False] * 3
    assert w.api.ok("GET", f"/v1/routers/{r['id']}")["port_ids"] == []


def test_a_chain_delete_clears_references_to_its_rules(monkeypatch):
    w = declare(monkeypatch, gadgets(model.RULES, CLEAR))
    chain = w.api.ok("POST", "/v1/chains", {})
    rule = w.api.ok("POST", f"/v1/chains/{chain['id']}/rules", {"action": "accept"})
    g = w.gadget(thing_ids=[rule["id"]])
    w.api.ok("DELETE", f"/v1/chains/{chain['id']}")
    assert not w.exists(model.RULES, rule["id"])
    assert w.api.ok("GET", f"/v1/gadgets/{g['id']}")["thing_ids"] == []


def _racked_ports(monkeypatch) -> tuple[World, dict, dict, dict]:
    """Ports declared to be deleted with their rack; a protected port in one."""
    racks = Kind(name="racks", label="rack", schema="Rack", fields=(common_id(), name_field()))
    ports = KINDS[model.PORTS]
    racked = dataclasses.replace(ports, fields=ports.fields + (
        Field("rack_id", UUID, nullable=True, default=None, create=False, update=False,
              ref="racks", on_delete=CASCADE),))
    w = declare(monkeypatch, racks, racked)
    rack = w.api.ok("POST", "/v1/racks", {})
    br = w.api.ok("POST", "/v1/bridges", {})
    port = w.api.ok("POST", f"/v1/bridges/{br['id']}/ports",
                    {"mac": "02:00:00:00:00:01", "fixed_ips": ["10.0.0.5"],
                     "port_security_enabled": True})
    data, ver = w.mem.get(model.PORTS, port["id"])
    w.mem.commit([Update(model.PORTS, {**data, "rack_id": rack["id"]}, ver)])
    return w, rack, br, port


def test_a_cascade_into_a_built_in_kind_applies_its_own_rules(monkeypatch):
    w, rack, br, port = _racked_ports(monkeypatch)
    generated = [c["id"] for c in w.api.ok("GET", "/v1/chains") if c["generated"]]
    assert generated and port["inbound_filter_id"] in generated
    w.api.ok("DELETE", f"/v1/racks/{rack['id']}")
    assert not w.exists(model.PORTS, port["id"])
    assert w.api.ok("GET", f"/v1/bridges/{br['id']}")["port_ids"] == []
    assert [c for c in w.api.ok("GET", "/v1/chains") if c["id"] in generated] == []


def test_a_cascade_into_a_built_in_kind_meets_its_refusals(monkeypatch):
    w, rack, _, port = _racked_ports(monkeypatch)
    chain = w.api.ok("POST", "/v1/chains", {})
    rule = w.api.ok("POST", f"/v1/chains/{chain['id']}/rules",
                    {"action": "drop", "in_ports": [port["id"]]})
    resp = w.api.call("DELETE", f"/v1/racks/{rack['id']}")
    assert resp.status_int == 409
    assert resp.json["message"] == (f"port {port['id']} is matched by rules {rule['id']} "
                                    "(in_ports/out_ports): change them first")
    assert w.exists("racks", rack["id"]) and w.exists(model.PORTS, port["id"])


def test_every_delete_path_applies_the_declarations(monkeypatch):
    """A kind referencing every built-in kind (cascade): deleting one object of each,
    through its own route, deletes the gadget referencing it and no other."""
    names = [k for k in KINDS if k in model.KINDS]
    everything = Kind(name="gadgets", label="gadget", schema="Gadget", fields=(
        common_id(),
        *(Field(f"{k}_ref", UUID, nullable=True, default=None, ref=k, on_delete=CASCADE)
          for k in names)))
    w = declare(monkeypatch, everything)
    made = {k: o for k, o in _every_kind(w.api).items() if k != "gadgets"}
    w.api.ok("DELETE", f"/v1/gadgets/{w.api.ok('GET', '/v1/gadgets')[0]['id']}")
    gadget = {}
    for key, obj in made.items():
        kind = model.PORTS if key == "uplink" else key
        gadget[key] = w.gadget(**{f"{kind}_ref": obj["id"]})["id"]
    for key in reversed(list(made)):  # children first
        kind = model.PORTS if key == "uplink" else key
        w.api.ok("DELETE", f"/v1/{kind}/{made[key]['id']}")
        left = {g["id"] for g in w.api.ok("GET", "/v1/gadgets")}
        assert gadget[key] not in left, kind
        assert len(left) == len(gadget) - 1 - list(reversed(list(made))).index(key)
