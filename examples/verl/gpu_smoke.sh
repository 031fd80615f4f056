#!/usr/bin/env bash
# GPU smoke test of dcrl's verl recipe: 2 steps each of AEPO, DCPO and ICR with vLLM rollouts on
# the built-in tiny-arith policy (exported as a Hugging Face folder; no download), then one more
# step resumed from the step-2 checkpoint. Checks, from verl's console log (smoke_check.py):
# dcrl's DcrlRayPPOTrainer ran (not verl's own), each algorithm's own term acted every step, the
# entropy controller moved to the entropy measured at step 1, and the resumed run restored the
# controller and went on at step 3.
#
# Needs one GPU with verl 0.9.1 and vLLM installed as verl documents (`pip install
# "verl[vllm]==0.9.1"`, then `pip install -e .` here); no network. It has not been run yet: no
# GPU was available where it was written (docs/scaling_out_verl.md says what is tested on CPU).
#
#   bash examples/verl/gpu_smoke.sh                 # all three, logs under $OUT (default below)
#   bash examples/verl/gpu_smoke.sh dcpo            # one of them
#   SMOKE_PRINT_ARGS=1 bash examples/verl/gpu_smoke.sh aepo   # print the overrides, run nothing
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/dcrl-gpu-smoke}
ALGORITHMS=("${@:-aepo dcpo icr}")
read -r -a ALGORITHMS <<< "${ALGORITHMS[*]}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false

# Batch sizes: verl's agent-loop manager splits each rollout request into num_workers equal
# chunks (it pads validation batches only), so 8 prompts x n=4 = 32 rows need a worker count that
# divides 32: 8. AEPO's tempered request, 3 of the 8 prompts (tempered_fraction 0.375) x 4 = 12
# rows, does not divide 8: dcrl pads it to 16 and drops the padding, which this run exercises.
# tests/verl/test_examples.py runs these numbers through verl's chunking and validate_config.
overrides() {  # the Hydra overrides of one algorithm's run ($1) up to step $2
  local algorithm=$1 steps=$2
  local args=(
    trainer.use_v1=False
    algorithm.adv_estimator=grpo
    algorithm.use_kl_in_reward=False
    "+algorithm.dcrl.name=$algorithm"
    actor_rollout_ref.model.path="$OUT/tiny-arith"
    data.train_files="$OUT/train.parquet"
    data.val_files="$OUT/val.parquet"
    data.train_batch_size=8
    data.max_prompt_length=32
    data.max_response_length=48
    data.filter_overlong_prompts=False
    reward.custom_reward_function.path=examples/verl/smoke_reward.py
    reward.custom_reward_function.name=compute_score
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n=4
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.top_p=1.0
    actor_rollout_ref.rollout.gpu_memory_utilization=0.3
    actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.enforce_eager=True
    actor_rollout_ref.rollout.max_model_len=128
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16
    actor_rollout_ref.rollout.agent.num_workers=8
    actor_rollout_ref.actor.ppo_mini_batch_size=8
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16
    actor_rollout_ref.actor.ppo_epochs=1
    actor_rollout_ref.actor.optim.lr=1e-4
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    actor_rollout_ref.actor.policy_loss.loss_mode=dcrl_ppo_clip
    actor_rollout_ref.model.use_remove_padding=False
    trainer.n_gpus_per_node=1
    trainer.nnodes=1
    trainer.logger=[console]
    trainer.val_before_train=False
    trainer.test_freq=-1
    trainer.save_freq=1
    trainer.total_training_steps="$steps"
    trainer.default_local_dir="$OUT/checkpoints/$algorithm"
    trainer.project_name=dcrl-gpu-smoke
    trainer.experiment_name="$algorithm"
  )
  case $algorithm in
    aepo) args+=(+algorithm.dcrl.max_reinforce=4 +algorithm.dcrl.target_entropy=0.3
                 +algorithm.dcrl.tempered_fraction=0.375) ;;
    dcpo) args+=(+algorithm.dcrl.target_entropy=0.3) ;;
    icr) args+=(+algorithm.dcrl.bonus_total=4.0 +algorithm.dcrl.lp_f_max_length=48
                +algorithm.dcrl.lp_f_buffer=16) ;;
    *) echo "error: unknown algorithm '$algorithm'; choose aepo, dcpo or icr" >&2; exit 2 ;;
  esac
  printf '%s\n' "${args[@]}"
}

if [ -n "${SMOKE_PRINT_ARGS:-}" ]; then
  for algorithm in "${ALGORITHMS[@]}"; do overrides "$algorithm" 2; done
  exit 0
fi

"$PY" examples/verl/smoke_setup.py "$OUT"
for algorithm in "${ALGORITHMS[@]}"; do
  rm -rf "$OUT/checkpoints/$algorithm"
  mapfile -t args < <(overrides "$algorithm" 2)
  "$PY" -m dcrl.integrations.verl.main "${args[@]}" 2>&1 | tee "$OUT/$algorithm-run.log"
  "$PY" examples/verl/smoke_check.py run "$OUT/$algorithm-run.log" "$algorithm" 2
  mapfile -t args < <(overrides "$algorithm" 3)
  "$PY" -m dcrl.integrations.verl.main "${args[@]}" trainer.resume_mode=auto 2>&1 \
    | tee "$OUT/$algorithm-resume.log"
  "$PY" examples/verl/smoke_check.py resume "$OUT/$algorithm-resume.log" "$algorithm" 3
done
echo "gpu_smoke: all passed (${ALGORITHMS[*]})"
