"""The package's layers only point down: no import cycle among its modules, and the two faces (``api``,
``cli``) are imported by nothing inside it. Read from the source with ``ast`` (imports inside functions
count: a cycle held together by a late import is still a cycle)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jetvit_compile"
FACES = {"jetvit_compile.api", "jetvit_compile.cli"}
ROOT = "jetvit_compile"  # its __init__ re-exports the API: every import runs it, no module depends on it


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports, and the subpackages whose ``__init__`` that import runs."""
    here = name if _is_package(name, modules) else name.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    targets.add(f"{base}.{alias.name}")
                else:  # a name the root package re-exports is the API's
                    targets.add("jetvit_compile.api" if base == ROOT else base)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}  # running before this module
    edges = set()
    for t in targets:
        while t and t not in modules:  # `import a.b.c` of a function or class: its module
            t = t.rpartition(".")[0]
        if not t:
            continue
        parts = t.split(".")
        for i in range(2, len(parts) + 1):  # every other subpackage __init__ on the way runs too
            edges.add(".".join(parts[:i]))
        edges -= own - {t}
    edges.discard(name)
    edges.discard(ROOT)
    return edges


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    graph = _graph()
    assert "jetvit_compile.frontend" in graph["jetvit_compile.search.run"]
    assert "jetvit_compile.frontend.onnx_file" in graph["jetvit_compile.frontend.open"]  # a late import counts
    assert "jetvit_compile.passes.onnx.pipeline" in graph["jetvit_compile.frontend.onnx_file"]


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_inside_imports_the_faces():
    graph = _graph()
    inside = {m: deps & FACES for m, deps in graph.items() if m not in FACES | {ROOT} and deps & FACES}
    assert not inside, f"modules importing api/cli: {inside}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
