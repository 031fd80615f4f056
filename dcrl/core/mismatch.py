"""The rollout-trainer mismatch: how far the sampling engine's log-probs are from the trainer's.

An engine with its own copy of the weights and its own kernels (vLLM) samples token o_t with
log-prob ℓ^eng_t, while the trainer scores the same token with ℓ_t = log π_old(o_t). Even with
identical weights the two differ by the engines' rounding; with a stale or wrong copy they
differ by much more. The rollout is then off-policy by the ratio

    r_t = π_old(o_t) / π_eng(o_t) = exp(ℓ_t − ℓ^eng_t),

and the policy gradient estimated from the engine's samples is unbiased for π_old only when each
token's term is weighted by r_t. Truncated importance sampling (TIS) weights it by min(r_t, C):
a cap C bounds the variance that a token the engine found unlikely would add (the correction
verl and TRL offer for vLLM rollouts; docs/design.md, "The rollout-trainer mismatch").

Both functions take (N, Lr) tensors: `engine` (NaN where the engine reported no log-prob),
`trainer` (log π_old at T = 1) and the response `mask`.
"""

from __future__ import annotations

import torch

MISMATCH_METRICS = (
    "rollout/logprob_abs_diff_mean",
    "rollout/logprob_abs_diff_max",
    "rollout/engine_ratio_mean",
    "rollout/tokens_compared",
)


def _compared(engine: torch.Tensor, trainer: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if engine.shape != trainer.shape or engine.shape != mask.shape:
        raise ValueError(
            f"engine, trainer and mask must have one shape, got {tuple(engine.shape)}, "
            f"{tuple(trainer.shape)} and {tuple(mask.shape)}"
        )
    return mask.bool() & torch.isfinite(engine)


def logprob_mismatch(
    engine: torch.Tensor, trainer: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Per-token |ℓ − ℓ^eng| (mean and max) and the mean ratio exp(ℓ − ℓ^eng) over the response
    tokens the engine reported; NaN metrics when it reported none."""
    compared = _compared(engine, trainer, mask)
    count = int(compared.sum())
    if count == 0:
        nan = float("nan")
        return dict(zip(MISMATCH_METRICS, (nan, nan, nan, 0.0), strict=True))
    difference = (trainer.double() - engine.double())[compared]
    return {
        "rollout/logprob_abs_diff_mean": float(difference.abs().mean()),
        "rollout/logprob_abs_diff_max": float(difference.abs().max()),
        "rollout/engine_ratio_mean": float(difference.exp().mean()),
        "rollout/tokens_compared": float(count),
    }


def truncated_importance_weights(
    engine: torch.Tensor, trainer: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """min(exp(ℓ − ℓ^eng), cap) on the compared tokens, 1 elsewhere (padding, or a token the
    engine reported no log-prob for): (N, Lr) float32, no grad."""
    if not cap >= 1.0:
        raise ValueError(f"the importance-weight cap must be ≥ 1, got {cap!r}")
    compared = _compared(engine, trainer, mask)
    ratio = (trainer.detach().double() - engine.double()).exp().clamp(max=cap)
    return torch.where(compared, ratio, torch.ones_like(ratio)).float()


def correct_rollout(
    engine: torch.Tensor,
    trainer: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    cap: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The mismatch metrics of `logprob_mismatch`, and with a `cap` the advantages weighted by
    the truncated importance weights (their mean logged as rollout/is_weight_mean); without a
    cap, the advantages as they are. `advantages` (N, L ≤ Lr), its rows the rollout's."""
    metrics = logprob_mismatch(engine, trainer, mask)
    if not cap:
        return advantages, metrics
    weights = truncated_importance_weights(engine, trainer, mask, cap)
    width = advantages.shape[1]
    metrics["rollout/is_weight_mean"] = float(weights[mask.bool()].mean())
    return advantages * weights[:, :width].to(advantages), metrics
