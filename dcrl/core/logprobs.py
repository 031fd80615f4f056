"""Token log-probabilities and full-vocabulary entropy of a tempered policy, computed in chunks.

The policy at temperature T is π^T(·|s) = softmax(z(s)/T), with z the logits (the notation of
AEPO, arXiv 2510.08141, and DCPO, arXiv 2601.12730). Every log-prob site in dcrl names its
temperature explicitly: DCPO scores the same responses at T = 1 and at T ≠ 1, and mixing the two
up is a known bug class (docs/papers.md §9.1).

Memory. Logits of a batch are large: 8 responses × 1,024 tokens × 49,152 vocabulary entries are
1.6 GB in float32. A naive `log_softmax(logits.float() / T)` materialises one or more copies of
that tensor, and its autograd graph keeps a full-size softmax for backward. Here the work is done
on blocks of at most `chunk_size` token positions, so the extra memory is O(chunk_size × V):

- forward: each block is up-cast to float32, divided by T, reduced to per-position log-sum-exp,
  the sampled token's log-prob and (optionally) the entropy; the block is then freed;
- backward (a custom autograd Function): only the per-position log-sum-exp (and entropy) are
  saved; the softmax of each block is recomputed from the logits, and the gradient written
  block by block into the (unavoidable) full-size gradient tensor.

Math runs in float32 (float64 when the logits are float64, which gradcheck needs); outputs are
float32 whatever the logits' dtype (bf16 logits give float32 log-probs).

Two entropy signals exist and both are logged by dcrl (docs/papers.md §1.2, §5):
- `token_entropy`: the full-vocabulary entropy −Σ_v π^T(v) log π^T(v) per position;
- `sampled_token_nll`: −mean log π(o_t) of the sampled tokens, the Monte-Carlo estimator that the
  papers' controllers read as `actor/entropy_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.autograd.function import once_differentiable

from dcrl.core.masking import masked_mean

# Bytes of one float32 block when `chunk_size` is None. On CPU, blocks must stay below glibc's
# largest mmap threshold (32 MiB): smaller blocks are recycled by malloc, larger ones are mapped
# and page-faulted afresh every time, which made the chunked pass 3x slower at 48 MiB blocks
# (bench/core_memory.py, V = 49,152). On a GPU the caching allocator recycles blocks, and larger
# blocks keep kernels big enough to run at full speed.
CPU_BLOCK_BYTES = 16 * 2**20
ACCELERATOR_BLOCK_BYTES = 256 * 2**20


def default_chunk_size(logits: torch.Tensor) -> int:
    """Token positions per block used when `chunk_size` is None: a fixed block size in bytes.

    Args:
        logits: (N, L, V); only its vocabulary size, dtype and device are read.

    Returns:
        max(1, block bytes // (V × bytes per compute element)), e.g. 85 on CPU for V = 49,152.
    """
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    row_bytes = logits.shape[-1] * torch.finfo(compute_dtype).bits // 8
    block_bytes = CPU_BLOCK_BYTES if logits.device.type == "cpu" else ACCELERATOR_BLOCK_BYTES
    return max(1, block_bytes // row_bytes)


def _validate(
    logits: torch.Tensor, tokens: torch.Tensor | None, temperature: float, chunk_size: int | None
) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(
            f"logits must be a floating-point tensor (N, L, V), got {type(logits).__name__} "
            f"{getattr(logits, 'dtype', '')}"
        )
    if logits.dim() != 3:
        raise ValueError(
            f"logits must have shape (N, L, V), got {tuple(logits.shape)}; add a batch "
            "dimension with logits.unsqueeze(0) for a single sequence"
        )
    if tokens is not None:
        if tokens.shape != logits.shape[:2]:
            raise ValueError(
                f"tokens must have shape (N, L) = {tuple(logits.shape[:2])} to match logits "
                f"{tuple(logits.shape)}, got {tuple(tokens.shape)}"
            )
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor of token ids, got {tokens.dtype}")
    try:
        temperature_value = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a number, got {temperature!r}") from None
    if not temperature_value > 0 or not math.isfinite(temperature_value):
        raise ValueError(
            f"temperature must be > 0 and finite (logits are divided by it), got "
            f"{temperature!r}; use a small positive value such as 1e-3 to approach greedy decoding"
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def _blocks(num_rows: int, seq_len: int, chunk_size: int) -> Iterator[tuple[slice, slice]]:
    """(rows, positions) slices covering an (N, L) grid with at most `chunk_size` cells each.

    Blocks are cut along both axes instead of reshaping the logits to (N·L, V): slicing a
    non-contiguous logits tensor (say `model(...).logits[:, :-1]`) stays a view, whereas
    reshaping it would copy all of it.
    """
    rows_per_block = max(1, min(num_rows, chunk_size))
    positions_per_block = max(1, chunk_size // rows_per_block)
    for row_start in range(0, num_rows, rows_per_block):
        for position_start in range(0, seq_len, positions_per_block):
            yield (
                slice(row_start, row_start + rows_per_block),
                slice(position_start, position_start + positions_per_block),
            )


def _scaled_block(
    logits: torch.Tensor, rows: slice, positions: slice, temperature: float, dtype: torch.dtype
) -> torch.Tensor:
    """A fresh `dtype` copy of logits[rows, positions] / T, safe to modify in place."""
    scaled = logits[rows, positions].to(dtype, copy=True)  # (n, t, V)
    if temperature != 1.0:
        scaled.div_(temperature)
    return scaled


def _forward_blocks(
    logits: torch.Tensor,
    tokens: torch.Tensor | None,
    temperature: float,
    chunk_size: int,
    with_entropy: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Block-wise forward pass; returns (token log-probs, entropy, log-sum-exp), each (N, L)."""
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    num_rows, seq_len, _ = logits.shape
    logsumexp = torch.empty((num_rows, seq_len), dtype=compute_dtype, device=logits.device)
    logprobs = torch.empty_like(logsumexp) if tokens is not None else None
    entropy = torch.empty_like(logsumexp) if with_entropy else None
    for rows, positions in _blocks(num_rows, seq_len, chunk_size):
        full_logprobs = _scaled_block(logits, rows, positions, temperature, compute_dtype)
        block_logsumexp = torch.logsumexp(full_logprobs, dim=-1)  # (n, t)
        logsumexp[rows, positions] = block_logsumexp
        full_logprobs.sub_(block_logsumexp.unsqueeze(-1))  # (n, t, V): log π^T(v)
        if logprobs is not None:
            block_tokens = tokens[rows, positions].unsqueeze(-1)  # (n, t, 1)
            logprobs[rows, positions] = full_logprobs.gather(-1, block_tokens).squeeze(-1)
        if entropy is not None:
            probs = full_logprobs.exp()
            # Clamping -inf log-probs (masked vocabulary entries) makes 0·log 0 = 0, not NaN.
            full_logprobs.clamp_(min=torch.finfo(compute_dtype).min)
            entropy[rows, positions] = -probs.mul_(full_logprobs).sum(-1)
    return logprobs, entropy, logsumexp


class _ChunkedLogprobsEntropy(torch.autograd.Function):
    """Token log-probs and entropy of softmax(logits/T) with a block-wise, recomputing backward.

    With z = logits/T, p = softmax(z), log p = z − logsumexp(z) and H = −Σ_v p_v log p_v:
        ∂ log p_token / ∂z_v = 1[v = token] − p_v
        ∂ H / ∂z_v           = −p_v (log p_v + H)
    and ∂/∂logits = (1/T) ∂/∂z. Only logsumexp and H (both (N, L)) are saved.
    """

    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        tokens: torch.Tensor | None,
        temperature: float,
        chunk_size: int,
        with_entropy: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logprobs, entropy, logsumexp = _forward_blocks(
            logits, tokens, temperature, chunk_size, with_entropy
        )
        ctx.save_for_backward(logits, tokens, logsumexp, entropy)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(
        ctx, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        logits, tokens, logsumexp, entropy = ctx.saved_tensors
        if grad_logprobs is None and grad_entropy is None:
            return None, None, None, None, None
        temperature = ctx.temperature
        compute_dtype = logsumexp.dtype
        grad_logits = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for rows, positions in _blocks(logits.shape[0], logits.shape[1], ctx.chunk_size):
            full_logprobs = _scaled_block(logits, rows, positions, temperature, compute_dtype)
            full_logprobs.sub_(logsumexp[rows, positions].unsqueeze(-1))  # (n, t, V)
            grad_scaled = full_logprobs.exp()  # (n, t, V): p, turned into ∂loss/∂z in place
            if grad_entropy is not None:
                # weight_v = g_H (log p_v + H) + g_logp, so that −p_v · weight_v covers both terms
                weight = full_logprobs.clamp_(min=torch.finfo(compute_dtype).min)
                weight.add_(entropy[rows, positions].unsqueeze(-1))
                weight.mul_(grad_entropy[rows, positions].unsqueeze(-1))
                if grad_logprobs is not None:
                    weight.add_(grad_logprobs[rows, positions].unsqueeze(-1))
                grad_scaled.mul_(weight).neg_()
            else:
                grad_scaled.mul_(-grad_logprobs[rows, positions].unsqueeze(-1))
            if grad_logprobs is not None:
                block_tokens = tokens[rows, positions].unsqueeze(-1)  # (n, t, 1)
                block_grad = grad_logprobs[rows, positions].unsqueeze(-1).to(compute_dtype)
                grad_scaled.scatter_add_(-1, block_tokens, block_grad)
            if temperature != 1.0:
                grad_scaled.div_(temperature)
            grad_logits[rows, positions] = grad_scaled
        return grad_logits, None, None, None, None


def _chunked_logprobs_entropy(
    logits: torch.Tensor,
    tokens: torch.Tensor | None,
    temperature: float,
    chunk_size: int | None,
    with_entropy: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validates, then runs the autograd Function, or the plain block loop when no grad is needed."""
    _validate(logits, tokens, temperature, chunk_size)
    temperature = float(temperature)
    if chunk_size is None:
        chunk_size = default_chunk_size(logits)
    if tokens is not None and tokens.dtype != torch.long:
        tokens = tokens.long()  # gather/scatter need int64 indices; (N, L) is small
    if torch.is_grad_enabled() and logits.requires_grad:
        return _ChunkedLogprobsEntropy.apply(logits, tokens, temperature, chunk_size, with_entropy)
    logprobs, entropy, _ = _forward_blocks(logits, tokens, temperature, chunk_size, with_entropy)
    return logprobs, entropy


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Log-probability of each given token under π^T = softmax(logits / T), block-wise.

    Differentiable: the backward pass recomputes the softmax block by block (see module
    docstring), so training through it never holds a full-size float32 softmax.

    Args:
        logits: (N, L, V) logits, any float dtype; position t scores tokens[:, t].
        tokens: (N, L) integer token ids in [0, V).
        temperature: T > 0; the logits are divided by it.
        chunk_size: at most this many token positions are processed at once; the extra
            memory is a few times chunk_size × V × 4 bytes. None: `default_chunk_size` (blocks
            of 16 MiB on CPU, 256 MiB on an accelerator).

    Returns:
        (N, L) float32 log π^T(tokens) (float64 if the logits are float64).
    """
    logprobs, _ = _chunked_logprobs_entropy(logits, tokens, temperature, chunk_size, False)
    return logprobs


def token_entropy(
    logits: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Full-vocabulary entropy H = −Σ_v p_v log p_v of p = softmax(logits / T), block-wise.

    Differentiable (the "true entropy" Entropy-Reg baseline of docs/papers.md §5 backprops
    through it), with the same block-wise recomputing backward as `token_logprobs`. Under
    `torch.no_grad()`, or for logits that do not require grad, nothing is saved.

    Args:
        logits: (N, L, V) logits, any float dtype.
        temperature: T > 0.
        chunk_size: at most this many token positions at once; None: `default_chunk_size`.

    Returns:
        (N, L) float32 entropy in nats, in [0, log V].
    """
    _, entropy = _chunked_logprobs_entropy(logits, None, temperature, chunk_size, True)
    return entropy


def logprobs_and_entropy(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token log-probs (differentiable) and full-vocabulary entropy (detached) in one pass.

    This is the trainer's call: the loss needs the log-probs with grad, the entropy is only
    logged. Both come from the same block-wise pass over the logits.

    Args:
        logits: (N, L, V) logits, any float dtype.
        tokens: (N, L) integer token ids.
        temperature: T > 0.
        chunk_size: at most this many token positions at once; None: `default_chunk_size`.
        with_entropy: False skips the entropy (returned as None).

    Returns:
        logprobs: (N, L) float32 log π^T(tokens), differentiable.
        entropy: (N, L) float32 entropy of π^T, detached; or None.
    """
    logprobs, entropy = _chunked_logprobs_entropy(
        logits, tokens, temperature, chunk_size, with_entropy
    )
    return logprobs, (entropy.detach() if entropy is not None else None)


def sampled_token_nll(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-prob of the sampled tokens: a Monte-Carlo *estimator* of the entropy.

    For tokens sampled from π, E[−log π(o_t)] is the entropy of π at that position, so this is
    an unbiased per-token estimate — but it is not the full-vocabulary entropy of any single
    position, and its gradient has zero expectation on-policy (score-function identity). The
    papers' controllers read exactly this quantity as `actor/entropy_loss` (EasyR1 code; see
    docs/papers.md §1.2 and §5, "Entropy-Reg").

    Args:
        logprobs: (N, L) log-probs of the sampled tokens (at T = 1 for the papers' signal).
        mask: (N, L) 1 on valid response tokens.

    Returns:
        A scalar: −masked_mean(logprobs); 0 when the mask is empty.
    """
    return -masked_mean(logprobs, mask)


# The entropy signals a controller reads, in the order of `entropy_sums`' entries.
ENTROPY_SIGNALS = (
    "entropy/sampled_nll",
    "entropy/on_policy_nll",
    "entropy/full",
    "entropy/on_policy_full",
)
# The length of `entropy_sums`' vector (what callers that add sums up start from).
ENTROPY_SUMS_SIZE = 6


def entropy_sums(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    is_reinforce: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """The sums behind the entropy signals of one batch (or micro-batch, or one process's rows),
    to be added up over batches and processes before `entropy_signals` divides them.

    Every trainer measures the signals with this one function: dcrl's trainer over its
    micro-batches, the TRL adapter over a generation's updates and its processes, the verl
    adapter on its old-log-prob pass.

    Args:
        logprobs: (N, L) log-probs of the sampled tokens at T = 1 (no grad needed).
        mask: (N, L) 1 on valid response tokens.
        is_reinforce: (N,) bool, rows drawn from another distribution than the policy's (AEPO's
            tempered REINFORCE rows), left out of the on-policy NLL; None: no such rows.
        entropy: (N, L) full-vocabulary entropy, or None (its sums are then 0).

    Returns:
        (ENTROPY_SUMS_SIZE,) = (6,) float64: Σ NLL, tokens, Σ NLL of the on-policy rows, their
        tokens, Σ entropy, Σ entropy of the on-policy rows.
    """
    mask = mask.to(torch.float64)
    nll = -logprobs.detach().to(torch.float64) * mask
    own = mask
    if is_reinforce is not None:
        own = mask * (~is_reinforce.bool()).to(torch.float64)[:, None]
    if entropy is not None:
        entropy = entropy.detach().to(torch.float64)
        entropy_sum, own_entropy_sum = (entropy * mask).sum(), (entropy * own).sum()
    else:
        entropy_sum = own_entropy_sum = torch.zeros((), dtype=torch.float64, device=mask.device)
    return torch.stack(
        [nll.sum(), mask.sum(), (nll * own).sum(), own.sum(), entropy_sum, own_entropy_sum]
    )


def entropy_signals(sums: torch.Tensor) -> dict[str, float]:
    """The entropy signals from `entropy_sums` (summed over whatever the trainer measured).

    "entropy/sampled_nll": −mean log π(o_t) over all valid tokens (`sampled_token_nll`, the
    papers' `actor/entropy_loss`); "entropy/on_policy_nll": the same without the REINFORCE rows
    drawn from another distribution; "entropy/full": the full-vocabulary entropy, token mean
    (0 when it was not measured); "entropy/on_policy_full": the same without those rows. Each is
    0 when it has no tokens.

    The full entropy at a token is the expectation of the sampled token's NLL there, so the two
    measure the same quantity; the full one leaves out the draw of the token, which on the
    explore testbed halves the step-to-step noise of the measurement (bench/README.md, "Control
    over a range").
    """
    nll, tokens, own_nll, own_tokens, entropy, own_entropy = (
        float(value) for value in sums.tolist()
    )
    return dict(
        zip(
            ENTROPY_SIGNALS,
            (
                nll / max(tokens, 1.0),
                own_nll / max(own_tokens, 1.0),
                entropy / max(tokens, 1.0),
                own_entropy / max(own_tokens, 1.0),
            ),
            strict=True,
        )
    )
