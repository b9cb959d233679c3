"""The shape of the code and the docs that describe it: checks that fail when they drift.

- the import graph of ``src/trackkit`` has no cycles (runtime imports, at any depth);
- ``trackkit.__all__`` and the lazy export map name the same things;
- every module under ``src/trackkit`` has a row in docs/architecture.md's module table;
- the capability tables in README.md and docs/backends.md say what each built-in backend
  declares in its ``Capabilities`` and ``Limits``.

Runs in the core env: backend modules import no SDK at module level.
"""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

import trackkit
from trackkit.backend import Capabilities, Limits
from trackkit.backends.mlflow import MLflowBackend
from trackkit.backends.neptune import NeptuneBackend
from trackkit.backends.wandb import WandbBackend

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
BACKENDS = {"mlflow": MLflowBackend, "wandb": WandbBackend, "neptune": NeptuneBackend}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "trackkit").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The trackkit modules ``path`` imports at run time (module level or inside functions)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test):  # annotations only: no import at run time
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level or not node.module:
                return
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_import_graph_has_no_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_all_and_the_lazy_export_map_agree() -> None:
    lazy = {name for names in trackkit._LAZY.values() for name in names}
    defined = {"__version__", "available_backends"}
    assert set(trackkit.__all__) == lazy | defined
    assert len(trackkit.__all__) == len(set(trackkit.__all__))
    for name in trackkit.__all__:
        assert getattr(trackkit, name) is not None


def _architecture_rows() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return set(re.findall(r"`(trackkit/[\w/]*\.py)`", text))


def test_every_module_has_a_row_in_the_architecture_table() -> None:
    rows = _architecture_rows()
    expected = {
        str(path.relative_to(SRC)) for path in _modules().values() if path.name != "__main__.py"
    }
    assert sorted(expected - rows) == [], "modules missing from docs/architecture.md"
    assert sorted(rows - expected - {"trackkit/__main__.py"}) == [], "rows for no module"


def _table(path: Path, first_cell: str) -> dict[str, dict[str, str]]:
    """The Markdown table whose rows start with a backticked field name: field -> backend -> cell."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tables: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in lines:
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        names = re.fullmatch(r"`\w+`( / `\w+`)*", cells[0])
        if names is None or not set(BACKENDS) <= set(header):
            continue
        keys = [k.strip("`") for k in cells[0].split(" / ")]  # `a` / `b`: values "1 / 2"
        for i, key in enumerate(keys):
            tables[key] = {
                b: cells[header.index(b)].split(" / ")[i]
                if len(keys) > 1
                else cells[header.index(b)]
                for b in BACKENDS
            }
    assert first_cell in tables, f"no capability table in {path}"
    return tables


def _expected(backend: type, field: str) -> str:
    if field in {f.name for f in fields(Capabilities)}:
        return "yes" if getattr(backend.capabilities, field) else "no"
    value = getattr(backend.limits, field)
    return "none" if value is None else str(value)


@pytest.mark.parametrize("page", ["README.md", "docs/backends.md"])
def test_capability_tables_match_what_backends_declare(page: str) -> None:
    table = _table(ROOT / page, "artifacts")
    declared = [f.name for f in fields(Capabilities)] + [
        f.name for f in fields(Limits) if f.name != "concurrent_batches"
    ]
    wrong = []
    for field in declared:
        assert field in table, f"{page} has no row for {field}"
        for name, backend in BACKENDS.items():
            cell = table[field][name].replace("`", "")
            expected = _expected(backend, field)
            if field == "key_invalid_chars" and cell == "same":
                cell = table[field]["mlflow"].replace("`", "")
            if not (cell == expected or re.match(rf"{re.escape(expected)}[ ,:]", cell)):
                wrong.append(f"{field}/{name}: says {cell!r}, declared {expected!r}")
    assert wrong == []
