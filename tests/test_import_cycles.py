"""No module of the project imports itself back through other modules (no import cycle).

The graph is read from the source with :mod:`ast`, not by importing anything:

* nodes are the modules of ``nas``, ``search_spaces``, ``scaling`` (packages as their
  ``__init__``) and ``cli``;
* an edge A → B for **every** ``import`` / ``from ... import`` statement in A that names B,
  wherever it stands: at module level, inside functions and methods, under ``if`` / ``try``.
  Function-level imports are counted on purpose: a lazy import hides a cycle from Python's
  import machinery but not from a reader, and moving it to the top of the module must stay
  possible. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the
  project, else to ``pkg``; relative imports are resolved against the importing module;
* importing ``a.b.c`` is an edge to ``a.b.c`` only, not to its parent packages (Python runs the
  parents' ``__init__`` first, but a package that imports its own submodules is not a cycle);
* imports of modules outside the project are ignored, and so are dynamic imports
  (``importlib.import_module("...")``), which are not import statements.

A strongly connected component with more than one module (or a module importing itself) is a
cycle; the failure message lists each with the statements (file:line) that close it.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "search_spaces", "scaling")
MODULES = ("cli",)


def project_modules(root: Path, packages: Iterable[str] = PACKAGES,
                    modules: Iterable[str] = MODULES) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is_package)}`` for every ``.py`` file of ``packages`` plus ``modules``."""
    out: dict[str, tuple[Path, bool]] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            out[".".join(parts)] = (path, is_pkg)
    for name in modules:
        path = root / f"{name}.py"
        if path.is_file():
            out[name] = (path, False)
    return out


def _known(name: str, modules: Mapping[str, object]) -> str | None:
    """The longest prefix of ``name`` that is a project module (``nas.genome.Genome`` → ``nas.genome``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(name: str, path: Path, is_pkg: bool,
                 modules: Mapping[str, object]) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement anywhere in the file."""
    package = name if is_pkg else name.rpartition(".")[0]
    edges: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_known(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in modules else _known(source, modules))
        else:
            continue
        edges.extend((t, node.lineno) for t in targets if t is not None)
    return edges


def import_graph(modules: Mapping[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line importing it}}``."""
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_pkg) in modules.items():
        targets: dict[str, int] = {}
        for target, line in import_edges(name, path, is_pkg, modules):
            targets.setdefault(target, line)
        graph[name] = targets
    return graph


def cycles(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """Strongly connected components that are cycles (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return sorted(found)


def describe(component: list[str], graph: Mapping[str, Mapping[str, int]],
             modules: Mapping[str, tuple[Path, bool]]) -> str:
    inside = set(component)
    lines = [" <-> ".join(component)]
    for name in component:
        path = modules[name][0].relative_to(ROOT) if modules[name][0].is_relative_to(ROOT) else modules[name][0]
        for target, line in sorted(graph[name].items()):
            if target in inside:
                lines.append(f"    {path}:{line}: {name} imports {target}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ tests

def test_the_project_has_no_import_cycle():
    modules = project_modules(ROOT)
    assert {"cli", "nas.search._config", "scaling.family", "search_spaces._elan"} <= set(modules)
    graph = import_graph(modules)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(c, graph, modules) for c in found)


def test_the_checker_finds_cycles_through_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")            # package → own submodule: fine
    (pkg / "a.py").write_text("import os\nfrom pkg import b\n\ndef f():\n    return b\n")
    (pkg / "b.py").write_text("def g():\n    from .sub.c import h\n    return h\n")  # function-level, relative
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import f as h\n")        # closes a → b → sub.c → a
    (pkg / "d.py").write_text("import pkg.d\n")                         # imports itself
    (pkg / "e.py").write_text("from pkg.a import f\nfrom pkg.sub import c\n")  # into the cycle, not part of it
    (tmp_path / "tool.py").write_text("from pkg import e\n")
    modules = project_modules(tmp_path, packages=("pkg",), modules=("tool",))
    graph = import_graph(modules)
    assert graph["pkg.b"] == {"pkg.sub.c": 2}
    assert graph["pkg.sub.c"] == {"pkg.a": 1}
    assert graph["tool"] == {"pkg.e": 1}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.d"]]

    (pkg / "sub" / "c.py").write_text("h = None\n")
    assert cycles(import_graph(project_modules(tmp_path, packages=("pkg",), modules=("tool",)))) == [["pkg.d"]]
