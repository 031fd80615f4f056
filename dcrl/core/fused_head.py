"""Token log-probs and entropy straight from the last hidden states: the output projection
(the "LM head") fused with `dcrl.core.logprobs`, block by block, forward and backward.

`dcrl.core.logprobs` works on logits that already exist: a model's forward computes all (N, L, V)
of them through its head, and autograd keeps their gradient, as large again. Here the input is the
hidden states h (N, L, H) and the head's weight W (V, H) (and bias b); for each block of at most
`chunk_size` positions the logits

    logits = h W^T + b,  z = transform(logits) / T

are computed, reduced to the per-position log-sum-exp, the token's log-prob and (optionally) the
entropy, and freed. `transform` is what some model families apply after the head: a multiplicative
scale (Cohere's logit_scale, Granite's 1/logits_scaling) then a soft cap c·tanh(x/c) (Gemma 2/3).

Backward (a custom autograd Function), two ways:
- head trained (full fine-tuning; tied embeddings): each block's logits are recomputed from h and
  W, turned into g = ∂loss/∂logits in place (same formulas as `dcrl.core.logprobs`), and
      ∂loss/∂h_block = g W,    ∂loss/∂W += g^T h_block,    ∂loss/∂b += Σ_rows g;
- head frozen (LoRA): ∂loss/∂h is a per-position scalar (the incoming gradient) times an
  H-vector that the forward already computes from the block's probabilities (see
  `_FusedHeadFunction`), so the logits are projected once, as on the naive path, and backward
  costs O(N·L × H).
Either way the extra memory is O(chunk_size × V) (plus ∂W, V × H, only when the head is trained —
with tied embeddings that is the embedding's gradient, which the naive path needs as well). The
full (N, L, V) logits never exist, in forward or backward.

Precision. The projection runs in the inputs' dtype (as the model's own head does: a bf16 model
gives bf16 logits), everything after it in float32 (float64 for float64 inputs). In backward,
∂loss/∂logits is cast back to the weight's dtype for ∂h (as autograd does through a bf16 head),
and ∂W is accumulated in float32 (float64) across blocks before one final cast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from dcrl.core.logprobs import ACCELERATOR_BLOCK_BYTES

# Bytes of one float32 block of logits when `chunk_size` is None, on CPU. Larger than
# dcrl.core.logprobs' 16 MiB: here each block is produced by a projection (H multiply-adds per
# logit), which dwarfs the page faults of a block above glibc's mmap threshold, and wider
# projections run faster (at V = 49,152, H = 896 on one thread: 85 positions per block ~8% slower
# than 340; bench/core_memory.py measures the default). On a GPU: dcrl.core.logprobs' 256 MiB.
HEAD_CPU_BLOCK_BYTES = 64 * 2**20


def default_head_chunk_size(vocab_size: int, dtype: torch.dtype, device: torch.device) -> int:
    """Positions per block when `chunk_size` is None: a float32 block of logits of 64 MiB on CPU
    (341 positions at V = 49,152; 110 at V = 151,936), 256 MiB on an accelerator."""
    compute_dtype = torch.promote_types(dtype, torch.float32)
    row_bytes = vocab_size * torch.finfo(compute_dtype).bits // 8
    block_bytes = (
        HEAD_CPU_BLOCK_BYTES if torch.device(device).type == "cpu" else ACCELERATOR_BLOCK_BYTES
    )
    return max(1, block_bytes // row_bytes)


def _validate(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tokens: torch.Tensor,
    temperature: float,
    logit_scale: float,
    softcap: float | None,
    chunk_size: int | None,
) -> None:
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not hidden.is_floating_point():
        raise ValueError(
            f"hidden must be a floating-point tensor (N, L, H), got "
            f"{tuple(getattr(hidden, 'shape', ()))} {getattr(hidden, 'dtype', type(hidden))}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must have shape (V, H) with H = {hidden.shape[-1]} (the hidden size), got "
            f"{tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(
            f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must have one dtype, as the "
            "model's head would see them"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"bias must have shape (V,) = ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    if tokens.shape != hidden.shape[:2]:
        raise ValueError(
            f"tokens must have shape (N, L) = {tuple(hidden.shape[:2])}, got {tuple(tokens.shape)}"
        )
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be an integer tensor of token ids, got {tokens.dtype}")
    for name, value in (("temperature", temperature), ("logit_scale", logit_scale)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if softcap is not None and not (math.isfinite(softcap) and softcap > 0):
        raise ValueError(f"softcap must be a finite number > 0 or None, got {softcap!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


class _Head:
    """The block computation shared by forward and backward, on buffers reused across blocks
    (allocating a fresh (b, V) tensor per block costs page faults once it passes the allocator's
    mmap threshold, as blocks of tens of MiB do on CPU)."""

    def __init__(self, weight, bias, temperature, logit_scale, softcap, compute_dtype) -> None:
        self.weight, self.bias = weight, bias
        self.temperature, self.logit_scale, self.softcap = temperature, logit_scale, softcap
        self.compute_dtype = compute_dtype

    def buffers(self, rows: int) -> dict[str, torch.Tensor]:
        vocab, device = self.weight.shape[0], self.weight.device
        out = {
            "z": torch.empty((rows, vocab), dtype=self.compute_dtype, device=device),
            "p": torch.empty((rows, vocab), dtype=self.compute_dtype, device=device),
        }
        if self.weight.dtype != self.compute_dtype:  # the projection's own output (bf16)
            out["low"] = torch.empty((rows, vocab), dtype=self.weight.dtype, device=device)
        return out

    def probabilities(self, hidden_block: torch.Tensor, buffers: dict[str, torch.Tensor]):
        """For a (b, H) block: log p (b, V) in buffers["z"], p in buffers["p"], the log-sum-exp of
        z = transform(h W^T + b)/T (b,), and tanh of the soft cap's argument (b, V) or None."""
        rows = hidden_block.shape[0]
        z = buffers["z"][:rows]
        if "low" in buffers:
            low = buffers["low"][:rows]
            torch.matmul(hidden_block, self.weight.t(), out=low)
            if self.bias is not None:
                low.add_(self.bias)
            z.copy_(low)
        else:
            torch.matmul(hidden_block, self.weight.t(), out=z)
            if self.bias is not None:
                z.add_(self.bias)
        if self.logit_scale != 1.0:
            z.mul_(self.logit_scale)
        tanh = None
        if self.softcap is not None:
            tanh = z.div_(self.softcap).tanh_().clone()
            z.copy_(tanh).mul_(self.softcap)
        if self.temperature != 1.0:
            z.div_(self.temperature)
        maximum = z.amax(-1, keepdim=True)  # (b, 1)
        z.sub_(maximum)
        p = torch.exp(z, out=buffers["p"][:rows])
        total = p.sum(-1, keepdim=True)  # (b, 1), ≥ 1
        log_total = total.log()
        z.sub_(log_total)  # log p
        p.div_(total)
        return z, p, (maximum + log_total).squeeze(-1), tanh

    def to_logit_grad(self, grad_z: torch.Tensor, tanh: torch.Tensor | None) -> torch.Tensor:
        """∂loss/∂logits from ∂loss/∂z, in place."""
        factor = self.logit_scale / self.temperature
        if tanh is not None:
            grad_z.mul_(1 - tanh.square_())  # d[c·tanh(x/c)]/dx = 1 − tanh²
        if factor != 1.0:
            grad_z.mul_(factor)
        return grad_z


def _entropy(logp: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """−Σ_v p_v log p_v per row of (b, V), as a batched dot product (no (b, V) temporary)."""
    return -(p.unsqueeze(1) @ logp.unsqueeze(-1)).reshape(-1)


def _forward_blocks(head: _Head, hidden2d, tokens1d, chunk_size, with_entropy, directions=0):
    """Block-wise forward: (token log-probs, entropy or None, log-sum-exp, ∂lp/∂h direction or
    None, ∂H/∂h direction or None), each (R,) or (R, H). `directions`: 0 none, 1 the log-prob's,
    2 both (see `_FusedHeadFunction`)."""
    rows = hidden2d.shape[0]
    dtype = head.compute_dtype
    weight = head.weight
    logsumexp = torch.empty(rows, dtype=dtype, device=hidden2d.device)
    logprobs = torch.empty_like(logsumexp)
    entropy = torch.empty_like(logsumexp) if with_entropy else None
    grad_dirs = [
        torch.empty((rows, weight.shape[1]), dtype=dtype, device=hidden2d.device)
        for _ in range(directions)
    ]
    buffers = head.buffers(min(rows, chunk_size))
    for start in range(0, rows, chunk_size):
        block = slice(start, start + chunk_size)
        logp, probs, block_logsumexp, tanh = head.probabilities(hidden2d[block], buffers)
        logsumexp[block] = block_logsumexp
        block_tokens = tokens1d[block].unsqueeze(-1)
        logprobs[block] = logp.gather(-1, block_tokens).squeeze(-1)
        if entropy is not None:
            entropy[block] = _entropy(logp, probs)
        if directions:
            # ∂ log p_token/∂z = onehot − p and ∂H/∂z = −p (log p + H), through the soft cap's
            # derivative, projected back through W: (b, V) @ (V, H). ∂z/∂logits' constant
            # factor (scale / T) is applied in backward.
            derivative = None if tanh is None else tanh.square_().neg_().add_(1)
            if directions == 2:
                direction = logp.add_(entropy[block].unsqueeze(-1)).mul_(probs).neg_()
                if derivative is not None:
                    direction.mul_(derivative)
                grad_dirs[1][block] = _project(direction, weight, buffers)
            direction = probs.neg_().scatter_add_(
                -1, block_tokens, torch.ones_like(block_tokens, dtype=dtype)
            )
            if derivative is not None:
                direction.mul_(derivative)
            grad_dirs[0][block] = _project(direction, weight, buffers)
    return (logprobs, entropy, logsumexp, *grad_dirs, *([None] * (2 - directions)))


def _project(grad: torch.Tensor, weight: torch.Tensor, buffers: dict) -> torch.Tensor:
    """(b, V) @ (V, H) in the weight's dtype (as autograd through a bf16 head would)."""
    if "low" in buffers:
        low = buffers["low"][: grad.shape[0]]
        low.copy_(grad)
        return low @ weight
    return grad @ weight


class _FusedHeadFunction(torch.autograd.Function):
    """(hidden (R, H), weight, bias, tokens (R,)) -> token log-probs (R,), entropy (R,) or None.

    With z = transform(logits)/T and p = softmax(z):
        ∂ log p_token / ∂z_v = 1[v = token] − p_v,    ∂ H / ∂z_v = −p_v (log p_v + H).

    Two backward strategies:
    - head frozen (LoRA, `directions` > 0): ∂loss/∂h_i = (scale/T) (g_i u_i + γ_i e_i) with
      u_i = Σ_v (1[v = token_i] − p_iv) c_iv W_v and e_i = −Σ_v p_iv (log p_iv + H_i) c_iv W_v
      (c the soft cap's derivative, 1 without one), (R, H) each, computed in forward while the
      block's probabilities are at hand. Backward is then O(R × H): the logits are computed
      once, as on the naive path, and nothing of size V is saved.
    - head trained (or an entropy gradient that was not prepared): ∂W needs every p_iv times the
      incoming gradient, so backward recomputes each block's logits (one more projection).
    Saved: the inputs, the per-position entropy (R,), and u, e.
    """

    @staticmethod
    def forward(ctx, hidden2d, weight, bias, tokens1d, head, chunk_size, with_entropy, directions):
        logprobs, entropy, _, lp_dir, ent_dir = _forward_blocks(
            head, hidden2d, tokens1d, chunk_size, with_entropy, directions
        )
        ctx.save_for_backward(hidden2d, weight, bias, tokens1d, entropy, lp_dir, ent_dir)
        ctx.head, ctx.chunk_size = head, chunk_size
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden2d, weight, bias, tokens1d, entropy, lp_dir, ent_dir = ctx.saved_tensors
        nothing = (None,) * 8
        if grad_logprobs is None and grad_entropy is None:
            return nothing
        head: _Head = ctx.head
        dtype = head.compute_dtype
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        prepared = lp_dir is not None and (grad_entropy is None or ent_dir is not None)
        if prepared and not need_weight and not need_bias:
            grad_hidden = torch.zeros_like(lp_dir)
            if grad_logprobs is not None:
                grad_hidden.addcmul_(grad_logprobs.to(dtype).unsqueeze(-1), lp_dir)
            if grad_entropy is not None:
                grad_hidden.addcmul_(grad_entropy.to(dtype).unsqueeze(-1), ent_dir)
            factor = head.logit_scale / head.temperature
            if factor != 1.0:
                grad_hidden.mul_(factor)
            return (grad_hidden.to(hidden2d.dtype), *nothing[1:])
        grad_hidden = torch.empty_like(hidden2d) if need_hidden else None
        # ∂W and ∂b accumulate over blocks in the compute dtype (float32 under a bf16 head)
        grad_weight = (
            torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_weight else None
        )
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=dtype, device=weight.device) if need_bias else None
        )
        buffers = head.buffers(min(hidden2d.shape[0], ctx.chunk_size))
        for start in range(0, hidden2d.shape[0], ctx.chunk_size):
            block = slice(start, start + ctx.chunk_size)
            hidden_block = hidden2d[block]
            logp, grad, _, tanh = head.probabilities(hidden_block, buffers)
            # grad holds p, turned into ∂loss/∂z in place
            if grad_entropy is not None:
                weight_v = logp.add_(entropy[block].unsqueeze(-1))
                weight_v.mul_(grad_entropy[block].unsqueeze(-1))
                if grad_logprobs is not None:
                    weight_v.add_(grad_logprobs[block].unsqueeze(-1))
                grad.mul_(weight_v).neg_()
            else:
                grad.mul_(-grad_logprobs[block].unsqueeze(-1))
            if grad_logprobs is not None:
                grad.scatter_add_(
                    -1, tokens1d[block].unsqueeze(-1), grad_logprobs[block].unsqueeze(-1).to(dtype)
                )
            grad = head.to_logit_grad(grad, tanh)  # (b, V) ∂loss/∂logits
            if grad_hidden is not None:
                grad_hidden[block] = _project(grad, weight, buffers)
            if grad_weight is not None:
                grad_weight.addmm_(grad.t(), hidden_block.to(dtype))
            if grad_bias is not None:
                grad_bias.add_(grad.sum(0))
        return (
            grad_hidden,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            *nothing[3:],
        )


def fused_logprobs_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log π^T(tokens) and (optionally) the full-vocabulary entropy of π^T, where
    π^T = softmax(transform(hidden W^T + b) / T), without materialising the (N, L, V) logits.

    Both outputs are differentiable (the entropy too: the true-entropy baseline trains through
    it) with respect to `hidden`, `weight` and `bias`, whichever require grad (LoRA: the head is
    frozen and only ∂hidden is computed). Under no_grad nothing is saved.

    Args:
        hidden: (N, L, H) last hidden states at the positions that predict `tokens` (after the
            model's final norm), float32, bf16, float16 or float64.
        weight: (V, H) the output projection (the embedding matrix under tied embeddings), in
            `hidden`'s dtype.
        tokens: (N, L) integer token ids in [0, V).
        temperature: T > 0; the transformed logits are divided by it.
        bias: (V,) the head's bias, or None.
        logit_scale: the logits are multiplied by it before the soft cap (Cohere's logit_scale,
            1/logits_scaling for Granite); 1 for most families.
        softcap: c for logits -> c·tanh(logits / c) (Gemma 2/3's final_logit_softcapping), or None.
        with_entropy: also compute the entropy (else None is returned for it).
        entropy_grad: False when the entropy will not be differentiated (only logged): with a
            frozen head this saves one projection in forward. A gradient reaching it anyway is
            still exact (the backward then recomputes the logits).
        chunk_size: positions per block; None: `default_head_chunk_size` (a block of float32
            logits of 64 MiB on CPU, 256 MiB on an accelerator).

    Returns:
        logprobs: (N, L) float32 (float64 for float64 inputs).
        entropy: (N, L) like logprobs, or None.
    """
    _validate(hidden, weight, bias, tokens, temperature, logit_scale, softcap, chunk_size)
    num_rows, length, size = hidden.shape
    compute_dtype = torch.promote_types(hidden.dtype, torch.float32)
    if chunk_size is None:
        chunk_size = default_head_chunk_size(weight.shape[0], hidden.dtype, hidden.device)
    head = _Head(
        weight,
        bias,
        float(temperature),
        float(logit_scale),
        None if softcap is None else float(softcap),
        compute_dtype,
    )
    hidden2d = hidden.reshape(num_rows * length, size)  # (R, H): small next to (R, V)
    tokens1d = tokens.reshape(-1).long()
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if needs_grad:
        head_frozen = not weight.requires_grad and (bias is None or not bias.requires_grad)
        directions = 0
        if head_frozen:
            directions = 2 if with_entropy and entropy_grad else 1
        logprobs, entropy = _FusedHeadFunction.apply(
            hidden2d, weight, bias, tokens1d, head, chunk_size, with_entropy, directions
        )
    else:
        with torch.no_grad():
            logprobs, entropy, *_ = _forward_blocks(
                head, hidden2d, tokens1d, chunk_size, with_entropy
            )
    logprobs = logprobs.view(num_rows, length)
    return logprobs, (entropy.view(num_rows, length) if entropy is not None else None)


def naive_logprobs_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: full logits, one log_softmax, plain autograd. (N, L) log-probs, entropy."""
    logits = F.linear(hidden, weight, bias).to(torch.promote_types(hidden.dtype, torch.float32))
    if logit_scale != 1.0:
        logits = logits * logit_scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    full = torch.log_softmax(logits / temperature, dim=-1)  # (N, L, V)
    logprobs = full.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(full.exp() * full).sum(-1)
    return logprobs, entropy
