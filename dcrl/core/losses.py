"""Policy losses: aggregation modes, PPO clip / dual clip, KL estimators, Clip-Cov and KL-Cov.

Conventions: a batch of N responses right-padded to length L; `mask` (N, L) is 1 on valid
response tokens; log-probs are float32 (N, L); advantages are per sequence (N,) or per token
(N, L). Every policy loss has the signature

    loss_fn(logprobs, old_logprobs, advantages, mask, **options) -> (loss, metrics)

and is registered by name (`register_policy_loss`, `get_policy_loss`): "ppo_clip", "clip_cov",
"kl_cov". The registration also says what the loss needs (`PolicyLossSpec`: its own settings,
a seeded random source, micro-batches in rollout order), so that no trainer knows loss names.
`metrics` holds Python floats.

Aggregation and micro-batching. `aggregate_loss` takes optional *global* counts (`num_tokens`,
`num_sequences`) of the whole mini-batch. Passing them to every micro-batch makes the sum of the
micro-batch losses equal the loss of the whole mini-batch, for every mode, so gradient
accumulation is exact (verl does the same with `batch_num_tokens`/`global_batch_size`).

Code-faithful aggregation of the papers. The AEPO/DCPO/ICR code (EasyR1) takes a token-mean
*within* each micro-batch and divides it by the number of gradient-accumulation steps
(docs/papers.md §1.2): a mean of per-micro-batch token-means, close to but not exactly the
global token-mean. To reproduce it, call each micro-batch with local counts and scale:

    loss = aggregate_loss(loss_mat, mask, "token-mean") / num_micro_batches

References: PPO, Schulman et al. 2017 (arXiv 1707.06347); dual clip, Ye et al. 2020
(arXiv 1912.09729); clip-higher, DAPO (arXiv 2503.14476 §3.1); Dr.GRPO (arXiv 2503.20783
§3); KL estimators, Schulman 2020, "Approximating KL divergence" (joschu.net/blog/kl-approx.html);
Clip-Cov and KL-Cov, Cui et al. 2025 (arXiv 2505.22617 §4).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dcrl.core.masking import masked_mean, masked_sum

AGGREGATION_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)
KL_ESTIMATORS = ("k1", "k2", "k3")

Count = int | float | torch.Tensor
PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]

# The largest exponent a policy ratio is computed with: r = exp(min(log r, 20)). exp overflows
# float32 past log r ≈ 88.7, and then −A·r is inf and its gradient NaN (0·inf at A = 0). verl
# clamps log r to ±20 before exp for the same reason; capping only the exponent keeps every result
# with log r ≤ 20 (a ratio of 4.9e8, far outside any trust region) exactly as it was.
MAX_RATIO_EXPONENT = 20.0


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: Count | None = None,
    num_sequences: Count | None = None,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar.

    Modes (ℓ_it the per-token loss, m_it the mask, S the non-empty sequences):
      - "token-mean": Σ_it m ℓ / Σ_it m — every token weighs the same (DAPO, arXiv 2503.14476
        §3.3; the papers' default).
      - "seq-mean-token-mean": (1/|S|) Σ_i (Σ_t m ℓ / Σ_t m) — every sequence weighs the same
        (original GRPO, arXiv 2402.03300 eq. 3).
      - "seq-mean-token-sum": (1/|S|) Σ_i Σ_t m ℓ.
      - "seq-mean-token-sum-norm": (1/|S|) Σ_i Σ_t m ℓ / C, with a constant C (default L, the
        mask width) instead of each length — Dr.GRPO (arXiv 2503.20783 §3), equal to TRL's
        `dr_grpo` (÷ B·max_completion_length) and verl's mode of the same name.

    Sequences without valid tokens do not count in |S|. An empty mask gives 0, not NaN.

    Args:
        loss_mat: (N, L) per-token loss.
        mask: (N, L) 1 on valid tokens.
        mode: one of AGGREGATION_MODES.
        num_tokens: the number of valid tokens of the whole mini-batch ("token-mean"); when
            given it replaces the local count, so micro-batch losses sum to the batch loss.
        num_sequences: the number of non-empty sequences of the whole mini-batch (seq-mean
            modes); same role as `num_tokens`.
        norm_constant: C of "seq-mean-token-sum-norm"; keep it fixed over training (for
            example the maximum response length). Default: L.

    Returns:
        A scalar tensor.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; choose one of {AGGREGATION_MODES}")
    if loss_mat.dim() != 2 or mask.shape != loss_mat.shape:
        raise ValueError(
            f"loss_mat and mask must both be (N, L); got {tuple(loss_mat.shape)} and "
            f"{tuple(mask.shape)}"
        )
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        count = mask.sum() if num_tokens is None else num_tokens
        denominator = torch.as_tensor(count, dtype=loss_mat.dtype, device=loss_mat.device)
        return masked_sum(loss_mat, mask) / denominator.clamp(min=1.0)

    token_counts = mask.sum(-1)  # (N,)
    sequence_sums = masked_sum(loss_mat, mask, dim=-1)  # (N,)
    if mode == "seq-mean-token-mean":
        sequence_losses = sequence_sums / token_counts.clamp(min=1.0)
    elif mode == "seq-mean-token-sum":
        sequence_losses = sequence_sums
    else:
        constant = mask.shape[-1] if norm_constant is None else norm_constant
        if not constant > 0:
            raise ValueError(f"norm_constant must be > 0, got {norm_constant!r}")
        sequence_losses = sequence_sums / constant
    count = (token_counts > 0).sum() if num_sequences is None else num_sequences
    denominator = torch.as_tensor(count, dtype=loss_mat.dtype, device=loss_mat.device)
    return sequence_losses.sum() / denominator.clamp(min=1.0)


# ----------------------------------------------------------------------------------------------
# KL estimators
# ----------------------------------------------------------------------------------------------


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from tokens sampled from π (Schulman 2020).

    With log r = ref_logprobs − logprobs = log π_ref(x)/π(x):
      - "k1": −log r = logp − ref (unbiased, high variance, can be negative);
      - "k2": ½ (log r)² (biased, low variance);
      - "k3": (r − 1) − log r = exp(ref − logp) − (ref − logp) − 1 (unbiased, low variance,
        always ≥ 0; verl's `low_var_kl` without its clamp).

    Args:
        logprobs: (N, L) log-probs of the sampled tokens under π.
        ref_logprobs: (N, L) log-probs of the same tokens under π_ref.
        estimator: "k1", "k2" or "k3".

    Returns:
        (N, L) per-token estimates (aggregate them with `aggregate_loss`).
    """
    log_ref_ratio = ref_logprobs - logprobs  # (N, L): log π_ref/π
    if estimator == "k1":
        return -log_ref_ratio
    if estimator == "k2":
        return 0.5 * log_ref_ratio.square()
    if estimator == "k3":
        return torch.expm1(log_ref_ratio) - log_ref_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")


# ----------------------------------------------------------------------------------------------
# Shared pieces of the policy losses
# ----------------------------------------------------------------------------------------------


def _token_advantages(advantages: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """Per-sequence (N,) or per-token (N, L) advantages as an (N, L) view."""
    if advantages.shape == logprobs.shape:
        return advantages
    if advantages.dim() == 1 and advantages.shape[0] == logprobs.shape[0]:
        return advantages.unsqueeze(-1).expand_as(logprobs)  # (N,) -> (N, L)
    raise ValueError(
        f"advantages must be (N,) per sequence or (N, L) per token for logprobs of shape "
        f"{tuple(logprobs.shape)}, got {tuple(advantages.shape)}"
    )


def _check_policy_inputs(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor
) -> None:
    if logprobs.dim() != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(
            "logprobs, old_logprobs and mask must all be (N, L); got "
            f"{tuple(logprobs.shape)}, {tuple(old_logprobs.shape)} and {tuple(mask.shape)}"
        )


def _clamped_log_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, log_ratio_clamp: float | None
) -> torch.Tensor:
    """log π_θ/π_old, optionally clamped to ±log_ratio_clamp (ICR clamps to ±20)."""
    log_ratio = logprobs - old_logprobs  # (N, L)
    if log_ratio_clamp is None:
        return log_ratio
    if not log_ratio_clamp > 0:
        raise ValueError(f"log_ratio_clamp must be > 0 or None, got {log_ratio_clamp!r}")
    return log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)


def _ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    """r = exp(log r) with the exponent capped at MAX_RATIO_EXPONENT (finite; no gradient
    beyond the cap, as a clipped token has none). (N, L) -> (N, L)."""
    return log_ratio.clamp(max=MAX_RATIO_EXPONENT).exp()


def _active_clip_bounds(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each bound of the PPO loss is active, i.e. where it cuts the token's gradient.

    Lower bound: A < 0 and r < 1 − ε_low. Upper bound: A > 0 and r > 1 + ε_high.
    Dual clip: A < 0 and r > c (then the loss is the constant −c·A).

    Returns:
        Three (N, L) bool tensors (low, high, dual); they are disjoint.
    """
    negative = advantages < 0
    low = negative & (log_ratio < math.log1p(-clip_low))
    high = (advantages > 0) & (log_ratio > math.log1p(clip_high))
    if dual_clip is None:
        dual = torch.zeros_like(low)
    else:
        dual = negative & (log_ratio > math.log(dual_clip))
    return low, high, dual


def _centred_covariance(
    advantages: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token centred covariance (A − Ā)(log π − mean log π), means over valid tokens.

    This is the token's contribution to Cov(log π, A), which drives the entropy change under a
    policy-gradient step (Cui et al. 2025, arXiv 2505.22617 §3). Detached.

    Returns:
        (N, L); meaningless on padding.
    """
    advantages = advantages.detach()
    logprobs = logprobs.detach()
    centred_advantages = advantages - masked_mean(advantages, mask)
    return centred_advantages * (logprobs - masked_mean(logprobs, mask))


def _metric_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Tensors to Python floats with one device synchronisation."""
    values = torch.stack([value.detach().float() for value in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyLossSpec:
    """A registered policy loss and what it declares to the algorithm and the trainer.

    loss_fn: `(logprobs, old_logprobs, advantages, mask, **options) -> (loss, metrics)`.
    options: its own keyword settings; an algorithm config that has fields of these names (the
        Clip-Cov preset's `clip_cov_ratio`, ...) passes them, one without them calls the loss with
        its defaults.
    seeded: it takes `generator=` for a random choice; an algorithm whose config carries the
        options owns that generator (seeded 0) and keeps its state in the checkpoint.
    micro_batch_statistic: its result depends on which rows share a call (a selection made per
        call, as Clip-Cov's and KL-Cov's tokens), so a trainer keeps its micro-batches in rollout
        order instead of grouping rows by length.
    """

    loss_fn: PolicyLoss
    options: tuple[str, ...] = ()
    seeded: bool = False
    micro_batch_statistic: bool = False


_POLICY_LOSSES: dict[str, PolicyLossSpec] = {}

# Policy losses defined in modules of their own: name -> module, imported the first time the name
# is asked for. A new loss is one file (its function under @register_policy_loss("name", ...))
# and one line here (docs/design.md, "Adding a piece").
POLICY_LOSS_MODULES: dict[str, str] = {}


def register_policy_loss(
    name: str,
    *,
    options: tuple[str, ...] = (),
    seeded: bool = False,
    micro_batch_statistic: bool = False,
) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator registering a policy loss under `name`, with what it declares (`PolicyLossSpec`).

    The function must have the signature
    `(logprobs, old_logprobs, advantages, mask, **options) -> (loss, metrics)`.
    Registering a different function under a taken name raises ValueError.
    """

    def decorator(loss_fn: PolicyLoss) -> PolicyLoss:
        registered = _POLICY_LOSSES.get(name)
        if registered is not None and registered.loss_fn is not loss_fn:
            raise ValueError(
                f"a policy loss named {name!r} is already registered "
                f"({registered.loss_fn.__module__}.{registered.loss_fn.__qualname__}); register "
                "yours under another name"
            )
        _POLICY_LOSSES[name] = PolicyLossSpec(
            loss_fn, tuple(options), seeded, micro_batch_statistic
        )
        return loss_fn

    return decorator


def policy_loss_spec(name: str) -> PolicyLossSpec:
    """The registration of the policy loss `name`; ValueError listing the known names otherwise."""
    if name not in _POLICY_LOSSES and name in POLICY_LOSS_MODULES:
        importlib.import_module(POLICY_LOSS_MODULES[name])
    if name not in _POLICY_LOSSES:
        known = sorted(set(_POLICY_LOSSES) | set(POLICY_LOSS_MODULES))
        raise ValueError(f"unknown policy loss {name!r}; registered: {known}")
    return _POLICY_LOSSES[name]


def get_policy_loss(name: str) -> PolicyLoss:
    """The policy loss registered under `name`; ValueError listing the known names otherwise."""
    return policy_loss_spec(name).loss_fn


# ----------------------------------------------------------------------------------------------
# PPO clip
# ----------------------------------------------------------------------------------------------


def ppo_clip_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token PPO clipped surrogate loss with dual clip, as in the papers' code.

    With r = exp(log π_θ − log π_old) (docs/papers.md §1.2):
        clip(r) = exp(clamp(log r, log(1 − ε_low), log(1 + ε_high)))   (clipping in log space)
        ℓ       = max(−A·r, −A·clip(r))                                 (PPO, arXiv 1707.06347)
        ℓ       = min(ℓ, −c·A)   where A < 0                            (dual clip, 1912.09729)
    ε_high > ε_low is DAPO's clip-higher (arXiv 2503.14476 §3.1).

    Args:
        logprobs: (N, L) log π_θ of the sampled tokens, with grad.
        old_logprobs: (N, L) log π_old of the same tokens (the rollout policy), no grad needed.
        advantages: (N,) per sequence (broadcast over tokens) or (N, L) per token.
        mask: (N, L) 1 on valid response tokens (used for the metrics only).
        clip_low: ε_low in [0, 1).
        clip_high: ε_high ≥ 0.
        dual_clip: c > 1, or None to disable the dual clip.
        log_ratio_clamp: clamp log r to ±this before anything else (ICR uses 20.0); None: off.
            Either way the ratio's exponent is capped at MAX_RATIO_EXPONENT, so the loss and
            its gradient stay finite for any log-probs.

    Returns:
        loss_mat: (N, L) per-token loss (padding entries are not zeroed; aggregate with mask).
        metrics: "clipfrac_low", "clipfrac_high", "clipfrac_dual" (fraction of valid tokens
            where each bound is active), "approx_kl" (k3 estimate of KL(π_old ‖ π_θ), masked
            mean), "ratio_mean" (masked mean of r).
    """
    _check_policy_inputs(logprobs, old_logprobs, mask)
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low!r}")
    if not clip_high >= 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high!r}")
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None to disable it), got {dual_clip!r}")
    advantages = _token_advantages(advantages, logprobs)

    log_ratio = _clamped_log_ratio(logprobs, old_logprobs, log_ratio_clamp)
    ratio = _ratio(log_ratio)
    clipped_ratio = log_ratio.clamp(math.log1p(-clip_low), math.log1p(clip_high)).exp()
    loss_mat = torch.maximum(-advantages * ratio, -advantages * clipped_ratio)
    if dual_clip is not None:
        loss_mat = torch.where(
            advantages < 0, torch.minimum(loss_mat, -dual_clip * advantages), loss_mat
        )

    with torch.no_grad():
        low, high, dual = _active_clip_bounds(log_ratio, advantages, clip_low, clip_high, dual_clip)
        metrics = _metric_floats(
            {
                "clipfrac_low": masked_mean(low.float(), mask),
                "clipfrac_high": masked_mean(high.float(), mask),
                "clipfrac_dual": masked_mean(dual.float(), mask),
                "approx_kl": masked_mean(kl_penalty(old_logprobs, logprobs, "k3"), mask),
                "ratio_mean": masked_mean(ratio, mask),
            }
        )
    return loss_mat, metrics


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = None,
    agg_mode: str = "token-mean",
    num_tokens: Count | None = None,
    num_sequences: Count | None = None,
    norm_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clip / dual-clip loss, aggregated: `ppo_clip_token_loss` then `aggregate_loss`.

    Args:
        logprobs, old_logprobs, advantages, mask, clip_low, clip_high, dual_clip,
            log_ratio_clamp: as in `ppo_clip_token_loss` ((N, L), (N, L), (N,) or (N, L), (N, L)).
        agg_mode, num_tokens, num_sequences, norm_constant: as in `aggregate_loss`.

    Returns:
        loss: a scalar tensor.
        metrics: as in `ppo_clip_token_loss`.
    """
    loss_mat, metrics = ppo_clip_token_loss(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )
    loss = aggregate_loss(
        loss_mat,
        mask,
        agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=norm_constant,
    )
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# Clip-Cov and KL-Cov (Cui et al. 2025, arXiv 2505.22617 §4)
# ----------------------------------------------------------------------------------------------


@register_policy_loss(
    "clip_cov",
    options=("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub"),
    seeded=True,
    micro_batch_statistic=True,
)
def clip_cov_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    generator: torch.Generator | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = None,
    agg_mode: str = "token-mean",
    num_tokens: Count | None = None,
    num_sequences: Count | None = None,
    norm_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clip-Cov: the PPO loss with the gradient of a few high-covariance tokens detached.

    Entropy falls fastest through tokens whose log-prob and advantage co-vary strongly
    (arXiv 2505.22617 §3). Clip-Cov picks, uniformly at random, up to
    k = max(1, ⌊clip_cov_ratio · n_valid⌋) valid tokens whose centred covariance
    (A − Ā)(log π − mean log π) lies in [clip_cov_lb, clip_cov_ub], and detaches their
    log-probs so they contribute no gradient (§4). Tokens already cut by a PPO bound
    are not candidates (they have no gradient to remove), as in the authors' verl code. The
    detached tokens keep their loss value, so the reported loss equals the PPO loss.
    Paper defaults for Qwen2.5-7B: ratio 2e-4, bounds [1, 5]. The selection is per call (per
    micro-batch and device), as in the authors' code (docs/papers.md §9.4).

    Args:
        logprobs, old_logprobs, advantages, mask: as in `ppo_clip_token_loss`.
        clip_cov_ratio: k as a fraction of the valid tokens, in (0, 1].
        clip_cov_lb, clip_cov_ub: covariance window of the candidates.
        generator: random source of the selection (for reproducibility); its device is used.
        clip_low, clip_high, dual_clip, log_ratio_clamp: as in `ppo_clip_token_loss`.
        agg_mode, num_tokens, num_sequences, norm_constant: as in `aggregate_loss`.

    Returns:
        loss: a scalar tensor.
        metrics: those of `ppo_clip_token_loss` plus "clip_cov_frac", the fraction of valid
            tokens detached.
    """
    _check_policy_inputs(logprobs, old_logprobs, mask)
    if not 0.0 < clip_cov_ratio <= 1.0:
        raise ValueError(f"clip_cov_ratio must be in (0, 1], got {clip_cov_ratio!r}")
    if not clip_cov_lb < clip_cov_ub:
        raise ValueError(
            f"clip_cov_lb must be < clip_cov_ub, got [{clip_cov_lb!r}, {clip_cov_ub!r}]"
        )
    token_advantages = _token_advantages(advantages, logprobs)
    valid = mask.bool()

    with torch.no_grad():
        log_ratio = _clamped_log_ratio(logprobs, old_logprobs, log_ratio_clamp)
        low, high, dual = _active_clip_bounds(
            log_ratio, token_advantages, clip_low, clip_high, dual_clip
        )
        covariance = _centred_covariance(token_advantages, logprobs, valid)
        candidates = (
            valid & ~(low | high | dual) & (covariance >= clip_cov_lb) & (covariance <= clip_cov_ub)
        )
        num_valid = int(valid.sum())
        num_chosen = min(max(1, int(clip_cov_ratio * num_valid)), int(candidates.sum()))
        chosen = torch.zeros(valid.shape, dtype=torch.bool, device=valid.device)
        if num_chosen > 0:
            # A uniform random subset of the candidates: the top-k of i.i.d. uniform keys.
            device = generator.device if generator is not None else logprobs.device
            keys = torch.rand(logprobs.shape, generator=generator, device=device)
            keys = keys.to(logprobs.device).masked_fill(~candidates, -1.0)  # (N, L)
            chosen.view(-1)[keys.reshape(-1).topk(num_chosen).indices] = True

    loss, metrics = ppo_clip_loss(
        torch.where(chosen, logprobs.detach(), logprobs),
        old_logprobs,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
        agg_mode=agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=norm_constant,
    )
    metrics["clip_cov_frac"] = num_chosen / max(num_valid, 1)
    return loss, metrics


@register_policy_loss("kl_cov", options=("kl_cov_ratio", "kl_coef"), micro_batch_statistic=True)
def kl_cov_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_cov_ratio: float = 2e-3,
    kl_coef: float = 1.0,
    log_ratio_clamp: float | None = None,
    clip_low: float | None = None,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    agg_mode: str = "token-mean",
    num_tokens: Count | None = None,
    num_sequences: Count | None = None,
    norm_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL-Cov: unclipped −A·r, plus a |log r| penalty on the highest-covariance tokens.

    ℓ_t = −A_t r_t + kl_coef · |log π_θ − log π_old| · 1[t ∈ top-k by covariance], with
    k = max(1, ⌊kl_cov_ratio · n_valid⌋) and covariance (A − Ā)(log π − mean log π) over the
    valid tokens (arXiv 2505.22617 §4). There is no ratio clipping. In a strictly
    on-policy step (r ≡ 1) the penalty and its gradient are 0, so it acts only on later
    mini-batches (docs/papers.md §9.4).

    Default ratio 2e-3: the paper's value for Qwen2.5-7B (it uses 2e-4 for 32B); the commented-
    out KL-Cov of the ICR code uses 2e-4 (docs/papers.md §5). coef 1 in both.

    Args:
        logprobs, old_logprobs, advantages, mask: as in `ppo_clip_token_loss`.
        kl_cov_ratio: k as a fraction of the valid tokens, in (0, 1].
        kl_coef: weight of the |log r| penalty, ≥ 0.
        log_ratio_clamp: as in `ppo_clip_token_loss`.
        clip_low, clip_high, dual_clip: accepted so that a trainer can pass the same PPO
            options to every registered loss, and ignored: KL-Cov does not clip the ratio.
        agg_mode, num_tokens, num_sequences, norm_constant: as in `aggregate_loss`.

    Returns:
        loss: a scalar tensor.
        metrics: "kl_cov_frac" (fraction of valid tokens penalised), "approx_kl", "ratio_mean".
    """
    _check_policy_inputs(logprobs, old_logprobs, mask)
    if not 0.0 < kl_cov_ratio <= 1.0:
        raise ValueError(f"kl_cov_ratio must be in (0, 1], got {kl_cov_ratio!r}")
    if not kl_coef >= 0.0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef!r}")
    token_advantages = _token_advantages(advantages, logprobs)
    valid = mask.bool()

    log_ratio = _clamped_log_ratio(logprobs, old_logprobs, log_ratio_clamp)
    ratio = _ratio(log_ratio)
    loss_mat = -token_advantages * ratio

    with torch.no_grad():
        covariance = _centred_covariance(token_advantages, logprobs, valid)
        num_valid = int(valid.sum())
        num_penalized = max(1, int(kl_cov_ratio * num_valid)) if num_valid > 0 else 0
        penalized = torch.zeros(valid.shape, dtype=torch.bool, device=valid.device)
        if num_penalized > 0:
            keys = covariance.masked_fill(~valid, float("-inf"))  # (N, L)
            penalized.view(-1)[keys.reshape(-1).topk(num_penalized).indices] = True

    loss_mat = loss_mat + torch.where(penalized, kl_coef * log_ratio.abs(), 0.0)
    loss = aggregate_loss(
        loss_mat,
        mask,
        agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=norm_constant,
    )
    with torch.no_grad():
        metrics = _metric_floats(
            {
                "approx_kl": masked_mean(kl_penalty(old_logprobs, logprobs, "k3"), mask),
                "ratio_mean": masked_mean(ratio, mask),
            }
        )
    metrics["kl_cov_frac"] = num_penalized / max(num_valid, 1)
    return loss, metrics
