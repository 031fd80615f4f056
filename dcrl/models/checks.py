"""Checks of a user's model directory, before and after transformers loads it: a corrupt or
foreign file is one error naming the file, never a traceback or a model that silently trains
randomly initialized layers.

Before loading (`check_model_directory`): config.json is JSON, names a causal-LM architecture,
a weights file exists and every `*.safetensors` parses, a tokenizer is there. After loading
(`check_loading_info`): no weight of the architecture was missing from the files and no tensor
of the files went unused. `strict=False` (`model.strict_load: false`, `dcrl eval
--no-strict-load`) lets a mismatch through: the user knows those layers start random.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
OPT_OUT = "set model.strict_load=false (dcrl eval: --no-strict-load) to load it anyway"


def _causal_lm_class_names() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def check_model_directory(path: Path, *, strict: bool = True) -> None:
    """Raise a ValueError naming the file if the model directory `path` cannot load as it is.

    Args:
        path: a Hugging Face model directory (what save_pretrained writes).
        strict: also refuse a config.json whose architectures are not causal LMs.
    """
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"{config_file} is not readable JSON ({str(error)[:200]}): restore the file that "
            "save_pretrained wrote"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} must hold a JSON object: restore the model's config")
    architectures = config.get("architectures") or []
    if strict and architectures and not set(architectures) & _causal_lm_class_names():
        raise ValueError(
            f"{config_file} names {', '.join(map(str, architectures))}, not a causal language "
            "model (…ForCausalLM): dcrl trains decoders that generate text; point model.name "
            f"at a causal LM, or {OPT_OUT}"
        )
    weights = [p for pattern in WEIGHT_PATTERNS for p in sorted(path.glob(pattern))]
    if not weights:
        raise ValueError(
            f"model directory {path} has no weights file (model.safetensors or "
            "pytorch_model.bin): copy the weights there, or save the model again"
        )
    from safetensors import safe_open

    for file in weights:
        if file.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as error:  # SafetensorError, OSError: empty, truncated, not safetensors
            raise ValueError(
                f"{file} is not a readable safetensors file ({str(error).strip()[:200]}): it is "
                "empty, truncated or damaged; copy it again or save the model again"
            ) from None
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"model directory {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): "
            "save the tokenizer there too (tokenizer.save_pretrained)"
        )


def check_loading_info(path: Path, info: dict[str, Any], *, strict: bool = True) -> None:
    """Raise a ValueError if loading left weights of the architecture uninitialized (missing)
    or ignored tensors of the files (unexpected); `info` is from_pretrained's loading info."""
    if not strict:
        return
    for kind, meaning in (
        ("missing_keys", "are missing from its weights files and would start random"),
        ("unexpected_keys", "in its weights files fit no layer of the architecture"),
        ("mismatched_keys", "have another shape than the architecture's"),
    ):
        keys = sorted(str(k) for k in (info.get(kind) or []))
        if keys:
            raise ValueError(
                f"model directory {path}: {len(keys)} weights ({keys[0]!r}, …) {meaning}: the "
                f"weights belong to another model or were cut short; copy them again, or "
                f"{OPT_OUT}"
            )
