"""The import graph of graphopt's own modules, read from the source (graphopt/, and passes/ and calibration/ as
setup.cfg's package_dir installs them: graphopt.passes, graphopt.calibration): no module-level import cycle, and
the latency runtimes import nothing from the training side (calibration/), lazily or not."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"graphopt": ROOT / "graphopt", "graphopt.passes": ROOT / "passes",
            "graphopt.calibration": ROOT / "calibration"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """graphopt modules `path` imports (the module itself or, for `from X import Y`, X.Y when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules, top_level_only) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None (depth-first search, colouring modules in progress)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                return stack[stack.index(other):] + [other]
            if other not in state and (found := visit(other)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_walk_sees_the_packages_as_installed():
    graph = _graph(top_level_only=True)
    assert "graphopt.passes.drop_blocks" in graph and "graphopt.calibration.bridge.student" in graph
    assert "graphopt.subgraph" in graph["graphopt.calibration.bridge.student"]


def test_no_module_level_import_cycle():
    assert _cycle(_graph(top_level_only=True)) is None


@pytest.mark.parametrize("package", ["graphopt.runtime"])
def test_the_runtimes_import_nothing_from_the_training_side(package):
    graph = _graph(top_level_only=False)
    reaching = {module: sorted(m for m in imports if m.startswith("graphopt.calibration"))
                for module, imports in graph.items() if module.startswith(package)}
    assert not {module: found for module, found in reaching.items() if found}
