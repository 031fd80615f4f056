"""`build_report`: PNG figures, summary tables (CSV/Markdown) and one self-contained HTML page from
training run directories.

Output layout (out_dir):
    report.html                 the page (figures embedded; open it in any browser, offline)
    figures/<id>.png            each figure (ids: dcrl.report.figures)
    summary.csv, summary.md     one row per run
    summary_by_setting.csv/.md  one row per setting (mean ± std over seeds), when runs share one
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import dcrl
from dcrl._atomic import write_bytes_atomic, write_text_atomic
from dcrl.errors import one_line
from dcrl.eval.table import write_table
from dcrl.report.figures import ReportFigure, report_figures
from dcrl.report.html import render_html
from dcrl.report.runs import group_runs, load_runs, summary_table

FIGURE_DPI = 100


def build_report(
    run_dirs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    smooth: int = 1,
    title: str | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of `run_dirs` into `out_dir` (module docstring); return report.html's path.

    Every file is written atomically (a kill or a failed write leaves the old file or none, never
    half a figure).

    Args:
        run_dirs: training run directories (or directories holding them, e.g. runs/).
        out_dir: created if needed; existing report files are replaced.
        smooth: trailing moving-average window, in logged steps, for the training curves (1: raw).
        title: the page title (default "dcrl report").
        on_note: called with each note on what the figures leave out (a value too large to plot,
            naming the file and metric); the notes are on the page too.

    Raises:
        ValueError: a directory that is not a run directory, or smooth < 1.
    """
    if smooth < 1:
        raise ValueError(f"smooth (moving-average window in steps) must be >= 1, got {smooth}")
    runs = load_runs(list(run_dirs))
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)

    rendered = []
    for report_figure in report_figures(runs, smooth):
        png = None
        if report_figure.figure is not None:
            png = _png(report_figure)
        if png is not None:
            write_bytes_atomic(out_dir / "figures" / f"{report_figure.id}.png", png)
        rendered.append((report_figure, png))
    if on_note is not None:
        for note in dict.fromkeys(n for figure, _ in rendered for n in figure.notes):
            on_note(note)

    columns, rows = summary_table(runs)
    write_table(columns, rows, out_dir / "summary.csv", out_dir / "summary.md")
    tables = [("Summary (final = mean of the last 10% of steps)", columns, rows)]
    if any(len(members) > 1 for members in group_runs(runs).values()):
        group_columns, group_rows = summary_table(runs, by_group=True)
        write_table(
            group_columns,
            group_rows,
            out_dir / "summary_by_setting.csv",
            out_dir / "summary_by_setting.md",
        )
        tables.insert(0, ("Summary by setting (mean ± std over seeds)", group_columns, group_rows))

    generated = f"generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by dcrl {dcrl.__version__}"
    page = render_html(title or "dcrl report", runs, rendered, tables, generated)
    report_path = out_dir / "report.html"
    write_text_atomic(report_path, page)
    return report_path


def _png(report_figure: ReportFigure) -> bytes | None:
    """The figure as PNG bytes; None, with the figure marked skipped and a note, if matplotlib
    cannot draw what it holds (a backstop: values too large to plot are left out before)."""
    buffer = io.BytesIO()
    try:
        report_figure.figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
    except (ValueError, OverflowError, FloatingPointError, np.linalg.LinAlgError) as error:
        reason = f"matplotlib could not draw it ({one_line(error)[:200]})"
        report_figure.figure, report_figure.skipped_reason = None, reason
        report_figure.notes.append(f"figure {report_figure.id!r} is left out: {reason}")
        return None
    return buffer.getvalue()
