"""LP-F: GRPO on accuracy plus the DAPO soft overlong penalty (Yu et al. 2025, arXiv 2503.14476),
the length baseline of the ICR paper (docs/papers.md §4.4): 0 below max − buffer tokens, then
a linear ramp to −1 at max. A preset of the `lp_f` target (the one ICR's `lp_f` option runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.lp_f import LPFSettings, LPFTarget


@dataclass
class LPFConfig(LPFSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `lp_f` target's, in one section."""

    name: str = field("lp_f", help="Algorithm name (see `dcrl algorithms`).")


class LPF(Preset):
    name = "lp_f"
    config_class = LPFConfig
    target_class = LPFTarget
    config: LPFConfig


ALGORITHM = LPF
