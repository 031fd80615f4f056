"""What every target shares: its config, the draft of the step's training data it edits, and the
class a target (built in or a user's) subclasses. The contract is in the package docstring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from dcrl.algorithms.base import AlgorithmConfig, StepContext, TrainBatch
from dcrl.algorithms.entropy_control import EntropyControl, EntropyControlFields
from dcrl.config import field
from dcrl.core.advantages import broadcast_to_tokens
from dcrl.core.control import ControlDecision, EntropyController

# The order the composition applies the targets in, by what they change (package docstring).
Stage = Literal["bonus", "mix", "replace"]
STAGES: tuple[Stage, ...] = ("bonus", "mix", "replace")


@dataclass
class TargetConfig:
    """A target's settings; subclasses add theirs (each with its default and help text)."""

    name: str = field(help="The target: aepo, dcpo, icr, best_of_n, or 'package.module:Class'.")

    def validate(self) -> None:
        """Raise ValueError('<field> ...: <problem>; <fix>') on a bad setting."""


@dataclass
class StepDraft:
    """One step's training data while the targets edit it; N rows aligned with `batch` until a
    row replacement swaps some rows for other samples.

    batch: the on-policy RolloutBatch (read it; do not change it).
    scores: (N,) the task's scores. rewards: (N,) the reward after every target's shaping, which
        the base estimator normalized into `advantages`.
    advantages: (N,) per-response (bonus stage) or (N, Lr) per-token (after a mix).
    input_ids / attention_mask: (N, Lp + Lr); response_mask: (N, Lr).
    old_logprobs: (N, Lr) log π_old at T = 1 once a target has scored the rows (DCPO shares its
        pass); None: the composition asks `StepContext.old_logprobs` at the end. A target that
        changes rows sets it back to None.
    extras: (N, ...) tensors the loss or the trainer reads (e.g. `is_reinforce`).
    """

    batch: Any
    scores: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @classmethod
    def start(
        cls, batch: Any, scores: torch.Tensor, rewards: torch.Tensor, advantages: torch.Tensor
    ) -> StepDraft:
        input_ids, attention_mask = batch.sequences()
        return cls(
            batch, scores, rewards, advantages, input_ids, attention_mask, batch.response_mask
        )

    def finish(self, ctx: StepContext) -> TrainBatch:
        """The TrainBatch for the update: per-token advantages, 0 on padding."""
        mask = self.response_mask
        old_logprobs = self.old_logprobs
        if old_logprobs is None:
            old_logprobs = ctx.old_logprobs(self.input_ids, self.attention_mask, mask)
        advantages = self.advantages
        if advantages.dim() == 1:
            advantages = broadcast_to_tokens(advantages, mask)  # (N, Lr)
        return TrainBatch(
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            response_mask=mask,
            old_logprobs=old_logprobs,
            advantages=advantages * mask.to(advantages.dtype),
            extras=self.extras,
        )


class Target:
    """A target distribution: REINFORCE toward it, written into the step's draft.

    Subclasses set `name`, `config_class`, `stage` and implement `apply`; the other methods are
    optional hooks (package docstring).
    """

    name: ClassVar[str] = "target"
    config_class: ClassVar[type[TargetConfig]] = TargetConfig
    stage: ClassVar[Stage] = "bonus"
    shapes_rewards: ClassVar[bool] = False  # True: `shape_rewards` may change the reward
    controls_entropy: ClassVar[bool] = False  # True: owns an entropy controller

    def __init__(self, config: TargetConfig, base: AlgorithmConfig) -> None:
        self.config = config
        self.base = base  # the base estimator's settings (advantage_std, ...)

    def shape_rewards(self, batch: Any, rewards: torch.Tensor) -> torch.Tensor:
        """The reward the base estimator normalizes, (N,) -> (N,); unchanged by default."""
        return rewards

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        """Write this target's REINFORCE term into `draft`; return its metrics."""
        raise NotImplementedError

    def after_update(self, metrics: dict[str, float]) -> None:
        """Called once per step with the update's metrics (a controller reads its entropy)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ControlledTarget(Target):
    """A target whose temperature (and optionally strength) an entropy controller sets; its
    config mixes in `EntropyControlFields`, and its state is the controller's."""

    controls_entropy = True

    def __init__(self, config: TargetConfig, base: AlgorithmConfig) -> None:
        super().__init__(config, base)
        assert isinstance(config, EntropyControlFields)
        self.control = EntropyControl(config)

    @property
    def controller(self) -> EntropyController:
        return self.control.controller

    def decide(self) -> tuple[ControlDecision, dict[str, float]]:
        """This step's decision (no side effects) and its control/* metrics."""
        return self.control.decide()

    def after_update(self, metrics: dict[str, float]) -> None:
        self.control.after_update(metrics)

    def state_dict(self) -> dict[str, Any]:
        return self.control.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.control.load_state_dict(state)
