"""The shape of the house: no import cycles, the engine never reaches up, and rooms stay small."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "litserve"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def imported(tree: ast.AST, known: set[str], top_level_only: bool) -> set[str]:
    """The litserve modules `tree` imports (at module level only, or anywhere)."""
    nodes = tree.body if top_level_only and isinstance(tree, ast.Module) else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("litserve"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names & known


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    path: list[str] = []
    seen: set[str] = set()

    def walk(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in seen:
            return None
        seen.add(name)
        path.append(name)
        for nxt in sorted(graph[name]):
            found = walk(nxt)
            if found:
                return found
        path.pop()
        return None

    return walk(start)


def test_the_package_has_no_import_cycle() -> None:
    trees = modules()
    graph = {name: imported(tree, set(trees), top_level_only=True) - {name} for name, tree in trees.items()}
    for name in graph:
        assert cycle_from(name, graph) is None


def test_nothing_under_engine_imports_the_web_runtime_process_or_server_code() -> None:
    trees = modules()
    above = ("litserve.web", "litserve.runtime", "litserve.process", "litserve.server")
    for name, tree in trees.items():
        if name.startswith("litserve.engine"):
            reaching_up = {m for m in imported(tree, set(trees), top_level_only=False) if m.startswith(above)}
            assert not reaching_up, f"{name} imports {sorted(reaching_up)}"


def functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement (docstring included) to the end: a facade's long list of keyword
    parameters is a declaration, not logic, so the signature does not count."""
    return (function.end_lineno or function.lineno) - function.body[0].lineno + 1


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES
    long = [f.name for f in functions(ast.parse(source)) if body_lines(f) >= MAX_FUNCTION_LINES]
    assert not long, f"functions of {MAX_FUNCTION_LINES}+ lines in {path.name}: {long}"


def test_a_cycle_and_a_reach_up_would_be_found() -> None:
    """The checks above can fail: a made-up graph with a cycle is caught."""
    assert cycle_from("a", {"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    tree = ast.parse("def f():\n    from litserve.process import ProcessWorkers\n")
    assert imported(tree, {"litserve.process"}, top_level_only=False) == {"litserve.process"}
    assert imported(tree, {"litserve.process"}, top_level_only=True) == set()
