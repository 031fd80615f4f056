"""LP-F: GRPO on accuracy plus the DAPO soft overlong penalty (Yu et al. 2025, arXiv 2503.14476),
the length baseline of the ICR paper (docs/papers.md §4.4) and the penalty ICR's released scripts
add (the `icr` target's `lp_f` option runs this target): its settings, the `lp_f` target and the
`lp_f` algorithm (GRPO plus that target, at the bottom).

Reward shaping only: 0 below max − buffer tokens, then a linear ramp to −penalty at max; the base
estimator normalizes the shaped reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.shaping import overlong_penalty
from dcrl.targets.base import Target, TargetConfig


@dataclass
class LPFSettings:
    """LP-F's settings, shared by the `lp_f` target and the `lp_f` algorithm preset."""

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
        super().validate()  # type: ignore[misc]  # the config this is mixed into
        if self.buffer > self.max_length:
            raise ValueError(
                f"buffer ({self.buffer}) must be ≤ max_length ({self.max_length}): the penalty "
                "ramps over the last `buffer` tokens before max_length"
            )


@dataclass
class LPFTargetConfig(LPFSettings, TargetConfig):
    """The `lp_f` target's settings."""


class LPFTarget(Target):
    name = "lp_f"
    config_class = LPFTargetConfig
    shapes_rewards = True
    config: LPFTargetConfig

    def shape_rewards(self, batch: Any, rewards: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return rewards + overlong_penalty(
            batch.response_lengths, cfg.max_length, cfg.buffer, cfg.penalty
        )


TARGET = LPFTarget


# -- the `lp_f` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class LPFConfig(LPFSettings, AlgorithmConfig):
    """`algorithm: {name: lp_f, ...}`: GRPO's PPO settings and LP-F's."""

    name: str = field("lp_f", help="Algorithm name (see `dcrl algorithms`).")


class LPF(Preset):
    name = "lp_f"
    config_class = LPFConfig
    target_class = LPFTarget
    config: LPFConfig


ALGORITHM = LPF
