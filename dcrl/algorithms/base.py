"""What every algorithm shares: the config fields of the PPO-style update, the batch it trains on,
the context it may use while preparing a step, and the default PPO-clip loss.

An algorithm turns one step's rollouts and scores into a `TrainBatch` (old log-probs and per-token
advantages) in `prepare`, and may add a loss term in `loss`. The trainer owns everything else:
sampling, micro-batching, optimizer, logging, checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from dcrl.config import field
from dcrl.core import advantages as core_advantages
from dcrl.core import losses as core_losses

AggMode = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]


@dataclass
class AlgorithmConfig:
    """PPO-clip update settings shared by all algorithms (defaults: docs/papers.md §1.2 and §7)."""

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
    policy_loss: Literal["ppo_clip", "clip_cov", "kl_cov"] = field(
        "ppo_clip", help="Policy loss; clip_cov / kl_cov are the Cui et al. 2025 baselines."
    )

    def validate(self) -> None:
        if not 0 <= self.clip_low < 1:
            raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low}")
        if self.clip_high < 0:
            raise ValueError(f"clip_high must be ≥ 0, got {self.clip_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 (or null to disable), got {self.dual_clip}")


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
    """What `Algorithm.prepare` may use. Built by the trainer for each step.

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


class Algorithm:
    """Base class: GRPO's recipe. Subclasses override `prepare` and/or `loss_terms`."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig

    def __init__(self, config: AlgorithmConfig) -> None:
        self.config = config

    # -- the step recipe -------------------------------------------------------------------
    def prepare(
        self, batch: Any, scores: torch.Tensor, ctx: StepContext
    ) -> tuple[TrainBatch, dict[str, float]]:
        """GRPO (docs/papers.md §1.2): group-normalized advantages of the (shaped) rewards, old
        log-probs at T = 1."""
        rewards = self.shape_rewards(batch, scores)
        advantages = core_advantages.grpo_advantages(
            rewards, batch.group_index, std=self.config.advantage_std
        )
        return self.make_batch(batch, advantages, ctx), {
            "reward/shaped_mean": float(rewards.mean())
        }

    def shape_rewards(self, batch: Any, scores: torch.Tensor) -> torch.Tensor:
        """The reward the advantages are computed from; the task's scores unless a length-shaping
        baseline adds a term. (N,) -> (N,)."""
        return scores

    def loss(
        self,
        mb: TrainBatch,
        logprobs: torch.Tensor,
        entropy: torch.Tensor | None,
        counts: dict[str, float],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy loss of one micro-batch, normalized by the mini-batch's global `counts`.

        Args:
            mb: the micro-batch (n rows).
            logprobs: (n, Lr) log π_θ of the response tokens at T = 1, with grad.
            entropy: (n, Lr) full-vocabulary entropy at T = 1 (with grad only when
                `needs_entropy_grad`), or None when not computed.
            counts: {"num_tokens", "num_sequences"} of the whole mini-batch.
        """
        cfg = self.config
        loss_fn = core_losses.get_policy_loss(cfg.policy_loss)
        # Every registered loss takes the shared PPO options (KL-Cov accepts and ignores the
        # clip ones), so Clip-Cov clips exactly as configured instead of with its own defaults.
        options: dict[str, Any] = dict(
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            dual_clip=cfg.dual_clip,
            log_ratio_clamp=cfg.log_ratio_clamp,
            agg_mode=cfg.loss_agg_mode,
            num_tokens=counts["num_tokens"],
            num_sequences=counts["num_sequences"],
        )
        options.update(self.policy_loss_options())
        old_logprobs = logprobs.detach() if mb.old_logprobs is None else mb.old_logprobs
        loss, metrics = loss_fn(logprobs, old_logprobs, mb.advantages, mb.response_mask, **options)
        extra_loss, extra_metrics = self.loss_terms(mb, logprobs, entropy, counts)
        if extra_loss is not None:
            loss = loss + extra_loss
        return loss, {**metrics, **extra_metrics}

    def loss_terms(
        self,
        mb: TrainBatch,
        logprobs: torch.Tensor,
        entropy: torch.Tensor | None,
        counts: dict[str, float],
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """An extra loss term added to the policy loss (entropy bonus baselines); none by default."""
        return None, {}

    def policy_loss_options(self) -> dict[str, Any]:
        """Extra keyword options for the chosen policy loss (Clip-Cov / KL-Cov settings)."""
        return {}

    # -- what the trainer asks ---------------------------------------------------------------
    needs_entropy_grad: ClassVar[bool] = False

    def after_update(self, metrics: dict[str, float]) -> None:
        """Called once per step with the update's metrics (the controllers read their entropy)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- helpers for subclasses ------------------------------------------------------------
    def make_batch(
        self,
        batch: Any,
        advantages: torch.Tensor,
        ctx: StepContext,
        old_logprobs: torch.Tensor | None = None,
    ) -> TrainBatch:
        """Assemble a TrainBatch from a RolloutBatch; advantages (N,) or (N, Lr)."""
        input_ids, attention_mask = batch.sequences()
        response_mask = batch.response_mask
        if old_logprobs is None:
            old_logprobs = ctx.old_logprobs(input_ids, attention_mask, response_mask)
        if advantages.dim() == 1:
            advantages = core_advantages.broadcast_to_tokens(advantages, response_mask)
        return TrainBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            response_mask=response_mask,
            old_logprobs=old_logprobs,
            advantages=advantages * response_mask.to(advantages.dtype),
        )
