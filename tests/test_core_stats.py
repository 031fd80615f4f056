import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from dcrl.core.stats import (
    avg_at_k,
    length_accuracy_correlation,
    length_summary,
    pass_at_k,
    pass_at_k_curve,
    pass_at_k_per_problem,
    pass_at_n,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


def lgamma_pass_at_k(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    log_ratio = (
        math.lgamma(n - c + 1)
        - math.lgamma(n - c - k + 1)
        - math.lgamma(n + 1)
        + math.lgamma(n - k + 1)
    )  # log C(n - c, k) - log C(n, k)
    return -math.expm1(log_ratio)


def test_pass_at_k_matches_enumeration_of_all_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(
                    brute_force_pass_at_k(n, c, k), abs=1e-12
                ), (n, c, k)


def test_pass_at_k_hand_cases_and_edges():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    for n, c in [(1, 0), (1, 1), (10, 3), (128, 17), (4096, 4095)]:
        assert pass_at_k(n, c, 1) == pytest.approx(c / n, rel=1e-12)
        assert pass_at_k(n, c, n) == (1.0 if c > 0 else 0.0)
    assert pass_at_k(4096, 0, 100) == 0.0
    assert pass_at_k(4096, 4096, 4096) == 1.0  # no overflow or NaN from the clamped factors


def test_pass_at_k_is_monotone_in_k():
    for n, c in [(16, 1), (16, 5), (64, 3), (1024, 10)]:
        values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
        assert all(b >= a - 1e-15 for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("n", [1024, 4096])
def test_pass_at_k_large_n_matches_lgamma_reference(n):
    for c in [0, 1, 2, 7, 100, n // 2, n - 1, n]:
        for k in [1, 2, 16, 128, 1024, n]:
            value = pass_at_k(n, c, k)
            # lgamma(n) ~ 3e4 carries ~1e-11 absolute error into the log ratio: hence abs=1e-10.
            assert value == pytest.approx(lgamma_pass_at_k(n, c, k), rel=1e-9, abs=1e-10), (c, k)
            exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))  # big-integer arithmetic
            assert value == pytest.approx(float(exact), rel=1e-12, abs=1e-15), (c, k)


def test_vectorized_pass_at_k_equals_scalar_loop():
    generator = torch.Generator().manual_seed(0)
    num_samples = torch.randint(8, 300, (50,), generator=generator)
    num_correct = (torch.rand(50, generator=generator) * (num_samples + 1)).long()
    num_correct[:3] = torch.stack([torch.tensor(0), num_samples[1], num_samples[2] - 1])
    for k in [1, 3, 8]:
        vectorized = pass_at_k_per_problem(num_samples, num_correct, k)
        assert vectorized.shape == (50,) and vectorized.dtype == torch.float64
        loop = [pass_at_k(int(n), int(c), k) for n, c in zip(num_samples, num_correct, strict=True)]
        assert vectorized.tolist() == pytest.approx(loop, abs=1e-12)
    # numpy arrays and lists work too, and whole-number floats are accepted as counts.
    assert pass_at_k_per_problem(np.array([4, 4]), [1.0, 0.0], 2).tolist() == [0.5, 0.0]


def test_pass_at_k_rejects_bad_inputs():
    with pytest.raises(ValueError, match="exceeds the 4 samples"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="num_correct exceeds num_samples"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 0)
    with pytest.raises(TypeError, match="num_samples"):
        pass_at_k(4.5, 1, 1)
    with pytest.raises(ValueError, match="whole numbers"):
        pass_at_k_per_problem([4.5], [1], 1)
    with pytest.raises(ValueError, match=">= 0"):
        pass_at_k_per_problem([4], [-1], 1)
    with pytest.raises(ValueError, match="one entry per problem"):
        pass_at_k_per_problem([4, 4], [1], 1)


def test_pass_at_k_curve_defaults_to_powers_of_two_up_to_min_n():
    curve = pass_at_k_curve([8, 10], [2, 0])
    assert list(curve) == [1, 2, 4, 8]
    for k, value in curve.items():
        assert value == pytest.approx((pass_at_k(8, 2, k) + pass_at_k(10, 0, k)) / 2)
    assert pass_at_k_curve([8, 10], [2, 0], ks=[3, 1]) == {
        1: pytest.approx(0.125),
        3: pytest.approx((pass_at_k(8, 2, 3) + 0.0) / 2),
    }
    with pytest.raises(ValueError, match="k = 9 exceeds"):
        pass_at_k_curve([8, 10], [2, 0], ks=[9])


def test_avg_at_k_hand_case():
    correct = torch.tensor([[True, False, True, True], [False, False, False, True]])
    assert avg_at_k(correct) == 4 / 8
    assert avg_at_k(correct.float().numpy()) == 4 / 8
    with pytest.raises(ValueError, match=r"\(P, k\)"):
        avg_at_k(torch.tensor([1.0, 0.0]))


def reference_correlation(lengths, correct, group_index, zero_variance):
    """Plain numpy, one group at a time (ICR code formulas, docs/papers.md §4.3)."""

    def pearson_and_cov(x, y):
        dx, dy = x - x.mean(), y - y.mean()
        cov = float(np.mean(dx * dy))
        return cov / (float(np.sqrt(np.mean(dx**2)) * np.sqrt(np.mean(dy**2))) + 1e-8), cov

    x, y, g = (np.asarray(t, dtype=np.float64) for t in (lengths, correct, group_index))
    group_corrs, group_covs = [], []
    for gid in np.unique(g):
        xs, ys = x[g == gid], y[g == gid]
        if zero_variance == "exclude" and (np.ptp(xs) == 0 or np.ptp(ys) == 0):
            continue
        corr, cov = pearson_and_cov(xs, ys)
        group_corrs.append(corr)
        group_covs.append(cov)
    batch_corr, batch_cov = pearson_and_cov(x, y)
    nan = float("nan")
    return {
        "group": float(np.mean(group_corrs)) if group_corrs else nan,
        "group_cov": float(np.mean(group_covs)) if group_covs else nan,
        "batch": batch_corr,
        "batch_cov": batch_cov,
    }


@pytest.mark.parametrize("zero_variance", ["include", "exclude"])
def test_correlation_matches_loop_reference_on_random_groups(zero_variance):
    generator = torch.Generator().manual_seed(0)
    group_sizes = torch.randint(2, 9, (40,), generator=generator)
    group_index = torch.repeat_interleave(
        torch.randperm(1000, generator=generator)[:40] * 3, group_sizes
    )
    shuffle = torch.randperm(group_index.numel(), generator=generator)
    group_index = group_index[shuffle]  # ids unsorted, non-contiguous, groups of different sizes
    num_responses = group_index.numel()
    lengths = torch.randint(50, 4000, (num_responses,), generator=generator)
    correct = torch.rand(num_responses, generator=generator) < 0.6
    lengths[group_index == group_index[0]] = 777  # one group without length variance
    result = length_accuracy_correlation(lengths, correct, group_index, zero_variance=zero_variance)
    expected = reference_correlation(lengths, correct, group_index, zero_variance)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
    assert result["num_groups"] == 40
    assert 0 < result["num_groups_with_variance"] < 40


def test_correlation_hand_case_perfectly_negative_group_and_dilution():
    # Group 5: longer answers are wrong (corr -1). Group 9: all correct (no variance).
    lengths = torch.tensor([100, 100, 300, 300, 150, 250])
    correct = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    group_index = torch.tensor([5, 5, 5, 5, 9, 9])
    included = length_accuracy_correlation(lengths, correct, group_index)
    excluded = length_accuracy_correlation(lengths, correct, group_index, zero_variance="exclude")
    # Group 5: ΔL = (-100, -100, 100, 100), Δa = (.5, .5, -.5, -.5): cov = -50, σ_L·σ_a = 50.
    assert excluded["group"] == pytest.approx(-1.0, abs=1e-9)
    assert excluded["group_cov"] == pytest.approx(-50.0)
    assert included["group"] == pytest.approx(-0.5, abs=1e-9)  # diluted by the all-correct group
    assert included["group_cov"] == pytest.approx(-25.0)
    assert included["num_groups_with_variance"] == 1
    assert included["batch"] == excluded["batch"] < -0.5


def test_correlation_without_any_informative_group():
    lengths = torch.tensor([10, 20, 30, 40])
    correct = torch.tensor([True, True, False, False])
    group_index = torch.tensor([0, 0, 1, 1])  # each group all-correct or all-wrong
    included = length_accuracy_correlation(lengths, correct, group_index)
    excluded = length_accuracy_correlation(lengths, correct, group_index, zero_variance="exclude")
    assert included["group"] == 0.0 and included["group_cov"] == 0.0
    assert math.isnan(excluded["group"]) and math.isnan(excluded["group_cov"])
    # ΔL = (-15, -5, 5, 15), Δa = ±.5: cov = -5, σ_L·σ_a = √125·0.5 (the 1e-8 shifts it by 2e-9).
    assert included["batch"] == pytest.approx(-2 / math.sqrt(5), abs=1e-8)


def test_correlation_rejects_bad_inputs():
    lengths = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="zero_variance"):
        length_accuracy_correlation(lengths, lengths, torch.tensor([0, 0]), zero_variance="drop")
    with pytest.raises(ValueError, match="correct"):
        length_accuracy_correlation(lengths, torch.tensor([1.0]), torch.tensor([0, 0]))
    with pytest.raises(TypeError, match="group_index"):
        length_accuracy_correlation(lengths, lengths, torch.tensor([0.0, 0.0]))


def test_length_summary_hand_case():
    lengths = torch.tensor([10, 20, 30, 40, 100])
    summary = length_summary(lengths)
    assert summary == {"mean": 40.0, "median": 30.0, "p90": 76.0, "min": 10.0, "max": 100.0}
    split = length_summary(lengths, torch.tensor([True, True, False, False, False]))
    assert split["correct_mean"] == 15.0
    assert split["incorrect_mean"] == pytest.approx(170 / 3)
    assert math.isnan(length_summary(lengths, torch.zeros(5))["correct_mean"])
    assert length_summary(torch.tensor([1, 2, 3, 4]))["median"] == 2.5
    with pytest.raises(ValueError, match="non-empty"):
        length_summary(torch.tensor([]))


def test_pass_at_n_counts_prompts_with_any_correct_response():
    correct = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    group_index = torch.tensor([7, 7, 3, 3, 5, 5])
    assert pass_at_n(correct, group_index) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_pass_at_n_is_pass_at_k_with_k_the_group_size(seed):
    generator = torch.Generator().manual_seed(seed)
    groups, n = 6, 4
    correct = (torch.rand(groups * n, generator=generator) < 0.3).float()
    group_index = torch.arange(groups).repeat_interleave(n)[
        torch.randperm(groups * n, generator=generator)
    ]
    counts = torch.zeros(groups).index_add(0, group_index, correct).long()
    expected = sum(pass_at_k(n, int(c), n) for c in counts) / groups
    assert pass_at_n(correct, group_index) == pytest.approx(expected)
