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
from datetime import UTC, datetime
from pathlib import Path

import dcrl
from dcrl.eval.table import write_table
from dcrl.report.figures import report_figures
from dcrl.report.html import render_html
from dcrl.report.runs import group_runs, load_runs, summary_table

FIGURE_DPI = 100


def build_report(
    run_dirs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    smooth: int = 1,
    title: str | None = None,
) -> Path:
    """Write the report of `run_dirs` into `out_dir` (module docstring); return report.html's path.

    Args:
        run_dirs: training run directories (or directories holding them, e.g. runs/).
        out_dir: created if needed; existing report files are replaced.
        smooth: trailing moving-average window, in logged steps, for the training curves (1: raw).
        title: the page title (default "dcrl report").

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
            buffer = io.BytesIO()
            report_figure.figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
            png = buffer.getvalue()
            (out_dir / "figures" / f"{report_figure.id}.png").write_bytes(png)
        rendered.append((report_figure, png))

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
    report_path.write_text(page, encoding="utf-8")
    return report_path
