"""Kimi-style group length reward (Kimi k1.5, arXiv 2501.12599), the ICR paper's LP2 baseline
(docs/papers.md §4.4): its settings, the `kimi` target and the `kimi` algorithm (GRPO plus that
target, at the bottom).

λ = 0.5 − (L − L_min)/(L_max − L_min) within the group; a correct response gets λ, a wrong one
min(0, λ), weighted and added to the reward. Reward shaping only; the base estimator normalizes
the shaped reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.shaping import kimi_length_reward
from dcrl.targets.base import Target, TargetConfig


@dataclass
class KimiSettings:
    """The Kimi length reward's settings, shared by the `kimi` target and preset."""

    weight: float = field(
        1.0, ge=0, le=1e6, help="Weight of the length reward added to accuracy (ICR code: 1)."
    )


@dataclass
class KimiTargetConfig(KimiSettings, TargetConfig):
    """The `kimi` target's settings."""


class KimiTarget(Target):
    name = "kimi"
    config_class = KimiTargetConfig
    shapes_rewards = True
    config: KimiTargetConfig

    def shape_rewards(self, batch: Any, rewards: torch.Tensor) -> torch.Tensor:
        correct = rewards > 0.5
        bonus = kimi_length_reward(batch.response_lengths, correct, batch.group_index)
        return rewards + self.config.weight * bonus


TARGET = KimiTarget


# -- the `kimi` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class KimiConfig(KimiSettings, AlgorithmConfig):
    """`algorithm: {name: kimi, ...}`: GRPO's PPO settings and the Kimi length reward's."""

    name: str = field("kimi", help="Algorithm name (see `dcrl algorithms`).")


class Kimi(Preset):
    name = "kimi"
    config_class = KimiConfig
    target_class = KimiTarget
    config: KimiConfig


ALGORITHM = Kimi
