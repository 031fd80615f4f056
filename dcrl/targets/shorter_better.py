"""ShorterBetter (Yi et al. 2025, arXiv 2504.21370), as in the ICR paper's baselines
(docs/papers.md §4.4): its settings, the `shorter_better` target and the `shorter_better`
algorithm (GRPO plus that target, at the bottom).

The reward α·1[correct] − β·|L − L_SOL| replaces accuracy, L_SOL being the group's shortest
correct length (the group mean when none is correct). Reward shaping only; the base estimator
normalizes the shaped reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.shaping import shorter_better_reward
from dcrl.targets.base import Target, TargetConfig


@dataclass
class ShorterBetterSettings:
    """ShorterBetter's settings, shared by the `shorter_better` target and preset."""

    alpha: float = field(1.0, ge=0, le=1e6, help="Weight of correctness (paper: 1).")
    beta: float = field(1e-3, ge=0, le=1e6, help="Weight of |L − L_SOL| per token (paper: 1e-3).")


@dataclass
class ShorterBetterTargetConfig(ShorterBetterSettings, TargetConfig):
    """The `shorter_better` target's settings."""


class ShorterBetterTarget(Target):
    name = "shorter_better"
    config_class = ShorterBetterTargetConfig
    shapes_rewards = True
    config: ShorterBetterTargetConfig

    def shape_rewards(self, batch: Any, rewards: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return shorter_better_reward(
            batch.response_lengths, rewards > 0.5, batch.group_index, cfg.alpha, cfg.beta
        )


TARGET = ShorterBetterTarget


# -- the `shorter_better` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class ShorterBetterConfig(ShorterBetterSettings, AlgorithmConfig):
    """`algorithm: {name: shorter_better, ...}`: GRPO's PPO settings and ShorterBetter's."""

    name: str = field("shorter_better", help="Algorithm name (see `dcrl algorithms`).")


class ShorterBetter(Preset):
    name = "shorter_better"
    config_class = ShorterBetterConfig
    target_class = ShorterBetterTarget
    config: ShorterBetterConfig


ALGORITHM = ShorterBetter
