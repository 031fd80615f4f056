"""Where step metrics go: the terminal (progress bar), metrics.jsonl, TensorBoard, wandb.

Every sink receives the same flat dict of metric name -> float, once per step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

from dcrl._atomic import write_text_atomic
from dcrl.config import to_dict
from dcrl.errors import UserError

# The metrics the console line shows, in order, with short labels.
CONSOLE_METRICS = [
    ("reward/accuracy", "acc"),
    ("entropy/sampled_nll", "H_nll"),
    ("entropy/full", "H"),
    ("control/temperature", "T"),
    ("control/alpha", "α"),
    ("control/num_reinforce", "m"),
    ("length/mean", "len"),
    ("corr/length_acc_group", "corr"),
    ("loss/clipfrac_high", "clip+"),
    ("perf/tokens_per_s", "tok/s"),
]


def policy_entropy(record: dict[str, Any]) -> float | None:
    """The policy's own sampled-token entropy in one metrics record: `entropy/on_policy_nll`,
    which leaves out rows an algorithm drew from another distribution (AEPO's tempered REINFORCE
    rows), or `entropy/sampled_nll` in logs written before it existed. The two are equal for
    every algorithm that adds no such rows; for AEPO only the first is the policy's entropy.
    AEPO with `measure_replaced` also logs `entropy/all_own_nll`, the same over all the policy's
    own answers of the step (the ones its rows replaced included): read first where present.
    """
    for name in ("entropy/all_own_nll", "entropy/on_policy_nll", "entropy/sampled_nll"):
        if record.get(name) is not None:
            return record[name]
    return None


class MetricSink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line: {"step": k, metric: value, ...}.

    Each record is appended in one write and flushed. On resume the file is cut back to the
    records up to the checkpoint's step (later ones will be logged again) by an atomic rewrite,
    so a kill at that moment leaves the old file, never an empty one; a record cut off by a
    power loss (an unparseable last line) is dropped.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = [
                line
                for line, record in read_metrics_log(self.path)
                if record["step"] <= resume_step
            ]
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _finite_or_none(v) for k, v in metrics.items()}}
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class MetricsLogError(UserError, ValueError):
    """A metrics.jsonl line before the last is damaged."""


def read_metrics_log(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for each record of a metrics.jsonl, in order; a cut-off last line (a kill
    or power loss mid-append) is skipped.

    Raises:
        MetricsLogError: a damaged line other than the last, naming the file and line.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise MetricsLogError(
            f"{path} is not UTF-8 text (byte {error.start + 1}): it is damaged; restore it or "
            "delete the damaged lines"
        ) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as error:  # bad JSON, a 5,000-digit number, nesting
            if number == len(lines):
                break
            reason = getattr(error, "msg", None) or (
                "nested too deeply" if isinstance(error, RecursionError) else str(error)[:120]
            )
            raise MetricsLogError(
                f"{path}:{number}: not a JSON record ({reason}); the metrics log is damaged "
                "before its last line: repair or delete that line"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise MetricsLogError(
                f'{path}:{number}: a metrics record needs an integer "step"; repair or delete '
                "that line"
            )
        records.append((line, record))
    return records


def _finite_or_none(value: float) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


class TensorBoardSink:
    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, project: str, name: str, config: dict[str, Any], run_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError(
                "log.wandb is true but wandb is not installed: `pip install wandb`, or set "
                "log.wandb=false"
            ) from None
        self.run = wandb.init(project=project, name=name, config=config, dir=str(run_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class ConsoleSink:
    """A rich progress bar over steps with the key metrics of the latest step beside it."""

    def __init__(self, total_steps: int, start_step: int, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[summary]}"),
        )
        self.task = self.progress.add_task(
            description, total=total_steps, completed=start_step, summary=""
        )
        self.progress.start()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        parts = [
            f"{label} {metrics[name]:.3g}" for name, label in CONSOLE_METRICS if name in metrics
        ]
        summary = "  ".join(parts)
        self.progress.update(self.task, completed=step, summary=summary)
        self.progress.console.print(f"step {step:>4}  {summary}", highlight=False)

    def close(self) -> None:
        self.progress.stop()


def run_sinks(config: Any, step: int) -> list[MetricSink]:
    """The sinks the run's `log` section asks for, for a run that continues after `step`
    (0 for a fresh run): metrics.jsonl always, TensorBoard, wandb and the console as set."""
    lc, run_dir = config.log, config.run_dir
    sinks: list[MetricSink] = [
        # Keeps the lines up to the checkpoint: none for a fresh run, whose directory may hold
        # the metrics of an earlier attempt that died before its first checkpoint.
        JsonlSink(run_dir / "metrics.jsonl", resume_step=step)
    ]
    if lc.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tb", purge_step=step + 1))
    if lc.wandb:
        sinks.append(WandbSink(lc.wandb_project, run_dir.name, to_dict(config), run_dir))
    if lc.console:
        sinks.append(ConsoleSink(config.train.steps, step, config.algorithm.name))
    return sinks
