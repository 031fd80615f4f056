"""Result tables: rows of raw values shown in the terminal (rich) and saved as CSV and Markdown.

A table is `columns` — (key, header) pairs — and `rows` — dicts from key to a value (number, text or
None). CSV keeps full precision; the terminal and Markdown round numbers for reading.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Columns = Sequence[tuple[str, str]]

# The columns of `dcrl eval`'s comparison of several models.
EVAL_COLUMNS: list[tuple[str, str]] = [
    ("model", "model"),
    ("data", "data"),
    ("problems", "problems"),
    ("n", "n"),
    ("temperature", "T"),
    ("avg_at_n", "avg@n"),
    ("pass_at_1", "pass@1"),
    ("pass_at_n", "pass@n"),
    ("greedy_accuracy", "greedy"),
    ("length_mean", "len"),
    ("length_correct_mean", "len✓"),
    ("length_incorrect_mean", "len✗"),
    ("length_accuracy_corr", "corr(L,acc)"),
    ("truncated_frac", "trunc"),
    ("tokens_per_s", "tok/s"),
]


def eval_row(label: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One comparison row (EVAL_COLUMNS) from a `dcrl eval` metrics dict."""
    settings = metrics["settings"]
    n = settings["n"]
    length = metrics["length"]
    return {
        "model": label,
        "data": settings["data"],
        "problems": metrics["num_problems"],
        "n": n,
        "temperature": f"{settings['temperature']:g}",
        "avg_at_n": metrics[f"avg@{n}"],
        "pass_at_1": metrics["pass@k"].get("1"),
        "pass_at_n": metrics["pass@k"].get(str(n)),
        "greedy_accuracy": metrics.get("greedy_accuracy"),
        "length_mean": length["mean"],
        "length_correct_mean": length["correct_mean"],
        "length_incorrect_mean": length["incorrect_mean"],
        "length_accuracy_corr": metrics["length_accuracy_correlation"]["group"],
        "truncated_frac": length["truncated_frac"],
        "tokens_per_s": (metrics.get("throughput") or {}).get("tokens_per_s"),
    }


def format_value(value: Any) -> str:
    """A cell for reading: None/NaN as "–", floats rounded by magnitude, the rest as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def print_table(title: str, columns: Columns, rows: Sequence[Mapping[str, Any]]) -> None:
    """Print the table to the terminal with rich (200 columns wide when the output is a file)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)

    table = Table(title=title)
    for index, (_, header) in enumerate(columns):
        table.add_column(header, justify="left" if index == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(format_value(row.get(key)) for key, _ in columns))
    console.print(table)


def markdown_table(columns: Columns, rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as GitHub Markdown (rounded cells)."""
    lines = [
        "| " + " | ".join(header for _, header in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for row in rows:
        cells = (format_value(row.get(key)).replace("|", "\\|") for key, _ in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    columns: Columns, rows: Sequence[Mapping[str, Any]], csv_path: Path, markdown_path: Path
) -> None:
    """Save the table as CSV (full precision, empty cell for None) and as Markdown."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([key for key, _ in columns])
        for row in rows:
            writer.writerow(["" if row.get(key) is None else row.get(key) for key, _ in columns])
    markdown_path.write_text(markdown_table(columns, rows), encoding="utf-8")
