"""Training run directories as data: their config, step metrics and evaluation results, labelled by
algorithm and seed and grouped by setting (config minus seed), plus the summary table.

A run directory (what `dcrl train` writes) holds config.yaml, metrics.jsonl (one JSON object per
step: "step" and metric names such as "reward/accuracy") and, after `dcrl eval`, eval*/metrics.json.
Only metrics.jsonl is required.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dcrl.errors import one_line
from dcrl.eval.table import Columns, format_value
from dcrl.train.sinks import read_metrics_log

FINAL_FRACTION = 0.1  # "final" values average the last 10% of logged steps (at least one)

# Config keys that do not change what a run computes: runs differing only in them are seeds of
# one setting. (train.seed is the seed itself.)
NON_SETTING_KEYS = ("train.seed", "train.threads", "train.save_every", "train.keep_checkpoints")
NON_SETTING_SECTIONS = ("log",)


@dataclass(eq=False)
class Run:
    """One training run.

    path: the run directory.
    config: its config.yaml as a dict ({} when absent).
    steps: (S,) the logged step numbers, increasing.
    metrics: metric name -> (S,) float64 values (NaN where a step did not log it).
    evals: {eval directory name: its metrics.json}, e.g. {"eval-arith-level2-test200-n64-t1": ...}.
    algorithm, seed: from the config (the directory name and None without one).
    group: the label of its setting (algorithm, plus the settings that tell groups apart).
    label: group and seed, e.g. "dcpo seed2".
    """

    path: Path
    config: dict[str, Any]
    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    algorithm: str = ""
    seed: int | None = None
    group: str = ""
    label: str = ""

    def has(self, metric: str) -> bool:
        """Whether the run logged `metric` at least once (a finite value)."""
        values = self.metrics.get(metric)
        return values is not None and bool(np.isfinite(values).any())

    def final(self, metric: str, fraction: float = FINAL_FRACTION) -> float | None:
        """The mean of `metric` over the last `fraction` of logged steps (at least one), or None."""
        if not self.has(metric):
            return None
        values = self.metrics[metric]
        window = max(1, round(fraction * len(values)))
        tail = values[-window:]
        tail = tail[np.isfinite(tail)]
        return float(tail.mean()) if len(tail) else None

    def tracking_error(self) -> float | None:
        """How far an entropy-controlled run kept its policy entropy from the target: the RMS
        over the second half of the logged steps of (H / target − 1), H the policy's own
        sampled-token NLL and target the logged `entropy/target` of that step; None for a run
        without a target."""
        if not (self.has("entropy/target") and self.has("entropy/on_policy_nll")):
            return None
        half = len(self.steps) // 2
        entropy = self.metrics["entropy/on_policy_nll"][half:]
        target = self.metrics["entropy/target"][half:]
        relative = entropy / target - 1
        relative = relative[np.isfinite(relative)]
        return float(np.sqrt(np.mean(relative**2))) if len(relative) else None


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config; an empty mapping counts as absent, so that a run saved
    before a mapping setting existed groups with one saved with its default ({})."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _defaults(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a config dataclass's plain defaults (nested dataclasses walked; mapping
    defaults left out, as `_flatten` leaves out empty mappings)."""
    found: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if not item.init:
            continue
        if item.default is not dataclasses.MISSING:
            value = item.default
        elif item.default_factory is not dataclasses.MISSING:
            value = item.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            found.update(_defaults(type(value), f"{prefix}{item.name}."))
        elif not isinstance(value, dict):
            found[f"{prefix}{item.name}"] = value
    return found


@functools.cache
def _config_defaults(name: str) -> dict[str, Any]:
    """The defaults of every setting a run of algorithm `name` could hold (read-only; one walk
    per algorithm): a key a run saved before the setting existed is filled with the default it
    ran with. {} when the algorithm is unknown here (a plugin not importable, a renamed one)."""
    from dcrl.algorithms import get_algorithm_class
    from dcrl.train.config import RunConfig

    found = {k: v for k, v in _defaults(RunConfig).items() if not k.startswith("algorithm")}
    try:
        found.update(_defaults(get_algorithm_class(name).config_class, "algorithm."))
    except Exception:  # noqa: BLE001 - best effort: the run's own keys still group it
        return {}
    return found


def setting_of(config: dict[str, Any], defaults: bool = True) -> dict[str, Any]:
    """The flattened config without the keys that do not change the setting (seed, logging);
    with `defaults`, a setting the run's config lacks (saved before the setting existed) reads as
    its default, so that the run groups with later runs of the same setting."""
    flat = _flatten(config)
    name = str((config.get("algorithm") or {}).get("name", "grpo"))
    for key, value in _config_defaults(name).items() if defaults else ():
        flat.setdefault(key, value)
    return {
        key: value
        for key, value in flat.items()
        if key not in NON_SETTING_KEYS and key.split(".")[0] not in NON_SETTING_SECTIONS
    }


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _as_float(value: float | None) -> float:
    """A logged value as a float: None (a NaN/inf the sink wrote as null) and integers too large
    for a float (10**400 in a hand-edited log) become NaN."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _read_metrics(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps (S,), {metric: (S,) values}) from metrics.jsonl; a later line for a step wins."""
    by_step: dict[int, dict[str, float]] = {}
    for _, record in read_metrics_log(path):
        by_step[record["step"]] = {
            name: _as_float(value)
            for name, value in record.items()
            if name != "step" and (value is None or isinstance(value, int | float))
        }
    if not by_step:
        raise ValueError(
            f"{path} holds no logged step: the run has not finished a step yet (wait for it), or "
            "this is not a dcrl run directory"
        )
    steps = np.array(sorted(by_step))  # (S,)
    names = sorted({name for values in by_step.values() for name in values})
    metrics = {
        name: np.array([by_step[step].get(name, math.nan) for step in steps], dtype=np.float64)
        for name in names
    }
    # The policy's own sampled-token NLL (AEPO's tempered rows left out); a log written before it
    # existed lends its sampled_nll, the same number for every algorithm but AEPO.
    if "entropy/on_policy_nll" not in metrics and "entropy/sampled_nll" in metrics:
        metrics["entropy/on_policy_nll"] = metrics["entropy/sampled_nll"]
    return steps, metrics


def load_run(run_dir: str | Path) -> Run:
    """Read one run directory (see the module docstring); ValueError if it has no metrics."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run directory {path} does not exist (or is not a directory)")
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ValueError(
            f"{path} has no metrics.jsonl, so it is not a dcrl training run directory: pass the "
            "directory `dcrl train` wrote (log.output_dir), e.g. runs/tiny-dcpo-seed1"
        )
    config: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{path / 'config.yaml'} is not valid YAML ({_first_line(error)}): restore "
                "the config.yaml `dcrl train` wrote there"
            ) from None
        if not isinstance(config, dict):
            raise ValueError(f"{path / 'config.yaml'} is not a mapping of settings")
    steps, metrics = _read_metrics(metrics_path)
    evals = {}
    for eval_metrics in sorted(path.glob("eval*/metrics.json")):
        try:
            evals[eval_metrics.parent.name] = json.loads(eval_metrics.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as error:
            raise ValueError(
                f"{eval_metrics} is not readable JSON ({one_line(error)[:200]}): run that "
                "evaluation again, or delete its folder"
            ) from None
    seed = (config.get("train") or {}).get("seed")
    return Run(
        path=path,
        config=config,
        steps=steps,
        metrics=metrics,
        evals=evals,
        algorithm=str((config.get("algorithm") or {}).get("name") or path.name),
        seed=int(seed) if isinstance(seed, int) else None,
    )


def telling_keys(settings: list[dict[str, Any]], differing: list[str]) -> list[str]:
    """The settings' keys a group label names: greedily the key that tells the most settings
    apart, then the next, until every setting has its own label (ties by name), so that two
    settings never share a label — and a figure never pools them as one setting's seeds."""

    def signatures(names: list[str]) -> int:
        return len(
            {json.dumps([s.get(n) for n in names], default=str, sort_keys=True) for s in settings}
        )

    chosen: list[str] = []
    while signatures(chosen) < len(settings) and len(chosen) < len(differing):
        rest = [name for name in differing if name not in chosen]
        chosen.append(min(rest, key=lambda name: (-signatures([*chosen, name]), name)))
    return chosen


def load_runs(run_dirs: list[str | Path]) -> list[Run]:
    """Read run directories, label them by algorithm and seed, and group seeds of one setting.

    A directory that holds run directories (e.g. runs/) stands for all of them. Runs whose
    configs differ only in seed or logging form one group; groups of one algorithm are told
    apart by the settings that differ between them, e.g. "dcpo (target_entropy=0.3)".

    Raises:
        ValueError: no directories, or one that is not a run directory (it names the problem).
    """
    if not run_dirs:
        raise ValueError("no run directories given: pass at least one (e.g. runs/tiny-dcpo-seed1)")
    paths = []
    for run_dir in map(Path, run_dirs):  # a directory of runs stands for the runs inside it
        children = []
        if run_dir.is_dir() and not (run_dir / "metrics.jsonl").is_file():
            children = [c for c in sorted(run_dir.iterdir()) if (c / "metrics.jsonl").is_file()]
        paths.extend(children or [run_dir])
    runs = [load_run(path) for path in paths]
    settings = [setting_of(run.config) if run.config else {"path": str(run.path)} for run in runs]
    keys = [json.dumps(setting, sort_keys=True, default=str) for setting in settings]
    group_labels: dict[str, str] = {}
    for algorithm in dict.fromkeys(run.algorithm for run in runs):
        group_keys = list(
            dict.fromkeys(
                key for key, run in zip(keys, runs, strict=True) if run.algorithm == algorithm
            )
        )
        group_settings = [json.loads(key) for key in group_keys]
        differing = sorted(
            name
            for name in set().union(*group_settings)
            if len({json.dumps(s.get(name), default=str) for s in group_settings}) > 1
        )
        shown = telling_keys(group_settings, differing)
        for key, setting in zip(group_keys, group_settings, strict=True):
            details = ", ".join(f"{name.rsplit('.', 1)[-1]}={setting.get(name)}" for name in shown)
            group_labels[key] = f"{algorithm} ({details})" if details else algorithm
    seen: Counter[str] = Counter()
    for run, key in zip(runs, keys, strict=True):
        run.group = group_labels[key]
        label = f"{run.group} seed{run.seed}" if run.seed is not None else run.group
        seen[label] += 1
        run.label = label if seen[label] == 1 else f"{label} ({run.path.name})"
    return runs


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs by group label, groups in first-seen order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return groups


def primary_eval(runs: list[Run]) -> str | None:
    """The evaluation most runs have (its directory name), for the summary and Pareto plot."""
    counts = Counter(name for run in runs for name in run.evals)
    if not counts:
        return None
    return min(counts, key=lambda name: (-counts[name], name))


SUMMARY_COLUMNS: list[tuple[str, str]] = [
    ("run", "run"),
    ("steps", "steps"),
    ("accuracy", "acc"),
    ("entropy_nll", "H(nll)"),
    ("entropy_full", "H(full)"),
    ("temperature", "T"),
    ("entropy_target", "H target"),
    ("tracking_error", "H RMS err"),
    ("length", "len"),
    ("corr", "corr(L,acc)"),
    ("eval_avg", "eval avg@n"),
    ("eval_pass_at_1", "eval pass@1"),
    ("eval_pass_at_n", "eval pass@n"),
    ("eval_length", "eval len"),
]

# H(nll): the policy's own sampled-token NLL (AEPO's tempered rows left out; see _read_metrics).
_FINAL_METRICS = {
    "accuracy": "reward/accuracy",
    "entropy_nll": "entropy/on_policy_nll",
    "entropy_full": "entropy/full",
    "temperature": "control/temperature",
    "entropy_target": "entropy/target",
    "length": "length/mean",
    "corr": "corr/length_acc_group",
}


def summary_table(runs: list[Run], *, by_group: bool = False) -> tuple[Columns, list[dict]]:
    """(columns, rows) of the summary: final training metrics (mean of the last 10% of steps) and
    the primary evaluation's avg@n, pass@1, pass@n and mean length. Columns without any value
    (T for GRPO-only runs, eval columns without evaluations) are left out.

    by_group: one row per setting, each number the mean ± std (population) over its seeds, as
        text "0.412 ± 0.013" (a plain number for a single seed), and a "seeds" column instead of "steps"; otherwise one row per run
        with plain numbers.
    """
    eval_name = primary_eval(runs)
    per_run = []
    for run in runs:
        row: dict[str, Any] = {"run": run.label, "steps": int(run.steps[-1])}
        row.update({key: run.final(metric) for key, metric in _FINAL_METRICS.items()})
        row["tracking_error"] = run.tracking_error()  # second half, relative to the target
        evaluation = run.evals.get(eval_name) if eval_name is not None else None
        if evaluation is not None:
            n = evaluation["settings"]["n"]
            row["eval_avg"] = evaluation[f"avg@{n}"]
            row["eval_pass_at_1"] = evaluation["pass@k"].get("1")
            row["eval_pass_at_n"] = evaluation["pass@k"].get(str(n))
            row["eval_length"] = evaluation["length"]["mean"]
        per_run.append(row)
    columns = [  # drop the columns no run has a value for (e.g. T for GRPO, eval without evals)
        (key, title)
        for index, (key, title) in enumerate(SUMMARY_COLUMNS)
        if index < 2 or any(row.get(key) is not None for row in per_run)
    ]
    if not by_group:
        return columns, per_run
    rows_by_group: dict[str, list[dict[str, Any]]] = {}
    for run, run_row in zip(runs, per_run, strict=True):
        rows_by_group.setdefault(run.group, []).append(run_row)
    rows = []
    for group, member_rows in rows_by_group.items():
        row = {"run": group, "seeds": len(member_rows)}
        for key, _ in columns[2:]:
            values = [r[key] for r in member_rows if r.get(key) is not None]
            if len(values) == 1:
                row[key] = values[0]
            elif values:
                row[key] = f"{format_value(np.mean(values))} ± {format_value(np.std(values))}"
        rows.append(row)
    return [("run", "setting"), ("seeds", "seeds"), *columns[2:]], rows
