"""Shared pieces of the vLLM tier: the engine settings, a small exploration-testbed run, and the
log-probs of fixed sequences under the trainer's policy and under the engine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dcrl.rollout.vllm import VLLMRolloutBackend
from dcrl.train.config import RunConfig, load_run_config
from dcrl.train.recipes import recipe_path

ROOT = Path(__file__).resolve().parents[2]
# vLLM's CPU build: float32 as the trainer, eager (no graph capture to wait for), 1 GiB KV cache.
ENGINE_OPTIONS = {"dtype": "float32", "enforce_eager": True, "kv_cache_gib": 1}
ENGINE_OVERRIDE = "rollout.backend_options={dtype: float32, enforce_eager: true, kv_cache_gib: 1}"

# Log-probs of one token from two float32 engines (the trainer's PyTorch ops, vLLM's CPU kernels)
# differ by rounding only: along the longest chain of sums, 4 layers × (3·128 + 384) ≈ 3,100
# terms plus the head (128) and the softmax (21), |error| ≲ K·u ≈ 3,300 · 6e-8 ≈ 2e-4 relative
# to the logits' scale (|z| ≲ 20 here): 4e-3 per token. The changes the tests look for (a step of
# training, a perturbed engine) move a sequence's log-prob by whole nats.
TOKEN_TOLERANCE = 4e-3

# Fixed (prompt, response) pairs of the exploration task, each response ending with EOS.
SEQUENCES = [
    ("17+25=", "f42,42,42"),
    ("38+47=", "d8+7=15,30+40=70,70+15=85"),
    ("61+29=", "g#90"),
    ("55+55=", "f100,100"),
]


def engine_backend(model: torch.nn.Module, tokenizer: Any) -> VLLMRolloutBackend:
    return VLLMRolloutBackend(model, tokenizer, **ENGINE_OPTIONS)


def explore_config(
    run_dir: Path, recipe: str = "explore-grpo", *extra: str, backend: str = "vllm"
) -> RunConfig:
    """A short run of a recipe of the exploration testbed on the vLLM engine: 8 prompts × 4
    responses of ≤ 48 tokens, two optimizer steps per rollout step, lr 3e-3 (so that a step
    moves the log-probs visibly)."""
    return load_run_config(
        recipe_path(recipe),
        [
            f"rollout.backend={backend}",
            *([ENGINE_OVERRIDE] if backend == "vllm" else []),
            "rollout.n=4",
            "rollout.max_new_tokens=48",
            "train.prompts_per_step=8",
            "train.mini_batch_prompts=4",
            "train.micro_batch_size=32",
            "train.lr=3e-3",
            "train.warmup_steps=0",
            "train.threads=1",
            "train.save_every=0",
            "log.console=false",
            "log.tensorboard=false",
            f"log.output_dir={run_dir}",
            *extra,
        ],
    )


def encoded_sequences(tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    pairs = []
    for prompt, response in SEQUENCES:
        prompt_ids = tokenizer(prompt)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        pairs.append((prompt_ids, [*response_ids, tokenizer.eos_token_id]))
    return pairs


def policy_logprobs(trainer: Any, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
    """log π(response token | prefix) under the trainer's current policy, one row at a time."""
    rows = []
    for prompt_ids, response_ids in pairs:
        ids = torch.tensor([prompt_ids + response_ids])
        mask = torch.ones_like(ids)
        response_mask = torch.ones(1, len(response_ids), dtype=torch.long)
        logprobs, _ = trainer.logprob_pass(ids, mask, response_mask)
        rows.append(logprobs[0].tolist())
    return rows


def engine_logprobs(backend: VLLMRolloutBackend, pairs: list[tuple[list[int], list[int]]]):
    return backend.sequence_logprobs([p for p, _ in pairs], [r for _, r in pairs])


def largest_difference(a: list[list[float]], b: list[list[float]]) -> float:
    return max(
        abs(x - y)
        for row_a, row_b in zip(a, b, strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    )


def total(rows: list[list[float]]) -> float:
    return math.fsum(x for row in rows for x in row)
