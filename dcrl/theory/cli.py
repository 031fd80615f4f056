"""`dcrl theory`: run the RLHF generalization simulator (arXiv 2601.16403, reconstructed model).

    dcrl theory run                      # E1–E6, full settings (about a minute on 2 cores)
    dcrl theory run --quick              # smaller settings (seconds)
    dcrl theory run -e E3 --beta 1 --dim 16 --out runs/e3-beta1
    dcrl theory run -e E1 -e E3 --figures-dir docs/figures   # the README figures

Until the lead registers it in dcrl/cli.py, run it as `python -m dcrl.theory.cli run ...`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dcrl.errors import one_line

app = typer.Typer(
    name="theory",
    help="Check the RLHF generalization theory of arXiv 2601.16403 in a reconstructed, exact "
    "simulator (numpy).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Simulator of KL-regularized RLHF with a linear reward: gap versus n, GA/SGA, coverage.

    The model is a reconstruction: the paper's body was not available (docs/theory.md).
    """


@app.command()
def run(
    quick: bool = typer.Option(False, "--quick", help="Smaller pools, grids and seed counts."),
    out: Path | None = typer.Option(
        None, "--out", help="Output directory (default: runs/theory-<timestamp>)."
    ),
    experiment: list[str] | None = typer.Option(
        None,
        "--experiment",
        "-e",
        help="Run only these (repeatable): E1, E2, E3, E3b, E4, E5, E6. Default: all.",
    ),
    beta: float | None = typer.Option(
        None, "--beta", help="KL coefficient β > 0 (replaces the β sweeps of E4 and E6)."
    ),
    dim: int | None = typer.Option(None, "--dim", help="Feature dimension d."),
    actions: int | None = typer.Option(None, "--actions", help="Actions per prompt K <= d."),
    pool_size: int | None = typer.Option(None, "--pool-size", help="Prompt pool size M."),
    seeds: int | None = typer.Option(None, "--seeds", help="Sample seeds per configuration."),
    ref_norm: float | None = typer.Option(
        None, "--ref-norm", help="‖θ_ref‖, the reference sharpness (replaces E4's sweep)."
    ),
    env_seed: int | None = typer.Option(None, "--env-seed", help="Environment seed."),
    rare_fraction: list[float] | None = typer.Option(
        None, "--rare-fraction", help="Rare-prompt fractions p for E3/E3b/E5 (repeatable)."
    ),
    figures_dir: Path | None = typer.Option(
        None,
        "--figures-dir",
        help="Also save each figure there as theory_<name>.png (e.g. docs/figures).",
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 if a criterion fails."),
) -> None:
    """Run the experiments; write results.json, one figure each and summary.md into --out."""
    command = _command_line(locals())  # first: only the options are local yet
    if "numpy" not in sys.modules:
        # The simulator's matrix products are small: one BLAS thread is as fast on an idle
        # machine and many times faster on a busy one. Set the variable yourself to override.
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
    out_dir = out or Path("runs") / time.strftime("theory-%Y%m%d-%H%M%S")
    problems = [
        _output_directory_problem(out_dir, "--out"),
        _output_directory_problem(figures_dir, "--figures-dir"),
        _seed_problem(env_seed),
    ]
    for problem in problems:  # before any experiment runs: minutes of work are not lost
        if problem is not None:
            _fail(problem)
    from dcrl.theory.experiments import EXPERIMENTS, SuiteOverrides, run_suite
    from dcrl.theory.report import RECONSTRUCTION_NOTE, write_report

    overrides = SuiteOverrides(
        dim=dim,
        num_actions=actions,
        pool_size=pool_size,
        beta=beta,
        ref_norm=ref_norm,
        env_seed=env_seed,
        num_seeds=seeds,
        rare_fractions=rare_fraction or None,
    )
    names = experiment or list(EXPERIMENTS)
    console = Console()
    console.print(f"[dim]{RECONSTRUCTION_NOTE}[/dim]")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("theory", total=len({name.lower() for name in names}))

        def on_start(name: str) -> None:
            progress.update(task, description=f"running {name}")

        def on_done(result) -> None:
            slopes = ", ".join(f"{k} {v:.3f}" for k, v in result.slopes.items())
            verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
            failed = [c.name for c in result.criteria if c.passed is False]
            progress.console.print(
                f"{result.name:4s} {verdict} {result.seconds:6.1f} s  {result.title}"
                + (escape(f"  [{slopes}]") if slopes else "")
                + (f"  failed: {', '.join(failed)}" if failed else "")
            )
            progress.advance(task)

        try:
            results = run_suite(names, quick, overrides, on_start, on_done)
        except ValueError as error:
            progress.stop()
            _fail(one_line(error))
    try:
        written = write_report(results, out_dir, command, figures_dir)
    except OSError as error:  # a full disk, a folder made read-only while the experiments ran
        _fail(
            f"--out {out_dir}: cannot write the report there ({one_line(error)}); free space or "
            "choose a writable directory for --out (and --figures-dir), and run again"
        )
    passed = all(result.passed for result in results)
    console.print(
        f"{'all criteria passed' if passed else 'some criteria FAILED'}; "
        f"wrote {written['json']}, {written['summary']} and {len(results)} figures to {out_dir}"
    )
    if strict and not passed:
        raise typer.Exit(code=1)


def _fail(message: str) -> NoReturn:
    """Print `message` as one `error: ...` line on stderr and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _output_directory_problem(path: Path | None, option: str) -> str | None:
    """Why `path` cannot be (created as) an output directory, or None if it can."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        return (
            f"{option} {path} is a file, not a directory: pass a directory (created if missing) "
            "for the results, or move the file away"
        )
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return (
            f"{option} {path}: {existing} is a file, so no directory can be made inside it: "
            "pass a path under a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{option} {path}: {existing} is not writable: pass a directory you can write to"
    return None


def _seed_problem(env_seed: int | None) -> str | None:
    """Why `--env-seed` is not a usable environment seed, or None."""
    if env_seed is not None and env_seed < 0:
        return (
            f"--env-seed {env_seed}: the environment seed must be an integer >= 0; pass 0 (the "
            "default) or another non-negative integer"
        )
    return None


def _command_line(options: dict) -> str:
    """The `dcrl theory run` command that reproduces these options."""
    parts = ["dcrl theory run"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False or value == []:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [f"{flag} {item}" for item in value]
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


if __name__ == "__main__":
    app()
