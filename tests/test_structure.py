"""The shape the code keeps: a small top level, short functions, and dependencies that flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

from helpers import REPO

PACKAGES = ("distill", "teacher", "student")
MAX_TOP_LEVEL_MODULES = 15  # core (config, cost, stats, layout, ...) and the runners
MAX_FUNCTION_LINES = 40
MAX_FILE_LINES = 400  # past this a module does several jobs: split it by job rather than grow it


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`, which type checkers read and Python never runs."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (lazy imports inside functions count too)."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        names.update(c for c in candidates if c in modules)
    return names


def test_distill_top_level_is_small() -> None:
    top = [p for p in (REPO / "distill").glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(p.name for p in top)


def test_no_source_file_is_long() -> None:
    long = [f"{path.relative_to(REPO)} ({lines} lines)" for path in _modules().values()
            if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, long


def test_no_function_is_long() -> None:
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        # A package's __init__ importing its own submodules is how a package exposes them, not a cycle.
        graph.add_edges_from((name, target) for target in _imports(path, modules)
                             if not target.startswith(name + "."))
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, cycles


def test_imports_only_go_down(monkeypatch) -> None:
    """The layer contracts in pyproject.toml ([tool.importlinter]): teacher, student and the task types never
    import compare, study, serve, the pipeline or the CLI; core modules import none of them either."""
    from importlinter.cli import lint_imports

    monkeypatch.chdir(REPO)
    assert lint_imports(no_cache=True) == 0, "an import runs up a layer: run `lint-imports` to see which"


def test_nothing_branches_on_a_stage_name() -> None:
    """What runs stages (the CLI, the pipeline, status) asks each stage's declaration (its cost, whether it may
    keep its outputs, its results): a comparison with a stage's name there has found a missing field."""
    names = {"generate", "filter", "train", "compare"}
    found = []
    for path in (REPO / "distill" / f"{name}.py" for name in ("cli", "pipeline", "status", "stages")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                    isinstance(side, ast.Constant) and side.value in names for side in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, found
