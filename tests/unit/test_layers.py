"""One direction of imports, enforced over every package of ``midoflow/``.

Every ``import`` in the source is read from the AST, at module level and
inside functions; imports under ``if TYPE_CHECKING:`` do not count. Rules:

* ``sim`` and ``nat`` (the pure core) load no os-ken, kazoo, cassandra or
  eventlet code, and do not import each other in a loop;
* ``agent`` imports neither os-ken, kazoo, cassandra nor ``midoflow.apps``;
* ``bgp`` does not import ``midoflow.apps``; ``service`` imports no os-ken;
* ``neutron`` imports no os-ken, kazoo, cassandra or ``midoflow.apps``, and its
  translation modules (``translate_*``) neither the store nor the service;
* no import cycle between modules at module level anywhere in ``midoflow/``.

"Imports" here is what a package's modules import (at any level) plus what
importing those modules loads in turn (their module-level imports): a
function-level import in *another* module is a lazy factory and is followed
only when that module belongs to the package checked.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PKG = ROOT / "midoflow"
FORBIDDEN = ("os_ken", "kazoo", "cassandra", "eventlet")


@dataclass(frozen=True)
class Edge:
    src: str  # importing module, e.g. midoflow.sim.chains
    dst: str  # imported module: a midoflow module, or the third-party name as written
    line: int
    top: bool  # executed when ``src`` is imported (not inside a function)

    def __str__(self) -> str:
        where = "" if self.top else " (in a function)"
        return f"{self.src} -> {self.dst} ({_rel(self.src)}:{self.line}{where})"


def _rel(module: str) -> str:
    return str(_modules()[module].relative_to(ROOT))


@functools.cache
def _modules() -> dict[str, pathlib.Path]:
    """Every module of midoflow/ by dotted name (packages by their name)."""
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(name: str) -> str:
    """The midoflow module a dotted name lands in (its longest known prefix)."""
    mods = _modules()
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in mods:
            return ".".join(parts[:i])
    return name


def _imports(module: str) -> list[Edge]:
    path = _modules()[module]
    is_pkg = path.name == "__init__.py"
    edges: list[Edge] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, top)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                edges.append(Edge(module, _targets(alias.name), node.lineno, top))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_pkg, node)
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule when there is one
                sub = f"{base}.{alias.name}"
                dst = sub if sub in _modules() else _targets(base)
                edges.append(Edge(module, dst, node.lineno, top))
        inner = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return edges


@functools.cache
def _all_edges() -> tuple[Edge, ...]:
    return tuple(dict.fromkeys(e for m in _modules() for e in _imports(m)))


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _reached(package: str) -> dict[str, list[Edge]]:
    """Every module the package's modules import, with the chain of edges that
    leads there (see the module docstring for which edges are followed)."""
    by_src: dict[str, list[Edge]] = {}
    for e in _all_edges():
        by_src.setdefault(e.src, []).append(e)
    chains: dict[str, list[Edge]] = {}
    todo = [(m, []) for m in _modules() if _in(m, package)]
    seen = {m for m, _ in todo}
    while todo:
        mod, chain = todo.pop(0)
        for e in by_src.get(mod, ()):
            if not (e.top or _in(mod, package)):
                continue
            if e.dst not in chains and not _in(e.dst, package):
                chains[e.dst] = [*chain, e]
            if e.dst in _modules() and e.dst not in seen:
                seen.add(e.dst)
                todo.append((e.dst, [*chain, e]))
    return chains


def _violations(package: str, banned: tuple[str, ...]) -> list[str]:
    """One chain of imports per (first module, banned name) that breaks the rule."""
    out: dict[tuple[str, str], str] = {}
    for dst, chain in sorted(_reached(package).items()):
        hit = next((b for b in banned if _in(dst, b)), None)
        if hit:
            out.setdefault((chain[0].src, hit), " ; ".join(str(e) for e in chain))
    return list(out.values())


@pytest.mark.parametrize(("package", "banned"), [
    ("midoflow.sim", FORBIDDEN),
    ("midoflow.nat", FORBIDDEN),
    ("midoflow.dhcp", FORBIDDEN + ("midoflow.store", "midoflow.apps")),
    ("midoflow.lb", FORBIDDEN + ("midoflow.store", "midoflow.apps")),
    ("midoflow.agent", ("os_ken", "kazoo", "cassandra", "midoflow.apps")),
    ("midoflow.bgp", ("midoflow.apps",)),
    ("midoflow.service", ("os_ken",)),
    ("midoflow.neutron", ("os_ken", "kazoo", "cassandra", "midoflow.apps")),
    ("midoflow.neutron.translate_l2", FORBIDDEN + ("midoflow.store", "midoflow.service")),
    ("midoflow.neutron.translate_l3", FORBIDDEN + ("midoflow.store", "midoflow.service")),
    ("midoflow.neutron.query", FORBIDDEN + ("midoflow.store", "midoflow.service")),
])
def test_package_does_not_import(package, banned):
    bad = _violations(package, banned)
    assert not bad, f"{package} must not import {', '.join(banned)}:\n  " + "\n  ".join(bad)


def test_sim_and_nat_do_not_import_each_other_in_a_loop():
    def direct(a: str, b: str) -> list[str]:
        return [str(e) for e in _all_edges() if _in(e.src, a) and _in(e.dst, b)]

    there, back = direct("midoflow.sim", "midoflow.nat"), direct("midoflow.nat", "midoflow.sim")
    assert not (there and back), ("midoflow.sim and midoflow.nat import each other; keep one "
                                  "direction:\n  " + "\n  ".join(there + back))


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module
    importing itself (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _cycle_path(comp: list[str], edges: list[Edge]) -> list[Edge]:
    """One concrete loop through the component, from its first module back to it."""
    inside = set(comp)
    start = comp[0]
    prev: dict[str, Edge] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for e in edges:
            if e.src != v or e.dst not in inside:
                continue
            if e.dst == start:
                path = [e]
                while path[0].src != start:
                    path.insert(0, prev[path[0].src])
                return path
            if e.dst not in prev:
                prev[e.dst] = e
                todo.append(e.dst)
    return []


def _cycle_report(edges: list[Edge]) -> tuple[list[list[str]], str]:
    cycles = _cycles(edges)
    msgs = [f"{' <-> '.join(c)}:\n    " + "\n    ".join(str(e) for e in _cycle_path(c, edges))
            for c in cycles]
    return cycles, "import cycles in midoflow/:\n  " + "\n  ".join(msgs)


def _internal(e: Edge) -> bool:
    return e.dst in _modules() and e.dst != "midoflow"


def test_no_import_cycle_at_module_level():
    cycles, msg = _cycle_report([e for e in _all_edges() if e.top and _internal(e)])
    assert not cycles, msg


def test_no_cycle_hidden_by_a_function_level_import():
    """Moving one import of a cycle into a function makes it load, not go away:
    the two modules still depend on each other."""
    cycles, msg = _cycle_report([e for e in _all_edges() if _internal(e)])
    assert not cycles, msg


def test_the_checker_sees_what_it_must():
    """The rules above would catch a violation: the graph holds the real
    edges (e.g. the agent's os-ken glue imports os_ken and the agent core)."""
    edges = {(e.src, e.dst) for e in _all_edges()}
    assert ("midoflow.apps.agent", "os_ken") in {(s, d.split(".")[0]) for s, d in edges}
    assert any(s == "midoflow.apps.agent" and _in(d, "midoflow.agent") for s, d in edges)
    assert _cycles([Edge("a", "b", 1, True), Edge("b", "c", 2, True),
                    Edge("c", "a", 3, True), Edge("c", "d", 4, True)]) == [["a", "b", "c"]]
    assert any(_in(d, "os_ken") for d in _reached("midoflow.apps"))


@pytest.mark.parametrize("package", ["sim", "nat", "dhcp"])
def test_importing_the_core_loads_none_of_them(package):
    code = (f"import sys, pkgutil, importlib, midoflow.{package} as p\n"
            "for m in pkgutil.iter_modules(p.__path__):\n"
            f"    importlib.import_module('midoflow.{package}.' + m.name)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"midoflow.{package} loads {out}"
