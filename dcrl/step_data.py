"""The data of one training step, below both the targets and the algorithms: what a step reads
from its rollouts (`RolloutBatchLike`), what a trainer lends it (`StepContext`), the draft the
targets edit (`StepDraft`) and the batch the update trains on (`TrainBatch`). The base
estimator's settings (`AlgorithmConfig`) are GRPO's, in dcrl.algorithms.base.

Layering (docs/design.md, "Layers"; tests/test_layers.py checks it):

    dcrl.core  <  dcrl.step_data  <  target contract (dcrl.targets, dcrl.targets.base)
               <  dcrl.algorithms  <  the methods (dcrl/targets/<name>.py)  <  dcrl.train, ...

This module imports dcrl.core only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dcrl.core.advantages import broadcast_to_tokens


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
        then the policy being updated, and the loss uses its own detached log-probs.
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


@dataclass(init=False)
class StepContext:
    """What `Algorithm.prepare` (and each target's `apply`) may use. Built by the trainer for
    each step.

    rollout(prompt_indices, n, temperature): sample more responses for some of this step's prompts
        through the rollout backend (AEPO's tempered groups); returns (RolloutBatch, scores (M,)),
        the batch's group_index numbering the given prompts 0, 1, ...
    logprob_pass(input_ids, attention_mask, response_mask, temperature=1.0, with_entropy=False):
        log-probs (and full-vocabulary entropy) of the responses under the current (old) policy
        with logits / temperature, no grad; (N, Lr) each (entropy None unless asked).
    on_policy: the update takes exactly one optimizer step on this batch (one mini-batch, one
        epoch), so π_old at T = 1 is the policy being updated: `old_logprobs` skips that
        pass and returns None, and the loss uses its own detached log-probs (ratio exactly 1).

    `score` is the old name of `logprob_pass`, accepted and readable until every caller uses
    the new one ("score" now means only the task's grade of a response).
    """

    step: int
    rollout: Callable[..., tuple[Any, torch.Tensor]]
    logprob_pass: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    on_policy: bool = False

    def __init__(
        self,
        step: int,
        rollout: Callable[..., tuple[Any, torch.Tensor]],
        logprob_pass: Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None = None,
        on_policy: bool = False,
        *,
        score: Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    ) -> None:
        if (logprob_pass is None) == (score is None):
            raise TypeError(
                "StepContext takes one log-prob pass: logprob_pass= (or its old name score=)"
            )
        self.step = step
        self.rollout = rollout
        self.logprob_pass = logprob_pass if logprob_pass is not None else score
        self.on_policy = on_policy

    @property
    def score(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
        """Deprecated: the old name of `logprob_pass`."""
        return self.logprob_pass

    def old_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """log π_old at T = 1 of the responses for the PPO ratio: (N, Lr), or None when the
        update is on-policy (the loss then takes the current log-probs, detached)."""
        if self.on_policy:
            return None
        return self.logprob_pass(input_ids, attention_mask, response_mask)[0]


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
    "RolloutBatchLike",
    "StepContext",
    "StepDraft",
    "TrainBatch",
]
