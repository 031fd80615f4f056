"""Supervised pretraining of the built-in tiny policy on the synthetic task's worked solutions.

The results are the built-in checkpoints the CPU recipes start RL from, each a 0.8M-parameter
Llama over a character vocabulary: `tiny-arith` and `tiny-overthink` on the arithmetic chains
(task "arith"), `tiny-explore` on the exploration testbed (task "explore", docs/testbed.md).
Regenerate one with `dcrl pretrain` (the command is recorded in its pretrain.json).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from dcrl.config import field


@dataclass
class PretrainConfig:
    task: Literal["arith", "explore"] = field(
        "arith",
        help="The synthetic task: 'arith' (arithmetic chains; the level ... verbosity_levels "
        "settings) or 'explore' (the exploration testbed; the trap_share ... guess_spread "
        "settings).",
    )
    level: list[int] = field(
        [2], help="Operations per arithmetic chain; several (e.g. 1,2,3) mix difficulties."
    )
    max_digits: int = field(2, help="Digits per operand.")
    slip_rate: float = field(
        0.0,
        help="Chance that a redundant re-check restates the running value wrongly (the "
        "over-thinking regime of tiny-overthink; see ArithmeticChainTask).",
    )
    verbosity_levels: list[float] = field(
        [0.0, 0.5, 1.0], help="Re-check probabilities the solutions' verbosity is drawn from."
    )
    trap_share: float = field(0.25, help="explore: fraction of trap problems in training.")
    strategy_weights: list[float] = field(
        [0.65, 0.27, 0.08], help="explore: frequencies of fast, decompose and guess solutions."
    )
    check_weights: list[float] = field(
        [0.4, 0.35, 0.15, 0.1], help="explore: frequencies of 0, 1, 2, ... checks."
    )
    decompose_slip: float = field(
        0.2, help="explore: chance that a decomposition's last addition is off by 1 or 2."
    )
    guess_spread: int = field(4, help="explore: a guess is the sum plus an offset within ±spread.")
    steps: int = field(1500, help="Optimizer steps.")
    batch_size: int = field(64, help="Solutions per step.")
    lr: float = field(2e-3, help="Peak AdamW learning rate (after a linear warm-up).")
    schedule: Literal["cosine", "constant"] = field(
        "cosine",
        help="After warm-up: cosine decay to 10% of lr (a converged policy), or constant (an "
        "early snapshot of a longer run: the unsharp start of tiny-overthink).",
    )
    warmup_steps: int = field(50, help="Linear warm-up steps.")
    train_size: int = field(20000, help="Distinct training problems.")
    eval_size: int = field(256, help="Held-out problems for the final accuracy.")
    layers: int = field(4, help="Transformer layers.")
    hidden: int = field(128, help="Hidden size.")
    seed: int = field(0, help="Seed of data, initialization and sampling.")
    threads: int = field(2, help="torch CPU threads.")


def task_options(config: PretrainConfig) -> dict[str, Any]:
    """The task options of the pretraining data (also the RL recipes' task_options)."""
    if config.task == "explore":
        return {
            "trap_share": config.trap_share,
            "strategy_weights": list(config.strategy_weights),
            "check_weights": list(config.check_weights),
            "decompose_slip": config.decompose_slip,
            "guess_spread": config.guess_spread,
        }
    return {
        "level": list(config.level),
        "max_digits": config.max_digits,
        "slip_rate": config.slip_rate,
        "verbosity_levels": list(config.verbosity_levels),
    }


def _setting_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _encode_examples(tokenizer: Any, problems: list[Any]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, solution ids + EOS) per problem."""
    eos = tokenizer.eos_token_id
    prompts = tokenizer([p.prompt for p in problems], add_special_tokens=False)["input_ids"]
    solutions = tokenizer([p.solution for p in problems], add_special_tokens=False)["input_ids"]
    return [(p, s + [eos]) for p, s in zip(prompts, solutions, strict=True)]


def _collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (−100 on prompt and padding)."""
    width = max(len(p) + len(s) for p, s in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (prompt, solution) in enumerate(examples):
        ids = prompt + solution
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, len(prompt) : len(ids)] = torch.tensor(solution)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def evaluate_accuracy(
    model: Any, tokenizer: Any, task: Any, problems: list[Any], temperature: float, seed: int
) -> dict[str, float]:
    """Accuracy and mean response length of one sample per problem at `temperature`."""
    from dcrl.rollout import get_rollout_backend

    backend = get_rollout_backend("hf", model, tokenizer, batch_size=128)
    batch = backend.generate([p.prompt for p in problems], 1, temperature, 1.0, 64, seed=seed)
    scores = [
        task.verify(text, problems[int(g)].answer)
        for text, g in zip(batch.response_texts, batch.group_index, strict=True)
    ]
    return {
        "accuracy": sum(scores) / len(scores),
        "length": float(batch.response_lengths.float().mean()),
    }


def pretrain(config: PretrainConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train the tiny policy on worked solutions and save it (HF directory) to `out_dir`.

    Returns the pretrain record (settings, loss, held-out greedy and T = 1 accuracy), also written
    to OUT_DIR/pretrain.json.
    """
    from dcrl.models.tiny import build_tiny_model, save_tiny_model
    from dcrl.tasks import EXPLORE_ALPHABET, SYNTHETIC_ALPHABET, get_task

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    task = get_task(config.task, seed=config.seed, **task_options(config))
    train_problems = task.problems("train", config.train_size)
    alphabet = EXPLORE_ALPHABET if config.task == "explore" else SYNTHETIC_ALPHABET
    model, tokenizer = build_tiny_model(
        alphabet, layers=config.layers, hidden=config.hidden, seed=config.seed
    )
    examples = _encode_examples(tokenizer, train_problems)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)

    def lr_factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress_frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_frac)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    tokens = 0

    from rich.progress import Progress

    with Progress(disable=not progress) as bar:
        task_id = bar.add_task("pretrain", total=config.steps)
        for _ in range(config.steps):
            rows = torch.randint(len(examples), (config.batch_size,), generator=generator)
            batch = _collate([examples[i] for i in rows.tolist()], tokenizer.pad_token_id)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            tokens += int(batch["attention_mask"].sum())
            bar.update(task_id, advance=1, description=f"pretrain loss {loss.item():.3f}")
    seconds = time.perf_counter() - start

    eval_problems = task.problems("test", config.eval_size)
    model.eval()
    greedy = evaluate_accuracy(model, tokenizer, task, eval_problems, 0.0, config.seed)
    sampled = evaluate_accuracy(model, tokenizer, task, eval_problems, 1.0, config.seed)
    tail = max(1, len(losses) // 10)  # losses are averaged over the first / last 10% of steps
    record = {
        "settings": asdict(config),
        "first_loss": sum(losses[:tail]) / tail,
        "final_loss": sum(losses[-tail:]) / tail,
        "train_seconds": seconds,
        "train_tokens_per_s": tokens / seconds,
        "greedy_accuracy": greedy["accuracy"],
        "sampled_accuracy": sampled["accuracy"],
        "sampled_length": sampled["length"],
        "command": f"dcrl pretrain --out {out_dir} "
        + " ".join(f"{k}={_setting_text(v)}" for k, v in asdict(config).items()),
    }
    out_dir = Path(out_dir)
    save_tiny_model(model, tokenizer, out_dir)
    (out_dir / "pretrain.json").write_text(json.dumps(record, indent=1))
    return record
