"""A target of your own: the group's majority answer as the target distribution.

REINFORCE toward "the answer most of the group gives" — the label-free target of test-time RL
(TTRL, Zuo et al., arXiv 2504.16084) — as a bonus beside the verifiable reward: each response
whose final number is its group's majority answer gets + `weight` on its advantage. It follows
the contract in dcrl/targets/__init__.py: a TargetConfig with defaults and help, a stage
("bonus": per-response advantages in and out), metrics under its own name, and a state that the
checkpoint keeps.

Run it beside DCPO (the module must be importable; here from this folder):

    PYTHONPATH=examples/targets dcrl train -c tiny-grpo algorithm.name=composed \
        'algorithm.targets=[{name: dcpo, target_entropy: 0.15}, {name: "my_target:MajorityVote"}]'
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from dcrl.config import field
from dcrl.step_data import StepContext
from dcrl.targets import StepDraft, Target, TargetConfig

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class MajorityVoteConfig(TargetConfig):
    weight: float = field(
        0.5, help="Advantage added to each response that gives its group's majority answer."
    )
    min_agreement: float = field(
        0.5, help="A group has a majority only when more than this fraction of it agrees."
    )

    def validate(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be ≥ 0 (a bonus), got {self.weight}")
        if not 0 <= self.min_agreement < 1:
            raise ValueError(f"min_agreement must be in [0, 1), got {self.min_agreement}")


def final_answer(text: str) -> str | None:
    """The last number in a response, or None.

    >>> final_answer("3 + 4 = 7, so 7"), final_answer("no idea")
    ('7', None)
    """
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


def majority_agreement(
    answers: list[str | None], group_index: torch.Tensor, min_agreement: float
) -> torch.Tensor:
    """(N,) bool: the response gives its group's most common answer, held by more than
    `min_agreement` of the group (ties: the answer seen first)."""
    groups = group_index.tolist()
    agrees = torch.zeros(len(answers), dtype=torch.bool)
    for group in dict.fromkeys(groups):
        rows = [i for i, g in enumerate(groups) if g == group]
        votes = Counter(answers[i] for i in rows if answers[i] is not None)
        if not votes:
            continue
        answer, count = votes.most_common(1)[0]
        if count > min_agreement * len(rows):
            for i in rows:
                agrees[i] = answers[i] == answer
    return agrees


class MajorityVote(Target):
    name = "majority_vote"
    config_class = MajorityVoteConfig
    stage = "bonus"
    config: MajorityVoteConfig

    def __init__(self, config: MajorityVoteConfig, base: Any) -> None:
        super().__init__(config, base)
        self.total_agreeing = 0  # kept in the checkpoint, to show how state round-trips

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        answers = [final_answer(text) for text in draft.batch.response_texts]
        agrees = majority_agreement(answers, draft.batch.group_index, self.config.min_agreement)
        draft.advantages = draft.advantages + self.config.weight * agrees.to(draft.advantages.dtype)
        draft.extras["majority_vote_selected"] = agrees
        self.total_agreeing += int(agrees.sum())
        return {
            "majority_vote/agree_frac": float(agrees.float().mean()),
            "majority_vote/total_agreeing": float(self.total_agreeing),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"total_agreeing": self.total_agreeing}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total_agreeing = int(state["total_agreeing"])
