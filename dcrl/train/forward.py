"""The policy's forward pass over (prompt + response) sequences, reduced to response-token
log-probs and entropy at a temperature — the one place the trainer turns the model's output into
numbers.

Temperature is explicit at every call (a recurring bug class in peer frameworks: docs/papers.md
§9.1): old log-probs, tempered old log-probs (DCPO) and the trained log-probs all come from here.

Two paths, the same numbers (to float rounding; equal in float64, tests/test_fused_head.py):
- fused (the default, `fused=True`): the model's backbone gives the last hidden states of the
  response positions only, and `dcrl.core.fused_head` turns them into log-probs and entropy block by
  block, forward and backward: the (N, Lr, V) logits and their gradient are never held;
- naive (the fallback): the model's own forward computes the (N, Lr, V) logits, reduced by the
  chunked kernel of `dcrl.core.logprobs`.
The fused path needs to know what the model does after its backbone; `lm_head_of` accepts the
causal-LM classes whose head is a plain linear layer followed at most by a scale or a soft cap
(FUSED_HEAD_CLASSES), and says why for any other model, which then takes the naive path. Which
path a model takes is logged once per model (logger "dcrl.train.forward": INFO for fused, WARNING
for a fallback).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from dcrl.core.fused_head import fused_logprobs_entropy
from dcrl.core.logprobs import logprobs_and_entropy, token_entropy, token_logprobs
from dcrl.step_data import TrainBatch
from dcrl.train import batches

logger = logging.getLogger(__name__)

# Causal-LM classes whose forward is `backbone -> lm_head (nn.Linear)` then, at most, the
# transformation named here (the config attribute read and how it applies).
FUSED_HEAD_CLASSES: dict[str, str | None] = {
    "LlamaForCausalLM": None,
    "MistralForCausalLM": None,
    "Qwen2ForCausalLM": None,
    "Qwen3ForCausalLM": None,
    "SmolLM3ForCausalLM": None,
    "Phi3ForCausalLM": None,
    "OlmoForCausalLM": None,
    "Olmo2ForCausalLM": None,
    "GemmaForCausalLM": None,
    "Gemma2ForCausalLM": "final_logit_softcapping",
    "Gemma3ForCausalLM": "final_logit_softcapping",
    "GraniteForCausalLM": "logits_scaling",
    "CohereForCausalLM": "logit_scale",
    "GPT2LMHeadModel": None,
}


@dataclass(frozen=True)
class LMHead:
    """What the fused path needs from a model: its backbone and its head's parameters."""

    backbone: torch.nn.Module
    weight: torch.Tensor  # (V, H)
    bias: torch.Tensor | None  # (V,)
    logit_scale: float = 1.0
    softcap: float | None = None


def lm_head_of(model: torch.nn.Module) -> LMHead | str:
    """The backbone and head of a Hugging Face causal LM (peft-wrapped or not), or, when the fused
    path cannot reproduce the model's own logits, a sentence saying why."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(causal_lm).__name__
    if name not in FUSED_HEAD_CLASSES:
        return (
            f"{name} is not a model class the fused head knows (dcrl.train.forward."
            "FUSED_HEAD_CLASSES): what its forward does after the last hidden states is unchecked"
        )
    backbone = getattr(causal_lm, "base_model", causal_lm)
    if backbone is causal_lm:
        return f"{name} has no separate backbone module (base_model_prefix)"
    head = causal_lm.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return (
            f"{name}'s output layer is a {type(head).__module__}.{type(head).__name__}, not a plain "
            "torch.nn.Linear (LoRA or another wrapper on the head)"
        )
    config = causal_lm.config
    if getattr(config, "output_router_logits", False):
        return f"{name} adds a router loss to its output (output_router_logits)"
    transform = FUSED_HEAD_CLASSES[name]
    scale, softcap = 1.0, None
    value = getattr(config, transform, None) if transform else None
    if transform == "final_logit_softcapping" and value is not None:
        softcap = float(value)
    elif transform == "logits_scaling" and value is not None:
        scale = 1.0 / float(value)
    elif transform == "logit_scale" and value is not None:
        scale = float(value)
    return LMHead(backbone, head.weight, head.bias, scale, softcap)


_reported: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _report_once(model: torch.nn.Module, head: LMHead | str) -> None:
    try:
        if model in _reported:
            return
        _reported[model] = True
    except TypeError:  # not weak-referenceable: report every time rather than never
        pass
    if isinstance(head, str):
        logger.warning("log-probs through the model's full logits (naive path): %s", head)
    else:
        logger.info("log-probs through the fused head (dcrl.core.fused_head)")


def head_path(model: torch.nn.Module) -> str:
    """ "fused", or "naive: <why>" — the path `response_logprobs` takes for this model."""
    head = lm_head_of(model)
    return f"naive: {head}" if isinstance(head, str) else "fused"


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


def response_hidden_states(
    backbone: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int
) -> torch.Tensor:
    """The backbone's last hidden states (after its final norm) at the positions that predict the
    last `width` tokens -> (N, width, H): what the model's head would project."""
    out = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_for(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state[:, -(width + 1) : -1]


def response_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_size: int | None = None,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, Lr) of `response_ids` under softmax(logits / T), and optionally the
    full-vocabulary entropy (N, Lr) at the same T. `chunk_size` token positions per block of
    the kernel; None sizes it in bytes (`dcrl.core.logprobs.default_chunk_size`,
    `dcrl.core.fused_head.default_head_chunk_size`).

    Gradients flow into the log-probs when grad is enabled. The entropy is detached (logging)
    unless `entropy_grad` (the true-entropy bonus baseline trains through it).

    `fused`: through the fused head when the model allows it (`lm_head_of`), else (or with
    False) through the model's full logits.
    """
    width = response_ids.shape[1]
    head = lm_head_of(model) if fused else "fused=False"
    if fused:
        _report_once(model, head)
    if isinstance(head, LMHead):
        hidden = response_hidden_states(head.backbone, input_ids, attention_mask, width)
        logprobs, entropy = fused_logprobs_entropy(
            hidden,
            head.weight,
            response_ids,
            temperature,
            bias=head.bias,
            logit_scale=head.logit_scale,
            softcap=head.softcap,
            with_entropy=with_entropy or entropy_grad,
            entropy_grad=entropy_grad,
            chunk_size=chunk_size,
        )
        if entropy is not None and not entropy_grad:
            entropy = entropy.detach()
        return logprobs, entropy
    logits = response_logits(model, input_ids, attention_mask, width)
    if entropy_grad:
        logprobs = token_logprobs(logits, response_ids, temperature, chunk_size=chunk_size)
        return logprobs, token_entropy(logits, temperature, chunk_size=chunk_size)
    return logprobs_and_entropy(
        logits, response_ids, temperature, chunk_size=chunk_size, with_entropy=with_entropy
    )


@torch.no_grad()
def logprob_pass(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    rows_at_once: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int | None = None,
    fused: bool = True,
    fits: Callable[[int, int], AbstractContextManager] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The log-prob pass (`StepContext.logprob_pass`): log-probs (and entropy) of the responses
    (the last Lr columns of the sequences) under `model` at temperature T, no grad, `rows_at_once`
    sequences per forward: (N, Lr) each, on the device of the inputs (only each chunk visits the
    model's). `fits(rows, tokens)` wraps each chunk's forward (the trainer's `must_fit`)."""
    width = response_mask.shape[1]
    # float32 for float32/bf16 weights, float64 for a float64 model (the tests' exact checks)
    parameter = next(model.parameters())
    dtype = torch.promote_types(parameter.dtype, torch.float32)
    out = torch.zeros(response_mask.shape, dtype=dtype, device=response_mask.device)
    ent = torch.zeros_like(out) if with_entropy else None
    model.eval()
    # Each row's log-probs depend on that row alone (no statistic across rows), so grouping
    # rows of similar length changes no result beyond float rounding and pads less.
    for rows in batches.length_sorted_chunks(response_mask, rows_at_once):
        part = batches.trim_padding(
            TrainBatch(
                input_ids=input_ids[rows],
                attention_mask=attention_mask[rows],
                response_mask=response_mask[rows],
                old_logprobs=out[rows],
                advantages=out[rows],
            )
        )
        keep = part.response_mask.shape[1]
        with fits(len(rows), part.input_ids.shape[1]) if fits else nullcontext():
            part_ids = part.input_ids.to(parameter.device)
            logprobs, entropy = response_logprobs(
                model,
                part_ids,
                part.attention_mask.to(parameter.device),
                part_ids[:, -keep:],
                temperature=temperature,
                with_entropy=with_entropy,
                chunk_size=chunk_size,
                fused=fused,
            )
        out[rows, :keep] = logprobs.to(out.device) * part.response_mask
        if ent is not None:
            ent[rows, :keep] = entropy.to(out.device) * part.response_mask
    assert out.shape[1] == width
    return out, ent
