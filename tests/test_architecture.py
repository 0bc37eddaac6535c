"""The package's structure: imports go one way, through the layers, and no module imports
itself back through others (a cycle hidden by a lazy import included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kdcrowd"

#: Every module's layer; a module may import its own layer and the layers below it only.
LAYERS: dict[str, int] = {}
_LAYER_OF = [
    (0, ["kdcrowd.config", "kdcrowd.io", "kdcrowd.distributed", "kdcrowd.outdir"]),
    (1, ["kdcrowd.data", "kdcrowd.aggregation", "kdcrowd.aggregators", "kdcrowd.metrics", "kdcrowd.spreading"]),
    (2, ["kdcrowd.models", "kdcrowd.losses", "kdcrowd.students"]),
    (3, ["kdcrowd.training", "kdcrowd.cuda_graphs", "kdcrowd.checkpoint", "kdcrowd.objectives", "kdcrowd.evaluate", "kdcrowd.persist"]),
    (4, ["kdcrowd.framework", "kdcrowd.teacher_outputs"]),
    (5, ["kdcrowd.methods"]),
    # the package itself (its lazy KDCrowdClassifier) and `python -m kdcrowd` are doors
    (6, ["kdcrowd", "kdcrowd.__main__", "kdcrowd.doors", "kdcrowd.report", "kdcrowd.crowdfit", "kdcrowd.estimator", "kdcrowd.cli", "kdcrowd.cli_checks"]),
]
LAYER_NAMES = ["foundation", "data", "models", "engine", "framework", "runners", "doors"]


def layer(module: str) -> int:
    best, level = "", -1
    for lv, prefixes in _LAYER_OF:
        for p in prefixes:
            inside = module == p or (p != "kdcrowd" and module.startswith(p + "."))  # the root package: itself only
            if inside and len(p) > len(best):
                best, level = p, lv
    if level < 0:
        raise AssertionError(f"module {module} has no layer: add it to tests/test_architecture.py")
    return level


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """kdcrowd modules ``name`` imports anywhere in its file (inside functions too)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the module pkg.sub; `from pkg import name`, pkg
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {m: imports_of(m, p, known) for m, p in mods.items()}
    # importing a submodule runs its package's __init__: not an edge of its own
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in g.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for t in sorted(g.get(n, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                c = visit(t)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_go_one_way_through_the_layers() -> None:
    wrong = [
        f"{m} ({LAYER_NAMES[layer(m)]}) imports {t} ({LAYER_NAMES[layer(t)]})"
        for m, ts in sorted(graph().items()) for t in sorted(ts) if layer(t) > layer(m)
    ]
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_layer() -> None:
    for m in modules():
        layer(m)


@pytest.mark.parametrize("source,expected", [
    ("from . import metrics\n", {"kdcrowd.metrics"}),
    ("def f():\n    from .framework import KDCrowd\n", {"kdcrowd.framework"}),
    ("import kdcrowd.training\n", {"kdcrowd.training"}),
])
def test_imports_are_read_inside_functions_too(tmp_path: Path, source: str, expected: set[str]) -> None:
    p = tmp_path / "x.py"
    p.write_text(source)
    assert imports_of("kdcrowd.x", p, set(modules())) == expected
