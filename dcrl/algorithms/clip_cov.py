"""Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617):
PPO-clip where a small random fraction of the tokens with high covariance between advantage and
log-prob have their gradient detached, slowing the entropy collapse those tokens drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from dcrl.algorithms.base import Algorithm, AlgorithmConfig
from dcrl.config import field


@dataclass
class ClipCovConfig(AlgorithmConfig):
    policy_loss: Literal["ppo_clip", "clip_cov", "kl_cov"] = field(
        "clip_cov", help="The Clip-Cov policy loss."
    )
    clip_cov_ratio: float = field(
        2e-4, gt=0, le=1, help="Fraction of tokens detached (paper: 2e-4)."
    )
    clip_cov_lb: float = field(
        1.0, ge=-1e9, le=1e9, help="Lower covariance bound of the candidates (paper: 1)."
    )
    clip_cov_ub: float = field(
        5.0, ge=-1e9, le=1e9, help="Upper covariance bound of the candidates (paper: 5)."
    )

    def validate(self) -> None:
        super().validate()
        if not self.clip_cov_lb < self.clip_cov_ub:
            raise ValueError(
                f"clip_cov_lb ({self.clip_cov_lb}) must be < clip_cov_ub ({self.clip_cov_ub}): "
                "they bound the covariance of the candidate tokens"
            )


class ClipCov(Algorithm):
    name = "clip_cov"
    config_class = ClipCovConfig
    config: ClipCovConfig

    def __init__(self, config: ClipCovConfig) -> None:
        super().__init__(config)
        self.generator = torch.Generator().manual_seed(0)

    def policy_loss_options(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "clip_cov_ratio": cfg.clip_cov_ratio,
            "clip_cov_lb": cfg.clip_cov_lb,
            "clip_cov_ub": cfg.clip_cov_ub,
            "generator": self.generator,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


ALGORITHM = ClipCov
