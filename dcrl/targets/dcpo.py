"""DCPO — Distribution-Centric Policy Optimization (arXiv 2601.12730), code-faithful to the
released version (docs/papers.md §3.2–3.4): the whole method in this file — its settings, the
`dcpo` target and the `dcpo` algorithm (GRPO plus that target, at the bottom).

The target is π_old at temperature T, *virtual*: the batch's own correct responses re-weighted
per token by ρ = π_old^T / π_old, fully on-policy. A token-level mix (stage "mix"):

    Â'_{i,t} = (1 − α)·Â_i + α·c_i·ρ_{i,t}

c the correctness indicator (with `center_rho`, a dcrl extension: α·c·(ρ − 1); with `log_rho`,
another: α·c·log ρ), and
α = a/(1 + a), a = min(|𝓗 − H_prev|, cap)/p (p the fraction correct; α = 0 when p = 0). T, 𝓗
and H_prev come from the entropy controller's decision (dcrl.core.control), the same control as
AEPO's. The T = 1 scoring pass is shared: it becomes the batch's old log-probs, so ρ costs one
extra no-grad forward at T. `algorithm: {name: composed, targets: [dcpo]}` is the same run as
`algorithm: {name: dcpo}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.control import ControlDecision
from dcrl.core.regularizers import correct_indicator, dcpo_alpha, dcpo_rho, dcpo_token_advantages
from dcrl.step_data import StepContext
from dcrl.targets.base import ControlledTarget, EntropyControlFields, StepDraft, TargetConfig


@dataclass
class DCPOSettings(EntropyControlFields):
    """DCPO's settings (the entropy controller's, then its own), shared by the `dcpo` target and
    the `dcpo` algorithm below."""

    alpha_cap: float = field(
        0.1, ge=0, le=100, help="Cap on |𝓗 − H_prev| in α's numerator (code: 0.1)."
    )
    correct_threshold: float = field(0.05, ge=0, lt=1, help="c_i = 1[score > this] (code: 0.05).")
    max_rho: float | None = field(
        None, gt=0, le=1e6, help="Clamp ρ from above; null = unclipped (code-faithful)."
    )
    use_rho: bool = field(
        True, help="false sets ρ ≡ 1 — the paper's ablation without double importance sampling."
    )
    center_rho: bool = field(
        False,
        help="dcrl extension: the target term is c·(ρ − 1) instead of c·ρ (Â' = (1 − α)Â + "
        "α·c·(ρ − 1)): zero at T = 1, so it only moves the temperature. The paper's c·ρ also "
        "carries c, REINFORCE on every correct answer, which sharpens the policy; on "
        "tiny-explore it outweighs the heating at every T ≤ 2 (bench/README.md, 'Control over "
        "a range'). false (default): the paper's term.",
    )

    log_rho: bool = field(
        False,
        help="dcrl extension: the target term is c·log ρ = c·(log π_old^T − log π_old) instead "
        "of c·ρ (or c·(ρ − 1) with center_rho). Zero at T = 1 like the centred term, it is the "
        "step down the reverse KL(π ‖ π_old^T), where c·ρ is the step down the forward one: a "
        "token π gives 10⁻³ gets about 3.5 at T = 2 instead of about 30, so a heated step is "
        "not carried by the few answers with rare tokens in them (bench/README.md, 'Control over "
        "a range'). Replaces center_rho (set it false); max_rho clamps it at log max_rho.",
    )

    def validate(self) -> None:
        super().validate()
        if self.log_rho and (self.center_rho or not self.use_rho):
            raise ValueError(
                "log_rho=true is its own centred term (log ρ is 0 at T = 1) and needs ρ: set "
                "center_rho=false and use_rho=true"
            )
        if self.center_rho and not self.use_rho:
            raise ValueError(
                "center_rho=true needs use_rho=true: with ρ ≡ 1 the centred term c·(ρ − 1) is 0"
            )


@dataclass
class DCPOTargetConfig(DCPOSettings, TargetConfig):
    """The `dcpo` target's settings."""


class DCPOTarget(ControlledTarget):
    name = "dcpo"
    config_class = DCPOTargetConfig
    stage = "mix"
    metric_labels = {"control/alpha": "DCPO α (weight of its term)"}
    config: DCPOTargetConfig

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        decision, metrics = self.decide()
        ids, attention, mask = draft.input_ids, draft.attention_mask, draft.response_mask
        if draft.old_logprobs is None:
            draft.old_logprobs, _ = ctx.logprob_pass(ids, attention, mask)  # (N, Lr) at T = 1
        old_logprobs_at_temperature = None
        if self.config.use_rho:
            old_logprobs_at_temperature, _ = ctx.logprob_pass(
                ids, attention, mask, temperature=decision.temperature
            )
        draft.advantages, mix_metrics = dcpo_mix(
            draft.advantages,
            draft.scores,
            mask,
            draft.old_logprobs,
            old_logprobs_at_temperature,
            decision,
            self.config,
        )
        return {**metrics, **mix_metrics}


def dcpo_mix(
    advantages: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    old_logprobs: torch.Tensor,
    old_logprobs_at_temperature: torch.Tensor | None,
    decision: ControlDecision,
    config: DCPOSettings,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DCPO's mixed token advantages Â' = (1 − α)Â + α·c·ρ from the two scoring passes, and its
    metrics; any trainer that has the passes (dcrl's, verl's) can call it.

    Args:
        advantages: (N,) per-response advantages (GRPO's, plus any bonus).
        scores: (N,) task scores (c = 1[score > correct_threshold]).
        mask: (N, Lr) valid-token mask.
        old_logprobs: (N, Lr) log π_old at T = 1.
        old_logprobs_at_temperature: (N, Lr) log π_old at the decision's T; None with use_rho off.
        decision: this step's controller decision: its T (for the pass above), the target 𝓗 and
            H_prev α is sized by, and its weight.
        config: the DCPO settings (the threshold, ρ's clamp and form, α's cap).

    Returns:
        (N, Lr) advantages, 0 on padding; metrics.
    """
    correct = correct_indicator(scores, config.correct_threshold)  # (N,)
    if config.use_rho:
        assert old_logprobs_at_temperature is not None
        rho = dcpo_rho(old_logprobs_at_temperature, old_logprobs, mask, max_rho=config.max_rho)
    else:
        rho = mask.float()
    if config.log_rho:  # c·log ρ (ρ > 0 on valid tokens; the clamp, if any, already applied)
        target = torch.where(mask.bool(), rho.clamp(min=1e-30).log(), torch.zeros_like(rho))
    else:
        target = rho - mask.to(rho.dtype) if config.center_rho else rho  # c·(ρ − 1) or c·ρ
    alpha = dcpo_alpha(
        decision.target_entropy,
        decision.previous_entropy,
        correct,
        config.alpha_cap,
        weight=decision.weight,
    )
    token_advantages = dcpo_token_advantages(advantages, correct, target, alpha, mask)  # (N, Lr)
    valid = mask.bool()
    correct_tokens = valid & correct[:, None]
    metrics = {
        "control/alpha": alpha,
        "dcpo/rho_mean": float(rho[correct_tokens].mean()) if correct_tokens.any() else 1.0,
        "dcpo/rho_max": float(rho[valid].max()) if valid.any() else 1.0,
        "dcpo/correct_frac": float(correct.float().mean()),
    }
    return token_advantages, metrics


TARGET = DCPOTarget


# -- the `dcpo` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class DCPOConfig(DCPOSettings, AlgorithmConfig):
    """`algorithm: {name: dcpo, ...}`: GRPO's PPO settings and DCPO's."""

    name: str = field("dcpo", help="Algorithm name (see `dcrl algorithms`).")


class DCPO(Preset):
    name = "dcpo"
    config_class = DCPOConfig
    target_class = DCPOTarget
    config: DCPOConfig


ALGORITHM = DCPO
