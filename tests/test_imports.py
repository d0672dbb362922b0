"""Dependencies inside gapkit point one way: no import cycle, lazy imports included.

The graph is read from the source (``ast``), so an import inside a function
counts as much as one at the top of a module. An edge goes from a module to
every gapkit module it names explicitly (``from .x import y`` is an edge to
``x``, or only to ``x.y`` when ``y`` is a submodule); the implicit import of
parent packages is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gapkit

ROOT = Path(gapkit.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node.level, node.module)
                subs = [
                    f"{target}.{alias.name}"
                    for alias in node.names
                    if f"{target}.{alias.name}" in modules
                ]
                # ``from . import sub`` names the submodule, not the package
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            for target in targets:
                if target in modules and target != module:
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    # estimator imports distributed only inside functions
    assert "gapkit.distributed" in graph["gapkit.estimator"]
    assert "gapkit.io" in graph["gapkit.estimator"]


def test_no_import_cycle_in_gapkit():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_numerical_modules_do_not_import_the_estimator():
    graph = import_graph()
    for module in (
        "gapkit.io",
        "gapkit.model",
        "gapkit.rows",
        "gapkit.gp",
        "gapkit.sparsify",
        "gapkit.hyperopt",
        "gapkit.prediction",
        "gapkit.calculator",
    ):
        assert "gapkit.estimator" not in graph[module], module
        assert "gapkit.cli" not in graph[module], module
