"""The kind declarations: the generated OpenAPI document is the checked-in one, and each
declaration agrees with the model dataclass the agent and the simulation read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from midoflow import model
from midoflow.kinds import KINDS
from midoflow.kinds import openapi as gen
from midoflow.kinds.base import TYPES, Field

REGENERATE = "python -m midoflow.kinds.openapi > midoflow/rest/openapi.yaml"
CHECKED_IN = Path(gen.__file__).parents[1] / "rest" / "openapi.yaml"


def test_checked_in_openapi_is_what_the_generator_prints():
    assert CHECKED_IN.read_text(encoding="utf-8") == gen.render(), (
        f"midoflow/rest/openapi.yaml differs from the declarations: run `{REGENERATE}`")


def test_every_kind_is_declared_once():
    assert tuple(KINDS) == model.KINDS
    assert len({k.schema for k in KINDS.values()}) == len(KINDS)


@pytest.mark.parametrize("name", model.KINDS)
def test_declaration_matches_the_dataclass(name):
    kind = KINDS[name]
    cls = type(model.from_dict(name, _minimal(kind)))
    dc = {f.name: f for f in dataclasses.fields(cls)}
    assert set(kind.stored) == set(dc), (
        f"{name}: declared stored fields {sorted(kind.stored)} but {cls.__name__} has "
        f"{sorted(dc)}: change one of them")
    for f in kind.fields:
        if f.computed or not f.has_default or f.name not in dc:
            continue
        want = dc[f.name].default
        if want is dataclasses.MISSING:
            continue
        got = tuple(f.default) if isinstance(f.default, list) else f.default
        assert got == want, f"{name}.{f.name}: declared default {got!r}, dataclass {want!r}"


def _minimal(kind) -> dict:
    """A stored object with every required dataclass argument set."""
    return {f.name: ([] if f.type.endswith("list") else 0 if f.type in ("integer", "asn")
                     else "x") for f in kind.fields if not f.computed and f.type != "object"}


def test_references_name_declared_kinds():
    for kind in KINDS.values():
        for f in kind.refs:
            for target in f.ref.split("|"):
                assert target in KINDS, f"{kind.name}.{f.name} references {target}"


def test_a_field_of_unknown_type_is_refused():
    assert "string" in TYPES
    with pytest.raises(ValueError, match="unknown type"):
        Field("x", "float")
    with pytest.raises(ValueError, match="needs its schema"):
        Field("x", "object")


def test_generated_paths_cover_crud():
    doc = gen.document()
    for kind in KINDS.values():
        item = doc["paths"][f"/v1/{kind.name}/{{id}}"]
        assert {"get", "delete"} <= set(item)
        assert ("put" in item) == kind.updatable
        assert ("post" in doc["paths"][f"/v1/{kind.name}"]) == kind.top_create
        schema = doc["components"]["schemas"][kind.schema]
        assert schema["required"] == list(kind.output) + ["version"]


def test_every_field_type_has_one_checker():
    from midoflow.kinds import base
    from midoflow.service import body

    assert set(body._CHECKS) == set(base.TYPES)
