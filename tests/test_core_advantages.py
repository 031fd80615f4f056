import math

import pytest
import torch

from dcrl.core.advantages import (
    broadcast_to_tokens,
    dense_group_index,
    group_ids,
    grpo_advantages,
    rloo_advantages,
)


def loop_grpo_reference(scores, group_index, std, eps=1e-6):
    """Plain Python, one group at a time, torch.std as in EasyR1 compute_grpo_outcome_advantage."""
    out = torch.zeros_like(scores)
    for gid in group_index.unique().tolist():
        rows = [i for i in range(len(scores)) if group_index[i] == gid]
        values = scores[rows]
        mean = values.mean()
        if std == "none":
            out[rows] = values - mean
        else:
            spread = values.std(unbiased=(std == "unbiased"))
            out[rows] = (values - mean) / (spread + eps)
        if values.max() == values.min():
            out[rows] = 0.0
    return out


def random_groups(num_groups, generator):
    """Shuffled, non-contiguous, unequal-size groups (sizes 2..6) with sparse ids."""
    sizes = torch.randint(2, 7, (num_groups,), generator=generator)
    ids = torch.randperm(1000, generator=generator)[:num_groups] * 7 - 300  # negative ids too
    group_index = ids.repeat_interleave(sizes)
    return group_index[torch.randperm(group_index.numel(), generator=generator)]


def test_group_ids_contiguous_layout():
    assert group_ids(2, 3).tolist() == [0, 0, 0, 1, 1, 1]
    assert group_ids(1, 4).dtype == torch.long
    with pytest.raises(ValueError, match="group_size"):
        group_ids(2, 0)


def test_dense_group_index_renumbers_any_ids():
    dense, num_groups = dense_group_index(torch.tensor([7, -2, 7, 40, -2]), 5)
    assert num_groups == 3
    assert dense.tolist() == [1, 0, 1, 2, 0]


def test_grpo_hand_computed_binary_group():
    # group 0: scores [1, 0, 0]: mean 1/3, unbiased std sqrt(1/3), population std sqrt(2/9).
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    group_index = torch.tensor([0, 0, 0, 1, 1])
    unbiased = grpo_advantages(scores, group_index, eps=0.0)
    assert unbiased[0].item() == pytest.approx((2 / 3) / math.sqrt(1 / 3))
    assert unbiased[1].item() == pytest.approx((-1 / 3) / math.sqrt(1 / 3))
    # group 1: [1, 0]: mean 0.5, unbiased std sqrt(0.5) -> ±0.5/sqrt(0.5) = ±sqrt(0.5)
    assert unbiased[3].item() == pytest.approx(math.sqrt(0.5))
    assert unbiased[4].item() == pytest.approx(-math.sqrt(0.5))
    population = grpo_advantages(scores, group_index, std="population", eps=0.0)
    assert population[0].item() == pytest.approx((2 / 3) / math.sqrt(2 / 9))
    assert population[3].item() == pytest.approx(1.0)
    dr_grpo = grpo_advantages(scores, group_index, std="none")
    assert dr_grpo.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.5, -0.5])


def test_grpo_eps_is_added_to_the_std():
    scores = torch.tensor([1.0, 0.0], dtype=torch.float64)
    advantages = grpo_advantages(scores, torch.tensor([3, 3]), eps=0.5)
    assert advantages[0].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 0.5))


@pytest.mark.parametrize("std", ["unbiased", "population", "none"])
def test_grpo_matches_loop_reference_on_shuffled_unequal_groups(std):
    generator = torch.Generator().manual_seed(1)
    for trial in range(5):
        group_index = random_groups(12, generator)
        if trial % 2:
            scores = torch.randint(0, 2, group_index.shape, generator=generator).float()
        else:
            scores = torch.randn(group_index.shape, generator=generator)
        expected = loop_grpo_reference(scores, group_index, std)
        actual = grpo_advantages(scores, group_index, std=std)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_grpo_all_equal_groups_are_exactly_zero():
    # 0.1 * 3 / 3 != 0.1 in floating point: the zero must not depend on the mean being exact.
    scores = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 0.3, 0.7])
    group_index = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    for std in ("unbiased", "population", "none"):
        advantages = grpo_advantages(scores, group_index, std=std)
        assert torch.equal(advantages[:5], torch.zeros(5))
        assert (advantages[5:] != 0).all()


def test_grpo_advantages_sum_to_zero_per_group():
    generator = torch.Generator().manual_seed(2)
    group_index = random_groups(20, generator)
    scores = torch.rand(group_index.shape, generator=generator)
    advantages = grpo_advantages(scores, group_index)
    dense, num_groups = dense_group_index(group_index, group_index.numel())
    per_group = torch.zeros(num_groups).index_add_(0, dense, advantages)
    assert per_group.abs().max() < 1e-5


def test_group_of_one_raises_with_the_fix():
    with pytest.raises(ValueError, match="n >= 2"):
        grpo_advantages(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([1.0]), torch.tensor([0]))


def test_input_validation():
    with pytest.raises(TypeError, match="floating"):
        grpo_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]))
    with pytest.raises(TypeError, match="integer"):
        grpo_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="group_index"):
        grpo_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        grpo_advantages(torch.ones(2, 3), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="std"):
        grpo_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), std="sample")


def test_rloo_hand_computed_and_loop_reference():
    scores = torch.tensor([1.0, 0.0, 0.0, 2.0, 4.0])
    group_index = torch.tensor([5, 5, 5, 9, 9])
    # 1 - (0+0)/2 = 1; 0 - (1+0)/2 = -0.5; 2 - 4 = -2; 4 - 2 = 2
    assert rloo_advantages(scores, group_index).tolist() == [1.0, -0.5, -0.5, -2.0, 2.0]

    generator = torch.Generator().manual_seed(3)
    group_index = random_groups(10, generator)
    scores = torch.randn(group_index.shape, generator=generator)
    expected = torch.stack(
        [
            scores[i]
            - scores[(group_index == group_index[i]) & (torch.arange(len(scores)) != i)].mean()
            for i in range(len(scores))
        ]
    )
    torch.testing.assert_close(rloo_advantages(scores, group_index), expected)


def test_rloo_all_equal_group_is_exactly_zero():
    scores = torch.tensor([0.1, 0.1, 0.1])
    assert torch.equal(rloo_advantages(scores, torch.zeros(3, dtype=torch.long)), torch.zeros(3))


def test_broadcast_to_tokens_zero_on_padding():
    advantages = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert broadcast_to_tokens(advantages, mask).tolist() == [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="advantages"):
        broadcast_to_tokens(torch.ones(3), mask)
