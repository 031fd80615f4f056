"""Generation backends behind one interface (`RolloutBackend.generate` -> `RolloutBatch`), found
by name in a registry like the losses' and the targets'.

- "hf": transformers `generate` (or dcrl's decoding loop) with the live policy (CPU or GPU),
  `dcrl.rollout.hf`.
- "vllm": a colocated vLLM engine (GPU, `pip install vllm`), `dcrl.rollout.vllm`; vLLM itself is
  imported only when the backend is built.
- your own: `rollout.backend: package.module:Class`, a `RolloutBackend` subclass (docs/design.md,
  "Adding a piece").

    backend = get_rollout_backend("hf", model, tokenizer, batch_size=32)
    batch = backend.generate(prompts, n=8, temperature=1.0, top_p=0.99, max_new_tokens=64, seed=0)
    input_ids, attention_mask = batch.sequences()   # (P·n, Lp + Lr); see rollout/base.py

The trainer builds its backend with `build_rollout_backend(config.rollout, model, tokenizer)`:
the backend reads its own settings from the rollout section (`RolloutBackend.from_config`) and
checks them before the model loads (`RolloutBackend.check_config`).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from dcrl._lazy import import_subclass
from dcrl.errors import UserError
from dcrl.rollout.base import RolloutBackend, RolloutBatch, validate_sampling_arguments
from dcrl.rollout.hf import HFRolloutBackend

# name -> module holding `BACKEND`, the RolloutBackend subclass; imported when asked for.
ROLLOUT_BACKENDS: dict[str, str] = {
    "hf": "dcrl.rollout.hf",
    "vllm": "dcrl.rollout.vllm",
}
ROLLOUT_BACKEND_NAMES = tuple(ROLLOUT_BACKENDS)
CHOICES = f"{', '.join(ROLLOUT_BACKENDS)}, or a 'package.module:Class' of your own"


class RolloutBackendError(UserError, ValueError):
    """A rollout backend that cannot be found, or a class that is not a RolloutBackend."""


def get_rollout_backend_class(name: str) -> type[RolloutBackend]:
    """The RolloutBackend subclass named `name`: a registered name or 'package.module:Class'.

    Raises:
        RolloutBackendError: unknown name, a module that cannot be imported, or a class that is
            not a RolloutBackend.
    """
    if name in ROLLOUT_BACKENDS:
        return importlib.import_module(ROLLOUT_BACKENDS[name]).BACKEND
    if ":" not in name:
        raise RolloutBackendError(f"unknown rollout backend {name!r}: choose one of {CHOICES}")
    return import_subclass(
        name,
        RolloutBackend,
        what="rollout backend",
        base_name="dcrl.rollout.RolloutBackend",
        hint="point it at your backend class",
        error=RolloutBackendError,
    )


def get_rollout_backend(
    name: str, model: torch.nn.Module, tokenizer: Any, **options: Any
) -> RolloutBackend:
    """Build the rollout backend `name` for a policy and its tokenizer.

    Args:
        name: a registered name ("hf", "vllm") or 'package.module:Class'.
        model, tokenizer: the policy, as returned by `dcrl.models.load_policy`.
        **options: the backend's keyword arguments (hf: batch_size, stop_token_ids,
            add_special_tokens, decoding; vllm: model_path, gpu_memory_utilization, dtype,
            vllm.LLM options; vllm ignores batch_size, it schedules its own batches).
    """
    backend_class = get_rollout_backend_class(name)
    if "batch_size" in options and not backend_class.takes_batch_size:
        options.pop("batch_size")
    return backend_class(model, tokenizer, **options)


def build_rollout_backend(config: Any, model: torch.nn.Module, tokenizer: Any) -> RolloutBackend:
    """The trainer's backend: `config` is the run's rollout section (dcrl.train.config
    .RolloutConfig); the backend named by `config.backend` takes its own settings from it."""
    backend_class = get_rollout_backend_class(config.backend)
    return backend_class.from_config(config, model, tokenizer)


__all__ = [
    "CHOICES",
    "ROLLOUT_BACKENDS",
    "ROLLOUT_BACKEND_NAMES",
    "HFRolloutBackend",
    "RolloutBackend",
    "RolloutBackendError",
    "RolloutBatch",
    "build_rollout_backend",
    "get_rollout_backend",
    "get_rollout_backend_class",
    "validate_sampling_arguments",
]
