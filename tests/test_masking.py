import pytest
import torch

from dcrl.core.masking import masked_mean, masked_sum, masked_var


def test_masked_mean_matches_hand_computation():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_sum(values, mask).item() == 7.0
    assert masked_mean(values, mask).item() == pytest.approx(7.0 / 3)
    assert torch.equal(masked_mean(values, mask, dim=-1), torch.tensor([1.5, 4.0]))


def test_empty_mask_reduces_to_zero_not_nan():
    values = torch.randn(2, 3)
    mask = torch.zeros(2, 3)
    assert masked_mean(values, mask).item() == 0.0
    assert masked_var(values, mask).item() == 0.0


def test_masked_var_matches_torch_var():
    values = torch.randn(4, 5)
    mask = torch.rand(4, 5) > 0.3
    selected = values[mask]
    assert torch.allclose(masked_var(values, mask, unbiased=True), selected.var(unbiased=True))
    assert torch.allclose(masked_var(values, mask), selected.var(unbiased=False))


def test_inf_and_nan_on_padding_do_not_leak_into_reductions_or_gradients():
    values = torch.tensor([[1.0, 2.0, -torch.inf], [4.0, torch.nan, torch.inf]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    total = masked_sum(values, mask)
    assert total.item() == 7.0
    assert torch.equal(masked_sum(values, mask, dim=-1), torch.tensor([3.0, 4.0]))
    assert masked_mean(values, mask).item() == pytest.approx(7.0 / 3)
    assert masked_var(values, mask).item() == pytest.approx(
        torch.tensor([1.0, 2.0, 4.0]).var(unbiased=False).item()
    )
    total.backward()
    assert torch.equal(values.grad, mask.float())


def test_a_float_mask_weights_the_values():
    values = torch.tensor([[1.0, 2.0, 3.0]])
    assert masked_sum(values, torch.tensor([[0.5, 1.0, 0.0]])).item() == 2.5
