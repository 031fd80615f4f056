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
entropy controllers) it is the whole method. This package itself and `dcrl.targets.base` are the
contract every target follows, one layer below the algorithm (dcrl.algorithms.base), and the
method files one layer above it (docs/design.md, "Layers").

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
import importlib
from typing import Any

from dcrl._lazy import import_subclass
from dcrl.config import build
from dcrl.errors import UserError
from dcrl.targets.base import STAGES, StepDraft, Target, TargetConfig

# name -> module; a module is imported only when its target is asked for.
TARGETS: dict[str, str] = {
    "aepo": "dcrl.targets.aepo",
    "dcpo": "dcrl.targets.dcpo",
    "icr": "dcrl.targets.icr",
    "best_of_n": "dcrl.targets.best_of_n",
    "lp_f": "dcrl.targets.lp_f",
    "kimi": "dcrl.targets.kimi",
    "shorter_better": "dcrl.targets.shorter_better",
    "entropy_adv": "dcrl.targets.entropy_adv",
    "entropy_reg": "dcrl.targets.entropy_reg",
}
CHOICES = f"{', '.join(sorted(TARGETS))}, or a 'package.module:Class' of your own"


class TargetError(UserError, ValueError):
    """A target that cannot be found, or a class that breaks the target contract."""


def get_target_class(name: str) -> type[Target]:
    """The Target subclass named `name`: a built-in name or 'package.module:Class'.

    Raises:
        TargetError: unknown name, a module or class that cannot be imported, or a class that
            is not a Target with a TargetConfig and a known stage.
    """
    if name in TARGETS:
        return importlib.import_module(TARGETS[name]).TARGET
    if ":" not in name:
        raise TargetError(f"unknown target {name!r}; choose one of {CHOICES}")
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
                f"{key}.name: missing; give each target a name ({CHOICES}), e.g. "
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
    "get_target_class",
]
