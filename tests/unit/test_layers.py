"""The pure core stays pure: midoflow/sim and midoflow/nat import no os-ken,
kazoo, cassandra or eventlet code (directly or through another module)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = ("os_ken", "kazoo", "cassandra", "eventlet")


@pytest.mark.parametrize("package", ["sim", "nat"])
def test_no_forbidden_imports_in_source(package):
    for path in (ROOT / "midoflow" / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert not n.startswith(FORBIDDEN), f"{path.name} imports {n}"


@pytest.mark.parametrize("package", ["sim", "nat"])
def test_importing_the_core_loads_none_of_them(package):
    code = (f"import sys, pkgutil, importlib, midoflow.{package} as p\n"
            "for m in pkgutil.iter_modules(p.__path__):\n"
            f"    importlib.import_module('midoflow.{package}.' + m.name)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"midoflow.{package} loads {out}"
