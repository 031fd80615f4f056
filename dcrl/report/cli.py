"""`dcrl report` (figures + one self-contained HTML page) and `dcrl compare` (the summary table in
the terminal) for training run directories.

    dcrl report runs/tiny-grpo-seed1 runs/tiny-dcpo-seed1 --out reports/tiny
    dcrl report runs/ --out reports/all --smooth 5     # every run directory inside runs/
    dcrl compare runs/ --by-setting

The lead registers them in dcrl/cli.py as `app.command("report")(report_command)` and
`app.command("compare")(compare_command)`.
"""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Training run directories, or directories that hold them (e.g. runs/)."
    ),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Output directory."),
    smooth: int = typer.Option(
        1, "--smooth", help="Moving-average window (logged steps) for training curves; 1 = raw."
    ),
    title: str | None = typer.Option(None, "--title", help="Page title (default 'dcrl report')."),
) -> None:
    """Draw the runs' figures and write a self-contained HTML report.

    Entropy, controller, accuracy, length, correlation, pass@k and Pareto figures with a summary
    table, in OUT/report.html and OUT/figures/.
    """
    from dcrl.errors import one_line
    from dcrl.report.build import build_report

    def note(text: str) -> None:  # a value the figures leave out, naming its file and metric
        typer.secho(f"note: {text}", fg=typer.colors.YELLOW, err=True)

    try:
        report_path = build_report(run_dirs, out, smooth=smooth, title=title, on_note=note)
    except ValueError as error:
        typer.secho(f"error: {one_line(error)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except OSError as error:  # --out names a file, a read-only folder, a full disk
        typer.secho(
            f"error: --out {out}: cannot write the report there ({one_line(error)}); choose a "
            "writable directory for --out",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2) from None
    typer.echo(f"report: {report_path}")


def compare_command(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Training run directories, or directories that hold them (e.g. runs/)."
    ),
    by_setting: bool = typer.Option(
        False, "--by-setting", help="One row per setting: mean ± std over its seeds."
    ),
    csv: Path | None = typer.Option(
        None, "--csv", help="Also save the table as this CSV file (and a .md beside it)."
    ),
) -> None:
    """Print the runs' summary table in the terminal.

    Final accuracy, entropy, temperature, length and correlation (mean of the last 10% of steps)
    and their evaluation's avg@n and pass@k.
    """
    from dcrl.eval.table import print_table, write_table
    from dcrl.report.runs import load_runs, summary_table

    try:
        runs = load_runs(run_dirs)
    except ValueError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    columns, rows = summary_table(runs, by_group=by_setting)
    print_table("dcrl compare", columns, rows)
    if csv is not None:
        write_table(columns, rows, csv, csv.with_suffix(".md"))
        typer.echo(f"table: {csv}, {csv.with_suffix('.md')}")
