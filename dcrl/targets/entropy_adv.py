"""Entropy-Adv (Cheng et al. 2025, "Reasoning with Exploration: An Entropy Perspective",
arXiv 2506.14758), as the AEPO/DCPO papers ran it (docs/papers.md §5): its settings, the
`entropy_adv` target and the `entropy_adv` algorithm (GRPO plus that target, at the bottom).

    Â_{i,t} ← Â_i + min(α · H_{i,t}, |Â_i| / κ)

with H the full-vocabulary entropy of π_old at T = 1, detached; the bound keeps the bonus from
flipping the advantage's sign. A token-level edit of the advantages (stage "mix"); its scoring
pass at T = 1 becomes the batch's old log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.regularizers import entropy_advantage
from dcrl.step_data import StepContext, StepDraft
from dcrl.targets.base import Target, TargetConfig


@dataclass
class EntropyAdvSettings:
    """Entropy-Adv's settings, shared by the `entropy_adv` target and preset."""

    alpha: float = field(0.4, ge=0, le=100, help="α: entropy bonus scale (paper: 0.4).")
    kappa: float = field(2.0, gt=0, le=1e6, help="κ: the bonus is at most |Â|/κ (paper: 2).")


@dataclass
class EntropyAdvTargetConfig(EntropyAdvSettings, TargetConfig):
    """The `entropy_adv` target's settings."""


class EntropyAdvTarget(Target):
    name = "entropy_adv"
    config_class = EntropyAdvTargetConfig
    stage = "mix"
    config: EntropyAdvTargetConfig

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        cfg = self.config
        advantages = draft.advantages  # (N,)
        mask = draft.response_mask
        old_logprobs, old_entropy = ctx.logprob_pass(
            draft.input_ids, draft.attention_mask, mask, with_entropy=True
        )
        token_advantages = entropy_advantage(advantages, old_entropy, mask, cfg.alpha, cfg.kappa)
        bonus = (token_advantages - advantages[:, None]) * mask
        draft.old_logprobs = old_logprobs
        draft.advantages = token_advantages  # (N, Lr)
        return {"entropy_adv/bonus_mean": float(bonus.sum() / mask.sum().clamp(min=1))}


TARGET = EntropyAdvTarget


# -- the `entropy_adv` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class EntropyAdvConfig(EntropyAdvSettings, AlgorithmConfig):
    """`algorithm: {name: entropy_adv, ...}`: GRPO's PPO settings and Entropy-Adv's."""

    name: str = field("entropy_adv", help="Algorithm name (see `dcrl algorithms`).")


class EntropyAdv(Preset):
    name = "entropy_adv"
    config_class = EntropyAdvConfig
    target_class = EntropyAdvTarget
    config: EntropyAdvConfig


ALGORITHM = EntropyAdv
