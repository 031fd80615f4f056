"""Target-distribution regularizers (AEPO, DCPO, ICR) and the entropy baselines compared to them.

Each function is pure: it turns rewards, lengths, log-probs or entropies into advantages or loss
terms; the policy loss itself (PPO clip, aggregation) lives in `dcrl.core.losses`.

References (formulas and code-faithful defaults: docs/papers.md):
    AEPO: Wang et al., "Arbitrary Entropy Policy Optimization", arXiv 2510.08141
        (docs/papers.md §2.2-2.4).
    DCPO: "Distribution-Centric Policy Optimization", arXiv 2601.12730 (docs/papers.md §3.2-3.4).
    ICR: "Implicit Compression Regularization", arXiv 2605.07316 (docs/papers.md §4.2, §4.5).
    Entropy-Reg: EasyR1 `use_entropy_loss` (docs/papers.md §5).
    Entropy-Adv: Cheng et al., "Reasoning with Exploration: An Entropy Perspective",
        arXiv 2506.14758 (docs/papers.md §5).
    Best-of-n target (dcrl): the law of the best of n draws, the distribution BOND (Sessa et al.,
        "BOND: Aligning LLMs with Best-of-N Distillation", arXiv 2407.14622) distills.
"""

from __future__ import annotations

import torch

from dcrl.core.advantages import (
    broadcast_to_tokens,
    check_shape,
    dense_group_index,
    grpo_advantages,
)
from dcrl.core.losses import Count, aggregate_loss

CORRECT_THRESHOLD = 0.05  # a response is correct when its score exceeds this (docs/papers.md §3.2)


def correct_indicator(scores: torch.Tensor, threshold: float = CORRECT_THRESHOLD) -> torch.Tensor:
    """c_i = 1[s_i > threshold]: the response is correct
    (docs/papers.md §3.2; used by AEPO and DCPO).

    Args:
        scores: (N,) sequence-level scores.

    Returns:
        (N,) bool.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError("scores must be a (N,) tensor of sequence-level scores")
    return scores > threshold


# --------------------------------------------------------------------------------------- AEPO


def mixed_prompts_first(
    scores: torch.Tensor, group_index: torch.Tensor, threshold: float = CORRECT_THRESHOLD
) -> torch.Tensor:
    """The step's prompts, those whose group has both correct and incorrect answers first (the
    most mixed, fraction correct nearest 1/2, before the others; ties in prompt order), then the
    rest in prompt order: the order of AEPO's `tempered_prompts: mixed` (a dcrl extension; the
    code re-samples the first prompts).

    Args:
        scores: (N,) sequence-level scores of the on-policy rollout.
        group_index: (N,) the prompt of each response, ids 0..G-1.
        threshold: c_i = 1[score > threshold].

    Returns:
        (G,) long, prompt ids.
    """
    dense_group_index(group_index, scores.shape[0])  # validates the ids
    num_prompts = int(group_index.max()) + 1
    correct = correct_indicator(scores, threshold).to(torch.float64)
    solved = torch.zeros(num_prompts, dtype=torch.float64).index_add_(0, group_index, correct)
    sizes = torch.bincount(group_index, minlength=num_prompts).to(torch.float64)
    rate = solved / sizes.clamp(min=1)
    mixed = (rate > 0) & (rate < 1)
    key = torch.where(mixed, (rate - 0.5).abs(), torch.full_like(rate, 2.0))
    return torch.sort(key, stable=True).indices


def aepo_select_positives(
    scores_tempered: torch.Tensor,
    group_index_tempered: torch.Tensor,
    threshold: float = 0.05,
    std: str = "unbiased",
    *,
    include_all_correct_groups: bool = False,
) -> torch.Tensor:
    """Which tempered samples AEPO reinforces (arXiv 2510.08141; docs/papers.md §2.2, §2.4).

    Code-faithful: the GRPO advantage is computed within the groups sampled at temperature T and
    the samples with Â > `threshold` are kept. With 0/1 rewards these are the correct samples of
    groups that are not all-correct: all-correct groups have Â = 0 and are excluded.
    `include_all_correct_groups=True` is the paper's R(q, o) reading instead: every correct
    sample (score > 0.05) is kept, whatever its group.

    Args:
        scores_tempered: (M,) float scores of the tempered samples.
        group_index_tempered: (M,) integer group ids of the tempered samples (groups of >= 2).
        threshold: advantage threshold (0.05 in the code).
        std: GRPO std mode, see `grpo_advantages`.
        include_all_correct_groups: take every correct sample (see above).

    Returns:
        (M,) bool, True for the positives, in batch order.
    """
    if include_all_correct_groups:
        dense_group_index(group_index_tempered, scores_tempered.shape[0])  # validates the ids
        return correct_indicator(scores_tempered)
    advantages = grpo_advantages(scores_tempered, group_index_tempered, std=std)
    return advantages > threshold


def aepo_num_reinforce(
    num_positives: int,
    *,
    entropy_above_target: bool,
    max_samples: int = 60,
    weight: float | None = None,
) -> int:
    """Number m of REINFORCE samples AEPO mixes in (docs/papers.md §2.2 "How many samples").

    m = min(N_RF, |P|), halved (floor) when the previous step's entropy is above the target.
    With a controller-chosen `weight` w (dcrl extension, `PIController(weight_max=...)`) the
    controller sets the strength instead: m = min(round(w·N_RF), |P|), no halving.

    Args:
        num_positives: |P|, the number of selected positives.
        entropy_above_target: H_prev > target (the controller's low-temperature branch).
        max_samples: N_RF (`trainer.reinforce_sample_num`, 60).
        weight: w ≥ 0, or None for the papers' rule.
    """
    if num_positives < 0 or max_samples < 0:
        raise ValueError(
            f"num_positives ({num_positives}) and max_samples ({max_samples}) must be >= 0"
        )
    if weight is not None:
        if not weight >= 0.0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        return min(round(weight * max_samples), num_positives)
    num_reinforce = min(max_samples, num_positives)
    return num_reinforce // 2 if entropy_above_target else num_reinforce


def aepo_mix_batch(
    on_policy: dict[str, torch.Tensor],
    tempered: dict[str, torch.Tensor],
    positive_index: torch.Tensor,
    *,
    placement: str = "front",
    mask_key: str = "response_mask",
) -> dict[str, torch.Tensor]:
    """Swap m tempered positives into the on-policy batch with advantage +1 (docs/papers.md §2.2).

    Code-faithful (`concat([P[:m], D[m:]])`): the m selected tempered rows replace the first m
    on-policy rows, so the batch size N is unchanged. The replaced rows get advantage +1 on every
    valid token (REINFORCE with R = 1, no baseline); the other rows keep their advantage.
    `placement="spread"` puts the m rows at evenly spaced positions floor(j·N/m) instead, so they
    do not all land in the first mini-batch (the layout artefact of docs/papers.md §2.2).

    Old log-probs of the mixed batch must be recomputed at T = 1 afterwards (docs/papers.md §2.2).

    Args:
        on_policy: batch of N responses. Every value is a tensor whose first dimension is N. It
            must hold "advantages", (N,) or (N, L), and the valid-token mask under `mask_key`,
            (N, L).
        tempered: batch of M tempered responses with every key of `on_policy` except
            "advantages" (any "advantages" here is ignored), each of the same trailing shape and
            dtype; pad both batches to one L first. Extra keys are ignored.
        positive_index: (m,) LongTensor of rows of `tempered` to use, m <= N (for example the
            first `aepo_num_reinforce(...)` indices of `aepo_select_positives(...).nonzero()`).
        placement: "front" | "spread".
        mask_key: the key of the (N, L) valid-token mask.

    Returns:
        A new dict with every key of `on_policy` mixed, "advantages" as (N, L) token-level
        advantages (0 on padding), and "is_reinforce" (N,) bool marking the replaced rows.
    """
    if placement not in ("front", "spread"):
        raise ValueError(f"placement must be 'front' or 'spread', got {placement!r}")
    for required in ("advantages", mask_key):
        if required not in on_policy:
            raise KeyError(f"on_policy must contain {required!r}; it has {sorted(on_policy)}")
    mask = on_policy[mask_key]
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"on_policy[{mask_key!r}] must be a (N, L) valid-token mask")
    num_responses, max_length = mask.shape
    advantages = on_policy["advantages"]
    if isinstance(advantages, torch.Tensor) and advantages.dim() == 1:
        advantages = broadcast_to_tokens(advantages, mask)  # (N, L)
    check_shape(advantages, "on_policy['advantages']", (num_responses, max_length))

    if not isinstance(positive_index, torch.Tensor) or positive_index.dim() != 1:
        raise ValueError("positive_index must be a (m,) LongTensor of rows of `tempered`")
    if positive_index.dtype != torch.long:
        raise TypeError(f"positive_index must be a LongTensor, got {positive_index.dtype}")
    num_reinforce = positive_index.numel()
    if num_reinforce > num_responses:
        raise ValueError(
            f"positive_index selects {num_reinforce} rows but the on-policy batch has only "
            f"{num_responses}; cap m with aepo_num_reinforce"
        )

    if placement == "front":
        rows = torch.arange(num_reinforce)
    else:
        rows = torch.arange(num_reinforce) * num_responses // max(num_reinforce, 1)
    rows = rows.to(mask.device)

    mixed: dict[str, torch.Tensor] = {}
    for key, value in on_policy.items():
        if key == "advantages":
            continue
        if not isinstance(value, torch.Tensor) or value.shape[:1] != (num_responses,):
            raise ValueError(f"on_policy[{key!r}] must be a tensor with first dimension N")
        if key not in tempered:
            raise KeyError(f"tempered lacks the key {key!r} that on_policy has")
        replacement = tempered[key]
        if not isinstance(replacement, torch.Tensor):
            raise TypeError(f"tempered[{key!r}] must be a torch.Tensor")
        if replacement.shape[1:] != value.shape[1:] or replacement.dtype != value.dtype:
            raise ValueError(
                f"tempered[{key!r}] has trailing shape {tuple(replacement.shape[1:])} and dtype "
                f"{replacement.dtype}, on_policy has {tuple(value.shape[1:])} and {value.dtype}; "
                "pad both batches to the same length L and dtype"
            )
        if num_reinforce and int(positive_index.max()) >= replacement.shape[0]:
            raise ValueError(f"positive_index points past the {replacement.shape[0]} tempered rows")
        mixed_value = value.clone()
        mixed_value[rows] = replacement[positive_index.to(replacement.device)]
        mixed[key] = mixed_value

    mixed_advantages = advantages * mask.to(advantages.dtype)  # (N, L), 0 on padding
    mixed_advantages[rows] = mixed[mask_key][rows].to(advantages.dtype)  # +1 on valid tokens
    is_reinforce = torch.zeros(num_responses, dtype=torch.bool, device=mask.device)
    is_reinforce[rows] = True
    mixed["advantages"] = mixed_advantages
    mixed["is_reinforce"] = is_reinforce
    return mixed


# --------------------------------------------------------------------------------------- DCPO


def dcpo_rho(
    old_logprobs_at_temperature: torch.Tensor,
    old_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_rho: float | None = None,
) -> torch.Tensor:
    """DCPO target ratio ρ_{i,t} = π_old^T(o_t)/π_old(o_t) = exp(ℓ^T − ℓ) (docs/papers.md §3.2).

    No gradient flows through ρ. Code-faithful ρ is not clipped; `max_rho` clamps it from above.
    With T = 1 (identical inputs) ρ is exactly 1 on every valid token.

    Args:
        old_logprobs_at_temperature: (N, L) log π_old(o_t) with logits divided by T.
        old_logprobs: (N, L) log π_old(o_t) at T = 1.
        mask: (N, L) valid-token mask.
        max_rho: optional upper clip.

    Returns:
        (N, L) ρ, 0 on padding.
    """
    check_shape(old_logprobs, "old_logprobs", tuple(old_logprobs_at_temperature.shape))
    check_shape(mask, "mask", tuple(old_logprobs_at_temperature.shape))
    if max_rho is not None and max_rho <= 0:
        raise ValueError(f"max_rho must be > 0 or None, got {max_rho}")
    with torch.no_grad():
        log_ratio = old_logprobs_at_temperature.detach() - old_logprobs.detach()  # (N, L)
        # `where` before exp: padding may hold -inf or garbage log-probs.
        log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))
        rho = log_ratio.exp()
        if max_rho is not None:
            rho = rho.clamp(max=max_rho)
        return rho * mask.to(rho.dtype)


def dcpo_alpha(
    target_entropy: float,
    previous_entropy: float,
    correct: torch.Tensor,
    cap: float = 0.1,
    weight: float | None = None,
) -> float:
    """DCPO mixing coefficient α = a/(1 + a), a = min(|H0 − H_prev|, cap)/p (docs/papers.md §3.2).

    p is the fraction of correct responses in the batch. The code divides by zero when p = 0;
    here p = 0 gives α = 0 (no regularizer, no NaN). With a controller-chosen `weight` w (dcrl
    extension, `PIController(weight_max=...)`), a = w·cap/p: w = min(|H0 − H_prev|, cap)/cap
    gives back the papers' α, and w > 1 lets the controller push harder than the cap allows.

    Args:
        target_entropy: H0.
        previous_entropy: H_prev, the previous step's entropy signal.
        correct: (N,) bool or 0/1 float correctness indicator.
        cap: upper bound on |H0 − H_prev| (0.1).
        weight: w ≥ 0, or None for the papers' rule.

    Returns:
        α in [0, 1).
    """
    if not isinstance(correct, torch.Tensor) or correct.dim() != 1 or correct.numel() == 0:
        raise ValueError("correct must be a non-empty (N,) tensor of 0/1 correctness")
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    fraction_correct = float(correct.float().mean())
    if fraction_correct == 0.0:
        return 0.0
    if weight is not None:
        if not weight >= 0.0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        a = weight * cap / fraction_correct
    else:
        a = min(abs(target_entropy - previous_entropy), cap) / fraction_correct
    return a / (1.0 + a)


def dcpo_token_advantages(
    grpo_advantages: torch.Tensor,
    correct: torch.Tensor,
    rho: torch.Tensor,
    alpha: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Mixed DCPO advantage Â'_{i,t} = (1 − α)·Â_i + α·c_i·ρ_{i,t} (docs/papers.md §3.2, §3.4).

    Args:
        grpo_advantages: (N,) GRPO advantages.
        correct: (N,) bool or 0/1 float correctness c_i (all correct responses, including those
            of all-correct groups).
        rho: (N, L) target ratio from `dcpo_rho`.
        alpha: mixing coefficient from `dcpo_alpha`, in [0, 1].
        mask: (N, L) valid-token mask.

    Returns:
        (N, L) token-level advantages, 0 on padding.
    """
    if not isinstance(rho, torch.Tensor) or rho.dim() != 2:
        raise ValueError("rho must be a (N, L) tensor from dcpo_rho")
    num_responses = rho.shape[0]
    check_shape(grpo_advantages, "grpo_advantages", (num_responses,))
    check_shape(correct, "correct", (num_responses,))
    check_shape(mask, "mask", tuple(rho.shape))
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    correct = correct.to(rho.dtype)
    mixed = (1.0 - alpha) * grpo_advantages[:, None].to(rho.dtype) + alpha * correct[:, None] * rho
    return mixed * mask.to(rho.dtype)  # (N, L)


# ---------------------------------------------------------------------------------------- ICR

ICR_SELECTIONS = ("correct", "any")


def icr_select_shortest(
    rewards: torch.Tensor,
    lengths: torch.Tensor,
    group_index: torch.Tensor,
    *,
    selection: str = "correct",
    positive_threshold: float = 0.0,
) -> torch.Tensor:
    """Per group, the shortest eligible response (arXiv 2605.07316; docs/papers.md §4.2 step 4).

    Code-faithful `selection="correct"`: eligible = reward > `positive_threshold`; a group with
    no eligible response contributes nothing. `selection="any"` takes the shortest response of
    every group regardless of reward (the ICR_neg ablation). Ties go to the lowest batch index.

    Args:
        rewards: (N,) sequence rewards (accuracy, plus any length penalty).
        lengths: (N,) number of valid response tokens.
        group_index: (N,) integer group ids.
        selection: "correct" | "any".
        positive_threshold: reward threshold for "correct".

    Returns:
        (k,) LongTensor of selected batch indices, ascending; k = number of groups with a
        selection.
    """
    if selection not in ICR_SELECTIONS:
        raise ValueError(f"selection must be one of {ICR_SELECTIONS}, got {selection!r}")
    num_responses = lengths.shape[0] if isinstance(lengths, torch.Tensor) else -1
    check_shape(lengths, "lengths", (num_responses,))
    check_shape(rewards, "rewards", (num_responses,))
    dense, num_groups = dense_group_index(group_index, num_responses)

    if selection == "correct":
        eligible = rewards > positive_threshold
    else:
        eligible = torch.ones_like(rewards, dtype=torch.bool)
    # float64 holds every integer length exactly; ineligible responses never win the min.
    eligible_lengths = torch.where(
        eligible,
        lengths.to(torch.float64),
        torch.full_like(lengths, torch.inf, dtype=torch.float64),
    )  # (N,)
    group_min = eligible_lengths.new_full((num_groups,), torch.inf).scatter_reduce(
        0, dense, eligible_lengths, reduce="amin"
    )  # (G,)
    is_shortest = eligible & (eligible_lengths == group_min[dense])  # (N,)
    batch_index = torch.arange(num_responses, device=lengths.device)
    candidate_index = torch.where(is_shortest, batch_index, num_responses)
    first_shortest = torch.full(
        (num_groups,), num_responses, dtype=torch.long, device=lengths.device
    ).scatter_reduce(0, dense, candidate_index, reduce="amin")  # (G,)
    selected = first_shortest[first_shortest < num_responses]
    return selected.sort().values


def icr_bonus(
    advantages: torch.Tensor,
    rewards: torch.Tensor,
    lengths: torch.Tensor,
    group_index: torch.Tensor,
    *,
    bonus_total: float = 128.0,
    mode: str = "add",
    selection: str = "correct",
    sign: str = "positive",
    scope: str = "shortest",
    positive_threshold: float = 0.0,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | int | float]]:
    """ICR: a bonus C/k on the advantage of each group's shortest correct response
    (docs/papers.md §4.2).

    Code-faithful (`mode="add"`, `selection="correct"`, `sign="positive"`, `scope="shortest"`):
    Â_{i*_g} += C/k on every token, k = number of groups with a correct response, so the total
    bonus mass is C per step. Ablations found in the authors' code (docs/papers.md §4.2):
    `mode="replace"` sets Â = bonus, `mode="multiply"` sets Â ← (1 + bonus)·Â on the selected
    responses; ICR_neg is `selection="any"`, `sign="own_advantage"` (bonus·sign(Â_i), with C = 64
    there); ICR_all is `scope="all"`: C/N on every response (`selection` is then unused). With
    k = 0 the advantages are returned unchanged.

    Args:
        advantages: (N,) per-response or (N, L) per-token advantages.
        rewards: (N,) sequence rewards used for the "correct" selection.
        lengths: (N,) valid response lengths in tokens.
        group_index: (N,) integer group ids.
        bonus_total: C, the total bonus mass per step (128).
        mode: "add" | "replace" | "multiply".
        selection: "correct" | "any", see `icr_select_shortest`.
        sign: "positive" | "own_advantage".
        scope: "shortest" | "all".
        positive_threshold: reward threshold for "correct".
        mask: optional (N, L) valid-token mask for (N, L) advantages; padding stays 0.

    Returns:
        (new advantages, same shape as `advantages`; info dict with "selected_index" (k,)
        LongTensor, "num_selected" k, "bonus_per_response" C/k (0 when k = 0) and
        "selected_length_mean" (mean length of the selected responses, 0.0 when k = 0)).
    """
    if mode not in ("add", "replace", "multiply"):
        raise ValueError(f"mode must be 'add', 'replace' or 'multiply', got {mode!r}")
    if sign not in ("positive", "own_advantage"):
        raise ValueError(f"sign must be 'positive' or 'own_advantage', got {sign!r}")
    if scope not in ("shortest", "all"):
        raise ValueError(f"scope must be 'shortest' or 'all', got {scope!r}")
    if not isinstance(advantages, torch.Tensor) or advantages.dim() not in (1, 2):
        raise ValueError("advantages must be a (N,) or (N, L) tensor")
    num_responses = advantages.shape[0]
    check_shape(lengths, "lengths", (num_responses,))
    if mask is not None:
        if advantages.dim() != 2:
            raise ValueError("mask is only used with (N, L) advantages; drop it for (N,) ones")
        check_shape(mask, "mask", tuple(advantages.shape))

    if scope == "all":
        dense_group_index(group_index, num_responses)  # validates the ids
        selected = torch.arange(num_responses, device=advantages.device)
    else:
        selected = icr_select_shortest(
            rewards,
            lengths,
            group_index,
            selection=selection,
            positive_threshold=positive_threshold,
        )
    num_selected = int(selected.numel())
    info: dict[str, torch.Tensor | int | float] = {
        "selected_index": selected,
        "num_selected": num_selected,
        "bonus_per_response": 0.0,
        "selected_length_mean": 0.0,
    }
    if num_selected == 0:
        return advantages.clone(), info

    bonus_per_response = bonus_total / num_selected
    info["bonus_per_response"] = bonus_per_response
    info["selected_length_mean"] = float(lengths[selected].double().mean())

    selected_advantages = advantages[selected]  # (k,) or (k, L)
    bonus = torch.full_like(selected_advantages, bonus_per_response)
    if sign == "own_advantage":
        bonus = bonus * selected_advantages.sign()
    if mode == "add":
        updated = selected_advantages + bonus
    elif mode == "replace":
        updated = bonus
    else:
        updated = (1.0 + bonus) * selected_advantages
    if mask is not None:
        updated = updated * mask[selected].to(updated.dtype)
    new_advantages = advantages.clone()
    new_advantages[selected] = updated
    return new_advantages, info


# ------------------------------------------------------------------------------------ best-of-n


def best_of_n_bonus(
    advantages: torch.Tensor,
    rewards: torch.Tensor,
    group_index: torch.Tensor,
    weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE toward the best-of-n distribution: + `weight` on each group's best response.

    The best of a group is its highest-reward response; ties go to the lowest batch index, a
    uniformly random one of the tied since a group's responses are i.i.d. draws. A group whose
    rewards are all equal has no best (its best-of-n draw is just a draw of π_old) and gets
    nothing. The selected responses are samples of the best-of-n law of π_old, on-policy, so
    Â_best += w is REINFORCE with reward w under that law (the distribution BOND, arXiv
    2407.14622, distills). With 0/1 rewards it picks one correct response of each mixed group;
    with graded rewards, the top-scoring one.

    Args:
        advantages: (N,) per-response advantages.
        rewards: (N,) sequence rewards.
        group_index: (N,) integer group ids.
        weight: w ≥ 0, the advantage added to each best response.

    Returns:
        ((N,) new advantages, (k,) LongTensor of the selected batch indices, ascending).
    """
    if not isinstance(advantages, torch.Tensor) or advantages.dim() != 1:
        raise ValueError("advantages must be a (N,) tensor of per-response advantages")
    num_responses = advantages.shape[0]
    check_shape(rewards, "rewards", (num_responses,))
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    dense, num_groups = dense_group_index(group_index, num_responses)
    values = rewards.to(torch.float64)  # (N,)
    group_max = values.new_full((num_groups,), -torch.inf).scatter_reduce(
        0, dense, values, reduce="amax"
    )  # (G,)
    group_min = values.new_full((num_groups,), torch.inf).scatter_reduce(
        0, dense, values, reduce="amin"
    )  # (G,)
    is_best = (values == group_max[dense]) & (group_max[dense] > group_min[dense])  # (N,)
    batch_index = torch.arange(num_responses, device=advantages.device)
    candidate_index = torch.where(is_best, batch_index, num_responses)
    first_best = torch.full(
        (num_groups,), num_responses, dtype=torch.long, device=advantages.device
    ).scatter_reduce(0, dense, candidate_index, reduce="amin")  # (G,)
    selected = first_best[first_best < num_responses].sort().values  # (k,)
    new_advantages = advantages.clone()
    new_advantages[selected] += weight
    return new_advantages, selected


# ------------------------------------------------------------------------- entropy baselines


def entropy_reg_term(
    logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    coef: float,
    *,
    form: str = "sampled_nll",
    entropy: torch.Tensor | None = None,
    agg_mode: str = "token-mean",
    num_tokens: Count | None = None,
    num_sequences: Count | None = None,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Entropy-Reg: the term to ADD to the loss, −coef × (entropy estimate) (docs/papers.md §5).

    `form="sampled_nll"` (code-faithful, EasyR1 `use_entropy_loss`): the per-token estimate is
    −log π_θ(o_t) of the sampled token. Its expected gradient on-policy is 0 (the score-function
    identity E_o[∇ log π(o)] = 0), so the term acts only through sampling noise and off-policy
    mini-batches. `form="true_entropy"`: the per-token estimate is a given full-vocabulary
    entropy H_{i,t} that carries gradient, a real entropy bonus. The per-token estimates are
    reduced with the policy loss's own `dcrl.core.losses.aggregate_loss` ("token-mean" is the
    code's), so the bonus and the policy loss weigh tokens alike.

    Args:
        logprobs: (N, L) log π_θ of the sampled tokens, with grad ("sampled_nll"; else unused).
        mask: (N, L) valid-token mask.
        coef: entropy coefficient (0.01 in the authors' script; 0.03 / 0.015 code defaults).
        form: "sampled_nll" | "true_entropy".
        entropy: (N, L) full-vocabulary entropy with grad ("true_entropy"; else unused).
        agg_mode, num_tokens, num_sequences, norm_constant: as in `aggregate_loss`.

    Returns:
        A scalar loss term.
    """
    if form == "sampled_nll":
        if logprobs is None:
            raise ValueError("form='sampled_nll' needs logprobs=(N, L) of the sampled tokens")
        token_entropy = -logprobs  # (N, L)
    elif form == "true_entropy":
        if entropy is None:
            raise ValueError("form='true_entropy' needs entropy=(N, L) full-vocabulary entropy")
        token_entropy = entropy  # (N, L)
    else:
        raise ValueError(f"form must be 'sampled_nll' or 'true_entropy', got {form!r}")
    entropy_estimate = aggregate_loss(
        token_entropy,
        mask,
        agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=norm_constant,
    )
    return -coef * entropy_estimate


def entropy_advantage(
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.4,
    kappa: float = 2.0,
) -> torch.Tensor:
    """Entropy-Adv: Â_{i,t} + min(α·H_{i,t}.detach(), |Â_{i,t}|/κ) (arXiv 2506.14758;
    docs/papers.md §5).

    The bonus is never larger than |Â|/κ, so it cannot flip the sign of the advantage; H is the
    full-vocabulary entropy of π_old at T = 1 and carries no gradient.

    Args:
        advantages: (N,) per-response or (N, L) per-token advantages.
        entropy: (N, L) per-token entropy.
        mask: (N, L) valid-token mask.
        alpha: entropy scale α (0.4).
        kappa: clip ratio κ (2.0), > 0.

    Returns:
        (N, L) shaped advantages, 0 on padding.
    """
    if not isinstance(entropy, torch.Tensor) or entropy.dim() != 2:
        raise ValueError("entropy must be a (N, L) tensor of per-token entropies")
    check_shape(mask, "mask", tuple(entropy.shape))
    if kappa <= 0 or alpha < 0:
        raise ValueError(f"need alpha >= 0 and kappa > 0, got alpha={alpha}, kappa={kappa}")
    if isinstance(advantages, torch.Tensor) and advantages.dim() == 1:
        advantages = broadcast_to_tokens(advantages, mask)  # (N, L)
    check_shape(advantages, "advantages", tuple(entropy.shape))
    bonus = torch.minimum(alpha * entropy.detach(), advantages.abs() / kappa)  # (N, L)
    return (advantages + bonus) * mask.to(advantages.dtype)
