"""`dcrl demo`: the embedded default. GRPO, AEPO, DCPO and ICR post-train the shipped tiny policy
on the exploration testbed (docs/testbed.md), each is evaluated on the held-out split (half plain
problems, half traps, reported per kind), and the runs are drawn side by side — the papers'
claims in miniature, on a laptop CPU, with nothing downloaded.

The runs use the packaged recipes explore-{grpo,aepo,dcpo,icr} (dcrl/recipes/, found through
dcrl.train.recipes as any `dcrl train -c NAME` is), so what the demo shows is what
`dcrl train -c explore-<algo>` does. A demo interrupted half-way picks up where
it was: finished runs are kept, an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from dcrl.errors import UserError

DEMO_ALGORITHMS = ("grpo", "aepo", "dcpo", "icr")
RECIPE_PREFIX = "explore"  # the packaged recipes explore-<algorithm>
GROUP_BY = "kind"  # the held-out split's plain / trap problems, reported apart
# Goals of the closing tables: GRPO's entropy falls by at least this much over the run; a
# controlled run's second-half RMS distance from its target is at most this share of the target.
GRPO_DROP_GOAL = 0.4
RMS_GOAL = 0.1


@dataclass
class DemoSettings:
    out_dir: Path = Path("runs/demo")
    algorithms: tuple[str, ...] = DEMO_ALGORITHMS
    steps: int | None = None  # None: the recipes' own
    seed: int = 1
    eval_problems: int = 200
    eval_samples: int = 16
    overrides: tuple[str, ...] = ()


def recipe_path(algorithm: str) -> Path:
    """The packaged recipe the demo trains `algorithm` with."""
    from dcrl.train.recipes import recipe_path as packaged

    return packaged(f"{RECIPE_PREFIX}-{algorithm}")


def _train(algorithm: str, settings: DemoSettings, console: Console) -> Path:
    """Train one algorithm (or finish / reuse its run) and return its run directory."""
    from dcrl.train import checkpoint
    from dcrl.train.config import load_run_config
    from dcrl.train.trainer import Trainer

    run_dir = settings.out_dir / algorithm
    overrides = [
        f"log.output_dir={run_dir}",
        f"train.seed={settings.seed}",
        "log.tensorboard=false",
        *settings.overrides,
    ]
    if settings.steps is not None:
        overrides.append(f"train.steps={settings.steps}")
    config = load_run_config(recipe_path(algorithm), overrides)
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is not None and (run_dir / "policy" / "config.json").is_file():
        done = json.loads((latest / "trainer_state.json").read_text())["step"]
        if done >= config.train.steps:
            console.print(f"[bold]{algorithm}[/]: already trained ({run_dir}), reusing it")
            return run_dir
    console.rule(f"[bold]{algorithm}[/]  {config.train.steps} steps  ({recipe_path(algorithm)})")
    trainer = Trainer(config, resume=latest is not None)
    trainer.fit()
    return run_dir


def _recipe(algorithm: str, settings: DemoSettings) -> dict:
    """The recipe of `algorithm` with the demo's overrides, as a plain dict."""
    from dcrl.config import to_dict
    from dcrl.train.config import load_run_config

    return to_dict(load_run_config(recipe_path(algorithm), list(settings.overrides)))


def _evaluate(
    model: str | Path, out_dir: Path, settings: DemoSettings, label: str, recipe: dict
) -> dict:
    """Held-out evaluation at T = 1 (and greedy) on the recipe's task, written to out_dir."""
    from dcrl.eval import evaluate, load_eval_data

    data = load_eval_data(None, run_config=recipe, limit=settings.eval_problems)
    result = evaluate(
        model,
        data.problems,
        data.reward_fn,
        n=settings.eval_samples,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=recipe["rollout"]["max_new_tokens"],
        seed=settings.seed,
        out_dir=out_dir,
        template=data.template,
        greedy=True,
        problems_per_call=50,
        model_label=label,
        data_label=data.label,
        group_by=GROUP_BY,
        decoding="generate",  # the decoder the README's numbers were drawn with
    )
    return result.metrics


def composes_no_target(run_dir: Path) -> bool:
    """Whether the run trained the base estimator alone (GRPO, whatever its directory is called):
    its algorithm, rebuilt from its config.yaml through the registries, composes no target. False
    when the config is missing or no longer builds."""
    from dcrl.algorithms import make_algorithm
    from dcrl.train.config import load_run_config
    from dcrl.train.step import targets_of

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        return False
    try:
        algorithm = make_algorithm(load_run_config(config_path).algorithm)
    except (UserError, ValueError):
        return False
    return not targets_of(algorithm)


def entropy_control_table(run_dirs: list[Path]) -> tuple[list[tuple[str, str]], list[dict]]:
    """What the demo is for, in numbers: per run, the policy's sampled-token entropy (rows a
    target swapped in left out) of its first 3 steps and the mean over its second half; for a run
    that logged a target entropy, its second-half RMS distance from it relative to the target
    (goal: at most RMS_GOAL); for a run of the base estimator alone (no target, so no
    controller: GRPO), its drop (goal: at least GRPO_DROP_GOAL). Other runs have no row."""
    from dcrl.report.runs import load_run

    columns = [
        ("run", "run"),
        ("first_3", "first 3 steps"),
        ("second_half", "second-half mean"),
        ("target", "target"),
        ("change", "drop / RMS error"),
        ("goal", "goal"),
        ("met", "met"),
    ]
    rows = []
    for run_dir in run_dirs:
        run = load_run(run_dir)  # one read of metrics.jsonl, as `dcrl report` reads it
        entropy = run.metrics.get("entropy/on_policy_nll")  # AEPO's tempered rows left out
        if entropy is None or len(entropy) < 4:
            continue
        head, tail = float(entropy[:3].mean()), float(entropy[len(entropy) // 2 :].mean())
        target = float(run.metrics["entropy/target"][-1]) if run.has("entropy/target") else None
        row = {"run": run_dir.name, "first_3": round(head, 3), "second_half": round(tail, 3)}
        if target is not None:
            rms = run.tracking_error()  # the report's "H RMS err"
            row |= {"target": target, "change": f"{rms:.1%}", "goal": f"<= {RMS_GOAL:.0%}"}
            row["met"] = "yes" if rms <= RMS_GOAL else "no"
        elif composes_no_target(run_dir):
            drop = 1 - tail / head
            row |= {"target": "", "change": f"-{drop:.1%}", "goal": f">= {GRPO_DROP_GOAL:.0%} drop"}
            row["met"] = "yes" if drop >= GRPO_DROP_GOAL else "no"
        else:
            continue
        rows.append(row)
    return columns, rows


def per_kind_table(evaluations: dict[str, dict]) -> tuple[list[tuple[str, str]], list[dict]]:
    """Held-out accuracy per problem kind: avg@n and pass@n of each model on plain problems and
    on traps (where the common strategy fails, so exploring pays), from `dcrl eval` metrics
    grouped by kind."""
    columns = [("model", "model")]
    rows = []
    for label, metrics in evaluations.items():
        n = metrics["settings"]["n"]
        row = {"model": label, "avg_at_n": metrics[f"avg@{n}"]}
        groups = (metrics.get("by_group") or {}).get("groups", {})
        for kind in sorted(groups):
            row[f"{kind}_avg"] = groups[kind][f"avg@{n}"]
            row[f"{kind}_pass"] = groups[kind]["pass@k"].get(str(n))
        rows.append(row)
    kinds = sorted({key[: -len("_avg")] for row in rows for key in row if key.endswith("_avg")})
    columns.append(("avg_at_n", "avg@n (all)"))
    for kind in kinds:
        columns += [(f"{kind}_avg", f"{kind} avg@n"), (f"{kind}_pass", f"{kind} pass@n")]
    return columns, rows


def run_demo(settings: DemoSettings) -> Path:
    """Train, evaluate and report; returns the report's HTML path."""
    from dcrl.eval.table import EVAL_COLUMNS, eval_row, print_table, write_table
    from dcrl.report import build_report
    from dcrl.report.runs import load_runs, summary_table

    console = Console()
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    eval_name = f"eval-test-n{settings.eval_samples}"
    rows = []
    base = _recipe(settings.algorithms[0], settings)
    base_name = base["model"]["name"]
    base_metrics = _evaluate(
        base_name, settings.out_dir / "base" / eval_name, settings, "base", base
    )
    rows.append(eval_row(f"{base_name} (before RL)", base_metrics))
    evaluations = {f"{base_name} (before RL)": base_metrics}
    run_dirs = []
    for algorithm in settings.algorithms:
        run_dir = _train(algorithm, settings, console)
        run_dirs.append(run_dir)
        console.print(f"evaluating {algorithm} on the held-out split ...")
        recipe = _recipe(algorithm, settings)
        metrics = _evaluate(run_dir, run_dir / eval_name, settings, algorithm, recipe)
        rows.append(eval_row(algorithm, metrics))
        evaluations[algorithm] = metrics

    report = build_report(run_dirs, settings.out_dir / "report", title="dcrl demo")
    columns, training_rows = summary_table(load_runs(run_dirs))
    print_table("training (mean of the last 10% of steps)", columns, training_rows)
    print_table("held-out evaluation (T = 1)", EVAL_COLUMNS, rows)
    control_columns, control_rows = entropy_control_table(run_dirs)
    print_table(
        "entropy control (the policy's sampled-token entropy, nats/token)",
        control_columns,
        control_rows,
    )
    kind_columns, kind_rows = per_kind_table(evaluations)
    print_table("held-out accuracy per problem kind (T = 1)", kind_columns, kind_rows)
    write_table(
        kind_columns,
        kind_rows,
        settings.out_dir / "eval_by_kind.csv",
        settings.out_dir / "eval_by_kind.md",
    )
    write_table(
        control_columns,
        control_rows,
        settings.out_dir / "entropy_control.csv",
        settings.out_dir / "entropy_control.md",
    )
    write_table(
        EVAL_COLUMNS,
        rows,
        settings.out_dir / "eval_summary.csv",
        settings.out_dir / "eval_summary.md",
    )
    write_table(
        columns,
        training_rows,
        settings.out_dir / "training_summary.csv",
        settings.out_dir / "training_summary.md",
    )
    console.print(f"\nreport: {report}\nfigures: {report.parent / 'figures'}")
    return report
