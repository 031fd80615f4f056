"""ICR — Implicit Compression Regularization (arXiv 2605.07316), code-faithful to the released
version (docs/papers.md §4.2, §4.5): GRPO plus the `icr` target.

Each group's shortest correct response gets a bonus C/k added to its advantage (k = groups with a
correct response, C = 128): REINFORCE under the "virtual shorter distribution", on-policy, with
the LP-F soft overlong penalty in the reward (`lp_f: true`). The recipe is `dcrl.targets.icr`;
`algorithm: {name: composed, log_ratio_clamp: 20, targets: [icr]}` is the same run.
The length–accuracy correlation is logged for every algorithm by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.icr import ICRSettings, ICRTarget


@dataclass
class ICRConfig(ICRSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `icr` target's, in one section."""

    name: str = field("icr", help="Algorithm name (see `dcrl algorithms`).")
    log_ratio_clamp: float | None = field(
        20.0, gt=0, le=1000, help="The ICR code clamps log-ratios to ±20."
    )


class ICR(Preset):
    name = "icr"
    config_class = ICRConfig
    target_class = ICRTarget
    config: ICRConfig


ALGORITHM = ICR
