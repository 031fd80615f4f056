"""Miniature reproductions of the papers' claims on a small testbed (CPU).

    python bench/reproduce.py                         # every experiment, 3 seeds, explore testbed
    python bench/reproduce.py --experiment entropy --seeds 1 --steps 20    # a quick look
    python bench/reproduce.py --experiment all --seeds 4 5 6               # other seeds
    python bench/reproduce.py --testbed overthink --experiment entropy     # the first testbed

Testbeds (bench/experiments/common.py):
- overthink: the built-in `tiny-overthink` policy on 1-3 step arithmetic chains
  whose re-checks can slip (dcrl/recipes/tiny-*.yaml): it starts unsharp (about 0.18 nats per sampled
  token) and over-thinking (longer answers are more often wrong), so GRPO's entropy collapse and
  ICR's compression have room to show. Results in bench/results/.
- explore (the default): the `tiny-explore` policy on the `explore` task (dcrl/recipes/explore-*.yaml), whose
  held-out problems are "plain" or "trap" (meta["kind"]); every held-out metric is also reported
  per kind. Results in bench/results/explore/.

Experiments (one module each in bench/experiments/, which holds its runs, goals per testbed,
summary, table, claims and figures; each writes <out>/<experiment>.json, .md and figures, and its
verdicts to <out>/claims.json as {claim, goal, value, met} rows):
- entropy: GRPO, and AEPO and DCPO at three target entropies, with the papers' bang-bang
  controller and dcrl's PI controller: GRPO's collapse and how well each holds its target.
- sweep: held-out avg@n and pass@k against a range of held target entropies (AEPO's claim:
  performance first rises, then falls).
- exploration: entropy-controlled runs against GRPO on the held-out split: avg@n and pass@16.
- compression: GRPO, LP-F, ICR and LP-F + ICR: accuracy, length and the per-group
  length-accuracy correlation.
- combined: DCPO and ICR alone and composed in one run.
- control_diagnosis, control_range (explore only; run when named, not by `all`): why the entropy
  controller held only targets near the start, and AEPO and DCPO holding five targets from 0.6×
  to 1.4× the starting entropy with the settings that fix it (issue 27).
- baselines (explore only; run when named): the papers' comparison table in miniature: GRPO,
  DCPO and AEPO as the papers run them and with dcrl's controller, Entropy-Reg, Entropy-Adv,
  Clip-Cov, KL-Cov, clip-higher, GRPO sampling at T 1.2, and two ablations of DCPO, with n,
  mean, sample SD and Welch 95% intervals of each difference to GRPO (issue 27).

Runs are trained with the testbed's recipes plus the experiments' overrides, in `--workers`
processes of one thread each; finished runs made with the same settings are reused (a run
directory made with other settings is trained again), so an interrupted reproduction resumes.
The held-out evaluations resume the same way; with `--only` (or fewer seeds) the tables hold
just the chosen runs.

    python bench/reproduce.py --reclaim                               # verdicts from stored results
    python bench/reproduce.py --reclaim --out bench/results/explore/seeds-4-5-6

`--reclaim` trains nothing: it recomputes each experiment's claims.json rows, its .md table, and
the "±" (the sample standard deviation over seeds) and verdicts of its .json from the per-seed
values the .json already holds, with the current verdict rules (bench/experiments/stats.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.experiments import ALL, EXPERIMENTS
from bench.experiments.common import EVAL_DIR, TESTBEDS, RunSpec, Testbed, metrics_of, spread


def same_settings(run_dir: Path, config: object) -> bool:
    """Whether the run in `run_dir` was made with `config`, all but its number of steps (a longer
    run resumes a shorter one), how many checkpoints it keeps (no effect on training) and how
    its directory was spelled. The saved config is read
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
        settings.get("train", {}).pop("keep_checkpoints", None)
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


def run_config(spec: RunSpec, root: Path, steps: int, testbed: Testbed):
    """The run's full configuration: its recipe with the spec's overrides, steps and seed."""
    from dcrl.train.config import load_run_config

    overrides = [
        *spec.overrides,
        f"train.steps={steps}",
        f"train.seed={spec.seed}",
        "train.threads=1",
        f"log.output_dir={spec.run_dir(root)}",
        "log.console=false",
        "log.tensorboard=false",
    ]
    return load_run_config(testbed.recipe_path(spec.recipe), overrides)


def run_status(spec: RunSpec, root: Path, steps: int, testbed: Testbed) -> str:
    """What training `spec` for `steps` steps has left to do: "done", "to resume from step k",
    "to train", or "to train again (made with other settings)" (the run directory is then
    replaced)."""
    from dcrl.train import checkpoint

    run_dir = spec.run_dir(root)
    if not run_dir.exists():
        return "to train"
    config = run_config(spec, root, steps, testbed)
    if not (same_settings(run_dir, config) and logs_policy_entropy(run_dir, spec.recipe)):
        return "to train again (made with other settings)"
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is None:
        return "to train"  # died before its first checkpoint: start over
    done = json.loads((latest / "trainer_state.json").read_text())["step"]
    if done >= steps and (run_dir / "policy" / "config.json").is_file():
        return "done"
    return f"to resume from step {done}"


def train_one(spec: RunSpec, root: Path, steps: int, testbed: Testbed) -> str:
    """Train one run in this (worker) process; reuse it when already finished."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from dcrl.train.trainer import Trainer

    run_dir = spec.run_dir(root)
    status = run_status(spec, root, steps, testbed)
    if status == "done":
        return str(run_dir)
    if status.startswith("to train") and run_dir.exists():
        shutil.rmtree(run_dir)  # other settings (e.g. an older testbed), or no checkpoint yet
    config = run_config(spec, root, steps, testbed)
    Trainer(config, resume=status.startswith("to resume")).fit()
    return str(run_dir)


def recipe(testbed: Testbed, name: str = "grpo") -> dict:
    """The testbed's recipe <name> as a plain dict (its model, data and rollout settings)."""
    from dcrl.config import to_dict
    from dcrl.train.config import load_run_config

    return to_dict(load_run_config(testbed.recipe_path(name), []))


def evaluate_one(
    model: object,
    out_dir: Path,
    seed: int,
    problems: int,
    samples: int,
    testbed: Testbed,
    kind: str | None = None,
) -> dict:
    """Held-out avg@n / pass@k at T = 1 on the recipes' task (its test split), per kind of
    problem too on a testbed with kinds. `model`: a name, a directory or a (model, tokenizer)
    pair; `kind`: only the first `problems` problems of that kind."""
    import torch

    torch.set_num_threads(1)
    from dcrl.eval import evaluate, load_eval_data

    config = recipe(testbed)
    data = load_eval_data(None, run_config=config, limit=None if kind else problems)
    chosen = data.problems
    if kind is not None:
        chosen = [p for p in chosen if p.meta.get(testbed.group_by) == kind][:problems]
    result = evaluate(
        model,
        chosen,
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
        group_by=testbed.group_by,
        decoding="generate",  # the decoder bench/results were drawn with
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


def copy_figures(report_html: Path, out: Path, prefix: str) -> list[str]:
    names = []
    for figure in sorted((report_html.parent / "figures").glob("*.png")):
        target = out / f"{prefix}_{figure.name}"
        shutil.copyfile(figure, target)
        names.append(target.name)
    return names


def write_claims(path: Path, prefixes: tuple[str, ...], rows: list[dict], command: str) -> None:
    """Replace an experiment's rows (claims starting with one of its prefixes) in claims.json,
    keeping the other experiments' rows."""
    existing = json.loads(path.read_text()) if path.is_file() else []
    kept = [r for r in existing if not r["claim"].startswith(tuple(f"{p}:" for p in prefixes))]
    path.write_text(json.dumps(kept + [{**r, "command": command} for r in rows], indent=1))


def placeholders(experiment: str, testbed: Testbed) -> list[str]:
    """The constants this experiment uses on this testbed that are not measured yet."""
    settings = ALL[experiment].SETTINGS[testbed.name]
    if not isinstance(settings, tuple):  # one Settings, or one per algorithm (sweep)
        settings = (settings,)
    own = [name for one in settings for name in one.placeholders]
    return [f"common.TESTBEDS[{testbed.name!r}].{name}" for name in testbed.placeholders] + [
        f"{experiment}.SETTINGS[{testbed.name!r}].{name}" for name in own
    ]


def write_results(
    experiment: str,
    specs: list[RunSpec],
    root: Path,
    out: Path,
    testbed: Testbed,
    pretrained: dict | None,
    record: dict,
    figures: list[str],
) -> dict:
    """Summarize an experiment's finished (and evaluated) runs and write <out>/<experiment>.json,
    .md, its own figures and its rows of claims.json; returns the JSON record. `record` holds
    the command, seeds and steps; `figures` the report's figures already copied to `out`."""
    module = ALL[experiment]
    summary = module.summarize(specs, root, testbed, pretrained)
    figures = figures + module.figures(specs, root, summary, out, testbed)
    record = {"experiment": experiment, **record, "figures": figures, "summary": summary}
    if testbed.name != "overthink":
        record["testbed"] = testbed.name
        record["placeholders"] = placeholders(experiment, testbed)
    (out / f"{experiment}.json").write_text(json.dumps(record, indent=1))
    (out / f"{experiment}.md").write_text(
        f"<!-- made by: {record['command']} -->\n" + module.markdown(summary, testbed)
    )
    write_claims(
        out / "claims.json",
        module.CLAIM_PREFIXES,
        module.claims(summary, testbed),
        record["command"],
    )
    return record


def restat(node: object) -> None:
    """Recompute, in place, the "±" of a stored summary from its per-seed records as the sample
    standard deviation (results written before it held the population one): `spread_<key>` of
    an entry with "seeds", and exploration's `avg_at_n_spread` / `pass_at_k_spread`."""
    if isinstance(node, list):
        for value in node:
            restat(value)
    if not isinstance(node, dict):
        return
    seeds = node.get("seeds")
    if isinstance(seeds, dict) and seeds and all(isinstance(r, dict) for r in seeds.values()):
        records = [seeds[s] for s in sorted(seeds, key=int)]
        for key in [k for k in node if k.startswith("spread_")]:
            values = [r.get(key[len("spread_") :]) for r in records]
            if all(v is None or isinstance(v, int | float) for v in values):
                node[key] = spread(values)
        if "avg_at_n_spread" in node:
            from bench.experiments.exploration import over_seeds

            node.update(over_seeds(records))
            if isinstance(node.get("by_kind"), dict) and all("by_kind" in r for r in records):
                node["by_kind"] = {
                    kind: over_seeds([r["by_kind"][kind] for r in records])
                    for kind in node["by_kind"]
                }
    for value in node.values():
        restat(value)


def reclaim(experiments: list[str], out: Path, testbed: Testbed, argv: list[str]) -> int:
    """Rewrite each experiment's verdicts from its stored <out>/<experiment>.json (module doc);
    the rows keep the command that measured them."""
    done = 0
    for experiment in experiments:
        path = out / f"{experiment}.json"
        if not path.is_file():
            print(f"{experiment}: no {path}, skipped")
            continue
        module = ALL[experiment]
        record = json.loads(path.read_text())
        restat(record["summary"])
        if hasattr(module, "refresh"):  # the verdicts a summary stores (goal_met, ...)
            module.refresh(record["summary"], testbed)
        record["verdicts"] = "python bench/reproduce.py " + shlex.join(argv)
        path.write_text(json.dumps(record, indent=1))
        (out / f"{experiment}.md").write_text(
            f"<!-- made by: {record['command']} (verdicts: {record['verdicts']}) -->\n"
            + module.markdown(record["summary"], testbed)
        )
        write_claims(
            out / "claims.json",
            module.CLAIM_PREFIXES,
            module.claims(record["summary"], testbed),
            record["command"],
        )
        print(f"{experiment}: verdicts rewritten in {out / 'claims.json'}")
        done += 1
    return 0 if done else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", choices=[*ALL, "all"], default="all")
    parser.add_argument("--testbed", choices=list(TESTBEDS), default="explore")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per run (default: the experiment's STEPS if it sets one, else the testbed's "
        "recipes')",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only", default=None, help="regular expression: train/report only settings it matches"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs to train (and whether each is already done), then stop",
    )
    parser.add_argument(
        "--reclaim",
        action="store_true",
        help="train nothing: recompute the verdicts, tables and ± of the results in --out",
    )
    parser.add_argument("--eval-problems", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=32, help="n of pass@k (k ≤ n)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results (default: the testbed's, bench/results/…)"
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="run directories (large; default: the testbed's, runs/bench/…)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    testbed = TESTBEDS[args.testbed]
    root = args.runs or testbed.runs
    out = args.out or testbed.results

    from dcrl.report import build_report

    root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    experiments = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    unfit = [e for e in experiments if testbed.name not in ALL[e].SETTINGS]
    if unfit:
        print(f"error: {', '.join(unfit)} has no settings for the {testbed.name} testbed")
        return 2
    for experiment in experiments:
        missing = placeholders(experiment, testbed)
        if missing:
            print(f"{experiment} on {testbed.name}: placeholder constants: {', '.join(missing)}")
    if args.reclaim:
        return reclaim(experiments, out, testbed, argv if argv is not None else sys.argv[1:])
    chosen = re.compile(args.only) if args.only else None

    def specs_of(experiment: str) -> list[RunSpec]:
        specs = ALL[experiment].specs(args.seeds, testbed)
        return [s for s in specs if chosen is None or chosen.search(s.name)]

    def steps_of(experiment: str) -> int:
        """--steps, else the experiment's own STEPS (one that needs longer runs), else the
        testbed's recipes'."""
        return args.steps or getattr(ALL[experiment], "STEPS", None) or testbed.steps

    all_specs = dict.fromkeys((s, steps_of(e)) for e in experiments for s in specs_of(e))
    if args.dry_run:
        for spec, steps in all_specs:
            print(f"{spec.run_dir(root)}  {steps} steps  {run_status(spec, root, steps, testbed)}")
        print(f"{len(all_specs)} runs ({testbed.name} testbed, seeds {args.seeds})")
        return 0
    run_all(
        [(train_one, (s, root, steps, testbed)) for s, steps in all_specs], args.workers, "training"
    )

    to_evaluate = list(
        dict.fromkeys(s for e in experiments for s in ALL[e].evaluated(specs_of(e), testbed))
    )
    with_pretrained = any(ALL[e].uses_pretrained(testbed) for e in experiments)
    sizes = (args.eval_problems, args.eval_samples)
    jobs = (
        [(evaluate_one, (recipe(testbed)["model"]["name"], root / "base" / EVAL_DIR, 1, *sizes))]
        if with_pretrained
        else []
    )
    jobs += [
        (evaluate_one, (str(s.run_dir(root)), s.run_dir(root) / EVAL_DIR, s.seed, *sizes))
        for s in to_evaluate
    ]
    jobs = [(fn, (*job_args, testbed)) for fn, job_args in jobs]
    evaluations = run_all(jobs, args.workers, "evaluating") if jobs else []
    pretrained = evaluations[0] if with_pretrained else None

    command = "python bench/reproduce.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    for experiment in experiments:
        specs = specs_of(experiment)
        run_dirs = sorted({str(s.run_dir(root)) for s in specs})
        report = build_report(
            run_dirs, root / f"{experiment}_report", title=f"dcrl bench: {experiment}"
        )
        record = {"command": command.strip(), "seeds": args.seeds, "steps": steps_of(experiment)}
        figures = copy_figures(report, out, experiment)
        write_results(experiment, specs, root, out, testbed, pretrained, record, figures)
        print(f"{experiment}: {out / (experiment + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
