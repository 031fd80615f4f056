"""The report as one self-contained HTML page: inline CSS, figures embedded as base64 PNG data
URIs, no script and no link to anything outside the file (it opens offline, and can be mailed)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from dcrl.eval.table import Columns, format_value
from dcrl.report.figures import ReportFigure
from dcrl.report.runs import Run

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
figure { margin: 0.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; max-width: 70em; }
.skipped { color: #a60; font-style: italic; }
.note { color: #a60; font-size: 0.85em; }
"""


def html_table(columns: Columns, rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML table with escaped, rounded cells."""
    header = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(format_value(row.get(key)))}</td>" for key, _ in columns)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def render_html(
    title: str,
    runs: list[Run],
    figures: list[tuple[ReportFigure, bytes | None]],
    tables: list[tuple[str, Columns, Sequence[Mapping[str, Any]]]],
    generated: str,
) -> str:
    """The page: a header, the summary tables, one section per figure (PNG bytes embedded, or the
    reason it was skipped), and the list of runs.

    Args:
        title: the page title.
        runs: the runs shown.
        figures: (figure, its PNG bytes or None when skipped), in page order.
        tables: (heading, columns, rows) of each summary table.
        generated: a line saying when and by what the page was made.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(generated)} · {len(runs)} runs</p>',
    ]
    for heading, columns, rows in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2>{html_table(columns, rows)}")
    for figure, png in figures:
        parts.append(f'<section id="fig-{figure.id}"><h2>{html.escape(figure.title)}</h2>')
        if png is None:
            parts.append(
                f'<p class="skipped" data-skipped="{figure.id}">Skipped: '
                f"{html.escape(figure.skipped_reason)}.</p>"
            )
        else:
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(figure.title)}" data-figure="{figure.id}">'
                f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
            )
        parts += [
            f'<p class="note" data-note="{figure.id}">Note: {html.escape(note)}.</p>'
            for note in figure.notes
        ]
        parts.append("</section>")
    run_rows = [
        {
            "run": run.label,
            "path": str(run.path),
            "algorithm": run.algorithm,
            "seed": run.seed,
            "steps": int(run.steps[-1]),
            "evals": ", ".join(run.evals) or None,
        }
        for run in runs
    ]
    run_columns = [(key, key) for key in ("run", "path", "algorithm", "seed", "steps", "evals")]
    parts.append(f"<h2>Runs</h2>{html_table(run_columns, run_rows)}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
