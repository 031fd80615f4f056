"""ICR — Implicit Compression Regularization (arXiv 2605.07316), code-faithful to the released
version (docs/papers.md §4.2, §4.5): the whole method in this file — its settings, the `icr`
target and the `icr` algorithm (GRPO plus that target, at the bottom).

The target is the group's shortest correct response, a *virtual shorter distribution*. A
sequence-level bonus (stage "bonus"): each group's shortest correct response gets C/k added to
its advantage (k = groups with a correct response, C = 128), so the bonus mass per step is C —
REINFORCE under the law of "the shortest correct of n draws", on-policy. The released scripts
also add the DAPO soft overlong penalty (LP-F) to the reward the base estimator normalizes:
`lp_f: true` runs the `lp_f` target (dcrl.targets.lp_f) with `lp_f_max_length` and
`lp_f_buffer`. `algorithm: {name: composed, log_ratio_clamp: 20, targets: [icr]}` is the same
run as `algorithm: {name: icr}`. The length–accuracy correlation is logged for every algorithm by
the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.regularizers import icr_bonus
from dcrl.step_data import StepContext
from dcrl.targets.base import StepDraft, Target, TargetConfig
from dcrl.targets.lp_f import LPFTarget, LPFTargetConfig


@dataclass
class ICRSettings:
    """ICR's settings, shared by the `icr` target and the `icr` algorithm below."""

    bonus_total: float = field(
        128.0,
        ge=0,
        le=1e6,
        help="C: total bonus mass per step, C/k per selected response (code: 128).",
    )
    mode: Literal["add", "replace", "multiply"] = field(
        "add", help="add (code): Â += C/k; replace: Â = C/k; multiply: Â ← (1 + C/k)·Â (ablations)."
    )
    selection: Literal["correct", "any"] = field(
        "correct", help="Shortest correct response (code) or shortest of any (ICR_neg ablation)."
    )
    sign: Literal["positive", "own_advantage"] = field(
        "positive", help="Bonus sign: +, or the sign of the response's own advantage (ICR_neg)."
    )
    scope: Literal["shortest", "all"] = field(
        "shortest", help="shortest (code) or all: C/N on every response (the ICR_all control)."
    )
    lp_f: bool = field(
        True, help="Add the LP-F soft overlong penalty to the reward (the released scripts do)."
    )
    lp_f_max_length: int = field(
        8192, ge=1, le=100_000_000, help="LP-F: length at which the penalty reaches −1."
    )
    lp_f_buffer: int = field(
        4096, ge=1, le=100_000_000, help="LP-F: the penalty ramps over the last this many tokens."
    )

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]  # the config this is mixed into
        if self.lp_f_buffer > self.lp_f_max_length:
            raise ValueError(
                f"lp_f_buffer ({self.lp_f_buffer}) must be ≤ lp_f_max_length "
                f"({self.lp_f_max_length}): the penalty ramps over the last lp_f_buffer tokens"
            )


@dataclass
class ICRTargetConfig(ICRSettings, TargetConfig):
    """The `icr` target's settings."""


class ICRTarget(Target):
    name = "icr"
    config_class = ICRTargetConfig
    stage = "bonus"
    shapes_rewards = True
    config: ICRTargetConfig

    def __init__(self, config: TargetConfig, base: AlgorithmConfig) -> None:
        super().__init__(config, base)
        self.lp_f: LPFTarget | None = None
        if self.config.lp_f:
            lp_f = LPFTargetConfig(
                name=LPFTarget.name,
                max_length=self.config.lp_f_max_length,
                buffer=self.config.lp_f_buffer,
            )
            self.lp_f = LPFTarget(lp_f, base)

    def shape_rewards(self, batch: Any, rewards: torch.Tensor) -> torch.Tensor:
        if self.lp_f is None:
            return rewards
        return self.lp_f.shape_rewards(batch, rewards)

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        cfg = self.config
        draft.advantages, info = icr_bonus(
            draft.advantages,
            draft.rewards,
            draft.batch.response_lengths,
            draft.batch.group_index,
            bonus_total=cfg.bonus_total,
            mode=cfg.mode,
            selection=cfg.selection,
            sign=cfg.sign,
            scope=cfg.scope,
        )
        selected = torch.zeros(len(draft.batch), dtype=torch.bool)
        selected[info["selected_index"]] = True
        draft.extras["icr_selected"] = selected
        return {
            "icr/num_selected": float(info["num_selected"]),
            "icr/bonus": float(info["bonus_per_response"]),
            "icr/selected_length": float(info["selected_length_mean"]),
        }


TARGET = ICRTarget


# -- the `icr` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class ICRConfig(ICRSettings, AlgorithmConfig):
    """`algorithm: {name: icr, ...}`: GRPO's PPO settings and ICR's."""

    name: str = field("icr", help="Algorithm name (see `dcrl algorithms`).")
    log_ratio_clamp: float | None = field(
        20.0, gt=0, le=1000, help="The ICR code clamps log-ratios to ±20."
    )


class ICR(Preset):
    name = "icr"
    config_class = ICRConfig
    target_class = ICRTarget
    config: ICRConfig


ALGORITHM = ICR
