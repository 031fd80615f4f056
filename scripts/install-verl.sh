#!/usr/bin/env bash
# Install verl 0.9.1 next to dcrl into ./.venv-verl (CPU, no CUDA, no vLLM), for tests/verl/
# (which run verl's own training loop on the CPU, legacy and V1 trainers).
# verl pins transformers < 5.11 (dcrl's .venv has a newer one), hence a venv of its own.
# torch is pinned to 2.13.0 first: a bare `torch` requirement would pull a multi-GB CUDA build.
# verl is installed without its declared dependencies (ray[default], wandb, tensorboard, ...):
# only the packages that importing verl.protocol, verl.trainer.ppo.core_algos and the trainer
# (ray_trainer, main_ppo) needs, and dcrl without its own (its core needs torch, numpy, pyyaml).
# Everything is held to requirements/constraints-verl.txt. A GPU user installs verl with its
# own instructions instead (docs/scaling_out_verl.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv-verl}
PIN=(-c requirements/constraints-verl.txt)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
# What the imports need: verl's core (tensordict, ray, hydra, transformers, torchdata, ...) and
# the trainer module's (datasets, pillow, peft, cachetools, fastapi, uvicorn); its reward loop's,
# which verl's fit starts (aiohttp); TransferQueue's, for verl's V1 trainer (pyzmq, msgspec,
# prometheus_client; TransferQueue itself without its ray[default] extra); pytest to run.
"$VENV/bin/python" -m pip install --quiet "${PIN[@]}" \
  numpy tensordict packaging ray omegaconf hydra-core torchdata transformers codetiming \
  pyyaml datasets pillow peft cachetools fastapi uvicorn aiohttp pyzmq msgspec \
  prometheus_client pytest
"$VENV/bin/python" -m pip install --quiet "${PIN[@]}" --no-deps "verl==0.9.1" \
  "TransferQueue==0.1.11" -e .
"$VENV/bin/python" -c 'import verl, verl.trainer.ppo.ray_trainer, dcrl.integrations.verl.register
import transfer_queue, dcrl.integrations.verl.trainer_v1' 2>/dev/null
echo "verl installed in $VENV ($("$VENV/bin/python" -c 'import verl, torch; print("verl", verl.__version__, "torch", torch.__version__)' 2>/dev/null))"
