"""The layering of dcrl's packages (docs/design.md, "Layers"): every import inside `dcrl/`,
function-level (lazy) ones included, goes down the order below, never up or sideways. A package
that imports one above it (or beside it, in the same layer) is a cycle waiting to happen: it
works only while some import stays lazy. An import under `if TYPE_CHECKING:` names a type for
the annotations and never runs, so it is not one (the target contract names the algorithm's
settings that way).

Units are the top-level subpackages and modules of `dcrl` (`dcrl.core`, `dcrl.step_data`, ...),
except that `dcrl.targets` is two: the target contract (the package itself and
`dcrl.targets.base`), below the algorithm, and the methods (each other module of it, one file
per method: its settings, its target and its preset), above it. A unit may import itself and any
unit of a lower layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dcrl"

# The methods: dcrl/targets/<method>.py, each a target and the preset built on it.
METHODS = "dcrl.targets.<method>"
CONTRACT = ("base",)  # the modules of dcrl.targets that are the contract, not a method

# Lowest first. The spine: core < step_data < targets < algorithms < methods < train < integrations.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("dcrl", "dcrl.errors", "dcrl._atomic", "dcrl._lazy"),  # `dcrl` itself: __version__ only
    ("dcrl.config",),
    ("dcrl.core", "dcrl.rewards", "dcrl.rollout", "dcrl.models", "dcrl.theory"),
    ("dcrl.tasks",),
    ("dcrl.step_data",),
    ("dcrl.targets",),
    ("dcrl.algorithms",),
    (METHODS,),
    ("dcrl.train",),
    ("dcrl.eval", "dcrl.integrations"),
    ("dcrl.report",),
    ("dcrl.demo",),
    ("dcrl.cli",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """`dcrl.core.control` -> `dcrl.core`; `dcrl` -> `dcrl`; `dcrl.targets.base` ->
    `dcrl.targets`; `dcrl.targets.aepo` (a module of dcrl/targets/ other than the contract's)
    -> METHODS. `module` may end in an attribute (`dcrl.targets.Target`)."""
    parts = module.split(".")
    in_targets = parts[:2] == ["dcrl", "targets"] and len(parts) > 2
    if in_targets and parts[2] not in CONTRACT and (ROOT / "targets" / f"{parts[2]}.py").is_file():
        return METHODS
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported dcrl module) of every import statement in the file, at any depth."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from dcrl import core` imports dcrl.core.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "dcrl" or name.startswith("dcrl.")]


def dcrl_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_unit_of_dcrl_has_a_layer():
    units = {unit_of(module_name(path)) for path in dcrl_files()}
    assert units - set(RANK) == set(), "add the new package to LAYERS (and docs/design.md)"


def upward_imports() -> list[str]:
    problems = []
    for path in dcrl_files():
        unit = unit_of(module_name(path))
        for line, name in imports_of(path):
            imported = unit_of(name)
            if imported == "dcrl" and name != "dcrl":
                imported = name.split(".")[0]  # `from dcrl import __version__`
            if imported == unit or imported not in RANK:
                continue
            if RANK[imported] >= RANK[unit]:
                where = path.relative_to(ROOT.parent)
                problems.append(f"{where}:{line}: {unit} imports {name} ({imported} is not below)")
    return problems


def test_no_package_imports_one_above_or_beside_it():
    assert upward_imports() == []


@pytest.mark.parametrize(
    ("source", "importer", "message"),
    [
        ("from dcrl.algorithms.base import Algorithm\n", "targets/base.py", "dcrl.targets imports"),
        ("from dcrl.train import step\n", "targets/x.py", "dcrl.targets.<method> imports"),
        ("def f():\n    from dcrl.train import step\n", "algorithms/x.py", "dcrl.algorithms"),
        ("from ..targets import base\n", "step_data/x.py", "dcrl.step_data imports dcrl.targets"),
    ],
)
def test_the_walk_sees_upward_imports_lazy_and_relative_ones_included(
    tmp_path, monkeypatch, source, importer, message
):
    root = tmp_path / "dcrl"
    (root / importer).parent.mkdir(parents=True)
    (root / importer).write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", root)
    (problem,) = upward_imports()
    assert message in problem


def test_a_type_only_import_is_not_an_upward_one(tmp_path, monkeypatch):
    """`if TYPE_CHECKING:` imports never run; the same import outside it is reported."""
    root = tmp_path / "dcrl"
    (root / "targets").mkdir(parents=True)
    (root / "targets" / "base.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from dcrl.algorithms.base import AlgorithmConfig\n"
        "from dcrl.train import step\n"
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", root)
    (problem,) = upward_imports()
    assert "dcrl.targets imports dcrl.train.step" in problem
