"""GRPO (Shao et al. 2024, arXiv 2402.03300) as the papers run it (docs/papers.md §1.2):
group-normalized advantages with the unbiased std, PPO-clip 0.2/0.2 with dual clip 3, token-mean
loss, one epoch, no KL. The base estimator itself: a preset with no target.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field


@dataclass
class GRPOConfig(AlgorithmConfig):
    """GRPO: no regularizer; every field is the shared PPO-clip setting."""

    name: str = field("grpo", help="Algorithm name (see `dcrl algorithms`).")


class GRPO(Preset):
    name = "grpo"
    config_class = GRPOConfig


ALGORITHM = GRPO
