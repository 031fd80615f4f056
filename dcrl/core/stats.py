"""Evaluation statistics: unbiased pass@k, a rollout's pass@n, avg@k, the length–accuracy
correlation, length summaries.

References:
    pass@k: Chen et al. 2021, arXiv 2107.03374 §2.1 — with n samples of which c are correct,
        pass@k = 1 − C(n − c, k) / C(n, k), averaged over problems (docs/papers.md §6).
    avg@k: mean correctness of k samples per problem (the papers' Avg@32; docs/papers.md §3.5, §6).
    length–accuracy correlation: the ICR diagnostic (arXiv 2605.07316; code-faithful details in
        docs/papers.md §4.3): population covariance / (σ_L·σ_a + 1e−8), per group and per batch.
"""

from __future__ import annotations

import torch

from dcrl.core.advantages import check_shape, dense_group_index

ZERO_VARIANCE_MODES = ("include", "exclude")
CORRELATION_EPS = 1e-8  # added to σ_L·σ_a, as in the ICR code (docs/papers.md §4.3)


def _as_count_tensor(values: object, name: str) -> torch.Tensor:
    counts = torch.as_tensor(values)
    if counts.dim() != 1:
        raise ValueError(
            f"{name} must be one count per problem, shape (P,), got {tuple(counts.shape)}"
        )
    if counts.dtype == torch.bool or counts.is_complex():
        raise TypeError(f"{name} must hold integer counts, got dtype {counts.dtype}")
    if counts.is_floating_point():
        if not torch.equal(counts, counts.round()):
            raise ValueError(f"{name} must hold whole numbers (counts of samples), got {counts}")
        counts = counts.long()
    if (counts < 0).any():
        raise ValueError(f"{name} must be >= 0, got {counts}")
    return counts


def pass_at_k_per_problem(num_samples: object, num_correct: object, k: int) -> torch.Tensor:
    """Unbiased pass@k of each problem: 1 − C(n − c, k)/C(n, k) (arXiv 2107.03374 §2.1).

    Computed as the product 1 − Π_{i = n−c+1}^{n} (1 − k/i), whose factors all lie in [0, 1], so
    it neither overflows nor cancels for any n (binomial coefficients overflow float64 near
    n = 1030). Where n − c < k every k-subset holds a correct sample and the value is exactly 1.
    Memory: one float64 per (problem, correct sample), e.g. 4 MB for 500 problems × 1024 samples.

    Args:
        num_samples: (P,) integers n ≥ k — samples drawn per problem (tensor, array or list).
        num_correct: (P,) integers 0 ≤ c ≤ n — correct samples per problem.
        k: the number of attempts, ≥ 1.

    Returns:
        (P,) float64 pass@k per problem, in [0, 1].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    n = _as_count_tensor(num_samples, "num_samples")  # (P,)
    c = _as_count_tensor(num_correct, "num_correct")  # (P,)
    if n.shape != c.shape:
        raise ValueError(
            f"num_samples {tuple(n.shape)} and num_correct {tuple(c.shape)} must have one entry "
            "per problem each"
        )
    if (c > n).any():
        bad = int(torch.nonzero(c > n)[0])
        raise ValueError(
            f"num_correct exceeds num_samples for problem {bad} ({int(c[bad])} > {int(n[bad])}); "
            "count the correct samples among the drawn ones"
        )
    if (n < k).any():
        bad = int(torch.nonzero(n < k)[0])
        raise ValueError(
            f"k = {k} exceeds the {int(n[bad])} samples of problem {bad}; pass@k needs n >= k "
            "samples per problem: draw more samples or lower k"
        )
    max_correct = int(c.max()) if c.numel() else 0
    offsets = torch.arange(max_correct, dtype=torch.float64)  # (C,)
    denominators = (n - c + 1).to(torch.float64)[:, None] + offsets  # (P, C): i = n−c+1, ..., n
    factors = (1.0 - k / denominators).clamp(min=0.0)  # 0 at i = k, which only occurs if n−c < k
    factors = torch.where(offsets < c[:, None], factors, torch.ones_like(factors))  # (P, C)
    return 1.0 - factors.prod(dim=1)


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c of them correct (arXiv 2107.03374 §2.1).

    Example: pass_at_k(4, 1, 2) == 0.5, since C(3, 2)/C(4, 2) = 3/6 of the pairs miss the one
    correct sample.
    """
    for name, value in (("num_samples", num_samples), ("num_correct", num_correct)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return float(pass_at_k_per_problem([num_samples], [num_correct], k)[0])


def pass_at_k_curve(
    num_samples_per_problem: object,
    num_correct_per_problem: object,
    ks: list[int] | None = None,
) -> dict[int, float]:
    """Mean unbiased pass@k over problems for several k.

    Args:
        num_samples_per_problem: (P,) samples drawn per problem.
        num_correct_per_problem: (P,) correct samples per problem.
        ks: the k values; default 1, 2, 4, ... up to the smallest n.

    Returns:
        {k: mean over problems of pass@k}, in increasing order of k.
    """
    n = _as_count_tensor(num_samples_per_problem, "num_samples_per_problem")
    if n.numel() == 0:
        raise ValueError("num_samples_per_problem is empty: pass at least one problem")
    if ks is None:
        min_samples = int(n.min())
        if min_samples < 1:
            raise ValueError("a problem has 0 samples; every problem needs n >= 1 samples")
        ks = [2**power for power in range(min_samples.bit_length())]  # 1, 2, 4, ... <= n
    return {
        k: float(pass_at_k_per_problem(n, num_correct_per_problem, k).mean())
        for k in sorted(set(ks))
    }


def avg_at_k(correct: torch.Tensor) -> float:
    """avg@k: mean correctness over problems and their k samples (the papers' Avg@32).

    Args:
        correct: (P, k) bool or float in [0, 1], one row per problem.

    Returns:
        The mean, a float in [0, 1].
    """
    correct = torch.as_tensor(correct)
    if correct.dim() != 2 or correct.numel() == 0:
        raise ValueError(
            f"correct must be a non-empty (P, k) table of per-sample correctness, "
            f"got shape {tuple(correct.shape)}"
        )
    return float(correct.to(torch.float64).mean())


def pass_at_n(correct: torch.Tensor, group_index: torch.Tensor) -> float:
    """pass@n of a rollout: the fraction of prompts with at least one correct response among
    their n (`pass_at_k` with k = n, so no estimate is needed).

    Args:
        correct: (N,) 1.0 for a correct response, 0.0 for a wrong one.
        group_index: (N,) the prompt of each response (any integer labels).

    Returns:
        The fraction, a float in [0, 1].
    """
    dense, num_groups = dense_group_index(group_index, len(correct))
    any_correct = torch.zeros(num_groups).scatter_reduce(0, dense, correct, "amax")
    return float(any_correct.mean())


def length_accuracy_correlation(
    lengths: torch.Tensor,
    correct: torch.Tensor,
    group_index: torch.Tensor,
    *,
    zero_variance: str = "include",
) -> dict[str, float]:
    """Pearson correlation and covariance of response length and correctness (the ICR diagnostic).

    Code-faithful to the ICR repo's `reward_var/acc_raw_length_*` metrics (arXiv 2605.07316;
    docs/papers.md §4.3): centre L and a (within each group, or over the batch), take the population
    covariance cov = mean(ΔL·Δa) and corr = cov / (σ_L·σ_a + 1e−8) with population σ. Negative
    correlation = shorter answers are more often correct (the overthinking regime).

    zero_variance decides which groups enter the group averages ("group", "group_cov"):
        "include" (default, the ICR code's choice): every group. Groups whose lengths or
            correctness are all equal (e.g. all-correct or all-wrong) contribute exactly 0 and
            dilute the mean toward 0.
        "exclude": only groups with variance in both length and correctness; NaN if none has.
    The batch values ("batch", "batch_cov") always use all N responses.

    Args:
        lengths: (N,) response lengths in tokens (int or float).
        correct: (N,) bool or float correctness (1 = correct).
        group_index: (N,) integer group ids (same id = same prompt; any order, any group sizes).
        zero_variance: "include" | "exclude".

    Returns:
        {"group", "group_cov", "batch", "batch_cov": float,
         "num_groups", "num_groups_with_variance": int}.
    """
    if zero_variance not in ZERO_VARIANCE_MODES:
        raise ValueError(
            f"zero_variance must be one of {ZERO_VARIANCE_MODES}, got {zero_variance!r}"
        )
    for name, tensor in (("lengths", lengths), ("correct", correct)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 1:
            raise ValueError(
                f"{name} must be one value per response, shape (N,), got {tuple(tensor.shape)}"
            )
    check_shape(correct, "correct", tuple(lengths.shape))
    dense, num_groups = dense_group_index(group_index, lengths.shape[0])
    lengths = lengths.to(torch.float64)
    correct = correct.to(torch.float64)

    counts = torch.bincount(dense, minlength=num_groups).to(torch.float64)  # (G,)

    def group_mean(values: torch.Tensor) -> torch.Tensor:  # (N,) -> (G,)
        return values.new_zeros(num_groups).index_add_(0, dense, values) / counts

    def group_has_spread(values: torch.Tensor) -> torch.Tensor:  # (N,) -> (G,) bool
        group_min = values.new_full((num_groups,), float("inf")).scatter_reduce(
            0, dense, values, reduce="amin"
        )
        group_max = values.new_full((num_groups,), float("-inf")).scatter_reduce(
            0, dense, values, reduce="amax"
        )
        return group_max > group_min

    centred_lengths = lengths - group_mean(lengths)[dense]  # (N,)
    centred_correct = correct - group_mean(correct)[dense]  # (N,)
    group_cov = group_mean(centred_lengths * centred_correct)  # (G,)
    group_std_product = (
        group_mean(centred_lengths.square()).sqrt() * group_mean(centred_correct.square()).sqrt()
    )  # (G,)
    group_corr = group_cov / (group_std_product + CORRELATION_EPS)  # (G,)

    with_variance = group_has_spread(lengths) & group_has_spread(correct)  # (G,)
    kept = with_variance if zero_variance == "exclude" else torch.ones_like(with_variance)
    if kept.any():
        mean_group_corr = float(group_corr[kept].mean())
        mean_group_cov = float(group_cov[kept].mean())
    else:
        mean_group_corr = mean_group_cov = float("nan")

    batch_centred_lengths = lengths - lengths.mean()  # (N,)
    batch_centred_correct = correct - correct.mean()  # (N,)
    batch_cov = (batch_centred_lengths * batch_centred_correct).mean()
    batch_std_product = (
        batch_centred_lengths.square().mean().sqrt() * batch_centred_correct.square().mean().sqrt()
    )
    return {
        "group": mean_group_corr,
        "group_cov": mean_group_cov,
        "batch": float(batch_cov / (batch_std_product + CORRELATION_EPS)),
        "batch_cov": float(batch_cov),
        "num_groups": num_groups,
        "num_groups_with_variance": int(with_variance.sum()),
    }


def length_summary(lengths: torch.Tensor, correct: torch.Tensor | None = None) -> dict[str, float]:
    """Mean, median, 90th percentile, min and max of response lengths; optionally by correctness.

    Quantiles use linear interpolation (torch.quantile; the median of an even count is the mean
    of the two middle values).

    Args:
        lengths: (N,) response lengths in tokens.
        correct: optional (N,) bool or 0/1 correctness; adds "correct_mean" and "incorrect_mean"
            (NaN when there is no such response).

    Returns:
        {"mean", "median", "p90", "min", "max"[, "correct_mean", "incorrect_mean"]}.
    """
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.numel() == 0:
        raise ValueError("lengths must be a non-empty (N,) tensor of response lengths")
    values = lengths.to(torch.float64)
    summary = {
        "mean": float(values.mean()),
        "median": float(torch.quantile(values, 0.5)),
        "p90": float(torch.quantile(values, 0.9)),
        "min": float(values.min()),
        "max": float(values.max()),
    }
    if correct is not None:
        check_shape(correct, "correct", tuple(lengths.shape))
        is_correct = correct.bool()
        for key, selected in (("correct_mean", is_correct), ("incorrect_mean", ~is_correct)):
            summary[key] = float(values[selected].mean()) if selected.any() else float("nan")
    return summary


def rollout_metrics(
    scores: torch.Tensor,
    lengths: torch.Tensor,
    truncated: torch.Tensor,
    group_index: torch.Tensor,
) -> dict[str, float]:
    """A training step's rollout in numbers: accuracy, pass@n, lengths, the share cut at the
    length limit and the length–accuracy correlation (per group and over the batch).

    Args:
        scores: (N,) the task's grades; a response is correct when its score is above 0.5.
        lengths: (N,) response lengths in tokens.
        truncated: (N,) bool, cut at the length limit.
        group_index: (N,) the prompt of each response.
    """
    lengths = lengths.float()
    correct = (scores > 0.5).float()
    corr = length_accuracy_correlation(lengths, correct, group_index)
    length = length_summary(lengths, correct > 0)
    return {
        "reward/accuracy": float(scores.mean()),
        "reward/pass_at_n": pass_at_n(correct, group_index),
        "length/mean": length["mean"],
        "length/p90": length["p90"],
        "length/max": length["max"],
        "length/truncated_frac": float(truncated.float().mean()),
        "length/correct_mean": length["correct_mean"],
        "corr/length_acc_group": float(corr["group"]),
        "corr/length_acc_batch": float(corr["batch"]),
    }
