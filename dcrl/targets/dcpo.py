"""`dcpo`: π_old at temperature T, *virtual* — the batch's own correct responses re-weighted per
token by ρ = π_old^T / π_old (DCPO, arXiv 2601.12730; papers.md §3.2–3.4, code-faithful).

A token-level mix (stage "mix"): Â' = (1 − α)·Â + α·c·ρ, c the correctness indicator, and
α = a/(1 + a), a = min(|𝓗 − H_prev|, cap)/p (p the fraction correct; α = 0 when p = 0). T comes
from the entropy controller. The T = 1 scoring pass is shared: it becomes the batch's old
log-probs, so ρ costs one extra no-grad forward at T.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcrl.algorithms.base import StepContext
from dcrl.algorithms.entropy_control import EntropyControlFields
from dcrl.config import field
from dcrl.core.regularizers import correct_indicator, dcpo_alpha, dcpo_rho, dcpo_token_advantages
from dcrl.targets.base import ControlledTarget, StepDraft, TargetConfig


@dataclass
class DCPOSettings(EntropyControlFields):
    """DCPO's settings, shared by the `dcpo` target and the `dcpo` algorithm preset."""

    target_entropy: float = field(
        0.5, help="Target entropy 𝓗₀ (0.5 in the released script; 0.25 was best in the paper)."
    )
    alpha_cap: float = field(0.1, help="Cap on |𝓗₀ − H_prev| in α's numerator (code: 0.1).")
    correct_threshold: float = field(0.05, help="c_i = 1[score > this] (code: 0.05).")
    max_rho: float | None = field(
        None, help="Clamp ρ from above; null = unclipped (code-faithful)."
    )
    use_rho: bool = field(
        True, help="false sets ρ ≡ 1 — the paper's ablation without double importance sampling."
    )


@dataclass
class DCPOTargetConfig(DCPOSettings, TargetConfig):
    """The `dcpo` target's settings."""


class DCPOTarget(ControlledTarget):
    name = "dcpo"
    config_class = DCPOTargetConfig
    stage = "mix"
    config: DCPOTargetConfig

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        cfg = self.config
        decision, metrics = self.decide()
        correct = correct_indicator(draft.scores, cfg.correct_threshold)  # (N,)
        ids, attention, mask = draft.input_ids, draft.attention_mask, draft.response_mask
        if draft.old_logprobs is None:
            draft.old_logprobs, _ = ctx.score(ids, attention, mask)  # (N, Lr) at T = 1
        if cfg.use_rho:
            old_logprobs_at_temperature, _ = ctx.score(
                ids, attention, mask, temperature=decision.temperature
            )
            rho = dcpo_rho(
                old_logprobs_at_temperature, draft.old_logprobs, mask, max_rho=cfg.max_rho
            )
        else:
            rho = mask.float()
        alpha = dcpo_alpha(
            cfg.target_entropy,
            decision.previous_entropy,
            correct,
            cfg.alpha_cap,
            weight=decision.weight,
        )
        draft.advantages = dcpo_token_advantages(draft.advantages, correct, rho, alpha, mask)

        valid = mask.bool()
        correct_tokens = valid & correct[:, None]
        metrics.update(
            {
                "control/alpha": alpha,
                "dcpo/rho_mean": float(rho[correct_tokens].mean()) if correct_tokens.any() else 1.0,
                "dcpo/rho_max": float(rho[valid].max()) if valid.any() else 1.0,
                "dcpo/correct_frac": float(correct.float().mean()),
            }
        )
        return metrics


TARGET = DCPOTarget
