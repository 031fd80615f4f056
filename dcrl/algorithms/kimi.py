"""Kimi-style group length reward (Kimi k1.5, arXiv 2501.12599), the ICR paper's LP2 baseline
(docs/papers.md §4.4): λ = 0.5 − (L − L_min)/(L_max − L_min) within the group; a correct
response gets λ, a wrong one min(0, λ). A preset of the `kimi` target.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.kimi import KimiSettings, KimiTarget


@dataclass
class KimiConfig(KimiSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `kimi` target's, in one section."""

    name: str = field("kimi", help="Algorithm name (see `dcrl algorithms`).")


class Kimi(Preset):
    name = "kimi"
    config_class = KimiConfig
    target_class = KimiTarget
    config: KimiConfig


ALGORITHM = Kimi
