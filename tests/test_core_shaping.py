import pytest
import torch

from dcrl.core.shaping import kimi_length_reward, overlong_penalty, shorter_better_reward


def random_batch(generator, num_groups=12):
    """Shuffled, non-contiguous, unequal-size groups (sizes 1..6) with lengths and correctness."""
    sizes = torch.randint(1, 7, (num_groups,), generator=generator)
    group_index = (torch.randperm(100, generator=generator)[:num_groups] * 5).repeat_interleave(
        sizes
    )
    group_index = group_index[torch.randperm(group_index.numel(), generator=generator)]
    lengths = torch.randint(1, 12, group_index.shape, generator=generator)
    correct = torch.rand(group_index.shape, generator=generator) > 0.6
    return lengths, correct, group_index


def test_overlong_penalty_hand_computed():
    lengths = torch.tensor([0, 4096, 5120, 6144, 8192, 9000])
    expected = [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert overlong_penalty(lengths).tolist() == pytest.approx(expected)
    assert overlong_penalty(lengths, penalty=2.0).tolist() == pytest.approx(
        [2 * value for value in expected]
    )
    assert overlong_penalty(torch.tensor([15.0]), max_length=20, buffer=10).item() == -0.5
    assert overlong_penalty(lengths).dtype == torch.float32
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lengths, max_length=100, buffer=200)


def test_kimi_length_reward_hand_computed():
    lengths = torch.tensor([10, 20, 30, 40, 7, 7])
    correct = torch.tensor([True, False, True, False, True, False])
    group_index = torch.tensor([0, 0, 0, 0, 1, 1])
    # group 0: lambda = 0.5 - (L - 10)/30 = [0.5, 1/6, -1/6, -0.5]; group 1: equal lengths -> 0
    expected = [0.5, 0.0, -1 / 6, -0.5, 0.0, 0.0]
    assert kimi_length_reward(lengths, correct, group_index).tolist() == pytest.approx(expected)


def test_kimi_length_reward_matches_loop_reference():
    generator = torch.Generator().manual_seed(8)
    lengths, correct, group_index = random_batch(generator)
    expected = []
    for i in range(len(lengths)):
        group_lengths = lengths[group_index == group_index[i]].float()
        low, high = group_lengths.min(), group_lengths.max()
        length_lambda = (
            0.0 if high == low else 0.5 - (lengths[i] - low).item() / (high - low).item()
        )
        expected.append(length_lambda if correct[i] else min(0.0, length_lambda))
    assert kimi_length_reward(lengths, correct, group_index).tolist() == pytest.approx(expected)


def test_shorter_better_reward_hand_computed():
    lengths = torch.tensor([100, 60, 80, 50, 30])
    correct = torch.tensor([1, 1, 0, 0, 0])
    group_index = torch.tensor([0, 0, 0, 1, 1])
    # group 0: L_SOL = 60; group 1: nothing correct -> mean length 40
    expected = [1 - 1e-3 * 40, 1.0, -1e-3 * 20, -1e-3 * 10, -1e-3 * 10]
    assert shorter_better_reward(lengths, correct, group_index).tolist() == pytest.approx(expected)
    doubled = shorter_better_reward(lengths, correct, group_index, alpha=2.0, beta=0.0)
    assert doubled.tolist() == [2.0, 2.0, 0.0, 0.0, 0.0]


def test_shorter_better_reward_matches_loop_reference():
    generator = torch.Generator().manual_seed(9)
    lengths, correct, group_index = random_batch(generator)
    expected = []
    for i in range(len(lengths)):
        in_group = group_index == group_index[i]
        correct_lengths = lengths[in_group & correct]
        if correct_lengths.numel():
            optimal = correct_lengths.min().item()
        else:
            optimal = lengths[in_group].float().mean().item()
        expected.append(float(correct[i]) - 1e-3 * abs(lengths[i].item() - optimal))
    actual = shorter_better_reward(lengths, correct, group_index)
    assert actual.tolist() == pytest.approx(expected)


def test_shaping_validates_inputs():
    with pytest.raises(ValueError, match="correct"):
        kimi_length_reward(torch.ones(3), torch.ones(2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="group_index"):
        shorter_better_reward(torch.ones(3), torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="lengths"):
        overlong_penalty(torch.ones(2, 2))
