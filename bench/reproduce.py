"""Miniature reproductions of the papers' claims on the embedded testbed (CPU).

    python bench/reproduce.py                         # every experiment, 3 seeds
    python bench/reproduce.py --experiment entropy --seeds 1 --steps 20    # a quick look

The testbed is the built-in `tiny-overthink` policy on 1-3 step arithmetic chains whose re-checks
can slip (configs/tiny-*.yaml): it starts unsharp (about 0.18 nats per sampled token) and
over-thinking (longer answers are more often wrong), so GRPO's entropy collapse and ICR's
compression have room to show.

Experiments (each writes bench/results/<experiment>.json, .md and figures, and its verdicts to
bench/results/claims.json as {claim, goal, value, met} rows):
- entropy: GRPO, and AEPO and DCPO at three target entropies (above the start, near it, below
  where GRPO ends), with the papers' bang-bang controller (T 1.2 / 0.8) and dcrl's PI controller
  (wider T band and authority over the regularizer's weight; the recipes' setting). Goals:
  GRPO's entropy falls >= 40%; second-half mean entropy within ±15% of the target (bang-bang) and
  within ±5% with a smaller standard deviation than bang-bang (PI).
- sweep: six target entropies held by dcrl's controller; held-out avg@n and pass@k against the
  entropy reached (AEPO's second claim: performance first rises, then falls, as the target
  entropy grows). The entropy is set with DCPO: on this testbed AEPO's heating stops near 0.12
  nats (see the entropy experiment), so it cannot reach the upper targets.
- exploration: DCPO (dcrl's controller, the middle target) against GRPO on the held-out split:
  avg@n and pass@16 with the seed spread. Goal: DCPO >= GRPO on both.
- compression: GRPO, LP-F, ICR and LP-F + ICR: accuracy, length and the per-group
  length-accuracy correlation over training. Goal: ICR >= 25% shorter than GRPO with held-out
  accuracy within 2 points.

Runs are trained with the recipes in configs/ plus the overrides below, in `--workers` processes
of one thread each; finished runs made with the same settings are reused (a run directory made
with other settings is trained again), so an interrupted reproduction resumes.
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
# Above the testbed's starting entropy (~0.18 nats per sampled token), near it, and below where
# GRPO ends after the bench's steps (~0.09 at 40 steps).
TARGETS = (0.22, 0.15, 0.07)
SWEEP_TARGETS = (0.07, 0.1, 0.13, 0.15, 0.19, 0.22)  # 0.07, 0.15, 0.22: the entropy runs
SWEEP_ALGORITHM = "dcpo"  # the one whose controller reaches all of them here
EXPLORATION_TARGET = 0.15
# The papers' code-faithful controller, and dcrl's (the recipes' own settings).
CONTROLLER_OVERRIDES = {
    "bang_bang": (
        "algorithm.controller=bang_bang",
        "algorithm.temperature_high=1.2",
        "algorithm.temperature_low=0.8",
        "algorithm.weight_max=null",
        "algorithm.initial_entropy=0.0",
        "algorithm.controller_options={}",
        "algorithm.entropy_signal=sampled_nll",
    ),
    "pi": (),
}
CONTROLLERS = tuple(CONTROLLER_OVERRIDES)
TOLERANCE = {"bang_bang": 0.15, "pi": 0.05}
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


def controlled(algorithm: str, target: float, controller: str, seed: int) -> RunSpec:
    return RunSpec(
        f"{algorithm}-H{target}-{controller}",
        algorithm,
        seed,
        (f"algorithm.target_entropy={target}", *CONTROLLER_OVERRIDES[controller]),
        target,
        controller,
    )


def entropy_specs(seeds: list[int]) -> list[RunSpec]:
    specs = [RunSpec("grpo", "grpo", s) for s in seeds]
    for algorithm in ("aepo", "dcpo"):
        for target in TARGETS:
            for controller in CONTROLLERS:
                specs += [controlled(algorithm, target, controller, seed) for seed in seeds]
    return specs


def sweep_specs(seeds: list[int]) -> list[RunSpec]:
    return [controlled(SWEEP_ALGORITHM, t, "pi", seed) for t in SWEEP_TARGETS for seed in seeds]


def exploration_specs(seeds: list[int]) -> list[RunSpec]:
    specs = [RunSpec("grpo", "grpo", s) for s in seeds]
    return specs + [controlled("dcpo", EXPLORATION_TARGET, "pi", s) for s in seeds]


def compression_specs(seeds: list[int]) -> list[RunSpec]:
    # LP-F: the DAPO soft overlong penalty at this task's scale, ramping from 16 to 32 tokens
    # (a concise level-3 answer is about 20 tokens; the policy starts near 27).
    lpf = ("algorithm.name=lp_f", "algorithm.max_length=32", "algorithm.buffer=16")
    specs = []
    for seed in seeds:
        specs += [
            RunSpec("grpo", "grpo", seed),
            RunSpec("lp_f", "grpo", seed, lpf),
            RunSpec("icr", "icr", seed, ("algorithm.lp_f=false",)),
            RunSpec(
                "lp_f+icr",
                "icr",
                seed,
                ("algorithm.lp_f=true", "algorithm.lp_f_max_length=32", "algorithm.lp_f_buffer=16"),
            ),
        ]
    return specs


def combined_specs(seeds: list[int]) -> list[RunSpec]:
    """DCPO (dcrl's controller at the middle target) and ICR (its recipe) alone, and composed in
    one run (configs/tiny-dcpo-icr.yaml: the same settings of each)."""
    specs = []
    for seed in seeds:
        specs += [
            controlled("dcpo", EXPLORATION_TARGET, "pi", seed),
            RunSpec("icr-recipe", "icr", seed),
            RunSpec("dcpo+icr", "dcpo-icr", seed, (), EXPLORATION_TARGET, "pi"),
        ]
    return specs


def same_settings(run_dir: Path, config: object) -> bool:
    """Whether the run in `run_dir` was made with `config`, all but its number of steps (a longer
    run resumes a shorter one) and how its directory was spelled. The saved config is read
    through today's loader, so a setting added since then counts at its default (the value the
    code had before it existed); one that no longer loads means the run is redone."""
    import yaml

    from dcrl.config import to_dict
    from dcrl.train.config import load_run_config

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return False
    try:
        saved_config = load_run_config(saved_path, [])
    except (ValueError, TypeError, KeyError):
        return False
    saved = yaml.safe_load(yaml.safe_dump(to_dict(saved_config), sort_keys=False))
    wanted = yaml.safe_load(yaml.safe_dump(to_dict(config), sort_keys=False))
    for settings in (saved, wanted):
        settings.get("train", {}).pop("steps", None)
        settings.get("log", {}).pop("output_dir", None)
    return saved == wanted


def logs_policy_entropy(run_dir: Path, recipe: str) -> bool:
    """False for an AEPO run logged before entropy/on_policy_nll existed: its sampled-token NLL
    mixes in the tempered REINFORCE rows, so it is not the policy's entropy (other algorithms
    add no such rows, so their older logs are exact)."""
    log = run_dir / "metrics.jsonl"
    if recipe != "aepo" or not log.is_file():
        return True
    rows = metrics_of(run_dir)
    return not rows or "entropy/on_policy_nll" in rows[0]


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
    if run_dir.exists() and not (
        same_settings(run_dir, config) and logs_policy_entropy(run_dir, spec.recipe)
    ):
        shutil.rmtree(run_dir)  # trained with other recipes (e.g. an older testbed): redo it
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is not None:
        done = json.loads((latest / "trainer_state.json").read_text())["step"]
        if done >= steps and (run_dir / "policy" / "config.json").is_file():
            return str(run_dir)
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # died before its first checkpoint: start over
    Trainer(config, resume=latest is not None).fit()
    return str(run_dir)


def recipe(name: str = "grpo") -> dict:
    """The recipe configs/tiny-<name>.yaml as a plain dict (its data and rollout settings)."""
    from dcrl.config import to_dict
    from dcrl.train.config import load_run_config

    return to_dict(load_run_config(REPO / "configs" / f"tiny-{name}.yaml", []))


def evaluate_one(model: str, out_dir: Path, seed: int, problems: int, samples: int) -> dict:
    """Held-out avg@n / pass@k at T = 1 on the recipes' task (its test split)."""
    import torch

    torch.set_num_threads(1)
    from dcrl.eval import evaluate, load_eval_data

    config = recipe()
    data = load_eval_data(None, run_config=config, limit=problems)
    result = evaluate(
        model,
        data.problems,
        data.reward_fn,
        n=samples,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=config["rollout"]["max_new_tokens"],
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
    from dcrl.train.sinks import read_metrics_log

    return [record for _, record in read_metrics_log(run_dir / "metrics.jsonl")]


def mean(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def spread(values: list[float]) -> float:
    """Standard deviation over seeds (population; 0 for one seed)."""
    values = [v for v in values if v is not None]
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def series(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def entropy_series(rows: list[dict]) -> list[float]:
    """The policy's own sampled-token entropy per step (AEPO's tempered rows left out)."""
    from dcrl.train.sinks import policy_entropy

    return [v for v in map(policy_entropy, rows) if v is not None]


def copy_figures(report_html: Path, out: Path, prefix: str) -> list[str]:
    names = []
    for figure in sorted((report_html.parent / "figures").glob("*.png")):
        target = out / f"{prefix}_{figure.name}"
        shutil.copyfile(figure, target)
        names.append(target.name)
    return names


def summarize_entropy(specs: list[RunSpec], root: Path) -> dict:
    settings: dict[str, dict] = {}
    for spec in specs:
        rows = metrics_of(spec.run_dir(root))
        values = entropy_series(rows)
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
            entry[f"spread_{key}"] = spread([s[key] for s in seeds])
    for name, entry in settings.items():
        if entry["target"] is None:
            entry["goal"] = "entropy drop >= 40%"
            entry["goal_met"] = entry["mean_entropy_drop"] >= 0.40
            continue
        tolerance = TOLERANCE[entry["controller"]]
        entry["goal"] = f"|relative error| <= {tolerance:.0%}"
        entry["goal_met"] = abs(entry["mean_relative_error"]) <= tolerance
        papers = settings.get(name.replace(f"-{entry['controller']}", "-bang_bang"))
        if entry["controller"] != "bang_bang" and papers is not None:
            entry["goal"] += " and std < bang-bang's"
            entry["goal_met"] = bool(
                entry["goal_met"] and entry["mean_second_half_std"] < papers["mean_second_half_std"]
            )
    return settings


def summarize_sweep(specs: list[RunSpec], root: Path) -> dict:
    """Held-out accuracy and pass@k against the target entropy (AEPO's second claim)."""
    points: dict[float, dict] = {}
    for spec in specs:
        metrics = json.loads((spec.run_dir(root) / EVAL_DIR / "metrics.json").read_text())
        values = entropy_series(metrics_of(spec.run_dir(root)))
        point = points.setdefault(spec.target, {"seeds": {}})
        point["seeds"][spec.seed] = {
            "avg_at_n": metrics[f"avg@{metrics['num_samples']}"],
            "pass_at_16": metrics["pass@k"].get(
                "16", metrics["pass@k"][max(metrics["pass@k"], key=int)]
            ),
            "second_half_entropy": mean(values[len(values) // 2 :]),
        }
    for point in points.values():
        seeds = list(point["seeds"].values())
        for key in seeds[0]:
            point[f"mean_{key}"] = mean([s[key] for s in seeds])
            point[f"spread_{key}"] = spread([s[key] for s in seeds])
    targets = sorted(points)
    accuracies = [points[t]["mean_avg_at_n"] for t in targets]
    best = max(range(len(targets)), key=accuracies.__getitem__)
    shape = {
        "best_target": targets[best],
        "rises_then_falls": 0 < best < len(targets) - 1,
    }
    return {"points": {str(t): points[t] for t in targets}, "shape": shape}


def summarize_exploration(specs: list[RunSpec], root: Path, base: dict) -> dict:
    curves: dict[str, dict] = {"pretrained": {"pass_at_k": base["pass@k"], "avg_at_n": None}}
    for spec in specs:
        metrics = json.loads((spec.run_dir(root) / EVAL_DIR / "metrics.json").read_text())
        entry = curves.setdefault(spec.name.split("-")[0], {"seeds": {}})
        entry["seeds"][spec.seed] = {
            "pass_at_k": metrics["pass@k"],
            "avg_at_n": metrics[f"avg@{metrics['num_samples']}"],
        }
    curves["pretrained"]["avg_at_n"] = base[f"avg@{base['num_samples']}"]
    for entry in curves.values():
        if "seeds" in entry:
            seeds = list(entry["seeds"].values())
            ks = seeds[0]["pass_at_k"].keys()
            entry["pass_at_k"] = {k: mean([s["pass_at_k"][k] for s in seeds]) for k in ks}
            entry["pass_at_k_spread"] = {k: spread([s["pass_at_k"][k] for s in seeds]) for k in ks}
            entry["avg_at_n"] = mean([s["avg_at_n"] for s in seeds])
            entry["avg_at_n_spread"] = spread([s["avg_at_n"] for s in seeds])
    ks = [int(k) for k in curves["grpo"]["pass_at_k"]]
    k_goal = str(16 if 16 in ks else max(ks))  # pass@16, or the largest k of a quick run
    dcpo, grpo = curves.get("dcpo"), curves["grpo"]
    goals = {}
    if dcpo is not None:
        goals = {
            "k": k_goal,
            "dcpo_pass_at_k": dcpo["pass_at_k"][k_goal],
            "grpo_pass_at_k": grpo["pass_at_k"][k_goal],
            "dcpo_avg_at_n": dcpo["avg_at_n"],
            "grpo_avg_at_n": grpo["avg_at_n"],
            "goal_met": dcpo["pass_at_k"][k_goal] >= grpo["pass_at_k"][k_goal]
            and dcpo["avg_at_n"] >= grpo["avg_at_n"],
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


def summarize_combined(specs: list[RunSpec], root: Path) -> dict:
    """Entropy, held-out accuracy and length of DCPO, ICR and DCPO + ICR (issue: entropy held at
    its target while the length falls, accuracy within 2 points of each alone)."""
    settings: dict[str, dict] = {}
    for spec in specs:
        run_dir = spec.run_dir(root)
        rows = metrics_of(run_dir)
        evaluation = json.loads((run_dir / EVAL_DIR / "metrics.json").read_text())
        entropy = entropy_series(rows)
        record = {
            "second_half_entropy": mean(entropy[len(entropy) // 2 :]),
            "eval_accuracy": evaluation[f"avg@{evaluation['num_samples']}"],
            "eval_length": evaluation["length"]["mean"],
            "train_length_first3": mean(series(rows, "length/mean")[:3]),
            "train_length_last5": mean(series(rows, "length/mean")[-5:]),
        }
        if spec.target is not None:
            record["relative_error"] = record["second_half_entropy"] / spec.target - 1
        entry = settings.setdefault(spec.name, {"target": spec.target, "seeds": {}})
        entry["seeds"][spec.seed] = record
    for entry in settings.values():
        seeds = list(entry["seeds"].values())
        for key in seeds[0]:
            entry[f"mean_{key}"] = mean([s[key] for s in seeds])
            entry[f"spread_{key}"] = spread([s[key] for s in seeds])
    both = settings.get("dcpo+icr")
    dcpo = settings.get(f"dcpo-H{EXPLORATION_TARGET}-pi")
    icr = settings.get("icr-recipe")
    if both and dcpo and icr:
        error = both["mean_relative_error"]
        shorter = 1 - both["mean_eval_length"] / dcpo["mean_eval_length"]
        gaps = {
            "vs_dcpo": both["mean_eval_accuracy"] - dcpo["mean_eval_accuracy"],
            "vs_icr": both["mean_eval_accuracy"] - icr["mean_eval_accuracy"],
        }
        settings["goal"] = {
            "relative_error": error,
            "shorter_than_dcpo": shorter,
            "accuracy_gaps": gaps,
            "goal_met": abs(error) <= TOLERANCE["pi"]
            and shorter > 0
            and all(abs(g) <= 0.02 for g in gaps.values()),
        }
    return settings


def escape_cell(text: str) -> str:
    """Text for a markdown table cell: a literal | would end the cell."""
    return text.replace("|", "\\|")


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
            key = "relative_error" if "mean_relative_error" in entry else "entropy_drop"
            lines.append(
                f"| {name} | {fmt(entry['target'])} | {fmt(entry['mean_first3_entropy'])} | "
                f"{fmt(entry['mean_second_half_mean'])} ± {fmt(entry['mean_second_half_std'])} | "
                f"{'drop ' if key == 'entropy_drop' else ''}{entry['mean_' + key]:+.1%} "
                f"(seeds ± {entry['spread_' + key]:.1%}) | "
                f"{escape_cell(entry['goal'])} | {'yes' if entry['goal_met'] else 'no'} |"
            )
        lines.append("")
        lines.append(
            "second-half mean ± its standard deviation over the steps (the oscillation), averaged "
            "over seeds; rel. error / drop ± its standard deviation over seeds."
        )
    elif experiment == "exploration":
        curves = summary["curves"]
        ks = list(curves["grpo"]["pass_at_k"])
        lines = ["| model | avg@n | " + " | ".join(f"pass@{k}" for k in ks) + " |"]
        lines.append("|---|---|" + "---|" * len(ks))
        for label, entry in curves.items():
            spreads = entry.get("pass_at_k_spread", {})
            values = " | ".join(
                fmt(entry["pass_at_k"].get(k)) + (f" ± {fmt(spreads[k])}" if k in spreads else "")
                for k in ks
            )
            avg = fmt(entry["avg_at_n"]) + (
                f" ± {fmt(entry['avg_at_n_spread'])}" if "avg_at_n_spread" in entry else ""
            )
            lines.append(f"| {label} | {avg} | {values} |")
        goal = summary["goals"]
        if goal:
            lines.append("")
            lines.append(
                f"DCPO vs GRPO: avg@n {fmt(goal['dcpo_avg_at_n'])} vs {fmt(goal['grpo_avg_at_n'])}, "
                f"pass@{goal['k']} {fmt(goal['dcpo_pass_at_k'])} vs {fmt(goal['grpo_pass_at_k'])}; "
                f"goal (DCPO >= GRPO on both) met: {'yes' if goal['goal_met'] else 'no'} "
                "(± is the standard deviation over seeds)"
            )
    elif experiment == "sweep":
        lines = [
            "| target | second-half entropy | held-out avg@n | held-out pass@16 |",
            "|---|---|---|---|",
        ]
        for target, point in summary["points"].items():
            lines.append(
                f"| {target} | {fmt(point['mean_second_half_entropy'])} ± "
                f"{fmt(point['spread_second_half_entropy'])} | {fmt(point['mean_avg_at_n'])} ± "
                f"{fmt(point['spread_avg_at_n'])} | {fmt(point['mean_pass_at_16'])} ± "
                f"{fmt(point['spread_pass_at_16'])} |"
            )
        shape = summary["shape"]
        lines.append("")
        lines.append(
            f"Best held-out accuracy at target {shape['best_target']}; rises then falls: "
            f"{'yes' if shape['rises_then_falls'] else 'no'} (± is the standard deviation over seeds)"
        )
    elif experiment == "combined":
        lines = [
            "| setting | target | second-half entropy | held-out avg@n | held-out length | "
            "train length first 3 → last 5 |",
            "|---|---|---|---|---|---|",
        ]
        for name, entry in summary.items():
            if name == "goal":
                continue
            lines.append(
                f"| {name} | {fmt(entry['target'])} | {fmt(entry['mean_second_half_entropy'])} ± "
                f"{fmt(entry['spread_second_half_entropy'])} | {fmt(entry['mean_eval_accuracy'])} ± "
                f"{fmt(entry['spread_eval_accuracy'])} | {fmt(entry['mean_eval_length'], 1)} | "
                f"{fmt(entry['mean_train_length_first3'], 1)} → "
                f"{fmt(entry['mean_train_length_last5'], 1)} |"
            )
        if "goal" in summary:
            goal = summary["goal"]
            lines.append("")
            lines.append(
                f"DCPO + ICR: entropy {goal['relative_error']:+.1%} from its target, held-out "
                f"answers {goal['shorter_than_dcpo']:+.1%} shorter than DCPO alone, accuracy "
                f"{goal['accuracy_gaps']['vs_dcpo']:+.3f} vs DCPO and "
                f"{goal['accuracy_gaps']['vs_icr']:+.3f} vs ICR; goal (within ±5%, shorter, "
                f"within 2 points of each) met: {'yes' if goal['goal_met'] else 'no'} "
                "(± is the standard deviation over seeds)"
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


def claims(experiment: str, summary: dict) -> list[dict]:
    """The experiment's verdicts as {claim, goal, value, met} rows (bench/results/claims.json)."""
    rows = []
    if experiment == "entropy":
        for name, entry in summary.items():
            if entry["target"] is None:
                rows.append(
                    {
                        "claim": f"entropy: {name} collapses the entropy",
                        "goal": "last 3 steps >= 40% below the first 3 (mean of seeds)",
                        "value": round(entry["mean_entropy_drop"], 4),
                        "met": bool(entry["goal_met"]),
                    }
                )
            else:
                rows.append(
                    {
                        "claim": f"entropy: {name} holds its target {entry['target']}",
                        "goal": entry["goal"] + " (second-half mean, mean of seeds)",
                        "value": round(entry["mean_relative_error"], 4),
                        "met": bool(entry["goal_met"]),
                    }
                )
    elif experiment == "sweep":
        shape = summary["shape"]
        rows.append(
            {
                "claim": "sweep: held-out avg@n first rises then falls with the target entropy "
                f"(AEPO's claim; entropy held by {SWEEP_ALGORITHM.upper()})",
                "goal": "the best target is neither the lowest nor the highest of "
                + ", ".join(summary["points"]),
                "value": shape["best_target"],
                "met": bool(shape["rises_then_falls"]),
            }
        )
    elif experiment == "exploration" and summary["goals"]:
        goal = summary["goals"]
        rows.append(
            {
                "claim": "exploration: DCPO >= GRPO on the held-out split",
                "goal": f"avg@n and pass@{goal['k']} >= GRPO's (means of seeds)",
                "value": {
                    "avg_at_n": [round(goal["dcpo_avg_at_n"], 4), round(goal["grpo_avg_at_n"], 4)],
                    f"pass_at_{goal['k']}": [
                        round(goal["dcpo_pass_at_k"], 4),
                        round(goal["grpo_pass_at_k"], 4),
                    ],
                },
                "met": bool(goal["goal_met"]),
            }
        )
    elif experiment == "combined" and "goal" in summary:
        goal = summary["goal"]
        rows.append(
            {
                "claim": "combined: DCPO + ICR holds the entropy target while compressing",
                "goal": "entropy within ±5% of the target, held-out answers shorter than DCPO "
                "alone, accuracy within 2 points of DCPO alone and of ICR alone",
                "value": {
                    "relative_error": round(goal["relative_error"], 4),
                    "shorter_than_dcpo": round(goal["shorter_than_dcpo"], 4),
                    "accuracy_gaps": {k: round(v, 4) for k, v in goal["accuracy_gaps"].items()},
                },
                "met": bool(goal["goal_met"]),
            }
        )
    elif experiment == "compression" and "goal" in summary:
        goal = summary["goal"]
        rows.append(
            {
                "claim": "compression: ICR is shorter than GRPO at the same accuracy",
                "goal": ">= 25% shorter held-out answers, accuracy within 2 points",
                "value": {
                    "shorter": round(goal["icr_shorter_than_grpo"], 4),
                    "accuracy_difference": round(goal["icr_minus_grpo_accuracy"], 4),
                },
                "met": bool(goal["goal_met"]),
            }
        )
    return rows


def write_claims(path: Path, experiment: str, rows: list[dict], command: str) -> None:
    """Replace this experiment's rows in claims.json, keeping the other experiments' rows."""
    existing = json.loads(path.read_text()) if path.is_file() else []
    kept = [r for r in existing if not r["claim"].startswith(f"{experiment}:")]
    path.write_text(json.dumps(kept + [{**r, "command": command} for r in rows], indent=1))


def entropy_figure(specs: list[RunSpec], root: Path, summary: dict, out: Path) -> str:
    """Entropy vs step per algorithm × controller: each target's seed mean with its band
    (min-max over seeds), the target's tolerance band, and GRPO for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curves(name: str) -> tuple[list[int], list[float], list[float], list[float]]:
        runs = [entropy_series(metrics_of(s.run_dir(root))) for s in specs if s.name == name]
        length = min(len(r) for r in runs)
        columns = [[r[i] for r in runs] for i in range(length)]
        return (
            list(range(1, length + 1)),
            [statistics.fmean(c) for c in columns],
            [min(c) for c in columns],
            [max(c) for c in columns],
        )

    algorithms = sorted({s.recipe for s in specs if s.target is not None})
    fig, axes = plt.subplots(
        len(algorithms),
        len(CONTROLLERS),
        figsize=(5 * len(CONTROLLERS), 3.4 * len(algorithms)),
        squeeze=False,
        sharey=True,
    )
    colors = dict(zip(TARGETS, ("tab:red", "tab:green", "tab:blue"), strict=False))
    for row, algorithm in enumerate(algorithms):
        for col, controller in enumerate(CONTROLLERS):
            axis = axes[row][col]
            if "grpo" in summary:
                steps, middle, low, high = curves("grpo")
                axis.plot(steps, middle, color="gray", label="grpo")
                axis.fill_between(steps, low, high, color="gray", alpha=0.15)
            for target in TARGETS:
                name = f"{algorithm}-H{target}-{controller}"
                if name not in summary:
                    continue
                color = colors.get(target, "black")
                tolerance = TOLERANCE[controller]
                axis.axhspan(
                    target * (1 - tolerance), target * (1 + tolerance), color=color, alpha=0.12
                )
                axis.axhline(target, color=color, linestyle=":", linewidth=1)
                steps, middle, low, high = curves(name)
                axis.plot(steps, middle, color=color, label=f"target {target}")
                axis.fill_between(steps, low, high, color=color, alpha=0.2)
            axis.set_title(f"{algorithm}, {controller} (band ±{TOLERANCE[controller]:.0%})")
            axis.set_xlabel("step")
            axis.set_ylabel("policy entropy (on-policy NLL, nats/token)")
            axis.legend(fontsize=7)
    fig.tight_layout()
    name = "entropy_vs_target.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def sweep_figure(summary: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(summary["points"].values())
    reached = [p["mean_second_half_entropy"] for p in points]
    fig, axis = plt.subplots(figsize=(5, 3.4))
    for key, label in (("avg_at_n", "avg@n"), ("pass_at_16", "pass@16")):
        axis.errorbar(
            reached,
            [p[f"mean_{key}"] for p in points],
            yerr=[p[f"spread_{key}"] for p in points],
            marker="o",
            capsize=3,
            label=label,
        )
    accuracy = [p["mean_avg_at_n"] for p in points]
    for target, x, y in zip(summary["points"], reached, accuracy, strict=True):
        axis.annotate(f"H*={target}", (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7)
    axis.set_xlabel(f"{SWEEP_ALGORITHM.upper()}'s second-half entropy (nats/token)")
    axis.set_ylabel("held-out")
    axis.legend()
    fig.tight_layout()
    name = "sweep_accuracy_vs_target.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment",
        choices=["entropy", "sweep", "exploration", "compression", "combined", "all"],
        default="all",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only", default=None, help="regular expression: train/report only settings it matches"
    )
    parser.add_argument("--eval-problems", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=32, help="n of pass@k (k ≤ n)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--runs", type=Path, default=REPO / "runs" / "bench", help="run directories (large)"
    )
    args = parser.parse_args(argv)

    from dcrl.report import build_report

    root = args.runs
    root.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    all_of = {
        "entropy": entropy_specs,
        "sweep": sweep_specs,
        "exploration": exploration_specs,
        "compression": compression_specs,
        "combined": combined_specs,
    }
    experiments = list(all_of) if args.experiment == "all" else [args.experiment]
    chosen = re.compile(args.only) if args.only else None
    specs_of = {
        name: (lambda seeds, f=f: [s for s in f(seeds) if chosen is None or chosen.search(s.name)])
        for name, f in all_of.items()
    }
    all_specs = list(dict.fromkeys(s for e in experiments for s in specs_of[e](args.seeds)))
    run_all([(train_one, (s, root, args.steps)) for s in all_specs], args.workers, "training")

    to_evaluate = [
        s
        for e in experiments
        if e in ("sweep", "exploration", "compression", "combined")
        for s in specs_of[e](args.seeds)
    ]
    to_evaluate = list(dict.fromkeys(to_evaluate))
    base_dir = root / "base" / EVAL_DIR
    sizes = (args.eval_problems, args.eval_samples)
    jobs = (
        [(evaluate_one, (recipe()["model"]["name"], base_dir, 1, *sizes))]
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
            figures.append(entropy_figure(specs, root, summary, args.out))
        elif experiment == "sweep":
            summary = summarize_sweep(specs, root)
            figures.append(sweep_figure(summary, args.out))
        elif experiment == "exploration":
            summary = summarize_exploration(specs, root, evaluations[0])
        elif experiment == "combined":
            summary = summarize_combined(specs, root)
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
        write_claims(
            args.out / "claims.json", experiment, claims(experiment, summary), record["command"]
        )
        print(f"{experiment}: {args.out / (experiment + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
