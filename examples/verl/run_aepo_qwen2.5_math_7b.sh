#!/usr/bin/env bash
# AEPO (arXiv 2510.08141) on Qwen2.5-Math-7B, 8 GPUs: the released script's settings (512 prompts
# x 5 responses, 2,048-token responses, target entropy 0.5, at most 60 REINFORCE rows) with dcrl's
# recipe trainer: a quarter of the prompts re-sampled at T (1.2 / 0.8) in the same generation
# phase, correct tempered samples spliced over the batch with advantage +1.
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
source "$(dirname "$0")/common.sh"
python3 -m dcrl.integrations.verl.main \
  "${COMMON_ARGS[@]}" \
  trainer.use_v1=False \
  algorithm.adv_estimator=grpo \
  +algorithm.dcrl.name=aepo \
  +algorithm.dcrl.target_entropy=0.5 \
  +algorithm.dcrl.max_reinforce=60 \
  +algorithm.dcrl.tempered_fraction=0.25 \
  data.train_batch_size=512 \
  data.max_prompt_length=2048 \
  data.max_response_length=2048 \
  actor_rollout_ref.rollout.n=5 \
  actor_rollout_ref.actor.ppo_mini_batch_size=128 \
  trainer.project_name=dcrl-verl \
  trainer.experiment_name=aepo-qwen2.5-math-7b \
  "$@"
