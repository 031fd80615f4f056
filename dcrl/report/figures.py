"""The report's figures, drawn with matplotlib's object API (no pyplot state, no GUI backend).

Training curves are drawn per setting (group): the mean over its seeds as a line and, with two or
more seeds, the min–max range over seeds as a shaded band. Each figure has one panel per metric
that at least one run logged; a figure with no such metric is skipped with the reason, so e.g. a
GRPO-only report has no control figure.

Figures (ids): entropy (with each group's target 𝓗 and a ±10% band around it), control (one
panel per `control/*` metric the runs logged, titled as the target that logs it declares), accuracy, length, correlation (length–accuracy, ICR's diagnostic), pass_at_k (from eval*/metrics
.json), pareto (accuracy vs mean length, the frontier of non-dominated runs).

A logged value beyond ±PLOT_LIMIT (1e308 in a hand-edited or corrupted log) is not drawn: axis
limits, margins and tick steps computed from it overflow. The rest of its curve is, and the figure
carries a note naming the file, the metric and the steps left out (`ReportFigure.notes`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from dcrl.report.runs import Run, group_runs, primary_eval

TARGET_BAND_FRACTION = 0.1  # shade target 𝓗 ± 10%: a reading aid, not a controller setting
PANEL_SIZE = (4.6, 3.4)  # inches per panel; saved at 100 dpi
MAX_EVAL_PANELS = 3
PLOT_LIMIT = 1e100  # |value| above it is not drawn (module docstring); no real metric gets there

Panel = tuple[str, str]  # (metric name, panel title)

# The control figure draws the metrics a run logged under this prefix (each controller's choices),
# but the measured entropy a controller decided from, which the entropy figure draws already.
CONTROL_PREFIX = "control/"
CONTROL_LEFT_OUT = ("control/previous_entropy",)


@dataclass
class ReportFigure:
    """One figure of the report: its id, title and caption, and the figure or why it is skipped;
    `notes` say which logged values it leaves out and why (each names the file and metric)."""

    id: str
    title: str
    caption: str
    figure: Figure | None
    skipped_reason: str = ""
    notes: list[str] = field(default_factory=list)


def drawable(value: object) -> bool:
    """Whether a value can be drawn: a number (not bool) whose magnitude is at most PLOT_LIMIT."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return False
    try:
        return abs(float(value)) <= PLOT_LIMIT  # False for NaN and ±inf
    except OverflowError:  # an integer like 10**400 from a hand-edited file
        return False


def _steps_text(steps: np.ndarray) -> str:
    shown = ", ".join(str(int(step)) for step in steps[:3])
    return f"step {shown}" if len(steps) == 1 else f"steps {shown}{', …' if len(steps) > 3 else ''}"


def drawable_runs(runs: list[Run]) -> tuple[list[Run], dict[str, list[str]]]:
    """Copies of `runs` whose logged values beyond ±PLOT_LIMIT (or ±inf) are NaN, so no curve,
    band, target line or final value drawn from them overflows; and the notes, by metric, naming
    each run's metrics.jsonl, the metric and the steps left out."""
    notes: dict[str, list[str]] = {}
    copies = []
    for run in runs:
        metrics = {}
        for name, values in run.metrics.items():
            with np.errstate(invalid="ignore"):
                huge = ~np.isnan(values) & ~(np.abs(values) <= PLOT_LIMIT)  # (S,)
            if huge.any():
                notes.setdefault(name, []).append(
                    f"{run.path / 'metrics.jsonl'}: {name} is beyond ±{PLOT_LIMIT:g} at "
                    f"{_steps_text(run.steps[huge])} (e.g. {values[huge][0]:g}), too large to "
                    "plot; those points are left out of the figures (the rest of the curve is "
                    "drawn)"
                )
                values = np.where(huge, np.nan, values)
            metrics[name] = values
        copies.append(dataclasses.replace(run, metrics=metrics))
    return copies, notes


def group_colors(runs: list[Run]) -> dict[str, str]:
    """A fixed color per group (matplotlib's tab10 cycle, in group order)."""
    palette = [f"C{index % 10}" for index in range(len(runs))]
    return {group: palette[index] for index, group in enumerate(group_runs(runs))}


def smooth_values(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` logged steps, ignoring NaN: (S,) -> (S,)."""
    if window <= 1:
        return values
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))  # (S,)
    counts = np.cumsum(finite)  # (S,)
    sums[window:] = sums[window:] - sums[:-window].copy()
    counts[window:] = counts[window:] - counts[:-window].copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _draw_groups(
    ax: Axes,
    runs: list[Run],
    colors: dict[str, str],
    series_of: Callable[[Run], tuple[np.ndarray, np.ndarray] | None],
    **line_options: object,
) -> bool:
    """Mean line and min–max band per group of the (x, y) series `series_of(run)` gives; False if
    no run had one."""
    drew = False
    for group, members in group_runs(runs).items():
        series = [s for s in map(series_of, members) if s is not None]
        if not series:
            continue
        x = np.unique(np.concatenate([xs for xs, _ in series]))  # (X,) union of the runs' x
        table = np.full((len(series), len(x)), np.nan)  # (R, X), NaN where a run has no value
        for row, (xs, ys) in enumerate(series):
            table[row, np.searchsorted(x, xs)] = ys
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            mean, low, high = np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)
        label = group if len(series) == 1 else f"{group} ({len(series)} seeds)"
        ax.plot(x, mean, color=colors[group], label=label, linewidth=1.6, **line_options)
        if len(series) > 1:
            ax.fill_between(x, low, high, color=colors[group], alpha=0.18, linewidth=0)
        drew = True
    return drew


def _panels_figure(
    runs: list[Run],
    colors: dict[str, str],
    panels: list[Panel],
    smooth: int,
    decorate: Callable[[Axes, str], None] | None = None,
) -> Figure | None:
    """One panel per metric of `panels` that some run logged (curves vs step); None if none did."""
    present = [(metric, title) for metric, title in panels if any(r.has(metric) for r in runs)]
    if not present:
        return None
    figure = Figure(figsize=(PANEL_SIZE[0] * len(present), PANEL_SIZE[1]), layout="constrained")
    axes = figure.subplots(1, len(present), squeeze=False)[0]
    for ax, (metric, title) in zip(axes, present, strict=True):
        _draw_groups(
            ax,
            runs,
            colors,
            lambda run, m=metric: (
                (run.steps, smooth_values(run.metrics[m], smooth)) if run.has(m) else None
            ),
        )
        if decorate is not None:
            decorate(ax, metric)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    return figure


def metric_labels(runs: list[Run] | None = None) -> dict[str, str]:
    """Panel titles by metric, as the targets declare them (`Target.metric_labels`; a class's
    labels add to its bases'), in declaration order: the registered targets (dcrl.targets), then
    the runs' own ('package.module:Class' in algorithm.targets) that import here. A metric no
    target labels is titled by its name."""
    from dcrl.targets import TARGETS, TargetError, get_target_class  # torch: only when needed

    names = list(TARGETS)
    for run in runs or []:
        entries = (run.config.get("algorithm") or {}).get("targets")
        for entry in entries if isinstance(entries, list) else []:
            name = entry.get("name") if isinstance(entry, dict) else entry
            if isinstance(name, str) and name not in names:
                names.append(name)
    labels: dict[str, str] = {}
    for name in names:
        try:
            target_class = get_target_class(name)
        except TargetError:  # not importable here: its metrics are titled by their names
            continue
        for cls in reversed(target_class.__mro__):
            labels.update(vars(cls).get("metric_labels", {}))
    return labels


def logged_control_metrics(runs: list[Run]) -> list[str]:
    """The `control/*` metrics some run's log holds (CONTROL_LEFT_OUT aside), sorted."""
    return sorted(
        {
            metric
            for run in runs
            for metric in run.metrics
            if metric.startswith(CONTROL_PREFIX) and metric not in CONTROL_LEFT_OUT
        }
    )


def control_panels(runs: list[Run]) -> list[Panel]:
    """One panel per `control/*` metric some run logged a value of: the metrics the targets label
    first, in their declaration order, then the others by name; each titled by its label, or
    its name without one (a user's target's metric)."""
    logged = [m for m in logged_control_metrics(runs) if any(run.has(m) for run in runs)]
    if not logged:
        return []
    labels = metric_labels(runs)
    order = {metric: index for index, metric in enumerate(labels)}
    logged.sort(key=lambda metric: (order.get(metric, len(order)), metric))
    return [(metric, labels.get(metric, metric)) for metric in logged]


def entropy_target(run: Run) -> float | None:
    """The run's target entropy 𝓗: its logged entropy/target, else algorithm.target_entropy."""
    logged = run.final("entropy/target", fraction=1.0)
    if logged is not None:
        return logged
    target = (run.config.get("algorithm") or {}).get("target_entropy")
    if isinstance(target, bool) or not isinstance(target, int | float):
        return None
    return float(target) if drawable(target) else None


def entropy_figure(runs: list[Run], colors: dict[str, str], smooth: int) -> Figure | None:
    targets = {run.group: entropy_target(run) for run in runs if entropy_target(run) is not None}

    def draw_targets(ax: Axes, metric: str) -> None:
        for group, target in targets.items():
            ax.axhline(target, color=colors[group], linestyle="--", linewidth=1)
            ax.axhspan(
                target * (1 - TARGET_BAND_FRACTION),
                target * (1 + TARGET_BAND_FRACTION),
                color=colors[group],
                alpha=0.08,
            )

    panels = [
        ("entropy/on_policy_nll", "entropy: the policy's sampled-token NLL (nats/token)"),
        ("entropy/full", "entropy: full vocabulary (nats/token)"),
    ]
    return _panels_figure(runs, colors, panels, smooth, draw_targets)


def pass_at_k_figure(
    runs: list[Run], colors: dict[str, str], notes: list[str] | None = None
) -> Figure | None:
    """One panel per evaluation (directory name), pass@k vs k on a log2 axis; a value that is
    not plottable is left out, with a line appended to `notes`."""
    notes = [] if notes is None else notes
    names = sorted({name for run in runs for name in run.evals})[:MAX_EVAL_PANELS]
    if not names:
        return None
    figure = Figure(figsize=(PANEL_SIZE[0] * len(names), PANEL_SIZE[1]), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):

        def series_of(run: Run, name: str = name) -> tuple[np.ndarray, np.ndarray] | None:
            if name not in run.evals:
                return None
            curve = run.evals[name]["pass@k"]
            ks = np.array(sorted(int(k) for k in curve))
            values = np.array([curve[str(k)] for k in ks], dtype=np.float64)
            bad = np.array([not drawable(value) for value in values], dtype=bool)
            if bad.any():
                notes.append(
                    f"{run.path / name / 'metrics.json'}: pass@k is not a plottable number at "
                    f"k = {', '.join(str(k) for k in ks[bad][:3])}; those points are left out"
                )
            return ks, np.where(bad, np.nan, values)

        _draw_groups(ax, runs, colors, series_of, marker="o", markersize=3)
        settings = next(run.evals[name]["settings"] for run in runs if name in run.evals)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda k, _: f"{k:g}"))  # 1, 2, 4 (not 2^k)
        ax.set_title(f"pass@k on {settings['data']} (T={settings['temperature']:g})", fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel("unbiased pass@k")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    return figure


def pareto_points(
    runs: list[Run], notes: list[str] | None = None
) -> tuple[str, list[tuple[Run, float, float]]]:
    """(source description, [(run, mean length, accuracy)]): from the primary evaluation for the
    runs that have it, else the final training values (mean of the last 10% of steps). A run
    whose length or accuracy is not a plottable number is left out, with a line in `notes`."""
    notes = [] if notes is None else notes
    eval_name = primary_eval(runs)
    if eval_name is not None:
        points = []
        for run in runs:
            if eval_name in run.evals:
                evaluation = run.evals[eval_name]
                n = evaluation["settings"]["n"]
                points.append((run, evaluation["length"]["mean"], evaluation[f"avg@{n}"]))
        settings = points[0][0].evals[eval_name]["settings"]
        source = f"eval on {settings['data']}: avg@{settings['n']}"
        where = f"{eval_name}/metrics.json"
    else:
        points = [
            (run, run.final("length/mean"), run.final("reward/accuracy"))
            for run in runs
            if run.has("length/mean") and run.has("reward/accuracy")
        ]
        source = "training, last 10% of steps: accuracy"
        where = "metrics.jsonl"
    kept = []
    for run, length, accuracy in points:
        problems = [
            f"its {label} is {'missing' if value is None else repr(value)}"
            for label, value in (("mean length", length), ("accuracy", accuracy))
            if not drawable(value)
        ]
        if problems:
            notes.append(
                f"{run.path / where}: {' and '.join(problems)}, not a number to plot; the run is "
                "left out of the Pareto figure"
            )
        else:
            kept.append((run, length, accuracy))
    return source, kept


def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (length, accuracy) points no other point beats (shorter or equal and more accurate, or
    shorter and as accurate), sorted by length."""
    frontier: list[tuple[float, float]] = []
    for length, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or accuracy > frontier[-1][1]:
            frontier.append((length, accuracy))
    return frontier


def pareto_figure(
    runs: list[Run], colors: dict[str, str], notes: list[str] | None = None
) -> Figure | None:
    source, points = pareto_points(runs, notes)
    if not points:
        return None
    figure = Figure(figsize=(PANEL_SIZE[0] * 1.3, PANEL_SIZE[1] * 1.2), layout="constrained")
    ax = figure.subplots()
    labelled: set[str] = set()
    for run, length, accuracy in points:
        ax.scatter(
            length,
            accuracy,
            color=colors[run.group],
            s=36,
            label=None if run.group in labelled else run.group,
            edgecolors="black",
            linewidths=0.4,
        )
        labelled.add(run.group)
    frontier = pareto_frontier([(length, accuracy) for _, length, accuracy in points])
    xs, ys = zip(*frontier, strict=True)
    ax.step(xs, ys, where="post", color="black", linewidth=1, linestyle=":", label="frontier")
    ax.margins(0.12)
    ax.set_xlabel("mean response length (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy–length Pareto ({source})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return figure


def report_figures(runs: list[Run], smooth: int = 1) -> list[ReportFigure]:
    """Every figure of the report, in page order; skipped ones have figure None and a reason.
    Values too large to plot are left out, each figure's `notes` saying which (module doc)."""
    colors = group_colors(runs)
    runs, metric_notes = drawable_runs(runs)
    drawn_notes: dict[str, list[str]] = {"pass_at_k": [], "pareto": []}

    def zero_line(ax: Axes, metric: str) -> None:
        ax.axhline(0.0, color="gray", linewidth=0.8)

    specs = [
        (
            "entropy",
            "Entropy",
            "Policy entropy per step; dashed: the target 𝓗 of entropy-controlled settings "
            "(those that logged entropy/target), shaded ±10% around it.",
            lambda: entropy_figure(runs, colors, smooth),
            "no run logged entropy/sampled_nll or entropy/full",
        ),
        (
            "control",
            "Controller",
            "The entropy controllers' choices, one panel per control/* metric the runs logged "
            "(e.g. the temperature T of the target π^T and a target's strength), titled as the "
            "target that logs it declares.",
            lambda: _panels_figure(runs, colors, control_panels(runs), smooth),
            "no run logged a control/* metric (e.g. GRPO has no controller)",
        ),
        (
            "accuracy",
            "Accuracy",
            "Training accuracy (mean reward of the rollouts) and pass@n of the rollout groups.",
            lambda: _panels_figure(
                runs,
                colors,
                [("reward/accuracy", "accuracy"), ("reward/pass_at_n", "pass@n of rollout groups")],
                smooth,
            ),
            "no run logged reward/accuracy",
        ),
        (
            "length",
            "Response length",
            "Mean and 90th-percentile response length of the rollouts, in tokens.",
            lambda: _panels_figure(
                runs,
                colors,
                [("length/mean", "mean length (tokens)"), ("length/p90", "p90 length (tokens)")],
                smooth,
            ),
            "no run logged length/mean",
        ),
        (
            "correlation",
            "Length–accuracy correlation",
            "Pearson correlation of response length and correctness, within each prompt's group "
            "(averaged) and over the batch (ICR's diagnostic; < 0: shorter answers are more often "
            "right).",
            lambda: _panels_figure(
                runs,
                colors,
                [
                    ("corr/length_acc_group", "within groups"),
                    ("corr/length_acc_batch", "over the batch"),
                ],
                smooth,
                zero_line,
            ),
            "no run logged corr/length_acc_group",
        ),
        (
            "pass_at_k",
            "pass@k",
            "Unbiased pass@k from `dcrl eval` (RUN_DIR/eval*/metrics.json), one panel per "
            "evaluation.",
            lambda: pass_at_k_figure(runs, colors, drawn_notes["pass_at_k"]),
            "no run has an evaluation: run `dcrl eval --model RUN_DIR` first",
        ),
        (
            "pareto",
            "Accuracy–length Pareto",
            "Each run's accuracy against its mean response length; the dotted line joins the runs "
            "no other run beats on both.",
            lambda: pareto_figure(runs, colors, drawn_notes["pareto"]),
            "no run has both accuracy and length",
        ),
    ]
    metrics_of = {  # the logged metrics each figure draws, for the notes on left-out values
        "entropy": ("entropy/on_policy_nll", "entropy/full", "entropy/target"),
        "control": tuple(logged_control_metrics(runs)),
        "accuracy": ("reward/accuracy", "reward/pass_at_n"),
        "length": ("length/mean", "length/p90"),
        "correlation": ("corr/length_acc_group", "corr/length_acc_batch"),
    }
    figures = []
    for figure_id, title, caption, draw, reason in specs:
        figure = draw()
        notes = [n for m in metrics_of.get(figure_id, ()) for n in metric_notes.get(m, [])]
        notes += drawn_notes.get(figure_id, [])
        figures.append(
            ReportFigure(
                figure_id,
                title,
                caption,
                figure,
                "" if figure is not None else reason,
                list(dict.fromkeys(notes)),
            )
        )
    return figures
