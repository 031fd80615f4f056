"""GRPO (Shao et al. 2024, arXiv 2402.03300) as the papers run it (docs/papers.md §1.2):
group-normalized advantages with the unbiased std, PPO-clip 0.2/0.2 with dual clip 3, token-mean
loss, one epoch, no KL. The recipe is the base class's; this module names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import Algorithm, AlgorithmConfig


@dataclass
class GRPOConfig(AlgorithmConfig):
    """GRPO: no regularizer; every field is the shared PPO-clip setting."""


class GRPO(Algorithm):
    name = "grpo"
    config_class = GRPOConfig


ALGORITHM = GRPO
