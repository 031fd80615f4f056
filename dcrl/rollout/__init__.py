"""Generation backends behind one interface (`RolloutBackend.generate` -> `RolloutBatch`).

- "hf": transformers `generate` with the live policy (CPU or GPU), `HFRolloutBackend`.
- "vllm": a colocated vLLM engine (GPU, `pip install vllm`), `VLLMRolloutBackend`; imported only
  when selected.

    backend = get_rollout_backend("hf", model, tokenizer, batch_size=32)
    batch = backend.generate(prompts, n=8, temperature=1.0, top_p=0.99, max_new_tokens=64, seed=0)
    input_ids, attention_mask = batch.sequences()   # (P·n, Lp + Lr); see rollout/base.py
"""

from __future__ import annotations

from typing import Any

import torch

from dcrl.rollout.base import RolloutBackend, RolloutBatch, validate_sampling_arguments
from dcrl.rollout.hf import HFRolloutBackend

ROLLOUT_BACKEND_NAMES = ("hf", "vllm")


def get_rollout_backend(
    name: str, model: torch.nn.Module, tokenizer: Any, **options: Any
) -> RolloutBackend:
    """Build the rollout backend `name` for a policy and its tokenizer.

    Args:
        name: "hf" or "vllm".
        model, tokenizer: the policy, as returned by `dcrl.models.load_policy`.
        **options: the backend's keyword arguments (hf: batch_size, stop_token_ids,
            add_special_tokens; vllm: model_path, gpu_memory_utilization, dtype, vllm.LLM options).
    """
    if name == "hf":
        return HFRolloutBackend(model, tokenizer, **options)
    if name == "vllm":
        from dcrl.rollout.vllm import VLLMRolloutBackend

        options.pop("batch_size", None)  # vLLM schedules its own batches
        return VLLMRolloutBackend(model, tokenizer, **options)
    raise ValueError(
        f"unknown rollout backend {name!r}: choose one of {', '.join(ROLLOUT_BACKEND_NAMES)}"
    )


__all__ = [
    "ROLLOUT_BACKEND_NAMES",
    "HFRolloutBackend",
    "RolloutBackend",
    "RolloutBatch",
    "get_rollout_backend",
    "validate_sampling_arguments",
]
