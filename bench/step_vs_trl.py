"""One dcrl GRPO step against one TRL 1.16 GRPOTrainer step at equal work, alternating (issue 12).

    python bench/step_vs_trl.py --model tiny-overthink --repetitions 5 --threads 2
    python bench/step_vs_trl.py --model smollm2-135m --repetitions 5 --threads 2

Equal work on both sides: the same initial weights (LoRA adapters drawn from the same seed), the
same prompts in the same order (TRL's dataset is dcrl's sampled batches, unshuffled), the same group
size, max_new_tokens, temperature 1 and top_p 1, the same stop tokens (the tokenizer's EOS plus the
generation config's), one optimizer step per rollout (dcrl: mini_batch_prompts = prompts_per_step,
so the old-log-prob pass is skipped; TRL: gradient_accumulation_steps = steps_per_generation, so
its old-log-prob pass is skipped too), the same micro-batch size, a globally token-normalized loss
(dcrl GRPO token-mean; TRL loss_type "dapo"), no KL term, no gradient checkpointing, float32, no
vLLM, AdamW at the same learning rate, and the same torch thread count in one process.

dcrl samples with `--decoding` (default "loop", dcrl's decoding loop; "generate" is transformers'
`generate`, which TRL uses and dcrl's backend defaults to): see dcrl/rollout/hf.py.

Steps alternate: TRL's `train()` runs warm-up + repetitions steps, and a callback runs one dcrl step
beside each TRL step, after it on even steps and before it on odd ones (so neither side always
runs on a cache or a CPU state the other left).

TRL's head, two variants from one command (`--trl-head both`, the default; each a separate pass
with fresh trainers on the same batches):
- "as_run": TRL 1.16 as it runs on this machine. Its fused LM head (trl/kernels/chunked_logprob.py)
  scores only the completion positions when Triton runs on the device ("compact"); on a CPU it
  projects every position (prompt and padding too) through the head and recomputes it in backward;
- "completion_only" (the fair variant): TRL given the completion-only head it uses on a GPU
  (trl.trainer.utils._use_triton patched to True for its compact selection; the tiles stay its
  torch fallback). dcrl's head (dcrl.core.fused_head) also scores completion positions only. Generated tokens are counted the same way on both sides: completion tokens up
to and including the first stop token (dcrl's response_lengths, TRL's EOS-masked completion_ids).

Phases (seconds per step): generate (the sampling call), rollout_other (rewards, advantages and
bookkeeping around it), forward (the policy's forward + log-probs with grad), backward (the rest of
the micro-batch loop: loss, backward, metrics), optimizer (clip + AdamW step), other (the rest).

Writes bench/results/step_vs_trl.json (one entry per model, updated in place, holding each TRL
variant's pass), step_vs_trl.md and step_vs_trl.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
PHASES = ("generate", "rollout_other", "forward", "backward", "optimizer", "other")

# The two shapes of issue 12: the tiny recipe and SmolLM2-135M with LoRA.
MODELS: dict[str, dict[str, Any]] = {
    "tiny-overthink": dict(
        config="dcrl/recipes/tiny-grpo.yaml", prompts=32, n=8, max_new_tokens=48, micro_batch=128
    ),
    "smollm2-135m": dict(
        config="dcrl/recipes/smollm2-135m-addition.yaml",
        prompts=4,
        n=8,
        max_new_tokens=32,
        micro_batch=32,
    ),
}


class PhaseTimer:
    """Accumulates wall seconds per phase name; `wrap` times every call of a function."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, phase: str, function: Callable, when: Callable[[], bool] = lambda: True):
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not when():
                return function(*args, **kwargs)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        return timed

    def take(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds.clear()
        return out


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def build_dcrl(model: str, shape: dict[str, Any], threads: int, run_dir: str, lr: float):
    from dcrl.train.config import load_run_config
    from dcrl.train.trainer import Trainer

    overrides = [
        f"train.prompts_per_step={shape['prompts']}",
        f"train.mini_batch_prompts={shape['prompts']}",
        f"train.micro_batch_size={shape['micro_batch']}",
        f"rollout.n={shape['n']}",
        f"rollout.max_new_tokens={shape['max_new_tokens']}",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        f"rollout.batch_size={shape['prompts']}",
        f"train.threads={threads}",
        f"train.lr={lr}",
        "train.warmup_steps=0",
        "train.weight_decay=0.0",
        "train.save_every=0",
        f"log.output_dir={run_dir}",
        "log.console=false",
        "log.tensorboard=false",
    ]
    torch.manual_seed(0)  # the LoRA adapters' initialization, the same on both sides
    return Trainer(load_run_config(REPO / shape["config"], overrides))


def build_trl(dcrl_trainer: Any, model: str, shape: dict[str, Any], batches: list, lr: float):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from dcrl.models import load_policy
    from dcrl.rewards import score_batch

    mc = dcrl_trainer.config.model
    torch.manual_seed(0)
    policy, tokenizer = load_policy(
        model, dtype=mc.dtype, lora=None if mc.lora is None else vars(mc.lora)
    )
    problems = [problem for batch in batches for problem in batch]
    dataset = Dataset.from_dict(
        {
            "prompt": [dcrl_trainer.format_prompt(p) for p in problems],
            "problem_index": list(range(len(problems))),
        }
    )

    def reward(completions: list[str], problem_index: list[int], **kwargs: Any) -> list[float]:
        rows = [problems[i] for i in problem_index]
        return score_batch(
            dcrl_trainer.reward_fn,
            completions,
            [p.answer for p in rows],
            [p.meta for p in rows],
        )

    rows = shape["prompts"] * shape["n"]
    accumulation = rows // shape["micro_batch"]
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=shape["micro_batch"],
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,  # one generation per optimizer step: on-policy
        num_generations=shape["n"],
        max_completion_length=shape["max_new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=0.0,
        loss_type="dapo",  # token-mean over the whole generation batch, as dcrl's GRPO
        max_steps=len(batches),
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        shuffle_dataset=False,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    return GRPOTrainer(
        model=policy,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )


def instrument_dcrl(trainer: Any, timer: PhaseTimer, tokens: list[float]) -> None:
    from dcrl.train import forward

    generate = trainer.backend.generate

    def counted_generate(*args: Any, **kwargs: Any):
        batch = generate(*args, **kwargs)
        tokens[0] += float(batch.response_lengths.sum())
        return batch

    trainer.backend.generate = timer.wrap("generate", counted_generate)
    forward.response_logprobs = timer.wrap(
        "forward", forward.response_logprobs, torch.is_grad_enabled
    )
    trainer.optimizer.step = timer.wrap("optimizer", trainer.optimizer.step)


def instrument_trl(trainer: Any, timer: PhaseTimer, tokens: list[float]) -> None:
    generate = trainer._generate

    def counted_generate(*args: Any, **kwargs: Any):
        out = generate(*args, **kwargs)
        tokens[0] += float(sum(len(ids) for ids in out[1]))  # EOS-masked completion ids
        return out

    trainer._generate = timer.wrap("generate", counted_generate)
    trainer._generate_and_score_completions = timer.wrap(
        "rollout", trainer._generate_and_score_completions
    )
    trainer._get_per_token_logps_and_entropies = timer.wrap(
        "forward", trainer._get_per_token_logps_and_entropies, torch.is_grad_enabled
    )
    trainer.accelerator.backward = timer.wrap("backward_call", trainer.accelerator.backward)


def completion_only_head(enabled: bool) -> Callable[[], None]:
    """Make TRL's fused LM head select the completion positions as it does on a GPU; returns the
    undo."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    if enabled:
        trl_utils._use_triton = lambda device: True  # only its compact selection reads this name

    def undo() -> None:
        trl_utils._use_triton = original

    return undo


def run(
    model: str, repetitions: int, warmup: int, threads: int, decoding: str, trl_head: str
) -> dict[str, Any]:
    from transformers import TrainerCallback

    from dcrl.rollout import HFRolloutBackend

    shape = MODELS[model]
    lr = 2e-4
    torch.set_num_threads(threads)
    steps = warmup + repetitions
    dcrl_trainer = build_dcrl(model, shape, threads, tempfile.mkdtemp(prefix="dcrl-bench-"), lr)
    dcrl_trainer.backend = HFRolloutBackend(
        dcrl_trainer.model,
        dcrl_trainer.tokenizer,
        batch_size=dcrl_trainer.config.rollout.batch_size,
        decoding=decoding,
    )
    batches = [dcrl_trainer.sampler.next_batch() for _ in range(steps)]
    pending = iter(batches)
    dcrl_trainer.sampler.next_batch = lambda: next(pending)
    trl_trainer = build_trl(dcrl_trainer, model, shape, batches, lr)
    torch.set_num_threads(threads)

    records: dict[str, list[dict[str, float]]] = {"dcrl": [], "trl": []}
    dcrl_timer, trl_timer = PhaseTimer(), PhaseTimer()
    dcrl_tokens, trl_tokens = [0.0], [0.0]
    instrument_dcrl(dcrl_trainer, dcrl_timer, dcrl_tokens)
    instrument_trl(trl_trainer, trl_timer, trl_tokens)

    class Alternate(TrainerCallback):
        """Times each TRL step (begin → end) and runs one dcrl step beside it: after it on even
        steps, before it on odd ones."""

        def __init__(self) -> None:
            self.index = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.index % 2 == 1:
                self.dcrl_step(state)
            torch.set_num_threads(threads)
            trl_timer.take()
            trl_tokens[0] = 0.0
            self.start = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.optimizer_start = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            trl_timer.seconds["optimizer"] += time.perf_counter() - self.optimizer_start

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self.start
            phases = trl_timer.take()
            # accelerator.backward holds the backward; the loss math outside the forward is small
            # and counted in "other" on both sides.
            trl_phases = {
                "generate": phases.get("generate", 0.0),
                "rollout_other": phases.get("rollout", 0.0) - phases.get("generate", 0.0),
                "forward": phases.get("forward", 0.0),
                "backward": phases.get("backward_call", 0.0),
                "optimizer": phases.get("optimizer", 0.0),
            }
            trl_phases["other"] = seconds - sum(trl_phases.values())
            records["trl"].append(
                {
                    "seconds": seconds,
                    "tokens": trl_tokens[0],
                    "threads": torch.get_num_threads(),
                    "load_1min": os.getloadavg()[0],
                    "first": self.index % 2 == 0,
                    **trl_phases,
                }
            )
            if self.index % 2 == 0:
                self.dcrl_step(state)
            self.index += 1

        def dcrl_step(self, state) -> None:
            torch.set_num_threads(threads)
            dcrl_tokens[0] = 0.0
            start = time.perf_counter()
            metrics = dcrl_trainer.train_step()
            seconds = time.perf_counter() - start
            phases = dcrl_timer.take()
            dcrl_phases = {
                "generate": phases.get("generate", 0.0),
                "rollout_other": metrics["time/rollout"]
                + metrics["time/prepare"]
                - phases.get("generate", 0.0),
                "forward": phases.get("forward", 0.0),
                "backward": metrics["time/update"]
                - phases.get("forward", 0.0)
                - phases.get("optimizer", 0.0),
                "optimizer": phases.get("optimizer", 0.0),
            }
            dcrl_phases["other"] = seconds - sum(dcrl_phases.values())
            records["dcrl"].append(
                {
                    "seconds": seconds,
                    "tokens": dcrl_tokens[0],
                    "threads": torch.get_num_threads(),
                    "load_1min": os.getloadavg()[0],
                    "first": self.index % 2 == 1,
                    **dcrl_phases,
                }
            )
            print(
                f"[{trl_head}] step {self.index}: dcrl {seconds:.2f} s {dcrl_tokens[0]:.0f} tok "
                f"({'before' if self.index % 2 else 'after'} TRL)",
                flush=True,
            )

    trl_trainer.add_callback(Alternate())
    undo = completion_only_head(trl_head == "completion_only")
    try:
        trl_trainer.train()
    finally:
        undo()

    result: dict[str, Any] = {
        "shape": {k: v for k, v in shape.items() if k != "config"},
        "lora": dcrl_trainer.config.model.lora is not None,
        "threads": threads,
        "dcrl_decoding": decoding,
        "trl_head": trl_head,
        "warmup_steps": warmup,
        "repetitions": repetitions,
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
    }
    for side, steps_seen in records.items():
        measured = steps_seen[warmup:]
        result[side] = {
            "steps": measured,
            "seconds": summary([s["seconds"] for s in measured]),
            "tokens": summary([s["tokens"] for s in measured]),
            "tokens_per_s": summary([s["tokens"] / s["seconds"] for s in measured]),
            "phase_median_seconds": {
                phase: statistics.median(s[phase] for s in measured) for phase in PHASES
            },
        }
    result["ratio_median_tokens_per_s"] = (
        result["dcrl"]["tokens_per_s"]["median"] / result["trl"]["tokens_per_s"]["median"]
    )
    result["ratio_median_seconds"] = (
        result["trl"]["seconds"]["median"] / result["dcrl"]["seconds"]["median"]
    )
    return result


TRL_HEADS = ("completion_only", "as_run")
TRL_HEAD_TEXT = {
    "completion_only": "TRL 1.16, completion-only head (as on a GPU)",
    "as_run": "TRL 1.16 as run here (head on every position)",
}


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = [
        "# One GRPO step: dcrl vs TRL 1.16 at equal work (bench/step_vs_trl.py)",
        "",
        "Per-step seconds and generated tokens/s as min / median / max over the measured steps "
        "(alternating, which side runs first too, after warm-up); ratio = dcrl median tokens/s ÷ "
        "TRL median tokens/s. Each TRL variant is its own pass against its own dcrl steps; "
        '"completion-only" is the fair comparison (TRL\'s head as it runs on a GPU).',
        "",
        "| model | shape | threads | load avg (1/5/15 min) | side | s/step | tokens/step | "
        "tokens/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, entry in results.items():
        for head in TRL_HEADS:
            if head not in entry:
                continue
            r = entry[head]
            shape = r["shape"]
            shape_text = f"{shape['prompts']}×{shape['n']}, {shape['max_new_tokens']} tok" + (
                ", LoRA" if r["lora"] else ""
            )
            load = "/".join(f"{x:.1f}" for x in r["load_average"])
            for side in ("dcrl", "trl"):
                s = r[side]
                side_text = (
                    f"dcrl ({r['dcrl_decoding']})" if side == "dcrl" else TRL_HEAD_TEXT[head]
                )
                fmt = "{min:.2f} / {median:.2f} / {max:.2f}"
                ratio = f"{r['ratio_median_tokens_per_s']:.2f}×" if side == "dcrl" else ""
                lines.append(
                    f"| {model} | {shape_text} | {r['threads']} | {load} | {side_text} | "
                    f"{fmt.format(**s['seconds'])} | {s['tokens']['median']:.0f} | "
                    f"{s['tokens_per_s']['min']:.0f} / {s['tokens_per_s']['median']:.0f} / "
                    f"{s['tokens_per_s']['max']:.0f} | {ratio} |"
                )
    lines += [
        "",
        "Median seconds per phase (see the script's docstring for the phases).",
        "",
    ]
    lines += [
        "| model | TRL head | side | " + " | ".join(PHASES) + " |",
        "|---|---|---|" + "---|" * len(PHASES),
    ]
    for model, entry in results.items():
        for head in TRL_HEADS:
            if head not in entry:
                continue
            for side in ("dcrl", "trl"):
                phases = entry[head][side]["phase_median_seconds"]
                lines.append(
                    f"| {model} | {head} | {side} | "
                    + " | ".join(f"{phases[p]:.2f}" for p in PHASES)
                    + " |"
                )
    path.write_text("\n".join(lines) + "\n")


def write_figure(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (model, head, entry[head])
        for model, entry in results.items()
        for head in TRL_HEADS
        if head in entry
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, (model, head, r) in zip(axes[0], panels, strict=True):
        for x, side in enumerate(("dcrl", "trl")):
            bottom = 0.0
            for i, phase in enumerate(PHASES):
                value = max(r[side]["phase_median_seconds"][phase], 0.0)
                ax.bar(x, value, bottom=bottom, color=colors[i], label=phase if x == 0 else None)
                bottom += value
            ax.text(
                x,
                bottom,
                f"{r[side]['tokens_per_s']['median']:.0f} tok/s",
                ha="center",
                va="bottom",
            )
        ax.set_xticks([0, 1], [f"dcrl ({r['dcrl_decoding']})", f"TRL ({head})"])
        ax.set_ylabel("median seconds per step")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.08)  # room for the tokens/s labels
        ax.set_title(
            f"{model}, TRL head {head}, {r['threads']} thr:\ndcrl/TRL = "
            f"{r['ratio_median_tokens_per_s']:.2f}× tokens/s",
            fontsize=9,
        )
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(PHASES), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny-overthink")
    parser.add_argument("--repetitions", type=int, default=5, help="measured steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps per side first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (both sides)")
    parser.add_argument(
        "--decoding",
        choices=("loop", "generate"),
        default="loop",
        help="dcrl's HF decoder (dcrl.rollout.hf); TRL always uses transformers' generate",
    )
    parser.add_argument(
        "--trl-head",
        choices=("both", *TRL_HEADS),
        default="both",
        help="TRL's LM head: completion_only (as on a GPU, the fair variant), as_run (every "
        "position, as TRL runs on a CPU), or both, one pass each",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "step_vs_trl.json")
    args = parser.parse_args()
    if args.repetitions < 1:
        parser.error("--repetitions must be ≥ 1")

    heads = TRL_HEADS if args.trl_head == "both" else (args.trl_head,)
    entry: dict[str, Any] = {"command": "python bench/step_vs_trl.py " + " ".join(sys.argv[1:])}
    for head in heads:
        entry[head] = run(
            args.model, args.repetitions, args.warmup, args.threads, args.decoding, head
        )
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    # entries written before the two TRL variants existed are replaced, not mixed in
    results = {k: v for k, v in results.items() if any(h in v for h in TRL_HEADS)}
    results[args.model] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, args.out.with_suffix(".md"))
    write_figure(results, args.out.with_suffix(".png"))
    for head in heads:
        ratio = entry[head]["ratio_median_tokens_per_s"]
        print(f"{args.model} [{head}]: dcrl/TRL median tokens/s = {ratio:.2f}×")


if __name__ == "__main__":
    main()
