# Settings shared by the papers' runs (docs/papers.md §1.2 and §2.3): GRPO-style
# groups, one PPO epoch, lr 1e-6 constant, no KL, no entropy bonus, token-mean, clip 0.2 / dual
# clip 3, FSDP + vLLM on one node of 8 GPUs. Sourced by the run_*.sh scripts; override with
# environment variables (MODEL, TRAIN_FILES, VAL_FILES, N_GPUS, CKPT_DIR).
N_GPUS=${N_GPUS:-8}
TRAIN_FILES=${TRAIN_FILES:-$HOME/data/math/train.parquet}
VAL_FILES=${VAL_FILES:-$HOME/data/math/test.parquet}
export VERL_USE_EXTERNAL_MODULES=dcrl.integrations.verl.register

COMMON_ARGS=(
  data.train_files="$TRAIN_FILES"
  data.val_files="$VAL_FILES"
  data.filter_overlong_prompts=True
  actor_rollout_ref.model.path="$MODEL"
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.optim.weight_decay=0.01
  actor_rollout_ref.actor.grad_clip=1.0
  actor_rollout_ref.actor.ppo_epochs=1
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.loss_agg_mode=token-mean
  actor_rollout_ref.actor.clip_ratio_low=0.2
  actor_rollout_ref.actor.clip_ratio_high=0.2
  actor_rollout_ref.actor.clip_ratio_c=3.0
  actor_rollout_ref.actor.policy_loss.loss_mode=dcrl_ppo_clip
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.top_p=1.0
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6
  actor_rollout_ref.rollout.tensor_model_parallel_size=1
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
  actor_rollout_ref.rollout.val_kwargs.temperature=0.5
  algorithm.use_kl_in_reward=False
  trainer.critic_warmup=0
  trainer.logger='["console","tensorboard"]'
  trainer.n_gpus_per_node="$N_GPUS"
  trainer.nnodes=1
  trainer.save_freq=20
  trainer.test_freq=10
  trainer.total_epochs=10
  trainer.default_local_dir="${CKPT_DIR:-checkpoints/dcrl}"
)
