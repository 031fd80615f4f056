"""The policy's forward pass over (prompt + response) sequences, reduced to response-token
log-probs and entropy at a temperature — the one place the trainer turns logits into numbers.

Temperature is explicit at every call (a recurring bug class in peer frameworks: research/anchors.md
§3): old log-probs, tempered old log-probs (DCPO) and the trained log-probs all come from here.
"""

from __future__ import annotations

import torch

from dcrl.core.logprobs import logprobs_and_entropy, token_entropy, token_logprobs


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as generation assigned them. (N, S) -> (N, S)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int
) -> torch.Tensor:
    """Logits at the positions that predict the last `width` tokens. -> (N, width, V).

    The response occupies the last `width` positions; the logit predicting token j sits at j − 1,
    so we keep width + 1 positions and drop the last.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_for(attention_mask),
        logits_to_keep=width + 1,
        use_cache=False,
    )
    return out.logits[:, :-1]  # (N, width, V)


def score_responses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, Lr) of `response_ids` under softmax(logits / T), and optionally the
    full-vocabulary entropy (N, Lr) at the same T. `chunk_size` token positions per block of
    the kernel; None lets `dcrl.core.logprobs.default_chunk_size` size it in bytes.

    Gradients flow into the log-probs when grad is enabled. The entropy is detached (logging)
    unless `entropy_grad` (the true-entropy bonus baseline trains through it).
    """
    logits = response_logits(model, input_ids, attention_mask, response_ids.shape[1])
    if entropy_grad:
        logprobs = token_logprobs(logits, response_ids, temperature, chunk_size=chunk_size)
        return logprobs, token_entropy(logits, temperature, chunk_size=chunk_size)
    return logprobs_and_entropy(
        logits, response_ids, temperature, chunk_size=chunk_size, with_entropy=with_entropy
    )
