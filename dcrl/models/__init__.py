"""Loading a policy: a Hugging Face directory, the SmolLM2 GGUF from a package, or the built-in tiny
model. `load_policy(name)` returns (model, tokenizer) ready for `dcrl.rollout` and the trainer."""

from __future__ import annotations

from dcrl.models.gguf import dcrl_cache_dir, smollm2_135m_directory
from dcrl.models.loading import TORCH_DTYPES, LoraOptions, load_policy
from dcrl.models.tiny import (
    DEFAULT_TINY_ALPHABET,
    build_tiny_model,
    build_tiny_tokenizer,
    save_tiny_model,
)

__all__ = [
    "DEFAULT_TINY_ALPHABET",
    "TORCH_DTYPES",
    "LoraOptions",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "dcrl_cache_dir",
    "load_policy",
    "save_tiny_model",
    "smollm2_135m_directory",
]
