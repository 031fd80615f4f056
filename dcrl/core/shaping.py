"""Length-shaping reward terms: the length-control baselines ICR is compared to
(docs/papers.md §4.4).

Each function returns one reward term per response, (N,) float32 (float64 if the lengths are),
which the caller adds to (or, for ShorterBetter, uses instead of) the accuracy reward before the
group-relative advantage. Lengths are numbers of valid response tokens.

References:
    LP-F / DAPO soft overlong punishment: Yu et al. 2025, arXiv 2503.14476 ("Overlong Reward
        Shaping").
    Kimi length reward: Kimi Team 2025, "Kimi k1.5", arXiv 2501.12599 ("Length Penalty").
    ShorterBetter: Yi et al. 2025, arXiv 2504.21370 (Sample Optimal Length reward).
    The exact variants implemented are the ICR authors' code (docs/papers.md §4.4).
"""

from __future__ import annotations

import torch

from dcrl.core.advantages import check_shape, dense_group_index


def _float_lengths(lengths: torch.Tensor) -> torch.Tensor:
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
        raise ValueError("lengths must be a (N,) tensor of response lengths in tokens")
    return lengths if lengths.is_floating_point() else lengths.to(torch.float32)


def overlong_penalty(
    lengths: torch.Tensor,
    max_length: int = 8192,
    buffer: int = 4096,
    penalty: float = 1.0,
) -> torch.Tensor:
    """DAPO soft overlong penalty, the LP-F of the ICR code (arXiv 2503.14476; docs/papers.md §4.4).

    0 for L <= max_length − buffer; −(L − (max_length − buffer))/buffer · penalty up to
    max_length; −penalty beyond.

    Args:
        lengths: (N,) response lengths.
        max_length: the length cap (8192).
        buffer: the width of the linear ramp before the cap (4096).
        penalty: the penalty at and beyond the cap (1.0).

    Returns:
        (N,) penalty, <= 0.
    """
    lengths = _float_lengths(lengths)
    if not 0 < buffer <= max_length:
        raise ValueError(f"need 0 < buffer <= max_length, got buffer={buffer}, max={max_length}")
    overflow = (lengths - (max_length - buffer)) / buffer  # (N,)
    return -penalty * overflow.clamp(0.0, 1.0)


def kimi_length_reward(
    lengths: torch.Tensor, correct: torch.Tensor, group_index: torch.Tensor
) -> torch.Tensor:
    """Kimi-k1.5 length reward, the LP2 baseline of the ICR code (arXiv 2501.12599;
    docs/papers.md §4.4).

    Within each group λ_i = 0.5 − (L_i − L_min)/(L_max − L_min) (λ = 0 if all lengths are equal);
    the term is λ_i for a correct response and min(0, λ_i) for a wrong one.

    Args:
        lengths: (N,) response lengths.
        correct: (N,) bool or 0/1 correctness.
        group_index: (N,) integer group ids.

    Returns:
        (N,) reward term in [−0.5, 0.5].
    """
    lengths = _float_lengths(lengths)
    check_shape(correct, "correct", tuple(lengths.shape))
    dense, num_groups = dense_group_index(group_index, lengths.shape[0])
    group_min = lengths.new_full((num_groups,), torch.inf).scatter_reduce(
        0, dense, lengths, reduce="amin"
    )[dense]  # (N,)
    group_max = lengths.new_full((num_groups,), -torch.inf).scatter_reduce(
        0, dense, lengths, reduce="amax"
    )[dense]  # (N,)
    spread = group_max - group_min
    length_lambda = torch.where(
        spread > 0, 0.5 - (lengths - group_min) / spread.clamp(min=1e-12), 0.0
    )
    return torch.where(correct.bool(), length_lambda, length_lambda.clamp(max=0.0))


def shorter_better_reward(
    lengths: torch.Tensor,
    correct: torch.Tensor,
    group_index: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1e-3,
) -> torch.Tensor:
    """ShorterBetter reward R = α·1[correct] − β·|L − L_SOL| (arXiv 2504.21370;
    docs/papers.md §4.4).

    L_SOL (the sample optimal length) is the shortest correct length of the group, or the group's
    mean length when none of its responses is correct. This replaces the accuracy reward.

    Args:
        lengths: (N,) response lengths.
        correct: (N,) bool or 0/1 correctness.
        group_index: (N,) integer group ids.
        alpha: weight of correctness (1.0).
        beta: weight of the length deviation (1e-3).

    Returns:
        (N,) reward.
    """
    lengths = _float_lengths(lengths)
    check_shape(correct, "correct", tuple(lengths.shape))
    dense, num_groups = dense_group_index(group_index, lengths.shape[0])
    correct = correct.bool()
    correct_lengths = torch.where(correct, lengths, torch.inf)  # (N,)
    shortest_correct = lengths.new_full((num_groups,), torch.inf).scatter_reduce(
        0, dense, correct_lengths, reduce="amin"
    )  # (G,)
    counts = torch.bincount(dense, minlength=num_groups).to(lengths.dtype)  # (G,)
    mean_length = lengths.new_zeros(num_groups).index_add_(0, dense, lengths) / counts  # (G,)
    optimal_length = torch.where(shortest_correct.isinf(), mean_length, shortest_correct)[dense]
    return alpha * correct.to(lengths.dtype) - beta * (lengths - optimal_length).abs()
