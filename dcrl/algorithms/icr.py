"""ICR — Implicit Compression Regularization (arXiv 2605.07316), code-faithful to the released
version (research/papers.md §4.2, §4.5).

Each group's shortest correct response gets a bonus C/k added to its advantage on every token
(k = groups with a correct response, C = 128), so the total bonus mass per step is C: REINFORCE
under the "virtual shorter distribution" of shortest-correct responses, on-policy. The released
scripts also add the DAPO soft overlong penalty (LP-F) to the reward; here that is `lp_f: true`.
The length–accuracy correlation is logged for every algorithm by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from dcrl.algorithms.base import Algorithm, AlgorithmConfig, StepContext, TrainBatch
from dcrl.config import field
from dcrl.core.advantages import grpo_advantages
from dcrl.core.regularizers import icr_bonus
from dcrl.core.shaping import overlong_penalty


@dataclass
class ICRConfig(AlgorithmConfig):
    log_ratio_clamp: float | None = field(20.0, help="The ICR code clamps log-ratios to ±20.")
    bonus_total: float = field(
        128.0, help="C: total bonus mass per step, C/k per selected response (code: 128)."
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
    lp_f_max_length: int = field(8192, help="LP-F: length at which the penalty reaches −1.")
    lp_f_buffer: int = field(4096, help="LP-F: the penalty ramps over the last this many tokens.")


class ICR(Algorithm):
    name = "icr"
    config_class = ICRConfig
    config: ICRConfig

    def shape_rewards(self, batch: Any, scores: torch.Tensor) -> torch.Tensor:
        if not self.config.lp_f:
            return scores
        return scores + overlong_penalty(
            batch.response_lengths, self.config.lp_f_max_length, self.config.lp_f_buffer
        )

    def prepare(
        self, batch: Any, scores: torch.Tensor, ctx: StepContext
    ) -> tuple[TrainBatch, dict[str, float]]:
        cfg = self.config
        rewards = self.shape_rewards(batch, scores)
        advantages = grpo_advantages(rewards, batch.group_index, std=cfg.advantage_std)  # (N,)
        advantages, info = icr_bonus(
            advantages,
            rewards,
            batch.response_lengths,
            batch.group_index,
            bonus_total=cfg.bonus_total,
            mode=cfg.mode,
            selection=cfg.selection,
            sign=cfg.sign,
            scope=cfg.scope,
        )
        metrics = {
            "reward/shaped_mean": float(rewards.mean()),
            "icr/num_selected": float(info["num_selected"]),
            "icr/bonus": float(info["bonus_per_response"]),
            "icr/selected_length": float(info["selected_length_mean"]),
        }
        train_batch = self.make_batch(batch, advantages, ctx)
        train_batch.extras["icr_selected"] = torch.zeros(len(batch), dtype=torch.bool)
        train_batch.extras["icr_selected"][info["selected_index"]] = True
        return train_batch, metrics


ALGORITHM = ICR
