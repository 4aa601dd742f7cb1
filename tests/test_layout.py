"""The package stays readable: sizes a newcomer can take in, and no import cycles
(imports made inside functions count: they hide the same coupling). Pure: reads the source."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tuner"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "models" in rel.parts:
            continue  # the bundled models run inside the server, not in tuner
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    here = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return names


def test_no_import_cycles():
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = _imported(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
        graph[name] = {d for d in deps if d in mods and d != name}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None


def test_sizes():
    too_big = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_big.append(f"module {name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    too_big.append(f"{name}.{node.name}: {lines} lines (limit {limit})")
    assert not too_big, too_big


def test_cycle_check_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from tuner.b import x\n")
    assert "tuner.b" in _imported(tree, "tuner.a", False)
    tree = ast.parse("from . import c\n")
    assert "tuner.pkg.c" in _imported(tree, "tuner.pkg.d", False)
