"""Entropy-Adv (Cheng et al. 2025, "Reasoning with Exploration: An Entropy Perspective",
arXiv 2506.14758), as the AEPO/DCPO papers ran it (docs/papers.md §5): a preset of the
`entropy_adv` target,

    Â_{i,t} ← Â_i + min(α · H_{i,t}, |Â_i| / κ)

with H the full-vocabulary entropy of π_old at T = 1, detached; the bound keeps the bonus from
flipping the advantage's sign.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.entropy_adv import EntropyAdvSettings, EntropyAdvTarget


@dataclass
class EntropyAdvConfig(EntropyAdvSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `entropy_adv` target's, in one section."""

    name: str = field("entropy_adv", help="Algorithm name (see `dcrl algorithms`).")


class EntropyAdv(Preset):
    name = "entropy_adv"
    config_class = EntropyAdvConfig
    target_class = EntropyAdvTarget
    config: EntropyAdvConfig


ALGORITHM = EntropyAdv
