"""One step protocol, shared by dcrl's trainer, the TRL adapter (dcrl.integrations.trl) and the
verl adapter (dcrl.integrations.verl): what every trainer calls between its rollout and its
update, so that any algorithm, a composition of targets included, means the same in all three.

    prepare(algorithm, batch, scores, ctx)  the algorithm's step recipe: GRPO and every
        target's `apply` on one `StepDraft`, in stage order (dcrl.algorithms.base); returns the
        TrainBatch and its metrics.
    measure_entropy(...) / entropy_signals(sums)  the entropy signals the controllers read, from
        one dcrl.core function (`entropy_sums`), summed over micro-batches or processes first;
        the rows a target swapped in from another distribution are named by the algorithm
        (`Algorithm.foreign_rows`), not by a column this module knows.
    after_update(algorithm, sums)  the signals of the step's update, handed to the algorithm
        (its controllers); returns them for the trainer's logs.
    replaces_rows(algorithm) / row_replacing_targets(algorithm)  what the targets *do*, for the
        adapters' refusals: a target with stage "replace" swaps rows for samples drawn outside
        the trainer's own rollout (AEPO's tempered groups), which a trainer must be able to
        sample, score and splice in.
    check_importance_cap(cap, algorithm)  a truncated importance-weight cap (vLLM's mismatch
        correction) needs the rollout's rows, which a row-replacing target does not keep.
    loss_term_targets(algorithm)  the targets that add a loss term (Entropy-Reg), which an
        engine that computes its own loss (TRL, verl) would silently drop.

The adapters hold no algorithm logic of their own: they translate their batches into dcrl's
`RolloutBatch` and `StepContext`, call `prepare`, and translate the TrainBatch back.
"""

from __future__ import annotations

from typing import Any

import torch

from dcrl.algorithms.base import Algorithm
from dcrl.config import ConfigError
from dcrl.core.logprobs import ENTROPY_SIGNALS, entropy_signals, entropy_sums
from dcrl.step_data import StepContext, TrainBatch
from dcrl.targets.base import adds_loss_term

__all__ = [
    "ENTROPY_SIGNALS",
    "after_update",
    "check_importance_cap",
    "entropy_signals",
    "loss_term_targets",
    "measure_entropy",
    "prepare",
    "replaces_rows",
    "row_replacing_targets",
    "targets_of",
]


def targets_of(algorithm: Algorithm) -> list[Any]:
    """The targets an algorithm composes (dcrl.targets.Target objects); [] for one with none
    (grpo, the policy-loss choices)."""
    return list(getattr(algorithm, "targets", []) or [])


def row_replacing_targets(algorithm: Algorithm) -> list[Any]:
    """The targets that swap rows for other samples (stage "replace", e.g. aepo)."""
    return [target for target in targets_of(algorithm) if target.stage == "replace"]


def loss_term_targets(algorithm: Algorithm) -> list[Any]:
    """The targets that add a term to the loss (`Target.loss_term`, e.g. entropy_reg): an
    adapter whose engine computes the loss itself must refuse them."""
    return [target for target in targets_of(algorithm) if adds_loss_term(target)]


def replaces_rows(algorithm: Algorithm) -> bool:
    """Whether the step swaps some rows for samples the trainer draws outside its own rollout."""
    return bool(row_replacing_targets(algorithm))


def check_importance_cap(cap: float | None, algorithm: Algorithm) -> None:
    """Raise ConfigError when `train.rollout_is_cap` is set for an algorithm whose targets swap
    rows: the importance weights line up with the rollout's rows, which such a target replaces."""
    if cap and replaces_rows(algorithm):
        raise ConfigError(
            f"train.rollout_is_cap={cap}: the importance weights line up with the rollout's "
            f"rows, which {row_replacing_targets(algorithm)[0].name} replaces; set "
            "train.rollout_is_cap=0"
        )


def prepare(
    algorithm: Algorithm, batch: Any, scores: torch.Tensor, ctx: StepContext
) -> tuple[TrainBatch, dict[str, float]]:
    """The step's training data: the algorithm's recipe on the rollout `batch` (a RolloutBatch)
    and its (N,) task scores, with the trainer's `ctx` for extra samples and log-prob passes."""
    train_batch, metrics = algorithm.prepare(batch, scores, ctx)
    return train_batch, dict(metrics)


def measure_entropy(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    foreign_rows: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """`dcrl.core.logprobs.entropy_sums` of a batch; `foreign_rows` (N,) bool marks the rows
    drawn from another distribution (`Algorithm.foreign_rows` of the batch's extras), left out
    of the on-policy signal. (5,) float64."""
    return entropy_sums(logprobs, mask, foreign_rows, entropy)


def after_update(algorithm: Algorithm, sums: torch.Tensor) -> dict[str, float]:
    """Hand the step's entropy signals (from summed `measure_entropy`) to the algorithm's
    controllers; returns them, with what its targets add (AEPO's `measure_replaced`: the
    entropy of all the policy's own answers)."""
    signals = entropy_signals(sums)
    return {**signals, **(algorithm.after_update(signals) or {})}
