"""Entropy-Reg: GRPO plus an entropy bonus in the loss, the baseline of the AEPO and DCPO papers
(docs/papers.md §5): its settings, the `entropy_reg` target (a loss term, no edit of the
advantages) and the `entropy_reg` algorithm (GRPO plus that target, at the bottom).

Code-faithful form (`form: sampled_nll`, EasyR1's `use_entropy_loss`): the bonus is the
sampled-token NLL −mean log π_θ(o_t), whose expected gradient on-policy is zero — it acts only
through sampling noise and the later off-policy mini-batches, which plausibly explains its
"unstable" label. `form: true_entropy` uses the full-vocabulary entropy instead, a real bonus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.regularizers import entropy_reg_term
from dcrl.step_data import TrainBatch
from dcrl.targets.base import Target, TargetConfig


@dataclass
class EntropyRegSettings:
    """Entropy-Reg's settings, shared by the `entropy_reg` target and preset."""

    coef: float = field(
        0.01,
        ge=0,
        le=100,
        help="Bonus coefficient (0.01 in the authors' script; code defaults 0.03 / 0.015).",
    )
    form: Literal["sampled_nll", "true_entropy"] = field(
        "sampled_nll",
        help="sampled_nll: the papers' estimator (code-faithful); true_entropy: full-vocabulary.",
    )


@dataclass
class EntropyRegTargetConfig(EntropyRegSettings, TargetConfig):
    """The `entropy_reg` target's settings."""


class EntropyRegTarget(Target):
    name = "entropy_reg"
    config_class = EntropyRegTargetConfig
    config: EntropyRegTargetConfig

    @property
    def needs_entropy_grad(self) -> bool:
        return self.config.form == "true_entropy"

    def loss_term(
        self,
        mb: TrainBatch,
        logprobs: torch.Tensor,
        entropy: torch.Tensor | None,
        counts: dict[str, float],
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        term = entropy_reg_term(
            logprobs,
            mb.response_mask,
            self.config.coef,
            form=self.config.form,
            entropy=entropy,
            agg_mode=self.base.loss_agg_mode,
            num_tokens=counts["num_tokens"],
            num_sequences=counts["num_sequences"],
        )
        return term, {"entropy_bonus": float(term.detach())}


TARGET = EntropyRegTarget


# -- the `entropy_reg` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class EntropyRegConfig(EntropyRegSettings, AlgorithmConfig):
    """`algorithm: {name: entropy_reg, ...}`: GRPO's PPO settings and Entropy-Reg's."""

    name: str = field("entropy_reg", help="Algorithm name (see `dcrl algorithms`).")


class EntropyReg(Preset):
    name = "entropy_reg"
    config_class = EntropyRegConfig
    target_class = EntropyRegTarget
    config: EntropyRegConfig


ALGORITHM = EntropyReg
