"""Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617):
PPO-clip where a small random fraction of the tokens with high covariance between advantage and
log-prob have their gradient detached, slowing the entropy collapse those tokens drive.

A policy-loss choice: GRPO with `policy_loss: clip_cov` (dcrl.core.losses), whose registration
names the settings below and a seeded random source, kept in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field


@dataclass
class ClipCovConfig(AlgorithmConfig):
    name: str = field("clip_cov", help="Algorithm name (see `dcrl algorithms`).")
    policy_loss: str = field("clip_cov", help="The Clip-Cov policy loss.")
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


class ClipCov(Preset):
    name = "clip_cov"
    config_class = ClipCovConfig


ALGORITHM = ClipCov
