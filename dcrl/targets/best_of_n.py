"""`best_of_n`: the best of the group's n responses — REINFORCE toward the best-of-n
distribution of π_old, the target BOND (Sessa et al., arXiv 2407.14622) distills, here virtual
and on-policy like ICR's (dcrl; no paper runs it as a regularizer).

A sequence-level bonus (stage "bonus"): each group's highest-reward response gets + `weight` on
its advantage (`dcrl.core.regularizers.best_of_n_bonus`); groups whose rewards are all equal get
nothing. With 0/1 rewards it pushes one correct answer of each mixed group — the hard prompts,
where pass@1 lags pass@n; with graded rewards (partial credit, a reward model) it picks the
top-scoring one, which GRPO alone weighs only by its z-score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dcrl.config import field
from dcrl.core.regularizers import best_of_n_bonus
from dcrl.step_data import StepContext
from dcrl.targets.base import StepDraft, Target, TargetConfig


@dataclass
class BestOfNConfig(TargetConfig):
    weight: float = field(
        1.0,
        ge=0,
        le=1e6,
        help="Advantage added to each group's best response: REINFORCE with reward `weight` "
        "under the best-of-n law (1 is the size of a GRPO advantage).",
    )

    def validate(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be ≥ 0 (a bonus toward the best), got {self.weight}")


class BestOfNTarget(Target):
    name = "best_of_n"
    config_class = BestOfNConfig
    stage = "bonus"
    config: BestOfNConfig

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        draft.advantages, selected = best_of_n_bonus(
            draft.advantages, draft.rewards, draft.batch.group_index, self.config.weight
        )
        marked = torch.zeros(len(draft.batch), dtype=torch.bool)
        marked[selected] = True
        draft.extras["best_of_n_selected"] = marked
        return {"best_of_n/num_selected": float(selected.numel())}


TARGET = BestOfNTarget
