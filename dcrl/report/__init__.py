"""Figures and a self-contained HTML report from training run directories (`dcrl report`), and
the summary table (`dcrl compare`).

    from dcrl.report import build_report, load_runs, summary_table
    runs = load_runs(["runs/tiny-grpo-seed1", "runs/tiny-dcpo-seed1"])
    columns, rows = summary_table(runs)
    build_report(["runs/"], "reports/all")   # -> reports/all/report.html

Names are imported on first use, so `import dcrl.report.cli` (the CLI) stays cheap.
"""

from __future__ import annotations

from dcrl._lazy import lazy_exports

_EXPORTS = {
    "build_report": "dcrl.report.build",
    "ReportFigure": "dcrl.report.figures",
    "report_figures": "dcrl.report.figures",
    "Run": "dcrl.report.runs",
    "group_runs": "dcrl.report.runs",
    "load_run": "dcrl.report.runs",
    "load_runs": "dcrl.report.runs",
    "summary_table": "dcrl.report.runs",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
