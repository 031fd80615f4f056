"""The one algorithm: GRPO (the base estimator), its settings (`AlgorithmConfig`, the PPO-clip
update every method shares), and a list of targets (dcrl.targets) composed on it, with the
registered policy loss its config names. Every name of `dcrl algorithms` is this class with its
own config: a `Preset` (GRPO plus at most one fixed target; each method's file in dcrl/targets/
ends with its own) or `composed` (dcrl.algorithms.composed).

A step (`prepare`), in an order fixed by what each target changes, not by the list, so that
every composition has one meaning; within a stage the list order holds:

    1. shape    each target's `shape_rewards`, in list order (LP-F, Kimi, ShorterBetter);
    2. base     GRPO advantages of the shaped reward, per response (N,);
    3. bonus    sequence-level bonuses added to those (icr, best_of_n): Â_i ← Â_i + b_i;
    4. mix      the token-level edit (dcpo, entropy_adv; at most one), e.g. DCPO's
                Â'_{i,t} = (1 − α)·Â_i + α·c_i·ρ_{i,t}, so α weighs its REINFORCE term against
                GRPO *with* the bonuses;
    5. replace  the row replacement (aepo, at most one): tempered rows with advantage +1 replace
                the first m rows, whatever the earlier stages gave them;
    6. old log-probs at T = 1 of the final rows (shared with a mix target's pass unless rows
       changed).

The update (`loss`, per micro-batch): the policy loss registered under `config.policy_loss`
(dcrl.core.losses; its registration says which config fields are its settings and whether it
draws random numbers), plus each target's `loss_term` (Entropy-Reg's bonus). The trainer owns
everything else: sampling, micro-batching, optimizer, logging, checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch

from dcrl.config import field
from dcrl.core import losses as core_losses
from dcrl.core.advantages import grpo_advantages
from dcrl.step_data import StepContext, StepDraft, TrainBatch
from dcrl.targets import STAGES, Target, TargetConfig, TargetError
from dcrl.targets.base import edits_draft

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
        core_losses.policy_loss_spec(self.policy_loss)  # ValueError naming the registered losses


class Algorithm:
    """GRPO plus targets. Subclasses say where the targets come from (`Composed`: the config's
    list; `Preset`: one fixed target) and the checkpoint layout."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig

    def __init__(self, config: AlgorithmConfig, targets: list[Target] | None = None) -> None:
        self.config = config
        self.targets: list[Target] = list(targets or [])
        self.loss_spec = core_losses.policy_loss_spec(config.policy_loss)
        # A loss's own settings (and, for a seeded one, its random source) come with a config
        # that carries them (the Clip-Cov preset); without them the loss runs on its defaults.
        self.loss_configured = all(hasattr(config, name) for name in self.loss_spec.options)
        self.loss_generator: torch.Generator | None = None
        if self.loss_spec.seeded and self.loss_spec.options and self.loss_configured:
            self.loss_generator = torch.Generator().manual_seed(0)

    # -- the step recipe -------------------------------------------------------------------
    def shape_rewards(self, batch: Any, scores: torch.Tensor) -> torch.Tensor:
        """The reward the advantages are computed from: the task's scores, shaped by each target
        in list order. (N,) -> (N,)."""
        rewards = scores
        for target in self.targets:
            rewards = target.shape_rewards(batch, rewards)
        return rewards

    def prepare(
        self, batch: Any, scores: torch.Tensor, ctx: StepContext
    ) -> tuple[TrainBatch, dict[str, float]]:
        """The step's TrainBatch and metrics from its rollouts (a RolloutBatchLike) and (N,)
        scores, in the stage order of the module docstring (docs/papers.md §1.2 for GRPO)."""
        rewards = self.shape_rewards(batch, scores)
        advantages = grpo_advantages(rewards, batch.group_index, std=self.config.advantage_std)
        draft = StepDraft.start(batch, scores, rewards, advantages)
        metrics: dict[str, float] = {}
        # The shaped reward is logged when it is what the step trains on: a target shaped it,
        # or no target edits the advantages (GRPO and the loss-only baselines).
        if any(t.shapes_rewards for t in self.targets) or not any(map(edits_draft, self.targets)):
            metrics["reward/shaped_mean"] = float(rewards.mean())
        for stage in STAGES:
            for target in (t for t in self.targets if t.stage == stage):
                add_metrics(metrics, target.apply(draft, ctx), target)
                if stage == "bonus" and draft.advantages.dim() != 1:
                    raise TargetError(
                        f"target {target.name!r} (stage bonus) left per-token advantages; a "
                        "bonus keeps them per response, (N,): declare stage = 'mix' instead"
                    )
        return draft.finish(ctx), metrics

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
        loss, metrics = self.loss_spec.loss_fn(
            logprobs, old_logprobs, mb.advantages, mb.response_mask, **options
        )
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
        """The targets' loss terms, summed in list order (Entropy-Reg's bonus); None if none."""
        total: torch.Tensor | None = None
        metrics: dict[str, float] = {}
        for target in self.targets:
            term, term_metrics = target.loss_term(mb, logprobs, entropy, counts)
            if term is not None:
                total = term if total is None else total + term
            metrics.update(term_metrics)
        return total, metrics

    def policy_loss_options(self) -> dict[str, Any]:
        """The chosen loss's own settings from the config (Clip-Cov's, KL-Cov's), and its random
        source when it draws one; {} when the config does not carry them."""
        if not self.loss_configured:
            return {}
        options: dict[str, Any] = {
            name: getattr(self.config, name) for name in self.loss_spec.options
        }
        if self.loss_generator is not None:
            options["generator"] = self.loss_generator
        return options

    # -- what the trainer asks ---------------------------------------------------------------
    @property
    def needs_entropy_grad(self) -> bool:
        """Whether a loss term differentiates the entropy (the trainer keeps its graph)."""
        return any(target.needs_entropy_grad for target in self.targets)

    @property
    def micro_batches_in_order(self) -> bool:
        """Whether the policy loss selects per call (its registration's
        `micro_batch_statistic`), so that micro-batches keep rollout order."""
        return self.loss_spec.micro_batch_statistic

    def foreign_rows(self, extras: Mapping[str, Any] | None) -> torch.Tensor | None:
        """(N,) bool: the rows of a batch with these `extras` that a target swapped in from
        another distribution (its `foreign_rows` column), left out of the policy's own entropy;
        None when no target marks any."""
        marked = None
        for target in self.targets:
            column = target.foreign_rows
            if column is None or extras is None or column not in extras:
                continue
            marked = extras[column] if marked is None else marked | extras[column]
        return marked

    def after_update(self, metrics: dict[str, float]) -> dict[str, float]:
        """Called once per step with the update's metrics (the controllers read their entropy);
        returns what the targets add to be logged beside them."""
        added: dict[str, float] = {}
        for target in self.targets:
            added.update(target.after_update(metrics) or {})
        return added

    def state_dict(self) -> dict[str, Any]:
        return {"targets": [target.state_dict() for target in self.targets], **self.loss_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for target, target_state in zip(self.targets, state["targets"], strict=True):
            target.load_state_dict(target_state)
        self.load_loss_state(state)

    def loss_state(self) -> dict[str, Any]:
        """The policy loss's random source ({"generator": ...}), or {} when it has none."""
        if self.loss_generator is None:
            return {}
        return {"generator": self.loss_generator.get_state().tolist()}

    def load_loss_state(self, state: dict[str, Any]) -> None:
        if self.loss_generator is not None:
            self.loss_generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


class Preset(Algorithm):
    """An algorithm name that is GRPO plus at most one target (`target_class`, None for GRPO
    itself and the policy-loss choices), configured by one flat config: the target's settings
    beside the PPO ones. Its checkpoint state is the target's own (the layout of the algorithms
    before the targets existed), plus the policy loss's random source if it has one."""

    target_class: ClassVar[type[Target] | None] = None

    def __init__(self, config: AlgorithmConfig) -> None:
        targets = []
        if self.target_class is not None:
            config_class = self.target_class.config_class
            target_fields = [f.name for f in fields(config_class) if f.init and f.name != "name"]
            settings = {name: getattr(config, name) for name in target_fields}
            target_config: TargetConfig = config_class(name=self.target_class.name, **settings)
            targets.append(self.target_class(target_config, config))
        super().__init__(config, targets)

    @property
    def target(self) -> Target:
        return self.targets[0]

    def state_dict(self) -> dict[str, Any]:
        state = self.target.state_dict() if self.targets else {}
        return {**state, **self.loss_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.targets:
            self.target.load_state_dict(state)
        self.load_loss_state(state)


def add_metrics(metrics: dict[str, float], new: dict[str, float], target: Target) -> None:
    """Merge a target's metrics; two targets logging one name would hide one of them."""
    clash = sorted(set(metrics) & set(new))
    if clash:
        raise TargetError(
            f"target {target.name!r} logs {clash[0]!r}, which another target (or the base) logs "
            f"too; name its metrics '{target.name}/...'"
        )
    metrics.update(new)


__all__ = [
    "AggMode",
    "Algorithm",
    "AlgorithmConfig",
    "Preset",
    "StepContext",
    "TrainBatch",
    "add_metrics",
    "own_name",
]
