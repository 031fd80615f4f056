#!/usr/bin/env bash
# verl's real training loop on the CPU: 2 steps each of AEPO, DCPO and ICR through dcrl's recipe
# trainer (DcrlRayPPOTrainer, verl's legacy RayPPOTrainer.fit) on the built-in tiny-arith policy,
# then one more step resumed from the step-2 checkpoint; the same checks as gpu_smoke.sh
# (smoke_check.py). Nothing is faked: verl's Ray workers, its FSDP2 actor (on gloo), its agent
# loop, reward loop, checkpoint manager and checkpoints, with dcrl's CPU pieces in verl's
# extension points (docs/scaling_out_verl.md, "verl on the CPU"):
#   trainer.device=cpu                          dcrl's "cpu" platform in verl's platform registry
#   actor_rollout_ref.rollout.name=dcrl_hf      a transformers rollout server in verl's rollout
#                                               registry (verl ships vLLM / SGLang / TRT-LLM)
# and the settings verl's GPU defaults need changed on a CPU: FSDP2 (FSDP1 wants the module on a
# GPU), eager attention (no flash-attn), no remove-padding (it packs rows for flash-attn's
# varlen kernels), no torch.compile, one rollout GPU per replica. The actor trains in float32, as
# the rollout samples, so that verl's rollout-vs-actor log-prob metrics show the weights the
# rollout samples with are the actor's (tests/verl/test_fit_cpu.py checks them).
#
# Needs .venv-verl (scripts/install-verl.sh); no GPU, no network. About 1-2 minutes per run on
# an idle 2-core machine (tests/verl/test_fit_cpu.py runs it).
#
#   bash examples/verl/cpu_smoke.sh                 # all three, logs under $OUT (default below)
#   bash examples/verl/cpu_smoke.sh dcpo            # one of them
#   bash examples/verl/cpu_smoke.sh dcpo+icr        # DCPO and ICR composed (algorithm.dcrl.targets)
#   SMOKE_RESUME=0 bash examples/verl/cpu_smoke.sh  # without the resumed step
#   SMOKE_TRAINER=v1 bash examples/verl/cpu_smoke.sh aepo dcpo icr   # on verl's V1 trainer
#   SMOKE_PRINT_ARGS=1 bash examples/verl/cpu_smoke.sh aepo   # print the overrides, run nothing
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv-verl/bin/python}
OUT=${OUT:-/tmp/dcrl-cpu-smoke}
ALGORITHMS=("${@:-aepo dcpo icr}")
read -r -a ALGORITHMS <<< "${ALGORITHMS[*]}"
TRAINER=${SMOKE_TRAINER:-legacy}  # legacy (RayPPOTrainer) or v1 (verl's V1 trainer)
case $TRAINER in
  legacy) export SMOKE_TRAINER_CLASS=DcrlRayPPOTrainer ;;
  v1) export SMOKE_TRAINER_CLASS=DcrlPPOTrainer ;;
  *) echo "error: SMOKE_TRAINER=$TRAINER; choose legacy or v1" >&2; exit 2 ;;
esac
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} RAY_DEDUP_LOGS=0
export VERL_USE_EXTERNAL_PLUGINS=none

# Batch sizes: 4 prompts x n=4 = 16 rows a step, one agent-loop worker and one reward worker
# (each is a process; verl starts 8 of each by default, and V1's TransferQueue 8 storage units,
# one CPU each: more than the Ray instance's 8). AEPO re-samples every prompt (tempered_fraction
# 1.0: 4 prompts, 16 rows, so that a step almost surely has a mixed tempered group to reinforce)
# and reinforces up to 4 rows.
overrides() {  # the Hydra overrides of one algorithm's run ($1) up to step $2
  local algorithm=$1 steps=$2 name=$1
  [ "$algorithm" = dcpo+icr ] && name=composed
  local args=(
    trainer.device=cpu
    algorithm.adv_estimator=grpo
    algorithm.use_kl_in_reward=False
    "+algorithm.dcrl.name=$name"
    actor_rollout_ref.model.path="$OUT/tiny-arith"
    actor_rollout_ref.model.use_remove_padding=False
    actor_rollout_ref.model.enable_gradient_checkpointing=False
    +actor_rollout_ref.model.override_config.attn_implementation=eager
    data.train_files="$OUT/train.parquet"
    data.val_files="$OUT/val.parquet"
    data.train_batch_size=4
    data.max_prompt_length=32
    data.max_response_length=48
    data.filter_overlong_prompts=False
    data.dataloader_num_workers=0
    reward.custom_reward_function.path=examples/verl/smoke_reward.py
    reward.custom_reward_function.name=compute_score
    reward.num_workers=1
    actor_rollout_ref.rollout.name=dcrl_hf
    actor_rollout_ref.rollout.n=4
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.top_p=1.0
    actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16
    actor_rollout_ref.rollout.agent.num_workers=1
    actor_rollout_ref.actor.strategy=fsdp2
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}"
    actor_rollout_ref.actor.use_torch_compile=False
    actor_rollout_ref.actor.ppo_mini_batch_size=4
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16
    actor_rollout_ref.actor.ppo_epochs=1
    actor_rollout_ref.actor.optim.lr=1e-2
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    actor_rollout_ref.actor.policy_loss.loss_mode=dcrl_ppo_clip
    trainer.n_gpus_per_node=1
    trainer.nnodes=1
    trainer.logger=[console]
    trainer.val_before_train=False
    trainer.test_freq=-1
    trainer.save_freq=2
    trainer.total_training_steps="$steps"
    trainer.default_local_dir="$OUT/checkpoints/$algorithm"
    trainer.project_name=dcrl-cpu-smoke
    trainer.experiment_name="$algorithm"
    ray_kwargs.ray_init.num_cpus=8
    +ray_kwargs.ray_init.include_dashboard=False
    hydra.run.dir="$OUT/hydra/$algorithm-$steps"   # not ./outputs in the repository
  )
  if [ "$TRAINER" = v1 ]; then  # verl's V1 trainer: dcrl's DcrlPPOTrainer on TransferQueue
    args+=(trainer.use_v1=True transfer_queue.backend.SimpleStorage.num_data_storage_units=1)
  else
    args+=(trainer.use_v1=False)
  fi
  case $algorithm in
    aepo) args+=(+algorithm.dcrl.max_reinforce=4 +algorithm.dcrl.target_entropy=0.3
                 +algorithm.dcrl.tempered_fraction=1.0) ;;
    dcpo) args+=(+algorithm.dcrl.target_entropy=0.3) ;;
    icr) args+=(+algorithm.dcrl.bonus_total=4.0 +algorithm.dcrl.lp_f_max_length=48
                +algorithm.dcrl.lp_f_buffer=16) ;;
    dcpo+icr) args+=("+algorithm.dcrl.targets=[{name:dcpo,target_entropy:0.3},{name:icr,$(
      )bonus_total:4.0,lp_f_max_length:48,lp_f_buffer:16}]") ;;
  esac
  printf '%s\n' "${args[@]}"
}

for algorithm in "${ALGORITHMS[@]}"; do  # before anything runs (overrides() runs in a subshell)
  case $algorithm in
    aepo | dcpo | icr | dcpo+icr) ;;
    *) echo "error: unknown algorithm '$algorithm'; choose aepo, dcpo, icr or dcpo+icr" >&2
       exit 2 ;;
  esac
done

if [ -n "${SMOKE_PRINT_ARGS:-}" ]; then
  for algorithm in "${ALGORITHMS[@]}"; do overrides "$algorithm" 2; done
  exit 0
fi

"$PY" examples/verl/smoke_setup.py "$OUT"
for algorithm in "${ALGORITHMS[@]}"; do
  rm -rf "$OUT/checkpoints/$algorithm"
  mapfile -t args < <(overrides "$algorithm" 2)
  "$PY" -m dcrl.integrations.verl.main "${args[@]}" > "$OUT/$algorithm-run.log" 2>&1 \
    || { tail -n 60 "$OUT/$algorithm-run.log" >&2; exit 1; }
  SMOKE_NAME=cpu_smoke "$PY" examples/verl/smoke_check.py run "$OUT/$algorithm-run.log" \
    "$algorithm" 2
  if [ "${SMOKE_RESUME:-1}" != 0 ]; then
    mapfile -t args < <(overrides "$algorithm" 3)
    "$PY" -m dcrl.integrations.verl.main "${args[@]}" trainer.resume_mode=auto \
      > "$OUT/$algorithm-resume.log" 2>&1 || { tail -n 60 "$OUT/$algorithm-resume.log" >&2; exit 1; }
    SMOKE_NAME=cpu_smoke "$PY" examples/verl/smoke_check.py resume \
      "$OUT/$algorithm-resume.log" "$algorithm" 3
  fi
done
echo "cpu_smoke: all passed (${ALGORITHMS[*]})"
