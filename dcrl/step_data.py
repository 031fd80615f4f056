"""The data of one training step, below both the targets and the algorithms: the base
estimator's settings (`AlgorithmConfig`, GRPO's PPO-clip update), what a step reads from its
rollouts (`RolloutBatchLike`), what a trainer lends it (`StepContext`), the draft the targets
edit (`StepDraft`) and the batch the update trains on (`TrainBatch`).

Layering (docs/design.md, "Layers"; tests/test_layers.py checks it):

    dcrl.core  <  dcrl.step_data  <  dcrl.targets  <  dcrl.algorithms  <  dcrl.train, integrations

This module imports dcrl.core and the config helpers only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from dcrl.config import field
from dcrl.core.advantages import broadcast_to_tokens
from dcrl.core.losses import policy_loss_spec

AggMode = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]


def own_name(config_class: type) -> str:
    """The algorithm a config class configures: the default of its `name` field."""
    return config_class.__dataclass_fields__["name"].default


@dataclass
class AlgorithmConfig:
    """PPO-clip update settings of the base estimator, GRPO, shared by all algorithms (defaults:
    docs/papers.md §1.2 and §7). Each algorithm's config subclasses it and sets its own `name`."""

    name: str = field("grpo", help="Algorithm name (see `dcrl algorithms`).")
    clip_low: float = field(
        0.2, ge=0, lt=1, help="PPO ε_low: the ratio is clipped below at 1 − ε_low."
    )
    clip_high: float = field(
        0.2,
        ge=0,
        le=100,
        help="PPO ε_high: clipped above at 1 + ε_high (DAPO clip-higher uses 0.28).",
    )
    dual_clip: float | None = field(
        3.0,
        gt=1,
        le=1e6,
        help="Dual-clip constant c for negative advantages (Ye et al. 2020); null disables.",
    )
    log_ratio_clamp: float | None = field(
        None,
        gt=0,
        le=1000,
        help="Clamp log(π_θ/π_old) to ±this before exponentiating (the ICR code uses 20).",
    )
    loss_agg_mode: AggMode = field(
        "token-mean",
        help="How token losses become one scalar; token-mean over the mini-batch is the papers' "
        "(DAPO) choice; seq-mean-token-sum-norm is Dr.GRPO.",
    )
    advantage_std: Literal["unbiased", "population", "none"] = field(
        "unbiased",
        help="GRPO group std: unbiased (n−1, the papers' code), population, or none (Dr.GRPO).",
    )
    policy_loss: str = field(
        "ppo_clip",
        help="Policy loss, a name registered in dcrl.core.losses: ppo_clip, or clip_cov / kl_cov "
        "(the Cui et al. 2025 baselines).",
    )

    def validate(self) -> None:
        own = own_name(type(self))
        if self.name != own:
            raise ValueError(
                f"name: {self.name!r} is not the algorithm {type(self).__name__} configures "
                f"({own!r}); build {self.name!r}'s own config "
                f"(dcrl.algorithms.get_algorithm_class({self.name!r}).config_class) or leave "
                f"name at {own!r}"
            )
        if not 0 <= self.clip_low < 1:
            raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low}")
        if self.clip_high < 0:
            raise ValueError(f"clip_high must be ≥ 0, got {self.clip_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 (or null to disable), got {self.dual_clip}")
        policy_loss_spec(self.policy_loss)  # ValueError naming the registered losses


class RolloutBatchLike(Protocol):
    """What a step reads from its rollouts (dcrl.rollout.RolloutBatch is one): N rows, P prompts
    × n responses, prompts left-padded and responses right-padded.

    group_index: (N,) long, the prompt of each row. response_mask: (N, Lr) 1 on response
    tokens. response_lengths: (N,) long. response_texts: N decoded responses.
    """

    group_index: torch.Tensor
    response_mask: torch.Tensor
    response_lengths: torch.Tensor
    response_texts: list[str]

    def __len__(self) -> int: ...

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), (N, Lp + Lr) each: prompt then response."""
        ...

    @classmethod
    def pad_to_common(cls, batches: Sequence[Any]) -> list[Any]:
        """The batches padded to one prompt and one response width, rows unchanged."""
        ...


@dataclass
class TrainBatch:
    """One step's training data, N rows, aligned with a rollout batch.

    input_ids / attention_mask: (N, Lp + Lr), prompt left-padded then response right-padded.
    response_mask: (N, Lr), 1 on the response tokens the loss sees.
    old_logprobs: (N, Lr), log π_old of the response tokens at T = 1 (no grad), or None when the
        update is on-policy (one optimizer step on the batch, `StepContext.on_policy`): π_old is
        then the policy the loss scores with, and the loss uses its detached log-probs.
    advantages: (N, Lr), per-token advantages (sequence advantages broadcast).
    extras: more (N, ...) tensors an algorithm's loss needs (e.g. old entropy); selected with the rows.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor | None
    advantages: torch.Tensor
    extras: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> TrainBatch:
        return TrainBatch(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            response_mask=self.response_mask[index],
            old_logprobs=None if self.old_logprobs is None else self.old_logprobs[index],
            advantages=self.advantages[index],
            extras={k: v[index] for k, v in self.extras.items()},
        )

    def to(self, device: torch.device | str) -> TrainBatch:
        """The same batch with every tensor on `device` (the model's, for the update)."""
        return TrainBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            response_mask=self.response_mask.to(device),
            old_logprobs=None if self.old_logprobs is None else self.old_logprobs.to(device),
            advantages=self.advantages.to(device),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )


@dataclass
class StepContext:
    """What `Algorithm.prepare` (and each target's `apply`) may use. Built by the trainer for
    each step.

    rollout(prompt_indices, n, temperature): sample more responses for some of this step's prompts
        through the rollout backend (AEPO's tempered groups); returns (RolloutBatch, scores (M,)),
        the batch's group_index numbering the given prompts 0, 1, ...
    score(input_ids, attention_mask, response_mask, temperature=1.0, with_entropy=False):
        log-probs (and full-vocabulary entropy) of the responses under the current (old) policy
        with logits / temperature, no grad; (N, Lr) each (entropy None unless asked).
    on_policy: the update takes exactly one optimizer step on this batch (one mini-batch, one
        epoch), so π_old at T = 1 is the policy the loss scores with: `old_logprobs` skips that
        pass and returns None, and the loss uses its own detached log-probs (ratio exactly 1).
    """

    step: int
    rollout: Callable[..., tuple[Any, torch.Tensor]]
    score: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    on_policy: bool = False

    def old_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """log π_old at T = 1 of the responses for the PPO ratio: (N, Lr), or None when the
        update is on-policy (the loss then takes the current log-probs, detached)."""
        if self.on_policy:
            return None
        return self.score(input_ids, attention_mask, response_mask)[0]


@dataclass
class StepDraft:
    """One step's training data while the targets edit it; N rows aligned with `batch` until a
    row replacement swaps some rows for other samples.

    batch: the on-policy rollout batch (`RolloutBatchLike`; read it, do not change it).
    scores: (N,) the task's scores. rewards: (N,) the reward after every target's shaping, which
        the base estimator normalized into `advantages`.
    advantages: (N,) per-response (bonus stage) or (N, Lr) per-token (after a mix).
    input_ids / attention_mask: (N, Lp + Lr); response_mask: (N, Lr).
    old_logprobs: (N, Lr) log π_old at T = 1 once a target has scored the rows (DCPO shares its
        pass); None: the composition asks `StepContext.old_logprobs` at the end. A target that
        changes rows sets it back to None.
    extras: (N, ...) tensors the loss or the trainer reads; a target that swaps in rows drawn
        from another distribution marks them in the column it names as `Target.foreign_rows`.
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
        cls,
        batch: RolloutBatchLike,
        scores: torch.Tensor,
        rewards: torch.Tensor,
        advantages: torch.Tensor,
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


__all__ = [
    "AggMode",
    "AlgorithmConfig",
    "RolloutBatchLike",
    "StepContext",
    "StepDraft",
    "TrainBatch",
    "own_name",
]
