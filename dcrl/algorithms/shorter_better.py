"""ShorterBetter (Yi et al. 2025, arXiv 2504.21370), as in the ICR paper's baselines
(docs/papers.md §4.4): the reward α·1[correct] − β·|L − L_SOL| replaces accuracy, L_SOL being
the group's shortest correct length (the group mean when none is correct). A preset of the
`shorter_better` target.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.shorter_better import ShorterBetterSettings, ShorterBetterTarget


@dataclass
class ShorterBetterConfig(ShorterBetterSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `shorter_better` target's, in one section."""

    name: str = field("shorter_better", help="Algorithm name (see `dcrl algorithms`).")


class ShorterBetter(Preset):
    name = "shorter_better"
    config_class = ShorterBetterConfig
    target_class = ShorterBetterTarget
    config: ShorterBetterConfig


ALGORITHM = ShorterBetter
