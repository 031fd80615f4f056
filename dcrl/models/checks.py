"""Checks of a user's model directory, before and after transformers loads it: a corrupt or
foreign file is one error naming the file, never a traceback or a model that silently trains
randomly initialized layers.

Before loading (`check_model_directory`): config.json is JSON, names a causal-LM architecture,
a weights file exists and every `*.safetensors` parses, a tokenizer is there. After loading
(`check_loading_info`): no weight of the architecture was missing from the files and no tensor
of the files went unused. `strict=False` (`model.strict_load: false`, `dcrl eval
--no-strict-load`) lets a mismatch through: the user knows those layers start random.

Whether a loaded model attends causally (`check_attends_causally`) is decided by what
transformers knows, not by a class name: an architecture that is an encoder able to act as a
decoder (BERT, RoBERTa, ...: transformers maps it to a causal-LM class, and its config class
declares `is_decoder`) looks only backwards when its config says `is_decoder: true`; with
`false` a `BertLMHeadModel` sees the tokens it is asked to predict, so it is always refused.
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


def _declared_settings(config_class: type) -> set[str]:
    """The settings a config class declares itself: its dataclass fields (transformers >= 5)
    or its __init__ parameters (older releases, where the shared base class holds the rest)."""
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(config_class):
        return {f.name for f in dataclasses.fields(config_class)}
    try:
        return set(inspect.signature(config_class.__init__).parameters)
    except (TypeError, ValueError):
        return set()


def decoder_switch(config: Any) -> str | None:
    """The config setting that makes an encoder architecture attend causally ("is_decoder", or
    XLM's "causal"), or None for an architecture that is a decoder whatever its config says.

    An encoder that can act as a decoder is one transformers gives both a causal-LM and a
    masked-LM class (BERT, RoBERTa, ELECTRA, ...), or whose config class declares `is_decoder`
    with `add_cross_attention` (the decoders of encoder-decoder pairs, e.g. BertGeneration).
    A decoder-only architecture (Llama, Qwen2, Gemma2, GPT-2, GPT-NeoX, ...) is neither.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    declared = _declared_settings(type(config))
    model_type = getattr(config, "model_type", None)
    if "causal" in declared:
        return "causal"
    encoder = (
        model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        or {
            "is_decoder",
            "add_cross_attention",
        }
        <= declared
    )
    return "is_decoder" if encoder else None


def check_attends_causally(source: str | Path, model: Any) -> None:
    """Raise a ValueError if the loaded `model` is an encoder left bidirectional: trained as a
    causal LM it would see the very tokens it predicts (loss near 0, nothing learned, exit 0).

    The model's own config decides (a class such as BartForCausalLM that makes itself a decoder
    has `is_decoder` true there); `source` is the directory or hub id, named in the message.
    """
    config = getattr(model, "config", None)
    switch = decoder_switch(config) if config is not None else None
    if switch is None or getattr(config, switch, False) is True:
        return
    where = Path(source) / "config.json" if Path(source).is_dir() else f"model {str(source)!r}"
    name = type(model).__name__
    raise ValueError(
        f"{where}: {name} is an encoder ({config.model_type}) with {switch}: "
        f"{str(getattr(config, switch, None)).lower()}, so every token attends to the tokens "
        f"after it and it would train as a causal LM on answers it can already see: set "
        f'"{switch}": true in its config.json to use it as a decoder, or point model.name at a '
        "causal LM (…ForCausalLM)"
    )
