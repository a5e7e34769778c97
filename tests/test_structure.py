"""The shape of the code: layers without cycles, modules of a readable size, no hidden imports of our own.

The layer contracts themselves are import-linter's (pyproject.toml, run by `make lint`); these tests
check what it does not: cycles, module length, and function-level imports of first-party modules
(which hide a cycle or a heavy import from anyone reading the top of the file).
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
FIRST_PARTY = ("engine", "dashboard")


def python_files() -> list[Path]:
    files = [*(ROOT / "engine").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py"), ROOT / "streamlit_app.py"]
    return sorted(f for f in files if ".venv" not in f.parts)


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_longer_than_the_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concept (limit {MAX_LINES})"


def _deferred_first_party(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module and inner.module.split(".")[0] in FIRST_PARTY:
                    found.append(f"line {inner.lineno}: from {inner.module} import ...")
                elif isinstance(inner, ast.Import):
                    found += [
                        f"line {inner.lineno}: import {a.name}"
                        for a in inner.names
                        if a.name.split(".")[0] in FIRST_PARTY
                    ]
    return found


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_our_own_modules_are_imported_at_the_top_never_inside_a_function(path):
    assert _deferred_first_party(ast.parse(path.read_text())) == []


def test_the_engine_and_dashboard_have_no_import_cycles():
    graph = grimp.build_graph("engine", "dashboard", include_external_packages=False)
    modules = sorted(graph.modules)
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in graph.modules} for m in modules}
    # a module importing its own package's __init__ is not a cycle in the sense that matters here
    state, stack, cycles = {}, [], []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in modules:
        if m not in state:
            visit(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module defines itself at its top level (functions, classes, assignments), not ones it imports."""
    names: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            body += [
                *node.body,
                *getattr(node, "orelse", []),
                *getattr(node, "finalbody", []),
                *(s for h in getattr(node, "handlers", []) for s in h.body),
            ]
    return names


def _module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def importing_files() -> list[Path]:
    extra = [*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    return python_files() + sorted(extra)


@pytest.mark.parametrize("path", importing_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_name_is_imported_from_the_module_that_defines_it(path):
    """No re-exports: `from engine.runs.store import RunState` would work while store imports RunState, and
    break (or mislead a reader about where RunState lives) the day it stops."""
    wrong = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] in FIRST_PARTY
        ):
            continue
        source = _module_file(node.module)
        if source is None:
            continue  # a module that does not exist fails at import, loudly enough
        defined = _defined_names(ast.parse(source.read_text()))
        for alias in node.names:
            if alias.name not in defined and _module_file(f"{node.module}.{alias.name}") is None:
                wrong.append(f"line {node.lineno}: {alias.name} is not defined in {node.module}")
    assert wrong == []


def described_modules() -> set[str]:
    """The modules docs/ARCHITECTURE.md's module table names: a row's first cell holds one path, or a path
    followed by the names of other modules in the same folder (`engine/cli/runs.py`, `train.py`, ...)."""
    described = set()
    for line in (ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        names = [part.split("`")[1] for part in line.split("|")[1].split(",") if "`" in part]
        folder = Path(names[0]).parent
        described |= {names[0], *(str(folder / n) for n in names[1:])}
    return described


def test_the_architecture_page_describes_every_module_and_no_module_that_is_gone():
    modules = {str(p.relative_to(ROOT)) for p in python_files() if p.name != "__init__.py"}
    described = {m for m in described_modules() if m.endswith(".py")}
    assert sorted(modules - described) == [], "modules docs/ARCHITECTURE.md does not describe"
    assert sorted(described - modules) == [], "modules docs/ARCHITECTURE.md describes that do not exist"


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path):
    """A `_name` is its module's own business: a name another module needs is public (and documented)."""
    ours = ("engine", "dashboard")
    tree = ast.parse(path.read_text())
    imported = [
        f"line {n.lineno}: from {n.module} import {a.name}"
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in ours
        for a in n.names
        if a.name.startswith("_") and not a.name.startswith("__")
    ]
    modules = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in ours
        for a in n.names
        if _module_file(f"{n.module}.{a.name}") is not None
    }
    reached = [
        f"line {n.lineno}: {n.value.id}.{n.attr}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules
        and n.attr.startswith("_") and not n.attr.startswith("__")
    ]  # fmt: skip
    assert imported + reached == []
