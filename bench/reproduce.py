"""Miniature reproductions of the papers' claims on the built-in tiny policy (CPU).

    python bench/reproduce.py                         # all three experiments, 3 seeds
    python bench/reproduce.py --experiment entropy --seeds 1 --steps 20    # a quick look

Experiments (issue 4, each writes bench/results/<experiment>.json, .md and figures):
- entropy: GRPO, and AEPO and DCPO at three target entropies, with the papers' bang-bang
  controller and dcrl's PI controller (like AEPO's Figure 1). Goals: GRPO's entropy falls ≥ 40%;
  the second-half mean entropy is within ±15% of the target (bang-bang) and ±5% (PI).
- exploration: unbiased pass@k, k = 1…64, on the held-out split for the pretrained policy, GRPO,
  AEPO and DCPO (bang-bang, middle target). Goal: AEPO and DCPO ≥ GRPO at pass@16.
- compression: GRPO, LP-F, ICR and LP-F + ICR — accuracy, length and the per-group length–accuracy
  correlation over training, and the accuracy–length Pareto plot. Goal: ICR ≥ 25% shorter than
  GRPO with held-out accuracy within 2 points.

Runs are trained with the recipes in configs/ plus the overrides below, in `--workers` processes
of one thread each; finished runs are reused, so an interrupted reproduction resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = (0.06, 0.1, 0.15)
CONTROLLERS = ("bang_bang", "pi")
EXPLORATION_TARGET = 0.1
EVAL_DIR = "eval-test"


@dataclass(frozen=True)
class RunSpec:
    name: str
    recipe: str
    seed: int
    overrides: tuple[str, ...] = ()
    target: float | None = None
    controller: str | None = None
    labels: dict = field(default_factory=dict, compare=False, hash=False)

    def run_dir(self, root: Path) -> Path:
        return root / f"{self.name}-seed{self.seed}"


def entropy_specs(seeds: list[int]) -> list[RunSpec]:
    specs = [RunSpec("grpo", "grpo", s) for s in seeds]
    for algorithm in ("aepo", "dcpo"):
        for target in TARGETS:
            for controller in CONTROLLERS:
                for seed in seeds:
                    specs.append(
                        RunSpec(
                            f"{algorithm}-H{target}-{controller}",
                            algorithm,
                            seed,
                            (
                                f"algorithm.target_entropy={target}",
                                f"algorithm.controller={controller}",
                            ),
                            target,
                            controller,
                        )
                    )
    return specs


def exploration_specs(seeds: list[int]) -> list[RunSpec]:
    return [
        s
        for s in entropy_specs(seeds)
        if s.name == "grpo" or (s.target == EXPLORATION_TARGET and s.controller == "bang_bang")
    ]


def compression_specs(seeds: list[int]) -> list[RunSpec]:
    lpf = ("algorithm.name=lp_f", "algorithm.max_length=48", "algorithm.buffer=16")
    specs = []
    for seed in seeds:
        specs += [
            RunSpec("grpo", "grpo", seed),
            RunSpec("lp_f", "grpo", seed, lpf),
            RunSpec("icr", "icr", seed, ("algorithm.lp_f=false",)),
            RunSpec("lp_f+icr", "icr", seed, ("algorithm.lp_f=true",)),
        ]
    return specs


def train_one(spec: RunSpec, root: Path, steps: int) -> str:
    """Train one run in this (worker) process; reuse it when already finished."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from dcrl.train import checkpoint
    from dcrl.train.config import load_run_config
    from dcrl.train.trainer import Trainer

    run_dir = spec.run_dir(root)
    overrides = [
        *spec.overrides,
        f"train.steps={steps}",
        f"train.seed={spec.seed}",
        "train.threads=1",
        f"log.output_dir={run_dir}",
        "log.console=false",
        "log.tensorboard=false",
    ]
    config = load_run_config(REPO / "configs" / f"tiny-{spec.recipe}.yaml", overrides)
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is not None:
        done = json.loads((latest / "trainer_state.json").read_text())["step"]
        if done >= steps and (run_dir / "policy" / "config.json").is_file():
            return str(run_dir)
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # died before its first checkpoint: start over
    Trainer(config, resume=latest is not None).fit()
    return str(run_dir)


def evaluate_one(model: str, out_dir: Path, seed: int, problems: int, samples: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from dcrl.eval import evaluate, load_eval_data

    data = load_eval_data("arith:level=2", limit=problems)
    result = evaluate(
        model,
        data.problems,
        data.reward_fn,
        n=samples,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=48,
        seed=seed,
        out_dir=out_dir,
        template=data.template,
        problems_per_call=4,
        data_label=data.label,
    )
    return result.metrics


def run_all(jobs: list, workers: int, describe) -> list:
    """Run (fn, args) jobs in a process pool with a progress bar; results in job order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results = [None] * len(jobs)
    with (
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        ) as bar,
        ProcessPoolExecutor(max_workers=workers) as pool,
    ):
        task = bar.add_task(describe, total=len(jobs))
        futures = {pool.submit(fn, *args): i for i, (fn, args) in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.advance(task)
    return results


def metrics_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def mean(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def series(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def copy_figures(report_html: Path, out: Path, prefix: str) -> list[str]:
    names = []
    for figure in sorted((report_html.parent / "figures").glob("*.png")):
        target = out / f"{prefix}_{figure.name}"
        shutil.copyfile(figure, target)
        names.append(target.name)
    return names


def summarize_entropy(specs: list[RunSpec], root: Path) -> dict:
    signal = "entropy/sampled_nll"  # what the controllers track (papers.md §1.2)
    settings: dict[str, dict] = {}
    for spec in specs:
        rows = metrics_of(spec.run_dir(root))
        values = series(rows, signal)
        half = values[len(values) // 2 :]
        head = mean(values[:3])
        entry = settings.setdefault(
            spec.name,
            {"target": spec.target, "controller": spec.controller, "seeds": {}},
        )
        record = {
            "first3_entropy": head,
            "last3_entropy": mean(values[-3:]),
            "second_half_mean": mean(half),
            "second_half_std": statistics.pstdev(half) if len(half) > 1 else 0.0,
            "final_accuracy": mean(series(rows, "reward/accuracy")[-5:]),
        }
        if spec.target is not None:
            record["relative_error"] = (record["second_half_mean"] - spec.target) / spec.target
        else:
            record["entropy_drop"] = 1 - record["last3_entropy"] / head
        entry["seeds"][spec.seed] = record
    for entry in settings.values():
        seeds = list(entry["seeds"].values())
        for key in seeds[0]:
            entry[f"mean_{key}"] = mean([s[key] for s in seeds])
        if entry["target"] is not None:
            tolerance = 0.15 if entry["controller"] == "bang_bang" else 0.05
            entry["goal"] = f"|relative error| <= {tolerance:.0%}"
            entry["goal_met"] = abs(entry["mean_relative_error"]) <= tolerance
        else:
            entry["goal"] = "entropy drop >= 40%"
            entry["goal_met"] = entry["mean_entropy_drop"] >= 0.40
    return settings


def summarize_exploration(specs: list[RunSpec], root: Path, base: dict) -> dict:
    curves: dict[str, dict] = {"pretrained": {"pass_at_k": base["pass@k"]}}
    for spec in specs:
        metrics = json.loads((spec.run_dir(root) / EVAL_DIR / "metrics.json").read_text())
        label = spec.name.split("-")[0]
        entry = curves.setdefault(label, {"seeds": {}})
        entry["seeds"][spec.seed] = metrics["pass@k"]
    for entry in curves.values():
        if "seeds" in entry:
            ks = next(iter(entry["seeds"].values())).keys()
            entry["pass_at_k"] = {k: mean([s[k] for s in entry["seeds"].values()]) for k in ks}
    ks = [int(k) for k in curves["grpo"]["pass_at_k"]]
    k_goal = str(16 if 16 in ks else max(ks))  # pass@16, or the largest k of a quick run
    grpo_at_k = curves["grpo"]["pass_at_k"][k_goal]
    goals = {
        label: {
            f"pass_at_{k_goal}": curves[label]["pass_at_k"][k_goal],
            f"grpo_pass_at_{k_goal}": grpo_at_k,
            "goal_met": curves[label]["pass_at_k"][k_goal] >= grpo_at_k,
        }
        for label in ("aepo", "dcpo")
        if label in curves
    }
    return {"curves": curves, "goals": goals}


def summarize_compression(specs: list[RunSpec], root: Path) -> dict:
    settings: dict[str, dict] = {}
    for spec in specs:
        run_dir = spec.run_dir(root)
        rows = metrics_of(run_dir)
        evaluation = json.loads((run_dir / EVAL_DIR / "metrics.json").read_text())
        entry = settings.setdefault(spec.name, {"seeds": {}})
        corr = series(rows, "corr/length_acc_group")
        entry["seeds"][spec.seed] = {
            "eval_accuracy": evaluation[f"avg@{evaluation['num_samples']}"],
            "eval_length": evaluation["length"]["mean"],
            "train_length_last5": mean(series(rows, "length/mean")[-5:]),
            "train_length_first3": mean(series(rows, "length/mean")[:3]),
            "corr_group_first_half": mean(corr[: len(corr) // 2]),
            "corr_group_second_half": mean(corr[len(corr) // 2 :]),
        }
    for entry in settings.values():
        seeds = list(entry["seeds"].values())
        for key in seeds[0]:
            entry[f"mean_{key}"] = mean([s[key] for s in seeds])
    if "icr" in settings and "grpo" in settings:
        grpo, icr = settings["grpo"], settings["icr"]
        shorter = 1 - icr["mean_eval_length"] / grpo["mean_eval_length"]
        gap = icr["mean_eval_accuracy"] - grpo["mean_eval_accuracy"]
        settings["goal"] = {
            "icr_shorter_than_grpo": shorter,
            "icr_minus_grpo_accuracy": gap,
            "goal_met": shorter >= 0.25 and gap >= -0.02,
        }
    return settings


def fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def markdown(experiment: str, summary: dict) -> str:
    """The experiment's result table (bench/README.md quotes these files)."""
    if experiment == "entropy":
        lines = [
            "| setting | target | first 3 steps | second-half mean | rel. error / drop | goal | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, entry in summary.items():
            error = entry.get("mean_relative_error", entry.get("mean_entropy_drop"))
            lines.append(
                f"| {name} | {fmt(entry['target'])} | {fmt(entry['mean_first3_entropy'])} | "
                f"{fmt(entry['mean_second_half_mean'])} ± {fmt(entry['mean_second_half_std'])} | "
                f"{error:+.1%} | {entry['goal']} | {'yes' if entry['goal_met'] else 'no'} |"
            )
    elif experiment == "exploration":
        curves = summary["curves"]
        ks = list(curves["grpo"]["pass_at_k"])
        lines = ["| model | " + " | ".join(f"pass@{k}" for k in ks) + " |"]
        lines.append("|---|" + "---|" * len(ks))
        for label, entry in curves.items():
            values = " | ".join(fmt(entry["pass_at_k"].get(k)) for k in ks)
            lines.append(f"| {label} | {values} |")
        for label, goal in summary["goals"].items():
            lines.append("")
            lines.append(
                f"{label} ≥ GRPO at the goal k: {'yes' if goal['goal_met'] else 'no'} ({goal})"
            )
    else:
        lines = [
            "| setting | held-out avg@n | held-out length | train length first 3 → last 5 | "
            "corr (group) 1st half → 2nd half |",
            "|---|---|---|---|---|",
        ]
        for name, entry in summary.items():
            if name == "goal":
                continue
            lines.append(
                f"| {name} | {fmt(entry['mean_eval_accuracy'])} | {fmt(entry['mean_eval_length'], 1)} | "
                f"{fmt(entry['mean_train_length_first3'], 1)} → {fmt(entry['mean_train_length_last5'], 1)} | "
                f"{fmt(entry['mean_corr_group_first_half'])} → {fmt(entry['mean_corr_group_second_half'])} |"
            )
        if "goal" in summary:
            goal = summary["goal"]
            lines.append("")
            lines.append(
                f"ICR vs GRPO: {goal['icr_shorter_than_grpo']:+.1%} shorter, accuracy "
                f"{goal['icr_minus_grpo_accuracy']:+.3f}; goal (≥ 25% shorter, within 2 points) met: "
                f"{'yes' if goal['goal_met'] else 'no'}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment", choices=["entropy", "exploration", "compression", "all"], default="all"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only", default=None, help="regular expression: train/report only settings it matches"
    )
    parser.add_argument("--eval-problems", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=64, help="n of pass@k (k ≤ n)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--runs", type=Path, default=REPO / "runs" / "bench", help="run directories (large)"
    )
    args = parser.parse_args(argv)

    from dcrl.report import build_report

    root = args.runs
    root.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    experiments = (
        ["entropy", "exploration", "compression"] if args.experiment == "all" else [args.experiment]
    )
    chosen = re.compile(args.only) if args.only else None
    all_of = {
        "entropy": entropy_specs,
        "exploration": exploration_specs,
        "compression": compression_specs,
    }
    specs_of = {
        name: (lambda seeds, f=f: [s for s in f(seeds) if chosen is None or chosen.search(s.name)])
        for name, f in all_of.items()
    }
    all_specs = list(dict.fromkeys(s for e in experiments for s in specs_of[e](args.seeds)))
    run_all([(train_one, (s, root, args.steps)) for s in all_specs], args.workers, "training")

    to_evaluate = [
        s
        for e in experiments
        if e in ("exploration", "compression")
        for s in specs_of[e](args.seeds)
    ]
    to_evaluate = list(dict.fromkeys(to_evaluate))
    base_dir = root / "base" / EVAL_DIR
    sizes = (args.eval_problems, args.eval_samples)
    jobs = (
        [(evaluate_one, ("tiny-arith", base_dir, 1, *sizes))]
        if "exploration" in experiments
        else []
    )
    jobs += [
        (
            evaluate_one,
            (str(s.run_dir(root)), s.run_dir(root) / EVAL_DIR, s.seed, *sizes),
        )
        for s in to_evaluate
    ]
    evaluations = run_all(jobs, args.workers, "evaluating") if jobs else []

    command = "python bench/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for experiment in experiments:
        specs = specs_of[experiment](args.seeds)
        run_dirs = sorted({str(s.run_dir(root)) for s in specs})
        report = build_report(
            run_dirs, root / f"{experiment}_report", title=f"dcrl bench: {experiment}"
        )
        figures = copy_figures(report, args.out, experiment)
        if experiment == "entropy":
            summary = summarize_entropy(specs, root)
        elif experiment == "exploration":
            summary = summarize_exploration(specs, root, evaluations[0])
        else:
            summary = summarize_compression(specs, root)
        record = {
            "experiment": experiment,
            "command": command.strip(),
            "seeds": args.seeds,
            "steps": args.steps,
            "figures": figures,
            "summary": summary,
        }
        (args.out / f"{experiment}.json").write_text(json.dumps(record, indent=1))
        (args.out / f"{experiment}.md").write_text(
            f"<!-- made by: {record['command']} -->\n" + markdown(experiment, summary)
        )
        print(f"{experiment}: {args.out / (experiment + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
