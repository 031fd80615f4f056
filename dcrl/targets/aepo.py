"""AEPO — Arbitrary Entropy Policy Optimization (Wang et al., arXiv 2510.08141), code-faithful to
the released version (docs/papers.md §2.2–2.4): the whole method in this file — its settings, the
`aepo` target and the `aepo` algorithm (GRPO plus that target, at the bottom).

The target is π at temperature T, *really sampled*. A row replacement (stage "replace"): the
first prompts (a quarter, `tempered_fraction`) are sampled again at the controller's T; the
correct tempered samples of mixed groups (GRPO advantage within their groups above 0.05) are
REINFORCE'd with advantage +1 and no baseline, swapped in for the first m rows so the batch size
is unchanged (the regularizer's weight is m/N). m = min(N_RF, positives), halved above target.
The mixed rows are scored again at T = 1 for the PPO ratio: the target distribution *is* π^T, so
no importance correction. T follows the entropy controller (dcrl.core.control), the same control
as DCPO's. `algorithm: {name: composed, targets: [aepo]}` is the same run as
`algorithm: {name: aepo}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from dcrl.algorithms.base import AlgorithmConfig, Preset
from dcrl.config import field
from dcrl.core.control import ControlDecision
from dcrl.core.logprobs import entropy_sums
from dcrl.core.regularizers import (
    aepo_mix_batch,
    aepo_num_reinforce,
    aepo_select_positives,
    mixed_prompts_first,
)
from dcrl.step_data import StepContext
from dcrl.targets.base import ControlledTarget, EntropyControlFields, StepDraft, TargetConfig


@dataclass
class AEPOSettings(EntropyControlFields):
    """AEPO's settings (the entropy controller's, then its own), shared by the `aepo` target and
    the `aepo` algorithm below."""

    max_reinforce: int = field(
        60,
        ge=0,
        le=1_000_000,
        help="N_RF: most REINFORCE samples per step (halved above target); AEPO code: 60.",
    )
    tempered_fraction: float = field(
        0.25,
        gt=0,
        le=1,
        help="Fraction of the step's prompts re-sampled at temperature T (code: 1/4).",
    )
    positive_threshold: float = field(
        0.05,
        ge=-100,
        le=100,
        help="A tempered sample is positive when its GRPO advantage exceeds this (code).",
    )
    include_all_correct_groups: bool = field(
        False,
        help="Also reinforce correct samples of all-correct tempered groups (the paper's R(q,o) "
        "reading); the code excludes them (their advantage is 0).",
    )
    center_reinforce: bool = field(
        False,
        help="dcrl extension: give the step's correct on-policy rows a negative advantage of "
        "the same total token mass as the REINFORCE rows, so the term pulls toward π^T's "
        "correct answers and away from π's own (zero at T = 1: it only moves the temperature). "
        "The paper's rows alone are also REINFORCE on correct answers, which sharpens the "
        "policy (bench/README.md, 'Control over a range'). false (default): the paper's rows.",
    )
    reinforce_scale_max: float = field(
        1.0,
        ge=1,
        le=1000,
        help="dcrl extension, with a controller-set weight (pi with weight_max): when the "
        "positives are fewer than the w·max_reinforce rows the controller asks for, each "
        "REINFORCE row's advantage is asked/available instead of +1, at most this factor, so the "
        "term keeps the strength asked for. 1 (default, the paper): +1.",
    )
    tempered_prompts: Literal["first", "mixed"] = field(
        "first",
        help="Which prompts are re-sampled at T: first (code-faithful: the step's first "
        "prompts) or mixed (dcrl extension: those whose on-policy group has both correct and "
        "incorrect answers, the most mixed first, then the others), so that the tempered "
        "positives come from problems the policy has not settled.",
    )
    placement: Literal["front", "spread"] = field(
        "front",
        help="Where the REINFORCE rows go: front (code-faithful: all land in the first "
        "mini-batch) or spread evenly over the batch.",
    )

    measure_replaced: bool = field(
        False,
        help="dcrl extension: the controller reads the entropy of all the policy's own answers "
        "of the step, the on-policy rows the REINFORCE rows replace included (one extra no-grad "
        "pass over those rows), instead of the rows left after the swap; logged as "
        "entropy/all_own_nll and entropy/all_own_full. Needs entropy_signal on_policy_nll or "
        "on_policy_full. false (default): the rows left.",
    )

    def validate(self) -> None:
        super().validate()
        if self.measure_replaced and self.entropy_signal not in ("on_policy_nll", "on_policy_full"):
            raise ValueError(
                f"measure_replaced=true adds the replaced on-policy rows to the policy's own "
                f"entropy, so it needs entropy_signal on_policy_nll or on_policy_full, got "
                f"{self.entropy_signal!r}"
            )
        if not 0 < self.tempered_fraction <= 1:
            raise ValueError(f"tempered_fraction must be in (0, 1], got {self.tempered_fraction}")
        if self.max_reinforce < 0:
            raise ValueError(f"max_reinforce must be ≥ 0, got {self.max_reinforce}")


@dataclass
class AEPOTargetConfig(AEPOSettings, TargetConfig):
    """The `aepo` target's settings."""


class AEPOTarget(ControlledTarget):
    name = "aepo"
    config_class = AEPOTargetConfig
    stage = "replace"
    foreign_rows = "is_reinforce"  # the tempered rows are π^T's samples, not the policy's
    metric_labels = {"control/num_reinforce": "AEPO m (tempered REINFORCE rows)"}
    config: AEPOTargetConfig
    replaced: dict[str, float] | None = None  # measure_replaced: this step's replaced rows' sums

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        cfg = self.config
        decision, metrics = self.decide()
        batch = draft.batch

        # Tempered groups: the first prompts (or the most mixed), n samples each, at T.
        num_prompts = int(batch.group_index.max()) + 1
        group_size = len(batch) // num_prompts
        chosen = tempered_prompt_ids(draft.scores, batch.group_index, decision, cfg)
        tempered, tempered_scores = ctx.rollout(chosen, group_size, decision.temperature)
        positive_index, num_reinforce = reinforce_rows(
            tempered_scores, tempered.group_index, decision, cfg, self.base.advantage_std
        )

        # Pad both batches to one shape (responses grow on the right, as do token advantages),
        # then swap the first m positives in.
        on_policy, tempered = type(batch).pad_to_common([batch, tempered])
        on_ids, on_attention = on_policy.sequences()
        t_ids, t_attention = tempered.sequences()
        advantages = draft.advantages
        if advantages.dim() == 2:
            width = on_policy.response_mask.shape[1] - advantages.shape[1]
            advantages = torch.nn.functional.pad(advantages, (0, width))  # (N, Lr')
        mixed = aepo_mix_batch(
            {
                "input_ids": on_ids,
                "attention_mask": on_attention,
                "response_mask": on_policy.response_mask,
                "advantages": advantages,
            },
            {
                "input_ids": t_ids,
                "attention_mask": t_attention,
                "response_mask": tempered.response_mask,
            },
            positive_index[:num_reinforce],
            placement=cfg.placement,
        )
        is_reinforce = mixed["is_reinforce"]
        if cfg.measure_replaced:  # the policy's own answers the swap removes, measured here
            self.replaced = replaced_sums(
                ctx, on_ids, on_attention, on_policy.response_mask, is_reinforce, self.signal
            )
            self.replaced["kept_tokens"] = float(mixed["response_mask"][~is_reinforce].sum())
        scale = scale_reinforce_rows(mixed, decision, cfg)
        if scale is not None:
            metrics["aepo/row_scale"] = scale
        if cfg.center_reinforce:
            metrics["aepo/center_weight"] = center_reinforce(mixed, draft.scores)
        for value in draft.extras.values():  # other targets' marks do not hold for new rows
            value[is_reinforce] = 0
        draft.input_ids = mixed["input_ids"]
        draft.attention_mask = mixed["attention_mask"]
        draft.response_mask = mixed["response_mask"]
        draft.advantages = mixed["advantages"]
        draft.old_logprobs = None  # new rows: scored again at T = 1
        draft.extras["is_reinforce"] = is_reinforce
        metrics.update(
            {
                "control/num_reinforce": float(num_reinforce),
                "aepo/num_positives": float(len(positive_index)),
                "aepo/tempered_accuracy": float(tempered_scores.mean()),
                "aepo/tempered_length": float(tempered.response_lengths.float().mean()),
            }
        )
        return metrics

    def after_update(self, metrics: dict[str, float]) -> dict[str, float] | None:
        """With `measure_replaced`, the controller reads the entropy of all the policy's own
        answers (the rows left and the rows replaced) and it is returned to be logged."""
        replaced, self.replaced = self.replaced, None
        if replaced is None:
            return super().after_update(metrics)
        combined = all_own_entropy(metrics, replaced)
        own = self.signal.removeprefix("on_policy_")
        self.controller.update(combined[f"entropy/all_own_{own}"])
        return combined


def replaced_sums(
    ctx: StepContext,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    replaced: torch.Tensor,
    signal: str,
) -> dict[str, float]:
    """Σ NLL of the sampled tokens, Σ full-vocabulary entropy (0 unless `signal` is a full one)
    and the token count of the on-policy rows `replaced` (N,) bool, from one no-grad pass at
    T = 1 (`measure_replaced`)."""
    if not bool(replaced.any()):
        return {"nll": 0.0, "entropy": 0.0, "tokens": 0.0}
    mask = response_mask[replaced]
    full = signal.endswith("full")
    logprobs, entropy = ctx.logprob_pass(
        input_ids[replaced], attention_mask[replaced], mask, with_entropy=full
    )
    nll, tokens, _, _, entropy_sum, _ = entropy_sums(logprobs, mask, None, entropy).tolist()
    return {"nll": nll, "entropy": entropy_sum, "tokens": tokens}


def all_own_entropy(metrics: dict[str, float], replaced: dict[str, float]) -> dict[str, float]:
    """The entropy of all the policy's own answers of a step: the update's on-policy signals
    (over the rows left after the swap, `kept_tokens` tokens) and the replaced rows' sums
    (`replaced_sums`), token-weighted. {"entropy/all_own_nll", "entropy/all_own_full"}."""
    kept, tokens = replaced["kept_tokens"], replaced["tokens"]
    total = max(kept + tokens, 1.0)
    return {
        "entropy/all_own_nll": (metrics["entropy/on_policy_nll"] * kept + replaced["nll"]) / total,
        "entropy/all_own_full": (metrics["entropy/on_policy_full"] * kept + replaced["entropy"])
        / total,
    }


def scale_reinforce_rows(
    mixed: dict[str, torch.Tensor], decision: ControlDecision, config: AEPOSettings
) -> float | None:
    """With `reinforce_scale_max` > 1 and a controller-set weight w: multiply the REINFORCE rows'
    advantages (in place) by min(max(w·N_RF / m, 1), reinforce_scale_max), m the rows there are,
    and return the factor; None (nothing changed) otherwise."""
    rows = int(mixed["is_reinforce"].sum())
    if config.reinforce_scale_max <= 1.0 or decision.weight is None or rows == 0:
        return None
    asked = decision.weight * config.max_reinforce
    scale = min(max(asked / rows, 1.0), config.reinforce_scale_max)
    mixed["advantages"][mixed["is_reinforce"]] *= scale
    return scale


def center_reinforce(mixed: dict[str, torch.Tensor], scores: torch.Tensor) -> float:
    """Subtract β from the advantages of the correct on-policy rows of a mixed batch (in place),
    β = the REINFORCE rows' summed token advantages (their valid tokens, at +1 each) / those
    rows' valid tokens, so that the tempered rows and the −β on the policy's own correct rows
    carry the same token mass: the
    pair is REINFORCE toward π^T's correct answers minus REINFORCE toward π's. Returns β (0 when
    either set is empty).

    Args:
        mixed: `aepo_mix_batch`'s output ("advantages" (N, L), "response_mask", "is_reinforce").
        scores: (N,) task scores of the on-policy batch, row for row (replaced rows ignored).
    """
    from dcrl.core.regularizers import correct_indicator

    mask = mixed["response_mask"].to(mixed["advantages"].dtype)
    reinforce = mixed["is_reinforce"]
    own_correct = correct_indicator(scores).to(reinforce.device) & ~reinforce
    reinforce_tokens = float((mixed["advantages"][reinforce] * mask[reinforce]).sum())
    own_tokens = float(mask[own_correct].sum())
    if reinforce_tokens == 0.0 or own_tokens == 0.0:
        return 0.0
    beta = reinforce_tokens / own_tokens
    mixed["advantages"][own_correct] -= beta * mask[own_correct]
    return beta


def tempered_prompt_ids(
    scores: torch.Tensor,
    group_index: torch.Tensor,
    decision: ControlDecision,
    config: AEPOSettings,
) -> list[int]:
    """The prompts re-sampled at T: the first `num_tempered_prompts` of them (code), or with
    `tempered_prompts: mixed` as many of `mixed_prompts_first`'s order."""
    num_prompts = int(group_index.max()) + 1
    count = num_tempered_prompts(num_prompts, decision, config)
    if config.tempered_prompts == "first":
        return list(range(count))
    return mixed_prompts_first(scores, group_index)[:count].tolist()


def num_tempered_prompts(num_prompts: int, decision: ControlDecision, config: AEPOSettings) -> int:
    """How many of the step's prompts are re-sampled at T: the first quarter (code). A
    controller-chosen weight w > 1 (dcrl's pi with weight_max) re-samples w times as many, so
    that there are enough positives for its w·N_RF REINFORCE rows."""
    scale = max(1.0, decision.weight or 0.0)
    return min(num_prompts, max(1, int(num_prompts * config.tempered_fraction * scale)))


def reinforce_rows(
    tempered_scores: torch.Tensor,
    tempered_group_index: torch.Tensor,
    decision: ControlDecision,
    config: AEPOSettings,
    advantage_std: str,
) -> tuple[torch.Tensor, int]:
    """The positives among the tempered samples, (P,) indices in batch order, and m, how many of
    the first ones become REINFORCE rows (docs/papers.md §2.2); any trainer can call it."""
    positive = aepo_select_positives(
        tempered_scores,
        tempered_group_index,
        config.positive_threshold,
        advantage_std,
        include_all_correct_groups=config.include_all_correct_groups,
    )
    positive_index = positive.nonzero().flatten()
    num_reinforce = aepo_num_reinforce(
        len(positive_index),
        entropy_above_target=decision.entropy_above_target,
        max_samples=config.max_reinforce,
        weight=decision.weight,
    )
    return positive_index, num_reinforce


TARGET = AEPOTarget


# -- the `aepo` algorithm: GRPO plus this target, every setting flat in one section


@dataclass
class AEPOConfig(AEPOSettings, AlgorithmConfig):
    """`algorithm: {name: aepo, ...}`: GRPO's PPO settings and AEPO's."""

    name: str = field("aepo", help="Algorithm name (see `dcrl algorithms`).")


class AEPO(Preset):
    name = "aepo"
    config_class = AEPOConfig
    target_class = AEPOTarget
    config: AEPOConfig


ALGORITHM = AEPO
