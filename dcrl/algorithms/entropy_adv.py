"""Entropy-Adv (Cheng et al. 2025, "Reasoning with Exploration: An Entropy Perspective",
arXiv 2506.14758), as the AEPO/DCPO papers ran it (docs/papers.md §5):

    Â_{i,t} ← Â_i + min(α · H_{i,t}, |Â_i| / κ)

with H the full-vocabulary entropy of π_old at T = 1, detached; the bound keeps the bonus from
flipping the advantage's sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import Algorithm, AlgorithmConfig, StepContext, TrainBatch
from dcrl.config import field
from dcrl.core.advantages import grpo_advantages
from dcrl.core.regularizers import entropy_advantage


@dataclass
class EntropyAdvConfig(AlgorithmConfig):
    alpha: float = field(0.4, ge=0, le=100, help="α: entropy bonus scale (paper: 0.4).")
    kappa: float = field(2.0, gt=0, le=1e6, help="κ: the bonus is at most |Â|/κ (paper: 2).")


class EntropyAdv(Algorithm):
    name = "entropy_adv"
    config_class = EntropyAdvConfig
    config: EntropyAdvConfig

    def prepare(
        self, batch: Any, scores: torch.Tensor, ctx: StepContext
    ) -> tuple[TrainBatch, dict[str, float]]:
        cfg = self.config
        advantages = grpo_advantages(scores, batch.group_index, std=cfg.advantage_std)  # (N,)
        input_ids, attention_mask = batch.sequences()
        mask = batch.response_mask
        old_logprobs, old_entropy = ctx.score(input_ids, attention_mask, mask, with_entropy=True)
        token_advantages = entropy_advantage(advantages, old_entropy, mask, cfg.alpha, cfg.kappa)
        bonus = (token_advantages - advantages[:, None]) * mask
        train_batch = TrainBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            response_mask=mask,
            old_logprobs=old_logprobs,
            advantages=token_advantages,
        )
        return train_batch, {"entropy_adv/bonus_mean": float(bonus.sum() / mask.sum().clamp(min=1))}


ALGORITHM = EntropyAdv
