#!/usr/bin/env bash
# DCPO (arXiv 2601.12730) on Qwen2.5-Math-7B, 8 GPUs: the released script's settings (512 prompts
# x 5 responses, 2,048-token responses, target entropy 0.5; the README's best is 0.25), with
# dcrl's recipe trainer (second old-log-prob pass at T, ρ and α mixing, bang-bang controller).
# Extra arguments are passed to Hydra, e.g. +algorithm.dcrl.target_entropy=0.25.
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
source "$(dirname "$0")/common.sh"
python3 -m dcrl.integrations.verl.main \
  "${COMMON_ARGS[@]}" \
  trainer.use_v1=False \
  algorithm.adv_estimator=grpo \
  +algorithm.dcrl.name=dcpo \
  +algorithm.dcrl.target_entropy=0.5 \
  +algorithm.dcrl.controller=bang_bang \
  data.train_batch_size=512 \
  data.max_prompt_length=2048 \
  data.max_response_length=2048 \
  actor_rollout_ref.rollout.n=5 \
  actor_rollout_ref.actor.ppo_mini_batch_size=128 \
  trainer.project_name=dcrl-verl \
  trainer.experiment_name=dcpo-qwen2.5-math-7b \
  "$@"
