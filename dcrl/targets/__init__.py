"""Target distributions: REINFORCE toward a better distribution than the policy's own samples,
and the other terms a method adds to GRPO (reward shaping, advantage edits, loss terms).

AEPO, DCPO and ICR are one idea (docs/papers.md §2–4): instead of bonusing lucky samples,
add a REINFORCE term whose samples come from a *target* distribution — π at temperature T drawn
for real (`aepo`), the same T by per-token importance weights (`dcpo`), the shortest correct
response of a group (`icr`), the best of the group (`best_of_n`). The baselines are targets of
the same contract: reward shaping (`lp_f`, `kimi`, `shorter_better`), a token-level advantage
edit (`entropy_adv`) and a loss term (`entropy_reg`). A run composes the base estimator (GRPO)
with a list of targets (`algorithm.name: composed`, dcrl.algorithms.composed); the algorithm
names of dcrl.algorithms are presets of at most one target each.

A method is one file here, read top to bottom: `dcrl/targets/dcpo.py` holds DCPO's settings
(with help and ranges), its target (`TARGET`) and, at the bottom, its preset (`ALGORITHM`: the
`dcpo` algorithm, GRPO plus the target, configured flat); with dcrl.core (the formulas and the
entropy controllers) it is the whole method. Adding a method is adding its file, nothing else:
`TARGETS` (name -> module path, built on first use) holds every module of this package but the
contract (`base`) and names starting with `_`, named by its file, and imports none of them until
its target is asked for; dcrl.algorithms.ALGORITHMS adds each one that defines `ALGORITHM`. The
file's name is the method's: its `TARGET` (and preset) carry that name. This package itself and
`dcrl.targets.base` are the contract every target follows, one layer below the algorithm
(dcrl.algorithms.base), and the method files one layer above it (docs/design.md, "Layers").

The contract of a target (built in, or your own as 'package.module:Class'):

    class MyTarget(dcrl.targets.Target):
        name = "my_target"                # what its metrics and errors call it
        config_class = MyTargetConfig     # a dataclass subclassing TargetConfig; every field
                                          # has a default and help=; validate() raises
                                          # ValueError("<field> ...: <problem>; <fix>")
        stage = "bonus"                   # "bonus" | "mix" | "replace" (below)
        shapes_rewards = False            # True if shape_rewards changes the reward
        foreign_rows = None               # the extras column marking rows it swaps in from
                                          # another distribution (aepo: "is_reinforce")

        def __init__(self, config, base): # base: the base estimator's AlgorithmConfig
        def shape_rewards(self, batch, rewards) -> rewards   # optional, (N,) -> (N,)
        def apply(self, draft, ctx) -> dict[str, float]     # optional: edit the draft,
                                                            # return metrics "my_target/..."
        def loss_term(self, mb, logprobs, entropy, counts)   # optional: (term or None, metrics)
        needs_entropy_grad                                   # optional property: True when
                                                            # loss_term differentiates entropy
        def after_update(self, metrics)                      # optional: read the update's
                                                            # entropy; may return metrics to log
        def state_dict(self) / load_state_dict(self, state)  # optional: JSON-able, checkpointed

`apply` receives a `StepDraft` (the step's rollouts `batch`, `scores`, shaped `rewards`, the
running `advantages`, the row tensors and `extras`) and the trainer's `StepContext` (`rollout`
for extra samples at any temperature, `logprob_pass` for a no-grad log-prob pass at any temperature);
both live in dcrl.step_data. It writes its REINFORCE term — which rows or tokens, with what
weight — into the draft, by its stage:

    bonus    changes per-response advantages, (N,) in and (N,) out (icr, best_of_n);
    mix      turns them into per-token advantages, (N,) in and (N, Lr) out (dcpo, entropy_adv);
             at most one;
    replace  swaps rows for other samples, sets `draft.old_logprobs = None` so the new rows are
             scored again, clears other targets' per-row `extras` on them and marks them in its
             `foreign_rows` column (aepo); at most one.

`loss_term` adds to the policy loss of each micro-batch, normalized by the mini-batch's counts
(`entropy_reg`). Every formula a target uses lives in `dcrl.core` (regularizers, shaping); a
method's module holds its settings, the calls and its preset. A target with an entropy
controller (aepo, dcpo) subclasses `ControlledTarget` and mixes `EntropyControlFields` into its
settings (dcrl.targets.base): one declaration of the controller's settings for both. `examples/targets/my_target.py`
is a worked user target; docs/targets.md is the short guide.

>>> sorted(TARGETS)[:5]
['aepo', 'best_of_n', 'dcpo', 'entropy_adv', 'entropy_reg']
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

from dcrl._lazy import import_subclass, module_names
from dcrl.config import build
from dcrl.errors import UserError
from dcrl.targets.base import STAGES, StepDraft, Target, TargetConfig

# The modules of this package that are the contract, not a method (names starting with "_" are
# helpers, never methods).
CONTRACT = ("base",)

# TARGETS and CHOICES are built on first use (module `__getattr__` below); for type checkers:
TARGETS: dict[str, str]
CHOICES: str


@functools.cache
def find_targets() -> dict[str, str]:
    """`TARGETS`: name -> module path, one per module file of this package (every `__path__`
    entry) other than the contract's and `_`-prefixed ones, its name the file's name, in name
    order. Nothing is imported to find them: a module is imported only when its target is asked
    for. Cached; after changing `__path__`, `find_targets.cache_clear()` (and
    `dcrl.algorithms.find_algorithms.cache_clear()`, which reads this)."""
    return {name: f"{__name__}.{name}" for name in module_names(__path__, CONTRACT)}


def _choices() -> str:
    return f"{', '.join(sorted(find_targets()))}, or a 'package.module:Class' of your own"


def __getattr__(name: str) -> Any:
    if name == "TARGETS":
        return find_targets()
    if name == "CHOICES":
        return _choices()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TargetError(UserError, ValueError):
    """A target that cannot be found, or a class that breaks the target contract."""


def get_target_class(name: str) -> type[Target]:
    """The Target subclass named `name`: a built-in name or 'package.module:Class'.

    Raises:
        TargetError: unknown name, a module or class that cannot be imported, or a class that
            is not a Target with a TargetConfig and a known stage.
    """
    registry = find_targets()
    if name in registry:
        return registered_target(name, importlib.import_module(registry[name]))
    if ":" not in name:
        raise TargetError(f"unknown target {name!r}; choose one of {_choices()}")
    target_class = import_subclass(
        name,
        Target,
        what="target",
        base_name="dcrl.targets.Target",
        hint="point it at your target class (see the contract in dcrl/targets/__init__.py)",
        error=TargetError,
    )
    if not issubclass(target_class.config_class, TargetConfig):
        raise TargetError(f"{name!r}: its config_class must subclass dcrl.targets.TargetConfig")
    if target_class.stage not in STAGES:
        raise TargetError(
            f"{name!r}: stage {target_class.stage!r} is not one of {', '.join(STAGES)}"
        )
    return target_class


def registered_target(name: str, module: Any) -> type[Target]:
    """The `TARGET` of the registered module `module` (found under `name`), checked to be a
    Target named `name`.

    Raises:
        TargetError: naming the file, when it defines no `TARGET`, one that is not a Target
            subclass, or one whose `name` is not the file's name.
    """
    where = getattr(module, "__file__", None) or module.__name__
    found = getattr(module, "TARGET", None)
    if found is None:
        raise TargetError(
            f"{where} is target {name!r} (a module of dcrl.targets is a method, found by its "
            f"file name) but defines no TARGET; add `TARGET = <its Target subclass>` at its "
            f"bottom (the contract is in dcrl/targets/__init__.py), or start the file's name "
            f"with '_' if it is not a method"
        )
    if not (isinstance(found, type) and issubclass(found, Target)):
        raise TargetError(
            f"{where}: TARGET is {found!r}, not a subclass of dcrl.targets.Target; set it to "
            f"the module's target class"
        )
    if found.name != name:
        raise TargetError(
            f"{where}: its TARGET {found.__name__} is named {found.name!r}, but the file makes it "
            f"target {name!r}; give the class `name = {name!r}` or rename the file to "
            f"{found.name}.py"
        )
    return found


def build_target_configs(entries: list[Any]) -> list[TargetConfig]:
    """Validate an `algorithm.targets` list; each entry a name or a mapping with `name`.

    Raises:
        ValueError: one message starting with the entry's key, e.g. "targets[1].name: ...".
    """
    configs: list[TargetConfig] = []
    for index, entry in enumerate(entries):
        key = f"targets[{index}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(
                f"{key}.name: missing; give each target a name ({_choices()}), e.g. "
                f"{{name: dcpo, target_entropy: 0.15}}"
            )
        try:
            target_class = get_target_class(str(entry["name"]))
        except TargetError as error:
            raise ValueError(f"{key}.name: {error}") from None
        known = [f.name for f in dataclasses.fields(target_class.config_class) if f.init]
        unknown = sorted(set(entry) - set(known))
        if unknown:
            raise ValueError(
                f"{key}.{unknown[0]}: not a setting of target {entry['name']!r}; its settings: "
                f"{', '.join(sorted(known))}"
            )
        configs.append(build(target_class.config_class, entry, prefix=key))
    check_composition(configs)
    return configs


def check_composition(configs: list[TargetConfig]) -> None:
    """At most one mix, one replacement and one entropy controller (two would fight over the
    same advantages, rows or entropy); raises ValueError naming the second entry."""
    first: dict[str, int] = {}
    for index, config in enumerate(configs):
        target_class = get_target_class(config.name)
        roles = [target_class.stage] if target_class.stage != "bonus" else []
        roles += ["entropy controller"] if target_class.controls_entropy else []
        for role in roles:
            if role in first:
                other = first[role]
                raise ValueError(
                    f"targets[{index}].name: {config.name!r} is a second {role} target after "
                    f"targets[{other}] ({configs[other].name!r}); a run composes at most one "
                    f"{role}: remove one of them"
                )
            first[role] = index


__all__ = [
    "CHOICES",
    "STAGES",
    "TARGETS",
    "StepDraft",
    "Target",
    "TargetConfig",
    "TargetError",
    "build_target_configs",
    "find_targets",
    "get_target_class",
    "registered_target",
]
