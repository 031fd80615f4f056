"""Shared setup of the trainer tests: a tiny run config, a reward the untrained tiny model earns,
and a recorder of what an algorithm's `prepare` saw and returned.

The untrained tiny model scores 0 on arithmetic, so every group would be constant and every
advantage 0. `has_low_digit` instead rewards what a random character model does produce about
half the time (a 0-3 digit in 12 characters: 1 − (53/57)^12 ≈ 0.58), so groups have variance.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dcrl.train.config import RunConfig, load_run_config
from dcrl.train.data import ProblemSampler
from dcrl.train.trainer import Trainer

TEST_REWARD = "tests.helpers:has_low_digit"

# Metrics every algorithm logs each step, finite whenever at least one response is correct.
COMMON_METRICS = (
    "reward/accuracy",
    "reward/pass_at_n",
    "length/mean",
    "length/p90",
    "length/max",
    "length/truncated_frac",
    "length/correct_mean",
    "corr/length_acc_group",
    "corr/length_acc_batch",
    "loss/policy",
    "loss/grad_norm",
    "entropy/sampled_nll",
    "entropy/on_policy_nll",
    "entropy/full",
    "entropy/on_policy_full",
    "train/optimizer_steps",
    "train/skipped_updates",
    "train/bad_steps",
    "train/lr",
    "time/rollout",
    "time/prepare",
    "time/update",
    "time/step",
    "time/sync_weights",
    "perf/tokens_per_s",
    "perf/rollout_tokens_per_s",
)


def has_low_digit(completion: str, answer: str, **meta: Any) -> float:
    """1.0 when the response contains one of the characters 0-3 (a test reward, see above).

    >>> has_low_digit("ab2", "7"), has_low_digit("ab9", "7")
    (1.0, 0.0)
    """
    return float(any(c in completion for c in "0123"))


def tiny_overrides(run_dir: Path, algorithm: str = "grpo", *extra: str) -> list[str]:
    """Overrides of a tiny, fast run: 2 steps of 4 prompts × 4 responses of ≤ 12 tokens.

    lr 1e-3 moves the untrained model visibly; weight decay 0 so that a parameter changes only
    when it received a gradient.
    """
    return [
        f"algorithm.name={algorithm}",
        "model.name=tiny",
        f"data.reward={TEST_REWARD}",
        "data.train_size=64",
        "rollout.n=4",
        "rollout.max_new_tokens=12",
        "rollout.batch_size=8",
        "train.steps=2",
        "train.prompts_per_step=4",
        "train.mini_batch_prompts=4",
        "train.micro_batch_size=8",
        "train.lr=1e-3",
        "train.weight_decay=0",
        "train.save_every=0",
        "log.console=false",
        "log.tensorboard=false",
        f"log.output_dir={run_dir}",
        *extra,
    ]


def tiny_config(run_dir: Path, algorithm: str = "grpo", *extra: str) -> RunConfig:
    """`load_run_config(None, tiny_overrides(...))`: the config `dcrl train` would build."""
    return load_run_config(None, tiny_overrides(run_dir, algorithm, *extra))


def bare_run(run_dir: Path, algorithm: str = "grpo") -> tuple[RunConfig, Any, ProblemSampler]:
    """The config, algorithm and problem sampler of a tiny run, without its model: what a
    checkpoint's trainer state is written from (`resume_check.trainer_state`) and restored into
    (`resume_check.restore_checkpoint`)."""
    from dcrl.algorithms import make_algorithm

    config = tiny_config(run_dir, algorithm)
    size = config.train.prompts_per_step
    sampler = ProblemSampler(list(range(size)), size, config.train.seed)
    return config, make_algorithm(config.algorithm), sampler


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of RUN_DIR/metrics.jsonl, in order."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass
class PreparedStep:
    """One call of `algorithm.prepare`: its inputs, its outputs, and the policy it scored with."""

    batch: Any  # the on-policy RolloutBatch
    scores: torch.Tensor  # (N,)
    train_batch: Any  # the TrainBatch handed to the update
    metrics: dict[str, float]
    old_policy_state: dict[str, torch.Tensor]  # model.state_dict() at prepare time
    generate_calls: list[tuple[float, Any]] = field(default_factory=list)  # (T, RolloutBatch)


def record_prepare(trainer: Trainer) -> list[PreparedStep]:
    """Wrap `trainer.algorithm.prepare` (and the backend's `generate`) to record every step.

    Returns the list the records are appended to; `generate_calls` of a step holds every
    rollout made during it (the on-policy one first, then any an algorithm asked for).
    """
    steps: list[PreparedStep] = []
    calls: list[tuple[float, Any]] = []
    original_prepare = trainer.algorithm.prepare
    original_generate = trainer.backend.generate

    def generate(prompts, n, temperature, *args, **kwargs):
        batch = original_generate(prompts, n, temperature, *args, **kwargs)
        calls.append((temperature, batch))
        return batch

    def prepare(batch, scores, ctx):
        old_policy_state = copy.deepcopy(trainer.model.state_dict())
        train_batch, metrics = original_prepare(batch, scores, ctx)
        steps.append(
            PreparedStep(batch, scores, train_batch, metrics, old_policy_state, list(calls))
        )
        calls.clear()
        return train_batch, metrics

    trainer.backend.generate = generate
    trainer.algorithm.prepare = prepare
    return steps
