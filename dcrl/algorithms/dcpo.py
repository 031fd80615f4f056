"""DCPO — Distribution-Centric Policy Optimization (arXiv 2601.12730), code-faithful to the
released version (research/papers.md §3.2–3.4).

The same entropy control as AEPO, fully on-policy: the batch's own correct responses are
re-weighted per token by ρ = π_old^T / π_old (a second no-grad scoring with logits / T), and the
REINFORCE term is mixed with GRPO by an adaptive α:

    Â'_{i,t} = (1 − α) Â_i + α c_i ρ_{i,t},   α = a / (1 + a),   a = min(|𝓗 − H_prev|, 0.1) / p

with c the correctness indicator and p the batch's fraction correct (α = 0 when p = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dcrl.algorithms.base import StepContext, TrainBatch
from dcrl.algorithms.entropy_control import EntropyControlConfig, EntropyControlled
from dcrl.config import field
from dcrl.core.advantages import grpo_advantages
from dcrl.core.regularizers import correct_indicator, dcpo_alpha, dcpo_rho, dcpo_token_advantages


@dataclass
class DCPOConfig(EntropyControlConfig):
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


class DCPO(EntropyControlled):
    name = "dcpo"
    config_class = DCPOConfig
    config: DCPOConfig

    def prepare(
        self, batch: Any, scores: torch.Tensor, ctx: StepContext
    ) -> tuple[TrainBatch, dict[str, float]]:
        cfg = self.config
        decision, metrics = self.decide()
        advantages = grpo_advantages(scores, batch.group_index, std=cfg.advantage_std)  # (N,)
        correct = correct_indicator(scores, cfg.correct_threshold)  # (N,)

        input_ids, attention_mask = batch.sequences()
        mask = batch.response_mask
        old_logprobs, _ = ctx.score(input_ids, attention_mask, mask)  # (N, Lr) at T = 1
        if cfg.use_rho:
            old_logprobs_at_temperature, _ = ctx.score(
                input_ids, attention_mask, mask, temperature=decision.temperature
            )
            rho = dcpo_rho(old_logprobs_at_temperature, old_logprobs, mask, max_rho=cfg.max_rho)
        else:
            rho = mask.float()
        alpha = dcpo_alpha(
            cfg.target_entropy,
            decision.previous_entropy,
            correct,
            cfg.alpha_cap,
            weight=decision.weight,
        )
        token_advantages = dcpo_token_advantages(advantages, correct, rho, alpha, mask)

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
        train_batch = TrainBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            response_mask=mask,
            old_logprobs=old_logprobs,
            advantages=token_advantages,
        )
        return train_batch, metrics


ALGORITHM = DCPO
