"""Regenerate this fixture: five small run directories with synthetic numbers (not real training).

    .venv/bin/python tests/data/report_fixture/make_fixture.py

Each run has the files `dcrl train` writes that `dcrl report` reads — config.yaml (the resolved
config of a tiny-* recipe), metrics.jsonl (20 steps, the trainer's metric names) —
and an eval-*/metrics.json in the `dcrl eval` format. The curves only imitate typical shapes
(GRPO's entropy collapse, DCPO/AEPO holding entropy near the target); they are not results.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from dcrl.config import to_dict
from dcrl.eval.metrics import EvalAccumulator
from dcrl.train.config import load_run_config
from dcrl.train.recipes import recipe_path

HERE = Path(__file__).resolve().parent
STEPS = 20
EVAL_NAME = "eval-arith-level2-test40-n16-t1"
NUM_PROBLEMS, NUM_SAMPLES = 40, 16

# run name: (recipe, seed, final accuracy, entropy target or None, mean length)
RUNS = {
    "grpo-seed1": ("tiny-grpo", 1, 0.55, None, 38.0),
    "grpo-seed2": ("tiny-grpo", 2, 0.52, None, 40.0),
    "dcpo-seed1": ("tiny-dcpo", 1, 0.62, 0.3, 33.0),
    "dcpo-seed2": ("tiny-dcpo", 2, 0.60, 0.3, 34.0),
    "aepo-seed1": ("tiny-aepo", 1, 0.58, 0.5, 36.0),
}


def step_metrics(rng, algorithm, final_accuracy, target, mean_length):
    progress = np.linspace(0.0, 1.0, STEPS)
    accuracy = 0.3 + (final_accuracy - 0.3) * (1 - np.exp(-3 * progress))
    accuracy += rng.normal(0, 0.02, STEPS)
    if target is None:
        entropy = 0.15 + 0.75 * np.exp(-4 * progress) + rng.normal(0, 0.01, STEPS)  # collapse
    else:
        entropy = target + 0.6 * np.exp(-6 * progress) + rng.normal(0, 0.03, STEPS)
    length = mean_length + 6 * np.exp(-3 * progress) + rng.normal(0, 0.8, STEPS)
    rows = []
    previous_entropy = 0.0
    for step in range(STEPS):
        row = {
            "step": step + 1,
            "reward/accuracy": accuracy[step],
            "reward/pass_at_n": min(1.0, accuracy[step] + 0.25),
            "length/mean": length[step],
            "length/p90": length[step] * 1.3,
            "length/max": length[step] * 1.5,
            "length/truncated_frac": 0.01,
            "length/correct_mean": length[step] - 2.0,
            "corr/length_acc_group": -0.15 + rng.normal(0, 0.04),
            "corr/length_acc_batch": -0.10 + rng.normal(0, 0.04),
            "entropy/sampled_nll": entropy[step],
            "entropy/full": entropy[step] * 1.2,
            "loss/policy": rng.normal(0, 0.01),
            "loss/clipfrac_high": 0.02 + rng.normal(0, 0.003),
            "perf/tokens_per_s": 2500 + rng.normal(0, 50),
        }
        if target is not None:
            temperature = 1.2 if previous_entropy <= target else 0.8
            row |= {"control/temperature": temperature, "entropy/target": target}
            if algorithm == "dcpo":
                row["control/alpha"] = min(abs(target - previous_entropy), 0.1) / 0.6
            else:
                row["control/num_reinforce"] = 60 if previous_entropy <= target else 30
        previous_entropy = entropy[step]
        rows.append({key: round(float(v), 4) if key != "step" else v for key, v in row.items()})
    return rows


def eval_metrics(rng, label, final_accuracy, mean_length):
    problem_ids = [f"arith-test-{index}" for index in range(NUM_PROBLEMS)]
    accumulator = EvalAccumulator(problem_ids)
    difficulty = rng.beta(2, 2, NUM_PROBLEMS)
    for problem_id, hardness in zip(problem_ids, difficulty, strict=True):
        success = np.clip(final_accuracy + 1.6 * (0.5 - hardness), 0.0, 1.0)
        correct = rng.random(NUM_SAMPLES) < success
        lengths = np.maximum(5, rng.normal(mean_length, 6, NUM_SAMPLES) + 4 * ~correct)
        accumulator.add_samples(
            problem_id,
            correct.astype(float).tolist(),
            lengths.astype(int).tolist(),
            [False] * NUM_SAMPLES,
        )
    metrics = accumulator.metrics()
    metrics["settings"] = {
        "model": label,
        "data": "arith-level2-test40",
        "reward": "ArithmeticChainTask.verify",
        "template": "plain",
        "n": NUM_SAMPLES,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 48,
        "seed": 0,
        "samples_per_call": NUM_SAMPLES,
        "problems_per_call": 1,
        "backend": "hf",
        "dtype": "float32",
        "num_problems": NUM_PROBLEMS,
        "greedy": False,
        "synthetic_fixture": True,
    }
    return metrics


def main() -> None:
    for name, (recipe, seed, accuracy, target, length) in RUNS.items():
        run_dir = HERE / name
        shutil.rmtree(run_dir, ignore_errors=True)
        (run_dir / EVAL_NAME).mkdir(parents=True)
        config = to_dict(
            load_run_config(
                recipe_path(recipe),
                [f"train.seed={seed}", f"train.steps={STEPS}", f"log.output_dir=runs/{name}"],
            )
        )
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        rng = np.random.default_rng(seed * 100 + len(name))
        rows = step_metrics(rng, config["algorithm"]["name"], accuracy, target, length)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        metrics = eval_metrics(rng, name, accuracy, length)
        (run_dir / EVAL_NAME / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")


if __name__ == "__main__":
    main()
