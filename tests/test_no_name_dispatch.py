"""No behaviour is decided by a method's name outside the registries (issue 28): what an adapter,
the report or the demo does depends on what an algorithm or target does (its stage, its loss
terms, its policy loss, the metrics it logged), so a target of the user's runs wherever it can.

The check walks every module of dcrl/ with `ast` and reports, outside the registry modules:

- a comparison (==, !=, in, not in) with a method name: a string literal in
  `dcrl.algorithms.ALGORITHMS` or `dcrl.targets.TARGETS`, a literal tuple / list / set / dict
  holding one, or a module-level constant bound to either (`SUPPORTED = ("aepo", ...)`);
- a `case "aepo":` pattern;
- a lookup keyed on a method name: `table["aepo"]`, `table.get("aepo")`, or any key into a
  module-level table keyed on method names;
- `isinstance` / `issubclass` against a registered target's class, its config class or an
  algorithm's config class, outside the module that defines that class.

Naming a method elsewhere is fine: assigning it (`name = "aepo"`), listing it (the demo's
recipes), printing it.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import dcrl
from dcrl.algorithms import ALGORITHMS, get_algorithm_class
from dcrl.algorithms.base import AlgorithmConfig
from dcrl.targets import TARGETS, Target, TargetConfig, get_target_class

ROOT = Path(dcrl.__file__).resolve().parent.parent
PACKAGE = ROOT / "dcrl"
METHOD_NAMES = frozenset(ALGORITHMS) | frozenset(TARGETS)
REGISTRIES = {"dcrl/algorithms/__init__.py", "dcrl/targets/__init__.py"}
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
LOOKUP_METHODS = {"get", "pop", "setdefault"}

# Name checks tolerated while an adapter is being moved to capabilities: each entry is a file and
# the construct found there (`ast.unparse`); a stale entry fails the test. Empty since the verl
# adapter decides by capability (dcrl/integrations/verl/trainer.py `verl_refusal`).
PENDING_VERL: set[tuple[str, str]] = set()


def method_classes() -> dict[str, set[str]]:
    """Class name -> the files defining it, for every class that stands for one method: each
    registered target's class and config class, each algorithm's config class (the shared base
    classes aside)."""
    shared = {Target, TargetConfig, AlgorithmConfig}
    classes: set[type] = set()
    for name in TARGETS:
        target_class = get_target_class(name)
        classes |= {target_class, target_class.config_class}
    for name in ALGORITHMS:
        classes.add(get_algorithm_class(name).config_class)
    where: dict[str, set[str]] = {}
    for cls in classes - shared:
        module = cls.__module__.replace(".", "/") + ".py"
        where.setdefault(cls.__name__, set()).add(module)
    return where


def holds_name(node: ast.AST) -> bool:
    """A method-name string literal, or a literal collection (a dict by its keys) holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in METHOD_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(holds_name(element) for element in node.elts)
    if isinstance(node, ast.Dict):
        return any(key is not None and holds_name(key) for key in node.keys)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):  # frozenset({...}), ...
        return node.func.id in {"frozenset", "set", "tuple", "dict"} and any(
            holds_name(argument) for argument in node.args
        )
    return False


def name_constants(tree: ast.Module) -> dict[str, bool]:
    """The module-level names bound to a method name or a collection of them, each with whether
    it is a table keyed on them (a dict)."""
    found = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        if holds_name(value):
            is_table = isinstance(value, ast.Dict) or (
                isinstance(value, ast.Call) and getattr(value.func, "id", "") == "dict"
            )
            found |= {target.id: is_table for target in targets if isinstance(target, ast.Name)}
    return found


def identifier(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def name_dispatch(
    source: str, path: str, constants: dict[str, bool], classes: dict[str, set[str]]
) -> list[tuple[str, str, int]]:
    """(path, construct, line) of each name dispatch in `source` (module docstring); `constants`
    as `name_constants` gives them, `classes` as `method_classes`."""
    tables = {name for name, is_table in constants.items() if is_table}

    def names_method(node: ast.AST) -> bool:
        return holds_name(node) or identifier(node) in constants

    found = []
    for node in ast.walk(ast.parse(source)):
        hit = False
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            hit = any(
                isinstance(op, COMPARISONS) and (names_method(left) or names_method(right))
                for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True)
            )
        elif isinstance(node, ast.MatchValue):
            hit = holds_name(node.value)
        elif isinstance(node, ast.Subscript):
            hit = holds_name(node.slice) or identifier(node.value) in tables
        elif isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Attribute) and function.attr in LOOKUP_METHODS:
                hit = identifier(function.value) in tables or any(
                    holds_name(argument) for argument in node.args[:1]
                )
            elif isinstance(function, ast.Name) and function.id in {"isinstance", "issubclass"}:
                kinds = node.args[1:2]
                if kinds and isinstance(kinds[0], ast.Tuple):
                    kinds = kinds[0].elts
                hit = any(path not in classes.get(identifier(k) or "", {path}) for k in kinds)
        if hit:
            found.append((path, ast.unparse(node), node.lineno))
    return found


def package_hits() -> list[tuple[str, str, int]]:
    """Every name dispatch in dcrl/ outside the registries. A module-level constant counts by its
    name in every module (it may be imported); the registries' own tables do not: looking a
    name up in them is what they are for."""
    modules = {
        path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    outside = {path: source for path, source in modules.items() if path not in REGISTRIES}
    constants: dict[str, bool] = {}
    for source in outside.values():
        constants |= name_constants(ast.parse(source))
    classes = method_classes()
    hits = []
    for path, source in outside.items():
        hits += name_dispatch(source, path, constants, classes)
    return hits


def test_no_behaviour_is_decided_by_a_method_name_outside_the_registries():
    hits = package_hits()
    unexpected = [hit for hit in hits if hit[:2] not in PENDING_VERL]
    assert not unexpected, "decide by capability, not by name:\n" + "\n".join(
        f"{path}:{line}: {construct}" for path, construct, line in unexpected
    )
    stale = PENDING_VERL - {hit[:2] for hit in hits}
    assert not stale, f"no longer found; take them out of PENDING_VERL: {sorted(stale)}"


def test_the_check_finds_each_kind_of_name_dispatch():
    """The walker on a module written for it: every line marked "hit" found, nothing else."""
    source = textwrap.dedent(
        """
        SUPPORTED = {"grpo", "dcpo"}
        LABELS = {"aepo": "AEPO m"}
        PLAIN = ("a", "b")
        RECIPES = ("grpo", "aepo")
        first = RECIPES[0]                             # by position: fine
        class Mine:
            name = "aepo"                              # assigning: fine
        print(f"{name} runs", PLAIN)                   # printing: fine
        for recipe in ("grpo", "aepo"):                # listing: fine
            pass
        if name == "grpo": pass                        # hit
        if "icr" != name: pass                         # hit
        if name in ("aepo", "x"): pass                 # hit
        if name not in SUPPORTED: pass                 # hit
        if name in PLAIN: pass                         # not a method name: fine
        label = LABELS[name]                           # hit
        label = LABELS.get(name)                       # hit
        value = metrics["dcpo"]                        # hit
        value = metrics.get("kimi", 0)                 # hit
        value = metrics.get("reward/accuracy")         # fine
        match name:
            case "entropy_reg": pass                   # hit
            case "other": pass
        if isinstance(target, DCPOTarget): pass        # hit
        if isinstance(config, (int, targets.ICRTargetConfig)): pass  # hit
        if isinstance(target, Target): pass            # the shared base class: fine
        """
    )
    marked = [n for n, line in enumerate(source.splitlines(), 1) if line.endswith("# hit")]
    constants = name_constants(ast.parse(source))
    assert constants == {"SUPPORTED": False, "LABELS": True, "RECIPES": False}
    classes = method_classes()
    hits = name_dispatch(source, "dcrl/somewhere.py", constants, classes)
    assert sorted(line for _, _, line in hits) == marked and len(marked) == 11
    # In the module that defines it, a class may check its own instances.
    own_module = next(iter(classes["DCPOTarget"]))
    assert name_dispatch("isinstance(target, DCPOTarget)", own_module, {}, classes) == []
