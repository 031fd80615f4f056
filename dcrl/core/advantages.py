"""Group-relative advantages: GRPO (and Dr.GRPO), RLOO, and the group bookkeeping they share.

A batch holds N responses; `group_index` (N,) gives each response the id of its prompt. Ids need
not be contiguous or sorted, and groups may differ in size. Every group statistic here is computed
with scatter operations over a dense re-numbering of the ids, never with a Python loop over groups.

References:
    GRPO: Shao et al. 2024, arXiv 2402.03300 §4.1.2; the code-faithful form (unbiased std, eps 1e-6,
        as in EasyR1/verl `compute_grpo_outcome_advantage`) is docs/papers.md §1.2.
    Dr.GRPO (no std division): Liu et al. 2025, arXiv 2503.20783 §3.
    RLOO: Ahmadian et al. 2024, arXiv 2402.14740 §3 (leave-one-out baseline).
"""

from __future__ import annotations

import torch

GRPO_STD_MODES = ("unbiased", "population", "none")


def check_shape(tensor: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    """Raise a clear error unless `tensor` is a torch.Tensor of exactly `shape`.

    Shared by the `dcrl.core` modules that take per-response (N,) and per-token (N, L) inputs.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but {tuple(shape)} is expected; "
            "pass one value per response (N,) or per token (N, L) as documented"
        )


def group_ids(num_groups: int, group_size: int) -> torch.Tensor:
    """Group ids for the contiguous layout: `group_size` responses per prompt, prompt after prompt.

    Example: group_ids(2, 3) == tensor([0, 0, 0, 1, 1, 1]).

    Returns:
        LongTensor (num_groups * group_size,).
    """
    if num_groups < 1 or group_size < 1:
        raise ValueError(
            f"num_groups ({num_groups}) and group_size ({group_size}) must both be >= 1"
        )
    return torch.arange(num_groups).repeat_interleave(group_size)


def dense_group_index(group_index: torch.Tensor, num_responses: int) -> tuple[torch.Tensor, int]:
    """Validate `group_index` and renumber its ids to 0..G-1 (in increasing order of the ids).

    Args:
        group_index: integer tensor (N,) of group ids (any integers; same id = same prompt).
        num_responses: N, the length the other per-response inputs have.

    Returns:
        (dense (N,) LongTensor with values in [0, G), G the number of distinct groups).
    """
    if not isinstance(group_index, torch.Tensor):
        raise TypeError(f"group_index must be a torch.Tensor, got {type(group_index).__name__}")
    if (
        group_index.dtype == torch.bool
        or group_index.is_floating_point()
        or group_index.is_complex()
    ):
        raise TypeError(
            f"group_index must be an integer tensor of group ids, got dtype {group_index.dtype}; "
            "build it with dcrl.core.advantages.group_ids or convert with .long()"
        )
    check_shape(group_index, "group_index", (num_responses,))
    if num_responses == 0:
        raise ValueError("the batch is empty: group_index has no responses")
    unique_ids, dense = torch.unique(group_index, return_inverse=True)
    return dense, int(unique_ids.numel())


def _check_scores(scores: torch.Tensor) -> None:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1:
        raise ValueError(
            f"scores must be one value per response, shape (N,), got {tuple(scores.shape)}; "
            "sum token-level scores over the sequence first"
        )
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating tensor, got {scores.dtype}; use scores.float()")


def _group_counts(dense: torch.Tensor, num_groups: int, method: str) -> torch.Tensor:
    counts = torch.bincount(dense, minlength=num_groups)  # (G,)
    if (counts < 2).any():
        single = int((counts < 2).sum())
        raise ValueError(
            f"{method} needs at least 2 responses per group, but {single} group(s) of "
            "group_index hold a single response; sample n >= 2 responses per prompt"
        )
    return counts


def _constant_groups(values: torch.Tensor, dense: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Bool (N,): the response belongs to a group whose values are all equal.

    A mean computed in floating point need not equal the common value exactly, so constant groups
    are detected by group min == group max and their advantages are set to exactly 0.
    """
    group_min = values.new_full((num_groups,), float("inf")).scatter_reduce(
        0, dense, values, reduce="amin"
    )
    group_max = values.new_full((num_groups,), float("-inf")).scatter_reduce(
        0, dense, values, reduce="amax"
    )
    return (group_min == group_max)[dense]


def grpo_advantages(
    scores: torch.Tensor,
    group_index: torch.Tensor,
    *,
    std: str = "unbiased",
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO outcome advantage Â_i = (s_i − mean_g s) / (std_g s + eps) within each group g.

    arXiv 2402.03300 §4.1.2; code-faithful form per docs/papers.md §1.2: `std="unbiased"` is
    `torch.std` (n − 1), eps = 1e-6. `std="population"` divides by n; `std="none"` is Dr.GRPO
    (arXiv 2503.20783 §3): mean subtraction only. Groups whose scores are all equal (all-correct,
    all-wrong) get exactly 0.

    Args:
        scores: (N,) float, one sequence-level score per response.
        group_index: (N,) integer group ids; every group must hold at least 2 responses.
        std: "unbiased" | "population" | "none".
        eps: added to the group std before dividing.

    Returns:
        (N,) advantages, same dtype as `scores`.
    """
    _check_scores(scores)
    if std not in GRPO_STD_MODES:
        raise ValueError(f"std must be one of {GRPO_STD_MODES}, got {std!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    dense, num_groups = dense_group_index(group_index, scores.shape[0])
    counts = _group_counts(dense, num_groups, "GRPO").to(scores.dtype)  # (G,)

    group_sum = scores.new_zeros(num_groups).index_add_(0, dense, scores)  # (G,)
    centered = scores - (group_sum / counts)[dense]  # (N,)
    if std == "none":
        advantages = centered
    else:
        squares = scores.new_zeros(num_groups).index_add_(0, dense, centered.square())  # (G,)
        dof = counts - 1 if std == "unbiased" else counts
        group_std = (squares / dof).sqrt()  # (G,)
        advantages = centered / (group_std[dense] + eps)
    return advantages.masked_fill(_constant_groups(scores, dense, num_groups), 0.0)


def rloo_advantages(scores: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantage Â_i = s_i − mean_{j in g, j != i} s_j.

    arXiv 2402.14740 §3. Equal to n/(n − 1)·(s_i − mean_g s); all-equal groups get exactly 0.

    Args:
        scores: (N,) float sequence-level scores.
        group_index: (N,) integer group ids; every group must hold at least 2 responses.

    Returns:
        (N,) advantages, same dtype as `scores`.
    """
    _check_scores(scores)
    dense, num_groups = dense_group_index(group_index, scores.shape[0])
    counts = _group_counts(dense, num_groups, "RLOO").to(scores.dtype)  # (G,)
    group_sum = scores.new_zeros(num_groups).index_add_(0, dense, scores)  # (G,)
    leave_one_out_mean = (group_sum[dense] - scores) / (counts[dense] - 1)  # (N,)
    advantages = scores - leave_one_out_mean
    return advantages.masked_fill(_constant_groups(scores, dense, num_groups), 0.0)


def broadcast_to_tokens(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy each response's advantage to its valid tokens; 0 on padding.

    Args:
        advantages: (N,) per-response advantages.
        mask: (N, L) valid-token mask (bool or float).

    Returns:
        (N, L) token-level advantages, dtype of `advantages`.
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError("mask must be a (N, L) tensor marking the valid response tokens")
    check_shape(advantages, "advantages", (mask.shape[0],))
    return advantages[:, None] * mask.to(advantages.dtype)  # (N, L)
