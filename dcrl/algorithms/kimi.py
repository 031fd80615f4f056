"""Kimi-style group length reward (Kimi k1.5, arXiv 2501.12599), the ICR paper's LP2 baseline
(docs/papers.md §4.4): λ = 0.5 − (L − L_min)/(L_max − L_min) within the group; a correct
response gets λ, a wrong one min(0, λ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import Algorithm, AlgorithmConfig
from dcrl.config import field
from dcrl.core.shaping import kimi_length_reward


@dataclass
class KimiConfig(AlgorithmConfig):
    weight: float = field(
        1.0, ge=0, le=1e6, help="Weight of the length reward added to accuracy (ICR code: 1)."
    )


class Kimi(Algorithm):
    name = "kimi"
    config_class = KimiConfig
    config: KimiConfig

    def shape_rewards(self, batch: Any, scores: torch.Tensor) -> torch.Tensor:
        correct = scores > 0.5
        bonus = kimi_length_reward(batch.response_lengths, correct, batch.group_index)
        return scores + self.config.weight * bonus


ALGORITHM = Kimi
