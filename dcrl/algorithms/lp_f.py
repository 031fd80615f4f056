"""LP-F: GRPO on accuracy plus the DAPO soft overlong penalty (Yu et al. 2025, arXiv 2503.14476),
the length baseline of the ICR paper (docs/papers.md §4.4): 0 below max − buffer tokens, then
a linear ramp to −1 at max.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import Algorithm, AlgorithmConfig
from dcrl.config import field
from dcrl.core.shaping import overlong_penalty


@dataclass
class LPFConfig(AlgorithmConfig):
    max_length: int = field(
        8192, ge=1, le=100_000_000, help="Length at which the penalty reaches −penalty (ICR: 8192)."
    )
    buffer: int = field(
        4096,
        ge=1,
        le=100_000_000,
        help="The penalty ramps over the last this many tokens (ICR: 4096).",
    )
    penalty: float = field(1.0, ge=0, le=1e6, help="Penalty at max_length.")

    def validate(self) -> None:
        super().validate()
        if self.buffer > self.max_length:
            raise ValueError(
                f"buffer ({self.buffer}) must be ≤ max_length ({self.max_length}): the penalty "
                "ramps over the last `buffer` tokens before max_length"
            )


class LPF(Algorithm):
    name = "lp_f"
    config_class = LPFConfig
    config: LPFConfig

    def shape_rewards(self, batch: Any, scores: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return scores + overlong_penalty(
            batch.response_lengths, cfg.max_length, cfg.buffer, cfg.penalty
        )


ALGORITHM = LPF
