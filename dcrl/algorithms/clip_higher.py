"""Clip-higher (DAPO, Yu et al. 2025, arXiv 2503.14476): GRPO with an asymmetric clip range,
ε_high = 0.28 > ε_low = 0.2, so low-probability tokens can grow faster — the simplest
entropy-preserving baseline. A preset with no target: only `clip_high` differs from GRPO.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field


@dataclass
class ClipHigherConfig(AlgorithmConfig):
    name: str = field("clip_higher", help="Algorithm name (see `dcrl algorithms`).")
    clip_high: float = field(0.28, help="DAPO's ε_high (0.28); ε_low stays 0.2.")


class ClipHigher(Preset):
    name = "clip_higher"
    config_class = ClipHigherConfig


ALGORITHM = ClipHigher
