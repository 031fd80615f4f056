"""Composed: a base estimator (GRPO) plus a list of target distributions (dcrl.targets), e.g.
DCPO's entropy control with ICR's compression in one run.

The order is fixed by what each target changes, not by the list, so that every composition has
one meaning; within a stage the list order holds:

    1. shape    each target's `shape_rewards`, in list order (ICR's LP-F penalty);
    2. base     GRPO advantages of the shaped reward, per response (N,);
    3. bonus    sequence-level bonuses added to those (icr, best_of_n): Â_i ← Â_i + b_i;
    4. mix      the token-level mix (dcpo, at most one): Â'_{i,t} = (1 − α)·Â_i + α·c_i·ρ_{i,t},
                so DCPO's α weighs its REINFORCE term against GRPO *with* the bonuses;
    5. replace  the row replacement (aepo, at most one): tempered rows with advantage +1 replace
                the first m rows, whatever the earlier stages gave them;
    6. old log-probs at T = 1 of the final rows (shared with DCPO's pass unless rows changed).

At most one entropy-controlled target (aepo or dcpo): two controllers would fight over one
entropy. The glue below only orders the calls; each target's formula is in dcrl.core.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from dcrl.algorithms.base import Algorithm, AlgorithmConfig, StepContext, TrainBatch
from dcrl.config import field
from dcrl.core.advantages import grpo_advantages
from dcrl.targets import (
    STAGES,
    StepDraft,
    Target,
    TargetError,
    build_target_configs,
    get_target_class,
)
from dcrl.targets.base import TargetConfig


@dataclass
class ComposedConfig(AlgorithmConfig):
    """GRPO's PPO settings (the base estimator) and the targets composed on it."""

    targets: list[dict[str, Any] | str] = field(
        [],
        help="Target distributions, each a name or {name: ..., <its settings>}: aepo, dcpo, icr, "
        "best_of_n, or 'package.module:Class' (dcrl/targets/__init__.py has the contract). "
        "Applied bonus → mix → replace whatever the list order (dcrl.algorithms.composed).",
    )

    def validate(self) -> None:
        super().validate()
        build_target_configs(self.targets)


class Composed(Algorithm):
    """GRPO plus targets; the presets (aepo, dcpo, icr) are this with one target."""

    name = "composed"
    config_class = ComposedConfig

    def __init__(self, config: AlgorithmConfig, targets: list[Target] | None = None) -> None:
        super().__init__(config)
        if targets is None:
            configs = build_target_configs(config.targets)
            targets = [get_target_class(c.name)(c, config) for c in configs]
        self.targets = targets

    def shape_rewards(self, batch: Any, scores: torch.Tensor) -> torch.Tensor:
        rewards = scores
        for target in self.targets:
            rewards = target.shape_rewards(batch, rewards)
        return rewards

    def prepare(
        self, batch: Any, scores: torch.Tensor, ctx: StepContext
    ) -> tuple[TrainBatch, dict[str, float]]:
        rewards = self.shape_rewards(batch, scores)
        advantages = grpo_advantages(rewards, batch.group_index, std=self.config.advantage_std)
        draft = StepDraft.start(batch, scores, rewards, advantages)
        metrics: dict[str, float] = {}
        if not self.targets or any(t.shapes_rewards for t in self.targets):
            metrics["reward/shaped_mean"] = float(rewards.mean())
        for stage in STAGES:
            for target in (t for t in self.targets if t.stage == stage):
                add_metrics(metrics, target.apply(draft, ctx), target)
                if stage == "bonus" and draft.advantages.dim() != 1:
                    raise TargetError(
                        f"target {target.name!r} (stage bonus) left per-token advantages; a "
                        "bonus keeps them per response, (N,): declare stage = 'mix' instead"
                    )
        return draft.finish(ctx), metrics

    def after_update(self, metrics: dict[str, float]) -> None:
        for target in self.targets:
            target.after_update(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"targets": [target.state_dict() for target in self.targets]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for target, target_state in zip(self.targets, state["targets"], strict=True):
            target.load_state_dict(target_state)


def add_metrics(metrics: dict[str, float], new: dict[str, float], target: Target) -> None:
    """Merge a target's metrics; two targets logging one name would hide one of them."""
    clash = sorted(set(metrics) & set(new))
    if clash:
        raise TargetError(
            f"target {target.name!r} logs {clash[0]!r}, which another target (or the base) logs "
            f"too; name its metrics '{target.name}/...'"
        )
    metrics.update(new)


class Preset(Composed):
    """An algorithm name that is GRPO plus one target, configured by one flat config (the
    target's settings beside the PPO ones). Its checkpoint state is the target's own, the
    layout of the algorithms before the targets existed."""

    target_class: ClassVar[type[Target]]

    def __init__(self, config: AlgorithmConfig) -> None:
        target_fields = [f.name for f in fields(self.target_class.config_class) if f.init]
        settings = {name: getattr(config, name) for name in target_fields if name != "name"}
        target_config: TargetConfig = self.target_class.config_class(
            name=self.target_class.name, **settings
        )
        super().__init__(config, [self.target_class(target_config, config)])

    @property
    def target(self) -> Target:
        return self.targets[0]

    @property
    def controller(self) -> Any:
        """The target's entropy controller (aepo, dcpo); the verl and TRL adapters read it."""
        return self.target.controller  # type: ignore[attr-defined]

    def decide(self) -> Any:
        """The controller's decision for this step and its metrics (aepo, dcpo)."""
        return self.target.decide()  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        return self.target.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state)


ALGORITHM = Composed
