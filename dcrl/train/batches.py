"""How the trainer cuts a step's TrainBatch into the pieces its forward passes take: row ranges
(`row_chunks`), micro-batches of rows of similar length (`length_sorted_chunks`), and the
padding columns no row of a piece uses (`trim_padding`).

None of these changes a result beyond float summation order: every row is scored on its own,
and the loss is normalized by the mini-batch's counts, not the micro-batch's.
"""

from __future__ import annotations

import torch

from dcrl.step_data import TrainBatch


def row_chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most `size` of `n` rows, in row order."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def length_sorted_chunks(response_mask: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Row indices of micro-batches of at most `size` rows, rows ordered by response length
    (longest first, ties in row order), so that `trim_padding` cuts each micro-batch to its own
    longest response instead of the batch's: rows of similar length share a micro-batch.

    Args:
        response_mask: (N, Lr) 1 on response tokens.
        size: rows per micro-batch.

    Returns:
        ceil(N / size) LongTensors (on the mask's device) that together hold every row once.
    """
    lengths = response_mask.sum(-1)  # (N,)
    order = torch.sort(lengths, descending=True, stable=True).indices  # (N,)
    return [order[rows] for rows in row_chunks(len(order), size)]


def trim_padding(batch: TrainBatch) -> TrainBatch:
    """Drop prompt columns that are padding in every row (left) and response columns that are
    padding in every row (right), so micro-batches of short sequences cost less."""
    width = batch.response_mask.shape[1]
    prompt_width = batch.input_ids.shape[1] - width
    prompt_used = batch.attention_mask[:, :prompt_width].any(0).nonzero()
    start = int(prompt_used[0]) if len(prompt_used) else prompt_width - 1
    response_used = batch.response_mask.any(0).nonzero()
    keep = int(response_used[-1]) + 1 if len(response_used) else 1
    cut = width - keep
    end = batch.input_ids.shape[1] - cut

    def right(t: torch.Tensor) -> torch.Tensor:
        return t[:, :keep] if t.dim() >= 2 and t.shape[1] == width else t

    return TrainBatch(
        input_ids=batch.input_ids[:, start:end],
        attention_mask=batch.attention_mask[:, start:end],
        response_mask=batch.response_mask[:, :keep],
        old_logprobs=None if batch.old_logprobs is None else batch.old_logprobs[:, :keep],
        advantages=batch.advantages[:, :keep],
        extras={k: right(v) for k, v in batch.extras.items()},
    )
