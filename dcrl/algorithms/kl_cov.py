"""KL-Cov (Cui et al. 2025, arXiv 2505.22617): no ratio clipping; a KL-like penalty
coef·|log π_θ − log π_old| on the top fraction of tokens by advantage/log-prob covariance.
In a strictly on-policy mini-batch (ratio ≡ 1) the penalty is zero — it acts from the second
mini-batch of a step on.

A policy-loss choice: GRPO with `policy_loss: kl_cov` (dcrl.core.losses), whose registration
names the settings below.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field


@dataclass
class KLCovConfig(AlgorithmConfig):
    name: str = field("kl_cov", help="Algorithm name (see `dcrl algorithms`).")
    policy_loss: str = field("kl_cov", help="The KL-Cov policy loss.")
    kl_cov_ratio: float = field(
        2e-3,
        gt=0,
        le=1,
        help="Fraction of tokens penalized (paper: 2e-3; the ICR code's copy: 2e-4).",
    )
    kl_coef: float = field(
        1.0, ge=0, le=1e6, help="Penalty coefficient on |log π_θ − log π_old| (paper: 1)."
    )


class KLCov(Preset):
    name = "kl_cov"
    config_class = KLCovConfig


ALGORITHM = KLCov
