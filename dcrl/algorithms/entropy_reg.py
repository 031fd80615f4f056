"""Entropy-Reg: GRPO plus an entropy bonus in the loss, the baseline of the AEPO and DCPO papers
(docs/papers.md §5): a preset of the `entropy_reg` target, whose loss term is the bonus.

Code-faithful form (`form: sampled_nll`, EasyR1's `use_entropy_loss`): the bonus is the
sampled-token NLL −mean log π_θ(o_t), whose expected gradient on-policy is zero — it acts only
through sampling noise and the later off-policy mini-batches, which plausibly explains its
"unstable" label. `form: true_entropy` uses the full-vocabulary entropy instead, a real bonus.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Preset
from dcrl.config import field
from dcrl.targets.entropy_reg import EntropyRegSettings, EntropyRegTarget


@dataclass
class EntropyRegConfig(EntropyRegSettings, AlgorithmConfig):
    """The PPO settings of GRPO and the `entropy_reg` target's, in one section."""

    name: str = field("entropy_reg", help="Algorithm name (see `dcrl algorithms`).")


class EntropyReg(Preset):
    name = "entropy_reg"
    config_class = EntropyRegConfig
    target_class = EntropyRegTarget
    config: EntropyRegConfig


ALGORITHM = EntropyReg
