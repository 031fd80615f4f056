#!/usr/bin/env bash
# ICR (arXiv 2605.07316) on Qwen3-4B, 8 GPUs: n = 8 responses of up to 8,192 tokens, bonus C = 128
# on each group's shortest correct response, LP-F soft overlong penalty (4,096-token buffer).
# ICR is an advantage estimator (dcrl_icr), so it runs on verl's own trainer and entry point;
# the batch sizes follow the authors' Qwen3-4B dev scripts (128 prompts, mini-batch 64).
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen3-4B}
source "$(dirname "$0")/common.sh"
python3 -m verl.trainer.main_ppo \
  "${COMMON_ARGS[@]}" \
  algorithm.adv_estimator=dcrl_icr \
  +algorithm.dcrl.name=icr \
  +algorithm.dcrl.bonus_total=128 \
  +algorithm.dcrl.lp_f=true \
  +algorithm.dcrl.lp_f_max_length=8192 \
  +algorithm.dcrl.lp_f_buffer=4096 \
  data.train_batch_size=128 \
  data.max_prompt_length=1024 \
  data.max_response_length=8192 \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2 \
  +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=dcrl.integrations.verl.register \
  trainer.project_name=dcrl-verl \
  trainer.experiment_name=icr-qwen3-4b \
  "$@"
