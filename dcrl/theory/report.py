"""Write a theory run: results.json, one figure per experiment and a markdown summary.

Figures use matplotlib's Agg backend (no display needed). Each plot function takes an
`ExperimentResult` and returns a matplotlib Figure; `write_report` saves them as `<name>.png`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import dcrl  # noqa: E402
from dcrl.theory.experiments import EXCESS_FLOOR, ExperimentResult  # noqa: E402

RECONSTRUCTION_NOTE = (
    "The model is a RECONSTRUCTION of the setting of arXiv 2601.16403 (the paper's body was not "
    "available): a check of the paper's claims in the reconstructed model, not a reproduction of "
    "its figures (the paper reports no experiments)."
)

FIGURE_DPI = 100


def _positive(values: Any) -> np.ndarray:
    """Floor at EXCESS_FLOOR so that exact zeros can be drawn on a log axis."""
    return np.maximum(np.asarray(values, dtype=np.float64), EXCESS_FLOOR)


def _fitted_line(x: np.ndarray, y: np.ndarray, slope: float) -> np.ndarray:
    """The line of the given log-log slope through the geometric mean of (x, y)."""
    log_x, log_y = np.log(x), np.log(y)
    return np.exp(log_y.mean() + slope * (log_x - log_x.mean()))


def plot_e1(result: ExperimentResult) -> Figure:
    series = result.series
    sizes = np.asarray(series["n"], dtype=float)
    rms = np.asarray(series["rms_gap"])
    slope = result.slopes["rms_gap"]
    low, high = series["slope_interval"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(sizes, rms, "o", label="RMS of G(ŵ_S; S) over seeds")
    left.loglog(sizes, np.asarray(series["mean_abs_gap"]), "s", ms=4, alpha=0.6, label="mean |G|")
    left.loglog(sizes, _fitted_line(sizes, rms, slope), "-", label=f"fit: slope {slope:.3f}")
    left.loglog(sizes, series["noise_scale"] / np.sqrt(sizes), "k--", lw=1, label="σ_f · n^-1/2")
    left.set(xlabel="n (training prompts)", ylabel="generalization gap")
    left.set_title(f"E1: slope {slope:.3f} (95% CI {low:.3f}…{high:.3f})", fontsize=10)
    left.legend(fontsize=8)
    right.semilogx(sizes, np.asarray(series["scaled_rms"]), "o-", label="√n · RMS_G / σ_f")
    right.semilogx(sizes, np.asarray(series["scaled_abs_q90"]), "s-", label="q90 of √n·|G|/σ_f")
    right.axhspan(0.75, 1.25, color="tab:green", alpha=0.12, label="criterion band [0.75, 1.25]")
    right.axhline(1.0, color="k", lw=0.8)
    right.set(xlabel="n", ylabel="scaled gap", ylim=(0.0, 2.5))
    right.legend(fontsize=8)
    return figure


def plot_e2(result: ExperimentResult) -> Figure:
    series = result.series
    horizons = np.asarray(series["T"], dtype=float)
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for method, axis, exponent in (("ga", axes[0], 0.25), ("sga", axes[1], 0.125)):
        for n in series["n"]:
            key = f"{method}_n{n}"
            excess = _positive(series[f"{key}_excess"])
            slope = result.slopes[f"{key}_excess"]
            axis.loglog(horizons, excess, "o-", ms=3, label=f"n={n} (slope {slope:.2f})")
        start = _positive(series[f"{method}_n{series['n'][0]}_excess"])[0]
        axis.loglog(
            horizons,
            start * horizons**-exponent,
            "k--",
            lw=1,
            label=f"T^-{exponent:g} (bound rate)",
        )
        axis.set(xlabel="T", ylabel="E(w_t*) = J(w*) − J(w_t*)")
        axis.set_title(f"E2: {method.upper()} best-gradient iterate", fontsize=10)
        axis.legend(fontsize=8)
    for n in series["n"]:
        for method, style in (("ga", "-"), ("sga", ":")):
            key = f"{method}_n{n}"
            axes[2].loglog(horizons, _positive(series[f"{key}_abs_gap"]), style, label=key)
        axes[2].axhline(series[f"ga_n{n}_abs_gap_at_optimum"], color="k", lw=0.8, ls="--")
    axes[2].set(xlabel="T", ylabel="mean |G(w_t*)|")
    axes[2].set_title("gap at the best iterate (dashed: |G(ŵ_S)|)", fontsize=10)
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_e3(result: ExperimentResult) -> Figure:
    sizes = np.asarray(result.series["n"], dtype=float)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for entry in result.series["fractions"]:
        label = f"p = {entry['rare_fraction']:.2g}"
        (line,) = left.semilogx(sizes, entry["mean_rare_excess"], "o-", ms=4, label=label)
        if entry["rare_fraction"] < 1.0:  # the p = 1 control is never uncovered
            left.axhline(entry["rare_gap"], color=line.get_color(), lw=0.8, ls="--")
            right.semilogx(sizes, entry["coverage_rate"], "o", color=line.get_color(), label=label)
            right.semilogx(sizes, entry["predicted_coverage_rate"], "-", color=line.get_color())
    left.set(xlabel="n", ylabel="rare-slice excess J_rare(w*) − J_rare(ŵ)")
    left.set_title("E3: rare-slice excess of ŵ_GA∞ (dashed: Δ_rare)", fontsize=10)
    left.legend(fontsize=8)
    right.set(xlabel="n", ylabel="P(sample covers e_d)", ylim=(-0.02, 1.02))
    right.set_title("observed (dots) vs 1 − (1 − #rare/M)^n (lines)", fontsize=10)
    right.legend(fontsize=8)
    return figure


def plot_e3b(result: ExperimentResult) -> Figure:
    series = result.series
    means = np.asarray(series["mean_rare_excess"])  # (P, N)
    figure, axis = plt.subplots(figsize=(6, 4))
    width = 0.8 / means.shape[0]
    positions = np.arange(len(series["n"]))
    for row, fraction in enumerate(series["rare_fractions"]):
        axis.bar(positions + row * width, _positive(means[row]), width, label=f"p = {fraction:.2g}")
    axis.set_xticks(positions + 0.4 - width / 2, [f"n = {n}" for n in series["n"]])
    axis.set_yscale("log")
    axis.set_ylabel("mean rare-slice excess at the best iterate")
    axis.set_title(f"E3b: GA, T = {result.params['num_steps']}", fontsize=10)
    axis.legend(fontsize=8)
    return figure


def plot_e4(result: ExperimentResult) -> Figure:
    rows = [r for r in result.series["configurations"] if r["steps_to_tolerance"] is not None]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for ref_norm in sorted({r["ref_norm"] for r in rows}):
        group = sorted((r for r in rows if r["ref_norm"] == ref_norm), key=lambda r: r["beta"])
        conditioning = [r["conditioning"] for r in group]
        axis.loglog(
            conditioning,
            [r["steps_to_tolerance"] for r in group],
            "o-",
            label=f"‖θ_ref‖ = {ref_norm:g}",
        )
        for r in group:
            axis.annotate(
                f"β={r['beta']:g}", (r["conditioning"], r["steps_to_tolerance"]), fontsize=7
            )
    if rows:
        ratio = float(np.median([r["steps_per_conditioning"] for r in rows]))
        grid = np.geomspace(
            min(r["conditioning"] for r in rows), max(r["conditioning"] for r in rows)
        )
        axis.loglog(grid, ratio * grid, "k--", lw=1, label=f"T = {ratio:.2f}·Γ")
    axis.set(xlabel="Γ = L̂ / (β λ_*)", ylabel=f"GA steps to E < {result.params['tolerance']:g}")
    axis.set_title("E4: iterations to tolerance grow with conditioning", fontsize=10)
    axis.legend(fontsize=8)
    return figure


def plot_e5(result: ExperimentResult) -> Figure:
    sizes = np.asarray(result.series["n"], dtype=float)
    figure, axis = plt.subplots(figsize=(6, 4.5))
    series = zip(result.series["rare_fractions"], result.series["mean_excess"], strict=True)
    for fraction, mean_excess in series:
        axis.loglog(sizes, _positive(mean_excess), "o-", ms=4, label=f"p = {fraction:.2g}")
    bound = np.asarray(result.series["bound"])  # (P, N), equal up to B and ‖θ*‖ across p
    axis.loglog(sizes, bound.max(axis=0), "k--", lw=1, label="bound 4·B·‖θ*‖·d/(n+1)")
    axis.set(xlabel="n", ylabel=f"mean E(ŵ_GA∞) (zeros drawn at {EXCESS_FLOOR:g})")
    worst = result.criteria[0].value
    axis.set_title(f"E5: residual bound, largest observed/bound = {worst:.2g}", fontsize=10)
    axis.legend(fontsize=8)
    return figure


def plot_e6(result: ExperimentResult) -> Figure:
    sizes = np.asarray(result.series["n"], dtype=float)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for row in result.series["configurations"]:
        label = f"β={row['beta']:g}, d={row['dim']}"
        (line,) = left.semilogx(sizes, row["scaled_excess"], "o-", ms=4, label=label)
        left.axhline(row["predicted_scaled_excess"], color=line.get_color(), ls="--", lw=1)
        gap = _positive(row["mean_abs_loss_gap"])
        right.loglog(sizes, gap, "o-", ms=4, color=line.get_color(), label=label)
    reference = _positive(result.series["configurations"][0]["mean_abs_loss_gap"])[0]
    right.loglog(sizes, reference * (sizes / sizes[0]) ** -0.5, "k--", lw=1, label="n^-1/2")
    left.set(xlabel="n (preference pairs)", ylabel="n · E(ŵ)")
    left.set_ylim(bottom=0.0)
    left.set_title("E6: n·E(ŵ) vs tr(Σ̄ I⁻¹)/(2β) (dashed)", fontsize=10)
    left.legend(fontsize=8)
    right.set(xlabel="n", ylabel="mean |L(ŵ) − L̂_S(ŵ)|")
    right.set_title("DPO-loss generalization gap", fontsize=10)
    right.legend(fontsize=8)
    return figure


PLOTS: dict[str, Callable[[ExperimentResult], Figure]] = {
    "E1": plot_e1,
    "E2": plot_e2,
    "E3": plot_e3,
    "E3b": plot_e3b,
    "E4": plot_e4,
    "E5": plot_e5,
    "E6": plot_e6,
}


def save_figure(result: ExperimentResult, path: Path) -> Path:
    """Draw `result`'s figure and save it as a PNG at `path`."""
    figure = PLOTS[result.name](result)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return path


def _format_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_format_value(v) for v in row) + " |" for row in rows]


def _details(result: ExperimentResult) -> list[str]:
    """The measured numbers behind the criteria, for the experiments whose series are tables."""
    series = result.series
    if result.name == "E3":
        return _table(
            ["p", "#rare", "Δ_rare", "λ_ref", "P(covered) at n = 64 … max n"],
            [
                [
                    f["rare_fraction"],
                    f["num_rare"],
                    f["rare_gap"],
                    f["reference_coverage"],
                    " ".join(f"{v:.2f}" for v in f["coverage_rate"]),
                ]
                for f in series["fractions"]
            ],
        )
    if result.name == "E3b":
        return _table(
            ["p", *[f"n = {n}" for n in series["n"]]],
            [
                [p, *row]
                for p, row in zip(series["rare_fractions"], series["mean_rare_excess"], strict=True)
            ],
        )
    if result.name == "E4":
        keys = ["beta", "ref_norm", "smoothness", "optimal_coverage", "conditioning"]
        keys += ["steps_to_tolerance", "steps_per_conditioning"]
        header = ["β", "‖θ_ref‖", "L̂", "λ_*", "Γ", "T_hit", "T_hit/Γ"]
        return _table(header, [[row[k] for k in keys] for row in series["configurations"]])
    if result.name == "E6":
        return _table(
            ["β", "d", "predicted n·E", "measured n·E (n ≥ 2^10)", "fits converged (min over n)"],
            [
                [
                    row["beta"],
                    row["dim"],
                    row["predicted_scaled_excess"],
                    " ".join(
                        f"{v:.2f}"
                        for n, v in zip(series["n"], row["scaled_excess"], strict=True)
                        if n >= 2**10
                    ),
                    int(np.min(row["num_converged"])),
                ]
                for row in series["configurations"]
            ],
        )
    return []


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "**FAIL**", None: "n/a"}[passed]


def summary_markdown(results: Sequence[ExperimentResult], command: str) -> str:
    """A markdown page: the note on the reconstruction, one table row per experiment, then
    each experiment's criteria and figure."""
    lines = [
        "# dcrl theory: RLHF generalization check (arXiv 2601.16403)",
        "",
        f"> {RECONSTRUCTION_NOTE}",
        "",
        f"Command: `{command}`",
        "",
        "| experiment | result | slopes | time (s) |",
        "|---|---|---|---|",
    ]
    for result in results:
        slopes = ", ".join(f"{k} {v:.3f}" for k, v in result.slopes.items()) or "—"
        lines.append(
            f"| {result.name}: {result.title} | {_verdict(result.passed)} | {slopes} | "
            f"{result.seconds:.1f} |"
        )
    for result in results:
        lines += [
            "",
            f"## {result.name}: {result.title}",
            "",
            f"![{result.name}]({result.name}.png)",
            "",
            "| check | requirement | value | result |",
            "|---|---|---|---|",
        ]
        for criterion in result.criteria:
            requirement = criterion.requirement.replace("|", "\\|")  # a literal | in a table cell
            lines.append(
                f"| {criterion.name} | {requirement} | {_format_value(criterion.value)} | "
                f"{_verdict(criterion.passed)} |"
            )
        details = _details(result)
        if details:
            lines += ["", *details]
    return "\n".join(lines) + "\n"


def write_report(
    results: Sequence[ExperimentResult],
    out_dir: Path,
    command: str,
    figures_dir: Path | None = None,
) -> dict[str, Path]:
    """Write results.json, `<name>.png` per experiment and summary.md into `out_dir`.

    Args:
        figures_dir: also save each figure there as `theory_<name>.png` (lower-case), e.g.
            docs/figures for the README.

    Returns:
        The written paths by role ("json", "summary", and each experiment name).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    payload = {
        "dcrl_version": dcrl.__version__,
        "numpy_version": np.__version__,
        "machine": platform.platform(),
        "command": command,
        "note": RECONSTRUCTION_NOTE,
        "passed": all(result.passed for result in results),
        "experiments": [result.to_dict() for result in results],
    }
    written["json"] = out_dir / "results.json"
    written["json"].write_text(json.dumps(payload, indent=1, allow_nan=False))
    for result in results:
        written[result.name] = save_figure(result, out_dir / f"{result.name}.png")
        if figures_dir is not None:
            save_figure(result, figures_dir / f"theory_{result.name.lower()}.png")
    written["summary"] = out_dir / "summary.md"
    written["summary"].write_text(summary_markdown(results, command))
    return written
