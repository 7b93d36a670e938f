"""The package's shape: imports point one way (no cycle), and no module grows past a screenful
of screens."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "effbert"
MAX_LINES = 460


def import_graph() -> dict[str, set[str]]:
    """Module -> the effbert modules it imports (anywhere in the file)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "effbert":
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("effbert."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("effbert.")}
        graph[path.stem] = (names & modules) - {path.stem}
    return graph


def test_imports_form_no_cycle():
    try:
        order = list(TopologicalSorter(import_graph()).static_order())
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None
    assert order[0] != "cli" and "cli" in order


def test_no_effbert_import_inside_functions():
    """Imports between effbert's modules sit at the top of each file, where the graph shows
    them; an import hidden in a function is how a cycle hides."""
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                        "effbert"
                    ):
                        raise AssertionError(f"{path.name}: {node.name} imports {inner.module}")


def test_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert not {n: s for n, s in sizes.items() if s > MAX_LINES}, sizes
