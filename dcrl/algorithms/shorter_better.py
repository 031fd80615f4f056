"""ShorterBetter (Yi et al. 2025, arXiv 2504.21370), as in the ICR paper's baselines
(docs/papers.md §4.4): the reward α·1[correct] − β·|L − L_SOL| replaces accuracy, L_SOL being
the group's shortest correct length (the group mean when none is correct).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import Algorithm, AlgorithmConfig
from dcrl.config import field
from dcrl.core.shaping import shorter_better_reward


@dataclass
class ShorterBetterConfig(AlgorithmConfig):
    alpha: float = field(1.0, ge=0, le=1e6, help="Weight of correctness (paper: 1).")
    beta: float = field(1e-3, ge=0, le=1e6, help="Weight of |L − L_SOL| per token (paper: 1e-3).")


class ShorterBetter(Algorithm):
    name = "shorter_better"
    config_class = ShorterBetterConfig
    config: ShorterBetterConfig

    def shape_rewards(self, batch: Any, scores: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return shorter_better_reward(
            batch.response_lengths, scores > 0.5, batch.group_index, cfg.alpha, cfg.beta
        )


ALGORITHM = ShorterBetter
