"""The structure a newcomer relies on (../shared/design/ARCHITECTURE.md), checked from the source text:
imports point one way with no circle, project modules are imported at the top (the CLI alone imports
each command's heavy module in the command), no file in curation/ is over 400 lines, one build loop,
sources by registry."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "flows", "schemas", "training")
MAX_LINES = 400
# The CLI's lazy imports, one per command: the store loads torch (webdataset), the build ultralytics,
# `--engine prefect` Prefect and Dask, train/edit/evaluate diffusers. `--help` must not wait for them.
CLI = "flows.cli"


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = p
    return found


def imported(name: str, node: ast.AST, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def scan():
    """(top-level import edges between project modules, function-level project imports, all imports)."""
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    in_functions: list[tuple[str, str, int]] = []
    everything: dict[str, set[str]] = defaultdict(set)

    def visit(name, node, is_package, in_function):
        for child in ast.iter_child_nodes(node):
            if type_checking_only(child):
                continue  # annotations only: no import at run time
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = imported(name, child, is_package)
                everything[name].update(t.split(".")[0] for t in targets)
                ours = [t for t in targets if t in mods and t != name]
                if ours and in_function:
                    in_functions.append((name, ours[0], child.lineno))
                elif ours:
                    edges[name].update(ours)
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(name, child, is_package, inner)

    for name, path in mods.items():
        visit(name, ast.parse(path.read_text()), path.name == "__init__.py", False)
    return mods, edges, in_functions, everything


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
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

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            connect(v)
    return found


def test_no_import_circle_among_project_modules():
    _, edges, _, _ = scan()
    assert cycles(edges) == []


def test_project_modules_are_imported_at_the_top_except_the_clis_per_command_imports():
    _, _, in_functions, _ = scan()
    outside = [f"{m}:{line} imports {t}" for m, t, line in in_functions if m != CLI]
    assert outside == []
    cli = [(t, line) for m, t, line in in_functions if m == CLI]
    tree = ast.parse((ROOT / "flows" / "cli.py").read_text())
    per_function = defaultdict(list)
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                    per_function[fn.name].append(node.module)
    assert per_function and all(name.startswith("cmd_") or name == "print_summary" for name in per_function)
    # one heavy module per command (`build` also its Prefect engine's flow, only when that engine runs)
    assert {name: len(set(ms)) for name, ms in per_function.items() if len(set(ms)) > 1} == {"cmd_build": 2}
    assert len(cli) == sum(len(ms) for ms in per_function.values())


def test_imports_point_down():
    _, _, _, everything = scan()
    for name, tops in everything.items():
        if name.startswith("schemas"):
            assert not tops & {"curation", "flows", "training"}, name  # the contract imports nothing of ours
        if name.startswith("curation"):
            assert not tops & {"flows", "prefect", "prefect_dask"}, name  # curation runs without Prefect
    _, edges, _, _ = scan()
    for kind in ("folder", "kinetics", "ntu", "epic"):  # a dataset file imports sources/base.py and schemas only
        ours = {e for e in edges[f"curation.sources.{kind}"] if not e.startswith("schemas")}
        assert ours == {"curation.sources.base"}, kind


def test_no_file_in_curation_is_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "curation").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_one_build_loop_and_a_source_registry():
    mods, _, _, _ = scan()
    defined = defaultdict(list)
    for name, path in mods.items():
        for node in ast.parse(path.read_text()).body:  # module-level functions and classes
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined[node.name].append(name)
    assert "run_build" not in defined  # the loop is curation.build.build; the flow passes it an executor
    assert defined["build"] == ["curation.build"] and defined["build_dataset"] == ["flows.build"]
    from curation.sources import SOURCES

    for kind, cls in SOURCES.items():
        assert cls.model_fields["kind"].annotation.__args__ == (kind,)
        assert cls.__module__ == f"curation.sources.{kind}"  # one file per dataset, its settings beside it
