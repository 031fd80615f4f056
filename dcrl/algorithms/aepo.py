"""AEPO — Arbitrary Entropy Policy Optimization (Wang et al., arXiv 2510.08141), code-faithful to
the released version (docs/papers.md §2.2–2.4): GRPO plus the `aepo` target.

Each step: GRPO on the on-policy batch, plus REINFORCE (advantage +1, no baseline) on correct
samples drawn *for real* at temperature T from the first quarter of the prompts, swapped in for
the first m rows; T (and m) follow the entropy controller. The recipe is `dcrl.targets.aepo`;
`algorithm: {name: composed, targets: [aepo]}` is the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.aepo import AEPOSettings, AEPOTarget


@dataclass
class AEPOConfig(AEPOSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `aepo` target's, in one section."""

    name: str = field("aepo", help="Algorithm name (see `dcrl algorithms`).")


class AEPO(Preset):
    name = "aepo"
    config_class = AEPOConfig
    target_class = AEPOTarget
    config: AEPOConfig


ALGORITHM = AEPO
