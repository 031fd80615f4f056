"""DCPO — Distribution-Centric Policy Optimization (arXiv 2601.12730), code-faithful to the
released version (docs/papers.md §3.2–3.4): GRPO plus the `dcpo` target.

The same entropy control as AEPO, fully on-policy: the batch's own correct responses are
re-weighted per token by ρ = π_old^T / π_old, and the REINFORCE term is mixed with GRPO by an
adaptive α:  Â'_{i,t} = (1 − α) Â_i + α c_i ρ_{i,t}. The recipe is `dcrl.targets.dcpo`;
`algorithm: {name: composed, targets: [dcpo]}` is the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.dcpo import DCPOSettings, DCPOTarget


@dataclass
class DCPOConfig(DCPOSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `dcpo` target's, in one section."""

    name: str = field("dcpo", help="Algorithm name (see `dcrl algorithms`).")


class DCPO(Preset):
    name = "dcpo"
    config_class = DCPOConfig
    target_class = DCPOTarget
    config: DCPOConfig


ALGORITHM = DCPO
