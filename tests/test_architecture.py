"""The package's import graph keeps the house readable (docs/architecture.md, issue #20).

Built from the source with ``ast``: every ``import`` and ``from`` at any level (function bodies
and ``if TYPE_CHECKING:`` blocks included), so a circle or an upward edge cannot hide in a
function. No model is needed.

The longest chain is bounded on the imports that run (``if TYPE_CHECKING:`` blocks left out): at
most 8 modules, issue #20's target. Counting the type-only imports too it is longer (the kinds'
protocols, the handle's golden source, the commands' registry types); that bound only keeps it
from growing.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import pytest_smallmodel

PACKAGE = "pytest_smallmodel"
ROOT = Path(pytest_smallmodel.__file__).resolve().parent
# Lowest first: a module may import from its own folder and the folders before it. plugin/ and
# cli/ are the two front doors, side by side: neither imports the other.
LAYERS = ("common", "pins", "goldens", "evaluation", "drift", "engine")
FRONTS = ("plugin", "cli")
# Outside the front doors nothing may need the test runner or the command-line toolkit.
FRONT_ONLY = ("pytest", "_pytest", "click", "syrupy")
LONGEST_CHAIN = 8  # imports that run
# Every import: 14 before issue #20 too; 15 since a verdict names its triage (a type-only import).
LONGEST_CHAIN_WITH_TYPES = 15


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _type_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }


def _imported(module: str, path: Path, *, types: bool = True) -> Iterator[tuple[str, int]]:
    """Every module name an import statement in ``path`` names, with its line (``types``:
    also those in ``if TYPE_CHECKING:`` blocks)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text("utf-8"), str(path))
    skipped = set() if types else _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_package else -1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:  # ``from package import module`` names the module
                yield f"{target}.{alias.name}", node.lineno


@functools.cache
def _graph(types: bool = True) -> dict[str, dict[str, int]]:
    """module -> {module of this package it imports: line of the first such import}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in _imported(module, path, types=types):
            if name.split(".")[0] != PACKAGE:
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name != module and name in modules:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package root)"


def _where(module: str, target: str) -> str:
    path = _modules()[module].relative_to(ROOT.parent)
    return f"{path}:{_graph()[module][target]} imports {target}"


def test_the_graph_sees_the_package() -> None:
    graph = _graph()
    assert len(graph) > 50
    assert "pytest_smallmodel.common.errors" in graph["pytest_smallmodel.pins.project"]
    assert {_folder(m) for m in graph} <= {*LAYERS, *FRONTS, "(package root)"}, (
        "a new folder must be placed in LAYERS or FRONTS (and in docs/architecture.md)"
    )


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                circles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
    assert not circles, "import circle(s):\n" + "\n".join(" -> ".join(c) for c in circles)


def _rank(module: str) -> int:
    folder = _folder(module)
    if folder in LAYERS:
        return LAYERS.index(folder)
    if folder in FRONTS:
        return len(LAYERS)
    return len(LAYERS)  # the package root: what users import, re-exported from below


def test_no_module_imports_one_from_a_folder_above_it() -> None:
    upward = [
        f"{_where(module, target)}: {_folder(module)}/ is below {_folder(target)}/"
        for module, targets in _graph().items()
        for target in targets
        if _rank(target) > _rank(module)
        or (
            _folder(module) in FRONTS
            and _folder(target) in FRONTS
            and _folder(module) != _folder(target)
        )
    ]
    assert not upward, "upward import(s):\n" + "\n".join(upward)


def test_the_package_root_is_imported_by_no_module() -> None:
    # Everything imports its own layer; the root re-exports for users and must stay a leaf's
    # parent, not a step in every chain (``__version__`` lives in common/version.py).
    importers = [_where(m, PACKAGE) for m, targets in _graph().items() if PACKAGE in targets]
    assert not importers, "\n".join(importers)


def test_core_modules_import_no_test_runner_or_command_line_toolkit() -> None:
    found = []
    for module, path in _modules().items():
        if _folder(module) in FRONTS:
            continue
        for name, line in _imported(module, path):
            if name.split(".")[0] in FRONT_ONLY:
                found.append(f"{path.relative_to(ROOT.parent)}:{line} imports {name}")
    assert not found, "core module(s) importing a front-door library:\n" + "\n".join(found)


def _longest_chain(graph: Mapping[str, Mapping[str, int]]) -> list[str]:
    @functools.cache
    def from_(module: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for target in sorted(graph[module]):
            chain = from_(target)
            if len(chain) > len(best):
                best = chain
        return (module, *best)

    return list(max((from_(m) for m in sorted(graph)), key=len))


@pytest.mark.parametrize(
    ("types", "bound"), [(False, LONGEST_CHAIN), (True, LONGEST_CHAIN_WITH_TYPES)]
)
def test_the_longest_chain_of_imports_is_short(types: bool, bound: int) -> None:
    chain = _longest_chain(_graph(types))
    shown = " -> ".join(m.removeprefix(PACKAGE + ".") for m in chain)
    counted = "every import" if types else "imports that run"
    assert len(chain) <= bound, (
        f"the longest chain of {counted} has {len(chain)} modules (at most {bound}): {shown}"
    )


def test_the_chain_measure_counts_modules() -> None:
    graph = {"a": {"b": 1, "c": 1}, "b": {"c": 1}, "c": {}}
    assert _longest_chain(graph) == ["a", "b", "c"]
