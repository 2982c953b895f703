"""The layering rules of DESIGN.md, checked from the imports (ast: nothing is imported to check them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "mpibench"
HEAVY = ("torch", "transformers", "mpi4py")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and ast.unparse(test).endswith("TYPE_CHECKING")


def _walk(node: ast.AST, top_level: bool):
    """Import statements under `node`; with top_level, only those that run when the module is imported."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif top_level and (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                            or _is_type_checking(child)):
            continue
        else:
            yield from _walk(child, top_level)


def imports(path: Path, top_level: bool = False) -> list[tuple[str, list[str]]]:
    """(module, [names]) for every import in a file: `import a.b` -> ("a.b", []), relative ones resolved."""
    here = module_name(path) if path.is_relative_to(PACKAGE) else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in _walk(ast.parse(path.read_text(), str(path)), top_level):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
            continue
        base = node.module or ""
        if node.level:
            parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{parent}.{base}" if base else parent
        out.append((base, [a.name for a in node.names]))
    return out


def _targets(module: str, names: list[str]) -> set[str]:
    """The mpibench modules an import loads: the module, its parent packages, submodules named in it."""
    parts = module.split(".")
    found = {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
    found |= {f"{module}.{n}" for n in names}
    return {m for m in found if m in MODULES}


def loaded_at_import(module: str) -> dict[str, list[str]]:
    """Every mpibench module importing `module` loads (module-level imports, followed through mpibench),
    each with the outside top-level packages it imports at module level."""
    seen: dict[str, list[str]] = {}
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        found = imports(MODULES[m], top_level=True)
        seen[m] = sorted({name.split(".")[0] for name, _ in found})
        for name, names in found:
            todo += sorted(_targets(name, names) - seen.keys())
    return seen


def heavy_chains(module: str, banned: tuple[str, ...]) -> list[str]:
    """Which modules make importing `module` import a banned package."""
    return [f"{m} imports {b}" for m, tops in loaded_at_import(module).items() for b in banned if b in tops]


def _under(prefix: str) -> list[str]:
    return [m for m in MODULES if m == prefix or m.startswith(prefix + ".")]


def test_only_the_cluster_package_and_run_talk_mpi():
    allowed = set(_under("mpibench.cluster")) | {"mpibench.run"}
    offenders = [m for m, p in MODULES.items() if m not in allowed
                 and any(name.split(".")[0] == "mpi4py" for name, _ in imports(p))]
    assert offenders == [], f"only mpibench/cluster/ and run.py may import mpi4py: {offenders}"


@pytest.mark.parametrize("module", ["mpibench.store", "mpibench.export", *_under("mpibench.analysis")])
def test_store_and_analysis_import_no_torch_transformers_or_mpi(module):
    direct = sorted({n.split(".")[0] for n, _ in imports(MODULES[module])} & set(HEAVY))
    assert direct == [], f"{module} imports {direct}"
    assert heavy_chains(module, HEAVY) == []


@pytest.mark.parametrize("module", ["mpibench.config", "mpibench.plan", "mpibench.task", "mpibench.architecture"])
def test_config_and_plan_stay_light(module):
    assert heavy_chains(module, ("torch", "mpi4py")) == []


@pytest.mark.parametrize("layer, banned", [
    ("mpibench.inference", ("mpibench.cluster",)),
    ("mpibench.energy", ("mpibench.cluster", "mpibench.inference")),
])
def test_measuring_layers_do_not_reach_up(layer, banned):
    offenders = [f"{m} imports {name}" for m in _under(layer) for name, _ in imports(MODULES[m])
                 if any(name == b or name.startswith(b + ".") for b in banned)]
    assert offenders == []


def _private_imports(path: Path) -> list[str]:
    here = module_name(path) if path.is_relative_to(PACKAGE) else ""
    out = []
    for module, names in imports(path):
        if module.split(".")[0] != "mpibench" or module == here:
            continue
        hidden = [n for n in names if n.startswith("_") and not n.startswith("__")]
        hidden += [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]
        out += [f"{path.relative_to(ROOT)}: from {module} import {n}" for n in hidden]
    return out


def test_no_module_imports_another_modules_private_names():
    files = [*MODULES.values(), *sorted((ROOT / "analysis").glob("*.py")),
             *sorted((ROOT / "benchmarks").glob("*.py"))]
    offenders = [line for f in files for line in _private_imports(f)]
    assert offenders == [], "\n".join(offenders)


def test_the_checks_see_what_they_check():
    """The walk follows mpibench's own imports and finds a heavy package where there is one."""
    assert "mpibench.task" in loaded_at_import("mpibench.plan")
    assert heavy_chains("mpibench.inference.execute", ("torch",))
    assert any(name == "mpi4py" for name, _ in imports(MODULES["mpibench.cluster.mpi"]))
