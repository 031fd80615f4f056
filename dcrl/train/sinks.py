"""Where step metrics go: the terminal (progress bar), metrics.jsonl, TensorBoard, wandb.

Every sink receives the same flat dict of metric name -> float, once per step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

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


class MetricSink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line: {"step": k, metric: value, ...}."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            # drop lines of steps after the checkpoint: they will be logged again
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.fh = open(self.path, "a")  # noqa: SIM115

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _finite_or_none(v) for k, v in metrics.items()}}
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


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
            raise RuntimeError(
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
