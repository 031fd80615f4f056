"""SmolLM2-135M with LoRA trained through vLLM's CPU build and through the hf backend (issue 25).

    .venv-vllm/bin/python bench/smollm2_backends.py --steps 3 --seeds 1

`dcrl/recipes/smollm2-135m-addition.yaml` as it is (GRPO, LoRA r = 16, 8 prompts × 8 samples), once
with `rollout.backend=hf` (dcrl's decoding loop) and once with `rollout.backend=vllm` (the engine
gets the merged LoRA weights before every rollout), each in its own process, same seed. Per step:
training accuracy, the rollout's seconds and, for vLLM, how far the engine's log-probs of its
samples are from the trainer's (rollout/logprob_abs_diff_mean). The two backends draw different
samples for a seed, so their accuracies agree in distribution, not value.

Writes bench/results/smollm2_backends.json and smollm2_backends.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("hf", "vllm")
ENGINE = "rollout.backend_options={dtype: float32, enforce_eager: true, kv_cache_gib: 1}"
KEYS = ("reward/accuracy", "time/rollout", "time/step", "rollout/logprob_abs_diff_mean")


def train(backend: str, steps: int, seed: int) -> list[dict[str, float]]:
    from dcrl.train.config import load_run_config
    from dcrl.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [
            f"rollout.backend={backend}",
            f"train.steps={steps}",
            f"train.seed={seed}",
            "train.save_every=0",
            "log.console=false",
            "log.tensorboard=false",
            f"log.output_dir={run_dir}",
            *([ENGINE] if backend == "vllm" else []),
        ]
        config = load_run_config(
            REPO / "dcrl" / "recipes" / "smollm2-135m-addition.yaml", overrides
        )
        history = Trainer(config).fit()
    return [{key: m[key] for key in KEYS if key in m} for m in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # backend seed, in a child
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the table and README block"
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "smollm2_backends.json").read_text())
        render(saved["command"], saved["runs"])
        return
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    if args.one:
        print(json.dumps(train(args.one[0], args.steps, int(args.one[1]))))
        return
    runs = {}
    for seed in args.seeds:
        for backend in BACKENDS:
            child = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--one", backend, str(seed)],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            )
            runs[f"{backend} seed {seed}"] = json.loads(child.stdout.strip().splitlines()[-1])
            print(backend, seed, runs[f"{backend} seed {seed}"], file=sys.stderr)
    command = "python bench/smollm2_backends.py " + shlex.join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "smollm2_backends.json").write_text(
        json.dumps({"command": command, "runs": runs}, indent=1) + "\n"
    )
    render(command, runs)


def render(command: str, runs: dict[str, list[dict[str, float]]]) -> None:
    """bench/results/smollm2_backends.md and the README's block, from the runs."""
    lines = [
        "# SmolLM2-135M (LoRA, GRPO) trained through vLLM's CPU build and through the hf backend",
        "",
        f"`{command}` (dcrl/recipes/smollm2-135m-addition.yaml as it is; 2 CPU cores).",
        "",
        "The rollout seconds are what each run took beside other jobs, not a speed comparison "
        "(bench/rollout_backends.py alternates the decoders for that).",
        "",
        "| run | accuracy per step | rollout s per step | engine-trainer log-prob gap per token |",
        "|---|---|---|---|",
    ]
    for name, history in runs.items():
        accuracy = " → ".join(f"{m['reward/accuracy']:.2f}" for m in history)
        rollout = ", ".join(f"{m['time/rollout']:.1f}" for m in history)
        gap = ", ".join(
            f"{m['rollout/logprob_abs_diff_mean']:.1e}"
            for m in history
            if "rollout/logprob_abs_diff_mean" in m
        )
        lines.append(f"| {name} | {accuracy} | {rollout} | {gap or '—'} |")
    (RESULTS / "smollm2_backends.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "smollm2_backends.md").read_text())
    summary = []
    for backend in BACKENDS:
        mine = [h for name, h in runs.items() if name.startswith(f"{backend} ")]
        first = statistics.mean(h[0]["reward/accuracy"] for h in mine)
        last = statistics.mean(h[-1]["reward/accuracy"] for h in mine)
        summary.append(f"{backend} {first:.2f} → {last:.2f}")
    gaps = [
        m["rollout/logprob_abs_diff_mean"]
        for name, h in runs.items()
        for m in h
        if "rollout/logprob_abs_diff_mean" in m
    ]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from readme_blocks import write_block

    write_block(
        REPO / "README.md",
        "smollm2_backends",
        f"Measured by `{command}` (bench/results/smollm2_backends.md): training accuracy "
        f"from the first to the last step, mean over {len(runs) // len(BACKENDS)} seeds, "
        + ", ".join(summary)
        + f"; the engine's log-probs of its samples were within {max(gaps):.1e} nats per "
        "token of the trainer's (largest step mean).",
    )


if __name__ == "__main__":
    main()
