"""Masked reductions over padded (batch, length) tensors, shared by every `dcrl.core` module.

A mask is 1 on the valid response tokens of a row and 0 on padding. Masks may be bool or float;
they are cast to the values' dtype. These helpers never divide by zero: an empty mask reduces to 0.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is set (a float mask weights them).

    Padding is selected away, not multiplied by 0: an inf or NaN on a padded position (a
    log-prob of −inf there, say) does not leak into the sum or its gradient.

    Args:
        values: (N, L) or any shape.
        mask: same shape as `values` (bool or float).
        dim: reduce over this dimension only; None reduces over all.

    Returns:
        A scalar, or `values` with `dim` removed.
    """
    weighted = torch.where(mask != 0, values * mask.to(values.dtype), 0.0)
    if dim is None:
        return weighted.sum()
    return weighted.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is set; 0 where the mask is empty.

    Args:
        values: (N, L) or any shape.
        mask: same shape as `values` (bool or float).
        dim: reduce over this dimension only (per-row means for dim=-1); None reduces over all.

    Returns:
        A scalar, or `values` with `dim` removed.
    """
    mask = mask.to(values.dtype)
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Variance of the masked entries of `values` (all dimensions); 0 with fewer than two entries.

    Args:
        values: (N, L) or any shape.
        mask: same shape as `values`.
        unbiased: divide by (count - 1) instead of count.

    Returns:
        A scalar.
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    count = mask.sum()
    sq = masked_sum((values - mean) ** 2, mask)
    denom = (count - 1.0) if unbiased else count
    if denom <= 0:
        return values.new_zeros(())
    return sq / denom
